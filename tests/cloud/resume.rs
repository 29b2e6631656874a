//! A ferry killed with SIGKILL at a random moment (from its first milliseconds to the end of
//! the wait) while a Glue run or a Step Functions execution goes on: the next ferry waits on
//! the same job. The oracle is the emulator's own list of runs and executions: exactly one per
//! task, and it succeeded.

use std::time::Duration;

use serde_json::json;

use super::emulators::{AWS_ENV, aws, cloud_project, emulators, shown, task, unique};
use super::stepfunctions::{executions, sfn_dag, state_machine};
use crate::util::{
    ferry_in, finish_after_kill, nix_kill, spawn_ferry_with, stderr, stdout, wait_for_runs_of,
};

/// Kills per task type.
const KILLS: usize = 6;

/// Kills `ferry run DAG` after a random delay up to `within`, then lets `ferry serve` finish
/// the run; returns the project folder.
fn kill_then_finish(dir: &std::path::Path, dag: &str, within: Duration, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let delay = Duration::from_millis(rng.u64(0..=u64::try_from(within.as_millis()).unwrap_or(0)));
    let run = spawn_ferry_with(dir, &["run", dag], &AWS_ENV);
    std::thread::sleep(delay);
    nix_kill(&run, "KILL");
    let output = run.wait_with_output().expect("killed");
    let Some(runs) = finish_after_kill(dir, dag, &AWS_ENV) else {
        return;
    };
    assert_eq!(
        runs[0]["state"],
        "success",
        "killed after {delay:?}: {runs}\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn issue8_a_killed_ferry_waits_again_on_the_same_glue_run() {
    let Some(emulators) = emulators() else { return };
    // Runs take two seconds per state on moto, so kills land while they start and run.
    aws_config(
        &emulators.moto,
        json!({"model_name": "glue::job_run", "transition": {"progression": "time", "seconds": 1}}),
    );
    for kill in 0..KILLS {
        let job = unique(&format!("resume_glue_{kill}"));
        aws(
            &emulators.moto,
            "glue",
            "AWSGlue.CreateJob",
            json!({"Name": job, "Role": "arn:aws:iam::123456789012:role/glue", "Command": {"Name": "glueetl", "ScriptLocation": "s3://scripts/forward.py"}}),
        );
        let dag = format!(
            "tasks:\n  - {{id: forward, type: glue_job, connection: aws, job_name: {job}, poll_interval: 200ms, retries: 0}}\n"
        );
        let dir = cloud_project(&emulators.moto, &emulators.bigquery, &[("glue.yaml", &dag)]);
        kill_then_finish(
            dir.path(),
            "glue",
            Duration::from_millis(2500),
            7919 * kill as u64,
        );
        let runs = aws(
            &emulators.moto,
            "glue",
            "AWSGlue.GetJobRuns",
            json!({"JobName": job}),
        );
        let runs = runs["JobRuns"].as_array().cloned().unwrap_or_default();
        assert_eq!(runs.len(), 1, "kill {kill}: one Glue run, not {runs:?}");
        assert_eq!(runs[0]["JobRunState"], "SUCCEEDED");
        let shown = shown(dir.path(), "glue__");
        let forward = task(&shown, "forward");
        assert_eq!(
            forward["external_job_id"], runs[0]["Id"],
            "kill {kill}: {shown}"
        );
    }
}

#[test]
fn issue8_a_killed_ferry_waits_again_on_the_same_execution() {
    let Some(emulators) = emulators() else { return };
    for kill in 0..KILLS {
        let arn = state_machine(
            &emulators.moto,
            &unique(&format!("resume_sfn_{kill}")),
            json!({"StartAt": "Wait", "States": {"Wait": {"Type": "Wait", "Seconds": 2, "Next": "Done"}, "Done": {"Type": "Pass", "End": true}}}),
        );
        let dag = sfn_dag(&arn, "    retries: 0\n");
        let dir = cloud_project(&emulators.moto, &emulators.bigquery, &[("sfn.yaml", &dag)]);
        kill_then_finish(
            dir.path(),
            "sfn",
            Duration::from_millis(3000),
            104_729 * kill as u64 + 1,
        );
        let executions = executions(&emulators.moto, &arn);
        assert_eq!(
            executions.len(),
            1,
            "kill {kill}: one execution, not {executions:?}"
        );
        assert_eq!(executions[0]["status"], "SUCCEEDED");
        let shown = shown(dir.path(), "sfn__");
        assert_eq!(
            task(&shown, "writeback")["external_job_id"],
            executions[0]["executionArn"],
            "kill {kill}"
        );
    }
}

/// Sets a transition of moto's state manager.
fn aws_config(moto: &str, body: serde_json::Value) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let response = reqwest::Client::new()
                .post(format!("{moto}/moto-api/state-manager/set-transition"))
                .body(body.to_string())
                .send()
                .await
                .expect("moto answers");
            assert!(response.status().is_success());
        });
}

#[test]
fn issue8_clearing_a_task_stops_its_execution_and_starts_a_new_one() {
    let Some(emulators) = emulators() else { return };
    let arn = state_machine(
        &emulators.moto,
        &unique("writeback_cleared"),
        json!({"StartAt": "Wait", "States": {"Wait": {"Type": "Wait", "Seconds": 120, "End": true}}}),
    );
    let dag = sfn_dag(&arn, "");
    let dir = cloud_project(&emulators.moto, &emulators.bigquery, &[("sfn.yaml", &dag)]);
    let mut serve = spawn_ferry_with(dir.path(), &["serve"], &AWS_ENV);
    let run = spawn_ferry_with(dir.path(), &["run", "sfn"], &AWS_ENV);
    crate::util::wait_until(Duration::from_secs(30), || {
        executions(&emulators.moto, &arn).len() == 1
    });
    let output = ferry_in(
        dir.path(),
        &[
            "tasks",
            "clear",
            "sfn__",
            "writeback",
            "--reason",
            "wrong input",
        ],
        &[],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    // The first execution is stopped, and the task's next try starts its own.
    crate::util::wait_until(Duration::from_secs(30), || {
        let all = executions(&emulators.moto, &arn);
        all.len() == 2 && all.iter().any(|e| e["status"] == "ABORTED")
    });
    let all = executions(&emulators.moto, &arn);
    let aborted = all
        .iter()
        .find(|e| e["status"] == "ABORTED")
        .expect("aborted");
    assert!(
        aborted["name"].as_str().is_some_and(|n| n.ends_with("-1")),
        "{all:?}"
    );
    let running = all
        .iter()
        .find(|e| e["status"] == "RUNNING")
        .expect("a new one");
    assert!(
        running["name"].as_str().is_some_and(|n| n.ends_with("-2")),
        "{all:?}"
    );
    nix_kill(&serve, "TERM");
    let _ = serve.wait();
    drop(run);
}

#[test]
fn issue8_a_shutdown_leaves_the_execution_and_a_clear_meanwhile_stops_it_at_the_next_start() {
    let Some(emulators) = emulators() else { return };
    let arn = state_machine(
        &emulators.moto,
        &unique("writeback_detached"),
        json!({"StartAt": "Wait", "States": {"Wait": {"Type": "Wait", "Seconds": 120, "End": true}}}),
    );
    let dag = sfn_dag(&arn, "");
    let dir = cloud_project(&emulators.moto, &emulators.bigquery, &[("sfn.yaml", &dag)]);
    let mut run = spawn_ferry_with(dir.path(), &["run", "sfn"], &AWS_ENV);
    crate::util::wait_until(Duration::from_secs(30), || {
        executions(&emulators.moto, &arn).len() == 1
    });
    std::thread::sleep(Duration::from_millis(500));
    // SIGTERM: ferry stops, the execution goes on, the attempt stays running for the next start.
    nix_kill(&run, "TERM");
    let _ = run.wait();
    assert_eq!(executions(&emulators.moto, &arn)[0]["status"], "RUNNING");
    let shown = shown(dir.path(), "sfn__");
    assert_eq!(task(&shown, "writeback")["state"], "running", "{shown}");
    // Cleared while no ferry runs: the next start stops that execution before the next try.
    let cleared = ferry_in(dir.path(), &["tasks", "clear", "sfn__", "writeback"], &[]);
    assert!(cleared.status.success(), "{}", stderr(&cleared));
    let mut serve = spawn_ferry_with(dir.path(), &["serve"], &AWS_ENV);
    crate::util::wait_until(Duration::from_secs(30), || {
        let all = executions(&emulators.moto, &arn);
        all.iter().any(|e| e["status"] == "ABORTED") && all.len() == 2
    });
    let all = executions(&emulators.moto, &arn);
    let aborted = all
        .iter()
        .find(|e| e["status"] == "ABORTED")
        .expect("aborted");
    assert!(
        aborted["name"].as_str().is_some_and(|n| n.ends_with("-1")),
        "{all:?}"
    );
    nix_kill(&serve, "TERM");
    let _ = serve.wait();
}

#[test]
fn issue8_a_killed_ferry_waits_again_on_the_same_bigquery_job() {
    let Some(emulators) = emulators() else { return };
    let mut resumed = 0;
    for kill in 0..KILLS {
        let ds = unique(&format!("ferry_resume_{kill}"));
        super::emulators::bigquery_dataset(&emulators.bigquery, &ds);
        super::emulators::bigquery_call(
            &emulators.bigquery,
            "queries",
            json!({"query": format!("CREATE TABLE {ds}.ledger (n INT64)"), "useLegacySql": false}),
        );
        let dag = format!(
            "tasks:\n  - {{id: load, type: query, connection: warehouse, sql: \"INSERT INTO {ds}.ledger SELECT 1 AS n\", retries: 0}}\n"
        );
        let dir = cloud_project(&emulators.moto, &emulators.bigquery, &[("bq.yaml", &dag)]);
        // The emulator's jobs end at once: kills within the attempt's first 150 ms.
        kill_then_finish(
            dir.path(),
            "bq",
            Duration::from_millis(150),
            6151 * kill as u64 + 3,
        );
        // The statement ran once, whatever the moment of the kill.
        let rows = super::emulators::bigquery_rows(
            &emulators.bigquery,
            &format!("SELECT COUNT(*) AS n FROM {ds}.ledger"),
        );
        assert_eq!(rows, [["1"]], "kill {kill}");
        let log = stdout(&ferry_in(dir.path(), &["logs", "bq__", "load"], &[]));
        if log.contains("waiting again on BigQuery job") {
            resumed += 1;
        }
    }
    eprintln!(
        "{resumed} of {KILLS} kills landed after the job was submitted and before its end was recorded"
    );
}

#[test]
fn issue8_a_killed_ferry_looks_again_for_what_a_wait_waits_for() {
    let Some(emulators) = emulators() else { return };
    for kill in 0..3u64 {
        let bucket = unique(&format!("resume-wait-{kill}")).replace('_', "-");
        super::emulators::put_object(&emulators.moto, &bucket, "other.csv", "id\n1\n");
        let dag = format!(
            "tasks:\n  - {{id: landed, type: s3_object, connection: aws, bucket: {bucket}, key: ready.csv, poll_interval: 200ms, retries: 0}}\n"
        );
        let dir = cloud_project(&emulators.moto, &emulators.bigquery, &[("wait.yaml", &dag)]);
        let mut rng = fastrand::Rng::with_seed(kill * 7 + 1);
        let run = spawn_ferry_with(dir.path(), &["run", "wait"], &AWS_ENV);
        std::thread::sleep(Duration::from_millis(rng.u64(300..1500)));
        nix_kill(&run, "KILL");
        let _ = run.wait_with_output();
        super::emulators::put_object(&emulators.moto, &bucket, "ready.csv", "id\n1\n");
        let listed = stdout(&ferry_in(
            dir.path(),
            &["runs", "list", "--format", "json"],
            &[],
        ));
        if serde_json::from_str::<serde_json::Value>(&listed)
            .ok()
            .and_then(|r| r.as_array().map(Vec::len))
            .unwrap_or(0)
            == 0
        {
            continue;
        }
        let mut serve = spawn_ferry_with(dir.path(), &["serve"], &AWS_ENV);
        let runs = wait_for_runs_of(
            dir.path(),
            Duration::from_secs(60),
            Some(&mut serve),
            |runs| runs[0]["state"] == "success" || runs[0]["state"] == "failed",
        );
        nix_kill(&serve, "TERM");
        let _ = serve.wait();
        assert_eq!(runs[0]["state"], "success", "kill {kill}: {runs}");
        // The wait went on in the same try: the kill cost no retry.
        assert_eq!(
            task(&shown(dir.path(), "wait__"), "landed")["try_number"],
            1,
            "kill {kill}"
        );
    }
}
