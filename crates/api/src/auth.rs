//! Bearer tokens: the configuration keeps each token's SHA-256 only; a request's token is
//! hashed and compared in constant time with every configured hash.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use ferry_config::{ApiConfig, Role};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::Shared;
use crate::problem::Problem;

/// The configured tokens' hashes, with their names and roles.
pub(crate) struct Tokens {
    hashes: Vec<(String, [u8; 32], Role, Scope)>,
}

/// The DAGs a token may see and act on: every limit given must hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Scope {
    /// Only DAGs of these trees (all when empty).
    trees: Vec<String>,
    /// Only DAGs with one of these tags (all when empty).
    tags: Vec<String>,
}

impl Scope {
    /// True when the token may see every DAG.
    pub(crate) fn is_everything(&self) -> bool {
        self.trees.is_empty() && self.tags.is_empty()
    }

    /// True when a DAG of `tree` with `tags` is in the scope.
    pub(crate) fn covers(&self, tree: &str, tags: &[String]) -> bool {
        (self.trees.is_empty() || self.trees.iter().any(|t| t == tree))
            && (self.tags.is_empty() || self.tags.iter().any(|t| tags.contains(t)))
    }

    fn shown(&self) -> String {
        let mut limits = Vec::new();
        if !self.trees.is_empty() {
            limits.push(format!("trees {}", self.trees.join(", ")));
        }
        if !self.tags.is_empty() {
            limits.push(format!("tags {}", self.tags.join(", ")));
        }
        limits.join(" and ")
    }
}

impl Tokens {
    /// The tokens of `config` (one whose hash is malformed, which loading the configuration
    /// refuses, is left out).
    pub(crate) fn from_config(config: &ApiConfig) -> Self {
        let hashes = config
            .tokens
            .iter()
            .filter_map(|(name, token)| {
                let hex = token.sha256_hex()?;
                let mut hash = [0u8; 32];
                for (i, byte) in hash.iter_mut().enumerate() {
                    *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
                }
                let scope = Scope {
                    trees: token.trees.clone(),
                    tags: token.tags.clone(),
                };
                Some((name.clone(), hash, token.role, scope))
            })
            .collect();
        Self { hashes }
    }

    /// The name, role and scope of the token whose hash `token` has.
    fn find(&self, token: &str) -> Option<(&str, Role, &Scope)> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Every hash is compared, so the time taken does not tell which one was close.
        let mut found = None;
        for (name, known, role, scope) in &self.hashes {
            if bool::from(known.ct_eq(&hash)) {
                found = Some((name.as_str(), *role, scope));
            }
        }
        found
    }
}

/// A request that carried a configured token: its name (what the event log records) and role.
#[derive(Clone)]
pub(crate) struct Caller {
    /// The token's name in the configuration.
    pub(crate) name: String,
    /// What it may do.
    role: Role,
    /// Which DAGs it may see and act on.
    pub(crate) scope: Scope,
}

impl Caller {
    /// Refuses (403) a caller whose role is below `needed`.
    pub(crate) fn needs(&self, needed: Role) -> Result<(), Problem> {
        if self.role >= needed {
            return Ok(());
        }
        Err(Problem::new(
            StatusCode::FORBIDDEN,
            format!(
                "the token `{}` has the role {}; this needs {} or above",
                self.name,
                self.role.as_str(),
                needed.as_str()
            ),
        ))
    }

    /// Refuses (403) a DAG of `tree` with `tags` outside the token's scope.
    pub(crate) fn may_touch(
        &self,
        dag_id: &str,
        tree: &str,
        tags: &[String],
    ) -> Result<(), Problem> {
        if self.scope.covers(tree, tags) {
            return Ok(());
        }
        Err(Problem::new(
            StatusCode::FORBIDDEN,
            format!(
                "the token `{}` is limited to DAGs of {}; DAG `{dag_id}` is not one",
                self.name,
                self.scope.shown()
            ),
        ))
    }
}

impl FromRequestParts<Arc<Shared>> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        shared: &Arc<Shared>,
    ) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                "no token: send `Authorization: Bearer <token>` with a token configured under [api.tokens]",
            ));
        };
        // The scheme's name is case-insensitive (RFC 9110). Basic is for Airflow's clients:
        // the user is the token's name, the password the token.
        let (scheme, credentials) = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .map(|(scheme, rest)| (scheme.to_ascii_lowercase(), rest.trim()))
            .unwrap_or_default();
        let (user, token) = match scheme.as_str() {
            "bearer" => (None, Some(credentials.to_string())),
            "basic" => match basic(credentials) {
                Some((user, password)) => (Some(user), Some(password)),
                None => (None, None),
            },
            _ => (None, None),
        };
        let found = token
            .filter(|t| !t.is_empty())
            .and_then(|t| {
                shared
                    .tokens
                    .find(&t)
                    .map(|(n, r, s)| (n.to_string(), r, s.clone()))
            })
            .filter(|(name, _, _)| user.as_ref().is_none_or(|user| user == name));
        match found {
            Some((name, role, scope)) => Ok(Caller { name, role, scope }),
            None => Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                "the token is not one configured under [api.tokens] (expected `Authorization: Bearer <token>`, or Basic with the token's name and the token)",
            )),
        }
    }
}

/// The user and password of Basic credentials (`base64(user:password)`).
fn basic(credentials: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credentials)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_known_by_its_hash_only() {
        let config: ApiConfig = toml::from_str(
            r#"
            listen = "127.0.0.1:0"
            [tokens.oncall]
            hash = "sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
            role = "viewer"
            "#,
        )
        .expect("valid");
        let tokens = Tokens::from_config(&config);
        // sha256("secret")
        assert_eq!(
            tokens.find("secret"),
            Some(("oncall", Role::Viewer, &Scope::default()))
        );
        assert_eq!(tokens.find("Secret"), None);
        assert_eq!(
            tokens.find("2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"),
            None
        );
    }

    #[test]
    fn basic_credentials_are_a_user_and_a_password() {
        // base64("oncall:s3:cret")
        assert_eq!(
            basic("b25jYWxsOnMzOmNyZXQ="),
            Some(("oncall".to_string(), "s3:cret".to_string()))
        );
        assert_eq!(basic("not base64!"), None);
    }
}
