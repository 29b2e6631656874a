//! ferry's connections to the systems its tasks read and write, kept out of the engine so that
//! the engine and its tests do not compile database drivers and cloud SDKs.
//!
//! A real round trip to a connection (`ferry connections test`), and the work of the task
//! types that use connections ([`LiveConnectors`]): `query` on SQLite, PostgreSQL,
//! MySQL/MariaDB and BigQuery (into a destination table by a write mode, too), `glue_job` and
//! `stepfunctions` on AWS.

mod aws;
mod bigquery;
mod check;
mod glue;
mod jobs;
mod live;
mod query;
mod sfn;
mod sqlite;
mod sync;
mod transfer;
mod waits;
mod write;

use std::time::Duration;

use ferry_config::Connection;
use sqlx::Connection as _;

pub use live::LiveConnectors;

/// Why a connection could not be used. Every message names the connection, what failed and
/// what to check; passwords never appear.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The connection refers to a secret that is not set.
    #[error("connection `{name}` ({kind}): its URL refers to {missing}")]
    Unset {
        /// The connection.
        name: String,
        /// Its kind.
        kind: &'static str,
        /// What it refers to: "the environment variable NAME, which is not set".
        missing: String,
    },
    /// The database could not be reached or refused the query.
    #[error("connection `{name}` ({kind}, {target}): {what}: {cause}; {advice}")]
    Failed {
        /// The connection.
        name: String,
        /// Its kind.
        kind: &'static str,
        /// Where it points (password masked).
        target: String,
        /// What was tried.
        what: &'static str,
        /// What the database or the network said (passwords masked).
        cause: String,
        /// What to check.
        advice: &'static str,
    },
}

/// How long a round trip may take.
const TEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Makes a real round trip to `connection` (connect, then `SELECT 1`); returns what was
/// checked, for people.
pub async fn test(name: &str, connection: &Connection) -> Result<String, ConnectorError> {
    let failed = |what: &'static str, cause: String, advice: &'static str| ConnectorError::Failed {
        name: name.to_string(),
        kind: connection.kind(),
        target: connection.target(),
        what,
        cause: ferry_secrets::redact_text(&cause),
        advice,
    };
    let round_trip = async {
        match connection {
            Connection::Sqlite { path, schemas, .. } => {
                if !path.is_file() {
                    return Err(failed(
                        "open",
                        "no such file".to_string(),
                        "check the path (relative to the folder ferry runs in)",
                    ));
                }
                let mut db = sqlite::open(path, schemas, true).await.map_err(|e| {
                    failed("open", e.to_string(), "check that it is a SQLite database")
                })?;
                let version: String = sqlx::query_scalar("SELECT sqlite_version()")
                    .fetch_one(&mut db)
                    .await
                    .map_err(|e| {
                        failed("query", e.to_string(), "check that it is a SQLite database")
                    })?;
                Ok(format!("SQLite {version}"))
            }
            Connection::Postgres { url } => {
                let url = exposed(name, connection, url)?;
                let mut db = sqlx::PgConnection::connect(url).await.map_err(|e| {
                    failed(
                        "connect",
                        e.to_string(),
                        "check the host, port, database, user and password",
                    )
                })?;
                let version: String = sqlx::query_scalar("SHOW server_version")
                    .fetch_one(&mut db)
                    .await
                    .map_err(|e| failed("query", e.to_string(), "check the user's rights"))?;
                Ok(format!("PostgreSQL {version}"))
            }
            Connection::Mysql { url } => {
                let url = exposed(name, connection, url)?;
                let mut db = sqlx::MySqlConnection::connect(url).await.map_err(|e| {
                    failed(
                        "connect",
                        e.to_string(),
                        "check the host, port, database, user and password",
                    )
                })?;
                let version: String = sqlx::query_scalar("SELECT VERSION()")
                    .fetch_one(&mut db)
                    .await
                    .map_err(|e| failed("query", e.to_string(), "check the user's rights"))?;
                Ok(format!("MySQL/MariaDB {version}"))
            }
            Connection::Bigquery {
                project,
                location,
                credentials,
                endpoint,
            } => {
                let target = bigquery::Target {
                    project,
                    location: location.as_deref(),
                    credentials,
                    endpoint: endpoint.as_deref(),
                };
                let client = bigquery::client(&target).await.map_err(|e| {
                    failed(
                        "authenticate",
                        e,
                        "check the credentials (application default credentials, or the key file)",
                    )
                })?;
                let mut request =
                    gcp_bigquery_client::model::query_request::QueryRequest::new("SELECT 1 AS one");
                request.use_legacy_sql = false;
                request.location = location.clone();
                let answer = client.job().query(project, request).await.map_err(|e| {
                    failed(
                        "query",
                        bigquery::describe(&e),
                        "check the project, the endpoint and that the identity may run jobs",
                    )
                })?;
                if let Some(error) = answer.errors.as_ref().and_then(|e| e.first()) {
                    return Err(failed(
                        "query",
                        error.message.clone().unwrap_or_default(),
                        "check the project and that the identity may run jobs",
                    ));
                }
                Ok(format!("BigQuery project {project} ran SELECT 1"))
            }
            Connection::Aws {
                region,
                role_arn,
                endpoint,
            } => {
                let config =
                    aws::sdk_config(region, role_arn.as_deref(), endpoint.as_deref()).await;
                let s3 = aws::s3(&config, endpoint.as_deref());
                match s3.list_buckets().max_buckets(1).send().await {
                    Ok(_) => Ok(format!("AWS {region}: S3 answered (credentials accepted)")),
                    Err(error) => Err(failed(
                        "list S3 buckets",
                        aws::describe(&error),
                        "check the credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID, the instance role), the role and the region",
                    )),
                }
            }
        }
    };
    match tokio::time::timeout(TEST_TIMEOUT, round_trip).await {
        Ok(result) => result,
        Err(_) => Err(failed(
            "connect",
            format!("no answer within {} s", TEST_TIMEOUT.as_secs()),
            "check that the server runs and that this machine can reach it",
        )),
    }
}

/// Dry-runs `sql` on BigQuery connection `name` (`ferry validate --connect`): BigQuery parses
/// and plans it without running it. Returns the bytes it would process; an error says why
/// BigQuery refused it.
pub async fn dry_run(
    name: &str,
    connection: &Connection,
    sql: &str,
) -> Result<i64, ConnectorError> {
    let Connection::Bigquery {
        project,
        location,
        credentials,
        endpoint,
    } = connection
    else {
        return Err(ConnectorError::Failed {
            name: name.to_string(),
            kind: connection.kind(),
            target: connection.target(),
            what: "dry run",
            cause: "only BigQuery connections have dry runs".to_string(),
            advice: "",
        });
    };
    let failed = |cause: String, advice: &'static str| ConnectorError::Failed {
        name: name.to_string(),
        kind: "bigquery",
        target: connection.target(),
        what: "dry run",
        cause: ferry_secrets::redact_text(&cause),
        advice,
    };
    let target = bigquery::Target {
        project,
        location: location.as_deref(),
        credentials,
        endpoint: endpoint.as_deref(),
    };
    let client = bigquery::client(&target)
        .await
        .map_err(|e| failed(e, "check the credentials"))?;
    let mut request = gcp_bigquery_client::model::query_request::QueryRequest::new(sql);
    request.use_legacy_sql = false;
    request.dry_run = Some(true);
    request.location = location.clone();
    let answer =
        match tokio::time::timeout(TEST_TIMEOUT, client.job().query(project, request)).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => return Err(failed(bigquery::describe(&error), "fix the SQL")),
            Err(_) => {
                return Err(failed(
                    format!("no answer within {} s", TEST_TIMEOUT.as_secs()),
                    "check the endpoint",
                ));
            }
        };
    if let Some(error) = answer.errors.as_ref().and_then(|e| e.first()) {
        return Err(failed(
            error.message.clone().unwrap_or_default(),
            "fix the SQL",
        ));
    }
    Ok(answer
        .total_bytes_processed
        .as_deref()
        .and_then(|b| b.parse().ok())
        .unwrap_or(0))
}

/// Makes the SQLite databases of `connections` that have a `seed` script and whose file does
/// not exist yet: each from its script, in one transaction (a script that fails leaves no
/// file, so the next start tries again). Returns what it made, for people.
pub async fn seed(
    connections: &std::collections::BTreeMap<String, Connection>,
) -> Result<Vec<String>, ConnectorError> {
    let mut made = Vec::new();
    for (name, connection) in connections {
        let Connection::Sqlite {
            path,
            seed: Some(script),
            ..
        } = connection
        else {
            continue;
        };
        if path.exists() {
            continue;
        }
        let failed = |what: &'static str, cause: String| ConnectorError::Failed {
            name: name.clone(),
            kind: "sqlite",
            target: path.display().to_string(),
            what,
            cause,
            advice: "check the seed script; the database is made again at the next start",
        };
        let sql = std::fs::read_to_string(script)
            .map_err(|e| failed("read the seed script", format!("{}: {e}", script.display())))?;
        if let Some(folder) = path.parent().filter(|f| !f.as_os_str().is_empty()) {
            std::fs::create_dir_all(folder)
                .map_err(|e| failed("make its folder", format!("{}: {e}", folder.display())))?;
        }
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true);
        let result = async {
            let mut db = sqlx::SqliteConnection::connect_with(&options).await?;
            let mut tx = db.begin().await?;
            sqlx::raw_sql(sql.as_str()).execute(&mut *tx).await?;
            tx.commit().await?;
            db.close().await
        }
        .await;
        if let Err(error) = result {
            let _ = std::fs::remove_file(path);
            return Err(failed(
                "run the seed script",
                format!("{}: {error}", script.display()),
            ));
        }
        made.push(format!(
            "connection {name}: made {} from {}",
            path.display(),
            script.display()
        ));
    }
    Ok(made)
}

/// The URL of a connection, or the error naming the unset variable it refers to.
fn exposed<'a>(
    name: &str,
    connection: &Connection,
    url: &'a ferry_config::Secret,
) -> Result<&'a str, ConnectorError> {
    match url.missing() {
        Some(missing) => Err(ConnectorError::Unset {
            name: name.to_string(),
            kind: connection.kind(),
            missing,
        }),
        None => Ok(url.expose()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn a_sqlite_file_answers_and_a_missing_one_is_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("app.db");
        let runtime = runtime();
        let missing = runtime
            .block_on(test(
                "app",
                &Connection::Sqlite {
                    path: path.clone(),
                    seed: None,
                    schemas: Vec::new(),
                },
            ))
            .expect_err("no file");
        assert!(
            missing
                .to_string()
                .starts_with("connection `app` (sqlite, ")
                && missing.to_string().contains("open: no such file"),
            "{missing}"
        );
        std::fs::write(&path, "").expect("empty file");
        let said = runtime
            .block_on(test(
                "app",
                &Connection::Sqlite {
                    path,
                    seed: None,
                    schemas: Vec::new(),
                },
            ))
            .expect("an empty file is an empty database");
        assert!(said.starts_with("SQLite 3."), "{said}");
    }

    #[test]
    fn a_wrong_password_is_masked_and_explained() {
        let connection = Connection::Postgres {
            url: ferry_config::Secret::new("postgres://nobody:hunter2-secret@127.0.0.1:1/none"),
        };
        let error = runtime()
            .block_on(test("warehouse", &connection))
            .expect_err("nothing listens on port 1");
        let text = error.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.starts_with("connection `warehouse` (postgres, postgres://nobody:")
                && text.contains("check the host, port"),
            "{text}"
        );
    }
}
