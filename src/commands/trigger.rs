//! `ferry trigger`: a run made by the daemon at once, through its HTTP API (the same call as
//! `POST /api/v1/dags/{dag}/runs`), optionally waited for.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Result, bail};
use ferry_config::Config;
use reqwest::Method;
use serde_json::{Value, json};

use super::client::Client;
use super::engine::block_on;
use crate::cli::{Format, TriggerArgs};

/// How often `--wait` looks at the run.
const POLL: std::time::Duration = std::time::Duration::from_millis(500);

pub(crate) fn run(config: &Config, args: &TriggerArgs) -> Result<ExitCode> {
    block_on(async {
        let client = Client::new(config, &args.server)?;
        let dag = client
            .call(
                Method::GET,
                &format!("/api/v1/dags/{}", args.dag),
                None,
                &[],
            )
            .await?
            .body;
        let conf = typed_params(&dag["params"], &args.params)?;
        let body = json!({
            "logical_date": args.date,
            "conf": conf,
            "force": args.force,
            "reason": args.reason,
        });
        let key: Vec<(&str, &str)> = args
            .idempotency_key
            .as_deref()
            .map(|key| ("idempotency-key", key))
            .into_iter()
            .collect();
        let made = client
            .call(
                Method::POST,
                &format!("/api/v1/dags/{}/runs", args.dag),
                Some(&body),
                &key,
            )
            .await?;
        let run_id = made.body["run_id"].as_str().unwrap_or_default().to_string();
        if !args.wait {
            match args.format {
                Format::Json => out!("{}", made.body),
                Format::Text if made.status == 200 => out!(
                    "{run_id} {} (made before with this idempotency key)",
                    made.body["state"].as_str().unwrap_or_default()
                ),
                Format::Text => out!("{run_id} queued"),
            }
            return Ok(ExitCode::SUCCESS);
        }
        let ended = wait(&client, &run_id, args.format).await?;
        Ok(if ended["state"] == "success" {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    })
}

/// Follows the run until it ends, printing each task's changes; returns the ended run.
async fn wait(client: &Client, run_id: &str, format: Format) -> Result<Value> {
    let mut shown: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let run = client
            .call(Method::GET, &format!("/api/v1/runs/{run_id}"), None, &[])
            .await?
            .body;
        if format == Format::Text {
            for task in run["task_instances"].as_array().into_iter().flatten() {
                let id = task["task_id"].as_str().unwrap_or_default();
                let state = task["state"].as_str().unwrap_or_default();
                if shown.get(id).map(String::as_str) != Some(state) {
                    out!("{run_id}  {id:<28} {state}");
                    shown.insert(id.to_string(), state.to_string());
                }
            }
        }
        if matches!(run["state"].as_str(), Some("success" | "failed")) {
            match format {
                Format::Json => out!("{run}"),
                Format::Text => out!("{run_id} {}", run["state"].as_str().unwrap_or_default()),
            }
            return Ok(run);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `--param NAME=VALUE` as the JSON values the DAG declares: text for a string or date
/// parameter, JSON otherwise (text when it is not JSON); the daemon checks them.
fn typed_params(declared: &Value, given: &[String]) -> Result<serde_json::Map<String, Value>> {
    let mut conf = serde_json::Map::new();
    for pair in given {
        let Some((name, text)) = pair.split_once('=') else {
            bail!("`--param {pair}`: write NAME=VALUE");
        };
        // Text stays text for a string (or date) parameter, and for an enum that has it as
        // a string.
        let is_text = declared[name]["type"] == "string"
            || declared[name]["enum"]
                .as_array()
                .is_some_and(|values| values.iter().any(|v| v.as_str() == Some(text)));
        let value = if is_text {
            Value::String(text.to_string())
        } else {
            serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
        };
        conf.insert(name.to_string(), value);
    }
    Ok(conf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_take_their_declared_types() {
        let declared = json!({
            "days": {"type": "integer"},
            "table": {"type": "string"},
            "day": {"type": "string", "format": "date"},
        });
        let given = [
            "days=3",
            "table=007",
            "day=2026-11-24",
            "extra=[1,2]",
            "word=hello",
        ]
        .map(str::to_string);
        assert_eq!(
            Value::Object(typed_params(&declared, &given).expect("typed")),
            json!({"days": 3, "table": "007", "day": "2026-11-24", "extra": [1, 2], "word": "hello"})
        );
        assert!(typed_params(&declared, &["days".to_string()]).is_err());
    }
}
