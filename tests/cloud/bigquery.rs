//! `query` on BigQuery: write modes, the job id, labels and bytes recorded, BigQuery's error
//! surfaced (bqemulator); a transient error retried and a job past the timeout cancelled (a
//! stub of the REST API: the emulator's jobs end at once and never fail transiently).

use serde_json::json;

use super::emulators::{
    AWS_ENV, bigquery_dataset, bigquery_rows, cloud_project, emulators, shown, task, unique,
};
use super::stub::Stub;
use crate::util::{ferry_in, stderr, stdout};

#[test]
fn issue8_bigquery_queries_write_by_mode_and_record_their_job() {
    let Some(emulators) = emulators() else { return };
    let ds = unique("ferry_modes");
    bigquery_dataset(&emulators.bigquery, &ds);
    let dag = format!(
        r#"tasks:
  - id: seed
    type: query
    connection: warehouse
    sql: "CREATE TABLE {ds}.users AS SELECT 1 AS id, 'old' AS name UNION ALL SELECT 2 AS id, 'kept' AS name; CREATE TABLE {ds}.daily AS SELECT '{{{{ ds }}}}' AS day, 1 AS points UNION ALL SELECT '1999-01-01' AS day, 7 AS points"
  - id: merge
    type: query
    connection: warehouse
    sql: "SELECT 1 AS id, 'new' AS name UNION ALL SELECT 3 AS id, 'added' AS name"
    destination: {{table: {ds}.users, write: merge, key: [id]}}
    labels: {{team: data}}
    depends_on: [seed]
  - id: partition
    type: query
    connection: warehouse
    sql: "SELECT '{{{{ ds }}}}' AS day, 42 AS points"
    destination: {{table: {ds}.daily, write: replace_partition, partition_column: day}}
    depends_on: [seed]
  - id: append
    type: query
    connection: warehouse
    sql: "SELECT 'a' AS tag"
    destination: {{table: {ds}.tags}}
  - id: replace
    type: query
    connection: warehouse
    sql: "SELECT 'b' AS tag"
    destination: {{table: {ds}.tags, write: replace}}
    depends_on: [append]
"#
    );
    let dir = cloud_project(&emulators.moto, &emulators.bigquery, &[("bq.yaml", &dag)]);
    let run = ferry_in(dir.path(), &["run", "bq"], &AWS_ENV);
    assert!(run.status.success(), "{}{}", stdout(&run), stderr(&run));
    let users = bigquery_rows(
        &emulators.bigquery,
        &format!("SELECT id, name FROM {ds}.users ORDER BY id"),
    );
    assert_eq!(users, [["1", "new"], ["2", "kept"], ["3", "added"]]);
    let daily = bigquery_rows(
        &emulators.bigquery,
        &format!("SELECT points FROM {ds}.daily ORDER BY points"),
    );
    assert_eq!(
        daily,
        [["7"], ["42"]],
        "the other day is kept, this day replaced"
    );
    let tags = bigquery_rows(&emulators.bigquery, &format!("SELECT tag FROM {ds}.tags"));
    assert_eq!(tags, [["b"]]);
    // The job id is the attempt's, recorded on the task, with ferry's labels and the DAG's.
    let shown = shown(dir.path(), "bq__");
    let merge = task(&shown, "merge");
    let job_id = merge["external_job_id"].as_str().expect("a job id");
    assert!(
        job_id.starts_with("ferry-bq-merge-") && job_id.ends_with("-1"),
        "{job_id}"
    );
    assert!(merge["metrics"].get("bytes_processed").is_some(), "{merge}");
    // (The emulator keeps no labels; the stub test below reads them off the request.)
    let job = super::emulators::bigquery_get(&emulators.bigquery, &format!("jobs/{job_id}"));
    assert_eq!(job["status"]["state"], "DONE", "{job}");
}

#[test]
fn issue8_a_failed_bigquery_query_surfaces_bigquerys_message() {
    let Some(emulators) = emulators() else { return };
    let ds = unique("ferry_fails");
    bigquery_dataset(&emulators.bigquery, &ds);
    let dag = format!(
        "tasks:\n  - {{id: broken, type: query, connection: warehouse, sql: \"SELECT missing_column FROM {ds}.no_such_table\"}}\n"
    );
    let dir = cloud_project(&emulators.moto, &emulators.bigquery, &[("bq.yaml", &dag)]);
    let run = ferry_in(dir.path(), &["run", "bq"], &AWS_ENV);
    assert!(!run.status.success());
    let log = stdout(&ferry_in(dir.path(), &["logs", "bq__", "broken"], &[]));
    assert!(log.contains("BigQuery job ferry-bq-broken-"), "{log}");
    assert!(log.contains("no_such_table"), "{log}");
    // Not retried: a query error does not pass on another try.
    let shown = shown(dir.path(), "bq__");
    assert_eq!(task(&shown, "broken")["try_number"], 1);
}

#[test]
fn issue8_a_bigquery_job_is_retried_when_refused_for_now_and_cancelled_past_the_timeout() {
    let stub = Stub::start(|call, before| {
        let running = json!({"jobReference": {"projectId": "test-project", "jobId": "x"}, "status": {"state": "RUNNING"}}).to_string();
        match call.what.as_str() {
            "POST /bigquery/v2/projects/test-project/jobs" if before < 2 => (
                503,
                json!({"error": {"code": 503, "message": "Service is currently unavailable", "errors": [{"reason": "backendError", "message": "Service is currently unavailable"}], "status": "UNAVAILABLE"}}).to_string(),
            ),
            "POST /bigquery/v2/projects/test-project/jobs" => (200, running),
            what if what.starts_with("GET /bigquery/v2/projects/test-project/jobs/") => (200, running),
            what if what.ends_with("/cancel") => (200, json!({"job": {}}).to_string()),
            other => (404, json!({"error": {"code": 404, "message": format!("unexpected {other}"), "errors": [], "status": "NOT_FOUND"}}).to_string()),
        }
    });
    let dag = "tasks:\n  - {id: slow, type: query, connection: warehouse, sql: \"SELECT 1 AS one\", timeout: 4s, labels: {team: data}}\n";
    let dir = cloud_project("http://127.0.0.1:9", &stub.url, &[("bq.yaml", dag)]);
    let run = ferry_in(dir.path(), &["run", "bq"], &AWS_ENV);
    assert!(!run.status.success());
    let log = stdout(&ferry_in(dir.path(), &["logs", "bq__", "slow"], &[]));
    assert!(
        log.contains("submitting the BigQuery job: Service is currently unavailable (503 UNAVAILABLE) (transient; trying again in 1 s)"),
        "{log}"
    );
    assert!(
        log.contains("timed out; BigQuery job ferry-bq-slow-") && log.contains(" was cancelled"),
        "{log}"
    );
    let inserts: Vec<_> = stub
        .calls()
        .into_iter()
        .filter(|c| c.what == "POST /bigquery/v2/projects/test-project/jobs")
        .collect();
    assert_eq!(inserts.len(), 3);
    // The same job id every time (BigQuery answers a second insert of it with 409), ferry's
    // labels and the DAG's, standard SQL.
    let sent: serde_json::Value = serde_json::from_str(&inserts[2].body).expect("JSON");
    assert_eq!(inserts[0].body, inserts[2].body);
    let labels = &sent["configuration"]["labels"];
    assert_eq!(labels["ferry_dag"], "bq", "{sent}");
    assert_eq!(labels["ferry_task"], "slow", "{sent}");
    assert!(
        labels["ferry_run"]
            .as_str()
            .is_some_and(|r| r.starts_with("bq__manual__")),
        "{sent}"
    );
    assert_eq!(labels["team"], "data", "{sent}");
    assert_eq!(
        sent["configuration"]["query"]["useLegacySql"], false,
        "{sent}"
    );
    assert!(
        stub.calls().iter().any(|c| c.what.ends_with("/cancel")),
        "{:?}",
        stub.calls()
    );
}

#[test]
fn issue8_validate_connect_dry_runs_bigquery_queries() {
    let Some(emulators) = emulators() else { return };
    let ds = unique("ferry_dry");
    bigquery_dataset(&emulators.bigquery, &ds);
    super::emulators::bigquery_call(
        &emulators.bigquery,
        "queries",
        json!({"query": format!("CREATE TABLE {ds}.daily AS SELECT '2026-11-28' AS day, 1 AS points"), "useLegacySql": false}),
    );
    let good = format!(
        "tasks:\n  - {{id: fine, type: query, connection: warehouse, sql: \"SELECT points FROM {ds}.daily WHERE day = '{{{{ ds }}}}'\"}}\n"
    );
    let dir = cloud_project(
        &emulators.moto,
        &emulators.bigquery,
        &[("good.yaml", &good)],
    );
    let output = ferry_in(dir.path(), &["validate", "--connect"], &[]);
    assert!(output.status.success(), "{}", stdout(&output));
    assert!(
        stdout(&output).contains("dag `good`, task `fine`: BigQuery dry run ok: would process"),
        "{}",
        stdout(&output)
    );
    let bad = format!(
        "tasks:\n  - {{id: broken, type: query, connection: warehouse, sql: \"SELECT no_such_column FROM {ds}.daily\"}}\n"
    );
    std::fs::write(dir.path().join("dags/internal/bad.yaml"), bad).expect("DAG");
    let output = ferry_in(dir.path(), &["validate", "--connect"], &[]);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert!(
        stdout(&output)
            .contains("dag `bad`, task `broken`: error[dry-run]: connection `warehouse` (bigquery")
            && stdout(&output).contains("no_such_column"),
        "{}",
        stdout(&output)
    );
    // Without --connect nothing is asked of BigQuery: the file is valid.
    assert!(ferry_in(dir.path(), &["validate"], &[]).status.success());
}

#[test]
fn issue8_clearing_a_running_bigquery_query_cancels_its_job() {
    let stub = Stub::start(|call, _| {
        let running = json!({"jobReference": {"projectId": "test-project", "jobId": "x"}, "status": {"state": "RUNNING"}}).to_string();
        match call.what.as_str() {
            "POST /bigquery/v2/projects/test-project/jobs" => (200, running),
            what if what.starts_with("GET /bigquery/v2/projects/test-project/jobs/") => (200, running),
            what if what.ends_with("/cancel") => (200, json!({"job": {}}).to_string()),
            other => (404, json!({"error": {"code": 404, "message": format!("unexpected {other}"), "errors": [], "status": "NOT_FOUND"}}).to_string()),
        }
    });
    let dag =
        "tasks:\n  - {id: slow, type: query, connection: warehouse, sql: \"SELECT 1 AS one\"}\n";
    let dir = cloud_project("http://127.0.0.1:9", &stub.url, &[("bq.yaml", dag)]);
    let mut serve = crate::util::spawn_ferry_with(dir.path(), &["serve"], &AWS_ENV);
    let run = crate::util::spawn_ferry_with(dir.path(), &["run", "bq"], &AWS_ENV);
    crate::util::wait_until(std::time::Duration::from_secs(30), || {
        stub.calls().iter().any(|c| c.what.starts_with("GET "))
    });
    let cleared = ferry_in(dir.path(), &["tasks", "clear", "bq__", "slow"], &[]);
    assert!(cleared.status.success(), "{}", stderr(&cleared));
    crate::util::wait_until(std::time::Duration::from_secs(30), || {
        stub.calls().iter().any(|c| c.what.ends_with("/cancel"))
    });
    let cancel = stub
        .calls()
        .into_iter()
        .find(|c| c.what.ends_with("/cancel"))
        .expect("a cancel");
    assert!(
        cancel.what.contains("/jobs/ferry-bq-slow-") && cancel.what.contains("-1/cancel"),
        "{cancel:?}"
    );
    crate::util::nix_kill(&serve, "TERM");
    let _ = serve.wait();
    drop(run);
}

#[test]
fn issue8_connections_test_reaches_bigquery_and_aws() {
    let Some(emulators) = emulators() else { return };
    let dir = cloud_project(&emulators.moto, &emulators.bigquery, &[]);
    let warehouse = ferry_in(dir.path(), &["connections", "test", "warehouse"], &AWS_ENV);
    assert!(
        stdout(&warehouse).contains(
            "connection warehouse (bigquery): ok, BigQuery project test-project ran SELECT 1"
        ),
        "{}{}",
        stdout(&warehouse),
        stderr(&warehouse)
    );
    let aws = ferry_in(dir.path(), &["connections", "test", "aws"], &AWS_ENV);
    assert!(
        stdout(&aws).contains("connection aws (aws): ok, AWS us-east-1: S3 answered"),
        "{}{}",
        stdout(&aws),
        stderr(&aws)
    );
}
