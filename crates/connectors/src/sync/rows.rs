//! A sync's rows on their way to the stage: source columns mapped to the target's names, keys
//! checked (no NULL), the scope checked, and a hash of each row's values for the diff.

use ferry_executor::connector::ColumnType;

use twox_hash::XxHash3_64;

use crate::transfer::Value;

/// How source rows become target rows.
#[derive(Debug)]
pub(crate) struct Shape {
    /// The target's columns, in the source's order.
    pub columns: Vec<String>,
    /// Positions of the key columns in `columns`.
    pub key: Vec<usize>,
    /// Positions and required values of the scope's columns.
    pub scope: Vec<(usize, String)>,
}

impl Shape {
    /// The shape of rows from a source of `schema` under `renames` (target ← source), keyed
    /// by `key` and limited to `scope` (target names), or what does not fit.
    pub(crate) fn new(
        schema: &[(String, ColumnType)],
        renames: &[(String, String)],
        key: &[String],
        scope: &[(String, String)],
    ) -> Result<Self, String> {
        let source_names: Vec<&str> = schema.iter().map(|(n, _)| n.as_str()).collect();
        for (target, source) in renames {
            if !source_names.contains(&source.as_str()) {
                return Err(format!(
                    "`columns.{target}` maps source column `{source}`, which the query does not return (it returns {})",
                    source_names.join(", ")
                ));
            }
        }
        let columns: Vec<String> = schema
            .iter()
            .map(|(source, _)| {
                renames
                    .iter()
                    .find(|(_, s)| s == source)
                    .map_or_else(|| source.clone(), |(target, _)| target.clone())
            })
            .collect();
        let position = |name: &str, what: &str| {
            columns.iter().position(|c| c == name).ok_or_else(|| {
                format!(
                    "{what} column `{name}` is not among the rows' columns ({})",
                    columns.join(", ")
                )
            })
        };
        let key = key
            .iter()
            .map(|k| position(k, "key"))
            .collect::<Result<Vec<_>, _>>()?;
        let scope = scope
            .iter()
            .map(|(column, value)| Ok((position(column, "scope")?, value.clone())))
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Self {
            columns,
            key,
            scope,
        })
    }

    /// The key of `row`, for people: `class_id=3, day=2026-11-28`.
    pub(crate) fn key_text(&self, row: &[Value]) -> String {
        self.key
            .iter()
            .map(|&i| format!("{}={}", self.columns[i], shown(&row[i])))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Why `row` (row `number` of the source) cannot be synced: a NULL in its key, or a
    /// value outside the scope.
    pub(crate) fn problem(&self, row: &[Value]) -> Option<String> {
        if let Some(&null) = self.key.iter().find(|&&i| row[i] == Value::Null) {
            return Some(format!("key column `{}` is NULL", self.columns[null]));
        }
        self.scope.iter().find_map(|(i, wanted)| {
            let value = shown(&row[*i]);
            (value != *wanted).then(|| {
                format!(
                    "`{}` is {value}, outside the scope ({} = {wanted})",
                    self.columns[*i], self.columns[*i]
                )
            })
        })
    }

    /// A 64-bit hash (XXH3) of the row's column names and values: equal hashes, equal rows
    /// (two different rows share one with a chance of one in 2^64). `bytes` is a buffer the
    /// caller keeps from row to row.
    pub(crate) fn hash(&self, row: &[Value], bytes: &mut Vec<u8>) -> i64 {
        bytes.clear();
        for (name, value) in self.columns.iter().zip(row) {
            bytes.extend_from_slice(name.as_bytes());
            bytes.push(0);
            write_value(bytes, value);
        }
        i64::from_ne_bytes(XxHash3_64::oneshot(bytes).to_ne_bytes())
    }
}

/// Appends `value` to `bytes`, its kind first and text with its length, so that no two
/// different values (or sequences of them) give the same bytes.
pub(crate) fn write_value(bytes: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => bytes.push(0),
        Value::Int(n) => {
            bytes.push(1);
            bytes.extend_from_slice(&n.to_le_bytes());
        }
        Value::Float(n) => {
            bytes.push(2);
            bytes.extend_from_slice(&n.to_bits().to_le_bytes());
        }
        Value::Text(text) => {
            bytes.push(3);
            bytes.extend_from_slice(&(text.len() as u64).to_le_bytes());
            bytes.extend_from_slice(text.as_bytes());
        }
        Value::Bool(b) => bytes.extend_from_slice(&[4, u8::from(*b)]),
    }
}

/// A value as people read it (and as a scope value is written).
pub(crate) fn shown(value: &Value) -> String {
    match value {
        Value::Null => "NULL".to_string(),
        Value::Int(n) => n.to_string(),
        Value::Float(n) => n.to_string(),
        Value::Text(text) => text.clone(),
        Value::Bool(b) => b.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        let schema = vec![
            ("school".to_string(), ColumnType::Int64),
            ("cls".to_string(), ColumnType::String),
            ("avg_points".to_string(), ColumnType::Float64),
        ];
        Shape::new(
            &schema,
            &[("class_id".to_string(), "cls".to_string())],
            &["school".to_string(), "class_id".to_string()],
            &[("school".to_string(), "7".to_string())],
        )
        .expect("a shape")
    }

    #[test]
    fn columns_are_renamed_and_keys_and_scope_checked() {
        let shape = shape();
        assert_eq!(shape.columns, ["school", "class_id", "avg_points"]);
        let row = vec![Value::Int(7), Value::Text("3-A".into()), Value::Float(1.5)];
        assert_eq!(shape.problem(&row), None);
        assert_eq!(shape.key_text(&row), "school=7, class_id=3-A");
        let null = vec![Value::Int(7), Value::Null, Value::Float(1.5)];
        assert_eq!(
            shape.problem(&null).as_deref(),
            Some("key column `class_id` is NULL")
        );
        let outside = vec![Value::Int(8), Value::Text("3-A".into()), Value::Null];
        assert!(
            shape
                .problem(&outside)
                .is_some_and(|p| p.contains("outside the scope"))
        );
        let missing = Shape::new(&[], &[], &["id".to_string()], &[]);
        assert!(missing.is_err());
    }

    #[test]
    fn hashes_change_with_any_value_and_only_then() {
        let shape = shape();
        let row = vec![Value::Int(7), Value::Text("3-A".into()), Value::Float(1.5)];
        let same = row.clone();
        let other = vec![Value::Int(7), Value::Text("3-A".into()), Value::Float(1.25)];
        let null = vec![Value::Int(7), Value::Text("3-A".into()), Value::Null];
        let mut bytes = Vec::new();
        let hash = shape.hash(&row, &mut bytes);
        assert_eq!(hash, shape.hash(&same, &mut bytes));
        assert_ne!(hash, shape.hash(&other, &mut bytes));
        assert_ne!(hash, shape.hash(&null, &mut bytes));
    }

    /// The states kept by earlier versions (which fed the same bytes to a streaming hasher)
    /// still match: an upgrade does not rewrite every row once.
    #[test]
    fn hashes_are_those_of_the_streaming_hasher() {
        use std::hash::Hasher as _;
        let shape = shape();
        let row = vec![Value::Int(7), Value::Text("3-A".into()), Value::Float(1.5)];
        let mut streaming = XxHash3_64::with_seed(0);
        for (name, value) in ["school", "class_id", "avg_points"].iter().zip(&row) {
            streaming.write(name.as_bytes());
            streaming.write(&[0]);
            let mut bytes = Vec::new();
            write_value(&mut bytes, value);
            streaming.write(&bytes);
        }
        let expected = i64::from_ne_bytes(streaming.finish().to_ne_bytes());
        assert_eq!(shape.hash(&row, &mut Vec::new()), expected);
    }
}
