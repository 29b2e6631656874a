//! ferry's HTTP API, served by `ferry serve` on `[api] listen`: what on-call needs to see a
//! run's state at 3 a.m., behind bearer tokens.
//!
//! - `GET /health`: the daemon and its state database answer (no token);
//! - `GET /metrics`: Prometheus metrics (no token);
//! - `GET /api/v1/dags`, `GET /api/v1/dags/{dag_id}`: the DAGs loaded now, their last and next
//!   runs, tasks and versions; `POST /api/v1/dags/{dag_id}/runs` triggers a run (at most once
//!   per `Idempotency-Key`);
//! - `GET /api/v1/runs`: runs, newest first, by DAG, state and date, a page at a time;
//! - `GET /api/v1/runs/{run_id}`: a run and its task instances;
//! - `GET /api/v1/runs/{run_id}/tasks/{task_id}` and `…/logs`: a task instance with every
//!   attempt, and an attempt's log (tail, byte range, or followed as it grows);
//! - `GET /api/v1/runs/{run_id}/events`, `GET /api/v1/events`, `GET /api/v1/events/stream`: the
//!   event log of a run, of the system, and as server-sent events;
//! - `POST /api/v1/runs/{run_id}/clear`, `…/rerun-failed`, `…/cancel`, `…/tasks/{task_id}/mark`,
//!   `PATCH /api/v1/dags/{dag_id}`: an operator's interventions, as the CLI's;
//! - `GET /api/v1/openapi.json`: the OpenAPI 3 document of every route (no token);
//! - `/airflow/api/v1/…`, `/airflow/api/v2/…`: the part of Airflow 2's and Airflow 3's REST
//!   API that on-call scripts use, in Airflow's shapes (the `airflow` module).
//!
//! Every `/api/v1` answer but the document needs `Authorization: Bearer <token>`, a token whose
//! SHA-256 is configured under `[api.tokens]` (or the admin token made on the first start);
//! triggers and interventions need an `operator` (or `admin`) token, and a token limited to
//! some trees or tags sees and acts only on those DAGs. Errors are `application/problem+json`.

mod airflow;
mod auth;
mod body;
mod dags;
mod events;
mod health;
mod interventions;
pub mod local_token;
mod metrics;
mod openapi;
mod problem;
mod runs;
mod tasks;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::routing::MethodRouter;
use ferry_config::ApiConfig;
use ferry_store::Store;

use crate::auth::Tokens;
pub use crate::dags::{DagCatalog, Loaded, ServedDag};
pub use crate::metrics::Metrics;

/// What every request handler shares.
pub(crate) struct Shared {
    /// The state database.
    store: Store,
    /// The configured tokens.
    tokens: Tokens,
    /// The DAGs the daemon has loaded.
    dags: DagCatalog,
    /// What `/metrics` shows.
    metrics: Arc<Metrics>,
}

impl Shared {
    /// The DAGs loaded now that `caller` may see, or `None` when it may see every DAG.
    fn dags_in_scope(&self, caller: &auth::Caller) -> Option<Vec<String>> {
        (!caller.scope.is_everything()).then(|| {
            self.dags
                .current()
                .dags
                .values()
                .filter(|s| caller.scope.covers(s.dag.tree.as_str(), &s.dag.tags))
                .map(|s| s.dag.id.clone())
                .collect()
        })
    }

    /// Refuses (403) a DAG outside the caller's scope: the DAG as loaded now, else as `run`
    /// recorded it; a token limited to some DAGs may not act on one it cannot place.
    async fn check_scope(
        &self,
        caller: &auth::Caller,
        dag_id: &str,
        run: Option<&ferry_store::RunRecord>,
    ) -> Result<(), problem::Problem> {
        if caller.scope.is_everything() {
            return Ok(());
        }
        if let Some(served) = self.dags.current().dags.get(dag_id) {
            return caller.may_touch(dag_id, served.dag.tree.as_str(), &served.dag.tags);
        }
        let recorded = match run {
            Some(run) => ferry_scheduler::operations::dag_of_run(&self.store, run)
                .await
                .ok(),
            None => None,
        };
        match recorded {
            Some(dag) => caller.may_touch(dag_id, dag.tree.as_str(), &dag.tags),
            None => caller.may_touch(dag_id, "unknown", &[]),
        }
    }
}

/// The API's state, as handlers receive it.
pub(crate) type State = axum::extract::State<Arc<Shared>>;

/// Every route: its path and its handlers (the OpenAPI document must list each).
fn routes() -> Vec<(&'static str, MethodRouter<Arc<Shared>>)> {
    use axum::routing::{get, post};
    vec![
        ("/health", get(health::health)),
        ("/metrics", get(metrics::metrics)),
        ("/api/v1/openapi.json", get(openapi::document)),
        ("/api/v1/dags", get(dags::list)),
        (
            "/api/v1/dags/{dag_id}",
            get(dags::detail).patch(interventions::patch_dag),
        ),
        ("/api/v1/dags/{dag_id}/runs", post(dags::trigger)),
        ("/api/v1/runs", get(runs::list)),
        ("/api/v1/runs/{run_id}", get(runs::detail)),
        ("/api/v1/runs/{run_id}/events", get(events::of_run)),
        ("/api/v1/runs/{run_id}/tasks/{task_id}", get(tasks::detail)),
        (
            "/api/v1/runs/{run_id}/tasks/{task_id}/logs",
            get(tasks::logs),
        ),
        ("/api/v1/events", get(events::all)),
        ("/api/v1/events/stream", get(events::stream)),
        ("/api/v1/runs/{run_id}/clear", post(interventions::clear)),
        ("/api/v1/runs/{run_id}/cancel", post(interventions::cancel)),
        (
            "/api/v1/runs/{run_id}/rerun-failed",
            post(interventions::rerun_failed),
        ),
        (
            "/api/v1/runs/{run_id}/tasks/{task_id}/mark",
            post(interventions::mark),
        ),
    ]
}

/// The API over `store` and the DAGs of `dags`, with the tokens of `config`, counting its
/// requests in `metrics`.
pub fn router(store: Store, config: &ApiConfig, dags: DagCatalog, metrics: Arc<Metrics>) -> Router {
    let shared = Arc::new(Shared {
        store,
        tokens: Tokens::from_config(config),
        dags,
        metrics,
    });
    routes()
        .into_iter()
        .fold(Router::new(), |router, (path, handlers)| {
            router.route(path, handlers)
        })
        .fallback(problem::no_route)
        .method_not_allowed_fallback(problem::wrong_method)
        .layer(axum::middleware::map_response(problem::as_problem))
        .nest(
            "/airflow/api/v1",
            airflow::router(airflow::Flavour::Airflow2),
        )
        .nest(
            "/airflow/api/v2",
            airflow::router(airflow::Flavour::Airflow3),
        )
        .layer(axum::middleware::from_fn(within_deadline))
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            metrics::timed,
        ))
        .with_state(shared)
}

/// How long a request may take to be answered (a followed log or an event stream goes on
/// after its answer has begun).
const REQUEST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// Answers 503 for a request not answered within [`REQUEST_DEADLINE`] (a store that stalls
/// does not hold connections forever).
async fn within_deadline(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    match tokio::time::timeout(REQUEST_DEADLINE, next.run(request)).await {
        Ok(response) => response,
        Err(_) => problem::Problem::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "no answer within {} s (the state database may be slow): try again",
                REQUEST_DEADLINE.as_secs()
            ),
        )
        .into_response(),
    }
}

/// Answers requests on `listener` until `shutdown` is cancelled, on a runtime of its own (one
/// worker thread, at the lowest CPU priority), so that requests never queue ahead of the
/// engine's loop; requests under way then get `grace` to end. The receiver hears when it has stopped, and why if it failed.
pub fn spawn(
    listener: std::net::TcpListener,
    router: Router,
    shutdown: tokio_util::sync::CancellationToken,
    grace: std::time::Duration,
) -> std::io::Result<tokio::sync::oneshot::Receiver<std::io::Result<()>>> {
    let (done, stopped) = tokio::sync::oneshot::channel();
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("ferry-api")
        .on_thread_start(yield_to_the_engine)
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("ferry-api".to_string())
        .spawn(move || {
            yield_to_the_engine();
            let ended = runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                let serving = serve(listener, router, shutdown.clone().cancelled_owned());
                let out_of_time = async {
                    shutdown.cancelled().await;
                    tokio::time::sleep(grace).await;
                };
                tokio::select! {
                    ended = serving => ended,
                    () = out_of_time => Ok(()),
                }
            });
            runtime.shutdown_background();
            let _ = done.send(ended);
        })?;
    Ok(stopped)
}

/// Lowers the calling thread's CPU priority (niceness 9 on Linux: about a tenth of a core's
/// share against the engine's threads), so that where CPU is short the engine's loop and the
/// tasks' supervisors go first; requests are slower then, never refused. Where the system
/// refuses, the thread keeps its priority.
fn yield_to_the_engine() {
    // 23 on the crate's 0–99 scale is niceness 9 (the scale maps onto -20..19, reversed).
    if let Ok(value) = thread_priority::ThreadPriorityValue::try_from(23u8) {
        let _ = thread_priority::set_current_thread_priority(
            thread_priority::ThreadPriority::Crossplatform(value),
        );
    }
}

/// Answers requests on `listener` until `shutdown` completes.
async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt as _;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_request_not_answered_in_time_gets_503() {
        let slow = Router::new()
            .route(
                "/slow",
                axum::routing::get(|| async {
                    tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                    "late"
                }),
            )
            .route("/quick", axum::routing::get(|| async { "quick" }))
            .layer(axum::middleware::from_fn(within_deadline));
        let answer = |path: &'static str| {
            slow.clone()
                .oneshot(Request::get(path).body(Body::empty()).expect("request"))
        };
        assert_eq!(
            answer("/quick").await.expect("answer").status(),
            StatusCode::OK
        );
        let late = answer("/slow").await.expect("answer");
        assert_eq!(late.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(late.headers()["content-type"], "application/problem+json");
    }
}
