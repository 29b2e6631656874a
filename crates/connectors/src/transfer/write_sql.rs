//! Writing a transfer's rows into a table of a SQL database: the rows are staged in a
//! temporary table (PostgreSQL: with COPY; the others: multi-row INSERTs), then written into
//! the table by the write mode in one transaction.

use ferry_config::Connection;
use ferry_executor::connector::{AttemptScope, ColumnType, TableWrite};
use sqlx::Connection as _;

use super::{Batch, Batches, Counts, Failure, Value};
use crate::write::{Dialect, from_rows, quote, rows_table};

/// The most bound values in one INSERT (SQLite allows 32,766, MySQL 65,535).
const MAX_BINDS: usize = 30_000;

/// Writes `batches` into `write.table` on `target`.
pub(super) async fn write(
    name: &str,
    target: &Connection,
    write: &TableWrite,
    schema: &[(String, ColumnType)],
    mut batches: Batches,
    scope: &AttemptScope<'_>,
) -> Result<Counts, Failure> {
    let rows = rows_table(&scope.key.short_token());
    let columns: Vec<String> = schema.iter().map(|(name, _)| name.clone()).collect();
    let dialect = match target {
        Connection::Sqlite { .. } => Dialect::Sqlite,
        Connection::Postgres { .. } => Dialect::Postgres,
        _ => Dialect::Mysql,
    };
    let statements = from_rows(dialect, write, &rows, Some(&columns)).map_err(Failure::Fatal)?;
    let create = create_rows_table(dialect, &rows, schema);
    let sql_error = |e: sqlx::Error| classify(name, &e);
    let mut counts = Counts::default();
    macro_rules! finish {
        ($db:expr) => {{
            for statement in &statements.prepare {
                sqlx::Executor::execute(&mut $db, statement.as_str())
                    .await
                    .map_err(sql_error)?;
            }
            let mut tx = $db.begin().await.map_err(sql_error)?;
            let mut changed = Vec::new();
            for statement in &statements.transaction {
                let done = sqlx::Executor::execute(&mut *tx, statement.as_str())
                    .await
                    .map_err(sql_error)?;
                changed.push(done.rows_affected());
            }
            tx.commit().await.map_err(sql_error)?;
            for statement in &statements.cleanup {
                sqlx::Executor::execute(&mut $db, statement.as_str())
                    .await
                    .map_err(sql_error)?;
            }
            counts.written = count(changed.last().copied().unwrap_or(0));
            counts.replaced = Some(if changed.len() > 1 {
                count(changed[0])
            } else {
                0
            });
        }};
    }
    // SQLite and MySQL: the rows staged by multi-row INSERTs, then written.
    macro_rules! stage_by_inserts {
        ($db:expr, $insert:ident) => {{
            sqlx::Executor::execute(&mut $db, create.as_str())
                .await
                .map_err(sql_error)?;
            let (staged, listed) = (quote(dialect, &rows), quoted(dialect, &columns));
            while let Some(batch) = batches.next().await? {
                $insert(&mut $db, &staged, &listed, columns.len(), &batch)
                    .await
                    .map_err(sql_error)?;
            }
            finish!($db);
        }};
    }
    match target {
        Connection::Sqlite { path, schemas, .. } => {
            let mut db = crate::sqlite::open(path, schemas, false)
                .await
                .map_err(sql_error)?;
            stage_by_inserts!(db, insert_sqlite);
        }
        Connection::Postgres { url } => {
            let mut db = sqlx::PgConnection::connect(url.expose())
                .await
                .map_err(sql_error)?;
            let _ = sqlx::Executor::execute(&mut db, "SET client_connection_check_interval = 1000")
                .await;
            sqlx::Executor::execute(&mut db, create.as_str())
                .await
                .map_err(sql_error)?;
            let copy = format!(
                "COPY {} ({}) FROM STDIN",
                quote(dialect, &rows),
                quoted(dialect, &columns)
            );
            let mut buffer = Vec::new();
            while let Some(batch) = batches.next().await? {
                buffer.clear();
                copy_text(&batch, &mut buffer);
                let mut copying = db.copy_in_raw(&copy).await.map_err(sql_error)?;
                copying.send(buffer.as_slice()).await.map_err(sql_error)?;
                copying.finish().await.map_err(sql_error)?;
            }
            finish!(db);
        }
        Connection::Mysql { url } => {
            let mut db = sqlx::MySqlConnection::connect(url.expose())
                .await
                .map_err(sql_error)?;
            stage_by_inserts!(db, insert_mysql);
        }
        Connection::Bigquery { .. } | Connection::Aws { .. } => {
            return Err(Failure::Fatal(format!(
                "connection `{name}` is not a SQL database"
            )));
        }
    }
    counts.read = batches.rows_read;
    Ok(counts)
}

/// `CREATE TEMPORARY TABLE rows (...)` with the schema's columns in the dialect's types.
fn create_rows_table(dialect: Dialect, rows: &str, schema: &[(String, ColumnType)]) -> String {
    let columns: Vec<String> = schema
        .iter()
        .map(|(name, kind)| {
            let sql_type = match (dialect, kind) {
                (Dialect::Sqlite, ColumnType::Int64) => "INTEGER",
                (Dialect::Sqlite, ColumnType::Float64) => "REAL",
                (_, ColumnType::Int64) => "BIGINT",
                (Dialect::Postgres, ColumnType::Float64) => "DOUBLE PRECISION",
                (_, ColumnType::Float64) => "DOUBLE",
                (_, ColumnType::String) => "TEXT",
                (_, ColumnType::Bool) => "BOOLEAN",
            };
            format!("{} {sql_type}", quote(dialect, name))
        })
        .collect();
    format!(
        "CREATE TEMPORARY TABLE {} ({})",
        quote(dialect, rows),
        columns.join(", ")
    )
}

/// Macro for one backend's multi-row INSERT of a batch, in statements of at most
/// [`MAX_BINDS`] values (concrete functions, so the futures are `Send`).
macro_rules! insert_rows {
    ($name:ident, $db:ty, $backend:ty) => {
        pub(crate) async fn $name(
            db: &mut $db,
            rows: &str,
            columns: &str,
            width: usize,
            batch: &Batch,
        ) -> Result<(), sqlx::Error> {
            let per_statement = (MAX_BINDS / width.max(1)).max(1);
            let head = format!("INSERT INTO {rows} ({columns}) ");
            for chunk in batch.chunks(per_statement) {
                let mut builder = sqlx::QueryBuilder::<$backend>::new(&head);
                builder.push_values(chunk, |mut row, values| {
                    for value in values {
                        match value {
                            Value::Null => row.push_bind(None::<String>),
                            Value::Int(n) => row.push_bind(*n),
                            Value::Float(n) => row.push_bind(*n),
                            Value::Text(text) => row.push_bind(text.clone()),
                            Value::Bool(b) => row.push_bind(*b),
                        };
                    }
                });
                builder.build().execute(&mut *db).await?;
            }
            Ok(())
        }
    };
}

insert_rows!(insert_sqlite, sqlx::SqliteConnection, sqlx::Sqlite);
insert_rows!(insert_mysql, sqlx::MySqlConnection, sqlx::MySql);

/// Column names quoted and listed.
fn quoted(dialect: Dialect, columns: &[String]) -> String {
    columns
        .iter()
        .map(|c| quote(dialect, c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A batch in PostgreSQL's COPY text format.
pub(crate) fn copy_text(batch: &Batch, out: &mut Vec<u8>) {
    for row in batch {
        for (index, value) in row.iter().enumerate() {
            if index > 0 {
                out.push(b'\t');
            }
            copy_text_value(value, out);
        }
        out.push(b'\n');
    }
}

/// One value in `COPY`'s text form.
pub(crate) fn copy_text_value(value: &Value, out: &mut Vec<u8>) {
    use std::io::Write as _;
    match value {
        Value::Null => out.extend_from_slice(b"\\N"),
        Value::Int(n) => out.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes()),
        Value::Float(n) if n.is_nan() => out.extend_from_slice(b"NaN"),
        Value::Float(n) if n.is_infinite() => {
            out.extend_from_slice(if *n > 0.0 { b"Infinity" } else { b"-Infinity" });
        }
        Value::Float(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Bool(b) => out.push(if *b { b't' } else { b'f' }),
        Value::Text(text) => {
            for byte in text.bytes() {
                match byte {
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    b'\t' => out.extend_from_slice(b"\\t"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    b'\r' => out.extend_from_slice(b"\\r"),
                    other => out.push(other),
                }
            }
        }
    }
}

/// A count as the store keeps it.
fn count(rows: u64) -> i64 {
    i64::try_from(rows).unwrap_or(i64::MAX)
}

/// A database error: transient (the network, a deadlock) or not, named by connection.
fn classify(name: &str, error: &sqlx::Error) -> Failure {
    let reason = format!("writing into {name}: {error}");
    if crate::query::is_transient(error) {
        Failure::Transient(reason)
    } else {
        Failure::Fatal(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_what_copy_reads_specially() {
        let mut out = Vec::new();
        copy_text(
            &vec![vec![
                Value::Int(1),
                Value::Text("a\tb\\c\nd".to_string()),
                Value::Null,
                Value::Bool(true),
                Value::Float(f64::INFINITY),
            ]],
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).expect("UTF-8"),
            "1\ta\\tb\\\\c\\nd\t\\N\tt\tInfinity\n"
        );
    }
}
