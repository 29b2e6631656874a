//! `stepfunctions` tasks: start an execution of a state machine under a name derived from the
//! attempt, record its ARN, wait until it ends; stop it on a timeout or a cancel. A resumed
//! attempt starts under the same name, which Step Functions answers with the same execution.

use std::time::Duration;

use aws_sdk_sfn::Client;
use aws_sdk_sfn::types::ExecutionStatus;
use ferry_executor::Outcome;
use ferry_executor::connector::AttemptScope;

use crate::aws::{describe, failure, is_transient};
use crate::jobs::{Stop, deadline, pause, retrying, stop_reason};

/// An execution to start and wait on.
pub(crate) struct Execution<'a> {
    /// The state machine.
    pub state_machine_arn: &'a str,
    /// The input, JSON text.
    pub input: &'a str,
    /// How often to look.
    pub poll: Duration,
    /// The task's timeout.
    pub timeout: Option<Duration>,
}

/// Runs `execution` on `client`.
pub(crate) async fn run(
    client: &Client,
    execution: &Execution<'_>,
    scope: &AttemptScope<'_>,
) -> Outcome {
    let name = scope.key.token();
    let deadline = deadline(execution.timeout, scope);
    let arn = match scope.resumed_job {
        Some(arn) => {
            scope.log.note(&format!("waiting again on execution {arn}"));
            arn.to_string()
        }
        None => match start(client, execution, &name, scope).await {
            Ok(arn) => arn,
            Err(outcome) => return outcome,
        },
    };
    scope.recorder.external_job(&arn).await;
    let mut last: Option<ExecutionStatus> = None;
    loop {
        let looked = retrying(
            "looking at the execution",
            scope,
            is_transient,
            describe,
            || client.describe_execution().execution_arn(&arn).send(),
        )
        .await;
        let described = match looked {
            None => return stopped(client, &arn, stop_reason(scope), scope).await,
            Some(Err(error)) => {
                return failure(&error, &format!("could not look at execution {arn}"));
            }
            Some(Ok(described)) => described,
        };
        let status = described.status().clone();
        if last.as_ref() != Some(&status) {
            scope.log.note(&format!(
                "execution {}: {}",
                described.name().unwrap_or(&arn),
                status.as_str()
            ));
            last = Some(status.clone());
        }
        match status {
            ExecutionStatus::Succeeded => {
                if let Some(output) = described.output() {
                    scope
                        .log
                        .note(&format!("output: {}", ferry_secrets::redact_text(output)));
                }
                return Outcome::Succeeded { code: None };
            }
            ExecutionStatus::Failed | ExecutionStatus::TimedOut | ExecutionStatus::Aborted => {
                let mut reason = format!("execution {arn} ended {}", status.as_str());
                if let Some(error) = described.error() {
                    reason.push_str(&format!(": {error}"));
                }
                if let Some(cause) = described.cause() {
                    reason.push_str(&format!(" ({})", ferry_secrets::redact_text(cause)));
                }
                scope.log.note(&reason);
                return Outcome::failed(None, reason);
            }
            _ => {}
        }
        if let Some(stop) = pause(execution.poll, deadline, scope).await {
            return stopped(client, &arn, stop, scope).await;
        }
    }
}

/// Starts the execution named `name`; its ARN. An execution of that name that exists already
/// (this attempt's, started before ferry restarted) is the one waited on.
async fn start(
    client: &Client,
    execution: &Execution<'_>,
    name: &str,
    scope: &AttemptScope<'_>,
) -> Result<String, Outcome> {
    // Taken over only to be stopped (an operator cleared the task): start nothing.
    let started = if scope.cancel.is_cancelled() {
        None
    } else {
        retrying(
            "starting the execution",
            scope,
            is_transient,
            describe,
            || {
                client
                    .start_execution()
                    .state_machine_arn(execution.state_machine_arn)
                    .name(name)
                    .input(execution.input)
                    .send()
            },
        )
        .await
    };
    match started {
        None => {
            // The request may have reached Step Functions: the execution of this name is
            // stopped (a shutdown leaves it to the next start, which starts the same name).
            if !scope.shutting_down.is_cancelled() {
                let arn = execution_arn(execution.state_machine_arn, name);
                if client
                    .stop_execution()
                    .execution_arn(&arn)
                    .error("ferry.Stopped")
                    .cause("the ferry task was stopped as it started the execution")
                    .send()
                    .await
                    .is_ok()
                {
                    scope.log.note(&format!(
                        "stopped execution {arn}, started as ferry stopped"
                    ));
                }
            }
            Err(Outcome::failed(
                None,
                "stopped before the execution started",
            ))
        }
        Some(Ok(output)) => {
            let arn = output.execution_arn().to_string();
            scope.log.note(&format!("started execution {arn}"));
            Ok(arn)
        }
        Some(Err(error))
            if error
                .as_service_error()
                .is_some_and(|e| e.is_execution_already_exists()) =>
        {
            let arn = execution_arn(execution.state_machine_arn, name);
            scope.log.note(&format!(
                "execution {arn} exists already (started by this attempt before ferry restarted)"
            ));
            Ok(arn)
        }
        Some(Err(error)) => Err(failure(
            &error,
            &format!(
                "could not start an execution of {}",
                execution.state_machine_arn
            ),
        )),
    }
}

/// The ARN of execution `name` of a state machine.
fn execution_arn(state_machine_arn: &str, name: &str) -> String {
    format!(
        "{}:{name}",
        state_machine_arn.replacen(":stateMachine:", ":execution:", 1)
    )
}

/// Ends the wait: stops the execution unless ferry shuts down.
async fn stopped(client: &Client, arn: &str, stop: Stop, scope: &AttemptScope<'_>) -> Outcome {
    if stop == Stop::Detached {
        scope.log.note(&format!(
            "ferry shuts down: execution {arn} goes on; the next ferry waits on it"
        ));
        return Outcome::failed(None, "ferry shut down while the execution went on");
    }
    let cause = match stop {
        Stop::Timeout => "the ferry task timed out",
        _ => "the ferry task was stopped",
    };
    let how = match client
        .stop_execution()
        .execution_arn(arn)
        .error("ferry.Stopped")
        .cause(cause)
        .send()
        .await
    {
        Ok(_) => format!("execution {arn} was stopped"),
        Err(error) => format!("could not stop execution {arn}: {}", describe(&error)),
    };
    let reason = match stop {
        Stop::Timeout => format!("timed out; {how}"),
        _ => format!("stopped; {how}"),
    };
    scope.log.note(&reason);
    Outcome::failed(None, reason)
}

#[cfg(test)]
mod tests {
    #[test]
    fn execution_arns_follow_the_state_machine() {
        assert_eq!(
            super::execution_arn(
                "arn:aws:states:ap-northeast-1:123456789012:stateMachine:writeback",
                "ferry-x-1"
            ),
            "arn:aws:states:ap-northeast-1:123456789012:execution:writeback:ferry-x-1"
        );
    }
}
