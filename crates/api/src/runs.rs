//! Runs and their task instances.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use ferry_store::{RunFilter, RunRecord, RunState, TaskInstanceRecord};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::State;
use crate::auth::Caller;
use crate::problem::{NeedsToken, Problem};

/// The most runs one answer lists.
const MOST: i64 = 1000;

/// Which runs to list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RunsQuery {
    /// Only this DAG's runs.
    dag_id: Option<String>,
    /// Only runs in this state: `queued`, `running`, `success` or `failed`.
    state: Option<String>,
    /// At most this many (1–1000, default 100).
    limit: Option<i64>,
}

/// A DAG run.
#[derive(Serialize, ToSchema)]
pub(crate) struct Run {
    /// The run's id (`dashboard_daily__scheduled__2026-11-28T23:00:00+00:00`).
    run_id: String,
    /// Its DAG.
    dag_id: String,
    /// `queued`, `running`, `success` or `failed`.
    state: String,
    /// `scheduled`, `manual` or `backfill`.
    run_type: String,
    /// The start of its data interval (RFC 3339, UTC).
    logical_date: String,
    /// The start of its data interval.
    data_interval_start: String,
    /// The end of its data interval.
    data_interval_end: String,
    /// When it was created.
    queued_at: String,
    /// When it first started.
    started_at: Option<String>,
    /// When it ended.
    ended_at: Option<String>,
    /// Its parameters.
    #[schema(value_type = Object)]
    conf: serde_json::Value,
}

/// Runs, newest logical date first.
#[derive(Serialize, ToSchema)]
pub(crate) struct RunList {
    /// The runs.
    runs: Vec<Run>,
}

/// A task instance of a run.
#[derive(Serialize, ToSchema)]
pub(crate) struct TaskInstance {
    /// The task's id in the DAG.
    task_id: String,
    /// Airflow's names: `pending`, `queued`, `running`, `deferred`, `up_for_retry`,
    /// `success`, `failed`, `upstream_failed`, `skipped`.
    state: String,
    /// Attempts started so far.
    try_number: i64,
    /// Attempts allowed (retries + 1).
    max_tries: i64,
    /// The pool whose slot it takes.
    pool: String,
    /// When its last attempt started.
    started_at: Option<String>,
    /// When it ended.
    ended_at: Option<String>,
    /// The last attempt's exit code.
    exit_code: Option<i64>,
    /// The job started outside ferry (a Glue run, a Step Functions execution, a BigQuery job).
    external_job_id: Option<String>,
}

/// A run and its task instances.
#[derive(Serialize, ToSchema)]
pub(crate) struct RunDetail {
    /// The run.
    #[serde(flatten)]
    run: Run,
    /// Its task instances, by task id.
    task_instances: Vec<TaskInstance>,
}

/// Lists runs, newest logical date first.
#[utoipa::path(
    get,
    path = "/api/v1/runs",
    params(RunsQuery),
    security(("bearer" = [])),
    responses(
        NeedsToken,
        (status = 200, description = "The runs", body = RunList),
        (status = 422, description = "A parameter is not as described", content_type = "application/problem+json"),
    )
)]
pub(crate) async fn list(
    _caller: Caller,
    axum::extract::State(shared): State,
    query: Result<Query<RunsQuery>, QueryRejection>,
) -> Result<Json<RunList>, Problem> {
    let Query(query) =
        query.map_err(|e| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, e.body_text()))?;
    let states = match &query.state {
        None => Vec::new(),
        Some(text) => vec![text.parse::<RunState>().map_err(|_| {
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("`state`: `{text}` is not a run state (queued, running, success, failed)"),
            )
        })?],
    };
    let limit = query.limit.unwrap_or(100);
    if !(1..=MOST).contains(&limit) {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("`limit`: {limit} is not between 1 and {MOST}"),
        ));
    }
    let filter = RunFilter {
        dag_id: query.dag_id,
        states,
        limit: Some(limit),
    };
    let runs = shared
        .store
        .runs(&filter)
        .await
        .map_err(|e| Problem::store(&e))?;
    Ok(Json(RunList {
        runs: runs.iter().map(run).collect(),
    }))
}

/// A run and its task instances.
#[utoipa::path(
    get,
    path = "/api/v1/runs/{run_id}",
    params(("run_id" = String, Path, description = "The run's id")),
    security(("bearer" = [])),
    responses(
        NeedsToken,
        (status = 200, description = "The run", body = RunDetail),
        (status = 404, description = "No run has this id", content_type = "application/problem+json"),
    )
)]
pub(crate) async fn detail(
    _caller: Caller,
    axum::extract::State(shared): State,
    Path(run_id): Path<String>,
) -> Result<Json<RunDetail>, Problem> {
    let record = run_named(&shared.store, &run_id).await?;
    let mut tasks = shared
        .store
        .task_instances(record.id)
        .await
        .map_err(|e| Problem::store(&e))?;
    tasks.sort_by(|a, b| a.task_id.cmp(&b.task_id));
    Ok(Json(RunDetail {
        run: run(&record),
        task_instances: tasks.iter().map(task_instance).collect(),
    }))
}

/// The run with exactly this id (404 without one).
pub(crate) async fn run_named(
    store: &ferry_store::Store,
    run_id: &str,
) -> Result<RunRecord, Problem> {
    store
        .run(run_id)
        .await
        .map_err(|e| Problem::store(&e))?
        .ok_or_else(|| {
            Problem::new(
                StatusCode::NOT_FOUND,
                format!("no run has the id `{run_id}` (GET /api/v1/runs lists them)"),
            )
        })
}

/// Unix milliseconds as RFC 3339 in UTC.
fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

fn run(record: &RunRecord) -> Run {
    Run {
        run_id: record.run_id.clone(),
        dag_id: record.dag_id.clone(),
        state: record.state.clone(),
        run_type: record.run_type.clone(),
        logical_date: time(record.logical_date),
        data_interval_start: time(record.interval_start),
        data_interval_end: time(record.interval_end),
        queued_at: time(record.queued_at),
        started_at: record.started_at.map(time),
        ended_at: record.ended_at.map(time),
        conf: serde_json::from_str(&record.conf).unwrap_or(serde_json::Value::Null),
    }
}

fn task_instance(record: &TaskInstanceRecord) -> TaskInstance {
    TaskInstance {
        task_id: record.task_id.clone(),
        state: record.state.clone(),
        try_number: record.try_number,
        max_tries: record.max_tries,
        pool: record.pool.clone(),
        started_at: record.started_at.map(time),
        ended_at: record.ended_at.map(time),
        exit_code: record.exit_code,
        external_job_id: record.external_job_id.clone(),
    }
}
