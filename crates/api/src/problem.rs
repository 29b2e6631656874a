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

    /// A store error: a change that lost a race is 409 (look again); else the state database
    /// did not answer (503: try again).
    pub(crate) fn store(error: &ferry_store::StoreError) -> Self {
        if let ferry_store::StoreError::Conflict(why) = error {
            return Self::new(StatusCode::CONFLICT, why.clone());
        }
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

/// A route that does not answer this method.
pub(crate) async fn wrong_method(method: axum::http::Method, uri: axum::http::Uri) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{method} is not an operation of {} (see /api/v1/openapi.json)",
            uri.path()
        ),
    )
}

/// Turns an error answered by axum itself (a body too large, a path that does not decode)
/// into problem+json, its text as the detail.
pub(crate) async fn as_problem(response: Response) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/problem+json");
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let text = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_string())
        .unwrap_or_default();
    Problem::new(status, text).into_response()
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
#[expect(
    dead_code,
    reason = "only the OpenAPI document names them; handlers answer `Problem`"
)]
pub(crate) enum NeedsToken {
    /// No token, or not a configured one.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized,
    /// The state database does not answer: try again.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable,
}

/// The refusals of a route that needs an operator's token (for the OpenAPI document).
#[derive(utoipa::IntoResponses)]
#[expect(
    dead_code,
    reason = "only the OpenAPI document names them; handlers answer `Problem`"
)]
pub(crate) enum NeedsOperator {
    /// No token, or not a configured one.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized,
    /// The token is not an operator's (nor an admin's).
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden,
    /// The state database does not answer: try again.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable,
}
