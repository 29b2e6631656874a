//! `type: wait_for_dag`: waits for another DAG's run of the same data interval.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{FieldProblem, TaskType, is_valid_id};
use crate::duration::Duration;

/// Waits, without holding an execution slot, until the other DAG's run for the same data
/// interval has succeeded (or the named task of it has). The task's `timeout` bounds the wait.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitForDagTask {
    /// Id of the DAG to wait for. It must exist, and share this DAG's schedule and time zone
    /// so that both have runs for the same data intervals.
    pub dag: String,
    /// Wait for this task of that run instead of the whole run.
    pub task: Option<String>,
    /// How often to look again when the engine is not told. Default 1m.
    pub poll_interval: Option<Duration>,
}

impl TaskType for WaitForDagTask {
    fn problems(&self) -> Vec<FieldProblem> {
        let mut problems = Vec::new();
        if !is_valid_id(&self.dag) {
            problems.push(FieldProblem::invalid(
                "dag",
                format!("`{}` is not a valid DAG id", self.dag),
            ));
        }
        if let Some(task) = &self.task
            && !is_valid_id(task)
        {
            problems.push(FieldProblem::invalid(
                "task",
                format!("`{task}` is not a valid task id"),
            ));
        }
        problems
    }

    fn templates(&self) -> Vec<(String, &str)> {
        Vec::new()
    }
}
