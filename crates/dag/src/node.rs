//! The YAML document as a tree whose every node knows its line and column.
//!
//! serde-saphyr parses the text (rejecting duplicate keys and expanding `<<` merge keys); this
//! module keeps the result as a [`Node`] tree so that the later typed conversion can be done one
//! piece at a time (every task on its own) and every error can point at the exact line.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// A line and column in a DAG file, both counted from 1. `0:0` means "unknown".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1.
    pub column: u32,
}

impl Position {
    fn of(location: serde_saphyr::Location) -> Self {
        Self {
            line: u32::try_from(location.line()).unwrap_or(u32::MAX),
            column: u32::try_from(location.column()).unwrap_or(u32::MAX),
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One YAML node and where it starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Where the node starts.
    pub position: Position,
    /// What the node holds.
    pub value: Value,
}

/// The value of a [`Node`].
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `~`, `null` or nothing.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An integer too large for `i64`.
    UInt(u64),
    /// A floating-point number.
    Float(f64),
    /// Any other scalar.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in document order.
    Map(Vec<(Key, Node)>),
}

/// A mapping key and where it stands.
#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    /// The key's text.
    pub name: String,
    /// Where the key starts.
    pub position: Position,
}

/// A YAML syntax error: the file is not YAML, or has a duplicate key.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntaxError {
    /// Where the parser stopped.
    pub position: Position,
    /// The parser's message, without the snippet.
    pub message: String,
}

/// Parses YAML text into a positioned tree.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let options = serde_saphyr::options! {
        with_snippet: false,
    };
    let spanned: Spanned<Value> =
        serde_saphyr::from_str_with_options(text, options).map_err(|error| SyntaxError {
            position: error.location().map(Position::of).unwrap_or_default(),
            message: first_line(&error.without_snippet().to_string()),
        })?;
    Ok(Node::from(spanned))
}

/// serde-saphyr appends " at line X column Y" and hints for Rust developers to some messages;
/// positions are reported separately, so keep only the message itself.
fn first_line(message: &str) -> String {
    let line = message.lines().next().unwrap_or(message);
    let line = line.rfind(" at line ").map_or(line, |at| &line[..at]);
    match line.strip_prefix("duplicate mapping key: ") {
        Some(rest) => format!(
            "duplicate key `{}`",
            rest.split(", set ").next().unwrap_or(rest)
        ),
        None => line.to_string(),
    }
}

impl From<Spanned<Value>> for Node {
    fn from(spanned: Spanned<Value>) -> Self {
        Self {
            position: Position::of(spanned.referenced),
            value: spanned.value,
        }
    }
}

impl Node {
    /// The entry `name` of a mapping node.
    pub fn get(&self, name: &str) -> Option<&Node> {
        self.entries()?
            .iter()
            .find(|(key, _)| key.name == name)
            .map(|(_, node)| node)
    }

    /// The key `name` of a mapping node, with its position.
    pub fn key(&self, name: &str) -> Option<&Key> {
        self.entries()?
            .iter()
            .find(|(key, _)| key.name == name)
            .map(|(key, _)| key)
    }

    /// The entries of a mapping node, or `None` for any other node.
    pub fn entries(&self) -> Option<&[(Key, Node)]> {
        match &self.value {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The items of a sequence node, or `None` for any other node.
    pub fn items(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(items) => Some(items),
            _ => None,
        }
    }

    /// The text of a string scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(text) => Some(text),
            _ => None,
        }
    }

    /// Follows a dotted path of map keys and sequence indexes (`env.HOME`, `tasks.3.id`) as far as
    /// it goes, and returns the deepest node reached.
    pub fn descend<'a>(&self, path: impl IntoIterator<Item = &'a str>) -> &Node {
        let mut node = self;
        for segment in path {
            let next = match &node.value {
                Value::Map(_) => node.get(segment),
                Value::Seq(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => None,
            };
            match next {
                Some(next) => node = next,
                None => break,
            }
        }
        node
    }

    /// The node as JSON, for typed conversion with serde.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as Json;
        match &self.value {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Int(i) => Json::from(*i),
            Value::UInt(u) => Json::from(*u),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(Json::Number)
                .unwrap_or_else(|| Json::String(f.to_string())),
            Value::Str(s) => Json::String(s.clone()),
            Value::Seq(items) => Json::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => Json::Object(
                entries
                    .iter()
                    .map(|(key, node)| (key.name.clone(), node.to_json()))
                    .collect(),
            ),
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        Value::deserialize(deserializer)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or(Value::UInt(v), Value::Int))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Value>>()? {
            items.push(Node::from(item));
        }
        Ok(Value::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            let value = map.next_value::<Spanned<Value>>()?;
            entries.push((
                Key {
                    name: key.value,
                    position: Position::of(key.referenced),
                },
                Node::from(value),
            ));
        }
        Ok(Value::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_positions_of_nested_nodes() {
        let root = parse("id: x\ntasks:\n  - id: a\n    type: noop\n").expect("valid YAML");
        let task = root.descend(["tasks", "0"]);
        assert_eq!(task.position.line, 3);
        let kind = task.key("type").expect("type key");
        assert_eq!(kind.position, Position { line: 4, column: 5 });
        assert_eq!(task.get("type").and_then(Node::as_str), Some("noop"));
    }

    #[test]
    fn rejects_duplicate_keys_with_position() {
        let error = parse("id: x\nid: y\n").expect_err("duplicate key");
        assert_eq!(error.position.line, 2);
        assert!(
            error.message.to_lowercase().contains("duplicate"),
            "{}",
            error.message
        );
    }

    #[test]
    fn applies_merge_keys() {
        let root = parse("base: &b {retries: 2}\nt:\n  <<: *b\n  id: a\n").expect("valid YAML");
        assert_eq!(root.descend(["t", "retries"]).value, Value::Int(2));
    }

    #[test]
    fn reports_syntax_errors_with_position() {
        let error = parse("id: x\ntasks: [a, b\n").expect_err("unclosed flow sequence");
        assert!(error.position.line >= 2, "{error:?}");
    }

    #[test]
    fn empty_input_is_null() {
        assert_eq!(parse("").map(|n| n.value), Ok(Value::Null));
    }
}
