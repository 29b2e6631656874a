//! An operator's interventions over HTTP, with the semantics of the CLI's (they share
//! `ferry_scheduler::operations`): clear, rerun from failed, mark, pause. Each needs an
//! `operator` token and is recorded in the event log under the token's name. The daemon serving
//! the API owns the store, so it stops a cleared task's running attempt itself and goes on
//! with the run at once.

use axum::Json;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use ferry_config::Role;
use ferry_scheduler::operations::{self, ClearSelection, OperationError, Operator};
use ferry_store::RunRecord;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::problem::{NeedsOperator, Problem};
use crate::runs::run_for;
use crate::{Shared, State};

/// What to clear in a run. Airflow's defaults: without a body, a dry run of the failed tasks.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ClearBody {
    /// The tasks; empty: every task of the run.
    task_ids: Vec<String>,
    /// Also every task downstream of them.
    include_downstream: bool,
    /// Also every task upstream of them.
    include_upstream: bool,
    /// Only those in `failed` or `upstream_failed` (default true).
    only_failed: bool,
    /// List what would be cleared, clear nothing (default true).
    dry_run: bool,
    /// Go on with the DAG version loaded now rather than the run's own (the tasks it adds run,
    /// those it drops are skipped): the CLI's `--latest-version`.
    latest_version: bool,
    /// Why, for the event log.
    reason: Option<String>,
}

impl Default for ClearBody {
    fn default() -> Self {
        Self {
            task_ids: Vec::new(),
            include_downstream: false,
            include_upstream: false,
            only_failed: true,
            dry_run: true,
            latest_version: false,
            reason: None,
        }
    }
}

/// Why, for the event log.
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ReasonBody {
    /// Why.
    reason: Option<String>,
}

/// A rerun from failed: why, and on which DAG version.
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RerunBody {
    /// Go on with the DAG version loaded now rather than the run's own.
    latest_version: bool,
    /// Why, for the event log.
    reason: Option<String>,
}

/// The state to mark a task with.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MarkBody {
    /// The state to give the task.
    state: MarkState,
    /// Why, for the event log.
    #[serde(default)]
    reason: Option<String>,
}

/// The states a task can be marked with.
#[derive(Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum MarkState {
    /// It did its work.
    Success,
    /// It failed.
    Failed,
    /// It is not to run.
    Skipped,
}

impl MarkState {
    fn as_str(self) -> &'static str {
        match self {
            MarkState::Success => "success",
            MarkState::Failed => "failed",
            MarkState::Skipped => "skipped",
        }
    }
}

/// Pause or unpause a DAG.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DagPatch {
    /// Whether the DAG gets new scheduled runs (runs already made go on).
    is_paused: bool,
    /// Why, for the event log.
    #[serde(default)]
    reason: Option<String>,
}

/// Clears task instances of a run so that they run again (a cleared task gets its full retries
/// again; a finished run is running again). Without a body: a dry run of the failed tasks.
#[utoipa::path(
    post,
    path = "/api/v1/runs/{run_id}/clear",
    params(("run_id" = String, Path, description = "The run's id")),
    request_body(content = Option<ClearBody>, description = "What to clear (optional)"),
    security(("bearer" = [])),
    responses(
        NeedsOperator,
        (status = 200, description = "What was (or, with dry_run, would be) cleared", content_type = "application/json"),
        (status = 404, description = "No such run or task", content_type = "application/problem+json"),
        (status = 409, description = "A running attempt could not be stopped", content_type = "application/problem+json"),
        (status = 422, description = "The body is not as described", content_type = "application/problem+json"),
    )
)]
pub(crate) async fn clear(
    caller: Caller,
    axum::extract::State(shared): State,
    Path(run_id): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, Problem> {
    caller.needs(Role::Operator)?;
    let body: ClearBody = crate::body::optional(&body)?;
    let run = run_for(&shared, &caller, &run_id).await?;
    let selection = ClearSelection {
        tasks: body.task_ids,
        downstream: body.include_downstream,
        upstream: body.include_upstream,
        only_failed: body.only_failed,
    };
    carry_out(
        &shared,
        &run,
        &selection,
        body.dry_run,
        body.latest_version,
        operator(&caller, body.reason),
    )
    .await
}

/// Reruns a run from its failed tasks: every `failed` or `upstream_failed` task and what depends
/// on them, in one call.
#[utoipa::path(
    post,
    path = "/api/v1/runs/{run_id}/rerun-failed",
    params(("run_id" = String, Path, description = "The run's id")),
    request_body(content = Option<RerunBody>, description = "Why, and on which version (optional)"),
    security(("bearer" = [])),
    responses(
        NeedsOperator,
        (status = 200, description = "What was cleared (nothing when no task failed)", content_type = "application/json"),
        (status = 404, description = "No such run", content_type = "application/problem+json"),
        (status = 422, description = "The body is not as described", content_type = "application/problem+json"),
        (status = 409, description = "A running attempt could not be stopped", content_type = "application/problem+json"),
    )
)]
pub(crate) async fn rerun_failed(
    caller: Caller,
    axum::extract::State(shared): State,
    Path(run_id): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, Problem> {
    caller.needs(Role::Operator)?;
    let body: RerunBody = crate::body::optional(&body)?;
    let run = run_for(&shared, &caller, &run_id).await?;
    let selection = operations::rerun_selection(&shared.store, &run)
        .await
        .map_err(refused)?;
    if selection.tasks.is_empty() {
        return Ok(Json(serde_json::json!({
            "run_id": run.run_id,
            "cleared": [],
            "detail": "no failed or upstream_failed task: nothing to rerun",
        })));
    }
    carry_out(
        &shared,
        &run,
        &selection,
        false,
        body.latest_version,
        operator(&caller, body.reason),
    )
    .await
}

/// Cancels a run that has not ended: started tasks become `failed` (a running attempt is
/// stopped), the others `skipped`, and the run `failed`.
#[utoipa::path(
    post,
    path = "/api/v1/runs/{run_id}/cancel",
    params(("run_id" = String, Path, description = "The run's id")),
    request_body(content = Option<ReasonBody>, description = "Why (optional)"),
    security(("bearer" = [])),
    responses(
        NeedsOperator,
        (status = 200, description = "Cancelled; each task changed and its new state", content_type = "application/json"),
        (status = 404, description = "No such run", content_type = "application/problem+json"),
        (status = 409, description = "The run has ended already", content_type = "application/problem+json"),
        (status = 422, description = "The body is not as described", content_type = "application/problem+json"),
    )
)]
pub(crate) async fn cancel(
    caller: Caller,
    axum::extract::State(shared): State,
    Path(run_id): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, Problem> {
    caller.needs(Role::Operator)?;
    let body: ReasonBody = crate::body::optional(&body)?;
    let run = run_for(&shared, &caller, &run_id).await?;
    let changed = operations::cancel(&shared.store, &run, true, &operator(&caller, body.reason))
        .await
        .map_err(refused)?;
    let tasks: serde_json::Map<String, serde_json::Value> = changed
        .into_iter()
        .map(|(task, state)| (task, state.as_str().into()))
        .collect();
    Ok(Json(serde_json::json!({
        "run_id": run.run_id,
        "state": "failed",
        "tasks": tasks,
    })))
}

/// Marks a task instance `success`, `failed` or `skipped` by hand; the tasks downstream of it
/// that were decided without running follow their trigger rules again.
#[utoipa::path(
    post,
    path = "/api/v1/runs/{run_id}/tasks/{task_id}/mark",
    params(
        ("run_id" = String, Path, description = "The run's id"),
        ("task_id" = String, Path, description = "The task's id"),
    ),
    request_body = MarkBody,
    security(("bearer" = [])),
    responses(
        NeedsOperator,
        (status = 200, description = "Marked; the tasks cleared downstream", content_type = "application/json"),
        (status = 404, description = "No such run or task", content_type = "application/problem+json"),
        (status = 409, description = "A running attempt could not be stopped", content_type = "application/problem+json"),
        (status = 422, description = "Not a state a task can be marked with", content_type = "application/problem+json"),
    )
)]
pub(crate) async fn mark(
    caller: Caller,
    axum::extract::State(shared): State,
    Path((run_id, task_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, Problem> {
    caller.needs(Role::Operator)?;
    let body: MarkBody = crate::body::required(&body)?;
    let run = run_for(&shared, &caller, &run_id).await?;
    let dag = operations::dag_of_run(&shared.store, &run)
        .await
        .map_err(refused)?;
    let who = operator(&caller, body.reason);
    let state = body.state.as_str();
    let cleared = operations::mark(&shared.store, &run, &dag, &task_id, state, true, &who)
        .await
        .map_err(refused)?;
    Ok(Json(serde_json::json!({
        "run_id": run.run_id,
        "task_id": task_id,
        "state": state,
        "cleared_downstream": cleared,
    })))
}

/// Pauses or unpauses a DAG: a paused DAG gets no new scheduled runs; runs already made go on.
#[utoipa::path(
    patch,
    path = "/api/v1/dags/{dag_id}",
    params(("dag_id" = String, Path, description = "The DAG's id")),
    request_body = DagPatch,
    security(("bearer" = [])),
    responses(
        NeedsOperator,
        (status = 200, description = "The DAG's pause state, and whether this call changed it", content_type = "application/json"),
        (status = 404, description = "The daemon never loaded a DAG with this id", content_type = "application/problem+json"),
        (status = 422, description = "The body is not as described", content_type = "application/problem+json"),
    )
)]
pub(crate) async fn patch_dag(
    caller: Caller,
    axum::extract::State(shared): State,
    Path(dag_id): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, Problem> {
    caller.needs(Role::Operator)?;
    let body: DagPatch = crate::body::required(&body)?;
    let changed = set_paused(&shared, &caller, &dag_id, body.is_paused, body.reason).await?;
    Ok(Json(serde_json::json!({
        "dag_id": dag_id,
        "is_paused": body.is_paused,
        "changed": changed,
    })))
}

/// Pauses or unpauses a DAG the daemon has loaded (404 otherwise) for `caller`; true when this
/// changed it.
pub(crate) async fn set_paused(
    shared: &Shared,
    caller: &Caller,
    dag_id: &str,
    paused: bool,
    reason: Option<String>,
) -> Result<bool, Problem> {
    let known = shared
        .store
        .latest_dag_versions()
        .await
        .map_err(|e| Problem::store(&e))?;
    if !known.contains_key(dag_id) {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            format!("the daemon never loaded a DAG `{dag_id}`"),
        ));
    }
    shared.check_scope(caller, dag_id, None).await?;
    let who = operator(caller, reason);
    let changed = shared
        .store
        .set_paused(dag_id, paused, who.intervention())
        .await
        .map_err(|e| Problem::store(&e))?;
    shared.store.wake().await.map_err(|e| Problem::store(&e))?;
    Ok(changed)
}

/// The DAG a cleared run goes on with: its own version, or with `latest` the one loaded now
/// and its version id (recorded if `record`, else looked up: `None` when never recorded).
pub(crate) async fn version_to_go_on_with(
    shared: &Shared,
    run: &RunRecord,
    latest: bool,
    record: bool,
) -> Result<(ferry_dag::Dag, Option<Option<i64>>), Problem> {
    if !latest {
        let dag = operations::dag_of_run(&shared.store, run)
            .await
            .map_err(refused)?;
        return Ok((dag, None));
    }
    let loaded = shared.dags.current();
    let served = crate::dags::served(&loaded, &run.dag_id)?;
    let version = if record {
        Some(crate::dags::version_of(&shared.store, served, chrono::Utc::now()).await?)
    } else {
        let hash = ferry_scheduler::engine::content_hash(&served.source);
        shared
            .store
            .dag_version_id(&run.dag_id, &hash)
            .await
            .map_err(|e| Problem::store(&e))?
    };
    Ok((served.dag.clone(), Some(version)))
}

/// Plans a clear of `selection`, and carries it out unless `dry_run`; with `latest`, on the
/// DAG version loaded now (recorded unless `dry_run`).
async fn carry_out(
    shared: &Shared,
    run: &RunRecord,
    selection: &ClearSelection,
    dry_run: bool,
    latest: bool,
    who: Operator,
) -> Result<Json<serde_json::Value>, Problem> {
    let store = &shared.store;
    let (dag, version) = version_to_go_on_with(shared, run, latest, !dry_run).await?;
    let plan = operations::plan_clear(store, run, &dag, version, selection)
        .await
        .map_err(refused)?;
    let answer = if dry_run {
        serde_json::json!({"dry_run": true, "plan": plan})
    } else {
        // The daemon owns the store: its engine stops a cleared attempt that still runs.
        let report = operations::clear(store, run, plan, true, &who)
            .await
            .map_err(refused)?;
        serde_json::json!({"dry_run": false, "report": report})
    };
    Ok(Json(answer))
}

/// The token's name as the event log records it, and why.
pub(crate) fn operator(caller: &Caller, reason: Option<String>) -> Operator {
    Operator {
        actor: format!("api token {}", caller.name),
        reason,
        at: chrono::Utc::now().timestamp_millis(),
    }
}

/// An intervention refused, as an answer.
pub(crate) fn refused(error: OperationError) -> Problem {
    let status = match &error {
        OperationError::Store(e) => return Problem::store(e),
        OperationError::UnknownRun(_) | OperationError::UnknownTask { .. } => StatusCode::NOT_FOUND,
        OperationError::BadMark(_) => StatusCode::UNPROCESSABLE_ENTITY,
        OperationError::UnknownVersion(_)
        | OperationError::Elsewhere { .. }
        | OperationError::DidNotStop(_)
        | OperationError::DroppedTaskRuns(_)
        | OperationError::Ended(..) => StatusCode::CONFLICT,
    };
    Problem::new(status, error.to_string())
}
