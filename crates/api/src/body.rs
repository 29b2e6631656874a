//! JSON request bodies: a bad one is 422 naming the field at fault.

use axum::body::Bytes;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::problem::Problem;

/// A JSON body, or the defaults when there is none (or it is `null`).
pub(crate) fn optional<T: DeserializeOwned + Default>(body: &Bytes) -> Result<T, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    Ok(required::<Option<T>>(body)?.unwrap_or_default())
}

/// A JSON body; a bad one is 422 naming the field.
pub(crate) fn required<T: DeserializeOwned>(body: &Bytes) -> Result<T, Problem> {
    let mut json = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut json).map_err(|error| {
        let path = error.path().to_string();
        let detail = if path == "." {
            format!("the request body: {}", error.inner())
        } else {
            format!("`{path}`: {}", error.inner())
        };
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
    })
}
