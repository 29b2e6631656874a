//! `transfer` tasks: rows read from a source (a SELECT on a SQL connection, objects in S3) in
//! batches, handed through a bounded channel (so memory stays flat however many rows there
//! are, and reading overlaps writing) to a writer that stages them in a table of the
//! destination and then writes them into the destination table by its write mode, in one
//! transaction.

mod read_bigquery;
mod read_s3;
mod read_sql;
mod write_bigquery;
pub(crate) mod write_sql;

use std::collections::BTreeMap;

use ferry_config::Connection;
use ferry_executor::Outcome;
use ferry_executor::connector::{AttemptScope, ColumnType, RowSource, TableWrite};
use tokio::sync::mpsc;

/// One value of a row.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    /// SQL NULL.
    Null,
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// Text (dates and times as ISO 8601 text).
    Text(String),
    /// A boolean.
    Bool(bool),
}

impl Value {
    /// The value as the column's type wants it (CSV text into an integer column, say), or
    /// why it cannot be.
    fn into_type(self, kind: ColumnType) -> Result<Value, String> {
        Ok(match (self, kind) {
            (Value::Null, _) => Value::Null,
            (Value::Text(text), ColumnType::Int64) => {
                if text.is_empty() {
                    Value::Null
                } else {
                    Value::Int(
                        text.trim()
                            .parse()
                            .map_err(|_| format!("`{text}` is not an integer"))?,
                    )
                }
            }
            (Value::Text(text), ColumnType::Float64) => {
                if text.is_empty() {
                    Value::Null
                } else {
                    Value::Float(
                        text.trim()
                            .parse()
                            .map_err(|_| format!("`{text}` is not a number"))?,
                    )
                }
            }
            (Value::Text(text), ColumnType::Bool) => {
                match text.trim().to_ascii_lowercase().as_str() {
                    "" => Value::Null,
                    "true" | "t" | "1" | "yes" => Value::Bool(true),
                    "false" | "f" | "0" | "no" => Value::Bool(false),
                    _ => return Err(format!("`{text}` is not true or false")),
                }
            }
            (Value::Int(n), ColumnType::Float64) => Value::Float(n as f64),
            (Value::Int(n), ColumnType::String) => Value::Text(n.to_string()),
            (Value::Float(n), ColumnType::String) => Value::Text(n.to_string()),
            (Value::Bool(b), ColumnType::String) => Value::Text(b.to_string()),
            (Value::Int(n), ColumnType::Bool) => Value::Bool(n != 0),
            (Value::Float(n), ColumnType::Int64) if n.fract() == 0.0 => Value::Int(n as i64),
            (value @ Value::Text(_), ColumnType::String)
            | (value @ Value::Int(_), ColumnType::Int64)
            | (value @ Value::Float(_), ColumnType::Float64)
            | (value @ Value::Bool(_), ColumnType::Bool) => value,
            (value, kind) => return Err(format!("{value:?} is not a {kind:?}")),
        })
    }

    /// The type of a column whose first non-null value this is.
    fn column_type(&self) -> Option<ColumnType> {
        match self {
            Value::Null => None,
            Value::Int(_) => Some(ColumnType::Int64),
            Value::Float(_) => Some(ColumnType::Float64),
            Value::Text(_) => Some(ColumnType::String),
            Value::Bool(_) => Some(ColumnType::Bool),
        }
    }
}

/// Rows, each as long as the schema.
pub(crate) type Batch = Vec<Vec<Value>>;

/// What a reader sends: the columns first (names, and types where the source knows them),
/// then batches, then the end, or a failure.
pub(crate) enum Read {
    /// The columns.
    Columns(Vec<(String, Option<ColumnType>)>),
    /// Rows.
    Rows(Batch),
    /// Every row was sent.
    End,
    /// Reading failed.
    Failed(Problem),
}

/// Why reading failed, and whether another try may pass (the network, a server restarting).
#[derive(Debug)]
pub(crate) struct Problem {
    /// What failed (names the object, the column).
    pub text: String,
    /// Whether another try may pass.
    pub transient: bool,
}

impl From<String> for Problem {
    fn from(text: String) -> Self {
        Self {
            text,
            transient: false,
        }
    }
}

impl Problem {
    fn into_failure(self) -> Failure {
        let text = format!("reading the source: {}", self.text);
        if self.transient {
            Failure::Transient(text)
        } else {
            Failure::Fatal(text)
        }
    }
}

/// A column name that can be written into SQL as it is.
pub(crate) fn is_column_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The columns of the rows written: declared, or inferred from the source's types and the
/// first batch's values (text where nothing says otherwise).
fn settle_schema(
    declared: &[(String, ColumnType)],
    columns: &[(String, Option<ColumnType>)],
    first: Option<&Batch>,
) -> Result<Vec<(String, ColumnType)>, String> {
    if !declared.is_empty() {
        if declared.len() != columns.len() {
            return Err(format!(
                "the schema declares {} column(s), the source has {} ({})",
                declared.len(),
                columns.len(),
                columns
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        return Ok(declared.to_vec());
    }
    columns
        .iter()
        .enumerate()
        .map(|(index, (name, known))| {
            let seen = first.and_then(|rows| rows.iter().find_map(|row| row[index].column_type()));
            Ok((name.clone(), known.or(seen).unwrap_or(ColumnType::String)))
        })
        .collect()
}

/// How many batches may wait between the reader and the writer.
const IN_FLIGHT: usize = 2;

/// Runs a transfer.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    source: &RowSource,
    source_connection: &Connection,
    destination_name: &str,
    destination: &Connection,
    write: &TableWrite,
    batch_size: usize,
    declared: &[(String, ColumnType)],
    scope: &AttemptScope<'_>,
) -> Outcome {
    let (batches, _reader) = match open(source, source_connection, batch_size, declared).await {
        Ok(opened) => opened,
        Err(failure) => return failure.into_outcome(),
    };
    let schema = batches.schema.clone();
    if let Some((name, _)) = schema.iter().find(|(name, _)| !is_column_name(name)) {
        return Outcome::fatal(format!(
            "column `{name}` cannot be written into SQL as it is: name it with letters, digits and `_` (alias it in the query, or declare a `schema`)"
        ));
    }
    let written = match destination {
        Connection::Bigquery {
            project,
            location,
            credentials,
            endpoint,
        } => {
            let target = crate::bigquery::Target {
                project,
                location: location.as_deref(),
                credentials,
                endpoint: endpoint.as_deref(),
            };
            write_bigquery::write(&target, write, &schema, batches, scope).await
        }
        Connection::Aws { .. } => Err(Failure::Fatal(format!(
            "connection `{destination_name}` is an aws connection; a transfer writes into a sqlite, postgres, mysql or bigquery one"
        ))),
        sql => write_sql::write(destination_name, sql, write, &schema, batches, scope).await,
    };
    match written {
        Ok(counts) => {
            scope.log.note(&format!(
                "{} row(s) read, {} written into {}{}",
                counts.read,
                counts.written,
                write.table,
                counts
                    .replaced
                    .map(|r| format!(" ({r} replaced)"))
                    .unwrap_or_default()
            ));
            let mut figures = BTreeMap::from([
                ("rows_read".to_string(), counts.read),
                ("rows_written".to_string(), counts.written),
            ]);
            if let Some(replaced) = counts.replaced {
                figures.insert("rows_replaced".to_string(), replaced);
            }
            scope.recorder.metrics(&figures).await;
            Outcome::Succeeded { code: None }
        }
        Err(Failure::Fatal(reason)) => {
            let reason = ferry_secrets::redact_text(&reason);
            scope.log.note(&reason);
            Outcome::fatal(reason)
        }
        Err(Failure::Transient(reason)) => {
            let reason = ferry_secrets::redact_text(&reason);
            scope.log.note(&reason);
            Outcome::failed(None, reason)
        }
    }
}

/// Starts reading `source` and waits for its columns (and its first batch, which helps infer
/// types): the batches to come, converted to the settled schema, and the reader (stopped when
/// dropped).
pub(crate) async fn open(
    source: &RowSource,
    source_connection: &Connection,
    batch_size: usize,
    declared: &[(String, ColumnType)],
) -> Result<(Batches, AbortOnDrop), Failure> {
    let (sender, mut receiver) = mpsc::channel(IN_FLIGHT);
    let reader = match source {
        RowSource::Sql { sql, .. } => match source_connection {
            Connection::Bigquery { .. } => {
                read_bigquery::spawn(source_connection.clone(), sql.clone(), batch_size, sender)
            }
            _ => read_sql::spawn(source_connection.clone(), sql.clone(), batch_size, sender),
        },
        RowSource::S3 {
            bucket,
            prefix,
            format,
            ..
        } => read_s3::spawn(
            source_connection.clone(),
            bucket.clone(),
            prefix.clone(),
            *format,
            batch_size,
            sender,
        ),
    };
    // The reader stops when the receiver goes (a failure, a stop).
    let reader = AbortOnDrop(reader);
    let columns = match receiver.recv().await {
        Some(Read::Columns(columns)) => columns,
        Some(Read::Failed(problem)) => return Err(problem.into_failure()),
        Some(Read::Rows(_) | Read::End) | None => {
            return Err(Failure::Transient(
                "the source ended before its columns were known".to_string(),
            ));
        }
    };
    // The first batch helps infer types; it is written like the others.
    let (first, ended) = match receiver.recv().await {
        Some(Read::Rows(rows)) => (Some(rows), false),
        Some(Read::Failed(problem)) => return Err(problem.into_failure()),
        Some(Read::End) => (None, true),
        Some(Read::Columns(_)) | None => {
            return Err(Failure::Transient(
                "the source stopped before its end".to_string(),
            ));
        }
    };
    let schema = settle_schema(declared, &columns, first.as_ref()).map_err(Failure::Fatal)?;
    let batches = Batches {
        first,
        ended,
        receiver,
        schema,
        rows_read: 0,
    };
    Ok((batches, reader))
}

/// Aborts a task when dropped.
pub(crate) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why a transfer failed: for good (a SQL error, a bad value), or perhaps not on another try
/// (the network, a deadlock, throttling).
#[derive(Debug)]
pub(crate) enum Failure {
    /// Another try will not pass.
    Fatal(String),
    /// Another try may pass.
    Transient(String),
}

impl Failure {
    /// The attempt's outcome, secrets masked.
    pub(crate) fn into_outcome(self) -> Outcome {
        match self {
            Failure::Fatal(reason) => Outcome::fatal(ferry_secrets::redact_text(&reason)),
            Failure::Transient(reason) => {
                Outcome::failed(None, ferry_secrets::redact_text(&reason))
            }
        }
    }
}

/// What a writer did.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    /// Rows read from the source.
    pub read: i64,
    /// Rows written into the table.
    pub written: i64,
    /// Rows the write mode removed, where the database says.
    pub replaced: Option<i64>,
}

/// The batches of a transfer, converted to the schema's types, for a writer.
pub(crate) struct Batches {
    first: Option<Batch>,
    /// The reader said it sent every row.
    ended: bool,
    receiver: mpsc::Receiver<Read>,
    /// The columns and their types.
    pub schema: Vec<(String, ColumnType)>,
    /// Rows handed out so far.
    pub rows_read: i64,
}

impl Batches {
    /// The next batch, or `None` at the end.
    pub(crate) async fn next(&mut self) -> Result<Option<Batch>, Failure> {
        let rows = match self.first.take() {
            Some(rows) => rows,
            None if self.ended => return Ok(None),
            None => match self.receiver.recv().await {
                Some(Read::Rows(rows)) => rows,
                Some(Read::End) => {
                    self.ended = true;
                    return Ok(None);
                }
                Some(Read::Failed(problem)) => return Err(problem.into_failure()),
                // A reader that stops without saying it is done (it panicked) must not pass
                // for the end of the data.
                Some(Read::Columns(_)) | None => {
                    return Err(Failure::Transient(
                        "the source stopped before its end".to_string(),
                    ));
                }
            },
        };
        // Converted in place: most values are of their column's type already.
        let mut converted = rows;
        for (number, row) in converted.iter_mut().enumerate() {
            row.truncate(self.schema.len());
            for (value, (name, kind)) in row.iter_mut().zip(&self.schema) {
                if value.column_type().is_none_or(|own| own == *kind) {
                    continue;
                }
                let line = self.rows_read + 1 + number as i64;
                *value = std::mem::replace(value, Value::Null)
                    .into_type(*kind)
                    .map_err(|problem| {
                        Failure::Fatal(format!("row {line}, column `{name}`: {problem}"))
                    })?;
            }
        }
        self.rows_read += converted.len() as i64;
        Ok(Some(converted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_converts_to_declared_types_and_bad_values_are_named() {
        assert_eq!(
            Value::Text("42".into()).into_type(ColumnType::Int64),
            Ok(Value::Int(42))
        );
        assert_eq!(
            Value::Text(String::new()).into_type(ColumnType::Float64),
            Ok(Value::Null)
        );
        assert_eq!(
            Value::Text("yes".into()).into_type(ColumnType::Bool),
            Ok(Value::Bool(true))
        );
        assert!(
            Value::Text("4x".into())
                .into_type(ColumnType::Int64)
                .is_err()
        );
    }

    #[test]
    fn schemas_are_inferred_from_known_types_then_values() {
        let columns = vec![
            ("id".to_string(), Some(ColumnType::Int64)),
            ("score".to_string(), None),
            ("note".to_string(), None),
        ];
        let first = vec![
            vec![Value::Int(1), Value::Null, Value::Null],
            vec![Value::Int(2), Value::Float(0.5), Value::Null],
        ];
        let schema = settle_schema(&[], &columns, Some(&first)).expect("a schema");
        assert_eq!(
            schema,
            [
                ("id".to_string(), ColumnType::Int64),
                ("score".to_string(), ColumnType::Float64),
                ("note".to_string(), ColumnType::String)
            ]
        );
    }
}
