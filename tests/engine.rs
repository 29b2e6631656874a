use std::time::Duration;

use crate::util::{
    ferry_in, fresh_postgres, nix_kill, project, serve_until_success, spawn_ferry, stderr, stdout,
    wait_for_runs, wait_for_runs_of, wait_until,
};

const CHAIN: &str = "\
params: {word: hello}
tasks:
  - {id: first, type: command, command: 'echo {{ params.word }} from {{ task_id }}'}
  - {id: second, type: command, argv: [sh, -c, 'echo second; exit 0'], depends_on: [first]}
  - {id: done, type: noop, depends_on: [second]}
";

#[test]
fn run_executes_a_dag_and_logs_each_attempt() {
    let dir = project(&[("chain.yaml", CHAIN)]);
    let output = ferry_in(
        dir.path(),
        &["run", "chain", "--param", "word=bonjour"],
        &[],
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    let text = stdout(&output);
    assert!(
        text.contains("first (try 1)") && text.contains("success"),
        "{text}"
    );
    let runs = wait_for_runs(dir.path(), Duration::from_secs(5), |runs| {
        runs[0]["state"] == "success"
    });
    let run_id = runs[0]["run_id"].as_str().expect("run id").to_string();
    let log = stdout(&ferry_in(dir.path(), &["logs", &run_id, "first"], &[]));
    assert!(log.contains("bonjour from first"), "{log}");
    assert!(log.contains("try 1 — success (exit 0)"), "{log}");
}

#[test]
fn a_failing_run_exits_1_after_its_retries() {
    let dag = "tasks:\n  - {id: broken, type: command, command: 'echo trying; exit 4', retries: 1, retry_delay: 0s}\n  - {id: after, type: noop, depends_on: [broken]}\n";
    let dir = project(&[("failing.yaml", dag)]);
    let output = ferry_in(dir.path(), &["run", "failing"], &[]);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    let text = stdout(&output);
    assert!(text.contains("up_for_retry"), "{text}");
    assert!(text.contains("upstream_failed"), "{text}");
    let runs = wait_for_runs(dir.path(), Duration::from_secs(5), |runs| {
        runs[0]["state"] == "failed"
    });
    let run_id = runs[0]["run_id"].as_str().expect("run id").to_string();
    let first = stdout(&ferry_in(
        dir.path(),
        &["logs", &run_id, "broken", "--try", "1"],
        &[],
    ));
    assert!(first.contains("failed (exit 4)"), "{first}");
}

#[test]
fn a_second_run_for_the_same_logical_date_is_refused() {
    let dag = "schedule: '0 2 * * *'\ntimezone: Asia/Tokyo\nstart_date: 2026-11-01\ntasks:\n  - {id: a, type: noop}\n";
    let dir = project(&[("daily.yaml", dag)]);
    assert_eq!(
        ferry_in(dir.path(), &["run", "daily", "--date", "2026-11-10"], &[])
            .status
            .code(),
        Some(0)
    );
    let again = ferry_in(dir.path(), &["run", "daily", "--date", "2026-11-10"], &[]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        stderr(&again).contains("already has a run for logical date 2026-11-10T02:00:00+09:00"),
        "{}",
        stderr(&again)
    );
}

/// A DAG whose `notify` runs only outside `dev`.
const GATED: &str = "\
tasks:
  - {id: notify, type: command, command: 'echo notified in {{ env }}', run_if: \"{{ env != 'dev' }}\"}
  - {id: after_notify, type: noop, depends_on: [notify]}
  - {id: cleanup, type: noop, depends_on: [notify], trigger_rule: none_failed}
";

/// The states of a run's tasks by id.
fn task_states(
    dir: &std::path::Path,
    run_prefix: &str,
) -> std::collections::BTreeMap<String, String> {
    let shown = stdout(&ferry_in(
        dir,
        &["runs", "show", run_prefix, "--format", "json"],
        &[],
    ));
    let run: serde_json::Value = serde_json::from_str(&shown).expect("JSON");
    run["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| {
            (
                t["task_id"].as_str().expect("id").to_string(),
                t["state"].as_str().expect("state").to_string(),
            )
        })
        .collect()
}

#[test]
fn run_if_skips_a_task_by_the_environment_and_its_downstream_follow_their_rules() {
    let dir = project(&[("gated.yaml", GATED)]);
    let dev = ferry_in(dir.path(), &["run", "gated", "--date", "2026-11-01"], &[]);
    assert_eq!(
        dev.status.code(),
        Some(0),
        "{}{}",
        stdout(&dev),
        stderr(&dev)
    );
    assert!(
        stdout(&dev).contains("run_if is false: `{{ env != 'dev' }}` rendered `False`"),
        "{}",
        stdout(&dev)
    );
    let states = task_states(dir.path(), "gated__manual__2026-11-01");
    assert_eq!(states["notify"], "skipped", "{states:?}");
    assert_eq!(states["after_notify"], "skipped", "{states:?}");
    assert_eq!(states["cleanup"], "success", "{states:?}");

    let prod = ferry_in(
        dir.path(),
        &["run", "gated", "--date", "2026-11-02"],
        &[("FERRY_ENV", "prod")],
    );
    assert_eq!(
        prod.status.code(),
        Some(0),
        "{}{}",
        stdout(&prod),
        stderr(&prod)
    );
    let states = task_states(dir.path(), "gated__manual__2026-11-02");
    assert!(states.values().all(|s| s == "success"), "{states:?}");
    let log = stdout(&ferry_in(
        dir.path(),
        &["logs", "gated__manual__2026-11-02", "notify"],
        &[],
    ));
    assert!(log.contains("notified in prod"), "{log}");
}

#[test]
fn run_if_that_is_neither_true_nor_false_fails_the_task_and_a_bad_one_fails_validate() {
    // True or false for validate's sample run (in dev), neither in prod.
    let odd = "tasks:\n  - {id: odd, type: noop, run_if: \"{{ 'maybe' if env == 'prod' else 'false' }}\"}\n  - {id: after, type: noop, depends_on: [odd]}\n";
    let dir = project(&[("odd.yaml", odd)]);
    let output = ferry_in(
        dir.path(),
        &["run", "odd", "--date", "2026-11-01"],
        &[("FERRY_ENV", "prod")],
    );
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    let text = stdout(&output);
    assert!(
        text.contains("rendered `maybe`, which is neither true nor false"),
        "{text}"
    );
    let states = task_states(dir.path(), "odd__manual__2026-11-01");
    assert_eq!(states["odd"], "failed", "{states:?}");
    assert_eq!(states["after"], "upstream_failed", "{states:?}");

    // A condition that is not one, and a typo: validate says so, with the file, line and field.
    let bad = "tasks:\n  - {id: gate, type: noop, run_if: \"{{ envv != 'dev' }}\"}\n  - {id: dated, type: noop, run_if: '{{ ds }}'}\n";
    let dir = project(&[("bad.yaml", bad)]);
    let output = ferry_in(dir.path(), &["validate"], &[]);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    let text = format!("{}{}", stdout(&output), stderr(&output));
    assert!(text.contains("bad.yaml:2"), "{text}");
    assert!(text.contains("run_if"), "{text}");
    assert!(text.contains("`env`"), "the suggestion names `env`: {text}");
    assert!(text.contains("bad.yaml:3"), "{text}");
    assert!(
        text.contains(
            "the condition renders `1970-01-01` for a sample run, which is neither true nor false"
        ),
        "{text}"
    );
}

#[test]
fn tasks_clear_reruns_a_task_and_its_downstream() {
    let dir = project(&[("chain.yaml", CHAIN)]);
    assert_eq!(
        ferry_in(dir.path(), &["run", "chain"], &[]).status.code(),
        Some(0)
    );
    let runs = wait_for_runs(dir.path(), Duration::from_secs(5), |runs| {
        runs[0]["state"] == "success"
    });
    let run_id = runs[0]["run_id"].as_str().expect("run id").to_string();
    let cleared = ferry_in(
        dir.path(),
        &["tasks", "clear", &run_id, "second", "--downstream"],
        &[],
    );
    let said = stdout(&cleared);
    assert!(
        said.starts_with(&format!(
            "cleared 2 task(s) of {run_id}:\n  second (was success"
        )) && said.contains("\n  done (was success"),
        "{said}"
    );
    // Without a daemon, the run waits, queued, for the next engine.
    wait_for_runs(dir.path(), Duration::from_secs(5), |runs| {
        runs[0]["state"] == "queued"
    });
}

#[test]
fn a_damaged_database_is_a_clear_error() {
    let dir = project(&[]);
    std::fs::create_dir_all(dir.path().join(".ferry")).expect("data dir");
    std::fs::write(
        dir.path().join(".ferry/ferry.db"),
        "not a database, only text, long enough to be read as a header......",
    )
    .expect("write");
    let output = ferry_in(dir.path(), &["runs", "list"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("is damaged or not a ferry database"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn serve_schedules_catchup_runs_and_stops_cleanly_on_sigterm() {
    let dag = "schedule: '0 */6 * * *'\ntimezone: Asia/Tokyo\nstart_date: 2026-11-01\ncatchup: true\nmax_active_runs: 4\nend_date: 2026-11-02\ntasks:\n  - {id: a, type: command, command: 'echo {{ ds }}'}\n  - {id: b, type: noop, depends_on: [a]}\n";
    let dir = project(&[("sixhourly.yaml", dag)]);
    let mut serve = spawn_ferry(dir.path(), &["serve"]);
    // 2026-11-01 00:00 to 2026-11-02 00:00 Tokyo: five intervals start on or before the end date.
    wait_for_runs_of(
        dir.path(),
        Duration::from_secs(30),
        Some(&mut serve),
        |runs| {
            runs.as_array()
                .is_some_and(|r| r.len() == 5 && r.iter().all(|run| run["state"] == "success"))
        },
    );
    nix_kill(&serve, "TERM");
    let status = serve.wait().expect("serve exits");
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_killed_daemon_loses_nothing_and_its_task_is_reattached_not_rerun() {
    let marker_dir = tempfile::tempdir().expect("marker dir");
    let marker = marker_dir.path().join("attempts");
    // Any second start of the command would add a line.
    let dag = format!(
        "tasks:\n  - id: slow\n    type: command\n    command: 'echo attempt >> {m}; sleep 3; echo finished'\n    retries: 1\n    retry_delay: 0s\n",
        m = marker.display()
    );
    let dir = project(&[("slow.yaml", &dag)]);
    let mut first = spawn_ferry(dir.path(), &["run", "slow"]);
    wait_until(Duration::from_secs(15), || {
        std::fs::read_to_string(&marker).is_ok_and(|m| m.lines().count() == 1)
    });
    first.kill().expect("kill -9 the daemon");
    first.wait().expect("reaped");
    // The attempt goes on under its supervisor; a new daemon reattaches to it.
    let runs = serve_until_success(dir.path());
    let run_id = runs[0]["run_id"].as_str().expect("run id").to_string();
    assert_eq!(
        std::fs::read_to_string(&marker).expect("marker"),
        "attempt\n",
        "the command ran once"
    );
    let log = stdout(&ferry_in(dir.path(), &["logs", &run_id, "slow"], &[]));
    assert!(
        log.contains("try 1 — success") && log.contains("finished"),
        "{log}"
    );
}

#[test]
fn serve_picks_up_new_dag_files_and_reports_broken_ones() {
    let dir = project(&[("idle.yaml", "tasks:\n  - {id: a, type: noop}\n")]);
    let mut serve = spawn_ferry(dir.path(), &["serve"]);
    std::thread::sleep(Duration::from_millis(500));
    let added = "schedule: '0 0 * * *'\ntimezone: UTC\nstart_date: 2026-11-01\nend_date: 2026-11-02\ncatchup: true\ntasks:\n  - {id: a, type: noop}\n";
    std::fs::write(dir.path().join("dags/internal/added.yaml"), added).expect("new DAG");
    wait_for_runs_of(
        dir.path(),
        Duration::from_secs(20),
        Some(&mut serve),
        |runs| {
            runs.as_array().is_some_and(|r| {
                r.len() == 2
                    && r.iter()
                        .all(|run| run["dag_id"] == "added" && run["state"] == "success")
            })
        },
    );
    std::fs::write(
        dir.path().join("dags/internal/added.yaml"),
        "tasks: [oops\n",
    )
    .expect("break the DAG");
    std::thread::sleep(Duration::from_secs(3));
    nix_kill(&serve, "TERM");
    let output = serve.wait_with_output().expect("serve exits");
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(
        errors.contains("added.yaml") && errors.contains("yaml-syntax"),
        "{errors}"
    );
}

#[test]
fn sigterm_with_drain_lets_running_tasks_finish_within_the_grace_period() {
    let dag = "schedule: '0 0 * * *'\ntimezone: UTC\nstart_date: 2026-11-01\nend_date: 2026-11-01\ncatchup: true\ntasks:\n  - {id: slow, type: command, command: 'sleep 2; echo finished'}\n";
    let dir = project(&[("graceful.yaml", dag)]);
    let mut serve = spawn_ferry(dir.path(), &["serve", "--on-stop", "drain"]);
    wait_for_runs_of(
        dir.path(),
        Duration::from_secs(20),
        Some(&mut serve),
        |runs| runs[0]["state"] == "running",
    );
    std::thread::sleep(Duration::from_millis(300));
    nix_kill(&serve, "TERM");
    let output = serve.wait_with_output().expect("serve exits");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let runs = wait_for_runs(dir.path(), Duration::from_secs(5), |runs| {
        runs[0]["state"] == "success"
    });
    let run_id = runs[0]["run_id"].as_str().expect("run id").to_string();
    let log = stdout(&ferry_in(dir.path(), &["logs", &run_id, "slow"], &[]));
    assert!(log.contains("finished"), "{log}");
}

#[test]
fn an_unreachable_database_is_a_clear_error() {
    let dir = project(&[]);
    let output = ferry_in(
        dir.path(),
        &[
            "runs",
            "list",
            "--database-url",
            "postgres://ferry:secret@127.0.0.1:1/ferry",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(
        text.contains("cannot open the database postgres://ferry:********@127.0.0.1:1/ferry"),
        "{text}"
    );
    assert!(!text.contains("secret"), "{text}");
}

#[test]
fn the_engine_runs_on_postgresql_too() {
    let Some(url) = fresh_postgres("run") else {
        return;
    };
    let dir = project(&[("chain.yaml", CHAIN)]);
    let output = ferry_in(dir.path(), &["run", "chain", "--database-url", &url], &[]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    let list = stdout(&ferry_in(
        dir.path(),
        &["runs", "list", "--format", "json", "--database-url", &url],
        &[],
    ));
    let runs: serde_json::Value = serde_json::from_str(&list).expect("JSON");
    assert_eq!(runs[0]["state"], "success");
    let run_id = runs[0]["run_id"].as_str().expect("run id").to_string();
    let log = stdout(&ferry_in(
        dir.path(),
        &["logs", &run_id, "first", "--database-url", &url],
        &[],
    ));
    assert!(log.contains("hello from first"), "{log}");
}

#[test]
fn backfill_runs_every_interval_in_the_range_once() {
    let dag = "schedule: '0 2 * * *'\ntimezone: Asia/Tokyo\nstart_date: 2026-11-01\ntasks:\n  - {id: a, type: command, command: 'echo {{ ds }}'}\n";
    let dir = project(&[("daily.yaml", dag)]);
    let output = ferry_in(
        dir.path(),
        &[
            "backfill",
            "daily",
            "--from",
            "2026-11-02",
            "--to",
            "2026-11-04",
            "--parallel",
            "2",
        ],
        &[],
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    let runs = wait_for_runs(dir.path(), Duration::from_secs(5), |runs| {
        runs.as_array().is_some_and(|r| r.len() == 3)
    });
    let ids: Vec<&str> = runs
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["run_id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        ids,
        [
            "daily__backfill__2026-11-03T17:00:00+00:00",
            "daily__backfill__2026-11-02T17:00:00+00:00",
            "daily__backfill__2026-11-01T17:00:00+00:00"
        ]
    );
    let log = stdout(&ferry_in(dir.path(), &["logs", ids[2], "a"], &[]));
    assert!(log.ends_with("2026-11-02\n"), "{log}");
    // The same range again creates nothing new.
    let again = ferry_in(
        dir.path(),
        &[
            "backfill",
            "daily",
            "--from",
            "2026-11-02",
            "--to",
            "2026-11-04",
        ],
        &[],
    );
    assert_eq!(again.status.code(), Some(0));
    assert!(
        stderr(&again).contains("nothing to backfill"),
        "{}",
        stderr(&again)
    );
}
