//! ferry's configuration: one model for the whole binary, in layers.
//!
//! 1. the embedded, commented defaults (`default.toml` in this crate);
//! 2. a `ferry.toml`: the `--config` path, else `$FERRY_CONFIG`, else `./ferry.toml` if present;
//! 3. `FERRY__SECTION__KEY` environment variables (`FERRY__DAGS__FOLDERS='["dags"]'`); a value
//!    is read as TOML-like (arrays, numbers, booleans), else as a string.
//!
//! Every problem of every section is reported at once, and secrets never appear in
//! [`Config`]'s `Debug` or serialized form:
//!
//! ```
//! use ferry_config::{Config, Sources};
//!
//! let config = Config::load(&Sources::defaults_only()).expect("the defaults are valid");
//! assert_eq!(config.dags.folders, [std::path::PathBuf::from("dags")]);
//! assert!(config.alerts.channels.contains_key("log"));
//! assert_eq!(config.engine.database_url(), "sqlite://.ferry/ferry.db");
//! ```

mod connections;
mod secret;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub use connections::{BigqueryCredentials, Connection, DEFAULT_ENVIRONMENT, EnvironmentConfig};
pub use secret::{MASK, Secret};

/// The embedded defaults, with comments explaining every setting.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// The top-level sections a configuration may have.
const SECTIONS: [&str; 5] = ["dags", "engine", "alerts", "api", "environments"];

/// The effective configuration.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    /// Where DAG files are.
    pub dags: DagsConfig,
    /// The engine: state database, concurrency, heartbeats.
    pub engine: EngineConfig,
    /// Alert channels.
    pub alerts: AlertsConfig,
    /// The HTTP API.
    pub api: ApiConfig,
    /// The environment in effect (`--env`, `FERRY_ENV`, else `dev`).
    pub environment: String,
    /// Every environment and its connections.
    pub environments: BTreeMap<String, EnvironmentConfig>,
}

/// `[engine]`: the state database, concurrency and liveness settings.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Folder for the SQLite database when no `database_url` is set.
    pub data_dir: PathBuf,
    /// PostgreSQL URL (a secret: it may carry a password).
    pub database_url: Option<Secret>,
    /// Attempts executing at once.
    pub parallelism: usize,
    /// Seconds between heartbeats.
    pub heartbeat_interval_secs: u64,
    /// Seconds without a heartbeat after which an attempt is lost.
    pub heartbeat_timeout_secs: u64,
    /// Seconds running attempts may take to finish on shutdown.
    pub shutdown_grace_secs: u64,
    /// Seconds between looks for changed DAG files.
    pub reload_interval_secs: u64,
    /// What SIGTERM or Ctrl-C does to running commands: leave them to their supervisors
    /// (`detach`) or let them finish within the grace period (`drain`).
    pub on_stop: OnStop,
    /// What happens to processes a command leaves behind when its main process ends.
    pub leftover_processes: LeftoverProcesses,
    /// The daemon's environment variables that commands inherit (names; `LC_*` for a prefix).
    pub task_env: Vec<String>,
    /// Slots per named pool.
    #[serde(default)]
    pub pools: BTreeMap<String, usize>,
}

/// `engine.on_stop`.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnStop {
    /// Leave running commands to their supervisors and exit at once; the next start reattaches.
    Detach,
    /// Let running commands finish within `shutdown_grace_secs`, then stop them.
    Drain,
}

/// `engine.leftover_processes`.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LeftoverProcesses {
    /// Stop them (SIGTERM, then SIGKILL after the grace period).
    Stop,
    /// Leave them running.
    Keep,
}

impl EngineConfig {
    /// The database to use: `database_url`, else SQLite in `data_dir`.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) if !url.expose().is_empty() => url.expose().to_string(),
            _ => format!("sqlite://{}", self.data_dir.join("ferry.db").display()),
        }
    }

    /// The variables of `environment` that commands inherit by `task_env`. ferry's own
    /// variables (`FERRY_…`) never pass.
    pub fn inherited_env(&self, environment: &[(String, String)]) -> Vec<(String, String)> {
        environment
            .iter()
            .filter(|(name, _)| !name.starts_with("FERRY"))
            .filter(|(name, _)| {
                self.task_env
                    .iter()
                    .any(|pattern| match pattern.strip_suffix('*') {
                        Some(prefix) => name.starts_with(prefix),
                        None => name == pattern,
                    })
            })
            .cloned()
            .collect()
    }
}

/// `[dags]`: where DAG files are.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DagsConfig {
    /// Folders searched recursively for `*.yaml` / `*.yml` DAG files.
    pub folders: Vec<PathBuf>,
}

/// `[api] listen` that turns the HTTP API off.
pub const API_OFF: &str = "off";

/// `[api]`: the HTTP API that `ferry serve` answers.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// The address `ferry serve` listens on (`host:port`), or `off`.
    pub listen: String,
    /// Bearer tokens by name (the name is what the event log records).
    #[serde(default)]
    pub tokens: BTreeMap<String, ApiToken>,
}

/// A bearer token of the API: only its hash is kept.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    /// `sha256:` followed by the hexadecimal SHA-256 of the token.
    pub hash: String,
    /// What the token may do.
    pub role: Role,
    /// Only DAGs of these trees (`internal`, `user-facing`); every tree when empty.
    #[serde(default)]
    pub trees: Vec<String>,
    /// Only DAGs with at least one of these tags; any DAG when empty.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// The DAG trees a token's `trees` may name.
pub const TREES: [&str; 2] = ["internal", "user-facing"];

/// What a token may do; each role may do what the ones before it may.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read.
    Viewer,
    /// Read, trigger, rerun, pause.
    Operator,
    /// Everything.
    Admin,
}

impl Role {
    /// The role as configured.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl ApiToken {
    /// The SHA-256 in hexadecimal, when `hash` is well formed.
    pub fn sha256_hex(&self) -> Option<&str> {
        self.hash
            .strip_prefix("sha256:")
            .filter(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
    }
}

/// `[alerts]`: the channels DAGs may name.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Channels by name.
    #[serde(default)]
    pub channels: BTreeMap<String, Channel>,
}

/// Where an alert goes.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Channel {
    /// ferry's own log.
    Log,
    /// A Slack incoming webhook.
    Slack {
        /// The webhook URL (a secret).
        webhook_url: Secret,
    },
    /// A JSON POST to any URL.
    Webhook {
        /// The URL (a secret: it often carries a token).
        url: Secret,
        /// Extra request headers (secrets).
        #[serde(default)]
        headers: BTreeMap<String, Secret>,
    },
}

impl AlertsConfig {
    /// The names of the defined channels.
    pub fn channel_names(&self) -> BTreeSet<String> {
        self.channels.keys().cloned().collect()
    }
}

/// Where the layers come from.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    /// A file that must exist (`--config`).
    pub explicit_file: Option<PathBuf>,
    /// A file read if it exists (`./ferry.toml`).
    pub optional_file: Option<PathBuf>,
    /// Environment variables (name, value): `FERRY__` ones override settings; `${NAME}`
    /// references of secrets are resolved from them.
    pub environment: Vec<(String, String)>,
    /// The environment to use (`--env`; else `FERRY_ENV`; else `dev`).
    pub environment_name: Option<String>,
}

impl Sources {
    /// The embedded defaults and nothing else.
    pub fn defaults_only() -> Self {
        Self::default()
    }

    /// The usual sources: `--config` if given, else `$FERRY_CONFIG`, else `./ferry.toml`; and
    /// the process environment.
    pub fn from_process(config_flag: Option<PathBuf>, env_flag: Option<String>) -> Self {
        let environment: Vec<(String, String)> = std::env::vars().collect();
        let environment_name = env_flag.filter(|name| !name.is_empty()).or_else(|| {
            environment
                .iter()
                .find(|(name, _)| name == "FERRY_ENV")
                .map(|(_, value)| value.clone())
        });
        let from_env = environment
            .iter()
            .find(|(name, _)| name == "FERRY_CONFIG")
            .map(|(_, value)| PathBuf::from(value));
        let explicit_file = config_flag.or(from_env);
        let optional_file = explicit_file.is_none().then(|| PathBuf::from("ferry.toml"));
        Self {
            explicit_file,
            optional_file,
            environment,
            environment_name,
        }
    }

    /// The file in effect, if any.
    pub fn file(&self) -> Option<&Path> {
        self.explicit_file
            .as_deref()
            .or(self.optional_file.as_deref().filter(|path| path.is_file()))
    }
}

impl Config {
    /// Every secret of the configuration (the database URL, webhook URLs and headers), to
    /// mask wherever it could show.
    pub fn secrets(&self) -> ferry_secrets::Redactor {
        let mut redactor = ferry_secrets::Redactor::new();
        if let Some(url) = &self.engine.database_url {
            redactor.add_pair("database_url", url.expose());
        }
        for environment in self.environments.values() {
            for connection in environment.connections.values() {
                for secret in connection.secrets() {
                    redactor.add_pair("url", secret.expose());
                    if let Some(password) = connections::url_password(secret.expose()) {
                        redactor.add(password);
                    }
                }
            }
        }
        for channel in self.alerts.channels.values() {
            match channel {
                Channel::Log => {}
                Channel::Slack { webhook_url } => redactor.add(webhook_url.expose()),
                Channel::Webhook { url, headers } => {
                    redactor.add(url.expose());
                    for value in headers.values() {
                        redactor.add(value.expose());
                    }
                }
            }
        }
        redactor
    }
}

/// Every problem found in the configuration.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    /// One line per problem.
    pub problems: Vec<String>,
}

impl Config {
    /// Reads and merges the layers; reports every problem at once.
    pub fn load(sources: &Sources) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = &sources.explicit_file
            && !path.is_file()
        {
            problems.push(format!(
                "the configuration file `{}` does not exist",
                path.display()
            ));
        }
        if let Some(path) = sources.file() {
            figment = figment.merge(Toml::file_exact(path));
        }
        for (name, value) in &sources.environment {
            let Some(key) = name.strip_prefix("FERRY__") else {
                continue;
            };
            let key = key
                .split("__")
                .map(str::to_lowercase)
                .collect::<Vec<_>>()
                .join(".");
            let Ok(parsed) = value.parse::<figment::value::Value>();
            figment = figment.merge(Serialized::default(&key, parsed));
        }
        match figment.extract::<BTreeMap<String, figment::value::Value>>() {
            Ok(sections) => {
                for name in sections
                    .keys()
                    .filter(|name| !SECTIONS.contains(&name.as_str()))
                {
                    let hint = SECTIONS
                        .iter()
                        .find(|known| strsim::jaro_winkler(name, known) > 0.8)
                        .map(|known| format!(" (did you mean `{known}`?)"))
                        .unwrap_or_default();
                    problems.push(format!(
                        "unknown section `{name}`{hint}; known sections: {}",
                        SECTIONS.join(", ")
                    ));
                }
            }
            Err(error) => problems.extend(error.into_iter().map(|e| describe(&e))),
        }
        let dags = section::<DagsSection>(&figment, &mut problems);
        let engine = section::<EngineSection>(&figment, &mut problems);
        if let Some(EngineSection { engine }) = &engine {
            for name in engine.task_env.iter().filter(|n| n.starts_with("FERRY")) {
                problems.push(format!(
                    "`engine.task_env`: `{name}` is ferry's own configuration and is never given to tasks; set what a task needs in the DAG's `env`"
                ));
            }
        }
        let alerts = section::<AlertsSection>(&figment, &mut problems);
        let api = section::<ApiSection>(&figment, &mut problems);
        if let Some(ApiSection { api }) = &api {
            let port = api
                .listen
                .rsplit_once(':')
                .filter(|(host, _)| !host.is_empty())
                .and_then(|(_, port)| port.parse::<u16>().ok());
            if api.listen != API_OFF && port.is_none() {
                problems.push(format!(
                    "`api.listen`: `{}` is not `host:port` (127.0.0.1:8080), nor `{API_OFF}`",
                    api.listen
                ));
            }
            let mut seen = BTreeMap::new();
            for (name, token) in &api.tokens {
                if let Some(other) = seen.insert(token.hash.to_ascii_lowercase(), name) {
                    problems.push(format!(
                        "`api.tokens.{name}.hash`: the same as `api.tokens.{other}.hash`; give each token its own"
                    ));
                }
                for tree in token.trees.iter().filter(|t| !TREES.contains(&t.as_str())) {
                    problems.push(format!(
                        "`api.tokens.{name}.trees`: `{tree}` is not a DAG tree (internal, user-facing)"
                    ));
                }
                if token.sha256_hex().is_none() {
                    problems.push(format!(
                        "`api.tokens.{name}.hash`: expected `sha256:` and 64 hexadecimal digits (the SHA-256 of the token, e.g. `printf %s \"$TOKEN\" | sha256sum`), never the token itself"
                    ));
                }
            }
        }
        let environments = section::<EnvironmentsSection>(&figment, &mut problems);
        let environment = sources
            .environment_name
            .clone()
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| DEFAULT_ENVIRONMENT.to_string());
        if let Some(EnvironmentsSection { environments }) = &environments
            && !environments.is_empty()
            && !environments.contains_key(&environment)
        {
            let names: Vec<&str> = environments.keys().map(String::as_str).collect();
            let hint = names
                .iter()
                .find(|known| strsim::jaro_winkler(&environment, known) > 0.8)
                .map(|known| format!(" (did you mean `{known}`?)"))
                .unwrap_or_default();
            problems.push(format!(
                "the environment `{environment}` (--env or FERRY_ENV) is not defined{hint}; defined: {}",
                names.join(", ")
            ));
        }
        match (dags, engine, alerts, api, environments) {
            (
                Some(DagsSection { dags }),
                Some(EngineSection { engine }),
                Some(AlertsSection { alerts }),
                Some(ApiSection { api }),
                Some(EnvironmentsSection { environments }),
            ) if problems.is_empty() => {
                let mut config = Self {
                    dags,
                    engine,
                    alerts,
                    api,
                    environment,
                    environments,
                };
                for secret in config.secrets_mut() {
                    secret.resolve(&sources.environment);
                }
                Ok(config)
            }
            _ => {
                problems.dedup();
                Err(ConfigError { problems })
            }
        }
    }

    /// Every secret, for resolving references.
    fn secrets_mut(&mut self) -> Vec<&mut Secret> {
        let mut secrets: Vec<&mut Secret> = self.engine.database_url.iter_mut().collect();
        for environment in self.environments.values_mut() {
            for connection in environment.connections.values_mut() {
                secrets.extend(connection.secrets_mut());
            }
        }
        for channel in self.alerts.channels.values_mut() {
            match channel {
                Channel::Log => {}
                Channel::Slack { webhook_url } => secrets.push(webhook_url),
                Channel::Webhook { url, headers } => {
                    secrets.push(url);
                    secrets.extend(headers.values_mut());
                }
            }
        }
        secrets
    }

    /// The secrets that refer to an environment variable that is not set (or a file that
    /// cannot be read): (where, what it refers to, for a sentence).
    pub fn unset_secrets(&self) -> Vec<(String, String)> {
        let mut unset = Vec::new();
        let mut note = |place: String, secret: &Secret| {
            if let Some(missing) = secret.missing() {
                unset.push((place, missing));
            }
        };
        if let Some(url) = &self.engine.database_url {
            note("engine.database_url".to_string(), url);
        }
        for (name, connection) in self.connections() {
            for secret in connection.secrets() {
                note(
                    format!("environments.{}.connections.{name}", self.environment),
                    secret,
                );
            }
        }
        for (name, channel) in &self.alerts.channels {
            match channel {
                Channel::Log => {}
                Channel::Slack { webhook_url } => {
                    note(format!("alerts.channels.{name}.webhook_url"), webhook_url);
                }
                Channel::Webhook { url, headers } => {
                    note(format!("alerts.channels.{name}.url"), url);
                    for (header, value) in headers {
                        note(format!("alerts.channels.{name}.headers.{header}"), value);
                    }
                }
            }
        }
        unset
    }

    /// The connections of the environment in effect.
    pub fn connections(&self) -> &BTreeMap<String, Connection> {
        static NONE: BTreeMap<String, Connection> = BTreeMap::new();
        self.environments
            .get(&self.environment)
            .map_or(&NONE, |environment| &environment.connections)
    }

    /// The effective configuration as TOML, secrets masked.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self)
            .unwrap_or_else(|error| format!("# cannot show the configuration: {error}\n"))
    }
}

/// Each section is extracted on its own so that the problems of all sections are reported.
#[derive(Deserialize)]
struct DagsSection {
    dags: DagsConfig,
}

#[derive(Deserialize)]
struct EngineSection {
    engine: EngineConfig,
}

#[derive(Deserialize)]
struct ApiSection {
    api: ApiConfig,
}

#[derive(Deserialize)]
struct EnvironmentsSection {
    #[serde(default)]
    environments: BTreeMap<String, EnvironmentConfig>,
}

#[derive(Deserialize)]
struct AlertsSection {
    #[serde(default)]
    alerts: AlertsConfig,
}

fn section<T: serde::de::DeserializeOwned>(
    figment: &Figment,
    problems: &mut Vec<String>,
) -> Option<T> {
    match figment.extract::<T>() {
        Ok(value) => Some(value),
        Err(error) => {
            problems.extend(error.into_iter().map(|e| describe(&e)));
            None
        }
    }
}

/// `` `dags.folders` (ferry.toml): invalid type: ... ``: the key, where it was set, what is wrong.
fn describe(error: &figment::Error) -> String {
    let key = error.path.join(".");
    let origin = error
        .metadata
        .as_ref()
        .map(|metadata| match &metadata.source {
            Some(figment::Source::File(path)) => path.display().to_string(),
            // Only the environment layer is built from code.
            Some(figment::Source::Code(_)) => format!(
                "environment variable FERRY__{}",
                error
                    .path
                    .iter()
                    .map(|p| p.to_uppercase())
                    .collect::<Vec<_>>()
                    .join("__")
            ),
            _ => "embedded defaults".to_string(),
        })
        .map(|origin| format!(" ({origin})"))
        .unwrap_or_default();
    if key.is_empty() {
        format!("{}{origin}", error.kind)
    } else {
        format!("`{key}`{origin}: {}", error.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_file(text: &str, environment: &[(&str, &str)]) -> (tempfile::TempDir, Sources) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ferry.toml");
        std::fs::write(&path, text).expect("write config");
        let sources = Sources {
            explicit_file: Some(path),
            optional_file: None,
            environment: environment
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            environment_name: None,
        };
        (dir, sources)
    }

    #[test]
    fn layers_file_over_defaults_and_environment_over_file() {
        let (_dir, sources) = with_file(
            "[dags]\nfolders = [\"a\"]\n[alerts.channels.oncall]\nkind = \"slack\"\nwebhook_url = \"https://hooks.example/T0/SECRET\"\n",
            &[("FERRY__DAGS__FOLDERS", "[\"b\", \"c\"]"), ("OTHER", "x")],
        );
        let config = Config::load(&sources).expect("valid");
        assert_eq!(
            config.dags.folders,
            [PathBuf::from("b"), PathBuf::from("c")]
        );
        assert_eq!(
            config.alerts.channel_names(),
            BTreeSet::from(["log".to_string(), "oncall".to_string()])
        );
    }

    #[test]
    fn refuses_a_bad_listen_address_and_two_tokens_with_one_hash() {
        let hash = format!("sha256:{}", "ab".repeat(32));
        let (_dir, sources) = with_file(
            &format!(
                "[api]\nlisten = \"8080\"\n[api.tokens.a]\nhash = \"{hash}\"\nrole = \"viewer\"\n[api.tokens.b]\nhash = \"{hash}\"\nrole = \"admin\"\n[api.tokens.c]\nhash = \"secret\"\nrole = \"viewer\"\n"
            ),
            &[],
        );
        let problems = Config::load(&sources).expect_err("invalid").problems;
        let has = |start: &str| problems.iter().any(|p| p.starts_with(start));
        assert!(has("`api.listen`: `8080`"), "{problems:?}");
        assert!(
            has("`api.tokens.b.hash`: the same as `api.tokens.a.hash`"),
            "{problems:?}"
        );
        assert!(has("`api.tokens.c.hash`: expected"), "{problems:?}");
        let (_dir, sources) = with_file("[api]\nlisten = \"off\"\n", &[]);
        assert_eq!(Config::load(&sources).expect("valid").api.listen, API_OFF);
    }

    #[test]
    fn masks_secrets_when_shown() {
        let (_dir, sources) = with_file(
            "[alerts.channels.oncall]\nkind = \"webhook\"\nurl = \"https://example/hook?token=SECRET\"\nheaders = { Authorization = \"Bearer SECRET\" }\n",
            &[],
        );
        let config = Config::load(&sources).expect("valid");
        let shown = config.to_toml();
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(shown.contains("url = \"********\""), "{shown}");
        assert!(!format!("{config:?}").contains("SECRET"));
    }

    #[test]
    fn reports_every_problem_at_once() {
        let (_dir, sources) = with_file(
            "[dag]\nfolders = [\"a\"]\n[dags]\nfolders = \"not-a-list\"\n[alerts.channels.x]\nkind = \"pager\"\n",
            &[],
        );
        let error = Config::load(&sources).expect_err("invalid");
        let text = error.to_string();
        assert_eq!(error.problems.len(), 3, "{text}");
        assert!(
            text.contains("unknown section `dag` (did you mean `dags`?)"),
            "{text}"
        );
        assert!(text.contains("folders"), "{text}");
        assert!(text.contains("pager"), "{text}");
    }

    #[test]
    fn tasks_inherit_only_allowed_variables_and_never_ferrys_own() {
        let config = Config::load(&Sources::defaults_only()).expect("valid");
        let environment: Vec<(String, String)> = [
            ("PATH", "/usr/bin"),
            ("HOME", "/home/ferry"),
            ("AWS_SECRET_ACCESS_KEY", "x"),
            ("FERRY__ENGINE__DATABASE_URL", "postgres://u:p@db/x"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let names: Vec<String> = config
            .engine
            .inherited_env(&environment)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(names, ["PATH", "HOME"]);
        let (_dir, sources) = with_file(
            "[engine]\ntask_env = [\"PATH\", \"FERRY__ENGINE__DATABASE_URL\"]\n",
            &[],
        );
        let error = Config::load(&sources).expect_err("refused");
        assert!(
            error.to_string().contains("never given to tasks"),
            "{error}"
        );
    }

    #[test]
    fn every_configured_secret_is_known_to_the_redactor() {
        let (_dir, sources) = with_file(
            "[alerts.channels.oncall]\nkind = \"slack\"\nwebhook_url = \"https://hooks.example/T0/SECRET-1\"\n",
            &[(
                "FERRY__ENGINE__DATABASE_URL",
                "postgres://app:SECRET-2@db/ferry",
            )],
        );
        let config = Config::load(&sources).expect("valid");
        let shown = config
            .secrets()
            .redact("posting to https://hooks.example/T0/SECRET-1 with SECRET-2");
        assert!(!shown.contains("SECRET"), "{shown}");
    }

    #[test]
    fn a_missing_explicit_file_is_an_error() {
        let sources = Sources {
            explicit_file: Some(PathBuf::from("/nonexistent/ferry.toml")),
            ..Sources::default()
        };
        let error = Config::load(&sources).expect_err("missing file");
        assert!(error.to_string().contains("does not exist"), "{error}");
    }
}
