//! `type: query`: runs templated SQL on a named connection.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{FieldProblem, TaskType, is_valid_id};

/// Runs templated SQL on a SQL connection (`sqlite`, `postgres`, `mysql`) in one transaction:
/// one statement or several separated by `;`. It succeeds when every statement did; on
/// failure nothing of it is kept.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryTask {
    /// The connection (defined per environment in ferry's configuration).
    pub connection: String,
    /// The SQL (templated).
    pub sql: String,
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
        problems
    }

    fn templates(&self) -> Vec<(String, &str)> {
        vec![("sql".to_string(), self.sql.as_str())]
    }
}
