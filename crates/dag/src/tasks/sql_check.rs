//! `type: sql_check`: a data-quality gate. Each check runs a query and compares its answer
//! with what is declared; the task fails, naming the offending values, when one does not hold.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{FieldProblem, TaskType, is_valid_id};

/// Runs every check on `connection` (`sqlite`, `postgres`, `mysql`, `bigquery`) and fails when
/// any does not hold, with what each check found in the log. A failed check is not retried
/// (the same data gives the same answer).
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlCheckTask {
    /// The connection the queries run on.
    pub connection: String,
    /// The checks, run in order; all are run, whatever the first ones found.
    pub checks: Vec<Check>,
}

/// One check: a query and what its answer must be. Give exactly one of `min`/`max`,
/// `no_rows` or `equals_sql`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// A name for the log. Default `check N`.
    #[serde(default)]
    pub name: Option<String>,
    /// The query (templated).
    pub sql: String,
    /// The first value of the first row must be at least this (a row count, a total).
    #[serde(default)]
    pub min: Option<f64>,
    /// The first value of the first row must be at most this.
    #[serde(default)]
    pub max: Option<f64>,
    /// The query must return no row (it selects the offending rows: NULL keys, say); up to
    /// ten of those it returns are logged.
    #[serde(default)]
    pub no_rows: bool,
    /// The first value of the first row must equal that of this query (templated), for
    /// example a total before and after a transform.
    #[serde(default)]
    pub equals_sql: Option<String>,
    /// `equals_sql`: the largest difference still counted as equal. Default 0.
    #[serde(default)]
    pub tolerance: Option<f64>,
}

impl TaskType for SqlCheckTask {
    fn problems(&self) -> Vec<FieldProblem> {
        let mut problems = Vec::new();
        if !is_valid_id(&self.connection) {
            problems.push(FieldProblem::invalid(
                "connection",
                format!("`{}` is not a valid connection name", self.connection),
            ));
        }
        if self.checks.is_empty() {
            problems.push(FieldProblem::invalid("checks", "a sql_check needs checks"));
        }
        for (index, check) in self.checks.iter().enumerate() {
            let field = |name: &str| format!("checks.{index}.{name}");
            if check.sql.trim().is_empty() {
                problems.push(FieldProblem::invalid(field("sql"), "the SQL is empty"));
            }
            let bounds = check.min.is_some() || check.max.is_some();
            let kinds = usize::from(bounds)
                + usize::from(check.no_rows)
                + usize::from(check.equals_sql.is_some());
            if kinds != 1 {
                problems.push(
                    FieldProblem::invalid(
                        format!("checks.{index}"),
                        "a check expects exactly one of: `min`/`max`, `no_rows: true`, `equals_sql`",
                    )
                    .with_help("`min: 1` for a row count, `no_rows: true` for a query of offending rows, `equals_sql:` for totals that must agree"),
                );
            }
            if let (Some(min), Some(max)) = (check.min, check.max)
                && min > max
            {
                problems.push(FieldProblem::invalid(
                    field("max"),
                    format!("`max` ({max}) is below `min` ({min})"),
                ));
            }
            if check.tolerance.is_some() && check.equals_sql.is_none() {
                problems.push(FieldProblem::invalid(
                    field("tolerance"),
                    "`tolerance` belongs with `equals_sql`",
                ));
            }
            if check.tolerance.is_some_and(|t| t < 0.0) {
                problems.push(FieldProblem::invalid(
                    field("tolerance"),
                    "a tolerance is not negative",
                ));
            }
        }
        problems
    }

    fn templates(&self) -> Vec<(String, &str)> {
        let mut templates = Vec::new();
        for (index, check) in self.checks.iter().enumerate() {
            templates.push((format!("checks.{index}.sql"), check.sql.as_str()));
            if let Some(other) = &check.equals_sql {
                templates.push((format!("checks.{index}.equals_sql"), other.as_str()));
            }
        }
        templates
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_check_expects_exactly_one_thing() {
        let task: SqlCheckTask = serde_saphyr::from_str(
            "connection: warehouse\nchecks:\n  - {sql: SELECT 1, min: 1}\n  - {sql: SELECT 1, no_rows: true, min: 2}\n  - {sql: SELECT 1}\n  - {sql: SELECT 1, min: 3, max: 2}\n  - {sql: SELECT 1, no_rows: true, tolerance: 1}",
        )
        .expect("a task");
        let fields: Vec<_> = task.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            ["checks.1", "checks.2", "checks.3.max", "checks.4.tolerance"]
        );
    }
}
