//! `stepfunctions`: executions on moto in execute mode (success, a Fail state's error and
//! cause, a timeout that stops the execution) and throttling retried on a stub.

use serde_json::{Value, json};

use super::emulators::{AWS_ENV, aws, cloud_project, emulators, shown, task, unique};
use super::stub::Stub;
use crate::util::{ferry_in, stderr, stdout};

/// Creates state machine `name` with `definition` on moto; its ARN.
pub(crate) fn state_machine(moto: &str, name: &str, definition: Value) -> String {
    let created = aws(
        moto,
        "states",
        "AWSStepFunctions.CreateStateMachine",
        json!({"name": name, "roleArn": "arn:aws:iam::123456789012:role/sfn", "definition": definition.to_string()}),
    );
    created["stateMachineArn"]
        .as_str()
        .expect("an ARN")
        .to_string()
}

/// The executions of a state machine.
pub(crate) fn executions(moto: &str, arn: &str) -> Vec<Value> {
    aws(
        moto,
        "states",
        "AWSStepFunctions.ListExecutions",
        json!({"stateMachineArn": arn}),
    )["executions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

pub(crate) fn sfn_dag(arn: &str, extra: &str) -> String {
    format!(
        "tasks:\n  - id: writeback\n    type: stepfunctions\n    connection: aws\n    state_machine_arn: {arn}\n    input: '{{\"day\": \"{{{{ ds }}}}\"}}'\n    poll_interval: 200ms\n{extra}"
    )
}

#[test]
fn issue8_a_step_functions_execution_succeeds_and_its_arn_is_recorded() {
    let Some(emulators) = emulators() else { return };
    let arn = state_machine(
        &emulators.moto,
        &unique("writeback_ok"),
        json!({"StartAt": "Write", "States": {"Write": {"Type": "Pass", "End": true}}}),
    );
    let dir = cloud_project(
        &emulators.moto,
        &emulators.bigquery,
        &[("sfn.yaml", &sfn_dag(&arn, ""))],
    );
    let run = ferry_in(dir.path(), &["run", "sfn"], &AWS_ENV);
    assert!(run.status.success(), "{}{}", stdout(&run), stderr(&run));
    let shown = shown(dir.path(), "sfn__");
    let recorded = task(&shown, "writeback")["external_job_id"]
        .as_str()
        .expect("the ARN")
        .to_string();
    let executions = executions(&emulators.moto, &arn);
    assert_eq!(executions.len(), 1, "{executions:?}");
    assert_eq!(executions[0]["executionArn"], recorded.as_str());
    assert_eq!(executions[0]["status"], "SUCCEEDED");
    let log = stdout(&ferry_in(dir.path(), &["logs", "sfn__", "writeback"], &[]));
    assert!(log.contains("output: {\"day\": \""), "{log}");
}

#[test]
fn issue8_a_failed_execution_surfaces_its_error_and_cause() {
    let Some(emulators) = emulators() else { return };
    let arn = state_machine(
        &emulators.moto,
        &unique("writeback_fails"),
        json!({"StartAt": "Refuse", "States": {"Refuse": {"Type": "Fail", "Error": "Writeback.Refused", "Cause": "the app database refused the upsert"}}}),
    );
    let dir = cloud_project(
        &emulators.moto,
        &emulators.bigquery,
        &[("sfn.yaml", &sfn_dag(&arn, ""))],
    );
    let run = ferry_in(dir.path(), &["run", "sfn"], &AWS_ENV);
    assert!(!run.status.success());
    let log = stdout(&ferry_in(dir.path(), &["logs", "sfn__", "writeback"], &[]));
    assert!(
        log.contains("ended FAILED: Writeback.Refused (the app database refused the upsert)"),
        "{log}"
    );
}

#[test]
fn issue8_an_execution_past_the_timeout_is_stopped() {
    let Some(emulators) = emulators() else { return };
    let arn = state_machine(
        &emulators.moto,
        &unique("writeback_slow"),
        json!({"StartAt": "Wait", "States": {"Wait": {"Type": "Wait", "Seconds": 120, "End": true}}}),
    );
    let dir = cloud_project(
        &emulators.moto,
        &emulators.bigquery,
        &[("sfn.yaml", &sfn_dag(&arn, "    timeout: 2s\n"))],
    );
    let run = ferry_in(dir.path(), &["run", "sfn"], &AWS_ENV);
    assert!(!run.status.success());
    let executions = executions(&emulators.moto, &arn);
    assert_eq!(executions.len(), 1, "{executions:?}");
    assert_eq!(executions[0]["status"], "ABORTED", "{executions:?}");
    let log = stdout(&ferry_in(dir.path(), &["logs", "sfn__", "writeback"], &[]));
    assert!(
        log.contains("[ferry] timed out; execution arn:aws:states:"),
        "{log}"
    );
}

#[test]
fn issue8_step_functions_throttling_is_retried() {
    let stub = Stub::start(|call, before| {
        match call.what.as_str() {
        "AWSStepFunctions.StartExecution" if before < 4 => (
            400,
            json!({"__type": "ThrottlingException", "message": "Rate exceeded"}).to_string(),
        ),
        "AWSStepFunctions.StartExecution" => (
            200,
            json!({"executionArn": "arn:aws:states:us-east-1:123456789012:execution:stub:one", "startDate": 1.0}).to_string(),
        ),
        "AWSStepFunctions.DescribeExecution" => (
            200,
            json!({"executionArn": "arn:aws:states:us-east-1:123456789012:execution:stub:one", "stateMachineArn": "arn:aws:states:us-east-1:123456789012:stateMachine:stub", "name": "one", "status": "SUCCEEDED", "startDate": 1.0}).to_string(),
        ),
        other => (400, json!({"__type": "InvalidArn", "message": format!("unexpected {other}")}).to_string()),
    }
    });
    let dir = cloud_project(
        &stub.url,
        "http://127.0.0.1:9",
        &[(
            "sfn.yaml",
            &sfn_dag(
                "arn:aws:states:us-east-1:123456789012:stateMachine:stub",
                "",
            ),
        )],
    );
    let run = ferry_in(dir.path(), &["run", "sfn"], &AWS_ENV);
    assert!(run.status.success(), "{}{}", stdout(&run), stderr(&run));
    assert_eq!(stub.count("AWSStepFunctions.StartExecution"), 5);
}
