//! Airflow's REST API, the part that on-call scripts and tools written for Composer use, under
//! Airflow's own paths and field names, so that they keep working against ferry:
//!
//! - `/airflow/api/v1`: Airflow 2 (RFC 7807 errors, `limit` 100 by default);
//! - `/airflow/api/v2`: Airflow 3 (`{"detail": …}` errors, `limit` 50 by default,
//!   `logical_date` nullable and accepted as an explicit null).
//!
//! Under either: trigger a DAG run, list and get DAG runs (`~` for every DAG), list and get a
//! run's task instances, clear task instances (`dry_run` and `only_failed` default to true, as
//! Airflow's), clear a whole run, set a task instance's state, get a DAG and patch its
//! `is_paused`. They share the semantics of ferry's own API (and its tokens: Bearer, or Basic
//! with the token's name and the token).

mod handlers;
mod shapes;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::Shared;

/// Which Airflow a client was written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flavour {
    /// Airflow 2, `/api/v1`.
    Airflow2,
    /// Airflow 3, `/api/v2`.
    Airflow3,
}

impl Flavour {
    /// `limit` when none is given.
    fn default_limit(self) -> i64 {
        match self {
            Flavour::Airflow2 => 100,
            Flavour::Airflow3 => 50,
        }
    }
}

/// Airflow 2's routes (mounted at `/airflow/api/v1`) or Airflow 3's (`/airflow/api/v2`).
pub(crate) fn router(flavour: Flavour) -> Router<Arc<Shared>> {
    use axum::routing::{get, post};
    let router = Router::new()
        .route(
            "/dags/{dag_id}",
            get(handlers::get_dag).patch(handlers::patch_dag),
        )
        .route(
            "/dags/{dag_id}/dagRuns",
            get(handlers::list_runs).post(handlers::trigger),
        )
        .route(
            "/dags/{dag_id}/dagRuns/{dag_run_id}",
            get(handlers::get_run),
        )
        .route(
            "/dags/{dag_id}/dagRuns/{dag_run_id}/clear",
            post(handlers::clear_run),
        )
        .route(
            "/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances",
            get(handlers::list_task_instances),
        )
        .route(
            "/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}",
            get(handlers::get_task_instance).patch(handlers::set_task_state),
        )
        .route(
            "/dags/{dag_id}/clearTaskInstances",
            post(handlers::clear_task_instances),
        )
        .fallback(crate::problem::no_route)
        .method_not_allowed_fallback(crate::problem::wrong_method)
        .layer(axum::middleware::map_response(crate::problem::as_problem))
        .layer(axum::Extension(flavour));
    match flavour {
        Flavour::Airflow2 => router,
        Flavour::Airflow3 => router.layer(axum::middleware::map_response(as_detail)),
    }
}

/// Airflow 3's errors: `{"detail": "…"}` as `application/json`, where Airflow 2 (and ferry)
/// answer RFC 7807 problem+json.
async fn as_detail(response: Response) -> Response {
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/problem+json");
    if !is_problem {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let problem: serde_json::Value = axum::body::to_bytes(body, 64 * 1024)
        .await
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    let detail = serde_json::json!({"detail": problem["detail"]});
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    (parts, detail.to_string()).into_response()
}
