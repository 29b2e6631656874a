//! A configuration value that must never be shown: tokens, webhook URLs, passwords.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A secret string. `Debug`, `Display` and serialization print `********`; only
/// [`Secret::expose`] gives the value, to the code that sends it.
///
/// In a file, a secret is best written as a reference to an environment variable,
/// `"${SLACK_WEBHOOK_URL}"`, or to a file holding it, `"${file:/run/secrets/app_db_url}"`
/// (Docker and Kubernetes secrets; one trailing newline is dropped), resolved when the
/// configuration is loaded: the configuration file holds no secret. A reference to a variable
/// that is not set (or a file that cannot be read) leaves the secret *unset*, and it is shown as
/// such (`<unset: ${SLACK_WEBHOOK_URL}>`), not masked.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: String,
    /// The environment variable it refers to, if written as `${NAME}`.
    reference: Option<String>,
}

/// What a secret looks like wherever it is shown.
pub const MASK: &str = "********";

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self {
            value: value.into(),
            reference: None,
        }
    }

    /// Reads a value as written: `${NAME}` refers to an environment variable (resolved by
    /// [`Secret::resolve`]); anything else is the value itself.
    pub fn written(text: &str) -> Self {
        let reference = text
            .strip_prefix("${")
            .and_then(|rest| rest.strip_suffix('}'))
            .filter(|name| {
                let variable = !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !name.starts_with(|c: char| c.is_ascii_digit());
                let file = name
                    .strip_prefix("file:")
                    .is_some_and(|path| !path.is_empty());
                variable || file
            });
        match reference {
            Some(name) => Self {
                value: String::new(),
                reference: Some(name.to_string()),
            },
            None => Self::new(text),
        }
    }

    /// Takes the value of the environment variable (or file) this secret refers to, if any.
    pub fn resolve(&mut self, environment: &[(String, String)]) {
        if let Some(path) = self
            .reference
            .as_deref()
            .and_then(|r| r.strip_prefix("file:"))
        {
            self.value = std::fs::read_to_string(path)
                .map(|text| {
                    let text = text.strip_suffix('\n').unwrap_or(&text);
                    text.strip_suffix('\r').unwrap_or(text).to_string()
                })
                .unwrap_or_default();
        } else if let Some(name) = &self.reference {
            self.value = environment
                .iter()
                .find(|(variable, _)| variable == name)
                .map(|(_, value)| value.clone())
                .unwrap_or_default();
        }
    }

    /// The value itself, for the code that uses it (never for logs or answers). Empty when the
    /// secret is unset.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// The reference of a secret whose variable is not set (or whose file cannot be read or
    /// is empty): `NAME` or `file:/path`.
    pub fn unset(&self) -> Option<&str> {
        self.reference.as_deref().filter(|_| self.value.is_empty())
    }

    /// What an unset secret refers to, for a sentence: "the environment variable NAME, which
    /// is not set" or "the file /path, which cannot be read or is empty".
    pub fn missing(&self) -> Option<String> {
        self.unset()
            .map(|reference| match reference.strip_prefix("file:") {
                Some(path) => format!("the file {path}, which cannot be read or is empty"),
                None => format!("the environment variable {reference}, which is not set"),
            })
    }

    fn shown(&self) -> String {
        match self.unset() {
            Some(name) => format!("<unset: ${{{name}}}>"),
            None => MASK.to_string(),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown())
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.shown())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|text| Secret::written(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_shows_its_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret} {secret:?}"), "******** ********");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn references_are_resolved_and_an_unset_one_says_so() {
        let environment = vec![("SLACK_URL".to_string(), "https://hooks/x".to_string())];
        let mut set = Secret::written("${SLACK_URL}");
        set.resolve(&environment);
        assert_eq!(
            (set.expose(), set.to_string()),
            ("https://hooks/x", MASK.to_string())
        );
        let mut missing = Secret::written("${NOT_THERE}");
        missing.resolve(&environment);
        assert_eq!(missing.to_string(), "<unset: ${NOT_THERE}>");
        assert_eq!(missing.unset(), Some("NOT_THERE"));
        assert_eq!(Secret::written("${not a name}").expose(), "${not a name}");
    }

    #[test]
    fn file_references_are_read_and_a_missing_file_is_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("db_url");
        std::fs::write(&path, "postgres://app:s3cret@db/app\n").expect("file");
        let mut secret = Secret::written(&format!("${{file:{}}}", path.display()));
        secret.resolve(&[]);
        assert_eq!(secret.expose(), "postgres://app:s3cret@db/app");
        assert_eq!(secret.to_string(), MASK);
        let mut missing = Secret::written("${file:/nonexistent/secret}");
        missing.resolve(&[]);
        assert_eq!(
            missing.missing().as_deref(),
            Some("the file /nonexistent/secret, which cannot be read or is empty")
        );
    }
}
