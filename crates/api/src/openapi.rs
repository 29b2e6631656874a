//! `GET /api/v1/openapi.json`: the OpenAPI 3 document, generated from the handlers' own
//! declarations (no token: it holds no data).

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{dags, events, health, interventions, metrics, runs, tasks};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "ferry",
        description = "ferry's HTTP API: run state and interventions for on-call."
    ),
    paths(
        health::health,
        metrics::metrics,
        document,
        dags::list,
        dags::detail,
        dags::trigger,
        runs::list,
        runs::detail,
        tasks::detail,
        tasks::logs,
        events::of_run,
        events::all,
        events::stream,
        interventions::clear,
        interventions::rerun_failed,
        interventions::cancel,
        interventions::mark,
        interventions::patch_dag
    ),
    modifiers(&Bearer)
)]
pub(crate) struct ApiDoc;

/// Declares the bearer scheme the routes name.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI 3 document of every route.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    responses((status = 200, description = "The OpenAPI 3 document", content_type = "application/json"))
)]
pub(crate) async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_in_the_document() {
        let document = ApiDoc::openapi();
        for (path, _) in crate::routes() {
            assert!(
                document.paths.paths.contains_key(path),
                "{path} is served but not in the OpenAPI document"
            );
        }
        assert_eq!(document.paths.paths.len(), crate::routes().len());
        let json = serde_json::to_value(&document).expect("a JSON document");
        let clear = &json["paths"]["/api/v1/runs/{run_id}/clear"]["post"]["responses"];
        for status in ["200", "401", "403", "404", "409", "422"] {
            assert!(clear.get(status).is_some(), "{status} missing: {clear}");
        }
        let runs = &json["paths"]["/api/v1/runs"]["get"];
        assert!(runs["responses"].get("401").is_some(), "{runs}");
        assert_eq!(runs["security"][0]["bearer"], serde_json::json!([]));
    }
}
