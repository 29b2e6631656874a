//! A sync's rows on their way to the stage: source columns mapped to the target's names, keys
//! checked (no NULL), the scope checked, and a hash of each row's values for the diff.

use ferry_executor::connector::ColumnType;
use std::hash::Hasher as _;

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
    /// (two different rows share one with a chance of one in 2^64).
    pub(crate) fn hash(&self, row: &[Value]) -> i64 {
        let mut hasher = XxHash3_64::with_seed(0);
        for (name, value) in self.columns.iter().zip(row) {
            hasher.write(name.as_bytes());
            hasher.write(&[0]);
            write_value(&mut hasher, value);
        }
        i64::from_ne_bytes(hasher.finish().to_ne_bytes())
    }
}

/// Feeds `value` to `hasher`, its kind first and text with its length, so that no two
/// different values (or sequences of them) feed the same bytes.
pub(crate) fn write_value(hasher: &mut impl std::hash::Hasher, value: &Value) {
    match value {
        Value::Null => hasher.write(&[0]),
        Value::Int(n) => {
            hasher.write(&[1]);
            hasher.write(&n.to_le_bytes());
        }
        Value::Float(n) => {
            hasher.write(&[2]);
            hasher.write(&n.to_bits().to_le_bytes());
        }
        Value::Text(text) => {
            hasher.write(&[3]);
            hasher.write(&(text.len() as u64).to_le_bytes());
            hasher.write(text.as_bytes());
        }
        Value::Bool(b) => hasher.write(&[4, u8::from(*b)]),
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
        assert_eq!(shape.hash(&row), shape.hash(&same));
        assert_ne!(shape.hash(&row), shape.hash(&other));
        assert_ne!(shape.hash(&row), shape.hash(&null));
    }
}
