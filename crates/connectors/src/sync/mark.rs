//! `incremental`: the highest value of a source column that a sync read, kept per sync and
//! rendered query in the target (`ferry_sync_marks`, written in the publishing transaction),
//! and the next sync's query narrowed to the rows at or past it (`>=`: a row written in the same instant as the
//! highest one is read again, and found unchanged).

use ferry_config::Connection;

use super::statements::literal;
use crate::transfer::Value;
use crate::write::Dialect;

/// The table of marks, in the target.
pub(crate) const MARKS: &str = "ferry_sync_marks";

/// Creates the table of marks when it is missing.
pub(crate) fn create_table() -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {MARKS} (sync_id VARCHAR(64) NOT NULL, column_name VARCHAR(200) NOT NULL, kind VARCHAR(8) NOT NULL, mark TEXT NOT NULL, PRIMARY KEY (sync_id, column_name))"
    )
}

/// The kind and text of the mark of `sync_id` on `column`.
pub(crate) fn read(dialect: Dialect, sync_id: &str, column: &str) -> String {
    format!(
        "SELECT kind, mark FROM {MARKS} WHERE sync_id = {} AND column_name = {}",
        literal(dialect, sync_id),
        literal(dialect, column)
    )
}

/// `sql` narrowed to the rows whose `column` is at or past the mark (`kind`, `text`), in the
/// source's dialect; `None` when the mark cannot be read back.
pub(crate) fn narrow(
    source: &Connection,
    sql: &str,
    column: &str,
    (kind, text): (&str, &str),
) -> Option<String> {
    let backticks = matches!(
        source,
        Connection::Mysql { .. } | Connection::Bigquery { .. }
    );
    let quoted = if backticks {
        format!("`{column}`")
    } else {
        format!("\"{column}\"")
    };
    let value = match kind {
        "int" => text.parse::<i64>().ok()?.to_string(),
        "float" => text
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())?
            .to_string(),
        _ => match source {
            // BigQuery's string literals escape with backslashes.
            Connection::Bigquery { .. } => {
                format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
            }
            Connection::Mysql { .. } => literal(Dialect::Mysql, text),
            _ => literal(Dialect::Postgres, text),
        },
    };
    let query = sql.trim().trim_end_matches(';').trim_end();
    // The closing parenthesis on its own line: a query may end with a `--` comment.
    Some(format!(
        "SELECT * FROM ({query}\n) AS ferry_incremental WHERE ferry_incremental.{quoted} >= {value}"
    ))
}

/// The highest value of the incremental column among the rows read (NULLs and NaN aside).
pub(crate) struct Mark {
    sync_id: String,
    column: String,
    /// The column's position in the source's rows.
    position: usize,
    /// Whether the column is taken out of the rows (it is not written).
    drop: bool,
    highest: Option<Value>,
}

impl Mark {
    /// A mark of `sync_id` on `column`, at `position` of the rows, taken out of them when
    /// `drop`.
    pub(crate) fn new(sync_id: &str, column: &str, position: usize, drop: bool) -> Self {
        Self {
            sync_id: sync_id.to_string(),
            column: column.to_string(),
            position,
            drop,
            highest: None,
        }
    }

    /// Takes every row of `batch` into account, and the column out of them when it is not
    /// written.
    pub(crate) fn take(&mut self, batch: &mut crate::transfer::Batch) {
        for row in batch.iter_mut() {
            self.see(row);
            if self.drop && self.position < row.len() {
                row.remove(self.position);
            }
        }
    }

    /// Takes `row`'s value into account (a NULL moves nothing).
    fn see(&mut self, row: &[Value]) {
        let Some(value) = row.get(self.position) else {
            return;
        };
        let later = match (value, &self.highest) {
            (Value::Null, _) => false,
            (Value::Float(f), _) if !f.is_finite() => false,
            (_, None) => true,
            (Value::Int(a), Some(Value::Int(b))) => a > b,
            (Value::Float(a), Some(Value::Float(b))) => a > b,
            (Value::Int(a), Some(Value::Float(b))) => (*a as f64) > *b,
            (Value::Float(a), Some(Value::Int(b))) => *a > (*b as f64),
            (Value::Text(a), Some(Value::Text(b))) => a > b,
            (Value::Bool(a), Some(Value::Bool(b))) => a > b,
            _ => false,
        };
        if later {
            self.highest = Some(value.clone());
        }
    }

    /// The statement that keeps the highest value read, or `None` when no row had one (the
    /// mark stays where it was).
    pub(crate) fn keep(&self, dialect: Dialect) -> Option<String> {
        let (kind, text) = match self.highest.as_ref()? {
            Value::Int(n) => ("int", n.to_string()),
            Value::Float(n) => ("float", n.to_string()),
            Value::Text(text) => ("text", text.clone()),
            Value::Bool(b) => ("text", b.to_string()),
            Value::Null => return None,
        };
        let values = format!(
            "({}, {}, {}, {})",
            literal(dialect, &self.sync_id),
            literal(dialect, &self.column),
            literal(dialect, kind),
            literal(dialect, &text)
        );
        let insert =
            format!("INSERT INTO {MARKS} (sync_id, column_name, kind, mark) VALUES {values}");
        Some(match dialect {
            Dialect::Mysql => {
                format!("{insert} ON DUPLICATE KEY UPDATE kind = VALUES(kind), mark = VALUES(mark)")
            }
            _ => format!(
                "{insert} ON CONFLICT (sync_id, column_name) DO UPDATE SET kind = excluded.kind, mark = excluded.mark"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_config::Secret;

    #[test]
    fn the_highest_value_is_kept_and_narrows_the_next_read() {
        let mut mark = Mark::new("abc", "updated_at", 1, true);
        assert_eq!(mark.keep(Dialect::Postgres), None, "no row, no mark");
        let mut batch: crate::transfer::Batch =
            ["2026-11-29T10:00:00.5", "2026-11-29T10:00:00.123", ""]
                .iter()
                .map(|value| {
                    let value = if value.is_empty() {
                        Value::Null
                    } else {
                        Value::Text(value.to_string())
                    };
                    vec![Value::Int(1), value, Value::Int(2)]
                })
                .collect();
        mark.take(&mut batch);
        assert!(
            batch
                .iter()
                .all(|row| row == &[Value::Int(1), Value::Int(2)]),
            "the column is taken out: {batch:?}"
        );
        assert_eq!(
            mark.keep(Dialect::Postgres).as_deref(),
            Some(
                "INSERT INTO ferry_sync_marks (sync_id, column_name, kind, mark) VALUES ('abc', 'updated_at', 'text', '2026-11-29T10:00:00.5') ON CONFLICT (sync_id, column_name) DO UPDATE SET kind = excluded.kind, mark = excluded.mark"
            )
        );
        let postgres = Connection::Postgres {
            url: Secret::new("postgres://x@y/z"),
        };
        assert_eq!(
            narrow(
                &postgres,
                "SELECT * FROM t;",
                "updated_at",
                ("text", "it's")
            )
            .as_deref(),
            Some(
                "SELECT * FROM (SELECT * FROM t\n) AS ferry_incremental WHERE ferry_incremental.\"updated_at\" >= 'it''s'"
            )
        );
        let mysql = Connection::Mysql {
            url: Secret::new("mysql://x@y/z"),
        };
        assert_eq!(
            narrow(&mysql, "SELECT v FROM t", "v", ("int", "42")).as_deref(),
            Some(
                "SELECT * FROM (SELECT v FROM t\n) AS ferry_incremental WHERE ferry_incremental.`v` >= 42"
            )
        );
        assert_eq!(narrow(&mysql, "SELECT v FROM t", "v", ("int", "4x")), None);
    }
}
