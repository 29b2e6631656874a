//! `type: reverse_sync`: rows of a query (the warehouse's aggregates) written into a table of
//! the application's database by key, diffed against what was synced last, staged and published
//! in one transaction.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{FieldProblem, QUERY_KINDS, SQL_KINDS, TaskType, is_valid_id, is_valid_table_name};

/// Writes the rows of `source.sql` into `target.table` by `key` and `mode`. Only rows whose
/// values changed since the last sync are written; everything is staged first and published
/// in one transaction of the target database, so the application sees all of a sync or none
/// of it. Counts (inserted, updated, deleted, unchanged, rejected) are recorded on the attempt.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReverseSyncTask {
    /// Where the rows come from: a SELECT on any SQL or BigQuery connection.
    pub source: SyncSource,
    /// The application's table the rows go into. It must exist: the application owns its
    /// schema, ferry never creates or alters it.
    pub target: SyncTarget,
    /// The columns that identify a row (in the target's names). Required except for
    /// `mode: append`. The target should have a unique index on them.
    #[serde(default)]
    pub key: Vec<String>,
    /// How rows are written. Default `upsert`.
    #[serde(default)]
    pub mode: SyncMode,
    /// Target column → source column, where the names differ. Default: every source column
    /// into the target column of the same name.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// `mirror`: only target rows whose columns equal these values (templated) are compared
    /// and may be deleted, and every source row must have them. For example one school, or
    /// the data interval's day (`day: "{{ ds }}"`). Each scope column must be in `key`.
    #[serde(default)]
    pub scope: BTreeMap<String, String>,
    /// `mirror`: the most rows one sync may delete, as a count (`500`) or a share of the
    /// target's rows in scope (`10%`). Default `10%`. Exceeded: the task fails before
    /// anything is written.
    #[serde(default)]
    pub max_delete: Option<Limit>,
    /// The most source rows the target may reject (a constraint, a type) while the task
    /// still succeeds, as a count or a share of the rows read. Default `0`.
    #[serde(default)]
    pub max_rejected: Option<Limit>,
    /// Rows per batch read and staged. Default 10,000.
    #[serde(default)]
    pub batch_size: Option<u32>,
    /// A source column that moves forward whenever a row changes: an `updated_at` timestamp
    /// or a number every change raises. A sync then reads only the rows whose value is at or
    /// past the highest one it read last time, so a rerun costs what changed. A change that
    /// does not move this column, or leaves it NULL, is not read. Not with `mode: mirror`,
    /// which must read every row to know which left the source.
    #[serde(default)]
    pub incremental: Option<String>,
}

/// The source of a sync.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncSource {
    /// The connection (`bigquery`, `postgres`, `mysql`, `sqlite`).
    pub connection: String,
    /// A SELECT (templated).
    pub sql: String,
}

/// The target of a sync.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncTarget {
    /// The connection (`postgres`, `mysql`, `sqlite`).
    pub connection: String,
    /// The table: `name` or `schema.name` (templated).
    pub table: String,
}

/// How a sync writes rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// Insert new keys, update changed ones.
    #[default]
    Upsert,
    /// Update changed rows whose key is in the target; a source row whose key is not there is
    /// rejected ("no row with this key").
    Update,
    /// Insert rows whose key is not in the target; rows already there are left as they are
    /// (counted as unchanged).
    Insert,
    /// Insert every row (no key, no diff).
    Append,
    /// Upsert, and delete the target rows in `scope` whose key left the source (guarded by
    /// `max_delete`).
    Mirror,
}

impl SyncMode {
    /// The name written in `mode:`.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncMode::Upsert => "upsert",
            SyncMode::Update => "update",
            SyncMode::Insert => "insert",
            SyncMode::Append => "append",
            SyncMode::Mirror => "mirror",
        }
    }
}

/// A limit: a count of rows, or a percentage written `10%`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Limit {
    /// A number of rows.
    Count(u64),
    /// A share, written like `10%` or `0.5%`.
    Share(String),
}

/// A limit, checked: a count, or a share between 0 and 100 percent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Threshold {
    /// At most this many rows.
    Count(u64),
    /// At most this percentage of the rows.
    Percent(f64),
}

impl Limit {
    /// The limit, or what is wrong with it.
    pub fn threshold(&self) -> Result<Threshold, String> {
        match self {
            Limit::Count(count) => Ok(Threshold::Count(*count)),
            Limit::Share(text) => text
                .trim()
                .strip_suffix('%')
                .and_then(|n| n.trim().parse::<f64>().ok())
                .filter(|p| (0.0..=100.0).contains(p))
                .map(Threshold::Percent)
                .ok_or_else(|| {
                    format!("`{text}` is neither a count of rows nor a percentage like `10%`")
                }),
        }
    }
}

impl Threshold {
    /// The most rows allowed out of `total`.
    pub fn allowed(self, total: u64) -> u64 {
        match self {
            Threshold::Count(count) => count,
            Threshold::Percent(percent) => (total as f64 * percent / 100.0).floor() as u64,
        }
    }
}

impl std::fmt::Display for Threshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Threshold::Count(count) => write!(f, "{count}"),
            Threshold::Percent(percent) => write!(f, "{percent}%"),
        }
    }
}

/// The default `max_delete` of a mirror.
pub const DEFAULT_MAX_DELETE: Threshold = Threshold::Percent(10.0);

/// A column name: letters, digits and `_`.
fn is_column(name: &str) -> bool {
    !name.contains('.') && is_valid_table_name(name)
}

impl TaskType for ReverseSyncTask {
    fn problems(&self) -> Vec<FieldProblem> {
        let mut problems = Vec::new();
        for (field, name) in [
            ("source.connection", &self.source.connection),
            ("target.connection", &self.target.connection),
        ] {
            if !is_valid_id(name) {
                problems.push(FieldProblem::invalid(
                    field,
                    format!("`{name}` is not a valid connection name"),
                ));
            }
        }
        if self.source.sql.trim().is_empty() {
            problems.push(FieldProblem::invalid("source.sql", "the SQL is empty"));
        }
        if !self.target.table.contains("{{") && !is_valid_table_name(&self.target.table) {
            problems.push(FieldProblem::invalid(
                "target.table",
                format!(
                    "`{}` is not a table name (letters, digits and `_`, dotted parts)",
                    self.target.table
                ),
            ));
        }
        if self.mode == SyncMode::Append {
            if !self.key.is_empty() {
                problems.push(FieldProblem::invalid(
                    "key",
                    "`mode: append` inserts every row and uses no `key`",
                ));
            }
        } else if self.key.is_empty() {
            problems.push(
                FieldProblem::invalid(
                    "key",
                    format!("`mode: {}` needs a `key`", self.mode.as_str()),
                )
                .with_help(
                    "list the target columns that identify a row, e.g. `key: [class_id, day]`",
                ),
            );
        }
        for (index, column) in self.key.iter().enumerate() {
            if !is_column(column) {
                problems.push(FieldProblem::invalid(
                    format!("key.{index}"),
                    format!("`{column}` is not a column name"),
                ));
            }
        }
        for (target, source) in &self.columns {
            if !is_column(target) || !is_column(source) {
                problems.push(FieldProblem::invalid(
                    format!("columns.{target}"),
                    format!("`{target}: {source}` does not map a column name to a column name"),
                ));
            }
        }
        for column in self.scope.keys() {
            if !is_column(column) {
                problems.push(FieldProblem::invalid(
                    format!("scope.{column}"),
                    format!("`{column}` is not a column name"),
                ));
            } else if !self.key.contains(column) {
                // Else a row of another scope with the same rest of key would be updated into
                // this one.
                problems.push(
                    FieldProblem::invalid(
                        format!("scope.{column}"),
                        format!("scope column `{column}` must be part of the `key`"),
                    )
                    .with_help(format!("add `{column}` to `key`")),
                );
            }
        }
        if self.mode != SyncMode::Mirror {
            if !self.scope.is_empty() {
                problems.push(FieldProblem::invalid(
                    "scope",
                    format!(
                        "`scope` limits what a `mirror` deletes; `mode: {}` deletes nothing",
                        self.mode.as_str()
                    ),
                ));
            }
            if self.max_delete.is_some() {
                problems.push(FieldProblem::invalid(
                    "max_delete",
                    format!(
                        "`max_delete` guards a `mirror`; `mode: {}` deletes nothing",
                        self.mode.as_str()
                    ),
                ));
            }
        }
        for (field, limit) in [
            ("max_delete", &self.max_delete),
            ("max_rejected", &self.max_rejected),
        ] {
            if let Some(Err(problem)) = limit.as_ref().map(Limit::threshold) {
                problems.push(FieldProblem::invalid(field, problem));
            }
        }
        if let Some(column) = &self.incremental {
            if !is_column(column) {
                problems.push(FieldProblem::invalid(
                    "incremental",
                    format!("`{column}` is not a column name"),
                ));
            } else if self.mode == SyncMode::Mirror {
                problems.push(FieldProblem::invalid(
                    "incremental",
                    "a `mirror` reads every row to know which left the source; `incremental` reads only those that changed",
                ));
            } else if self.mode == SyncMode::Append {
                problems.push(FieldProblem::invalid(
                    "incremental",
                    "`append` inserts every row it reads, and an incremental sync reads the rows at its mark again: they would be appended twice",
                ));
            } else if !self.columns.values().any(|source| source == column)
                && (self.key.contains(column) || self.scope.contains_key(column))
            {
                problems.push(
                    FieldProblem::invalid(
                        "incremental",
                        format!("`{column}` is ferry's cursor, not written into the target, so it cannot be part of `key` or `scope`"),
                    )
                    .with_help(format!("to write it too, map it: `columns: {{{column}: {column}}}`")),
                );
            }
        }
        if self.batch_size == Some(0) {
            problems.push(FieldProblem::invalid(
                "batch_size",
                "a batch holds at least one row",
            ));
        }
        problems
    }

    fn templates(&self) -> Vec<(String, &str)> {
        let mut templates = vec![
            ("source.sql".to_string(), self.source.sql.as_str()),
            ("target.table".to_string(), self.target.table.as_str()),
        ];
        for (column, value) in &self.scope {
            templates.push((format!("scope.{column}"), value.as_str()));
        }
        templates
    }
}

impl ReverseSyncTask {
    /// The connection kinds the source may be.
    pub fn source_kinds(&self) -> &'static [&'static str] {
        QUERY_KINDS
    }

    /// The connection kinds the target may be.
    pub fn target_kinds(&self) -> &'static [&'static str] {
        SQL_KINDS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(yaml: &str) -> ReverseSyncTask {
        serde_saphyr::from_str(yaml).expect("a reverse_sync task")
    }

    const BASE: &str = "source: {connection: warehouse, sql: SELECT 1}\ntarget: {connection: app, table: scores}\n";

    #[test]
    fn modes_name_their_missing_and_misplaced_fields() {
        let problems = task(BASE).problems();
        assert_eq!(problems[0].field, "key", "{problems:?}");
        let fine = task(&format!(
            "{BASE}key: [class_id, day]\nmode: mirror\nscope: {{day: '{{{{ ds }}}}'}}\nmax_delete: 5%"
        ));
        assert!(fine.problems().is_empty(), "{:?}", fine.problems());
        let misplaced = task(&format!(
            "{BASE}key: [id]\nscope: {{day: x}}\nmax_delete: 3"
        ));
        let fields: Vec<_> = misplaced.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(fields, ["scope.day", "scope", "max_delete"]);
        let append = task(&format!("{BASE}mode: append\nkey: [id]"));
        assert_eq!(append.problems()[0].field, "key");
        let bad = task(&format!("{BASE}key: [id]\nmax_rejected: lots"));
        assert_eq!(bad.problems()[0].field, "max_rejected");
    }

    #[test]
    fn limits_are_counts_or_percentages() {
        assert_eq!(
            Limit::Share("10%".into()).threshold(),
            Ok(Threshold::Percent(10.0))
        );
        assert_eq!(Limit::Count(3).threshold(), Ok(Threshold::Count(3)));
        assert!(Limit::Share("150%".into()).threshold().is_err());
        assert_eq!(Threshold::Percent(10.0).allowed(95), 9);
        assert_eq!(Threshold::Count(4).allowed(1), 4);
    }
}
