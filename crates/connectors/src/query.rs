//! SQL on a SQLite, PostgreSQL or MySQL connection: a `query` task's statements in one
//! transaction, or the statements that write its rows into a destination table.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use ferry_config::Connection;
use ferry_executor::Outcome;
use ferry_executor::connector::AttemptScope;
use sqlx::Connection as _;
use tokio_util::sync::CancellationToken;

/// One function per backend: runs `plan` on a connection (its transaction part in one
/// transaction) and returns the rows each statement of the transaction changed (concrete
/// functions, so that the futures are `Send` for every lifetime).
macro_rules! in_transaction {
    ($name:ident, $connection:ty) => {
        fn $name(
            db: &mut $connection,
            plan: Plan,
        ) -> Pin<Box<dyn Future<Output = Result<Vec<u64>, sqlx::Error>> + Send + '_>> {
            Box::pin(async move {
                for statement in &plan.prepare {
                    sqlx::Executor::execute(&mut *db, statement.as_str()).await?;
                }
                let mut tx = db.begin().await?;
                let mut changed = Vec::new();
                for statement in &plan.transaction {
                    let done = sqlx::Executor::execute(&mut *tx, statement.as_str()).await?;
                    changed.push(done.rows_affected());
                }
                tx.commit().await?;
                for statement in &plan.cleanup {
                    sqlx::Executor::execute(&mut *db, statement.as_str()).await?;
                }
                Ok(changed)
            })
        }
    };
}

in_transaction!(sqlite_transaction, sqlx::SqliteConnection);
in_transaction!(postgres_transaction, sqlx::PgConnection);
in_transaction!(mysql_transaction, sqlx::MySqlConnection);

/// What to run on a SQL connection: statements before the transaction (DDL), the
/// transaction's, and after it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Plan {
    /// Before.
    pub prepare: Vec<String>,
    /// In one transaction.
    pub transaction: Vec<String>,
    /// After.
    pub cleanup: Vec<String>,
    /// Whether the rows of the transaction's last statement are the rows written into a
    /// destination.
    pub writes: bool,
}

/// Runs `plan` on the SQL connection `name`, stopping when `stop` fires or the timeout
/// passes.
pub(crate) async fn run(
    name: &str,
    target: &Connection,
    plan: Plan,
    timeout: Option<Duration>,
    scope: &AttemptScope<'_>,
) -> Outcome {
    // Stopped by the engine (a shutdown, a run timeout, a clear) or by the task's timeout: the
    // statement is stopped on the server too, and the transaction rolls back.
    let stopper = crate::jobs::stopper(scope, timeout);
    match run_sql(name, target, plan, scope, &stopper.token).await {
        Some(outcome) => outcome,
        None if !stopper.timed_out.load(std::sync::atomic::Ordering::SeqCst) => {
            Outcome::failed(None, "stopped; rolled back")
        }
        None => Outcome::failed(
            None,
            format!(
                "timed out after {:.1}s; rolled back",
                timeout.unwrap_or_default().as_secs_f64()
            ),
        ),
    }
}

/// Runs `sql` on `target` in one transaction and says how many rows it changed; `None` if
/// `stop` came first (the statement was stopped on the server, where the database can).
async fn run_sql(
    name: &str,
    target: &Connection,
    plan: Plan,
    scope: &AttemptScope<'_>,
    stop: &CancellationToken,
) -> Option<Outcome> {
    let writes = plan.writes;
    let result = match target {
        Connection::Sqlite { path, schemas, .. } => {
            match crate::sqlite::open(path, schemas, false).await {
                // SQLite ends the statement under way before the transaction is rolled back.
                Ok(mut db) => tokio::select! {
                    result = sqlite_transaction(&mut db, plan) => result,
                    () = stop.cancelled() => return None,
                },
                Err(error) => Err(error),
            }
        }
        Connection::Postgres { url } => match sqlx::PgConnection::connect(url.expose()).await {
            Ok(mut db) => {
                // The server checks every second that ferry is still there, so a dropped
                // connection (a stop) ends the statement (PostgreSQL 14 and later).
                let _ =
                    sqlx::Executor::execute(&mut db, "SET client_connection_check_interval = 1000")
                        .await;
                tokio::select! {
                    result = postgres_transaction(&mut db, plan) => result,
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
                    result = mysql_transaction(&mut db, plan) => result,
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
                "connection `{name}` is a {} connection, not a SQL database",
                target.kind()
            )));
        }
    };
    Some(match result {
        Ok(rows) => {
            let figures = if writes {
                let written = rows.last().copied().unwrap_or(0);
                let replaced = if rows.len() > 1 { rows[0] } else { 0 };
                scope.log.note(&format!(
                    "{written} row(s) written on {name}, {replaced} replaced"
                ));
                BTreeMap::from([
                    ("rows_written".to_string(), count(written)),
                    ("rows_replaced".to_string(), count(replaced)),
                ])
            } else {
                let changed: u64 = rows.iter().sum();
                scope
                    .log
                    .note(&format!("{changed} row(s) changed on {name}"));
                BTreeMap::from([("rows_changed".to_string(), count(changed))])
            };
            scope.recorder.metrics(&figures).await;
            Outcome::Succeeded { code: None }
        }
        Err(error) => {
            let message = ferry_secrets::redact_text(&error.to_string());
            scope.log.note(&message);
            let reason = format!("query on {name} failed: {message}");
            if is_transient(&error) {
                Outcome::failed(None, reason)
            } else {
                Outcome::fatal(reason)
            }
        }
    })
}

/// A count as the store keeps it.
fn count(rows: u64) -> i64 {
    i64::try_from(rows).unwrap_or(i64::MAX)
}

/// Stops the statement MySQL connection `id` runs, from a second connection.
async fn kill_mysql_query(url: &str, id: u64) {
    if let Ok(mut db) = sqlx::MySqlConnection::connect(url).await {
        let _ = sqlx::Executor::execute(&mut db, format!("KILL QUERY {id}").as_str()).await;
    }
}

/// MySQL's codes of failures another try may not meet: a deadlock, a lock wait timeout, too
/// many connections, the server gone.
pub(crate) const MYSQL_TRANSIENT: [u16; 5] = [1213, 1205, 1040, 2006, 2013];

/// Errors another attempt may not meet: the network, the pool, a deadlock or a serialization
/// failure. A SQL error (a syntax error, a missing table) is not retried.
pub(crate) fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => {
            // MySQL: deadlock, lock wait timeout, too many connections, server gone.
            let mysql = db
                .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                .is_some_and(|e| MYSQL_TRANSIENT.contains(&e.number()));
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
