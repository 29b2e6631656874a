//! Writing a transfer's rows into a BigQuery table: the rows are streamed (`insertAll`, 500
//! rows a request, each with an insert id) into a staging table beside the destination (it
//! expires after a day if ferry dies before dropping it), then one query job (a script) writes
//! them into the table by the write mode in one transaction and drops the staging table.

use std::time::{Duration, SystemTime};

use ferry_executor::Outcome;
use ferry_executor::connector::{AttemptScope, ColumnType, TableWrite};
use gcp_bigquery_client::model::table::Table;
use gcp_bigquery_client::model::table_data_insert_all_request::TableDataInsertAllRequest;
use gcp_bigquery_client::model::table_field_schema::TableFieldSchema;
use gcp_bigquery_client::model::table_schema::TableSchema;

use super::{Batches, Counts, Failure, Value};
use crate::bigquery::{self, Target, describe, is_transient};
use crate::jobs::retrying;
use crate::write::{Dialect, from_rows, rows_table};

/// Rows per `insertAll` request (BigQuery's advice).
const ROWS_PER_REQUEST: usize = 500;

/// Writes `batches` into `write.table`.
pub(super) async fn write(
    target: &Target<'_>,
    write: &TableWrite,
    schema: &[(String, ColumnType)],
    mut batches: Batches,
    scope: &AttemptScope<'_>,
) -> Result<Counts, Failure> {
    let client = bigquery::client(target)
        .await
        .map_err(|e| Failure::Transient(format!("could not authenticate: {e}")))?;
    let parts: Vec<&str> = write.table.split('.').collect();
    let (project, dataset) = match parts.as_slice() {
        [dataset, _] => (target.project.to_string(), (*dataset).to_string()),
        [project, dataset, _] => ((*project).to_string(), (*dataset).to_string()),
        _ => {
            return Err(Failure::Fatal(format!(
                "`{}` is not a BigQuery table: write `dataset.table` or `project.dataset.table`",
                write.table
            )));
        }
    };
    let staging = rows_table(&scope.key.short_token());
    let fields = schema
        .iter()
        .map(|(name, kind)| match kind {
            ColumnType::Int64 => TableFieldSchema::integer(name),
            ColumnType::Float64 => TableFieldSchema::float(name),
            ColumnType::Bool => TableFieldSchema::bool(name),
            ColumnType::String => TableFieldSchema::string(name),
        })
        .collect();
    let table = Table::new(&project, &dataset, &staging, TableSchema::new(fields))
        .expiration_time(SystemTime::now() + Duration::from_secs(24 * 3600));
    let failed = |what: &str, e: &gcp_bigquery_client::error::BQError| {
        let reason = format!("{what}: {}", describe(e));
        if is_transient(e) {
            Failure::Transient(reason)
        } else {
            Failure::Fatal(reason)
        }
    };
    let stopped = || Failure::Transient("stopped".to_string());
    // A staging table of this attempt left by an earlier failure is replaced.
    client
        .table()
        .delete_if_exists(&project, &dataset, &staging)
        .await;
    retrying(
        "creating the staging table",
        scope,
        is_transient,
        describe,
        || client.table().create(table.clone()),
    )
    .await
    .ok_or_else(stopped)?
    .map_err(|e| failed("creating the staging table", &e))?;
    let result = fill_and_write(
        &client,
        target,
        write,
        schema,
        &mut batches,
        scope,
        (&project, &dataset, &staging),
    )
    .await;
    if result.is_err() {
        client
            .table()
            .delete_if_exists(&project, &dataset, &staging)
            .await;
    }
    result
}

/// Streams the rows into the staging table, then runs the write script.
async fn fill_and_write(
    client: &gcp_bigquery_client::Client,
    target: &Target<'_>,
    write: &TableWrite,
    schema: &[(String, ColumnType)],
    batches: &mut Batches,
    scope: &AttemptScope<'_>,
    (project, dataset, staging): (&str, &str, &str),
) -> Result<Counts, Failure> {
    let mut sent = 0usize;
    while let Some(batch) = batches.next().await? {
        for chunk in batch.chunks(ROWS_PER_REQUEST) {
            let mut request = TableDataInsertAllRequest::new();
            for row in chunk {
                let object: serde_json::Map<String, serde_json::Value> = schema
                    .iter()
                    .zip(row)
                    .map(|((name, _), value)| (name.clone(), json(value)))
                    .collect();
                request
                    .add_row(Some(format!("{staging}-{sent}")), object)
                    .map_err(|e| Failure::Fatal(describe(&e)))?;
                sent += 1;
            }
            let answer = retrying(
                "streaming rows into the staging table",
                scope,
                is_transient,
                describe,
                || {
                    client
                        .tabledata()
                        .insert_all(project, dataset, staging, request.clone())
                },
            )
            .await
            .ok_or_else(|| Failure::Transient("stopped".to_string()))?
            .map_err(|e| {
                let reason = format!("streaming rows into BigQuery: {}", describe(&e));
                if is_transient(&e) {
                    Failure::Transient(reason)
                } else {
                    Failure::Fatal(reason)
                }
            })?;
            if let Some(error) = answer.insert_errors.unwrap_or_default().first() {
                let message = error
                    .errors
                    .as_ref()
                    .and_then(|e| e.first())
                    .and_then(|e| e.message.clone())
                    .unwrap_or_default();
                return Err(Failure::Fatal(format!(
                    "BigQuery refused row {} of the batch: {message}",
                    error.index.unwrap_or_default()
                )));
            }
        }
    }
    let columns: Vec<String> = schema.iter().map(|(name, _)| name.clone()).collect();
    let staged = format!("{project}.{dataset}.{staging}");
    let sql =
        from_rows(Dialect::Bigquery, write, &staged, Some(&columns)).map_err(Failure::Fatal)?;
    let mut script = sql.prepare;
    script.push("BEGIN TRANSACTION".to_string());
    script.extend(sql.transaction);
    script.push("COMMIT TRANSACTION".to_string());
    script.extend(sql.cleanup);
    let script = script.join(";\n") + ";";
    let job = bigquery::QueryJob {
        sql: &script,
        labels: &[],
        timeout: None,
        dry_run: false,
    };
    match bigquery::run_query(client, target, &job, scope).await {
        Outcome::Succeeded { .. } => Ok(Counts {
            read: batches.rows_read,
            written: i64::try_from(sent).unwrap_or(i64::MAX),
            replaced: None,
        }),
        Outcome::Failed {
            retryable: true,
            reason,
            ..
        } => Err(Failure::Transient(reason)),
        Outcome::Failed { reason, .. } | Outcome::Deferred { reason, .. } => {
            Err(Failure::Fatal(reason))
        }
    }
}

/// A value as JSON for `insertAll`.
fn json(value: &Value) -> serde_json::Value {
    match value {
        Value::Null => serde_json::Value::Null,
        Value::Int(n) => serde_json::Value::from(*n),
        Value::Float(n) => serde_json::Value::from(*n),
        Value::Text(text) => serde_json::Value::from(text.as_str()),
        Value::Bool(b) => serde_json::Value::from(*b),
    }
}
