//! DAGs: what the daemon has loaded now, their last and next runs, and triggering a run.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use axum::Json;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ferry_config::Role;
use ferry_dag::{Dag, Diagnostic};
use ferry_scheduler::manual::{self, Trigger, TriggerError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::State;
use crate::auth::Caller;
use crate::problem::{NeedsOperator, NeedsToken, Problem};
use crate::runs::{Run, run, time};

/// A DAG the daemon has loaded: its definition and its file's text (what a run records as its
/// version).
#[derive(Clone, Debug)]
pub struct ServedDag {
    /// The DAG.
    pub dag: Dag,
    /// Its file's text.
    pub source: String,
}

/// What the daemon has loaded now: the DAGs it schedules (a DAG whose file broke keeps its last
/// valid version) and every error found in the DAG folders.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    /// The DAGs, by id.
    pub dags: BTreeMap<String, ServedDag>,
    /// Errors and warnings of the DAG files, by file and line.
    pub diagnostics: Vec<Diagnostic>,
}

/// The DAGs the API shows: the daemon replaces them on every reload.
#[derive(Clone, Debug, Default)]
pub struct DagCatalog(Arc<RwLock<Arc<Loaded>>>);

impl DagCatalog {
    /// Shows `loaded` from now on.
    pub fn replace(&self, loaded: Loaded) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(loaded);
    }

    /// What is shown now.
    pub fn current(&self) -> Arc<Loaded> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A DAG in the list.
#[derive(Serialize, ToSchema)]
pub(crate) struct DagSummary {
    /// Its id.
    dag_id: String,
    /// `internal` or `user-facing`.
    tree: String,
    /// For people.
    description: Option<String>,
    /// Who owns it.
    owner: Option<String>,
    /// Its tags.
    tags: Vec<String>,
    /// Its schedule (cron or preset), if it has one.
    schedule: Option<String>,
    /// Its timezone.
    timezone: String,
    /// Whether it gets new scheduled runs.
    is_paused: bool,
    /// Why it was paused, and by whom.
    paused_by: Option<String>,
    /// Its latest run (by logical date).
    last_run: Option<Run>,
    /// When its next scheduled run becomes due (RFC 3339, UTC).
    next_due: Option<String>,
    /// The file it is read from.
    file: String,
    /// Errors in its file now: the version shown is the last valid one.
    #[schema(value_type = Vec<Object>)]
    load_errors: Vec<Diagnostic>,
}

/// The DAGs the daemon has loaded, and errors of files that gave no DAG.
#[derive(Serialize, ToSchema)]
pub(crate) struct DagList {
    /// The DAGs, by id.
    dags: Vec<DagSummary>,
    /// Errors of DAG files that gave no valid DAG (file, line, field, message).
    #[schema(value_type = Vec<Object>)]
    load_errors: Vec<Diagnostic>,
}

/// A task of a DAG.
#[derive(Serialize, ToSchema)]
pub(crate) struct TaskSummary {
    /// Its id.
    task_id: String,
    /// Its `type:` (`command`, `sync`, `bigquery_query`, ...).
    task_type: String,
    /// The tasks it waits for.
    depends_on: Vec<String>,
    /// Its trigger rule.
    trigger_rule: String,
    /// Retries after the first attempt.
    retries: u32,
    /// Its attempt timeout, in seconds.
    timeout_secs: Option<u64>,
    /// Its pool.
    pool: String,
    /// Its priority (higher first).
    priority: i32,
}

/// A recorded version of a DAG's file.
#[derive(Serialize, ToSchema)]
pub(crate) struct DagVersion {
    /// The version's id (runs name it).
    version_id: i64,
    /// The SHA-256 of the file's text.
    content_hash: String,
    /// When this text was first loaded.
    loaded_at: String,
}

/// A DAG with its tasks, edges and versions.
#[derive(Serialize, ToSchema)]
pub(crate) struct DagDetail {
    /// What the list shows.
    #[serde(flatten)]
    summary: DagSummary,
    /// Its tasks, in file order.
    tasks: Vec<TaskSummary>,
    /// Its edges: `[upstream, downstream]`.
    edges: Vec<[String; 2]>,
    /// Its parameters: each one's type as JSON Schema says it, default and description.
    #[schema(value_type = Object)]
    params: BTreeMap<String, serde_json::Value>,
    /// Every version of its file ferry has loaded, newest first.
    versions: Vec<DagVersion>,
}

/// A run to make by hand.
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct TriggerBody {
    /// The date whose data interval to run (`2026-11-24`, or an RFC 3339 instant); without
    /// one, the latest complete interval (or, for a DAG without a schedule, now).
    logical_date: Option<String>,
    /// Parameters, checked against the DAG's declarations.
    #[schema(value_type = Object)]
    conf: serde_json::Map<String, serde_json::Value>,
    /// Run an interval that has not ended yet, or one before the `start_date`.
    force: bool,
    /// Why, for the event log.
    reason: Option<String>,
}

/// Lists the DAGs the daemon has loaded, with their last run, next due run and pause state.
#[utoipa::path(
    get,
    path = "/api/v1/dags",
    security(("bearer" = [])),
    responses(
        NeedsToken,
        (status = 200, description = "The DAGs", body = DagList),
    )
)]
pub(crate) async fn list(
    caller: Caller,
    axum::extract::State(shared): State,
) -> Result<Json<DagList>, Problem> {
    let loaded = shared.dags.current();
    let overview = Overview::read(&shared.store).await?;
    let dags = loaded
        .dags
        .values()
        .filter(|served| {
            caller
                .scope
                .covers(served.dag.tree.as_str(), &served.dag.tags)
        })
        .map(|served| summary(&served.dag, &loaded, &overview))
        .collect();
    let load_errors = loaded
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .filter(|d| {
            d.dag
                .as_ref()
                .is_none_or(|id| !loaded.dags.contains_key(id))
        })
        .filter(|_| caller.scope.is_everything())
        .cloned()
        .collect();
    Ok(Json(DagList { dags, load_errors }))
}

/// A DAG: its tasks, edges, parameters, schedule and version history.
#[utoipa::path(
    get,
    path = "/api/v1/dags/{dag_id}",
    params(("dag_id" = String, Path, description = "The DAG's id")),
    security(("bearer" = [])),
    responses(
        NeedsToken,
        (status = 200, description = "The DAG", body = DagDetail),
        (status = 404, description = "No DAG has this id", content_type = "application/problem+json"),
    )
)]
pub(crate) async fn detail(
    caller: Caller,
    axum::extract::State(shared): State,
    Path(dag_id): Path<String>,
) -> Result<Json<DagDetail>, Problem> {
    let loaded = shared.dags.current();
    let served = served(&loaded, &dag_id)?;
    let dag = &served.dag;
    caller.may_touch(&dag.id, dag.tree.as_str(), &dag.tags)?;
    let overview = Overview::read(&shared.store).await?;
    let versions = shared
        .store
        .dag_versions_of(&dag_id)
        .await
        .map_err(|e| Problem::store(&e))?;
    Ok(Json(DagDetail {
        summary: summary(dag, &loaded, &overview),
        tasks: dag.tasks.iter().map(task).collect(),
        edges: dag
            .tasks
            .iter()
            .flat_map(|t| t.depends_on.iter().map(|up| [up.clone(), t.id.clone()]))
            .collect(),
        params: dag
            .param_types
            .iter()
            .map(|(name, param)| {
                let mut declared = param.kind.schema();
                if let Some(fields) = declared.as_object_mut() {
                    if let Some(default) = &param.default {
                        fields.insert("default".to_string(), default.clone());
                    }
                    if let Some(description) = &param.description {
                        fields.insert("description".to_string(), description.clone().into());
                    }
                }
                (name.clone(), declared)
            })
            .collect(),
        versions: versions
            .into_iter()
            .map(|(version_id, content_hash, at)| DagVersion {
                version_id,
                content_hash,
                loaded_at: time(at),
            })
            .collect(),
    }))
}

/// Makes a manual run of the DAG as loaded now, queued for the engine. With an
/// `Idempotency-Key` header, a repeated request gets the run its first call made (200 and
/// `Idempotent-Replayed: true`), never a second run.
#[utoipa::path(
    post,
    path = "/api/v1/dags/{dag_id}/runs",
    params(
        ("dag_id" = String, Path, description = "The DAG's id"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "The client's key for this request: repeating it returns the same run"),
    ),
    request_body(content = Option<TriggerBody>, description = "The date, parameters and reason (optional)"),
    security(("bearer" = [])),
    responses(
        NeedsOperator,
        (status = 201, description = "The run made", body = Run),
        (status = 200, description = "The run this Idempotency-Key made before", body = Run),
        (status = 404, description = "No DAG has this id", content_type = "application/problem+json"),
        (status = 409, description = "The DAG has a run for that logical date already, or the key was given with another request", content_type = "application/problem+json"),
        (status = 422, description = "The body, a parameter or the date is not as described", content_type = "application/problem+json"),
    )
)]
pub(crate) async fn trigger(
    caller: Caller,
    axum::extract::State(shared): State,
    Path(dag_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    caller.needs(Role::Operator)?;
    let body: TriggerBody = crate::body::optional(&body)?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
                .ok_or_else(|| {
                    Problem::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "`Idempotency-Key`: expected 1 to 255 visible ASCII characters",
                    )
                })?,
        ),
    };
    let ask = Ask {
        date: body.logical_date.as_deref(),
        force: body.force,
        conf: &body.conf,
        reason: body.reason.as_deref(),
        idempotency_key: key,
        run_id: None,
    };
    let triggered = trigger_for(&shared, &caller, &dag_id, &ask).await?;
    let status = if triggered.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut response = (status, Json(run(&triggered.run))).into_response();
    if triggered.replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// What a caller asks of a trigger, as ferry's API and Airflow's read it.
pub(crate) struct Ask<'a> {
    /// The date asked for (none: the latest complete interval).
    pub(crate) date: Option<&'a str>,
    /// Run an interval that has not ended, or one before the `start_date`.
    pub(crate) force: bool,
    /// The parameters given, checked against the DAG's declarations here.
    pub(crate) conf: &'a serde_json::Map<String, serde_json::Value>,
    /// Why, for the event log.
    pub(crate) reason: Option<&'a str>,
    /// The client's key for the request.
    pub(crate) idempotency_key: Option<&'a str>,
    /// The run's id asked for (Airflow's `dag_run_id`).
    pub(crate) run_id: Option<&'a str>,
}

/// Triggers a run of the DAG `dag_id` as loaded now, for `caller`: the DAG must be in its
/// scope, the parameters fit their declarations; the version is recorded and the event log
/// names the token.
pub(crate) async fn trigger_for(
    shared: &crate::Shared,
    caller: &Caller,
    dag_id: &str,
    ask: &Ask<'_>,
) -> Result<manual::Triggered, Problem> {
    let loaded = shared.dags.current();
    let served = served(&loaded, dag_id)?;
    let dag = &served.dag;
    caller.may_touch(&dag.id, dag.tree.as_str(), &dag.tags)?;
    let conf = ferry_dag::params::resolve_values(&dag.id, &dag.param_types, ask.conf)
        .map_err(|why| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, format!("`conf`: {why}")))?;
    let now = chrono::Utc::now();
    let version_id = version_of(&shared.store, served, now).await?;
    let actor = format!("api token {}", caller.name);
    let request = Trigger {
        dag,
        version_id,
        date: ask.date,
        force: ask.force,
        conf: &conf,
        actor: &actor,
        reason: ask.reason,
        idempotency_key: ask.idempotency_key,
        run_id: ask.run_id,
    };
    manual::trigger(&shared.store, &request, now)
        .await
        .map_err(trigger_refused)
}

/// A trigger refused, as an answer: 409 for a logical date or id that has a run (or a key
/// given with another request), 422 for what the request got wrong.
fn trigger_refused(error: TriggerError) -> Problem {
    let status = match &error {
        TriggerError::Store(e) => return Problem::store(e),
        TriggerError::Exists { .. }
        | TriggerError::IdTaken { .. }
        | TriggerError::KeyReused { .. } => StatusCode::CONFLICT,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    Problem::new(status, error.to_string())
}

/// The version id of `served` as recorded in the store (recorded now if it is new).
pub(crate) async fn version_of(
    store: &ferry_store::Store,
    served: &ServedDag,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<i64, Problem> {
    store
        .record_dag_version(
            &served.dag.id,
            &ferry_scheduler::engine::content_hash(&served.source),
            &served.dag.file.display().to_string(),
            &served.source,
            now.timestamp_millis(),
        )
        .await
        .map_err(|e| Problem::store(&e))
}

/// The DAG loaded under `dag_id` (404 without one).
pub(crate) fn served<'a>(loaded: &'a Loaded, dag_id: &str) -> Result<&'a ServedDag, Problem> {
    loaded.dags.get(dag_id).ok_or_else(|| {
        Problem::new(
            StatusCode::NOT_FOUND,
            format!("no DAG `{dag_id}` is loaded (GET /api/v1/dags lists them)"),
        )
    })
}

/// What the store says about every DAG at once.
struct Overview {
    latest: std::collections::HashMap<String, ferry_store::RunRecord>,
    scheduled: std::collections::HashMap<String, i64>,
    paused: std::collections::HashMap<String, ferry_store::PausedDag>,
}

impl Overview {
    async fn read(store: &ferry_store::Store) -> Result<Self, Problem> {
        let latest = store.latest_runs().await.map_err(|e| Problem::store(&e))?;
        let scheduled = store
            .latest_scheduled_dates()
            .await
            .map_err(|e| Problem::store(&e))?;
        let paused = store
            .paused_dags()
            .await
            .map_err(|e| Problem::store(&e))?
            .into_iter()
            .map(|p| (p.dag_id.clone(), p))
            .collect();
        Ok(Self {
            latest,
            scheduled,
            paused,
        })
    }
}

fn summary(dag: &Dag, loaded: &Loaded, overview: &Overview) -> DagSummary {
    let paused = overview.paused.get(&dag.id);
    let latest = overview
        .scheduled
        .get(&dag.id)
        .and_then(|ms| chrono::DateTime::from_timestamp_millis(*ms));
    DagSummary {
        dag_id: dag.id.clone(),
        tree: dag.tree.as_str().to_string(),
        description: dag.description.clone(),
        owner: dag.owner.clone(),
        tags: dag.tags.clone(),
        schedule: dag.schedule.as_ref().map(|s| s.expression().to_string()),
        timezone: dag.timezone.name().to_string(),
        is_paused: paused.is_some(),
        paused_by: paused.map(|p| match &p.reason {
            Some(reason) => format!("{} ({reason})", p.actor),
            None => p.actor.clone(),
        }),
        last_run: overview.latest.get(&dag.id).map(run),
        next_due: ferry_scheduler::due::next_due(dag, latest).map(|at| time(at.timestamp_millis())),
        file: dag.file.display().to_string(),
        load_errors: loaded
            .diagnostics
            .iter()
            .filter(|d| d.is_error() && d.dag.as_deref() == Some(dag.id.as_str()))
            .cloned()
            .collect(),
    }
}

fn task(task: &ferry_dag::Task) -> TaskSummary {
    TaskSummary {
        task_id: task.id.clone(),
        task_type: task.kind.type_name().to_string(),
        depends_on: task.depends_on.clone(),
        trigger_rule: serde_json::to_value(task.trigger_rule)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        retries: task.retry.retries,
        timeout_secs: task.timeout.map(|t| t.0.as_secs()),
        pool: task.pool.clone(),
        priority: task.priority,
    }
}
