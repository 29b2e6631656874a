//! Run parameters: a plain default (`table: scores`), or a declaration with a type and a
//! default (`days: {type: integer, default: 7}`, `mode: {enum: [full, incremental]}`). Values
//! given when a run is triggered (`--param`) are checked against the declaration then, with a
//! clear error, rather than failing later when a template renders.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde_json::Value;

use crate::diagnostic::suggestion;

/// What values a parameter takes.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamType {
    /// Anything (a parameter given only by its default).
    Any,
    /// Text.
    String,
    /// A whole number.
    Integer,
    /// Any number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// A `YYYY-MM-DD` date.
    Date,
    /// One of these values.
    Enum(Vec<Value>),
}

/// The type names a declaration may give.
pub const TYPE_NAMES: [&str; 5] = ["string", "integer", "number", "boolean", "date"];

/// A declared parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// Its type.
    pub kind: ParamType,
    /// Its default; without one, every run must be given a value.
    pub default: Option<Value>,
    /// For people.
    pub description: Option<String>,
}

/// Fields a declaration may have.
const DECLARATION_FIELDS: [&str; 4] = ["type", "enum", "default", "description"];

impl Param {
    /// Reads a parameter as written under `params:`. A mapping with a `type` or `enum` key is a
    /// declaration; anything else is a plain default of any type.
    pub fn read(written: &Value) -> Result<Self, String> {
        let Some(fields) = written
            .as_object()
            .filter(|fields| fields.contains_key("type") || fields.contains_key("enum"))
        else {
            return Ok(Self {
                kind: ParamType::Any,
                default: Some(written.clone()),
                description: None,
            });
        };
        if let Some(unknown) = fields
            .keys()
            .find(|key| !DECLARATION_FIELDS.contains(&key.as_str()))
        {
            let hint = suggestion(unknown, DECLARATION_FIELDS)
                .map_or_else(String::new, |hint| format!("; {hint}"));
            return Err(format!(
                "unknown field `{unknown}` in a parameter declaration (type, enum, default, description){hint}"
            ));
        }
        let kind = match (fields.get("type"), fields.get("enum")) {
            (_, Some(Value::Array(values))) if !values.is_empty() => {
                ParamType::Enum(values.clone())
            }
            (_, Some(_)) => return Err("`enum` must be a non-empty list of values".to_string()),
            (Some(Value::String(name)), None) => match name.as_str() {
                "string" => ParamType::String,
                "integer" => ParamType::Integer,
                "number" => ParamType::Number,
                "boolean" => ParamType::Boolean,
                "date" => ParamType::Date,
                other => {
                    let hint = suggestion(other, TYPE_NAMES).unwrap_or_else(|| {
                        format!("types: {}, or `enum: [...]`", TYPE_NAMES.join(", "))
                    });
                    return Err(format!("unknown parameter type `{other}`; {hint}"));
                }
            },
            (Some(_), None) => return Err("`type` must be a type name".to_string()),
            (None, None) => unreachable!("a declaration has a type or an enum"),
        };
        let param = Self {
            kind,
            default: fields.get("default").cloned(),
            description: fields
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_string),
        };
        if let Some(default) = &param.default {
            param
                .check(default)
                .map_err(|why| format!("its default {why}"))?;
        }
        Ok(param)
    }

    /// Whether `value` fits the type; the error says why not (`is not an integer`).
    pub fn check(&self, value: &Value) -> Result<(), String> {
        let fits = match &self.kind {
            ParamType::Any => true,
            ParamType::String => value.is_string(),
            ParamType::Integer => value.is_i64() || value.is_u64(),
            ParamType::Number => value.is_number(),
            ParamType::Boolean => value.is_boolean(),
            ParamType::Date => value
                .as_str()
                .is_some_and(|text| NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok()),
            ParamType::Enum(values) => values.contains(value),
        };
        if fits {
            Ok(())
        } else {
            Err(format!("{} is not {}", shown(value), self.kind.described()))
        }
    }

    /// The value of `--param name=TEXT`, read as this type (a string stays text; others are
    /// read as JSON first).
    pub fn parse(&self, text: &str) -> Result<Value, String> {
        let value = match &self.kind {
            ParamType::String | ParamType::Date => Value::String(text.to_string()),
            _ => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string())),
        };
        self.check(&value)?;
        Ok(value)
    }

    /// A value of this type, to check templates with when there is no default.
    pub fn sample(&self) -> Value {
        if let Some(default) = &self.default {
            return default.clone();
        }
        match &self.kind {
            ParamType::Any | ParamType::String => Value::String("sample".to_string()),
            ParamType::Integer | ParamType::Number => Value::from(1),
            ParamType::Boolean => Value::Bool(true),
            ParamType::Date => Value::String("1970-01-01".to_string()),
            ParamType::Enum(values) => values[0].clone(),
        }
    }
}

impl ParamType {
    /// The declaration as JSON Schema would say it: `{"type": "integer"}`, `{"enum": [...]}`,
    /// `{}` for anything.
    pub fn schema(&self) -> Value {
        let name = match self {
            ParamType::Any => return Value::Object(serde_json::Map::new()),
            ParamType::Enum(values) => return serde_json::json!({"enum": values}),
            ParamType::String => "string",
            ParamType::Integer => "integer",
            ParamType::Number => "number",
            ParamType::Boolean => "boolean",
            ParamType::Date => return serde_json::json!({"type": "string", "format": "date"}),
        };
        serde_json::json!({"type": name})
    }

    fn described(&self) -> String {
        match self {
            ParamType::Any => "anything".to_string(),
            ParamType::String => "a string".to_string(),
            ParamType::Integer => "an integer".to_string(),
            ParamType::Number => "a number".to_string(),
            ParamType::Boolean => "a boolean (true or false)".to_string(),
            ParamType::Date => "a date (YYYY-MM-DD)".to_string(),
            ParamType::Enum(values) => format!(
                "one of {}",
                values.iter().map(shown).collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

fn shown(value: &Value) -> String {
    match value {
        Value::String(text) => format!("`{text}`"),
        other => format!("`{other}`"),
    }
}

/// The parameters of a new run: the defaults, overridden by `given` (`name`, text as typed on
/// the command line), each checked against its declaration. Every problem is named.
pub fn resolve(
    dag_id: &str,
    declared: &BTreeMap<String, Param>,
    given: &[(String, String)],
) -> Result<serde_json::Map<String, Value>, String> {
    resolve_with(
        dag_id,
        declared,
        given,
        |param, text| param.parse(text),
        |name| format!("give it with `--param {name}=...`"),
    )
}

/// The parameters of a new run given as a JSON object (an HTTP trigger's `conf`): the
/// defaults, overridden by `given`, each value checked against its declaration.
pub fn resolve_values(
    dag_id: &str,
    declared: &BTreeMap<String, Param>,
    given: &serde_json::Map<String, Value>,
) -> Result<serde_json::Map<String, Value>, String> {
    let given: Vec<(String, Value)> = given.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    resolve_with(
        dag_id,
        declared,
        &given,
        |param, value| param.check(value).map(|()| value.clone()),
        |name| format!("give it in `conf` (`{{\"{name}\": ...}}`)"),
    )
}

fn resolve_with<T>(
    dag_id: &str,
    declared: &BTreeMap<String, Param>,
    given: &[(String, T)],
    read: impl Fn(&Param, &T) -> Result<Value, String>,
    how_to_give: impl Fn(&str) -> String,
) -> Result<serde_json::Map<String, Value>, String> {
    let mut conf = serde_json::Map::new();
    let mut problems = Vec::new();
    for (name, given) in given {
        let Some(param) = declared.get(name) else {
            let names: Vec<&str> = declared.keys().map(String::as_str).collect();
            let hint = suggestion(name, names.iter().copied())
                .unwrap_or_else(|| format!("declared: {}", names.join(", ")));
            problems.push(format!("DAG `{dag_id}` has no parameter `{name}` ({hint})"));
            continue;
        };
        match read(param, given) {
            Ok(value) => {
                conf.insert(name.clone(), value);
            }
            Err(why) => problems.push(format!("parameter `{name}`: {why}")),
        }
    }
    for (name, param) in declared {
        if param.default.is_none() && !conf.contains_key(name) {
            problems.push(format!(
                "parameter `{name}` has no default: {}",
                how_to_give(name)
            ));
        }
    }
    if problems.is_empty() {
        Ok(conf)
    } else {
        Err(problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn plain_defaults_and_declarations() {
        assert_eq!(
            Param::read(&json!("scores")).expect("plain").kind,
            ParamType::Any
        );
        // A mapping without `type` or `enum` is a plain default.
        assert_eq!(
            Param::read(&json!({"a": 1})).expect("plain").default,
            Some(json!({"a": 1}))
        );
        let days = Param::read(&json!({"type": "integer", "default": 7})).expect("declared");
        assert_eq!(days.kind, ParamType::Integer);
        assert_eq!(days.parse("14"), Ok(json!(14)));
        assert_eq!(
            days.parse("seven"),
            Err("`seven` is not an integer".to_string())
        );
        let mode = Param::read(&json!({"enum": ["full", "incremental"]})).expect("enum");
        assert_eq!(
            mode.parse("partial"),
            Err("`partial` is not one of `full`, `incremental`".to_string())
        );
        let day = Param::read(&json!({"type": "date"})).expect("date");
        assert_eq!(day.parse("2026-11-24"), Ok(json!("2026-11-24")));
        assert!(day.parse("24/11/2026").is_err());
        assert_eq!(
            Param::read(&json!({"type": "integr"})),
            Err("unknown parameter type `integr`; did you mean `integer`?".to_string())
        );
        assert_eq!(
            Param::read(&json!({"type": "integer", "default": "x"})),
            Err("its default `x` is not an integer".to_string())
        );
    }

    #[test]
    fn a_run_gets_checked_values_and_names_every_problem() {
        let declared = BTreeMap::from([
            (
                "days".to_string(),
                Param::read(&json!({"type": "integer", "default": 7})).expect("days"),
            ),
            (
                "day".to_string(),
                Param::read(&json!({"type": "date"})).expect("day"),
            ),
        ]);
        let given = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(n, v)| ((*n).to_string(), (*v).to_string()))
                .collect()
        };
        assert_eq!(
            resolve("d", &declared, &given(&[("day", "2026-11-24")])),
            Ok(serde_json::Map::from_iter([(
                "day".to_string(),
                json!("2026-11-24")
            )]))
        );
        assert_eq!(
            resolve("d", &declared, &given(&[("days", "x"), ("dais", "1")])),
            Err("parameter `days`: `x` is not an integer; DAG `d` has no parameter `dais` (did you mean `days`?); parameter `day` has no default: give it with `--param day=...`".to_string())
        );
    }

    #[test]
    fn a_json_conf_is_checked_as_given_not_as_text() {
        let declared = BTreeMap::from([
            (
                "days".to_string(),
                Param::read(&json!({"type": "integer", "default": 7})).expect("days"),
            ),
            (
                "day".to_string(),
                Param::read(&json!({"type": "date"})).expect("day"),
            ),
        ]);
        let conf = |value: serde_json::Value| value.as_object().cloned().expect("object");
        assert_eq!(
            resolve_values(
                "d",
                &declared,
                &conf(json!({"day": "2026-11-24", "days": 3}))
            ),
            Ok(conf(json!({"day": "2026-11-24", "days": 3})))
        );
        // "3" is text, not an integer: a JSON body says what it means.
        assert_eq!(
            resolve_values("d", &declared, &conf(json!({"days": "3"}))),
            Err("parameter `days`: `3` is not an integer; parameter `day` has no default: give it in `conf` (`{\"day\": ...}`)".to_string())
        );
    }
}
