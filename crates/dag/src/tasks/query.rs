//! `type: query`: runs templated SQL on a named connection, optionally writing the rows of a
//! SELECT into a destination table.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{FieldProblem, TaskType, is_valid_id};

/// Runs templated SQL on a connection (`sqlite`, `postgres`, `mysql`, `bigquery`). Without a
/// `destination`, the SQL is one or more statements, run in one transaction (on BigQuery: one
/// query job, a script when it holds several statements). With one, the SQL is a SELECT whose
/// rows are written into the destination table by its write mode, in one transaction.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryTask {
    /// The connection (defined per environment in ferry's configuration).
    pub connection: String,
    /// The SQL (templated).
    pub sql: String,
    /// Where the rows of the SELECT go.
    #[serde(default)]
    pub destination: Option<Destination>,
    /// BigQuery job labels (besides `ferry_dag`, `ferry_task` and `ferry_run`, which ferry
    /// adds). Values templated.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A table rows are written into, and how.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// `transfer`: the connection written to (a `query` writes on its own connection).
    #[serde(default)]
    pub connection: Option<String>,
    /// The table: `name`, `schema.name`, or on BigQuery `dataset.name` (templated).
    pub table: String,
    /// How rows are written. Default `append`.
    #[serde(default)]
    pub write: WriteMode,
    /// `replace_partition`: the column that holds the partition (a date, usually).
    #[serde(default)]
    pub partition_column: Option<String>,
    /// `replace_partition`: the partition's value (templated). Default `{{ ds }}`, the data
    /// interval's start date.
    #[serde(default)]
    pub partition_value: Option<String>,
    /// `merge`: the columns that identify a row.
    #[serde(default)]
    pub key: Vec<String>,
}

/// How rows are written into a destination table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    /// Add the rows (the table is created from the rows' columns if it does not exist).
    #[default]
    Append,
    /// Replace every row of the table with the new ones.
    Replace,
    /// Replace the rows whose `partition_column` equals `partition_value`.
    ReplacePartition,
    /// Replace rows with the same `key`, add the others (an upsert).
    Merge,
}

impl WriteMode {
    /// The name written in `write:`.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteMode::Append => "append",
            WriteMode::Replace => "replace",
            WriteMode::ReplacePartition => "replace_partition",
            WriteMode::Merge => "merge",
        }
    }
}

/// A table or column name: letters, digits and `_`, dotted parts for schemas and datasets
/// (they are written into SQL as they are, so nothing else is allowed).
pub fn is_valid_table_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|part| {
            part.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
}

impl Destination {
    /// Checks of the write mode's fields.
    pub fn problems(&self, prefix: &str) -> Vec<FieldProblem> {
        let mut problems = Vec::new();
        let field = |name: &str| format!("{prefix}.{name}");
        if !self.table.contains("{{") && !is_valid_table_name(&self.table) {
            problems.push(FieldProblem::invalid(
                field("table"),
                format!(
                    "`{}` is not a table name (letters, digits and `_`, dotted parts)",
                    self.table
                ),
            ));
        }
        let column_problem = |name: &str, column: &str| {
            FieldProblem::invalid(field(name), format!("`{column}` is not a column name"))
        };
        match self.write {
            WriteMode::ReplacePartition => match &self.partition_column {
                None => problems.push(
                    FieldProblem::invalid(
                        field("partition_column"),
                        "`write: replace_partition` needs a `partition_column`",
                    )
                    .with_help("name the column that holds the partition, e.g. `event_date`"),
                ),
                Some(column) if !is_valid_column(column) => {
                    problems.push(column_problem("partition_column", column));
                }
                Some(_) => {}
            },
            WriteMode::Merge => {
                if self.key.is_empty() {
                    problems.push(
                        FieldProblem::invalid(field("key"), "`write: merge` needs a `key`")
                            .with_help("list the columns that identify a row, e.g. `key: [id]`"),
                    );
                }
                for (index, column) in self.key.iter().enumerate() {
                    if !is_valid_column(column) {
                        problems.push(column_problem(&format!("key.{index}"), column));
                    }
                }
            }
            WriteMode::Append | WriteMode::Replace => {}
        }
        if self.write != WriteMode::ReplacePartition
            && (self.partition_column.is_some() || self.partition_value.is_some())
        {
            problems.push(FieldProblem::invalid(
                field("partition_column"),
                format!(
                    "`partition_column` and `partition_value` are used by `write: replace_partition`, not `{}`",
                    self.write.as_str()
                ),
            ));
        }
        if self.write != WriteMode::Merge && !self.key.is_empty() {
            problems.push(FieldProblem::invalid(
                field("key"),
                format!(
                    "`key` is used by `write: merge`, not `{}`",
                    self.write.as_str()
                ),
            ));
        }
        problems
    }

    /// The fields rendered as templates.
    pub fn templates(&self, prefix: &str) -> Vec<(String, &str)> {
        let mut templates = vec![(format!("{prefix}.table"), self.table.as_str())];
        if let Some(value) = &self.partition_value {
            templates.push((format!("{prefix}.partition_value"), value.as_str()));
        }
        templates
    }
}

/// A column name: letters, digits and `_`.
fn is_valid_column(name: &str) -> bool {
    !name.contains('.') && is_valid_table_name(name)
}

impl TaskType for QueryTask {
    fn problems(&self) -> Vec<FieldProblem> {
        let mut problems = Vec::new();
        if !is_valid_id(&self.connection) {
            problems.push(FieldProblem::invalid(
                "connection",
                format!("`{}` is not a valid connection name", self.connection),
            ));
        }
        if self.sql.trim().is_empty() {
            problems.push(FieldProblem::invalid("sql", "the SQL is empty"));
        }
        if let Some(destination) = &self.destination {
            problems.extend(destination.problems("destination"));
            if destination.connection.is_some() {
                problems.push(
                    FieldProblem::invalid(
                        "destination.connection",
                        "a `query` writes on its own connection",
                    )
                    .with_help("to move rows between connections, use `type: transfer`"),
                );
            }
        }
        for name in self.labels.keys() {
            if !is_label(name) {
                problems.push(FieldProblem::invalid(
                    format!("labels.{name}"),
                    format!("`{name}` is not a BigQuery label key (lowercase letters, digits, `_` and `-`, starting with a letter, at most 63)"),
                ));
            }
        }
        problems
    }

    fn templates(&self) -> Vec<(String, &str)> {
        let mut templates = vec![("sql".to_string(), self.sql.as_str())];
        if let Some(destination) = &self.destination {
            templates.extend(destination.templates("destination"));
        }
        for (name, value) in &self.labels {
            templates.push((format!("labels.{name}"), value.as_str()));
        }
        templates
    }
}

/// A BigQuery label key.
fn is_label(name: &str) -> bool {
    name.len() <= 63
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn destination(yaml: &str) -> Destination {
        serde_saphyr::from_str(yaml).expect("a destination")
    }

    #[test]
    fn write_modes_name_their_missing_fields() {
        let merge = destination("{table: app.users, write: merge}");
        let problems = merge.problems("destination");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].field, "destination.key");
        let partition = destination("{table: daily, write: replace_partition}");
        assert_eq!(
            partition.problems("destination")[0].field,
            "destination.partition_column"
        );
        let misplaced = destination("{table: daily, key: [id]}");
        assert_eq!(
            misplaced.problems("destination")[0].field,
            "destination.key"
        );
        let bad = destination("{table: \"daily; DROP TABLE x\"}");
        assert_eq!(bad.problems("destination")[0].field, "destination.table");
        assert!(destination("{table: analytics.daily_events, write: replace_partition, partition_column: event_date}").problems("d").is_empty());
    }
}
