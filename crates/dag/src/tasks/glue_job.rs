//! `type: glue_job`: starts an AWS Glue job run and waits until it ends.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::{FieldProblem, TaskType, is_valid_id};
use crate::duration::Duration;

/// Starts a run of an AWS Glue job with templated arguments and waits until it ends. The task
/// succeeds when the run SUCCEEDED and fails with Glue's own error message otherwise; on a
/// timeout or a cancel the run is stopped. After a restart of ferry the task waits on the same
/// run instead of starting a second one.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GlueJobTask {
    /// The `aws` connection.
    pub connection: String,
    /// The Glue job's name.
    pub job_name: String,
    /// Job arguments (`--name: value`); values templated.
    #[serde(default)]
    pub arguments: BTreeMap<String, String>,
    /// How often to ask Glue about the run. Default 30s.
    #[serde(default)]
    pub poll_interval: Option<Duration>,
}

impl TaskType for GlueJobTask {
    fn problems(&self) -> Vec<FieldProblem> {
        let mut problems = Vec::new();
        if !is_valid_id(&self.connection) {
            problems.push(FieldProblem::invalid(
                "connection",
                format!("`{}` is not a valid connection name", self.connection),
            ));
        }
        if self.job_name.trim().is_empty() {
            problems.push(FieldProblem::invalid("job_name", "the job name is empty"));
        }
        for name in self.arguments.keys() {
            if !name.starts_with("--") {
                problems.push(
                    FieldProblem::invalid(
                        format!("arguments.{name}"),
                        format!("Glue job arguments start with `--`: `{name}`"),
                    )
                    .with_help(format!("write `--{name}`")),
                );
            } else if name == ATTEMPT_ARGUMENT {
                problems.push(FieldProblem::invalid(
                    format!("arguments.{name}"),
                    format!(
                        "`{ATTEMPT_ARGUMENT}` is set by ferry to find its run again after a restart"
                    ),
                ));
            }
        }
        problems
    }

    fn templates(&self) -> Vec<(String, &str)> {
        let mut templates = vec![("job_name".to_string(), self.job_name.as_str())];
        for (name, value) in &self.arguments {
            templates.push((format!("arguments.{name}"), value.as_str()));
        }
        templates
    }
}

/// The job argument that carries ferry's attempt token, by which a restarted ferry finds the
/// run it started.
pub const ATTEMPT_ARGUMENT: &str = "--ferry_attempt";
