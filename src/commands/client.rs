//! The CLI's side of the daemon's HTTP API: where it answers (`--server`, `FERRY_SERVER`, or
//! the address `ferry serve` wrote in the data directory) and with which token (`--token`,
//! `FERRY_TOKEN`, or the admin token kept there).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use ferry_config::Config;
use serde_json::Value;

use crate::cli::ServerArgs;

/// The file in the data directory where `ferry serve` writes its API's address while it runs.
pub(crate) const ADDRESS_FILE: &str = "api-address";

/// A daemon's API, with a token.
pub(crate) struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

/// An answer: its status and JSON body.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Value,
}

impl Client {
    /// The daemon `args` names, or the one serving this data directory.
    pub(crate) fn new(config: &Config, args: &ServerArgs) -> Result<Self> {
        let data_dir = &config.engine.data_dir;
        let base = match &args.server {
            Some(server) => server.trim_end_matches('/').to_string(),
            None => std::fs::read_to_string(data_dir.join(ADDRESS_FILE))
                .map(|text| text.trim().to_string())
                .map_err(|_| {
                    anyhow::anyhow!(
                        "no daemon serves {}: start `ferry serve`, or name one with --server URL (or FERRY_SERVER)",
                        data_dir.display()
                    )
                })?,
        };
        // The admin token kept here goes only to the daemon serving this data directory.
        let token = match (&args.token, &args.server) {
            (Some(token), _) => token.clone(),
            (None, Some(_)) => bail!("no token for {base}: give one with --token (or FERRY_TOKEN)"),
            (None, None) => local_token(data_dir).with_context(|| {
                format!("no token: give one with --token (or FERRY_TOKEN) for {base}")
            })?,
        };
        Ok(Self {
            base,
            token,
            http: reqwest::Client::new(),
        })
    }

    /// `method` on `path` with a JSON `body` (and `headers`); a problem answer (4xx, 5xx) is
    /// an error with its detail.
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Answer> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .timeout(std::time::Duration::from_secs(30));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("the daemon at {} does not answer", self.base))?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status >= 400 {
            let detail = body["detail"]
                .as_str()
                .map_or_else(|| body.to_string(), str::to_string);
            bail!("{detail} (HTTP {status} from {})", self.base);
        }
        Ok(Answer { status, body })
    }
}

/// The admin token `ferry serve` keeps in `data_dir`.
fn local_token(data_dir: &Path) -> Result<String> {
    let path: PathBuf = data_dir.join(ferry_api::local_token::TOKEN_FILE);
    let token = std::fs::read_to_string(&path)
        .with_context(|| format!("{} cannot be read", path.display()))?;
    Ok(token.trim().to_string())
}
