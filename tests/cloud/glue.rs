//! `glue_job`: success on moto; Glue's own error, a timeout that stops the run and throttling
//! retried, on a stub of the Glue API (moto cannot fail a run, and does not implement
//! stopping one).

use serde_json::json;

use super::emulators::{AWS_ENV, aws, cloud_project, emulators, shown, task, unique};
use super::stub::Stub;
use crate::util::{ferry_in, stderr, stdout};

fn glue_dag(job: &str, extra: &str) -> String {
    format!(
        "tasks:\n  - id: forward\n    type: glue_job\n    connection: aws\n    job_name: {job}\n    arguments: {{\"--day\": \"{{{{ ds }}}}\"}}\n    poll_interval: 200ms\n{extra}"
    )
}

#[test]
fn issue8_a_glue_job_runs_with_its_arguments_and_its_run_id_is_recorded() {
    let Some(emulators) = emulators() else { return };
    let job = unique("forward_events");
    aws(
        &emulators.moto,
        "glue",
        "AWSGlue.CreateJob",
        json!({"Name": job, "Role": "arn:aws:iam::123456789012:role/glue", "Command": {"Name": "glueetl", "ScriptLocation": "s3://scripts/forward.py"}}),
    );
    let dir = cloud_project(
        &emulators.moto,
        &emulators.bigquery,
        &[("glue.yaml", &glue_dag(&job, ""))],
    );
    let run = ferry_in(dir.path(), &["run", "glue"], &AWS_ENV);
    assert!(run.status.success(), "{}{}", stdout(&run), stderr(&run));
    let shown = shown(dir.path(), "glue__");
    let forward = task(&shown, "forward");
    let run_id = forward["external_job_id"]
        .as_str()
        .expect("the run id is recorded");
    let runs = aws(
        &emulators.moto,
        "glue",
        "AWSGlue.GetJobRuns",
        json!({"JobName": job}),
    );
    let runs = runs["JobRuns"].as_array().expect("runs");
    assert_eq!(runs.len(), 1, "one run: {runs:?}");
    assert_eq!(runs[0]["Id"], run_id);
    assert_eq!(runs[0]["JobRunState"], "SUCCEEDED");
    // The templated argument, and the attempt token a restarted ferry finds the run by.
    let day = runs[0]["Arguments"]["--day"].as_str().expect("--day");
    assert_eq!(day.len(), 10, "{day}");
    assert!(
        runs[0]["Arguments"]["--ferry_attempt"]
            .as_str()
            .is_some_and(|t| t.starts_with("ferry-glue-forward-")),
        "{runs:?}"
    );
}

/// A stub of the Glue API: `StartJobRun` answers `throttled` times with throttling first;
/// `GetJobRun` answers with `state` (and an error message when it is FAILED).
fn glue_stub(throttled: usize, state: &'static str) -> Stub {
    Stub::start(move |call, before| {
        match call.what.as_str() {
        "AWSGlue.StartJobRun" if before < throttled => (
            400,
            json!({"__type": "ThrottlingException", "message": "Rate exceeded"}).to_string(),
        ),
        "AWSGlue.StartJobRun" => (200, json!({"JobRunId": "jr_stub"}).to_string()),
        "AWSGlue.GetJobRun" => (
            200,
            json!({"JobRun": {"Id": "jr_stub", "JobName": "stubbed", "JobRunState": state,
                "ErrorMessage": (state == "FAILED").then_some("An error occurred while calling o87.pyWriteDynamicFrame. Spark executor ran out of memory in stage 3")}})
            .to_string(),
        ),
        "AWSGlue.GetJobRuns" => (200, json!({"JobRuns": []}).to_string()),
        "AWSGlue.BatchStopJobRun" => (
            200,
            json!({"SuccessfulSubmissions": [{"JobName": "stubbed", "JobRunId": "jr_stub"}], "Errors": []}).to_string(),
        ),
        other => (400, json!({"__type": "InvalidInputException", "message": format!("unexpected {other}")}).to_string()),
    }
    })
}

#[test]
fn issue8_a_failed_glue_run_fails_the_task_with_glues_message() {
    let stub = glue_stub(0, "FAILED");
    let dir = cloud_project(
        &stub.url,
        "http://127.0.0.1:9",
        &[("glue.yaml", &glue_dag("stubbed", ""))],
    );
    let run = ferry_in(dir.path(), &["run", "glue"], &AWS_ENV);
    assert!(!run.status.success());
    let log = stdout(&ferry_in(dir.path(), &["logs", "glue__", "forward"], &[]));
    assert!(
        log.contains("Glue run jr_stub of job stubbed ended FAILED: An error occurred while calling o87.pyWriteDynamicFrame. Spark executor ran out of memory in stage 3"),
        "{log}"
    );
    assert_eq!(stub.count("AWSGlue.StartJobRun"), 1);
}

#[test]
fn issue8_a_glue_run_past_the_timeout_is_stopped() {
    let stub = glue_stub(0, "RUNNING");
    let dir = cloud_project(
        &stub.url,
        "http://127.0.0.1:9",
        &[("glue.yaml", &glue_dag("stubbed", "    timeout: 2s\n"))],
    );
    let started = std::time::Instant::now();
    let run = ferry_in(dir.path(), &["run", "glue"], &AWS_ENV);
    assert!(!run.status.success());
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    let stops: Vec<_> = stub
        .calls()
        .into_iter()
        .filter(|c| c.what == "AWSGlue.BatchStopJobRun")
        .collect();
    assert_eq!(stops.len(), 1, "{:?}", stub.calls());
    assert!(stops[0].body.contains("jr_stub"), "{:?}", stops[0]);
    let log = stdout(&ferry_in(dir.path(), &["logs", "glue__", "forward"], &[]));
    assert!(
        log.contains("[ferry] timed out; Glue run jr_stub was stopped"),
        "{log}"
    );
}

#[test]
fn issue8_glue_throttling_is_retried_with_backoff() {
    // Glue has no idempotency token: ferry (not the SDK) tries again, after looking for a run
    // that carries its attempt token (a start whose answer was lost).
    let stub = glue_stub(4, "SUCCEEDED");
    let dir = cloud_project(
        &stub.url,
        "http://127.0.0.1:9",
        &[("glue.yaml", &glue_dag("stubbed", ""))],
    );
    let run = ferry_in(dir.path(), &["run", "glue"], &AWS_ENV);
    assert!(run.status.success(), "{}{}", stdout(&run), stderr(&run));
    assert_eq!(stub.count("AWSGlue.StartJobRun"), 5, "{:?}", stub.calls());
    assert_eq!(stub.count("AWSGlue.GetJobRuns"), 4, "{:?}", stub.calls());
    let log = stdout(&ferry_in(dir.path(), &["logs", "glue__", "forward"], &[]));
    assert!(
        log.contains("starting the Glue run: ThrottlingException: Rate exceeded (transient; trying again in 1 s)"),
        "{log}"
    );
}

#[test]
fn issue8_clearing_a_running_glue_task_stops_its_run() {
    let stub = glue_stub(0, "RUNNING");
    let dir = cloud_project(
        &stub.url,
        "http://127.0.0.1:9",
        &[("glue.yaml", &glue_dag("stubbed", ""))],
    );
    let mut serve = crate::util::spawn_ferry_with(dir.path(), &["serve"], &AWS_ENV);
    let run = crate::util::spawn_ferry_with(dir.path(), &["run", "glue"], &AWS_ENV);
    crate::util::wait_until(std::time::Duration::from_secs(30), || {
        stub.count("AWSGlue.GetJobRun") > 0
    });
    let cleared = ferry_in(
        dir.path(),
        &[
            "tasks",
            "clear",
            "glue__",
            "forward",
            "--reason",
            "wrong day",
        ],
        &[],
    );
    assert!(cleared.status.success(), "{}", stderr(&cleared));
    crate::util::wait_until(std::time::Duration::from_secs(30), || {
        stub.count("AWSGlue.BatchStopJobRun") > 0
    });
    let stops: Vec<_> = stub
        .calls()
        .into_iter()
        .filter(|c| c.what == "AWSGlue.BatchStopJobRun")
        .collect();
    assert!(stops[0].body.contains("jr_stub"), "{stops:?}");
    crate::util::nix_kill(&serve, "TERM");
    let _ = serve.wait();
    drop(run);
}
