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
            let run = run_sql(connection, target, sql, log);
            let limit = timeout.unwrap_or(Duration::MAX);
            tokio::select! {
                outcome = tokio::time::timeout(limit, run) => outcome.unwrap_or_else(|_| {
                    // The transaction is dropped, so rolled back.
                    Outcome::failed(None, format!("timed out after {}s; nothing of it was kept", limit.as_secs()))
                }),
                () = cancel.cancelled() => Outcome::failed(None, "stopped; nothing of it was kept"),
            }
        })
    }
}

/// Runs `sql` on `target` in one transaction and says how many rows it changed.
async fn run_sql(name: &str, target: &Connection, sql: &str, log: &LogBuffer) -> Outcome {
    let result = match target {
        Connection::Sqlite { path } => {
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(path)
                .busy_timeout(Duration::from_secs(30));
            match sqlx::SqliteConnection::connect_with(&options).await {
                Ok(mut db) => sqlite_transaction(&mut db, sql.to_string()).await,
                Err(error) => Err(error),
            }
        }
        Connection::Postgres { url } => match sqlx::PgConnection::connect(url.expose()).await {
            Ok(mut db) => postgres_transaction(&mut db, sql.to_string()).await,
            Err(error) => Err(error),
        },
        Connection::Mysql { url } => match sqlx::MySqlConnection::connect(url.expose()).await {
            Ok(mut db) => mysql_transaction(&mut db, sql.to_string()).await,
            Err(error) => Err(error),
        },
        Connection::Bigquery { .. } | Connection::Aws { .. } => {
            return Outcome::fatal(format!(
                "connection `{name}` is a {} connection: `query` runs on sqlite, postgres and mysql connections (BigQuery comes next)",
                target.kind()
            ));
        }
    };
    match result {
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
    }
}

/// Errors another attempt may not meet: the network, the pool, a deadlock or a serialization
/// failure. A SQL error (a syntax error, a missing table) is not retried.
fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => {
            matches!(
                db.code().as_deref(),
                // PostgreSQL serialization failure and deadlock; MySQL deadlock and lock wait.
                Some("40001" | "40P01" | "1213" | "1205")
            ) || db.message().contains("database is locked")
        }
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) => true,
        _ => false,
    }
}
