//! Named connections, per environment: `[environments.<env>.connections.<name>]`. A DAG names a
//! connection, never an endpoint, so the same file runs in `dev` against local databases and in
//! `prod` against the clouds. The environment is chosen with `--env` or `FERRY_ENV` (default
//! `dev`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::Secret;

/// The environment used when none is chosen.
pub const DEFAULT_ENVIRONMENT: &str = "dev";

/// `[environments.<env>]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentConfig {
    /// Connections by name.
    #[serde(default)]
    pub connections: BTreeMap<String, Connection>,
}

/// Where a task reads or writes. Secrets (URLs with passwords) are best written as
/// `"${ENV_VAR}"` references.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Connection {
    /// A SQLite database file.
    Sqlite {
        /// The file (relative to the working directory).
        path: PathBuf,
        /// A SQL script that makes the database when the file does not exist (a local
        /// stand-in for the application's database in `dev`), relative to the working
        /// directory. ferry runs it when an engine starts (`serve`, `run`, `backfill`).
        #[serde(default)]
        seed: Option<PathBuf>,
        /// Names usable as `schema.table` (stand-ins for BigQuery datasets or PostgreSQL
        /// schemas): each a SQLite file beside `path` (`warehouse.analytics.sqlite`),
        /// attached to every connection ferry opens.
        #[serde(default)]
        schemas: Vec<String>,
    },
    /// A PostgreSQL database: `postgres://user:password@host:port/db` (a secret).
    Postgres {
        /// The URL.
        url: Secret,
    },
    /// A MySQL or MariaDB database: `mysql://user:password@host:port/db` (a secret).
    Mysql {
        /// The URL.
        url: Secret,
    },
    /// BigQuery.
    Bigquery {
        /// The Google Cloud project.
        project: String,
        /// The location of datasets and jobs (`asia-northeast1`, `US`).
        #[serde(default)]
        location: Option<String>,
        /// How to authenticate.
        #[serde(default)]
        credentials: BigqueryCredentials,
        /// Another endpoint (an emulator: `http://127.0.0.1:9050`).
        #[serde(default)]
        endpoint: Option<String>,
    },
    /// AWS (S3, Glue, Step Functions).
    Aws {
        /// The region (`ap-northeast-1`).
        region: String,
        /// A role to assume with the standard credential chain's identity.
        #[serde(default)]
        role_arn: Option<String>,
        /// Another endpoint (an emulator: `http://127.0.0.1:5000`).
        #[serde(default)]
        endpoint: Option<String>,
    },
}

/// How a BigQuery connection authenticates.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum BigqueryCredentials {
    /// Application default credentials (`GOOGLE_APPLICATION_CREDENTIALS`, the metadata server).
    #[default]
    Default,
    /// A service-account key file.
    KeyFile(PathBuf),
    /// None (an emulator).
    None,
}

impl Connection {
    /// The kind, as written in the configuration.
    pub fn kind(&self) -> &'static str {
        match self {
            Connection::Sqlite { .. } => "sqlite",
            Connection::Postgres { .. } => "postgres",
            Connection::Mysql { .. } => "mysql",
            Connection::Bigquery { .. } => "bigquery",
            Connection::Aws { .. } => "aws",
        }
    }

    /// Where it points, for people: passwords masked.
    pub fn target(&self) -> String {
        match self {
            Connection::Sqlite { path, .. } => path.display().to_string(),
            Connection::Postgres { url } | Connection::Mysql { url } => match url.unset() {
                Some(name) => format!("<unset: ${{{name}}}>"),
                None => {
                    let url = url.expose();
                    match url_password(url) {
                        Some(password) => url.replacen(password, crate::MASK, 1),
                        None => ferry_secrets::redact_text(url),
                    }
                }
            },
            Connection::Bigquery {
                project,
                location,
                endpoint,
                ..
            } => {
                let mut text = format!("project {project}");
                if let Some(location) = location {
                    text.push_str(&format!(", {location}"));
                }
                if let Some(endpoint) = endpoint {
                    text.push_str(&format!(", at {endpoint}"));
                }
                text
            }
            Connection::Aws {
                region,
                role_arn,
                endpoint,
            } => {
                let mut text = format!("region {region}");
                if let Some(role) = role_arn {
                    text.push_str(&format!(", role {role}"));
                }
                if let Some(endpoint) = endpoint {
                    text.push_str(&format!(", at {endpoint}"));
                }
                text
            }
        }
    }

    /// Its secrets, for resolving `${ENV_VAR}` references.
    pub(crate) fn secrets_mut(&mut self) -> Vec<&mut Secret> {
        match self {
            Connection::Postgres { url } | Connection::Mysql { url } => vec![url],
            _ => Vec::new(),
        }
    }

    /// Its secrets.
    pub(crate) fn secrets(&self) -> Vec<&Secret> {
        match self {
            Connection::Postgres { url } | Connection::Mysql { url } => vec![url],
            _ => Vec::new(),
        }
    }
}

/// The password of a database URL, `scheme://user:PASSWORD@host/...`, even when it holds
/// characters a URL should have escaped (`/`, `?`, `#`): everything between the user's colon
/// and the last `@` of the URL.
pub(crate) fn url_password(url: &str) -> Option<&str> {
    let authority_start = url.find("://")? + 3;
    let at = authority_start + url[authority_start..].rfind('@')?;
    let colon = authority_start + url[authority_start..at].find(':')?;
    Some(&url[colon + 1..at]).filter(|password| !password.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_found_even_unescaped() {
        assert_eq!(url_password("postgres://app:ab/cd@db/app"), Some("ab/cd"));
        assert_eq!(url_password("mysql://root@127.0.0.1:3306/test"), None);
        assert_eq!(
            url_password("postgres://u:p%40ss@db:5432/x?sslmode=require"),
            Some("p%40ss")
        );
        let connection = Connection::Postgres {
            url: Secret::new("postgres://app:ab/cd@db/app"),
        };
        assert_eq!(connection.target(), "postgres://app:********@db/app");
    }
}
