//! `type: noop`: does nothing and succeeds.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{FieldProblem, TaskType};

/// Does nothing and succeeds at once: a join point for trigger rules, or a placeholder.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoopTask {}

impl TaskType for NoopTask {
    fn problems(&self) -> Vec<FieldProblem> {
        Vec::new()
    }

    fn templates(&self) -> Vec<(String, &str)> {
        Vec::new()
    }
}
