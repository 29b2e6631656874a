//! `type: stepfunctions`: starts an execution of an AWS Step Functions state machine and waits
//! until it ends.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{FieldProblem, TaskType, is_valid_id};
use crate::duration::Duration;

/// Starts an execution of a state machine with templated JSON input and waits for it to end:
/// SUCCEEDED succeeds; FAILED, TIMED_OUT and ABORTED fail with the execution's error and
/// cause. On a timeout or a cancel the execution is stopped. The execution's name is derived
/// from the run, task and try, so a restarted ferry waits on the same execution.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepFunctionsTask {
    /// The `aws` connection.
    pub connection: String,
    /// The state machine's ARN (templated).
    pub state_machine_arn: String,
    /// The execution's input: JSON text (templated). Default `{}`.
    #[serde(default)]
    pub input: Option<String>,
    /// How often to ask about the execution. Default 10s.
    #[serde(default)]
    pub poll_interval: Option<Duration>,
}

impl TaskType for StepFunctionsTask {
    fn problems(&self) -> Vec<FieldProblem> {
        let mut problems = Vec::new();
        if !is_valid_id(&self.connection) {
            problems.push(FieldProblem::invalid(
                "connection",
                format!("`{}` is not a valid connection name", self.connection),
            ));
        }
        let arn = &self.state_machine_arn;
        let templated = arn.contains("{{");
        let looks_right = arn.starts_with("arn:") && arn.contains(":stateMachine:");
        if !templated && !looks_right {
            problems.push(
                FieldProblem::invalid(
                    "state_machine_arn",
                    format!("`{}` is not a state machine ARN", self.state_machine_arn),
                )
                .with_help("arn:aws:states:REGION:ACCOUNT:stateMachine:NAME"),
            );
        }
        if let Some(input) = &self.input
            && !input.contains("{{")
            && !input.contains("{%")
            && let Err(error) = serde_json::from_str::<serde_json::Value>(input)
        {
            problems.push(FieldProblem::invalid(
                "input",
                format!("the input is not JSON: {error}"),
            ));
        }
        problems
    }

    fn templates(&self) -> Vec<(String, &str)> {
        let mut templates = vec![(
            "state_machine_arn".to_string(),
            self.state_machine_arn.as_str(),
        )];
        if let Some(input) = &self.input {
            templates.push(("input".to_string(), input.as_str()));
        }
        templates
    }
}
