//! ferry's HTTP API, served by `ferry serve` on `[api] listen`: what on-call needs to see a
//! run's state at 3 a.m., behind bearer tokens.
//!
//! - `GET /health`: the daemon and its state database answer (no token);
//! - `GET /api/v1/runs`: runs, newest first, by DAG and state;
//! - `GET /api/v1/runs/{run_id}`: a run and its task instances;
//! - `POST /api/v1/runs/{run_id}/clear`, `…/rerun-failed`, `…/tasks/{task_id}/mark`,
//!   `PATCH /api/v1/dags/{dag_id}`: an operator's interventions, as the CLI's;
//! - `GET /api/v1/openapi.json`: the OpenAPI 3 document of every route (no token).
//!
//! Every `/api/v1` answer but the document needs `Authorization: Bearer <token>`, a token whose
//! SHA-256 is configured under `[api.tokens]`; the interventions need an `operator` (or
//! `admin`) token. Errors are `application/problem+json`.

mod auth;
mod health;
mod interventions;
mod openapi;
mod problem;
mod runs;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::routing::MethodRouter;
use ferry_config::ApiConfig;
use ferry_store::Store;

use crate::auth::Tokens;

/// What every request handler shares.
pub(crate) struct Shared {
    /// The state database.
    store: Store,
    /// The configured tokens.
    tokens: Tokens,
}

/// The API's state, as handlers receive it.
pub(crate) type State = axum::extract::State<Arc<Shared>>;

/// Every route: its path and its handlers (the OpenAPI document must list each).
fn routes() -> Vec<(&'static str, MethodRouter<Arc<Shared>>)> {
    use axum::routing::{get, patch, post};
    vec![
        ("/health", get(health::health)),
        ("/api/v1/openapi.json", get(openapi::document)),
        ("/api/v1/dags/{dag_id}", patch(interventions::patch_dag)),
        ("/api/v1/runs", get(runs::list)),
        ("/api/v1/runs/{run_id}", get(runs::detail)),
        ("/api/v1/runs/{run_id}/clear", post(interventions::clear)),
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

/// The API over `store`, with the tokens of `config`.
pub fn router(store: Store, config: &ApiConfig) -> Router {
    let shared = Arc::new(Shared {
        store,
        tokens: Tokens::from_config(config),
    });
    routes()
        .into_iter()
        .fold(Router::new(), |router, (path, handlers)| {
            router.route(path, handlers)
        })
        .fallback(problem::no_route)
        .method_not_allowed_fallback(problem::wrong_method)
        .layer(axum::middleware::map_response(problem::as_problem))
        .with_state(shared)
}

/// Answers requests on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
