//! `sql_check`: data-quality checks. Each query runs on the connection (SQL or BigQuery, read
//! like a transfer's source); its answer is compared with what the check declares, and the log
//! says what each check found, with the offending rows or values.

use ferry_config::Connection;
use ferry_executor::Outcome;
use ferry_executor::connector::{AttemptScope, DataCheck, Expectation, RowSource};

use crate::sync::shown;
use crate::transfer::{Failure, Value};

/// How many offending rows a `no_rows` check shows.
const SHOWN_ROWS: usize = 10;

/// Runs every check; fails (for good) unless all hold.
pub(crate) async fn run(
    checks: &[DataCheck],
    connection: &Connection,
    scope: &AttemptScope<'_>,
) -> Outcome {
    let mut failed = Vec::new();
    for check in checks {
        match verdict(check, connection).await {
            Ok(Ok(found)) => scope
                .log
                .note(&format!("check `{}`: ok ({found})", check.name)),
            Ok(Err(found)) => {
                scope
                    .log
                    .note(&format!("check `{}`: FAILED: {found}", check.name));
                failed.push(check.name.as_str());
            }
            Err(failure) => {
                let text = match &failure {
                    Failure::Fatal(text) | Failure::Transient(text) => text.clone(),
                };
                scope.log.note(&ferry_secrets::redact_text(&format!(
                    "check `{}`: could not run: {text}",
                    check.name
                )));
                return failure.into_outcome();
            }
        }
    }
    if failed.is_empty() {
        Outcome::Succeeded { code: None }
    } else {
        Outcome::fatal(format!(
            "{} of {} check(s) failed: {}",
            failed.len(),
            checks.len(),
            failed.join(", ")
        ))
    }
}

/// What a check found: `Ok` when it holds, `Err` when not (both say what was found).
async fn verdict(
    check: &DataCheck,
    connection: &Connection,
) -> Result<Result<String, String>, Failure> {
    match &check.expect {
        Expectation::NoRows => {
            let (columns, rows) = first_rows(connection, &check.sql, SHOWN_ROWS).await?;
            if rows.is_empty() {
                return Ok(Ok("no rows".to_string()));
            }
            let listed = rows
                .iter()
                .map(|row| {
                    columns
                        .iter()
                        .zip(row)
                        .map(|(name, value)| format!("{name}={}", shown(value)))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .collect::<Vec<_>>()
                .join("; ");
            let more = if rows.len() == SHOWN_ROWS {
                " (the first ten)"
            } else {
                ""
            };
            Ok(Err(format!("expected no rows, got{more}: {listed}")))
        }
        Expectation::Between { min, max } => {
            let value = first_value(connection, &check.sql).await?;
            let Some(number) = number(&value) else {
                return Ok(Err(format!("expected a number, got {}", shown(&value))));
            };
            let low = min.is_none_or(|m| number >= m);
            let high = max.is_none_or(|m| number <= m);
            let bounds = match (min, max) {
                (Some(min), Some(max)) => format!("between {min} and {max}"),
                (Some(min), None) => format!("at least {min}"),
                (None, Some(max)) => format!("at most {max}"),
                (None, None) => "any number".to_string(),
            };
            let found = format!("{number}, expected {bounds}");
            Ok(if low && high { Ok(found) } else { Err(found) })
        }
        Expectation::Equals { sql, tolerance } => {
            let left = first_value(connection, &check.sql).await?;
            let right = first_value(connection, sql).await?;
            let found = format!("{} and {}", shown(&left), shown(&right));
            // NULL equals nothing (a SUM over no rows is NULL: COALESCE it).
            let equal = match (number(&left), number(&right)) {
                (Some(a), Some(b)) => (a - b).abs() <= *tolerance,
                _ => left != Value::Null && left == right,
            };
            Ok(if equal {
                Ok(format!("{found} agree"))
            } else {
                Err(format!("{found} differ (tolerance {tolerance})"))
            })
        }
    }
}

/// A value as a number, if it is one.
fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Int(n) => Some(*n as f64),
        Value::Float(n) => Some(*n),
        Value::Text(text) => text.trim().parse().ok(),
        Value::Null | Value::Bool(_) => None,
    }
}

/// The first value of the first row (NULL when there is none).
async fn first_value(connection: &Connection, sql: &str) -> Result<Value, Failure> {
    let (_, rows) = first_rows(connection, sql, 1).await?;
    Ok(rows
        .into_iter()
        .next()
        .and_then(|row| row.into_iter().next())
        .unwrap_or(Value::Null))
}

/// The column names and up to `limit` rows of `sql`.
async fn first_rows(
    connection: &Connection,
    sql: &str,
    limit: usize,
) -> Result<(Vec<String>, Vec<Vec<Value>>), Failure> {
    let source = RowSource::Sql {
        connection: String::new(),
        sql: sql.to_string(),
    };
    let (mut batches, _reader) = crate::transfer::open(&source, connection, limit, &[]).await?;
    let columns = batches.schema.iter().map(|(n, _)| n.clone()).collect();
    let mut rows = Vec::new();
    while rows.len() < limit {
        match batches.next().await? {
            Some(batch) => rows.extend(batch),
            None => break,
        }
    }
    rows.truncate(limit);
    Ok((columns, rows))
}
