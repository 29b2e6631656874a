//! Runs and their task instances.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use ferry_store::{RunFilter, RunRecord, RunState, TaskInstanceRecord};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::problem::{NeedsToken, Problem};
use crate::{Shared, State};

/// The most runs one answer lists.
const MOST: i64 = 1000;

/// Which runs to list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RunsQuery {
    /// Only this DAG's runs.
    dag_id: Option<String>,
    /// Only runs in this state.
    #[param(inline)]
    state: Option<RunStateName>,
    /// Only runs whose logical date is at or after this (RFC 3339; a date alone, `2026-11-24`,
    /// is its midnight UTC).
    #[param(format = DateTime)]
    logical_date_gte: Option<String>,
    /// Only runs whose logical date is before this.
    #[param(format = DateTime)]
    logical_date_lt: Option<String>,
    /// At most this many (1–1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// The page after the one that gave this `next_cursor`.
    #[param(pattern = r"^-?[0-9]{1,18}\.[0-9]{1,18}$")]
    cursor: Option<String>,
}
/// A run's state, as a filter.
#[derive(Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RunStateName {
    /// Made, waiting to start.
    Queued,
    /// Under way.
    Running,
    /// Every task succeeded (or was skipped).
    Success,
    /// A task failed.
    Failed,
}

impl RunStateName {
    fn state(self) -> RunState {
        match self {
            RunStateName::Queued => RunState::Queued,
            RunStateName::Running => RunState::Running,
            RunStateName::Success => RunState::Success,
            RunStateName::Failed => RunState::Failed,
        }
    }
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
    /// Pass it as `cursor` for the next page; none when this page is the last.
    next_cursor: Option<String>,
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
    caller: Caller,
    axum::extract::State(shared): State,
    query: Result<Query<RunsQuery>, QueryRejection>,
) -> Result<Json<RunList>, Problem> {
    let Query(query) =
        query.map_err(|e| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, e.body_text()))?;
    let states: Vec<RunState> = query.state.map(RunStateName::state).into_iter().collect();
    let limit = query.limit.unwrap_or(100);
    if !(1..=MOST).contains(&limit) {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("`limit`: {limit} is not between 1 and {MOST}"),
        ));
    }
    let after = query.cursor.as_deref().map(read_cursor).transpose()?;
    if let Some(dag_id) = &query.dag_id {
        shared.check_scope(&caller, dag_id, None).await?;
    }
    let filter = RunFilter {
        dag_id: query.dag_id,
        states,
        limit: Some(limit),
        logical_date_from: query
            .logical_date_gte
            .as_deref()
            .map(|t| instant("logical_date_gte", t))
            .transpose()?,
        logical_date_before: query
            .logical_date_lt
            .as_deref()
            .map(|t| instant("logical_date_lt", t))
            .transpose()?,
        after,
        dag_ids: shared.dags_in_scope(&caller),
        ..RunFilter::default()
    };
    let runs = shared
        .store
        .runs(&filter)
        .await
        .map_err(|e| Problem::store(&e))?;
    let next_cursor = runs
        .last()
        .filter(|_| runs.len() as i64 == limit)
        .map(|last| format!("{}.{}", last.logical_date, last.id));
    Ok(Json(RunList {
        runs: runs.iter().map(run).collect(),
        next_cursor,
    }))
}

/// The position a `next_cursor` names: the logical date and row of the last run listed.
fn read_cursor(text: &str) -> Result<(i64, i64), Problem> {
    text.split_once('.')
        .and_then(|(date, id)| Some((date.parse().ok()?, id.parse().ok()?)))
        .ok_or_else(|| {
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "`cursor`: `{text}` is not a cursor this API gave (pass `next_cursor` as it is)"
                ),
            )
        })
}

/// An RFC 3339 instant, or a date (its midnight UTC), as Unix ms.
fn instant(field: &str, text: &str) -> Result<i64, Problem> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .or_else(|_| {
            chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc().timestamp_millis())
        })
        .map_err(|_| {
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("`{field}`: `{text}` is not an RFC 3339 instant (2026-11-24T23:00:00Z) nor a date (2026-11-24)"),
            )
        })
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
    caller: Caller,
    axum::extract::State(shared): State,
    Path(run_id): Path<String>,
) -> Result<Json<RunDetail>, Problem> {
    let record = run_for(&shared, &caller, &run_id).await?;
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

/// The run with exactly this id (404 without one), when the caller's token may see its DAG
/// (403 otherwise).
pub(crate) async fn run_for(
    shared: &Shared,
    caller: &Caller,
    run_id: &str,
) -> Result<RunRecord, Problem> {
    let run = run_named(&shared.store, run_id).await?;
    shared.check_scope(caller, &run.dag_id, Some(&run)).await?;
    Ok(run)
}

/// The run with exactly this id (404 without one).
async fn run_named(store: &ferry_store::Store, run_id: &str) -> Result<RunRecord, Problem> {
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
pub(crate) fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// A run as the API shows it.
pub(crate) fn run(record: &RunRecord) -> Run {
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

/// A task instance as the API shows it.
pub(crate) fn task_instance(record: &TaskInstanceRecord) -> TaskInstance {
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
