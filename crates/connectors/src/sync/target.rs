//! One connection to a sync's target database, whatever its kind: statements, counts, text
//! answers, and rows staged (PostgreSQL by COPY, the others by multi-row INSERTs).

use ferry_config::Connection;
use sqlx::{Connection as _, Row as _};

use crate::transfer::Batch;
use crate::transfer::write_sql::{copy_text, insert_mysql, insert_sqlite};
use crate::write::Dialect;

/// A connection to the target.
pub(crate) enum TargetDb {
    /// SQLite (with the connection's schemas attached).
    Sqlite(sqlx::SqliteConnection),
    /// PostgreSQL.
    Postgres(sqlx::PgConnection),
    /// MySQL or MariaDB.
    Mysql(sqlx::MySqlConnection),
}

/// Runs `$body` with `$db` bound to the concrete connection.
macro_rules! on {
    ($self:expr, $db:ident => $body:expr) => {
        match $self {
            TargetDb::Sqlite($db) => $body,
            TargetDb::Postgres($db) => $body,
            TargetDb::Mysql($db) => $body,
        }
    };
}

impl TargetDb {
    /// Connects to `connection`, or `None` when it is not a SQL database.
    pub(crate) async fn connect(connection: &Connection) -> Option<Result<Self, sqlx::Error>> {
        Some(match connection {
            Connection::Sqlite { path, schemas, .. } => crate::sqlite::open(path, schemas, false)
                .await
                .map(TargetDb::Sqlite),
            Connection::Postgres { url } => {
                match sqlx::PgConnection::connect(url.expose()).await {
                    Ok(mut db) => {
                        // A connection whose client died notices within a second and rolls
                        // its transaction back.
                        let _ = sqlx::Executor::execute(
                            &mut db,
                            "SET client_connection_check_interval = 1000",
                        )
                        .await;
                        Ok(TargetDb::Postgres(db))
                    }
                    Err(error) => Err(error),
                }
            }
            Connection::Mysql { url } => sqlx::MySqlConnection::connect(url.expose())
                .await
                .map(TargetDb::Mysql),
            Connection::Bigquery { .. } | Connection::Aws { .. } => return None,
        })
    }

    /// The dialect spoken.
    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            TargetDb::Sqlite(_) => Dialect::Sqlite,
            TargetDb::Postgres(_) => Dialect::Postgres,
            TargetDb::Mysql(_) => Dialect::Mysql,
        }
    }

    /// Runs one statement; the rows it changed.
    pub(crate) async fn execute(&mut self, sql: &str) -> Result<u64, sqlx::Error> {
        on!(self, db => sqlx::Executor::execute(&mut *db, sql).await.map(|done| done.rows_affected()))
    }

    /// The first column of the first row, as an integer.
    pub(crate) async fn count(&mut self, sql: &str) -> Result<i64, sqlx::Error> {
        on!(self, db => {
            let row = sqlx::query(sql).fetch_one(&mut *db).await?;
            row.try_get::<i64, _>(0)
        })
    }

    /// The first column of every row, as integers.
    pub(crate) async fn integers(&mut self, sql: &str) -> Result<Vec<i64>, sqlx::Error> {
        on!(self, db => sqlx::query_scalar::<_, i64>(sql).fetch_all(&mut *db).await)
    }

    /// Every row's columns read as text (the statement casts what is not).
    pub(crate) async fn texts(&mut self, sql: &str) -> Result<Vec<Vec<String>>, sqlx::Error> {
        on!(self, db => {
            let rows = sqlx::query(sql).fetch_all(&mut *db).await?;
            rows.iter()
                .map(|row| {
                    (0..row.len())
                        .map(|i| {
                            row.try_get::<String, _>(i)
                                .or_else(|_| row.try_get::<i64, _>(i).map(|n| n.to_string()))
                        })
                        .collect()
                })
                .collect()
        })
    }

    /// Adds `batch` to the stage `table` (`columns` listed, quoted).
    pub(crate) async fn stage(
        &mut self,
        table: &str,
        columns: &str,
        copy: &str,
        batch: &Batch,
    ) -> Result<(), sqlx::Error> {
        match self {
            TargetDb::Postgres(db) => {
                let mut buffer = Vec::new();
                copy_text(batch, &mut buffer);
                let mut copying = db.copy_in_raw(copy).await?;
                copying.send(buffer.as_slice()).await?;
                copying.finish().await.map(|_| ())
            }
            TargetDb::Sqlite(db) => {
                let width = batch.first().map_or(1, Vec::len);
                insert_sqlite(db, table, columns, width, batch).await
            }
            TargetDb::Mysql(db) => {
                let width = batch.first().map_or(1, Vec::len);
                insert_mysql(db, table, columns, width, batch).await
            }
        }
    }
}

/// Whether the database refused a row's values (a constraint, a type, a value out of range),
/// as opposed to the statement itself or the connection failing.
pub(crate) fn is_rejection(error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = error else {
        return false;
    };
    let code = db.code().unwrap_or_default();
    // SQLite first: its codes are numbers (SQLITE_CONSTRAINT 19 and SQLITE_MISMATCH 20 with
    // their extended codes; an I/O error is not a refused row).
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        let number: i64 = code.parse().unwrap_or(0);
        return matches!(number & 0xff, 19 | 20);
    }
    // MySQL reports some refused values without a data SQLSTATE: a bad integer (1366), a
    // truncated value (1265), a bad date (1292), out of range (1264), too long (1406), NULL
    // (1048), a duplicate (1062), a foreign key (1451, 1452), a CHECK (3819, MariaDB 4025), a
    // missing value (1364).
    if let Some(mysql) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
        && matches!(
            mysql.number(),
            1366 | 1265 | 1292 | 1264 | 1406 | 1048 | 1062 | 1451 | 1452 | 3819 | 4025 | 1364
        )
    {
        return true;
    }
    if !matches!(db.kind(), sqlx::error::ErrorKind::Other) {
        return true;
    }
    // SQLSTATE classes 22 (data exception) and 23 (integrity constraint).
    code.starts_with("22") || code.starts_with("23")
}
