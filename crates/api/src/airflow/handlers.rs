//! The Airflow routes: each reads Airflow's request, does what ferry's own route does, and
//! answers in Airflow's shape for the flavour asked.

use std::collections::BTreeSet;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery};
use axum::http::StatusCode;
use axum::{Extension, Json};
use ferry_config::Role;
use ferry_dag::Dag;
use ferry_scheduler::operations::{self, ClearSelection};
use ferry_store::{RunFilter, RunRecord, RunState};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Flavour;
use super::shapes;
use crate::auth::Caller;
use crate::dags::{Ask, served, trigger_for};
use crate::interventions::{operator, refused, set_paused, version_to_go_on_with};
use crate::problem::Problem;
use crate::runs::run_for;
use crate::{Shared, State};

/// The most runs or runs cleared one call covers.
const MOST: i64 = 1000;

/// Airflow's "every DAG" in a path.
const EVERY_DAG: &str = "~";

/// A run, its DAG named in the path (404 when the run is another DAG's).
async fn run_of(
    shared: &Shared,
    caller: &Caller,
    dag_id: &str,
    run_id: &str,
) -> Result<RunRecord, Problem> {
    let run = run_for(shared, caller, run_id).await?;
    if dag_id != EVERY_DAG && run.dag_id != dag_id {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            format!(
                "DAG `{dag_id}` has no run `{run_id}` (it is a run of `{}`)",
                run.dag_id
            ),
        ));
    }
    Ok(run)
}

/// A query string's pairs, decoded (a key may repeat, as `state=failed&state=queued`).
fn pairs(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// A whole number parameter within `range`.
fn number(name: &str, text: &str, range: std::ops::RangeInclusive<i64>) -> Result<i64, Problem> {
    text.parse::<i64>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "`{name}`: `{text}` is not a whole number from {} to {}",
                    range.start(),
                    range.end()
                ),
            )
        })
}

/// An RFC 3339 instant parameter or field, as Unix ms.
fn instant(name: &str, text: &str) -> Result<i64, Problem> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "`{name}`: `{text}` is not an RFC 3339 instant (2026-11-24T00:00:00+00:00)"
                ),
            )
        })
}

/// Lists DAG runs (`~`: of every DAG the token may see), oldest first unless `order_by`
/// starts with `-`; filters: `state` (repeatable), `logical_date_gte`/`_lte` (or Airflow 2's
/// `execution_date_gte`/`_lte`); pages: `limit`, `offset`.
pub(super) async fn list_runs(
    caller: Caller,
    axum::extract::State(shared): State,
    Extension(flavour): Extension<Flavour>,
    Path(dag_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, Problem> {
    let mut filter = RunFilter {
        dag_id: (dag_id != EVERY_DAG).then(|| dag_id.clone()),
        limit: Some(flavour.default_limit()),
        oldest_first: true,
        dag_ids: shared.dags_in_scope(&caller),
        ..RunFilter::default()
    };
    for (key, value) in pairs(query.as_deref()) {
        match key.as_str() {
            "limit" => filter.limit = Some(number("limit", &value, 1..=MOST)?),
            "offset" => filter.offset = Some(number("offset", &value, 0..=i64::MAX)?),
            "state" => filter.states.push(value.parse::<RunState>().map_err(|_| {
                Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("`state`: `{value}` is not a DAG run state (queued, running, success, failed)"),
                )
            })?),
            "logical_date_gte" | "execution_date_gte" => {
                filter.logical_date_from = Some(instant(&key, &value)?);
            }
            "logical_date_lte" | "execution_date_lte" => {
                filter.logical_date_before = Some(instant(&key, &value)? + 1);
            }
            "order_by" => filter.oldest_first = !value.starts_with('-'),
            // Airflow's other filters (start_date_gte, run_type, ...) are not narrowed by.
            _ => {}
        }
    }
    if let Some(id) = &filter.dag_id {
        shared.check_scope(&caller, id, None).await?;
        let known = shared
            .store
            .latest_dag_versions()
            .await
            .map_err(|e| Problem::store(&e))?;
        if !known.contains_key(id) {
            return Err(Problem::new(
                StatusCode::NOT_FOUND,
                format!("the daemon never loaded a DAG `{id}`"),
            ));
        }
    }
    let runs = shared
        .store
        .runs(&filter)
        .await
        .map_err(|e| Problem::store(&e))?;
    let total = shared
        .store
        .count_runs(&filter)
        .await
        .map_err(|e| Problem::store(&e))?;
    Ok(Json(json!({
        "dag_runs": runs.iter().map(|r| shapes::dag_run(flavour, r)).collect::<Vec<_>>(),
        "total_entries": total,
    })))
}

/// A DAG run.
pub(super) async fn get_run(
    caller: Caller,
    axum::extract::State(shared): State,
    Extension(flavour): Extension<Flavour>,
    Path((dag_id, run_id)): Path<(String, String)>,
) -> Result<Json<Value>, Problem> {
    let run = run_of(&shared, &caller, &dag_id, &run_id).await?;
    Ok(Json(shapes::dag_run(flavour, &run)))
}

/// Airflow's trigger body (both flavours' fields; others are ignored, as Airflow 3 does).
#[derive(Default, Deserialize)]
#[serde(default)]
struct TriggerBody {
    dag_run_id: Option<String>,
    logical_date: Option<String>,
    execution_date: Option<String>,
    conf: Option<serde_json::Map<String, Value>>,
    note: Option<String>,
}

/// Triggers a run of the DAG as loaded now: `logical_date` (or none: the latest complete
/// interval) picks the interval as `ferry run --date` does, `conf` is checked against the
/// DAG's parameters, `note` is the event log's reason.
pub(super) async fn trigger(
    caller: Caller,
    axum::extract::State(shared): State,
    Extension(flavour): Extension<Flavour>,
    Path(dag_id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, Problem> {
    caller.needs(Role::Operator)?;
    let body: TriggerBody = crate::body::optional(&body)?;
    let date = match (&body.logical_date, &body.execution_date) {
        (Some(logical), Some(execution)) if logical != execution => {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "`logical_date` and `execution_date` differ: give one",
            ));
        }
        (logical, execution) => logical.clone().or_else(|| execution.clone()),
    };
    let ask = Ask {
        date: date.as_deref(),
        force: false,
        conf: &body.conf.unwrap_or_default(),
        reason: body.note.as_deref(),
        idempotency_key: None,
        run_id: body.dag_run_id.as_deref(),
    };
    let triggered = trigger_for(&shared, &caller, &dag_id, &ask).await?;
    Ok(Json(shapes::dag_run(flavour, &triggered.run)))
}

/// The task instances of a run.
pub(super) async fn list_task_instances(
    caller: Caller,
    axum::extract::State(shared): State,
    Extension(flavour): Extension<Flavour>,
    Path((dag_id, run_id)): Path<(String, String)>,
) -> Result<Json<Value>, Problem> {
    let run = run_of(&shared, &caller, &dag_id, &run_id).await?;
    let dag = operations::dag_of_run(&shared.store, &run).await.ok();
    let mut tasks = shared
        .store
        .task_instances(run.id)
        .await
        .map_err(|e| Problem::store(&e))?;
    tasks.sort_by(|a, b| a.task_id.cmp(&b.task_id));
    Ok(Json(json!({
        "task_instances": tasks
            .iter()
            .map(|t| shapes::task_instance(flavour, &run, t, dag.as_ref()))
            .collect::<Vec<_>>(),
        "total_entries": tasks.len(),
    })))
}

/// A task instance of a run.
pub(super) async fn get_task_instance(
    caller: Caller,
    axum::extract::State(shared): State,
    Extension(flavour): Extension<Flavour>,
    Path((dag_id, run_id, task_id)): Path<(String, String, String)>,
) -> Result<Json<Value>, Problem> {
    let run = run_of(&shared, &caller, &dag_id, &run_id).await?;
    let dag = operations::dag_of_run(&shared.store, &run).await.ok();
    let task = task_of(&shared, &run, &task_id).await?;
    Ok(Json(shapes::task_instance(
        flavour,
        &run,
        &task,
        dag.as_ref(),
    )))
}

async fn task_of(
    shared: &Shared,
    run: &RunRecord,
    task_id: &str,
) -> Result<ferry_store::TaskInstanceRecord, Problem> {
    shared
        .store
        .task_instances(run.id)
        .await
        .map_err(|e| Problem::store(&e))?
        .into_iter()
        .find(|t| t.task_id == task_id)
        .ok_or_else(|| {
            Problem::new(
                StatusCode::NOT_FOUND,
                format!("run `{}` has no task `{task_id}`", run.run_id),
            )
        })
}

/// Airflow's task state change body (Airflow 2: `dry_run` defaults to true).
#[derive(Default, Deserialize)]
#[serde(default)]
struct StateBody {
    new_state: Option<String>,
    dry_run: Option<bool>,
    note: Option<String>,
}

/// Sets a task instance's state (`success`, `failed`, `skipped`) as `mark` does: what is
/// downstream of it and was decided without running follows its trigger rules again.
pub(super) async fn set_task_state(
    caller: Caller,
    axum::extract::State(shared): State,
    Extension(flavour): Extension<Flavour>,
    Path((dag_id, run_id, task_id)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<Json<Value>, Problem> {
    caller.needs(Role::Operator)?;
    let body: StateBody = crate::body::required(&body)?;
    let Some(new_state) = body.new_state else {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "`new_state`: required (success, failed or skipped); ferry keeps no notes",
        ));
    };
    let run = run_of(&shared, &caller, &dag_id, &run_id).await?;
    let dag = operations::dag_of_run(&shared.store, &run)
        .await
        .map_err(refused)?;
    let task = task_of(&shared, &run, &task_id).await?;
    let dry_run = flavour == Flavour::Airflow2 && body.dry_run.unwrap_or(true);
    if !dry_run {
        let who = operator(&caller, body.note);
        operations::mark(&shared.store, &run, &dag, &task_id, &new_state, true, &who)
            .await
            .map_err(refused)?;
    }
    Ok(Json(match flavour {
        Flavour::Airflow2 => shapes::task_reference(&run, &task.task_id),
        Flavour::Airflow3 => {
            let now = task_of(&shared, &run, &task_id).await?;
            json!({
                "task_instances": [shapes::task_instance(flavour, &run, &now, Some(&dag))],
                "total_entries": 1,
            })
        }
    }))
}

/// Airflow's body for clearing a whole run (`dry_run` defaults to true; `only_failed` to
/// false).
#[derive(Default, Deserialize)]
#[serde(default)]
struct ClearRunBody {
    dry_run: Option<bool>,
    only_failed: Option<bool>,
    run_on_latest_version: Option<bool>,
    note: Option<String>,
}

/// Clears a whole run (or only its failed tasks): with `dry_run` (the default) the task
/// instances it would clear; else the run, running again.
pub(super) async fn clear_run(
    caller: Caller,
    axum::extract::State(shared): State,
    Extension(flavour): Extension<Flavour>,
    Path((dag_id, run_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, Problem> {
    caller.needs(Role::Operator)?;
    let body: ClearRunBody = crate::body::optional(&body)?;
    let run = run_of(&shared, &caller, &dag_id, &run_id).await?;
    let selection = ClearSelection {
        only_failed: body.only_failed.unwrap_or(false),
        ..ClearSelection::default()
    };
    let dry_run = body.dry_run.unwrap_or(true);
    let latest = body.run_on_latest_version.unwrap_or(false);
    let cleared = clear(
        &shared,
        &caller,
        flavour,
        &run,
        &selection,
        (dry_run, latest),
        body.note,
    )
    .await?;
    if dry_run {
        return Ok(Json(json!({
            "total_entries": cleared.len(),
            "task_instances": cleared.into_iter().map(|(_, t)| t).collect::<Vec<_>>(),
        })));
    }
    let now = run_of(&shared, &caller, &dag_id, &run_id).await?;
    Ok(Json(shapes::dag_run(flavour, &now)))
}

/// Airflow's body for clearing task instances: of one run (`dag_run_id`), or of the runs whose
/// logical date is between `start_date` and `end_date`.
#[derive(Deserialize)]
#[serde(default)]
struct ClearBody {
    dag_run_id: Option<String>,
    dry_run: bool,
    only_failed: bool,
    only_running: bool,
    task_ids: Option<Vec<Value>>,
    include_upstream: bool,
    include_downstream: bool,
    include_future: bool,
    include_past: bool,
    start_date: Option<String>,
    end_date: Option<String>,
    run_on_latest_version: Option<bool>,
    note: Option<String>,
}

impl Default for ClearBody {
    fn default() -> Self {
        Self {
            dag_run_id: None,
            dry_run: true,
            only_failed: true,
            only_running: false,
            task_ids: None,
            include_upstream: false,
            include_downstream: false,
            include_future: false,
            include_past: false,
            start_date: None,
            end_date: None,
            run_on_latest_version: None,
            note: None,
        }
    }
}

/// Clears task instances as Airflow's `clearTaskInstances` does: a bare call is a dry run of
/// the failed ones. Airflow 2 answers references to the task instances, Airflow 3 the task
/// instances themselves.
pub(super) async fn clear_task_instances(
    caller: Caller,
    axum::extract::State(shared): State,
    Extension(flavour): Extension<Flavour>,
    Path(dag_id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, Problem> {
    caller.needs(Role::Operator)?;
    let body: ClearBody = crate::body::optional(&body)?;
    shared.check_scope(&caller, &dag_id, None).await?;
    for (set, name) in [
        (body.only_running, "only_running"),
        (body.include_future, "include_future"),
        (body.include_past, "include_past"),
    ] {
        if set {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "`{name}`: ferry clears tasks of the runs named (by `dag_run_id` or dates), not of runs before or after them"
                ),
            ));
        }
    }
    // A task id, or Airflow 3's [task id, map index] (ferry has no mapped tasks).
    let tasks: Vec<String> = body
        .task_ids
        .iter()
        .flatten()
        .filter_map(|t| match t {
            Value::String(id) => Some(id.clone()),
            Value::Array(pair) => pair.first().and_then(Value::as_str).map(str::to_string),
            _ => None,
        })
        .collect();
    let runs = match &body.dag_run_id {
        Some(run_id) => vec![run_of(&shared, &caller, &dag_id, run_id).await?],
        None => {
            let filter = RunFilter {
                dag_id: Some(dag_id.clone()),
                logical_date_from: body
                    .start_date
                    .as_deref()
                    .map(|t| instant("start_date", t))
                    .transpose()?,
                logical_date_before: body
                    .end_date
                    .as_deref()
                    .map(|t| instant("end_date", t).map(|ms| ms + 1))
                    .transpose()?,
                limit: Some(MOST),
                oldest_first: true,
                dag_ids: shared.dags_in_scope(&caller),
                ..RunFilter::default()
            };
            shared
                .store
                .runs(&filter)
                .await
                .map_err(|e| Problem::store(&e))?
        }
    };
    let selection = ClearSelection {
        tasks,
        downstream: body.include_downstream,
        upstream: body.include_upstream,
        only_failed: body.only_failed,
    };
    let mut cleared = Vec::new();
    for run in &runs {
        cleared.extend(
            clear(
                &shared,
                &caller,
                flavour,
                run,
                &selection,
                (body.dry_run, body.run_on_latest_version.unwrap_or(false)),
                body.note.clone(),
            )
            .await?,
        );
    }
    Ok(Json(match flavour {
        Flavour::Airflow2 => json!({
            "task_instances": cleared.iter().map(|(reference, _)| reference.clone()).collect::<Vec<_>>(),
        }),
        Flavour::Airflow3 => json!({
            "task_instances": cleared.iter().map(|(_, full)| full.clone()).collect::<Vec<_>>(),
            "total_entries": cleared.len(),
        }),
    }))
}

/// Plans the clear of `selection` in `run` (and carries it out unless `dry_run`, on the DAG
/// version loaded now if `latest`); each task instance concerned, as Airflow 2's reference and
/// as the flavour's task instance (before the clear).
async fn clear(
    shared: &Shared,
    caller: &Caller,
    flavour: Flavour,
    run: &RunRecord,
    selection: &ClearSelection,
    (dry_run, latest): (bool, bool),
    reason: Option<String>,
) -> Result<Vec<(Value, Value)>, Problem> {
    let (dag, version) = version_to_go_on_with(shared, run, latest, !dry_run).await?;
    let plan = operations::plan_clear(&shared.store, run, &dag, version, selection)
        .await
        .map_err(refused)?;
    let planned: BTreeSet<String> = plan.tasks.iter().map(|t| t.task_id.clone()).collect();
    let tasks = shared
        .store
        .task_instances(run.id)
        .await
        .map_err(|e| Problem::store(&e))?;
    let concerned = tasks
        .iter()
        .filter(|t| planned.contains(&t.task_id))
        .map(|t| {
            (
                shapes::task_reference(run, &t.task_id),
                shapes::task_instance(flavour, run, t, Some(&dag)),
            )
        })
        .collect();
    if !dry_run && !plan.tasks.is_empty() {
        operations::clear(&shared.store, run, plan, true, &operator(caller, reason))
            .await
            .map_err(refused)?;
    }
    Ok(concerned)
}

/// A DAG as Airflow shows it.
pub(super) async fn get_dag(
    caller: Caller,
    axum::extract::State(shared): State,
    Extension(flavour): Extension<Flavour>,
    Path(dag_id): Path<String>,
) -> Result<Json<Value>, Problem> {
    dag_answer(&shared, &caller, flavour, &dag_id).await
}

async fn dag_answer(
    shared: &Shared,
    caller: &Caller,
    flavour: Flavour,
    dag_id: &str,
) -> Result<Json<Value>, Problem> {
    let loaded = shared.dags.current();
    let served = served(&loaded, dag_id)?;
    let dag: &Dag = &served.dag;
    caller.may_touch(&dag.id, dag.tree.as_str(), &dag.tags)?;
    let paused = shared
        .store
        .paused_dags()
        .await
        .map_err(|e| Problem::store(&e))?
        .iter()
        .any(|p| p.dag_id == dag.id);
    let has_errors = loaded
        .diagnostics
        .iter()
        .any(|d| d.is_error() && d.dag.as_deref() == Some(dag.id.as_str()));
    Ok(Json(shapes::dag(flavour, dag, paused, has_errors)))
}

/// Airflow's DAG patch: only `is_paused` can change.
#[derive(Deserialize)]
struct DagPatchBody {
    is_paused: bool,
}

/// Pauses or unpauses a DAG (`update_mask`, if given, may only name `is_paused`).
pub(super) async fn patch_dag(
    caller: Caller,
    axum::extract::State(shared): State,
    Extension(flavour): Extension<Flavour>,
    Path(dag_id): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Json<Value>, Problem> {
    caller.needs(Role::Operator)?;
    for (key, value) in pairs(query.as_deref()) {
        if key == "update_mask" && value != "is_paused" {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("`update_mask`: only `is_paused` can be changed, not `{value}`"),
            ));
        }
    }
    let body: DagPatchBody = crate::body::required(&body)?;
    // Airflow answers with the DAG: one not loaded now is 404 before anything changes.
    served(&shared.dags.current(), &dag_id)?;
    set_paused(&shared, &caller, &dag_id, body.is_paused, None).await?;
    dag_answer(&shared, &caller, flavour, &dag_id).await
}
