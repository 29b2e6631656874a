//! `GET /health`: for a load balancer or an outside watchdog (no token).

use axum::Json;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::State;
use crate::problem::Problem;

/// The daemon answers and its state database does.
#[derive(Serialize, ToSchema)]
pub(crate) struct Health {
    /// `ok`.
    status: &'static str,
}

/// Whether the daemon and its state database answer.
#[utoipa::path(
    get,
    path = "/health",
    responses(
        (status = 200, description = "The daemon and its state database answer", body = Health),
        (status = 503, description = "The state database does not answer", content_type = "application/problem+json"),
    )
)]
pub(crate) async fn health(axum::extract::State(shared): State) -> Result<Json<Health>, Problem> {
    // No detail of the error: this route needs no token (the daemon's log has it).
    shared.store.ping().await.map_err(|_| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the state database does not answer",
        )
    })?;
    Ok(Json(Health { status: "ok" }))
}
