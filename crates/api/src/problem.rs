//! Errors as `application/problem+json` (RFC 9457): a status, a title and a detail that says
//! what to do.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An error answer.
#[derive(Debug)]
pub(crate) struct Problem {
    /// The HTTP status.
    status: StatusCode,
    /// What went wrong, for people.
    detail: String,
}

impl Problem {
    /// `status` with `detail`.
    pub(crate) fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
        }
    }

    /// The state database did not answer (503: try again).
    pub(crate) fn store(error: &ferry_store::StoreError) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the state database did not answer: {error}"),
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "type": "about:blank",
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        let mut response = (self.status, Json(body)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// A path no route has.
pub(crate) async fn no_route(uri: axum::http::Uri) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        format!("no such route: {} (see /api/v1/openapi.json)", uri.path()),
    )
}

/// The refusals of a route that needs a token (for the OpenAPI document).
#[derive(utoipa::IntoResponses)]
pub(crate) enum NeedsToken {
    /// No token, or not a configured one.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized,
}

/// The refusals of a route that needs an operator's token (for the OpenAPI document).
#[derive(utoipa::IntoResponses)]
pub(crate) enum NeedsOperator {
    /// No token, or not a configured one.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized,
    /// The token is not an operator's (nor an admin's).
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden,
}
