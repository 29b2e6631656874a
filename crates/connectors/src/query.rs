//! `query` tasks: SQL on a SQLite, PostgreSQL or MySQL connection, in one transaction.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use ferry_config::Connection;
use ferry_executor::connector::{ConnectorWork, Connectors};
use ferry_executor::{LogBuffer, Outcome};
use sqlx::Connection as _;
use tokio_util::sync::CancellationToken;

/// One function per backend: runs `sql` on a connection in a transaction and returns the rows
/// changed (concrete functions, so that the futures are `Send` for every lifetime).
macro_rules! in_transaction {
    ($name:ident, $connection:ty) => {
        fn $name(
            db: &mut $connection,
            sql: String,
        ) -> Pin<Box<dyn Future<Output = Result<u64, sqlx::Error>> + Send + '_>> {
            Box::pin(async move {
                let mut tx = db.begin().await?;
                let done = sqlx::Executor::execute(&mut *tx, sql.as_str()).await?;
                tx.commit().await?;
                Ok(done.rows_affected())
            })
        }
    };
}

in_transaction!(sqlite_transaction, sqlx::SqliteConnection);
in_transaction!(postgres_transaction, sqlx::PgConnection);
in_transaction!(mysql_transaction, sqlx::MySqlConnection);

/// The connections of the environment in effect, for the engine.
pub struct SqlConnectors {
    connections: BTreeMap<String, Connection>,
}

impl SqlConnectors {
    /// Connectors over `connections` (the environment's).
    pub fn new(connections: BTreeMap<String, Connection>) -> Self {
        Self { connections }
    }
}

impl Connectors for SqlConnectors {
    fn run<'a>(
        &'a self,
        work: &'a ConnectorWork,
        log: &'a LogBuffer,
        cancel: &'a CancellationToken,
    ) -> Pin<Box<dyn Future<Output = Outcome> + Send + 'a>> {
        Box::pin(async move {
            let ConnectorWork::Query {
                connection,
                sql,
                timeout,
            } = work;
            let Some(target) = self.connections.get(connection) else {
                return Outcome::fatal(format!("no connection `{connection}` in this environment"));
            };
            // Stopped by the engine (a shutdown, a run timeout, a clear) or by the task's
            // timeout: the statement is stopped on the server too, and the transaction rolls
            // back.
            let stop = cancel.child_token();
            if let Some(limit) = *timeout {
                let timer = stop.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(limit).await;
                    timer.cancel();
                });
            }
            match run_sql(connection, target, sql, log, &stop).await {
                Some(outcome) => outcome,
                None if cancel.is_cancelled() => Outcome::failed(None, "stopped; rolled back"),
                None => Outcome::failed(
                    None,
                    format!(
                        "timed out after {:.1}s; rolled back",
                        timeout.unwrap_or_default().as_secs_f64()
                    ),
                ),
            }
        })
    }
}

/// Runs `sql` on `target` in one transaction and says how many rows it changed; `None` if
/// `stop` came first (the statement was stopped on the server, where the database can).
async fn run_sql(
    name: &str,
    target: &Connection,
    sql: &str,
    log: &LogBuffer,
    stop: &CancellationToken,
) -> Option<Outcome> {
    let result = match target {
        Connection::Sqlite { path } => {
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(path)
                .busy_timeout(Duration::from_secs(30));
            match sqlx::SqliteConnection::connect_with(&options).await {
                // SQLite ends the statement under way before the transaction is rolled back.
                Ok(mut db) => tokio::select! {
                    result = sqlite_transaction(&mut db, sql.to_string()) => result,
                    () = stop.cancelled() => return None,
                },
                Err(error) => Err(error),
            }
        }
        Connection::Postgres { url } | Connection::Mysql { url } if url.unset().is_some() => {
            return Some(Outcome::fatal(format!(
                "connection `{name}`'s URL refers to the environment variable {}, which is not set where ferry runs",
                url.unset().unwrap_or_default()
            )));
        }
        Connection::Postgres { url } => match sqlx::PgConnection::connect(url.expose()).await {
            Ok(mut db) => {
                // The server checks every second that ferry is still there, so a dropped
                // connection (a stop) ends the statement (PostgreSQL 14 and later).
                let _ =
                    sqlx::Executor::execute(&mut db, "SET client_connection_check_interval = 1000")
                        .await;
                tokio::select! {
                    result = postgres_transaction(&mut db, sql.to_string()) => result,
                    () = stop.cancelled() => return None,
                }
            }
            Err(error) => Err(error),
        },
        Connection::Mysql { url } => match sqlx::MySqlConnection::connect(url.expose()).await {
            Ok(mut db) => {
                let id: Result<u64, _> = sqlx::query_scalar("SELECT CONNECTION_ID()")
                    .fetch_one(&mut db)
                    .await;
                tokio::select! {
                    result = mysql_transaction(&mut db, sql.to_string()) => result,
                    () = stop.cancelled() => {
                        // MySQL goes on with a statement whose client left: kill it.
                        if let Ok(id) = id {
                            kill_mysql_query(url.expose(), id).await;
                        }
                        return None;
                    }
                }
            }
            Err(error) => Err(error),
        },
        Connection::Bigquery { .. } | Connection::Aws { .. } => {
            return Some(Outcome::fatal(format!(
                "connection `{name}` is a {} connection: `query` runs on sqlite, postgres and mysql connections (BigQuery comes next)",
                target.kind()
            )));
        }
    };
    Some(match result {
        Ok(rows) => {
            log.note(&format!("{rows} row(s) changed on {name}"));
            Outcome::Succeeded { code: None }
        }
        Err(error) => {
            let message = ferry_secrets::redact_text(&error.to_string());
            log.note(&message);
            let reason = format!("query on {name} failed: {message}");
            if is_transient(&error) {
                Outcome::failed(None, reason)
            } else {
                Outcome::fatal(reason)
            }
        }
    })
}

/// Stops the statement MySQL connection `id` runs, from a second connection.
async fn kill_mysql_query(url: &str, id: u64) {
    if let Ok(mut db) = sqlx::MySqlConnection::connect(url).await {
        let _ = sqlx::Executor::execute(&mut db, format!("KILL QUERY {id}").as_str()).await;
    }
}

/// Errors another attempt may not meet: the network, the pool, a deadlock or a serialization
/// failure. A SQL error (a syntax error, a missing table) is not retried.
fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => {
            // MySQL: deadlock, lock wait timeout, too many connections, server gone.
            let mysql = db
                .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                .is_some_and(|e| matches!(e.number(), 1213 | 1205 | 1040 | 2006 | 2013));
            // PostgreSQL (SQLSTATE): serialization failure, deadlock, connection exceptions
            // (class 08), too many connections, the server shutting down or starting up.
            let code = db.code().unwrap_or_default();
            let postgres = matches!(
                code.as_ref(),
                "40001" | "40P01" | "53300" | "57P01" | "57P02" | "57P03"
            ) || code.starts_with("08");
            mysql || postgres || db.message().contains("database is locked")
        }
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) => true,
        _ => false,
    }
}
