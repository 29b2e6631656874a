//! Reading a SELECT's rows on a SQL connection in batches.

use ferry_config::Connection;
use ferry_executor::connector::ColumnType;
use futures_util::TryStreamExt as _;
use sqlx::{Column as _, Connection as _, Row as _, TypeInfo as _, ValueRef as _};
use tokio::sync::mpsc;

use super::{Problem, Read, Value};

/// Starts reading `sql` on `connection` into `sender`.
pub(super) fn spawn(
    connection: Connection,
    sql: String,
    batch_size: usize,
    sender: mpsc::Sender<Read>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let read = read(&connection, &sql, batch_size, &sender).await;
        if let Err(mut problem) = read {
            problem.text = ferry_secrets::redact_text(&problem.text);
            let _ = sender.send(Read::Failed(problem)).await;
        }
    })
}

/// Streams the rows of `$sql` on connection `$db` into `$sender` in batches: the columns
/// first (from the first row, or from describing the query when it has none).
macro_rules! stream_rows {
    ($db:expr, $sql:expr, $batch_size:expr, $sender:expr, $decode:path, $known:path) => {{
        let mut sent_columns = false;
        {
            let mut rows = sqlx::query($sql).fetch(&mut $db);
            let mut batch = Vec::with_capacity($batch_size);
            while let Some(row) = rows.try_next().await.map_err(sql_problem)? {
                if !sent_columns {
                    let columns = row
                        .columns()
                        .iter()
                        .map(|c| (c.name().to_string(), $known(c.type_info().name())))
                        .collect();
                    send($sender, Read::Columns(columns)).await?;
                    sent_columns = true;
                }
                let mut values = Vec::with_capacity(row.len());
                for index in 0..row.len() {
                    values.push($decode(&row, index)?);
                }
                batch.push(values);
                if batch.len() >= $batch_size {
                    send(
                        $sender,
                        Read::Rows(std::mem::replace(
                            &mut batch,
                            Vec::with_capacity($batch_size),
                        )),
                    )
                    .await?;
                }
            }
            if !batch.is_empty() {
                send($sender, Read::Rows(batch)).await?;
            }
        }
        if !sent_columns {
            let described = sqlx::Executor::describe(&mut $db, $sql)
                .await
                .map_err(sql_problem)?;
            let columns = described
                .columns()
                .iter()
                .map(|c| (c.name().to_string(), $known(c.type_info().name())))
                .collect();
            send($sender, Read::Columns(columns)).await?;
        }
        send($sender, Read::End).await?;
        Ok(())
    }};
}

async fn read(
    connection: &Connection,
    sql: &str,
    batch_size: usize,
    sender: &mpsc::Sender<Read>,
) -> Result<(), Problem> {
    match connection {
        Connection::Sqlite { path, schemas, .. } => {
            let mut db = crate::sqlite::open(path, schemas, true)
                .await
                .map_err(|e| Problem {
                    text: format!("open {}: {e}", path.display()),
                    transient: crate::query::is_transient(&e),
                })?;
            stream_rows!(db, sql, batch_size, sender, sqlite_value, sqlite_type)
        }
        Connection::Postgres { url } => {
            let mut db = sqlx::PgConnection::connect(url.expose())
                .await
                .map_err(sql_problem)?;
            stream_rows!(db, sql, batch_size, sender, postgres_value, postgres_type)
        }
        Connection::Mysql { url } => {
            let mut db = sqlx::MySqlConnection::connect(url.expose())
                .await
                .map_err(sql_problem)?;
            stream_rows!(db, sql, batch_size, sender, mysql_value, mysql_type)
        }
        Connection::Bigquery { .. } | Connection::Aws { .. } => Err(format!(
            "a {} connection is not a SQL database a transfer reads",
            connection.kind()
        )
        .into()),
    }
}

/// A database error, transient or not.
fn sql_problem(error: sqlx::Error) -> Problem {
    Problem {
        transient: crate::query::is_transient(&error),
        text: error.to_string(),
    }
}

/// Sends, or fails when the writer is gone (it stopped).
async fn send(sender: &mpsc::Sender<Read>, read: Read) -> Result<(), String> {
    sender
        .send(read)
        .await
        .map_err(|_| "the writer stopped".to_string())
}

/// A value of a column of a type the transfer does not read.
fn unsupported(column: &str, kind: &str) -> String {
    format!(
        "column `{column}` has type {kind}, which a transfer does not read: cast it in the query (to text, an integer or a float)"
    )
}

fn sqlite_type(declared: &str) -> Option<ColumnType> {
    match declared.to_ascii_uppercase().as_str() {
        "INTEGER" | "INT" | "BIGINT" => Some(ColumnType::Int64),
        "REAL" | "FLOAT" | "DOUBLE" => Some(ColumnType::Float64),
        "TEXT" | "VARCHAR" => Some(ColumnType::String),
        "BOOLEAN" => Some(ColumnType::Bool),
        _ => None,
    }
}

fn sqlite_value(row: &sqlx::sqlite::SqliteRow, index: usize) -> Result<Value, String> {
    let raw = row.try_get_raw(index).map_err(|e| e.to_string())?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    // SQLite types values, not columns.
    let storage = raw.type_info().name().to_string();
    let name = row.column(index).name();
    let error = |e: sqlx::Error| format!("column `{name}`: {e}");
    Ok(match storage.as_str() {
        "INTEGER" => Value::Int(row.try_get(index).map_err(error)?),
        "REAL" => Value::Float(row.try_get(index).map_err(error)?),
        "TEXT" => Value::Text(row.try_get(index).map_err(error)?),
        other => return Err(unsupported(name, other)),
    })
}

fn postgres_type(name: &str) -> Option<ColumnType> {
    match name {
        "INT2" | "INT4" | "INT8" => Some(ColumnType::Int64),
        "FLOAT4" | "FLOAT8" => Some(ColumnType::Float64),
        "BOOL" => Some(ColumnType::Bool),
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "DATE" | "TIMESTAMP" | "TIMESTAMPTZ" => {
            Some(ColumnType::String)
        }
        _ => None,
    }
}

fn postgres_value(row: &sqlx::postgres::PgRow, index: usize) -> Result<Value, String> {
    let column = row.column(index);
    let name = column.name();
    let error = |e: sqlx::Error| format!("column `{name}`: {e}");
    macro_rules! get {
        ($t:ty) => {
            row.try_get::<Option<$t>, _>(index).map_err(error)?
        };
    }
    Ok(match column.type_info().name() {
        "INT2" => get!(i16).map_or(Value::Null, |v| Value::Int(v.into())),
        "INT4" => get!(i32).map_or(Value::Null, |v| Value::Int(v.into())),
        "INT8" => get!(i64).map_or(Value::Null, Value::Int),
        "FLOAT4" => get!(f32).map_or(Value::Null, |v| Value::Float(v.into())),
        "FLOAT8" => get!(f64).map_or(Value::Null, Value::Float),
        "BOOL" => get!(bool).map_or(Value::Null, Value::Bool),
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" => get!(String).map_or(Value::Null, Value::Text),
        "DATE" => get!(chrono::NaiveDate).map_or(Value::Null, |d| Value::Text(d.to_string())),
        "TIMESTAMP" => get!(chrono::NaiveDateTime).map_or(Value::Null, |t| {
            Value::Text(t.format("%Y-%m-%dT%H:%M:%S%.f").to_string())
        }),
        "TIMESTAMPTZ" => get!(chrono::DateTime<chrono::Utc>).map_or(Value::Null, |t| {
            Value::Text(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        }),
        other => return Err(unsupported(name, other)),
    })
}

fn mysql_type(name: &str) -> Option<ColumnType> {
    let base = name.trim_end_matches(" UNSIGNED");
    match base {
        "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" => Some(ColumnType::Int64),
        "FLOAT" | "DOUBLE" => Some(ColumnType::Float64),
        "BOOLEAN" => Some(ColumnType::Bool),
        "CHAR" | "VARCHAR" | "TEXT" | "TINYTEXT" | "MEDIUMTEXT" | "LONGTEXT" | "DATE"
        | "DATETIME" | "TIMESTAMP" => Some(ColumnType::String),
        _ => None,
    }
}

fn mysql_value(row: &sqlx::mysql::MySqlRow, index: usize) -> Result<Value, String> {
    let column = row.column(index);
    let name = column.name();
    let kind = column.type_info().name();
    let error = |e: sqlx::Error| format!("column `{name}`: {e}");
    macro_rules! get {
        ($t:ty) => {
            row.try_get::<Option<$t>, _>(index).map_err(error)?
        };
    }
    Ok(match kind {
        "BOOLEAN" => get!(bool).map_or(Value::Null, Value::Bool),
        "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" => {
            get!(i64).map_or(Value::Null, Value::Int)
        }
        "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "MEDIUMINT UNSIGNED" | "INT UNSIGNED"
        | "BIGINT UNSIGNED" => match get!(u64) {
            None => Value::Null,
            Some(v) => Value::Int(
                i64::try_from(v)
                    .map_err(|_| format!("column `{name}`: {v} does not fit a 64-bit integer"))?,
            ),
        },
        "FLOAT" => get!(f32).map_or(Value::Null, |v| Value::Float(v.into())),
        "DOUBLE" => get!(f64).map_or(Value::Null, Value::Float),
        "DATE" => get!(chrono::NaiveDate).map_or(Value::Null, |d| Value::Text(d.to_string())),
        "DATETIME" | "TIMESTAMP" => get!(chrono::NaiveDateTime).map_or(Value::Null, |t| {
            Value::Text(t.format("%Y-%m-%dT%H:%M:%S%.f").to_string())
        }),
        "CHAR" | "VARCHAR" | "TEXT" | "TINYTEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM" | "SET" => {
            get!(String).map_or(Value::Null, Value::Text)
        }
        other => match row.try_get::<Option<String>, _>(index) {
            Ok(text) => text.map_or(Value::Null, Value::Text),
            Err(_) => return Err(unsupported(name, other)),
        },
    })
}
