//! The waits on cloud state (`s3_object`, `bigquery_partition`, `glue_run`) on the emulators:
//! deferred (no slot held) until what they wait for appears, then succeeded; given up after
//! their timeout.

use std::time::Duration;

use serde_json::json;

use super::emulators::{
    AWS_ENV, aws, bigquery_call, bigquery_dataset, cloud_project, emulators, put_object, shown,
    task, unique,
};
use crate::util::{ferry_in, spawn_ferry_with, stderr, stdout, wait_until};

/// The state of task `id` of the DAG's newest run, if there is a run.
fn state_of(dir: &std::path::Path, dag: &str, id: &str) -> Option<String> {
    let output = ferry_in(
        dir,
        &["runs", "show", &format!("{dag}__"), "--format", "json"],
        &[],
    );
    let shown: serde_json::Value = serde_json::from_str(&stdout(&output)).ok()?;
    shown["tasks"]
        .as_array()?
        .iter()
        .find(|t| t["task_id"] == id)
        .and_then(|t| t["state"].as_str().map(str::to_string))
}

#[test]
fn issue8_waits_defer_until_the_object_partition_and_glue_run_are_there() {
    let Some(emulators) = emulators() else { return };
    let bucket = unique("landing").replace('_', "-");
    put_object(&emulators.moto, &bucket, "other/file.csv", "id\n1\n");
    let ds = unique("ferry_waits");
    bigquery_dataset(&emulators.bigquery, &ds);
    let job = unique("upstream_export");
    aws(
        &emulators.moto,
        "glue",
        "AWSGlue.CreateJob",
        json!({"Name": job, "Role": "arn:aws:iam::123456789012:role/glue", "Command": {"Name": "glueetl", "ScriptLocation": "s3://scripts/x.py"}}),
    );
    let dag = format!(
        r#"tasks:
  - {{id: landed, type: s3_object, connection: aws, bucket: {bucket}, key: "events/{{{{ ds }}}}/", poll_interval: 200ms}}
  - {{id: loaded, type: bigquery_partition, connection: warehouse, table: {ds}.daily, partition_column: day, poll_interval: 200ms}}
  - {{id: exported, type: glue_run, connection: aws, job_name: {job}, poll_interval: 200ms}}
  - {{id: after, type: noop, depends_on: [landed, loaded, exported]}}
"#
    );
    let dir = cloud_project(
        &emulators.moto,
        &emulators.bigquery,
        &[("waits.yaml", &dag)],
    );
    let run = spawn_ferry_with(dir.path(), &["run", "waits"], &AWS_ENV);
    // All three wait without a slot.
    wait_until(Duration::from_secs(30), || {
        ["landed", "loaded", "exported"]
            .iter()
            .all(|id| state_of(dir.path(), "waits", id).as_deref() == Some("deferred"))
    });
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        state_of(dir.path(), "waits", "landed").as_deref(),
        Some("deferred")
    );
    let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
    put_object(
        &emulators.moto,
        &bucket,
        &format!("events/{day}/part-1.csv"),
        "id\n1\n",
    );
    bigquery_call(
        &emulators.bigquery,
        "queries",
        json!({"query": format!("CREATE TABLE {ds}.daily AS SELECT '{day}' AS day, 1 AS n"), "useLegacySql": false}),
    );
    aws(
        &emulators.moto,
        "glue",
        "AWSGlue.StartJobRun",
        json!({"JobName": job}),
    );
    let output = run.wait_with_output().expect("ferry run ends");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let shown = shown(dir.path(), "waits__");
    for id in ["landed", "loaded", "exported", "after"] {
        assert_eq!(task(&shown, id)["state"], "success", "{id}: {shown}");
    }
    let log = stdout(&ferry_in(dir.path(), &["logs", "waits__", "landed"], &[]));
    assert!(
        log.contains(&format!("events/{day}/part-1.csv is there")),
        "{log}"
    );
}

#[test]
fn issue8_a_wait_gives_up_after_its_timeout() {
    let Some(emulators) = emulators() else { return };
    let bucket = unique("never").replace('_', "-");
    put_object(&emulators.moto, &bucket, "other/file.csv", "id\n1\n");
    let dag = format!(
        "tasks:\n  - {{id: landed, type: s3_object, connection: aws, bucket: {bucket}, key: missing.csv, poll_interval: 200ms, timeout: 1s, retries: 3}}\n"
    );
    let dir = cloud_project(
        &emulators.moto,
        &emulators.bigquery,
        &[("never.yaml", &dag)],
    );
    let run = ferry_in(dir.path(), &["run", "never"], &AWS_ENV);
    assert!(!run.status.success(), "{}", stderr(&run));
    let log = stdout(&ferry_in(dir.path(), &["logs", "never__", "landed"], &[]));
    assert!(
        log.contains(&format!(
            "gave up waiting for s3://{bucket}/missing.csv after 1s"
        )),
        "{log}"
    );
    // Giving up is final: no retry waits another day.
    assert_eq!(
        task(&shown(dir.path(), "never__"), "landed")["try_number"],
        1
    );
}

#[test]
fn issue8_a_wait_that_cannot_work_fails_at_once_with_the_services_message() {
    let Some(emulators) = emulators() else { return };
    let bucket = unique("no-such-bucket").replace('_', "-");
    let dag = format!(
        "tasks:\n  - {{id: landed, type: s3_object, connection: aws, bucket: {bucket}, key: events/, poll_interval: 200ms}}\n"
    );
    let dir = cloud_project(
        &emulators.moto,
        &emulators.bigquery,
        &[("missing.yaml", &dag)],
    );
    let run = ferry_in(dir.path(), &["run", "missing"], &AWS_ENV);
    assert!(!run.status.success());
    let log = stdout(&ferry_in(dir.path(), &["logs", "missing__", "landed"], &[]));
    assert!(
        log.contains(&format!("looking for s3://{bucket}/events/: NoSuchBucket")),
        "{log}"
    );
}

#[test]
fn issue8_a_wait_looks_again_after_throttling() {
    let started = chrono::Utc::now().timestamp() + 5;
    let stub = super::stub::Stub::start(move |call, before| {
        match call.what.as_str() {
        "AWSGlue.GetJobRuns" if before < 4 => (
            400,
            json!({"__type": "ThrottlingException", "message": "Rate exceeded"}).to_string(),
        ),
        "AWSGlue.GetJobRuns" => (
            200,
            json!({"JobRuns": [{"Id": "jr_outside", "JobName": "export", "JobRunState": "SUCCEEDED", "StartedOn": started}]}).to_string(),
        ),
        other => (400, json!({"__type": "InvalidInputException", "message": format!("unexpected {other}")}).to_string()),
    }
    });
    let dag = "tasks:\n  - {id: exported, type: glue_run, connection: aws, job_name: export, poll_interval: 200ms}\n";
    let dir = cloud_project(&stub.url, "http://127.0.0.1:9", &[("glue.yaml", dag)]);
    let run = ferry_in(dir.path(), &["run", "glue"], &AWS_ENV);
    assert!(run.status.success(), "{}{}", stdout(&run), stderr(&run));
    let log = stdout(&ferry_in(dir.path(), &["logs", "glue__", "exported"], &[]));
    assert!(log.contains("run jr_outside is SUCCEEDED"), "{log}");
    // The first look's three tries (the SDK's) were refused, so it looked again later.
    assert_eq!(stub.count("AWSGlue.GetJobRuns"), 5, "{:?}", stub.calls());
}

#[test]
fn issue8_clearing_a_waiting_task_starts_its_wait_again() {
    let Some(emulators) = emulators() else { return };
    let bucket = unique("cleared-wait").replace('_', "-");
    put_object(&emulators.moto, &bucket, "other.csv", "id\n1\n");
    let dag = format!(
        "tasks:\n  - {{id: landed, type: s3_object, connection: aws, bucket: {bucket}, key: ready.csv, poll_interval: 200ms}}\n"
    );
    let dir = cloud_project(&emulators.moto, &emulators.bigquery, &[("wait.yaml", &dag)]);
    let mut serve = spawn_ferry_with(dir.path(), &["serve"], &AWS_ENV);
    let run = spawn_ferry_with(dir.path(), &["run", "wait"], &AWS_ENV);
    wait_until(Duration::from_secs(30), || {
        state_of(dir.path(), "wait", "landed").as_deref() == Some("deferred")
    });
    let cleared = ferry_in(dir.path(), &["tasks", "clear", "wait__", "landed"], &[]);
    assert!(cleared.status.success(), "{}", stderr(&cleared));
    wait_until(Duration::from_secs(30), || {
        task(&shown(dir.path(), "wait__"), "landed")["try_number"] == 2
    });
    put_object(&emulators.moto, &bucket, "ready.csv", "id\n1\n");
    wait_until(Duration::from_secs(30), || {
        state_of(dir.path(), "wait", "landed").as_deref() == Some("success")
    });
    crate::util::nix_kill(&serve, "TERM");
    let _ = serve.wait();
    drop(run);
}
