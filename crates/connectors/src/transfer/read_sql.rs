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
/// first (from the first row, or from describing the query when it has none). `$plan` tells,
/// once from the first row, how each column is decoded; `$decode` decodes a value by it.
macro_rules! stream_rows {
    ($db:expr, $sql:expr, $batch_size:expr, $sender:expr, $plan:path, $decode:path, $known:path) => {{
        let mut sent_columns = false;
        {
            let mut plan = Vec::new();
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
                    plan = $plan(&row);
                }
                let mut values = Vec::with_capacity(row.len());
                for (index, how) in plan.iter().enumerate() {
                    values.push($decode(&row, index, how)?);
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
            stream_rows!(
                db,
                sql,
                batch_size,
                sender,
                sqlite_plan,
                sqlite_value,
                sqlite_type
            )
        }
        Connection::Postgres { url } => {
            let mut db = sqlx::PgConnection::connect(url.expose())
                .await
                .map_err(sql_problem)?;
            stream_rows!(
                db,
                sql,
                batch_size,
                sender,
                postgres_plan,
                postgres_value,
                postgres_type
            )
        }
        Connection::Mysql { url } => {
            let mut db = sqlx::MySqlConnection::connect(url.expose())
                .await
                .map_err(sql_problem)?;
            stream_rows!(
                db,
                sql,
                batch_size,
                sender,
                mysql_plan,
                mysql_value,
                mysql_type
            )
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

/// SQLite types values, not columns: nothing is planned.
fn sqlite_plan(row: &sqlx::sqlite::SqliteRow) -> Vec<()> {
    vec![(); row.len()]
}

fn sqlite_value(row: &sqlx::sqlite::SqliteRow, index: usize, _: &()) -> Result<Value, String> {
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

/// How a PostgreSQL column is decoded.
#[derive(Clone, Copy)]
enum PgDecode {
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Bool,
    Text,
    Date,
    Timestamp,
    Timestamptz,
    Unsupported,
}

fn postgres_plan(row: &sqlx::postgres::PgRow) -> Vec<PgDecode> {
    row.columns()
        .iter()
        .map(|column| match column.type_info().name() {
            "INT2" => PgDecode::Int2,
            "INT4" => PgDecode::Int4,
            "INT8" => PgDecode::Int8,
            "FLOAT4" => PgDecode::Float4,
            "FLOAT8" => PgDecode::Float8,
            "BOOL" => PgDecode::Bool,
            "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" => PgDecode::Text,
            "DATE" => PgDecode::Date,
            "TIMESTAMP" => PgDecode::Timestamp,
            "TIMESTAMPTZ" => PgDecode::Timestamptz,
            _ => PgDecode::Unsupported,
        })
        .collect()
}

fn postgres_value(
    row: &sqlx::postgres::PgRow,
    index: usize,
    how: &PgDecode,
) -> Result<Value, String> {
    let error = |e: sqlx::Error| format!("column `{}`: {e}", row.column(index).name());
    // The plan matched the column's type already.
    macro_rules! get {
        ($t:ty) => {
            row.try_get_unchecked::<Option<$t>, _>(index)
                .map_err(error)?
        };
    }
    Ok(match how {
        PgDecode::Int2 => get!(i16).map_or(Value::Null, |v| Value::Int(v.into())),
        PgDecode::Int4 => get!(i32).map_or(Value::Null, |v| Value::Int(v.into())),
        PgDecode::Int8 => get!(i64).map_or(Value::Null, Value::Int),
        PgDecode::Float4 => get!(f32).map_or(Value::Null, |v| Value::Float(v.into())),
        PgDecode::Float8 => get!(f64).map_or(Value::Null, Value::Float),
        PgDecode::Bool => get!(bool).map_or(Value::Null, Value::Bool),
        PgDecode::Text => get!(String).map_or(Value::Null, Value::Text),
        PgDecode::Date => {
            get!(chrono::NaiveDate).map_or(Value::Null, |d| Value::Text(d.to_string()))
        }
        PgDecode::Timestamp => get!(chrono::NaiveDateTime).map_or(Value::Null, |t| {
            Value::Text(t.format("%Y-%m-%dT%H:%M:%S%.f").to_string())
        }),
        PgDecode::Timestamptz => get!(chrono::DateTime<chrono::Utc>).map_or(Value::Null, |t| {
            Value::Text(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        }),
        PgDecode::Unsupported => {
            let column = row.column(index);
            return Err(unsupported(column.name(), column.type_info().name()));
        }
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

/// MySQL's values are decoded by their column's type name, looked at per value.
fn mysql_plan(row: &sqlx::mysql::MySqlRow) -> Vec<()> {
    vec![(); row.len()]
}

fn mysql_value(row: &sqlx::mysql::MySqlRow, index: usize, _: &()) -> Result<Value, String> {
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
