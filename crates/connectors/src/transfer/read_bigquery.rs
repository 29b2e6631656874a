//! Reading a query's rows from BigQuery, page by page (one page is one batch).

use std::time::Duration;

use ferry_config::Connection;
use ferry_executor::connector::ColumnType;
use gcp_bigquery_client::model::field_type::FieldType;
use gcp_bigquery_client::model::get_query_results_parameters::GetQueryResultsParameters;
use gcp_bigquery_client::model::query_request::QueryRequest;
use gcp_bigquery_client::model::table_row::TableRow;
use gcp_bigquery_client::model::table_schema::TableSchema;
use tokio::sync::mpsc;

use super::{Problem, Read, Value};
use crate::bigquery::{Target, client, describe, is_transient};

/// How long one call waits for the query to end before asking again.
const WAIT_MS: i32 = 10_000;

/// Starts reading the rows of `sql` on the BigQuery `connection` into `sender`.
pub(super) fn spawn(
    connection: Connection,
    sql: String,
    batch_size: usize,
    sender: mpsc::Sender<Read>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(mut problem) = read(&connection, &sql, batch_size, &sender).await {
            problem.text = ferry_secrets::redact_text(&problem.text);
            let _ = sender.send(Read::Failed(problem)).await;
        }
    })
}

async fn read(
    connection: &Connection,
    sql: &str,
    batch_size: usize,
    sender: &mpsc::Sender<Read>,
) -> Result<(), Problem> {
    let Connection::Bigquery {
        project,
        location,
        credentials,
        endpoint,
    } = connection
    else {
        return Err(format!("a {} connection is not BigQuery", connection.kind()).into());
    };
    let target = Target {
        project,
        location: location.as_deref(),
        credentials,
        endpoint: endpoint.as_deref(),
    };
    let client = client(&target).await.map_err(|text| Problem {
        text: format!("could not authenticate: {text}"),
        transient: true,
    })?;
    let page_size = i32::try_from(batch_size).unwrap_or(i32::MAX);
    let mut request = QueryRequest::new(sql);
    request.location = target.location.map(str::to_string);
    request.max_results = Some(page_size);
    request.timeout_ms = Some(WAIT_MS);
    let failed = |error: gcp_bigquery_client::error::BQError| Problem {
        transient: is_transient(&error),
        text: format!("BigQuery: {}", describe(&error)),
    };
    let first = client
        .job()
        .query(target.project, request)
        .await
        .map_err(failed)?;
    let job_id = first
        .job_reference
        .as_ref()
        .and_then(|r| r.job_id.clone())
        .ok_or_else(|| Problem::from("BigQuery answered without a job id".to_string()))?;
    let (mut complete, mut schema, mut rows, mut token) = (
        first.job_complete.unwrap_or(false),
        first.schema,
        first.rows,
        first.page_token,
    );
    let parameters = |token: Option<String>| GetQueryResultsParameters {
        location: target.location.map(str::to_string),
        max_results: Some(page_size),
        page_token: token,
        timeout_ms: Some(WAIT_MS),
        ..Default::default()
    };
    while !complete {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let looked = client
            .job()
            .get_query_results(target.project, &job_id, parameters(None))
            .await
            .map_err(failed)?;
        complete = looked.job_complete.unwrap_or(false);
        (schema, rows, token) = (looked.schema, looked.rows, looked.page_token);
    }
    let schema = schema.unwrap_or(TableSchema { fields: None });
    let fields = schema.fields.unwrap_or_default();
    let columns = fields
        .iter()
        .map(|field| (field.name.clone(), column_type(&field.r#type)))
        .collect();
    send(sender, Read::Columns(columns)).await?;
    loop {
        let batch = rows
            .take()
            .unwrap_or_default()
            .into_iter()
            .map(|row| convert(&fields, row))
            .collect::<Result<Vec<_>, _>>()?;
        if !batch.is_empty() {
            send(sender, Read::Rows(batch)).await?;
        }
        let Some(next) = token.take().filter(|t| !t.is_empty()) else {
            break;
        };
        let page = client
            .job()
            .get_query_results(target.project, &job_id, parameters(Some(next)))
            .await
            .map_err(failed)?;
        (rows, token) = (page.rows, page.page_token);
    }
    send(sender, Read::End).await
}

/// Sends, or fails when the writer is gone (it stopped).
async fn send(sender: &mpsc::Sender<Read>, read: Read) -> Result<(), Problem> {
    sender
        .send(read)
        .await
        .map_err(|_| Problem::from("the writer stopped".to_string()))
}

/// The column type of a BigQuery field type (dates and times are text).
fn column_type(kind: &FieldType) -> Option<ColumnType> {
    Some(match kind {
        FieldType::Integer | FieldType::Int64 => ColumnType::Int64,
        FieldType::Float | FieldType::Float64 => ColumnType::Float64,
        FieldType::Boolean | FieldType::Bool => ColumnType::Bool,
        FieldType::String
        | FieldType::Date
        | FieldType::Datetime
        | FieldType::Time
        | FieldType::Timestamp
        | FieldType::Numeric
        | FieldType::Bignumeric => ColumnType::String,
        _ => return None,
    })
}

/// One row of the REST answer (every value is text, or null) as typed values.
fn convert(
    fields: &[gcp_bigquery_client::model::table_field_schema::TableFieldSchema],
    row: TableRow,
) -> Result<Vec<Value>, Problem> {
    let cells = row.columns.unwrap_or_default();
    fields
        .iter()
        .enumerate()
        .map(|(index, field)| {
            let raw = cells.get(index).and_then(|cell| cell.value.as_ref());
            let text = match raw {
                None | Some(serde_json::Value::Null) => return Ok(Value::Null),
                Some(serde_json::Value::String(text)) => text.as_str(),
                Some(other) => {
                    return Err(Problem::from(format!(
                        "column `{}` has a {} value ({other}), which a sync or transfer does not read: cast it in the query",
                        field.name,
                        if other.is_array() { "repeated" } else { "nested" }
                    )));
                }
            };
            let bad = |what: &str| {
                Problem::from(format!("column `{}`: `{text}` is not {what}", field.name))
            };
            Ok(match field.r#type {
                FieldType::Integer | FieldType::Int64 => {
                    Value::Int(text.parse().map_err(|_| bad("an integer"))?)
                }
                FieldType::Float | FieldType::Float64 => {
                    Value::Float(text.parse().map_err(|_| bad("a number"))?)
                }
                FieldType::Boolean | FieldType::Bool => {
                    Value::Bool(text.eq_ignore_ascii_case("true"))
                }
                FieldType::Timestamp => Value::Text(timestamp(text).ok_or_else(|| bad("a timestamp"))?),
                FieldType::String
                | FieldType::Date
                | FieldType::Datetime
                | FieldType::Time
                | FieldType::Numeric
                | FieldType::Bignumeric => Value::Text(text.to_string()),
                _ => {
                    return Err(Problem::from(format!(
                        "column `{}` has type {:?}, which a sync or transfer does not read: cast it in the query",
                        field.name, field.r#type
                    )));
                }
            })
        })
        .collect()
}

/// A TIMESTAMP as the REST API gives it (seconds since the epoch, as a float) in RFC 3339.
fn timestamp(text: &str) -> Option<String> {
    if let Ok(seconds) = text.parse::<f64>() {
        let micros = (seconds * 1_000_000.0).round() as i64;
        return chrono::DateTime::from_timestamp_micros(micros)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));
    }
    // Some emulators answer in text already.
    Some(text.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_become_rfc3339() {
        assert_eq!(
            super::timestamp("1.7645e9").as_deref(),
            Some("2025-11-30T10:53:20Z")
        );
    }
}
