//! `transfer`: rows from SQLite, PostgreSQL or S3 objects into SQLite, PostgreSQL, MariaDB
//! and BigQuery by write mode; bad values named with their row and column, leaving the table
//! as it was; a timeout writes nothing; a kill -9 at a random moment never leaves half a
//! write; throttling of BigQuery's streaming retried (a stub).

use std::time::Duration;

use serde_json::json;

use super::emulators::{
    AWS_ENV, bigquery_dataset, bigquery_rows, emulators, put_object, shown, task, unique,
};
use super::stub::Stub;
use crate::util::{
    ferry_in, finish_after_kill, nix_kill, project, service, spawn_ferry_with,
    sql_execute as execute, sql_scalar as scalar, stderr, stdout,
};

/// A project with an `app` SQLite database of `rows` events and the given connections.
fn app_project(rows: usize, connections: &str, dags: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = project(dags);
    let config = std::fs::read_to_string(dir.path().join("ferry.toml")).expect("config");
    std::fs::write(
        dir.path().join("ferry.toml"),
        format!(
            "{config}\n[environments.dev.connections.app]\nkind = \"sqlite\"\npath = \"app.db\"\n\n[environments.dev.connections.local]\nkind = \"sqlite\"\npath = \"local.db\"\n{connections}"
        ),
    )
    .expect("config");
    let app = format!("sqlite:{}", dir.path().join("app.db").display());
    execute(
        &app,
        &format!(
            "CREATE TABLE events (id INTEGER PRIMARY KEY, user_id INTEGER, kind TEXT, points REAL, at TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
             INSERT INTO events SELECT i, i % 7, CASE WHEN i % 3 = 0 THEN 'login' ELSE 'answer' END, i * 0.5, '2026-11-28T10:00:00' FROM n;"
        ),
    );
    execute(
        &format!("sqlite:{}", dir.path().join("local.db").display()),
        "SELECT 1",
    );
    dir
}

#[test]
fn issue8_transfer_moves_rows_between_sql_databases_by_mode() {
    let suffix = std::process::id();
    let mut targets = vec![("local", String::new())];
    if service("PostgreSQL", 5432) {
        targets.push(("pg", "postgres://postgres@127.0.0.1:5432/test".to_string()));
    }
    if service("MariaDB", 3306) {
        targets.push(("maria", "mysql://root@127.0.0.1:3306/test".to_string()));
    }
    let connections = "[environments.dev.connections.pg]\nkind = \"postgres\"\nurl = \"postgres://postgres@127.0.0.1:5432/test\"\n\n[environments.dev.connections.maria]\nkind = \"mysql\"\nurl = \"mysql://root@127.0.0.1:3306/test\"\n";
    for (connection, url) in targets {
        let table = format!("events_{suffix}");
        let dag = format!(
            r#"tasks:
  - id: merge
    type: transfer
    source: {{connection: app, sql: "SELECT id, user_id, kind, points, at FROM events WHERE id > {{{{ params.from }}}}"}}
    destination: {{connection: {connection}, table: {table}, write: merge, key: [id]}}
    batch_size: 7
params: {{from: 0}}
"#
        );
        let dir = app_project(1000, connections, &[("forward.yaml", &dag)]);
        let url = if url.is_empty() {
            format!("sqlite:{}", dir.path().join("local.db").display())
        } else {
            url
        };
        execute(&url, &format!("DROP TABLE IF EXISTS {table}"));
        for run in 0..2 {
            let args: &[&str] = if run == 0 {
                &["run", "forward"]
            } else {
                &["run", "forward", "--param", "from=500"]
            };
            let output = ferry_in(dir.path(), args, &[]);
            assert!(
                output.status.success(),
                "{connection}: {}{}",
                stdout(&output),
                stderr(&output)
            );
        }
        // Twice merged: each row once; the second run replaced rows 501..1000.
        assert_eq!(
            scalar(
                &url,
                &format!("SELECT CAST(COUNT(*) AS CHAR(12)) FROM {table}")
            ),
            "1000",
            "{connection}"
        );
        assert_eq!(
            scalar(
                &url,
                &format!("SELECT CAST(SUM(points) AS CHAR(20)) FROM {table}")
            )
            .trim_end_matches(".0"),
            "250250",
            "{connection}"
        );
        let runs = stdout(&ferry_in(
            dir.path(),
            &["runs", "list", "--format", "json"],
            &[],
        ));
        let runs: serde_json::Value = serde_json::from_str(&runs).expect("JSON");
        let newest = runs[0]["run_id"].as_str().expect("a run").to_string();
        let shown = shown(dir.path(), &newest);
        let figures = &task(&shown, "merge")["metrics"];
        assert_eq!(figures["rows_read"], 500, "{connection}: {shown}");
        assert_eq!(figures["rows_written"], 500, "{connection}: {shown}");
        assert_eq!(figures["rows_replaced"], 500, "{connection}: {shown}");
        execute(&url, &format!("DROP TABLE IF EXISTS {table}"));
    }
}

#[test]
fn issue8_a_bad_value_is_named_and_leaves_the_table_as_it_was() {
    let dag = r#"tasks:
  - id: typed
    type: transfer
    source: {connection: app, sql: "SELECT id, CASE WHEN id = 642 THEN 'six hundred' ELSE CAST(user_id AS TEXT) END AS user_id FROM events"}
    destination: {connection: local, table: typed, write: replace}
    schema: [{name: id, type: int64}, {name: user_id, type: int64}]
    batch_size: 100
"#;
    let dir = app_project(1000, "", &[("typed.yaml", dag)]);
    let local = format!("sqlite:{}", dir.path().join("local.db").display());
    execute(
        &local,
        "CREATE TABLE typed (id INTEGER, user_id INTEGER); INSERT INTO typed VALUES (1, 1)",
    );
    let run = ferry_in(dir.path(), &["run", "typed"], &[]);
    assert!(!run.status.success());
    let log = stdout(&ferry_in(dir.path(), &["logs", "typed__", "typed"], &[]));
    assert!(
        log.contains("row 642, column `user_id`: `six hundred` is not an integer"),
        "{log}"
    );
    assert_eq!(
        scalar(&local, "SELECT CAST(COUNT(*) AS TEXT) FROM typed"),
        "1"
    );
    // Not retried: a bad value does not mend itself.
    assert_eq!(
        task(&shown(dir.path(), "typed__"), "typed")["try_number"],
        1
    );
}

#[test]
fn issue8_a_transfer_past_its_timeout_writes_nothing() {
    if !service("PostgreSQL", 5432) {
        return;
    }
    let table = format!("slow_{}", std::process::id());
    let dag = format!(
        r#"tasks:
  - id: slow
    type: transfer
    source: {{connection: pg, sql: "SELECT i AS id FROM generate_series(1, 3) AS i WHERE pg_sleep(1)::text = ''"}}
    destination: {{connection: local, table: {table}, write: replace}}
    batch_size: 1
    timeout: 1500ms
    retries: 0
"#
    );
    let dir = app_project(
        1,
        "[environments.dev.connections.pg]\nkind = \"postgres\"\nurl = \"postgres://postgres@127.0.0.1:5432/test\"\n",
        &[("slow.yaml", &dag)],
    );
    let local = format!("sqlite:{}", dir.path().join("local.db").display());
    execute(
        &local,
        &format!("CREATE TABLE {table} (id INTEGER); INSERT INTO {table} VALUES (42)"),
    );
    let run = ferry_in(dir.path(), &["run", "slow"], &[]);
    assert!(!run.status.success());
    let shown = shown(dir.path(), "slow__");
    assert_eq!(task(&shown, "slow")["state"], "failed", "{shown}");
    assert_eq!(
        scalar(&local, &format!("SELECT CAST(id AS TEXT) FROM {table}")),
        "42"
    );
}

#[test]
fn issue8_a_killed_transfer_never_leaves_half_a_write() {
    if !service("PostgreSQL", 5432) {
        return;
    }
    let pg = "postgres://postgres@127.0.0.1:5432/test";
    for kill in 0..5u64 {
        let table = format!("killed_{}_{kill}", std::process::id());
        let dag = format!(
            "tasks:\n  - {{id: forward, type: transfer, source: {{connection: app, sql: \"SELECT id, user_id, kind, points FROM events\"}}, destination: {{connection: pg, table: {table}, write: merge, key: [id]}}, batch_size: 5000, retries: 2, retry_delay: 1s}}\n"
        );
        let dir = app_project(
            60_000,
            &format!("[environments.dev.connections.pg]\nkind = \"postgres\"\nurl = \"{pg}\"\n"),
            &[("forward.yaml", &dag)],
        );
        execute(pg, &format!("DROP TABLE IF EXISTS {table}"));
        let mut rng = fastrand::Rng::with_seed(kill * 31 + 5);
        let run = spawn_ferry_with(dir.path(), &["run", "forward"], &[]);
        std::thread::sleep(Duration::from_millis(rng.u64(0..1500)));
        nix_kill(&run, "KILL");
        let _ = run.wait_with_output();
        // Whatever the moment: no table, or the whole of it.
        let now = scalar(
            pg,
            &format!(
                "SELECT CAST(COUNT(*) AS TEXT) FROM information_schema.tables WHERE table_name = '{table}'"
            ),
        );
        if now == "1" {
            let rows = scalar(pg, &format!("SELECT CAST(COUNT(*) AS TEXT) FROM {table}"));
            assert!(
                rows == "0" || rows == "60000",
                "kill {kill}: half a write: {rows} rows"
            );
        }
        if let Some(runs) = finish_after_kill(dir.path(), "forward", &[]) {
            assert_eq!(runs[0]["state"], "success", "kill {kill}: {runs}");
        }
        assert_eq!(
            scalar(pg, &format!("SELECT CAST(COUNT(*) AS TEXT) FROM {table}")),
            "60000",
            "kill {kill}"
        );
        assert_eq!(
            scalar(
                pg,
                &format!("SELECT CAST(COUNT(DISTINCT id) AS TEXT) FROM {table}")
            ),
            "60000",
            "kill {kill}"
        );
        execute(pg, &format!("DROP TABLE IF EXISTS {table}"));
    }
}

#[test]
fn issue8_transfer_reads_s3_csv_and_newline_json_into_bigquery_and_sqlite() {
    let Some(emulators) = emulators() else { return };
    let bucket = unique("exports").replace('_', "-");
    put_object(
        &emulators.moto,
        &bucket,
        "events/2026-11-28/part-0001.csv",
        "id,kind,points\n1,answer,2.5\n2,login,\n",
    );
    put_object(
        &emulators.moto,
        &bucket,
        "events/2026-11-28/part-0002.csv",
        "id,kind,points\n3,\"answer, late\",4\n",
    );
    put_object(
        &emulators.moto,
        &bucket,
        "events/2026-11-27/part-0001.csv",
        "id,kind,points\n99,old,1\n",
    );
    put_object(
        &emulators.moto,
        &bucket,
        "users/2026-11-28.ndjson",
        "{\"id\": 1, \"name\": \"Aiko\", \"tags\": [\"a\"]}\n{\"id\": 2, \"name\": null}\n",
    );
    let ds = unique("ferry_s3");
    bigquery_dataset(&emulators.bigquery, &ds);
    let dag = format!(
        r#"tasks:
  - id: events
    type: transfer
    source: {{connection: aws, bucket: {bucket}, prefix: "events/{{{{ ds }}}}/", format: csv}}
    destination: {{connection: warehouse, table: {ds}.events, write: replace}}
    schema: [{{name: id, type: int64}}, {{name: kind, type: string}}, {{name: points, type: float64}}]
  - id: users
    type: transfer
    source: {{connection: aws, bucket: {bucket}, prefix: users/, format: ndjson}}
    destination: {{connection: local, table: users, write: merge, key: [id]}}
"#
    );
    let dir =
        super::emulators::cloud_project(&emulators.moto, &emulators.bigquery, &[("s3.yaml", &dag)]);
    let config = std::fs::read_to_string(dir.path().join("ferry.toml")).expect("config");
    std::fs::write(
        dir.path().join("ferry.toml"),
        config + "\n[environments.dev.connections.local]\nkind = \"sqlite\"\npath = \"local.db\"\n",
    )
    .expect("config");
    let local = format!("sqlite:{}", dir.path().join("local.db").display());
    execute(&local, "SELECT 1");
    let run = ferry_in(
        dir.path(),
        &["run", "s3", "--date", "2026-11-28", "--force"],
        &AWS_ENV,
    );
    let log = stdout(&ferry_in(dir.path(), &["logs", "s3__", "events"], &[]));
    assert!(
        run.status.success(),
        "{}{}\n{log}",
        stdout(&run),
        stderr(&run)
    );
    let rows = bigquery_rows(
        &emulators.bigquery,
        &format!("SELECT id, kind, points FROM {ds}.events ORDER BY id"),
    );
    assert_eq!(
        rows,
        [
            ["1", "answer", "2.5"],
            ["2", "login", "NULL"],
            ["3", "answer, late", "4.0"]
        ]
    );
    assert_eq!(
        scalar(&local, "SELECT name || ',' || tags FROM users WHERE id = 1"),
        "Aiko,[\"a\"]"
    );
    assert_eq!(
        scalar(
            &local,
            "SELECT CAST(COUNT(*) AS TEXT) FROM users WHERE name IS NULL"
        ),
        "1"
    );
}

#[test]
fn issue8_bigquery_streaming_is_retried_when_refused_for_now() {
    let stub = Stub::start(|call, before| {
        let what = call.what.as_str();
        if what == "POST /bigquery/v2/projects/test-project/datasets/raw/tables" {
            (200, call.body.clone())
        } else if what.ends_with("/insertAll") && before < 2 {
            (503, json!({"error": {"code": 503, "message": "Service is currently unavailable", "errors": [{"reason": "backendError"}], "status": "UNAVAILABLE"}}).to_string())
        } else if what.ends_with("/insertAll") {
            (
                200,
                json!({"kind": "bigquery#tableDataInsertAllResponse"}).to_string(),
            )
        } else if what == "POST /bigquery/v2/projects/test-project/jobs" {
            (200, json!({"jobReference": {"projectId": "test-project", "jobId": "x"}, "status": {"state": "DONE"}, "statistics": {"totalBytesProcessed": "120"}}).to_string())
        } else if what.starts_with("DELETE ") {
            (404, json!({"error": {"code": 404, "message": "Not found", "errors": [], "status": "NOT_FOUND"}}).to_string())
        } else {
            (404, json!({"error": {"code": 404, "message": format!("unexpected {what}"), "errors": [], "status": "NOT_FOUND"}}).to_string())
        }
    });
    let dag = "tasks:\n  - {id: forward, type: transfer, source: {connection: app, sql: \"SELECT id, kind FROM events\"}, destination: {connection: warehouse, table: raw.events}}\n";
    let dir = app_project(
        20,
        &format!(
            "[environments.dev.connections.warehouse]\nkind = \"bigquery\"\nproject = \"test-project\"\ncredentials = \"none\"\nendpoint = \"{}\"\n",
            stub.url
        ),
        &[("forward.yaml", dag)],
    );
    let run = ferry_in(dir.path(), &["run", "forward"], &[]);
    assert!(run.status.success(), "{}{}", stdout(&run), stderr(&run));
    let log = stdout(&ferry_in(
        dir.path(),
        &["logs", "forward__", "forward"],
        &[],
    ));
    assert!(log.contains("streaming rows into the staging table: Service is currently unavailable (503 UNAVAILABLE) (transient; trying again in 1 s)"), "{log}");
    assert!(
        log.contains("20 row(s) read, 20 written into raw.events"),
        "{log}"
    );
    let shown = shown(dir.path(), "forward__");
    assert_eq!(
        task(&shown, "forward")["metrics"]["bytes_processed"],
        120,
        "{shown}"
    );
    let inserts: Vec<_> = stub
        .calls()
        .into_iter()
        .filter(|c| c.what.ends_with("/insertAll"))
        .collect();
    assert_eq!(inserts.len(), 3);
    assert_eq!(
        inserts[0].body, inserts[2].body,
        "the same rows with the same insert ids"
    );
}

#[test]
fn issue8_transfer_reads_parquet_objects() {
    let Some(emulators) = emulators() else { return };
    let bucket = unique("parquet").replace('_', "-");
    let fixture =
        std::fs::read(crate::util::fixtures().join("objects/events.parquet")).expect("fixture");
    put_object(
        &emulators.moto,
        &bucket,
        "events/part-0.parquet",
        fixture.clone(),
    );
    put_object(&emulators.moto, &bucket, "events/part-1.parquet", fixture);
    let dag = format!(
        "tasks:\n  - {{id: load, type: transfer, source: {{connection: aws, bucket: {bucket}, prefix: events/, format: parquet}}, destination: {{connection: local, table: events, write: append}}, batch_size: 2}}\n"
    );
    let dir =
        super::emulators::cloud_project(&emulators.moto, &emulators.bigquery, &[("pq.yaml", &dag)]);
    let config = std::fs::read_to_string(dir.path().join("ferry.toml")).expect("config");
    std::fs::write(
        dir.path().join("ferry.toml"),
        config + "\n[environments.dev.connections.local]\nkind = \"sqlite\"\npath = \"local.db\"\n",
    )
    .expect("config");
    let local = format!("sqlite:{}", dir.path().join("local.db").display());
    execute(&local, "SELECT 1");
    let run = ferry_in(dir.path(), &["run", "pq"], &AWS_ENV);
    assert!(run.status.success(), "{}{}", stdout(&run), stderr(&run));
    assert_eq!(
        scalar(&local, "SELECT CAST(COUNT(*) AS TEXT) FROM events"),
        "6"
    );
    assert_eq!(
        scalar(
            &local,
            "SELECT group_concat(kind || ':' || IFNULL(points, 'null') || ':' || day || ':' || IFNULL(correct, 'null'), ',') FROM (SELECT * FROM events ORDER BY id LIMIT 3)"
        ),
        "answer:2.5:2026-11-28:1,answer:2.5:2026-11-28:1,login:null:2026-11-28:0"
    );
}

#[test]
fn issue8_clearing_a_running_transfer_rolls_it_back() {
    if !service("PostgreSQL", 5432) {
        return;
    }
    let table = format!("cleared_{}", std::process::id());
    let dag = format!(
        r#"tasks:
  - id: slow
    type: transfer
    source: {{connection: pg, sql: "SELECT i AS id FROM generate_series(1, 30) AS i WHERE pg_sleep(1)::text = ''"}}
    destination: {{connection: local, table: {table}, write: replace}}
    batch_size: 1
"#
    );
    let dir = app_project(
        1,
        "[environments.dev.connections.pg]\nkind = \"postgres\"\nurl = \"postgres://postgres@127.0.0.1:5432/test\"\n",
        &[("slow.yaml", &dag)],
    );
    let local = format!("sqlite:{}", dir.path().join("local.db").display());
    execute(
        &local,
        &format!("CREATE TABLE {table} (id INTEGER); INSERT INTO {table} VALUES (42)"),
    );
    let mut serve = spawn_ferry_with(dir.path(), &["serve"], &[]);
    let run = spawn_ferry_with(dir.path(), &["run", "slow"], &[]);
    crate::util::wait_until(Duration::from_secs(30), || {
        ferry_in(
            dir.path(),
            &["runs", "show", "slow__", "--format", "json"],
            &[],
        )
        .status
        .success()
            && task(&shown(dir.path(), "slow__"), "slow")["state"] == "running"
    });
    std::thread::sleep(Duration::from_millis(1500));
    let started = std::time::Instant::now();
    let cleared = ferry_in(dir.path(), &["tasks", "clear", "slow__", "slow"], &[]);
    assert!(cleared.status.success(), "{}", stderr(&cleared));
    // The try is stopped at once (the next one starts), and nothing of it was written.
    crate::util::wait_until(Duration::from_secs(20), || {
        task(&shown(dir.path(), "slow__"), "slow")["try_number"] == 2
    });
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        scalar(&local, &format!("SELECT group_concat(id) FROM {table}")),
        "42"
    );
    nix_kill(&serve, "TERM");
    let _ = serve.wait();
    drop(run);
}

#[test]
fn issue8_a_killed_query_into_a_destination_is_written_once() {
    if !service("PostgreSQL", 5432) {
        return;
    }
    let pg = "postgres://postgres@127.0.0.1:5432/test";
    for kill in 0..4u64 {
        let table = format!("query_killed_{}_{kill}", std::process::id());
        let dag = format!(
            "tasks:\n  - {{id: daily, type: query, connection: pg, sql: \"SELECT '{{{{ ds }}}}' AS day, i AS n FROM generate_series(1, 200000) AS i\", destination: {{table: {table}, write: replace_partition, partition_column: day}}, retries: 2, retry_delay: 1s}}\n"
        );
        let dir = app_project(
            1,
            &format!("[environments.dev.connections.pg]\nkind = \"postgres\"\nurl = \"{pg}\"\n"),
            &[("daily.yaml", &dag)],
        );
        execute(pg, &format!("DROP TABLE IF EXISTS {table}"));
        let mut rng = fastrand::Rng::with_seed(kill * 13 + 7);
        let run = spawn_ferry_with(dir.path(), &["run", "daily"], &[]);
        std::thread::sleep(Duration::from_millis(rng.u64(0..1200)));
        nix_kill(&run, "KILL");
        let _ = run.wait_with_output();
        if let Some(runs) = finish_after_kill(dir.path(), "daily", &[]) {
            assert_eq!(runs[0]["state"], "success", "kill {kill}: {runs}");
        }
        // Rolled back or committed whole, and written again by mode: the day's rows once.
        assert_eq!(
            scalar(pg, &format!("SELECT CAST(COUNT(*) AS TEXT) FROM {table}")),
            "200000",
            "kill {kill}"
        );
        execute(pg, &format!("DROP TABLE IF EXISTS {table}"));
    }
}

#[test]
fn issue8_a_database_that_cannot_be_reached_is_tried_again_by_the_retry_policy() {
    // Nothing listens on port 9: a lost connection may pass on another try, a SQL error not.
    let dag = "tasks:\n  - {id: load, type: query, connection: down, sql: 'SELECT 1', retries: 1, retry_delay: 1s}\n  - {id: forward, type: transfer, source: {connection: down, sql: 'SELECT 1 AS one'}, destination: {connection: local, table: ones}, retries: 1, retry_delay: 1s}\n";
    let dir = app_project(
        1,
        "[environments.dev.connections.down]\nkind = \"postgres\"\nurl = \"postgres://postgres@127.0.0.1:9/test\"\n",
        &[("down.yaml", dag)],
    );
    let run = ferry_in(dir.path(), &["run", "down"], &[]);
    assert!(!run.status.success());
    let shown = shown(dir.path(), "down__");
    for id in ["load", "forward"] {
        assert_eq!(
            task(&shown, id)["try_number"],
            2,
            "{id} was tried again: {shown}"
        );
        assert_eq!(task(&shown, id)["state"], "failed", "{shown}");
    }
}
