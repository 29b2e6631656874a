//! Bearer tokens: the configuration keeps each token's SHA-256 only; a request's token is
//! hashed and compared in constant time with every configured hash.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use ferry_config::ApiConfig;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::Shared;
use crate::problem::Problem;

/// The configured tokens' hashes, by name.
pub struct Tokens {
    hashes: Vec<(String, [u8; 32])>,
}

impl Tokens {
    /// The tokens of `config` (one whose hash is malformed, which loading the configuration
    /// refuses, is left out).
    pub fn from_config(config: &ApiConfig) -> Self {
        let hashes = config
            .tokens
            .iter()
            .filter_map(|(name, token)| {
                let hex = token.sha256_hex()?;
                let mut hash = [0u8; 32];
                for (i, byte) in hash.iter_mut().enumerate() {
                    *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
                }
                Some((name.clone(), hash))
            })
            .collect();
        Self { hashes }
    }

    /// The name of the token whose hash `token` has.
    fn name_of(&self, token: &str) -> Option<&str> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Every hash is compared, so the time taken does not tell which one was close.
        let mut found = None;
        for (name, known) in &self.hashes {
            if bool::from(known.ct_eq(&hash)) {
                found = Some(name.as_str());
            }
        }
        found
    }
}

/// A request that carried a configured token. Every token may read, which is all the API
/// does so far; the roles will tell writers from readers.
pub(crate) struct Caller;

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
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        match token.and_then(|t| shared.tokens.name_of(t)) {
            Some(_) => Ok(Caller),
            None => Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                "the token is not one configured under [api.tokens] (expected `Authorization: Bearer <token>`)",
            )),
        }
    }
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
        assert_eq!(tokens.name_of("secret"), Some("oncall"));
        assert_eq!(tokens.name_of("Secret"), None);
        assert_eq!(
            tokens.name_of("2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"),
            None
        );
    }
}
