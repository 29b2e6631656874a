//! Issue 9: `reverse_sync` into SQLite, PostgreSQL and MariaDB targets, through the binary:
//! every mode, the diff, the delete guard, a scoped mirror, duplicate and NULL keys, rejects,
//! `ferry sync plan`, and kill -9 at random moments (the target exactly as before or as after).

use std::time::Duration;

use crate::util::{
    ferry_in, finish_after_kill, fresh_mysql, fresh_postgres, nix_kill, project, spawn_ferry_with,
    sql_column, sql_execute as execute, sql_scalar as scalar, stdout,
};

/// A target database: its kind, its connection in ferry.toml, and a URL for the checks.
struct Target {
    kind: &'static str,
    connection: String,
    url: String,
}

/// The targets this machine has: SQLite always, PostgreSQL and MariaDB when they answer.
fn targets(dir: &std::path::Path, name: &str) -> Vec<Target> {
    let mut targets = vec![Target {
        kind: "sqlite",
        connection: "kind = \"sqlite\"\npath = \"app.db\"".to_string(),
        url: format!("sqlite:{}", dir.join("app.db").display()),
    }];
    execute(&targets[0].url, "SELECT 1");
    if let Some(url) = fresh_postgres(name) {
        targets.push(Target {
            kind: "postgres",
            connection: format!("kind = \"postgres\"\nurl = \"{url}\""),
            url,
        });
    }
    if let Some(url) = fresh_mysql(name) {
        targets.push(Target {
            kind: "mysql",
            connection: format!("kind = \"mysql\"\nurl = \"{url}\""),
            url,
        });
    }
    targets
}

/// The application's table, as an application would make it.
fn create_scores(target: &Target) -> String {
    let (real, date) = match target.kind {
        "sqlite" => ("REAL", "TEXT"),
        "postgres" => ("DOUBLE PRECISION", "DATE"),
        _ => ("DOUBLE", "DATE"),
    };
    format!(
        "CREATE TABLE class_scores (school_id INTEGER NOT NULL, class_id INTEGER NOT NULL, day {date} NOT NULL, avg_points {real}, students INTEGER CHECK (students < 100), PRIMARY KEY (school_id, class_id, day))"
    )
}

/// Every row of the target's `class_scores`, as `school|class|day|avg|students`, sorted.
fn scores(target: &Target) -> Vec<String> {
    let sql = match target.kind {
        "sqlite" => {
            "SELECT school_id || '|' || class_id || '|' || day || '|' || avg_points || '|' || students FROM class_scores ORDER BY school_id, class_id, day"
        }
        _ => {
            "SELECT CONCAT(school_id, '|', class_id, '|', day, '|', avg_points, '|', students) FROM class_scores ORDER BY school_id, class_id, day"
        }
    };
    sql_column(&target.url, sql)
}

/// A `reverse_sync` DAG from the warehouse's `agg` into the target's `class_scores`.
fn sync_dag(id: &str, extra: &str) -> String {
    format!(
        "id: {id}\nparams: {{school: \"1\"}}\ntasks:\n  - id: sync\n    type: reverse_sync\n    source: {{connection: warehouse, sql: \"SELECT school_id, class, day, avg_points, students FROM agg\"}}\n    target: {{connection: app, table: class_scores}}\n    columns: {{class_id: class}}\n{extra}"
    )
}

/// Runs DAG `dag` once (extra arguments after it); whether it succeeded and the last line
/// of the sync's log.
fn sync_once(dir: &std::path::Path, dag: &str, extra: &[&str]) -> (bool, String) {
    let mut args = vec!["run", dag];
    args.extend_from_slice(extra);
    let run = ferry_in(dir, &args, &[]);
    let log = stdout(&ferry_in(
        dir,
        &["logs", &latest_run(dir, dag), "sync"],
        &[],
    ));
    let last = log
        .trim_end()
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    (run.status.success(), last)
}

/// The runs of DAG `dag`, newest first.
fn runs_of(dir: &std::path::Path, dag: &str) -> Vec<serde_json::Value> {
    let listed = stdout(&ferry_in(
        dir,
        &["runs", "list", "--dag", dag, "--format", "json"],
        &[],
    ));
    serde_json::from_str::<serde_json::Value>(&listed)
        .ok()
        .and_then(|runs| runs.as_array().cloned())
        .unwrap_or_default()
}

/// The id of DAG `dag`'s newest run.
fn latest_run(dir: &std::path::Path, dag: &str) -> String {
    runs_of(dir, dag)
        .first()
        .and_then(|run| run["run_id"].as_str())
        .expect("a run")
        .to_string()
}

/// Points the project's `warehouse` connection at `warehouse.db` and `app` at `target`, after
/// `engine` (settings of the `[engine]` table, or nothing).
fn use_target(dir: &std::path::Path, target: &Target, engine: &str) {
    std::fs::write(
        dir.join("ferry.toml"),
        format!(
            "{engine}[environments.dev.connections.warehouse]\nkind = \"sqlite\"\npath = \"warehouse.db\"\n\n[environments.dev.connections.app]\n{}\n",
            target.connection
        ),
    )
    .expect("config");
}

#[test]
fn issue9_reverse_sync_modes_diff_guard_scope_keys_and_rejects_on_every_target() {
    let dir = project(&[]);
    let warehouse = format!("sqlite:{}", dir.path().join("warehouse.db").display());
    execute(
        &warehouse,
        "CREATE TABLE agg (school_id INTEGER, class INTEGER, day TEXT, avg_points REAL, students INTEGER)",
    );
    for target in targets(dir.path(), "sync_modes") {
        let kind = target.kind;
        use_target(dir.path(), &target, "");
        execute(&target.url, &create_scores(&target));
        let dags = dir.path().join("dags/internal");
        for (id, extra) in [
            ("up", "    key: [school_id, class_id, day]\n"),
            (
                "upd",
                "    key: [school_id, class_id, day]\n    mode: update\n    max_rejected: 1\n",
            ),
            (
                "ins",
                "    key: [school_id, class_id, day]\n    mode: insert\n",
            ),
            (
                "mir",
                "    key: [school_id, class_id, day]\n    mode: mirror\n    scope: {school_id: \"{{ params.school }}\"}\n    max_delete: 1\n",
            ),
            (
                "lenient",
                "    key: [school_id, class_id, day]\n    max_rejected: 10%\n",
            ),
        ] {
            std::fs::write(dags.join(format!("{id}.yaml")), sync_dag(id, extra)).expect("DAG");
        }
        let set = |rows: &str| {
            execute(
                &warehouse,
                &format!("DELETE FROM agg; INSERT INTO agg VALUES {rows}"),
            );
        };

        // upsert: a first load, then a rerun that writes nothing, then a change.
        set(
            "(1, 1, '2026-11-28', 3.5, 20), (1, 2, '2026-11-28', 4.25, 25), (2, 1, '2026-11-28', 2.5, 30)",
        );
        let (ok, said) = sync_once(dir.path(), "up", &[]);
        assert!(ok, "{kind}: {said}");
        assert!(
            said.ends_with(
                "3 row(s) read; 3 inserted, 0 updated, 0 deleted, 0 unchanged, 0 rejected"
            ),
            "{kind}: {said}"
        );
        let (_, said) = sync_once(dir.path(), "up", &[]);
        assert!(
            said.ends_with(
                "3 row(s) read; 0 inserted, 0 updated, 0 deleted, 3 unchanged, 0 rejected"
            ),
            "{kind}: a rerun writes nothing: {said}"
        );
        set(
            "(1, 1, '2026-11-28', 3.5, 20), (1, 2, '2026-11-28', 4.75, 25), (2, 1, '2026-11-28', 2.5, 30), (1, 3, '2026-11-28', 1.5, 10)",
        );
        let plan = stdout(&ferry_in(dir.path(), &["sync", "plan", "up", "sync"], &[]));
        assert!(
            plan.contains("it would insert 1, update 1, delete 0, leave 2 unchanged and reject 0"),
            "{kind}: {plan}"
        );
        assert_eq!(scores(&target).len(), 3, "{kind}: a plan writes nothing");
        let (_, said) = sync_once(dir.path(), "up", &[]);
        assert!(
            said.ends_with(
                "4 row(s) read; 1 inserted, 1 updated, 0 deleted, 2 unchanged, 0 rejected"
            ),
            "{kind}: {said}"
        );
        assert_eq!(
            scores(&target),
            [
                "1|1|2026-11-28|3.5|20",
                "1|2|2026-11-28|4.75|25",
                "1|3|2026-11-28|1.5|10",
                "2|1|2026-11-28|2.5|30"
            ],
            "{kind}"
        );
        // A row deleted in the application by hand is written again by the next sync.
        execute(&target.url, "DELETE FROM class_scores WHERE class_id = 3");
        let (_, said) = sync_once(dir.path(), "up", &[]);
        assert!(
            said.ends_with(
                "4 row(s) read; 1 inserted, 0 updated, 0 deleted, 3 unchanged, 0 rejected"
            ),
            "{kind}: {said}"
        );
        let shown = stdout(&ferry_in(
            dir.path(),
            &["runs", "show", &latest_run(dir.path(), "up")],
            &[],
        ));
        assert!(
            shown.contains("rows_deleted 0, rows_inserted 1, rows_read 4, rows_rejected 0, rows_unchanged 3, rows_updated 0"),
            "{kind}: {shown}"
        );

        // update: changed rows only; a key the target lacks is rejected (within max_rejected).
        set("(1, 1, '2026-11-28', 3.75, 20), (9, 9, '2026-11-28', 1.25, 5)");
        let (ok, said) = sync_once(dir.path(), "upd", &[]);
        assert!(ok, "{kind}: {said}");
        assert!(
            said.ends_with(
                "2 row(s) read; 0 inserted, 1 updated, 0 deleted, 0 unchanged, 1 rejected"
            ),
            "{kind}: {said}"
        );
        assert_eq!(
            scalar(
                &target.url,
                "SELECT reason FROM ferry_sync_rejects WHERE row_key = 'school_id=9, class_id=9, day=2026-11-28'"
            ),
            "no row with this key in the target (mode: update inserts none)",
            "{kind}"
        );
        // A row deleted by hand is rejected as missing; once the application makes it again
        // with other values, the next sync writes the source's values over them (the state of
        // the deleted key was forgotten, so it cannot pass the row for unchanged).
        execute(
            &target.url,
            "DELETE FROM class_scores WHERE school_id = 1 AND class_id = 1",
        );
        set("(1, 1, '2026-11-28', 3.75, 20)");
        let (ok, said) = sync_once(dir.path(), "upd", &[]);
        assert!(ok, "{kind}: {said}");
        assert!(
            said.ends_with(
                "1 row(s) read; 0 inserted, 0 updated, 0 deleted, 0 unchanged, 1 rejected"
            ),
            "{kind}: {said}"
        );
        execute(
            &target.url,
            "INSERT INTO class_scores VALUES (1, 1, '2026-11-28', 0.5, 1)",
        );
        let (ok, said) = sync_once(dir.path(), "upd", &[]);
        assert!(ok, "{kind}: {said}");
        assert!(
            said.ends_with(
                "1 row(s) read; 0 inserted, 1 updated, 0 deleted, 0 unchanged, 0 rejected"
            ),
            "{kind}: the row made again by hand is brought back to the source's values: {said}"
        );
        assert!(
            scores(&target).contains(&"1|1|2026-11-28|3.75|20".to_string()),
            "{kind}: {:?}",
            scores(&target)
        );

        // insert: new keys only; a changed row already there is left as it is.
        set("(1, 1, '2026-11-28', 9.5, 20), (1, 4, '2026-11-28', 2.75, 15)");
        let (_, said) = sync_once(dir.path(), "ins", &[]);
        assert!(
            said.ends_with(
                "2 row(s) read; 1 inserted, 0 updated, 0 deleted, 1 unchanged, 0 rejected"
            ),
            "{kind}: {said}"
        );
        assert!(
            scores(&target).contains(&"1|1|2026-11-28|3.75|20".to_string()),
            "{kind}"
        );
        // A new row the target refuses (students < 100) is rejected; `insert` keeps no state.
        set("(1, 5, '2026-11-28', 1.0, 150)");
        let (ok, said) = sync_once(dir.path(), "ins", &[]);
        assert!(!ok, "{kind}: {said}");
        assert!(
            said.contains("1 row(s) rejected, more than max_rejected (0 row(s)): school_id=1, class_id=5, day=2026-11-28: "),
            "{kind}: {said}"
        );

        // mirror, scoped to school 1: school 2's rows are never touched; deleting more than
        // max_delete fails before anything is written.
        let before = scores(&target);
        set("(1, 1, '2026-11-28', 3.75, 20)");
        let (ok, said) = sync_once(dir.path(), "mir", &[]);
        assert!(!ok, "{kind}: {said}");
        assert!(
            said.contains("the mirror would delete 3 of the 4 row(s) in scope, more than max_delete (1 row(s)); nothing was written"),
            "{kind}: {said}"
        );
        assert_eq!(scores(&target), before, "{kind}: the guard wrote nothing");
        set(
            "(1, 1, '2026-11-28', 3.75, 20), (1, 2, '2026-11-28', 4.75, 25), (1, 3, '2026-11-28', 1.5, 10)",
        );
        let (ok, said) = sync_once(dir.path(), "mir", &[]);
        assert!(ok, "{kind}: {said}");
        assert!(said.contains(" 1 deleted,"), "{kind}: {said}");
        assert_eq!(
            scores(&target),
            [
                "1|1|2026-11-28|3.75|20",
                "1|2|2026-11-28|4.75|25",
                "1|3|2026-11-28|1.5|10",
                "2|1|2026-11-28|2.5|30"
            ],
            "{kind}: school 2 kept"
        );
        // A source row outside the scope fails the sync before anything is written.
        set("(1, 1, '2026-11-28', 3.75, 20), (2, 7, '2026-11-28', 1.0, 1)");
        let (ok, said) = sync_once(dir.path(), "mir", &[]);
        assert!(
            !ok && said.contains("outside the scope (school_id = 1)"),
            "{kind}: {said}"
        );

        // Duplicate and NULL keys fail before anything is written, naming examples.
        let before = scores(&target);
        set(
            "(1, 1, '2026-11-28', 1.0, 1), (1, 1, '2026-11-28', 2.0, 2), (1, 5, '2026-11-28', 1.0, 1)",
        );
        let (ok, said) = sync_once(dir.path(), "up", &[]);
        assert!(!ok, "{kind}: {said}");
        assert!(
            said.contains(
                "the source has duplicate keys, e.g. school_id=1, class_id=1, day=2026-11-28 ("
            ) && said.ends_with("; nothing was written"),
            "{kind}: {said}"
        );
        set("(1, NULL, '2026-11-28', 1.0, 1)");
        let (ok, said) = sync_once(dir.path(), "up", &[]);
        assert!(
            !ok && said.contains("source row 1 (school_id=1, class_id=NULL, day=2026-11-28): key column `class_id` is NULL; nothing was written"),
            "{kind}: {said}"
        );
        assert_eq!(scores(&target), before, "{kind}");

        // Rejects: a row the target's CHECK refuses fails a strict sync and writes nothing; a
        // lenient one keeps it with its key and reason and writes the rest.
        set(
            "(1, 1, '2026-11-28', 5.5, 20), (1, 6, '2026-11-28', 1.0, 500), (1, 7, '2026-11-28', 1.0, 7), (1, 8, '2026-11-28', 1.0, 8), (1, 9, '2026-11-28', 1.0, 9), (1, 10, '2026-11-28', 1.0, 10), (1, 11, '2026-11-28', 1.0, 11), (1, 12, '2026-11-28', 1.0, 12), (1, 13, '2026-11-28', 1.0, 13), (1, 14, '2026-11-28', 1.0, 14)",
        );
        let (ok, said) = sync_once(dir.path(), "up", &[]);
        assert!(!ok, "{kind}: {said}");
        assert!(
            said.contains("1 row(s) rejected, more than max_rejected (0 row(s)): school_id=1, class_id=6, day=2026-11-28: "),
            "{kind}: {said}"
        );
        assert_eq!(scores(&target), before, "{kind}: nothing written");
        let (ok, said) = sync_once(dir.path(), "lenient", &[]);
        assert!(ok, "{kind}: {said}");
        assert!(
            said.ends_with(
                "10 row(s) read; 8 inserted, 1 updated, 0 deleted, 0 unchanged, 1 rejected"
            ),
            "{kind}: {said}"
        );
        assert_eq!(
            scalar(
                &target.url,
                "SELECT row_key FROM ferry_sync_rejects WHERE row_key LIKE '%class_id=6,%'"
            ),
            "school_id=1, class_id=6, day=2026-11-28",
            "{kind}"
        );
        assert!(
            !scores(&target).iter().any(|r| r.starts_with("1|6|")),
            "{kind}"
        );
        for id in ["up", "upd", "ins", "mir", "lenient"] {
            let _ = std::fs::remove_file(dags.join(format!("{id}.yaml")));
        }
    }
}

#[test]
fn issue9_append_inserts_every_row_without_a_key() {
    let dir = project(&[]);
    let warehouse = format!("sqlite:{}", dir.path().join("warehouse.db").display());
    execute(
        &warehouse,
        "CREATE TABLE agg (school_id INTEGER, class INTEGER, day TEXT, avg_points REAL, students INTEGER); INSERT INTO agg VALUES (1, 1, '2026-11-28', 3.5, 20), (1, 1, '2026-11-28', 3.5, 20)",
    );
    for target in targets(dir.path(), "sync_append") {
        use_target(dir.path(), &target, "");
        execute(
            &target.url,
            "CREATE TABLE class_scores (school_id INTEGER, class_id INTEGER, day VARCHAR(10), avg_points DOUBLE PRECISION, students INTEGER)"
                .replace(
                    "DOUBLE PRECISION",
                    if target.kind == "mysql" { "DOUBLE" } else { "DOUBLE PRECISION" },
                )
                .as_str(),
        );
        std::fs::write(
            dir.path().join("dags/internal/log.yaml"),
            sync_dag("log", "    mode: append\n"),
        )
        .expect("DAG");
        for _ in 0..2 {
            let (ok, said) = sync_once(dir.path(), "log", &[]);
            assert!(ok && said.contains("2 inserted"), "{}: {said}", target.kind);
        }
        assert_eq!(
            scalar(
                &target.url,
                "SELECT CAST(COUNT(*) AS CHAR) FROM class_scores"
            ),
            "4",
            "{}",
            target.kind
        );
    }
}

#[test]
fn issue9_a_killed_sync_leaves_the_target_exactly_as_before_or_after() {
    let dir = project(&[]);
    let warehouse = format!("sqlite:{}", dir.path().join("warehouse.db").display());
    execute(
        &warehouse,
        "CREATE TABLE agg (school_id INTEGER, class INTEGER, day TEXT, avg_points REAL, students INTEGER)",
    );
    let rows = 40_000;
    let version = |v: u64| {
        // Version v: every row's students = v % 90, and 1% of rows per version leave and
        // come back, so each sync updates, inserts and (mirror) deletes.
        execute(
            &warehouse,
            &format!(
                "DELETE FROM agg; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows}) INSERT INTO agg SELECT 1, i, '2026-11-28', i * 0.25, {v} % 90 FROM n WHERE i % 100 <> {v} % 100"
            ),
        );
    };
    // The digest of version v as the target must hold it.
    let expected = |v: u64| {
        let kept: Vec<u64> = (1..=rows).filter(|i| i % 100 != v % 100).collect();
        format!("{}:{}", kept.len(), kept.len() as u64 * (v % 90))
    };
    for target in targets(dir.path(), "sync_kill") {
        let kind = target.kind;
        use_target(
            dir.path(),
            &target,
            "[engine]\nheartbeat_interval_secs = 1\nheartbeat_timeout_secs = 3\n\n",
        );
        execute(&target.url, &create_scores(&target));
        std::fs::write(
            dir.path().join("dags/internal/big.yaml"),
            sync_dag(
                "big",
                "    key: [school_id, class_id, day]\n    mode: mirror\n    max_delete: 5%\n    batch_size: 5000\n    retries: 2\n    retry_delay: 1s\n",
            ),
        )
        .expect("DAG");
        let digest = || {
            scalar(
                &target.url,
                "SELECT CONCAT(COUNT(*), ':', COALESCE(SUM(students), 0)) FROM class_scores",
            )
        };
        version(1);
        let (ok, said) = sync_once(dir.path(), "big", &[]);
        assert!(ok, "{kind}: {said}");
        assert_eq!(digest(), expected(1), "{kind}");
        let mut rng = fastrand::Rng::with_seed(9);
        for v in 2..8u64 {
            version(v);
            let before = runs_of(dir.path(), "big").len();
            let run = spawn_ferry_with(dir.path(), &["run", "big"], &[]);
            let delay = if v == 2 {
                rng.u64(0..40)
            } else {
                rng.u64(0..2500)
            };
            std::thread::sleep(Duration::from_millis(delay));
            nix_kill(&run, "KILL");
            let _ = run.wait_with_output();
            let now = digest();
            assert!(
                now == expected(v - 1) || now == expected(v),
                "{kind}: killed after {delay} ms, the target is neither before nor after: {now}"
            );
            let runs = runs_of(dir.path(), "big");
            if runs.len() == before {
                // Killed before its run was made: run it again.
                let (ok, said) = sync_once(dir.path(), "big", &[]);
                assert!(ok, "{kind}: {said}");
            } else if runs[0]["state"] != "success"
                && let Some(runs) = finish_after_kill(dir.path(), "big", &[])
            {
                assert_eq!(runs[0]["state"], "success", "{kind}: {runs}");
            }
            // A run that finished before the kill synced version v; one that did not was
            // finished above. A rerun converges either way.
            let (ok, said) = sync_once(dir.path(), "big", &[]);
            assert!(ok, "{kind}: {said}");
            assert!(
                said.contains(" 0 inserted, 0 updated, 0 deleted,"),
                "{kind}: {said}"
            );
            assert_eq!(digest(), expected(v), "{kind}: after version {v}");
        }
    }
}

#[test]
fn issue9_sql_check_fails_on_what_is_not_as_declared_and_names_the_values() {
    let dir = project(&[(
        "gate.yaml",
        "id: gate\ntasks:\n  - id: check\n    type: sql_check\n    connection: warehouse\n    checks:\n      - {name: rows, sql: \"SELECT COUNT(*) FROM agg\", min: 1, max: 100}\n      - {name: no NULL keys, sql: \"SELECT school_id, class FROM agg WHERE class IS NULL\", no_rows: true}\n      - {name: totals, sql: \"SELECT SUM(students) FROM agg\", equals_sql: \"SELECT SUM(students) FROM agg_copy\"}\n  - {id: after, type: noop, depends_on: [check]}\n",
    )]);
    std::fs::write(
        dir.path().join("ferry.toml"),
        "[environments.dev.connections.warehouse]\nkind = \"sqlite\"\npath = \"warehouse.db\"\n",
    )
    .expect("config");
    let warehouse = format!("sqlite:{}", dir.path().join("warehouse.db").display());
    execute(
        &warehouse,
        "CREATE TABLE agg (school_id INTEGER, class INTEGER, students INTEGER); INSERT INTO agg VALUES (1, 1, 20), (1, 2, 25); CREATE TABLE agg_copy AS SELECT * FROM agg",
    );
    let (ok, _) = (
        ferry_in(dir.path(), &["run", "gate"], &[]).status.success(),
        (),
    );
    assert!(ok, "every check holds");
    execute(
        &warehouse,
        "INSERT INTO agg VALUES (1, NULL, 5), (2, NULL, 6)",
    );
    let run = ferry_in(dir.path(), &["run", "gate"], &[]);
    assert!(!run.status.success());
    let listed = stdout(&ferry_in(
        dir.path(),
        &["runs", "list", "--format", "json"],
        &[],
    ));
    let runs: serde_json::Value = serde_json::from_str(&listed).expect("JSON");
    let run_id = runs[0]["run_id"].as_str().expect("a run");
    let log = stdout(&ferry_in(dir.path(), &["logs", run_id, "check"], &[]));
    for expected in [
        "check `rows`: ok (4, expected between 1 and 100)",
        "check `no NULL keys`: FAILED: expected no rows, got: school_id=1, class=NULL; school_id=2, class=NULL",
        "check `totals`: FAILED: 56 and 45 differ (tolerance 0)",
    ] {
        assert!(log.contains(expected), "missing {expected} in:\n{log}");
    }
    let shown = stdout(&ferry_in(dir.path(), &["runs", "show", run_id], &[]));
    assert!(
        shown.contains("upstream_failed"),
        "the gate holds back what follows: {shown}"
    );
    if let Some(url) = fresh_postgres("sync_check") {
        execute(
            &url,
            "CREATE TABLE agg (school_id INTEGER, class INTEGER, students INTEGER); INSERT INTO agg VALUES (1, 1, 20); CREATE TABLE agg_copy AS SELECT * FROM agg",
        );
        std::fs::write(
            dir.path().join("ferry.toml"),
            format!(
                "[environments.dev.connections.warehouse]\nkind = \"postgres\"\nurl = \"{url}\"\n"
            ),
        )
        .expect("config");
        let run = ferry_in(dir.path(), &["run", "gate"], &[]);
        assert!(run.status.success(), "{}", stdout(&run));
    }
}

#[test]
fn issue9_a_value_the_target_refuses_is_rejected_and_a_mirror_then_deletes_nothing() {
    let dir = project(&[]);
    let warehouse = format!("sqlite:{}", dir.path().join("warehouse.db").display());
    // `students` as text, the way a loosely typed source hands numbers over.
    execute(
        &warehouse,
        "CREATE TABLE agg (school_id INTEGER, class TEXT, day TEXT, avg_points REAL, students TEXT)",
    );
    for target in targets(dir.path(), "sync_refused") {
        let kind = target.kind;
        if kind == "sqlite" {
            // SQLite stores any value in any column: nothing to refuse.
            continue;
        }
        use_target(dir.path(), &target, "");
        execute(&target.url, &create_scores(&target));
        std::fs::write(
            dir.path().join("dags/internal/mirror.yaml"),
            sync_dag(
                "mirror",
                "    key: [school_id, class_id, day]\n    mode: mirror\n    max_delete: 100%\n    max_rejected: 1\n",
            ),
        )
        .expect("DAG");
        execute(
            &warehouse,
            "DELETE FROM agg; INSERT INTO agg VALUES (1, '1', '2026-11-28', 3.5, '20'), (1, '2', '2026-11-28', 4.5, '25'), (1, '3', '2026-11-28', 5.5, '30')",
        );
        let (ok, said) = sync_once(dir.path(), "mirror", &[]);
        assert!(ok, "{kind}: {said}");
        // Class 2's students are not a number any more; class 3 left the source.
        execute(
            &warehouse,
            "DELETE FROM agg; INSERT INTO agg VALUES (1, '1', '2026-11-28', 3.75, '20'), (1, '2', '2026-11-28', 4.5, 'many')",
        );
        let run = ferry_in(dir.path(), &["run", "mirror"], &[]);
        assert!(run.status.success(), "{kind}: {}", stdout(&run));
        let log = stdout(&ferry_in(
            dir.path(),
            &["logs", &latest_run(dir.path(), "mirror"), "sync"],
            &[],
        ));
        assert!(
            log.contains(
                "1 row(s) were refused while staging, so the mirror deletes nothing this time"
            ) && log.contains(
                "2 row(s) read; 0 inserted, 1 updated, 0 deleted, 0 unchanged, 1 rejected"
            ),
            "{kind}: {log}"
        );
        assert_eq!(
            scores(&target),
            [
                "1|1|2026-11-28|3.75|20",
                "1|2|2026-11-28|4.5|25",
                "1|3|2026-11-28|5.5|30"
            ],
            "{kind}: class 2 kept as it was, class 3 not deleted"
        );
        assert!(
            scalar(
                &target.url,
                "SELECT reason FROM ferry_sync_rejects WHERE row_key = 'school_id=1, class_id=2, day=2026-11-28'"
            )
            .to_lowercase()
            .contains("many"),
            "{kind}: the reason names the value"
        );
        // A key twice, one of its rows refused by the target's types: still a duplicate.
        execute(
            &warehouse,
            "DELETE FROM agg; INSERT INTO agg VALUES (1, '1', '2026-11-28', 9.5, '20'), (1, '1', '2026-11-28', 9.5, 'many')",
        );
        let (ok, said) = sync_once(dir.path(), "mirror", &[]);
        assert!(
            !ok && said.contains("the source has duplicate keys, e.g. school_id=1, class_id=1, day=2026-11-28 (again at row 2); nothing was written"),
            "{kind}: {said}"
        );
    }
}

/// A first load goes straight in (`COPY` into PostgreSQL, `LOAD DATA LOCAL INFILE` into
/// MariaDB, which turns a value it cannot hold into a warning, not an error): a value the
/// target refuses, or one MariaDB would have truncated, sends it through the stage, which sets
/// the row aside with its reason and loads the others exactly.
#[test]
fn issue9_a_first_load_with_a_refused_value_goes_through_the_stage_and_loads_the_rest() {
    let dir = project(&[]);
    let warehouse = format!("sqlite:{}", dir.path().join("warehouse.db").display());
    execute(
        &warehouse,
        "CREATE TABLE agg (school_id INTEGER, class TEXT, day TEXT, avg_points REAL, students TEXT);
         INSERT INTO agg VALUES (1, '1', '2026-11-28', 3.5, '20'), (1, '2', '2026-11-28', 4.5, '250'), (1, '3', '2026-11-28', 5.5, '30'), (1, '4', '2026-11-28', 6.5, 'many')",
    );
    for target in targets(dir.path(), "sync_first_refused") {
        let kind = target.kind;
        if kind == "sqlite" {
            // SQLite loads through the stage anyway, and stores any value in any column.
            continue;
        }
        use_target(dir.path(), &target, "");
        execute(&target.url, &create_scores(&target));
        std::fs::write(
            dir.path().join("dags/internal/first.yaml"),
            sync_dag(
                "first",
                "    key: [school_id, class_id, day]\n    mode: upsert\n    max_rejected: 2\n",
            ),
        )
        .expect("DAG");
        let run = ferry_in(dir.path(), &["run", "first"], &[]);
        assert!(run.status.success(), "{kind}: {}", stdout(&run));
        let log = stdout(&ferry_in(
            dir.path(),
            &["logs", &latest_run(dir.path(), "first"), "sync"],
            &[],
        ));
        assert!(
            log.contains("the target refused a row of the first load")
                && log.contains(
                    "4 row(s) read; 2 inserted, 0 updated, 0 deleted, 0 unchanged, 2 rejected"
                ),
            "{kind}: {log}"
        );
        assert_eq!(
            scores(&target),
            ["1|1|2026-11-28|3.5|20", "1|3|2026-11-28|5.5|30"],
            "{kind}: the rows that fit, exactly"
        );
        // Loaded straight in once nothing is refused (and by LOAD DATA into MariaDB).
        execute(&target.url, "DELETE FROM class_scores");
        execute(&warehouse, "DELETE FROM agg WHERE class IN ('2', '4')");
        // A day of its own per target: they share the store.
        let day = if kind == "mysql" {
            "2026-11-03"
        } else {
            "2026-11-02"
        };
        let run = ferry_in(dir.path(), &["run", "first", "--date", day], &[]);
        assert!(run.status.success(), "{kind}: {}", stdout(&run));
        let log = stdout(&ferry_in(
            dir.path(),
            &["logs", &format!("first__manual__{day}"), "sync"],
            &[],
        ));
        let how = if kind == "mysql" {
            "by LOAD DATA LOCAL INFILE"
        } else {
            "by COPY"
        };
        assert!(
            log.contains(&format!("2 row(s) loaded straight into class_scores {how}")),
            "{kind}: {log}"
        );
        assert_eq!(
            scores(&target),
            ["1|1|2026-11-28|3.5|20", "1|3|2026-11-28|5.5|30"],
            "{kind}"
        );
        execute(
            &warehouse,
            "INSERT INTO agg VALUES (1, '2', '2026-11-28', 4.5, '250'), (1, '4', '2026-11-28', 6.5, 'many')",
        );
    }
}

#[test]
fn issue9_an_incremental_sync_reads_only_rows_at_or_past_its_mark() {
    let dir = project(&[]);
    let warehouse = format!("sqlite:{}", dir.path().join("warehouse.db").display());
    execute(
        &warehouse,
        "CREATE TABLE agg (school_id INTEGER, class INTEGER, day TEXT, avg_points REAL, students INTEGER, updated_at INTEGER)",
    );
    let dags = dir.path().join("dags/internal");
    std::fs::write(
        dags.join("inc.yaml"),
        "id: inc\ntasks:\n  - id: sync\n    type: reverse_sync\n    source: {connection: warehouse, sql: \"SELECT school_id, class, day, avg_points, students, updated_at FROM agg\"}\n    target: {connection: app, table: class_scores}\n    columns: {class_id: class}\n    key: [school_id, class_id, day]\n    incremental: updated_at\n",
    )
    .expect("DAG");
    for target in targets(dir.path(), "sync_incremental") {
        let kind = target.kind;
        use_target(dir.path(), &target, "");
        execute(&target.url, &create_scores(&target));
        execute(
            &warehouse,
            "DELETE FROM agg; INSERT INTO agg VALUES (1, 1, '2026-11-28', 3.5, 20, 1), (1, 2, '2026-11-28', 4.25, 25, 2), (2, 1, '2026-11-28', 2.5, 30, 3)",
        );
        // The first sync reads every row; `updated_at` is ferry's cursor, not a target column.
        let (ok, said) = sync_once(dir.path(), "inc", &[]);
        assert!(ok, "{kind}: {said}");
        assert!(
            said.ends_with(
                "3 row(s) read; 3 inserted, 0 updated, 0 deleted, 0 unchanged, 0 rejected"
            ),
            "{kind}: {said}"
        );
        // Then only the rows at or past the highest `updated_at` read (3).
        let (ok, said) = sync_once(dir.path(), "inc", &[]);
        assert!(ok, "{kind}: {said}");
        assert!(
            said.ends_with(
                "1 row(s) read; 0 inserted, 0 updated, 0 deleted, 1 unchanged, 0 rejected"
            ),
            "{kind}: {said}"
        );
        let log = stdout(&ferry_in(
            dir.path(),
            &["logs", &latest_run(dir.path(), "inc"), "sync"],
            &[],
        ));
        assert!(
            log.contains("incremental: reading the rows whose updated_at is at or past 3"),
            "{kind}: {log}"
        );
        // A change that moves `updated_at` is read and written; one that does not is not read.
        execute(
            &warehouse,
            "UPDATE agg SET avg_points = 9.5, updated_at = 4 WHERE class = 1 AND school_id = 1; UPDATE agg SET avg_points = 7.5 WHERE class = 2",
        );
        let (ok, said) = sync_once(dir.path(), "inc", &[]);
        assert!(ok, "{kind}: {said}");
        assert!(
            said.ends_with(
                "2 row(s) read; 0 inserted, 1 updated, 0 deleted, 1 unchanged, 0 rejected"
            ),
            "{kind}: {said}"
        );
        assert_eq!(
            scores(&target),
            [
                "1|1|2026-11-28|9.5|20",
                "1|2|2026-11-28|4.25|25",
                "2|1|2026-11-28|2.5|30"
            ],
            "{kind}"
        );
        // A row deleted by hand comes back when it is read again (its state forgotten).
        execute(&target.url, "DELETE FROM class_scores WHERE school_id = 2");
        execute(
            &warehouse,
            "UPDATE agg SET updated_at = 5 WHERE school_id = 2",
        );
        let (ok, said) = sync_once(dir.path(), "inc", &[]);
        assert!(ok, "{kind}: {said}");
        assert!(
            said.ends_with(
                "2 row(s) read; 1 inserted, 0 updated, 0 deleted, 1 unchanged, 0 rejected"
            ),
            "{kind}: {said}"
        );
        // A new target starts from the beginning: the mark is kept in the target.
        execute(&target.url, "DROP TABLE ferry_sync_marks");
        let (ok, said) = sync_once(dir.path(), "inc", &[]);
        assert!(ok, "{kind}: {said}");
        assert!(
            said.ends_with(
                "3 row(s) read; 0 inserted, 1 updated, 0 deleted, 2 unchanged, 0 rejected"
            ),
            "{kind}: the row the mark skipped is caught up: {said}"
        );
        // An emptied target is loaded whole, whatever the mark.
        execute(&target.url, "DELETE FROM class_scores");
        let (ok, said) = sync_once(dir.path(), "inc", &[]);
        assert!(ok, "{kind}: {said}");
        assert!(
            said.ends_with(
                "3 row(s) read; 3 inserted, 0 updated, 0 deleted, 0 unchanged, 0 rejected"
            ),
            "{kind}: {said}"
        );
    }
    // A mirror must read every row.
    std::fs::write(
        dags.join("inc.yaml"),
        "id: inc\ntasks:\n  - id: sync\n    type: reverse_sync\n    source: {connection: warehouse, sql: \"SELECT school_id, class, day FROM agg\"}\n    target: {connection: app, table: class_scores}\n    key: [school_id, class]\n    mode: mirror\n    incremental: updated_at\n",
    )
    .expect("DAG");
    let said = stdout(&ferry_in(dir.path(), &["validate"], &[]));
    assert!(
        said.contains(
            "field `incremental`: a `mirror` reads every row to know which left the source"
        ),
        "{said}"
    );
    std::fs::write(
        dags.join("inc.yaml"),
        "id: inc\ntasks:\n  - id: sync\n    type: reverse_sync\n    source: {connection: warehouse, sql: \"SELECT school_id, class, day FROM agg\"}\n    target: {connection: app, table: class_scores}\n    mode: append\n    incremental: updated_at\n  - id: keyed\n    type: reverse_sync\n    source: {connection: warehouse, sql: \"SELECT school_id, updated_at FROM agg\"}\n    target: {connection: app, table: class_scores}\n    key: [school_id, updated_at]\n    incremental: updated_at\n",
    )
    .expect("DAG");
    let said = stdout(&ferry_in(dir.path(), &["validate"], &[]));
    assert!(
        said.contains("task `sync`, field `incremental`: `append` inserts every row it reads")
            && said.contains("task `keyed`, field `incremental`: `updated_at` is ferry's cursor, not written into the target, so it cannot be part of `key` or `scope`"),
        "{said}"
    );
}
