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
    // serde would read a struct from an array of its fields too: only an object is one.
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if !matches!(first, Some(b'{' | b'n')) {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the request body: expected a JSON object",
        ));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, serde::Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Body {
        dry_run: bool,
    }

    #[test]
    fn only_an_object_is_a_body() {
        let parse = |text: &'static str| optional::<Body>(&Bytes::from(text));
        assert_eq!(parse("").expect("none"), Body::default());
        assert_eq!(parse("null").expect("null"), Body::default());
        assert_eq!(
            parse(r#"{"dry_run": true}"#).expect("object"),
            Body { dry_run: true }
        );
        for bad in ["[]", "[true]", "1", "\"x\"", "nul"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(required::<Body>(&Bytes::from("null")).is_err());
    }
}
