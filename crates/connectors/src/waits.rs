//! The waits on cloud state, one look at a time: the engine asks again after the poll
//! interval (the task holds no slot meanwhile) until what is waited for is there, or the
//! task's timeout has passed since the first look.

use std::time::{Duration, SystemTime};

use aws_sdk_glue::types::JobRunState;
use ferry_config::Connection;
use ferry_executor::Outcome;
use ferry_executor::connector::{AttemptScope, CloudWait};

use crate::{aws, bigquery};

/// How long one look may take.
const LOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// What one look found.
enum Looked {
    /// It is there.
    Found(String),
    /// Not yet.
    NotYet(String),
    /// The look failed for now (throttling, the network).
    Transient(String),
    /// The look cannot work (no permission, no such bucket).
    Failed(String),
}

/// Looks once for `wait` on `target`.
pub(crate) async fn look(
    target: &Connection,
    wait: &CloudWait,
    poll: Duration,
    timeout: Duration,
    scope: &AttemptScope<'_>,
) -> Outcome {
    let what = describe(wait);
    if scope.elapsed >= timeout {
        let reason = format!(
            "gave up waiting for {what} after {}",
            humantime::format_duration(timeout)
        );
        scope.log.note(&reason);
        return Outcome::fatal(reason);
    }
    let looked = tokio::select! {
        looked = tokio::time::timeout(LOOK_TIMEOUT, look_once(target, wait)) => match looked {
            Ok(looked) => looked,
            Err(_) => Looked::Transient(format!("no answer within {} s", LOOK_TIMEOUT.as_secs())),
        },
        // A shutdown leaves the wait to the next start; another stop ends it.
        () = scope.shutting_down.cancelled() => {
            return Outcome::failed(None, "ferry shut down during a look");
        }
        () = scope.cancel.cancelled() => return Outcome::failed(None, "stopped"),
    };
    let recheck_after = poll.min(timeout.saturating_sub(scope.elapsed));
    match looked {
        Looked::Found(detail) => {
            scope.log.note(&format!("{what}: {detail}"));
            Outcome::Succeeded { code: None }
        }
        Looked::NotYet(detail) => Outcome::Deferred {
            recheck_after,
            reason: format!("waiting for {what}: {detail}"),
        },
        Looked::Transient(problem) => {
            let problem = ferry_secrets::redact_text(&problem);
            scope.log.note(&format!(
                "looking for {what}: {problem} (looking again later)"
            ));
            Outcome::Deferred {
                recheck_after,
                reason: format!("waiting for {what} ({problem})"),
            }
        }
        Looked::Failed(problem) => {
            let reason = ferry_secrets::redact_text(&format!("looking for {what}: {problem}"));
            scope.log.note(&reason);
            Outcome::fatal(reason)
        }
    }
}

/// What is waited for, for people.
fn describe(wait: &CloudWait) -> String {
    match wait {
        CloudWait::S3Object { bucket, key, .. } => format!("s3://{bucket}/{key}"),
        CloudWait::BigqueryPartition {
            table,
            column,
            value,
        } => {
            format!("rows of {table} where {column} = '{value}'")
        }
        CloudWait::GlueRun {
            job_name, state, ..
        } => {
            format!("a run of Glue job {job_name} started after the interval to be {state}")
        }
    }
}

async fn look_once(target: &Connection, wait: &CloudWait) -> Looked {
    match (wait, target) {
        (
            CloudWait::S3Object {
                bucket,
                key,
                newer_than,
            },
            Connection::Aws {
                region,
                role_arn,
                endpoint,
            },
        ) => {
            let config = aws::sdk_config(region, role_arn.as_deref(), endpoint.as_deref()).await;
            let client = aws::s3(&config, endpoint.as_deref());
            s3_object(&client, bucket, key, *newer_than).await
        }
        (
            CloudWait::GlueRun {
                job_name,
                state,
                started_after,
            },
            Connection::Aws {
                region,
                role_arn,
                endpoint,
            },
        ) => {
            let config = aws::sdk_config(region, role_arn.as_deref(), endpoint.as_deref()).await;
            let client = aws_sdk_glue::Client::new(&config);
            glue_run(&client, job_name, state, *started_after).await
        }
        (
            CloudWait::BigqueryPartition {
                table,
                column,
                value,
            },
            Connection::Bigquery {
                project,
                location,
                credentials,
                endpoint,
            },
        ) => {
            let target = bigquery::Target {
                project,
                location: location.as_deref(),
                credentials,
                endpoint: endpoint.as_deref(),
            };
            bigquery_partition(&target, table, column, value).await
        }
        (_, other) => Looked::Failed(format!(
            "a {} connection cannot be used for this wait",
            other.kind()
        )),
    }
}

/// An AWS error as a look's result: not found is "not yet"; throttling and the like are
/// transient; the rest fail.
fn aws_problem<E>(
    error: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> Looked
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    if aws::is_transient(error) {
        Looked::Transient(aws::describe(error))
    } else {
        Looked::Failed(aws::describe(error))
    }
}

async fn s3_object(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    newer_than: Option<SystemTime>,
) -> Looked {
    let fresh = |modified: Option<&aws_sdk_s3::primitives::DateTime>| match newer_than {
        None => true,
        Some(limit) => modified
            .and_then(|m| SystemTime::try_from(*m).ok())
            .is_some_and(|m| m > limit),
    };
    if key.ends_with('/') || key.is_empty() {
        let mut pages = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(key)
            .into_paginator()
            .send();
        let mut older = 0;
        while let Some(page) = pages.next().await {
            let page = match page {
                Ok(page) => page,
                Err(error) => return aws_problem(&error),
            };
            for object in page.contents() {
                if fresh(object.last_modified()) {
                    return Looked::Found(format!("{} is there", object.key().unwrap_or_default()));
                }
                older += 1;
            }
        }
        return Looked::NotYet(if older > 0 {
            format!("{older} object(s), none written after the interval's end")
        } else {
            "no object yet".to_string()
        });
    }
    match client.head_object().bucket(bucket).key(key).send().await {
        Ok(head) if fresh(head.last_modified()) => Looked::Found("the object is there".to_string()),
        Ok(_) => Looked::NotYet("the object is older than the interval's end".to_string()),
        Err(error)
            if error
                .as_service_error()
                .is_some_and(aws_sdk_s3::operation::head_object::HeadObjectError::is_not_found) =>
        {
            Looked::NotYet("no object yet".to_string())
        }
        Err(error) => aws_problem(&error),
    }
}

async fn glue_run(
    client: &aws_sdk_glue::Client,
    job_name: &str,
    state: &str,
    started_after: SystemTime,
) -> Looked {
    let runs = match client
        .get_job_runs()
        .job_name(job_name)
        .max_results(50)
        .send()
        .await
    {
        Ok(output) => output.job_runs.unwrap_or_default(),
        Err(error) => {
            return if aws::is_transient(&error) {
                Looked::Transient(aws::describe(&error))
            } else {
                Looked::Failed(aws::describe(&error))
            };
        }
    };
    let newest = runs
        .into_iter()
        .filter(|run| {
            run.started_on
                .and_then(|s| SystemTime::try_from(s).ok())
                .is_some_and(|s| s >= started_after)
        })
        .max_by_key(|run| run.started_on.map(|s| s.secs()));
    let Some(run) = newest else {
        return Looked::NotYet("no run started after the interval's end yet".to_string());
    };
    let id = run.id.clone().unwrap_or_default();
    let current = run.job_run_state.clone();
    let ended = matches!(
        current,
        Some(
            JobRunState::Succeeded
                | JobRunState::Failed
                | JobRunState::Error
                | JobRunState::Timeout
                | JobRunState::Stopped
                | JobRunState::Expired
        )
    );
    let shown = current
        .as_ref()
        .map_or("?", JobRunState::as_str)
        .to_string();
    let reached = match state {
        "RUNNING" => current == Some(JobRunState::Running) || ended,
        "ENDED" => ended,
        _ => current == Some(JobRunState::Succeeded),
    };
    if reached {
        Looked::Found(format!("run {id} is {shown}"))
    } else if ended {
        Looked::NotYet(format!(
            "run {id} ended {shown}: {}",
            run.error_message.unwrap_or_default()
        ))
    } else {
        Looked::NotYet(format!("run {id} is {shown}"))
    }
}

async fn bigquery_partition(
    target: &bigquery::Target<'_>,
    table: &str,
    column: &str,
    value: &str,
) -> Looked {
    use crate::write::{Dialect, quote};
    if !crate::write::is_table_name(table) || !crate::write::is_table_name(column) {
        return Looked::Failed(format!(
            "`{table}` or `{column}` is not a name (letters, digits, `_` and `-`, dotted parts)"
        ));
    }
    if !crate::write::is_safe_value(value) {
        return Looked::Failed(format!(
            "partition value `{value}` holds characters other than letters, digits and ` :_.+-/`"
        ));
    }
    let client = match bigquery::client(target).await {
        Ok(client) => client,
        Err(problem) => return Looked::Transient(format!("could not authenticate: {problem}")),
    };
    let sql = format!(
        "SELECT COUNT(*) AS found FROM (SELECT 1 AS one FROM {} WHERE {} = '{value}' LIMIT 1) AS rows_of_partition",
        quote(Dialect::Bigquery, table),
        quote(Dialect::Bigquery, column)
    );
    let mut request = gcp_bigquery_client::model::query_request::QueryRequest::new(sql);
    request.use_legacy_sql = false;
    request.location = target.location.map(str::to_string);
    match client.job().query(target.project, request).await {
        Ok(answer) => {
            if let Some(error) = answer.errors.as_ref().and_then(|e| e.first()) {
                let message = error.message.clone().unwrap_or_default();
                return if error.reason.as_deref() == Some("notFound") {
                    Looked::NotYet(format!("no table yet ({message})"))
                } else {
                    Looked::Failed(message)
                };
            }
            let found = answer
                .rows
                .as_ref()
                .and_then(|rows| rows.first())
                .and_then(|row| row.columns.as_ref())
                .and_then(|cells| cells.first())
                .and_then(|cell| cell.value.as_ref())
                .and_then(|v| {
                    v.as_str()
                        .and_then(|s| s.parse::<i64>().ok())
                        .or(v.as_i64())
                })
                .unwrap_or(0);
            if found > 0 {
                Looked::Found("the partition has rows".to_string())
            } else {
                Looked::NotYet("the partition has no rows yet".to_string())
            }
        }
        Err(gcp_bigquery_client::error::BQError::ResponseError { error })
            if error.error.code == 404 =>
        {
            Looked::NotYet(format!("no table yet ({})", error.error.message))
        }
        Err(error) if bigquery::is_transient(&error) => {
            Looked::Transient(bigquery::describe(&error))
        }
        Err(error) => Looked::Failed(bigquery::describe(&error)),
    }
}
