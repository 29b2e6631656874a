//! A task instance of a run with every attempt, and an attempt's log: the tail, a byte range,
//! or followed as it grows until the attempt ends.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferry_scheduler::logs::log_so_far;
use ferry_store::{AttemptRecord, RunRecord, Store, TaskInstanceRecord};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::State;
use crate::auth::Caller;
use crate::problem::{NeedsToken, Problem};
use crate::runs::{TaskInstance, run_for, task_instance, time};

/// The largest `tail` or `offset` (the largest integer JSON numbers keep exactly).
const MOST: usize = 9_007_199_254_740_991;

/// How often a followed log is read again.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);

/// One attempt of a task.
#[derive(Serialize, ToSchema)]
pub(crate) struct Attempt {
    /// 1 for the first attempt.
    try_number: i64,
    /// When it started.
    started_at: String,
    /// When it ended; none while it runs.
    ended_at: Option<String>,
    /// `success`, `failed`, `timeout`, `deferred`, `lost`, ...; none while it runs.
    outcome: Option<String>,
    /// The process's exit code or the HTTP status.
    exit_code: Option<i64>,
    /// Who ran it (`host:pid:start`).
    worker: String,
    /// The rendered command or request, secrets masked.
    rendered: String,
    /// The job it started outside ferry (a Glue run id, an execution ARN, a BigQuery job id).
    external_job_id: Option<String>,
    /// Its figures (`rows_written`, `bytes_processed`).
    #[schema(value_type = Option<Object>)]
    metrics: Option<serde_json::Value>,
}

/// A task instance and every attempt it had.
#[derive(Serialize, ToSchema)]
pub(crate) struct TaskDetail {
    /// The task instance.
    #[serde(flatten)]
    task: TaskInstance,
    /// Its run.
    run_id: String,
    /// Every attempt, first try first.
    attempts: Vec<Attempt>,
}

/// Which part of which attempt's log.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct LogQuery {
    /// The attempt (default: the latest).
    #[param(minimum = 1)]
    try_number: Option<i64>,
    /// Only the last this many lines (of what follows `offset`).
    #[param(minimum = 0, maximum = 9_007_199_254_740_991_i64)]
    tail: Option<usize>,
    /// From this byte on (what `X-Ferry-Log-Offset` said last time).
    #[param(minimum = 0, maximum = 9_007_199_254_740_991_i64)]
    offset: Option<usize>,
    /// Keep the answer open and send the log as it grows, until the attempt ends.
    follow: Option<bool>,
}

/// A task instance of a run, with every attempt.
#[utoipa::path(
    get,
    path = "/api/v1/runs/{run_id}/tasks/{task_id}",
    params(
        ("run_id" = String, Path, description = "The run's id"),
        ("task_id" = String, Path, description = "The task's id"),
    ),
    security(("bearer" = [])),
    responses(
        NeedsToken,
        (status = 200, description = "The task instance", body = TaskDetail),
        (status = 404, description = "No such run or task", content_type = "application/problem+json"),
    )
)]
pub(crate) async fn detail(
    caller: Caller,
    axum::extract::State(shared): State,
    Path((run_id, task_id)): Path<(String, String)>,
) -> Result<Json<TaskDetail>, Problem> {
    let run = run_for(&shared, &caller, &run_id).await?;
    let task = task_named(&shared.store, &run, &task_id).await?;
    let attempts = shared
        .store
        .attempts(task.id)
        .await
        .map_err(|e| Problem::store(&e))?;
    Ok(Json(TaskDetail {
        task: task_instance(&task),
        run_id: run.run_id,
        attempts: attempts.iter().map(attempt).collect(),
    }))
}

/// An attempt's log as text: all of it, what follows `offset`, or the last `tail` lines of that;
/// with `follow=true`, the answer stays open and carries the log as it grows until the attempt
/// ends. `X-Ferry-Log-Offset` says where the text sent ends (pass it as `offset` next time).
#[utoipa::path(
    get,
    path = "/api/v1/runs/{run_id}/tasks/{task_id}/logs",
    params(
        ("run_id" = String, Path, description = "The run's id"),
        ("task_id" = String, Path, description = "The task's id"),
        LogQuery,
    ),
    security(("bearer" = [])),
    responses(
        NeedsToken,
        (status = 200, description = "The log (secrets masked)", content_type = "text/plain"),
        (status = 404, description = "No such run, task or attempt", content_type = "application/problem+json"),
        (status = 422, description = "A parameter is not as described", content_type = "application/problem+json"),
    )
)]
pub(crate) async fn logs(
    caller: Caller,
    axum::extract::State(shared): State,
    Path((run_id, task_id)): Path<(String, String)>,
    query: Result<Query<LogQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let Query(query) =
        query.map_err(|e| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, e.body_text()))?;
    for (name, value) in [("tail", query.tail), ("offset", query.offset)] {
        if value.is_some_and(|v| v > MOST) {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("`{name}`: at most {MOST}"),
            ));
        }
    }
    let run = run_for(&shared, &caller, &run_id).await?;
    let task = task_named(&shared.store, &run, &task_id).await?;
    let store = shared.store.clone();
    let attempt = store
        .attempt(&run.run_id, &task.task_id, query.try_number)
        .await
        .map_err(|e| Problem::store(&e))?
        .ok_or_else(|| {
            Problem::new(
                StatusCode::NOT_FOUND,
                match query.try_number {
                    Some(wanted) => format!(
                        "task `{task_id}` of run `{run_id}` has no try {wanted} (it has had {})",
                        task.try_number
                    ),
                    None => format!(
                        "task `{task_id}` of run `{run_id}` has not started yet (it is {})",
                        task.state
                    ),
                },
            )
        })?;
    let log = log_so_far(&attempt);
    let start = query.offset.unwrap_or(0);
    if start < log.len() && !log.is_char_boundary(start) {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "`offset`: {start} is inside a character; give an offset this API answered (X-Ferry-Log-Offset)"
            ),
        ));
    }
    let after = log.get(start..).unwrap_or_default();
    let text = match query.tail {
        Some(lines) => last_lines(after, lines).to_string(),
        None => after.to_string(),
    };
    let end = log.len().max(start);
    let ended = attempt.ended_at.is_some();
    if query.follow != Some(true) || ended {
        let mut response = text.into_response();
        log_headers(&mut response, &attempt, end, ended);
        return Ok(response);
    }
    // Followed: the text so far, then what comes, until the attempt ends.
    let try_number = attempt.try_number;
    let first = futures_util::stream::once(async move { Ok::<_, std::io::Error>(text) });
    let rest = futures_util::stream::unfold(Some(end), move |sent| {
        let store = store.clone();
        let (run_id, task_id) = (run.run_id.clone(), task.task_id.clone());
        async move {
            let sent = sent?;
            loop {
                tokio::time::sleep(FOLLOW_EVERY).await;
                // A store that does not answer for a moment: look again at the next tick.
                let Ok(found) = store.attempt(&run_id, &task_id, Some(try_number)).await else {
                    continue;
                };
                let now = found?;
                let log = log_so_far(&now);
                let new = log.get(sent..).unwrap_or_default().to_string();
                if now.ended_at.is_some() {
                    let outcome = now.outcome.as_deref().unwrap_or("ended");
                    let end = format!("{new}\n# ended: {outcome}\n");
                    return Some((Ok(end), None));
                }
                if !new.is_empty() {
                    return Some((Ok(new), Some(log.len())));
                }
            }
        }
    });
    let body = Body::from_stream(futures_util::StreamExt::chain(first, rest));
    let mut response = body.into_response();
    log_headers(&mut response, &attempt, end, false);
    Ok(response)
}

/// The task `task_id` of `run` (404 without one).
async fn task_named(
    store: &Store,
    run: &RunRecord,
    task_id: &str,
) -> Result<TaskInstanceRecord, Problem> {
    let tasks = store
        .task_instances(run.id)
        .await
        .map_err(|e| Problem::store(&e))?;
    let names: Vec<String> = tasks.iter().map(|t| t.task_id.clone()).collect();
    tasks
        .into_iter()
        .find(|t| t.task_id == task_id)
        .ok_or_else(|| {
            let hint = ferry_dag::diagnostic::suggestion(task_id, names.iter().map(String::as_str))
                .map(|hint| format!("; {hint}"))
                .unwrap_or_default();
            Problem::new(
                StatusCode::NOT_FOUND,
                format!("run `{}` has no task `{task_id}`{hint}", run.run_id),
            )
        })
}

/// The last `lines` lines of `log`.
fn last_lines(log: &str, lines: usize) -> &str {
    let trimmed = log.strip_suffix('\n').unwrap_or(log);
    let start = trimmed
        .rmatch_indices('\n')
        .nth(lines.saturating_sub(1))
        .map_or(0, |(at, _)| at + 1);
    if lines == 0 { "" } else { &log[start..] }
}

fn log_headers(response: &mut Response, attempt: &AttemptRecord, end: usize, ended: bool) {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert("x-ferry-try-number", HeaderValue::from(attempt.try_number));
    headers.insert("x-ferry-log-offset", HeaderValue::from(end));
    headers.insert(
        "x-ferry-attempt-ended",
        HeaderValue::from_static(if ended { "true" } else { "false" }),
    );
}

fn attempt(record: &AttemptRecord) -> Attempt {
    Attempt {
        try_number: record.try_number,
        started_at: time(record.started_at),
        ended_at: record.ended_at.map(time),
        outcome: record.outcome.clone(),
        exit_code: record.exit_code,
        worker: record.worker.clone(),
        rendered: record.rendered.clone(),
        external_job_id: record.external_job_id.clone(),
        metrics: record
            .metrics
            .as_deref()
            .and_then(|m| serde_json::from_str(m).ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_is_the_last_lines() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(last_lines("a\nb\nc", 2), "b\nc");
        assert_eq!(last_lines("a\nb\nc\n", 10), "a\nb\nc\n");
        assert_eq!(last_lines("a\nb\nc\n", 0), "");
        assert_eq!(last_lines("", 3), "");
    }
}
