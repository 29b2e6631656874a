//! `type: wait_for_dag`: waits for another DAG's run of the same data interval.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{FieldProblem, TaskType, is_valid_id};
use crate::duration::Duration;

/// Waits, without holding an execution slot, until the other DAG's run for the same data
/// interval has succeeded (or the named task of it has). The task's `timeout` bounds the wait
/// (default 24h); if the awaited run fails, the wait fails at once unless `on_failed: wait`.
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
    /// What to do when the awaited run (or task) has ended without success: `fail` at once
    /// (the default), or `wait` until it succeeds after a rerun or the wait times out.
    pub on_failed: Option<OnFailed>,
}

/// What a `wait_for_dag` does when what it waits for has failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnFailed {
    /// Fail at once (the awaited run failed, or the awaited task failed, was skipped or will
    /// not run).
    #[default]
    Fail,
    /// Keep waiting: an operator may rerun it.
    Wait,
}

/// How long a `wait_for_dag` waits when its task sets no `timeout`.
pub const DEFAULT_WAIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

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
