//! Durations as DAG files write them: `30s`, `5m`, `1h30m`, `2d`, or a number of seconds.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A non-negative span of time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// A duration of `seconds` seconds.
    pub const fn from_secs(seconds: u64) -> Self {
        Self(std::time::Duration::from_secs(seconds))
    }

    /// Parses `30s`, `5m`, `1h30m`, `1h 30m`, `2d` (a bare number is seconds).
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        if let Ok(seconds) = trimmed.parse::<u64>() {
            return Ok(Self::from_secs(seconds));
        }
        humantime::parse_duration(trimmed)
            .map(Self)
            .map_err(|error| {
                format!(
                    "invalid duration `{text}`: {error} (write e.g. `30s`, `5m`, `1h30m`, `2d`)"
                )
            })
    }

    /// The span as chrono's signed duration, saturating at chrono's limit.
    pub fn to_chrono(self) -> chrono::Duration {
        chrono::Duration::from_std(self.0).unwrap_or(chrono::Duration::MAX)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}",
            humantime::format_duration(self.0)
                .to_string()
                .replace(' ', "")
        )
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as `30s`, `5m`, `1h30m` or a number of seconds")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Ok(Duration::from_secs(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                u64::try_from(v).map(Duration::from_secs).map_err(|_| {
                    E::custom(format!(
                        "invalid duration `{v}`: durations cannot be negative"
                    ))
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                Duration::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(DurationVisitor)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration: `30s`, `5m`, `1h30m`, `2d`, or a number of seconds.",
            "anyOf": [
                { "type": "string", "pattern": "^\\s*(\\d+\\s*[a-zA-Z]+\\s*)+$" },
                { "type": "integer", "minimum": 0 }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_spellings() {
        assert_eq!(Duration::parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(Duration::parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(Duration::parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(Duration::parse("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(Duration::parse("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(Duration::parse("90"), Ok(Duration::from_secs(90)));
    }

    #[test]
    fn explains_bad_input() {
        let error = Duration::parse("5 minuts").expect_err("typo");
        assert!(error.starts_with("invalid duration `5 minuts`"), "{error}");
        assert!(Duration::parse("-5m").is_err());
    }

    #[test]
    fn displays_compactly() {
        assert_eq!(Duration::from_secs(5400).to_string(), "1h30m");
    }
}
