//! Issue 7: an on-call engineer's interventions (clear, rerun, mark, pause) are correct, on
//! SQLite and on PostgreSQL, through the binary.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::util::{
    Spawned, ferry_in, fresh_postgres, nix_kill, project, spawn_ferry, stderr, stdout, wait_until,
};

/// Runs `test` on a project of `files` on SQLite, then on a fresh PostgreSQL database (when
/// the server is there; see `fresh_postgres`).
fn on_both_backends(name: &str, files: &[(&str, &str)], test: impl Fn(&Path)) {
    let dir = project(files);
    test(dir.path());
    if let Some(url) = fresh_postgres(name) {
        let dir = project(files);
        let config = dir.path().join("ferry.toml");
        let text = std::fs::read_to_string(&config).expect("config");
        std::fs::write(
            &config,
            text.replace(
                "[engine]\n",
                &format!("[engine]\ndatabase_url = \"{url}\"\n"),
            ),
        )
        .expect("config");
        test(dir.path());
    }
}

/// Runs a ferry command in `dir` and returns its standard output; fails with its output if it
/// does not exit with 0.
fn ok(dir: &Path, args: &[&str]) -> String {
    let output = ferry_in(dir, args, &[]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{args:?}: {}{}",
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

/// `ferry runs show RUN --format json`.
fn show(dir: &Path, run: &str) -> Value {
    serde_json::from_str(&ok(dir, &["runs", "show", run, "--format", "json"])).expect("JSON")
}

/// The task `id` of a `runs show` answer.
fn task<'a>(run: &'a Value, id: &str) -> &'a Value {
    run["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .find(|t| t["task_id"] == id)
        .expect("task")
}

/// Waits until `check` holds for `ferry runs show RUN`, or fails with what it last showed.
fn wait_for_run(dir: &Path, run: &str, limit: Duration, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let shown = show(dir, run);
        if check(&shown) {
            return shown;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out; the run: {shown:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The id of the newest run of the project.
fn newest_run(dir: &Path) -> String {
    let runs: Value =
        serde_json::from_str(&ok(dir, &["runs", "list", "--format", "json"])).expect("JSON");
    runs[0]["run_id"].as_str().expect("run id").to_string()
}

/// Runs `ferry serve` in `dir` until `check` holds for run `run`, then stops it.
fn serve_until(dir: &Path, run: &str, check: impl Fn(&Value) -> bool) -> Value {
    let serve = spawn_ferry(dir, &["serve"]);
    let shown = wait_for_run(dir, run, Duration::from_secs(40), check);
    stop(serve);
    shown
}

fn stop(mut child: Spawned) {
    nix_kill(&child, "TERM");
    child.wait().expect("ferry exits");
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

// ---- 1. clearing an up_for_retry task ----

#[test]
fn issue7_clearing_an_up_for_retry_task_does_not_wedge_its_run() {
    let marks = tempfile::tempdir().expect("temp dir");
    let ready = marks.path().join("ready");
    let dag = format!(
        "tasks:\n  - {{id: flaky, type: command, command: 'test -f {}', retries: 3, retry_delay: 1h}}\n  - {{id: after, type: noop, depends_on: [flaky]}}\n",
        ready.display()
    );
    on_both_backends("upforretry", &[("flaky.yaml", &dag)], |dir| {
        let _ = std::fs::remove_file(&ready);
        // `ferry run` is the engine here: it waits out the hour-long retry delay.
        let engine = spawn_ferry(dir, &["run", "flaky"]);
        wait_until(Duration::from_secs(20), || {
            ferry_in(dir, &["runs", "list"], &[]).status.success()
        });
        let run = newest_run(dir);
        wait_for_run(dir, &run, Duration::from_secs(20), |r| {
            task(r, "flaky")["state"] == "up_for_retry"
        });
        std::fs::write(&ready, "").expect("file");
        let said = ok(dir, &["tasks", "clear", &run, "flaky"]);
        assert!(said.contains("flaky (was up_for_retry"), "{said}");
        let shown = wait_for_run(dir, &run, Duration::from_secs(20), |r| {
            r["state"] == "success"
        });
        assert_eq!(task(&shown, "flaky")["try_number"], 2, "{shown:#}");
        assert_eq!(task(&shown, "after")["state"], "success");
        let output = engine.wait_with_output().expect("ferry run ends");
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    });
}

// ---- 2. a cleared task gets its retries again ----

#[test]
fn issue7_a_cleared_task_gets_its_full_retries_again_and_its_try_number_goes_on() {
    let dag = "tasks:\n  - {id: broken, type: command, command: 'echo try $FERRY_TRY_NUMBER; exit 1', retries: 1, retry_delay: 0s}\n";
    on_both_backends("retries", &[("broken.yaml", dag)], |dir| {
        let first = ferry_in(dir, &["run", "broken"], &[]);
        assert_ne!(first.status.code(), Some(0), "{}", stdout(&first));
        let run = newest_run(dir);
        let before = show(dir, &run);
        assert_eq!(task(&before, "broken")["try_number"], 2);
        assert_eq!(task(&before, "broken")["max_tries"], 2);
        let said = ok(
            dir,
            &["tasks", "clear", &run, "broken", "--reason", "retry budget"],
        );
        assert!(
            said.contains("broken (was failed, 2 tries so far; next try 3, with 1 retries)"),
            "{said}"
        );
        let after = serve_until(dir, &run, |r| r["state"] == "failed");
        // Two more tries (3 and 4), not one: the budget went up by the task's retries.
        assert_eq!(task(&after, "broken")["try_number"], 4, "{after:#}");
        assert_eq!(task(&after, "broken")["max_tries"], 4);
        for try_number in ["3", "4"] {
            let log = ok(dir, &["logs", &run, "broken", "--try", try_number]);
            assert!(log.contains(&format!("try {try_number}")), "{log}");
        }
        let interventions = after["interventions"].as_array().expect("interventions");
        assert!(
            interventions
                .iter()
                .any(|e| e["task_id"] == "broken" && e["reason"] == "retry budget"),
            "{after:#}"
        );
    });
}

// ---- 3. a cleared run starts afresh for dagrun_timeout ----

#[test]
fn issue7_clearing_a_run_with_dagrun_timeout_gives_it_a_fresh_start() {
    let dag = "dagrun_timeout: 4s\ntasks:\n  - {id: quick, type: command, command: 'sleep 1'}\n";
    on_both_backends("timeout", &[("timed.yaml", dag)], |dir| {
        ok(dir, &["run", "timed"]);
        let run = newest_run(dir);
        // Longer ago than the timeout: a run that kept its old start would fail at once.
        std::thread::sleep(Duration::from_secs(5));
        ok(dir, &["tasks", "clear", &run]);
        let queued = show(dir, &run);
        assert_eq!(queued["state"], "queued");
        assert_eq!(queued["started_at"], Value::Null);
        let after = serve_until(dir, &run, |r| {
            r["state"] == "success" || r["state"] == "failed"
        });
        assert_eq!(after["state"], "success", "{after:#}");
    });
}

// ---- 4. reopened runs respect max_active_runs, oldest first ----

#[test]
fn issue7_reopened_runs_start_within_max_active_runs_oldest_first() {
    let marks = tempfile::tempdir().expect("temp dir");
    let ledger = marks.path().join("ledger");
    let dag = format!(
        "schedule: '@daily'\nstart_date: 2026-11-01\ncatchup: false\nmax_active_runs: 1\ntasks:\n  - {{id: work, type: command, command: 'echo start {{{{ ds }}}} >> {l}; sleep 0.5; echo end {{{{ ds }}}} >> {l}'}}\n",
        l = ledger.display()
    );
    on_both_backends("maxactive", &[("daily.yaml", &dag)], |dir| {
        ok(
            dir,
            &[
                "backfill",
                "daily",
                "--from",
                "2026-11-01",
                "--to",
                "2026-11-03",
            ],
        );
        let _ = std::fs::remove_file(&ledger);
        let runs: Value =
            serde_json::from_str(&ok(dir, &["runs", "list", "--format", "json"])).expect("JSON");
        let ids: Vec<String> = runs
            .as_array()
            .expect("runs")
            .iter()
            .map(|r| r["run_id"].as_str().expect("id").to_string())
            .collect();
        assert_eq!(ids.len(), 3, "{runs:#}");
        // Newest first, as an operator clearing from the top of the list would.
        for id in &ids {
            ok(dir, &["tasks", "clear", id]);
        }
        let serve = spawn_ferry(dir, &["serve"]);
        for id in &ids {
            wait_for_run(dir, id, Duration::from_secs(40), |r| {
                r["state"] == "success"
            });
        }
        stop(serve);
        // (The daemon also makes the latest scheduled run, which is not one of these.)
        let reopened: Vec<String> = lines(&ledger)
            .into_iter()
            .filter(|line| line.contains("2026-11-0"))
            .collect();
        assert_eq!(
            reopened,
            [
                "start 2026-11-01",
                "end 2026-11-01",
                "start 2026-11-02",
                "end 2026-11-02",
                "start 2026-11-03",
                "end 2026-11-03"
            ]
        );
    });
}

// ---- 9. clearing a running task stops its attempt first ----

/// A long task whose command records its start and end in a ledger, holding a lock meanwhile:
/// an attempt that finds the lock taken (two attempts at once) records `overlap`. It sleeps
/// 60 s unless the file `fast` exists.
struct LockedTask {
    _marks: tempfile::TempDir,
    ledger: std::path::PathBuf,
    lock: std::path::PathBuf,
    fast: std::path::PathBuf,
}

impl LockedTask {
    fn new() -> Self {
        let marks = tempfile::tempdir().expect("temp dir");
        let path = |name: &str| marks.path().join(name);
        Self {
            ledger: path("ledger"),
            lock: path("lock"),
            fast: path("fast"),
            _marks: marks,
        }
    }

    /// The DAG `long`.
    fn dag(&self) -> String {
        format!(
            "tasks:\n  - id: long\n    type: command\n    command: 'exec 9>{lock}; flock -n 9 || {{ echo overlap >> {ledger}; exit 3; }}; echo start >> {ledger}; if [ -f {fast} ]; then echo end >> {ledger}; exit 0; fi; sleep 60; echo end >> {ledger}'\n",
            lock = self.lock.display(),
            ledger = self.ledger.display(),
            fast = self.fast.display()
        )
    }

    /// Starts `ferry run long` in `dir` and waits until its command runs; returns the engine
    /// and the run id.
    fn start(&self, dir: &Path) -> (Spawned, String) {
        let _ = std::fs::remove_file(&self.ledger);
        let _ = std::fs::remove_file(&self.fast);
        let engine = spawn_ferry(dir, &["run", "long"]);
        wait_until(Duration::from_secs(20), || lines(&self.ledger) == ["start"]);
        (engine, newest_run(dir))
    }

    /// From now on the command ends at once.
    fn hurry(&self) {
        std::fs::write(&self.fast, "").expect("file");
    }
}

#[test]
fn issue7_clearing_a_running_task_stops_its_attempt_before_the_next_one() {
    let long = LockedTask::new();
    let ledger = &long.ledger;
    on_both_backends("clearrunning", &[("long.yaml", &long.dag())], |dir| {
        let (engine, run) = long.start(dir);
        long.hurry();
        let said = ok(dir, &["tasks", "clear", &run, "long", "--reason", "stuck"]);
        assert!(said.contains("long (was running"), "{said}");
        let output = engine.wait_with_output().expect("ferry run ends");
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        assert_eq!(lines(ledger), ["start", "start", "end"]);
        let shown = show(dir, &run);
        assert_eq!(shown["state"], "success", "{shown:#}");
        let first = ok(dir, &["logs", &run, "long", "--try", "1"]);
        assert!(first.contains("stopped"), "{first}");
    });
}

#[test]
fn issue7_clearing_a_running_task_while_no_engine_runs_stops_it_here() {
    let long = LockedTask::new();
    let (ledger, lock) = (&long.ledger, &long.lock);
    on_both_backends("clearorphan", &[("long.yaml", &long.dag())], |dir| {
        let (engine, run) = long.start(dir);
        // The engine dies; the command goes on under its supervisor.
        nix_kill(&engine, "KILL");
        engine.wait_with_output().expect("ferry run ends");
        long.hurry();
        ok(dir, &["tasks", "clear", &run, "long"]);
        // Stopped before the clear returned: nothing holds the lock any more.
        let free = std::process::Command::new("flock")
            .args(["-n", &lock.display().to_string(), "true"])
            .status()
            .expect("flock runs");
        assert!(free.success(), "the first attempt still runs");
        let shown = serve_until(dir, &run, |r| r["state"] == "success");
        assert_eq!(task(&shown, "long")["try_number"], 2, "{shown:#}");
        assert_eq!(lines(ledger), ["start", "start", "end"]);
    });
}

// ---- clear's selection, dry run, rerun from failed, mark ----

const DIAMOND: &str = "tasks:
  - {id: extract, type: noop}
  - {id: left, type: command, command: 'exit 1', depends_on: [extract]}
  - {id: right, type: noop, depends_on: [extract]}
  - {id: join, type: noop, depends_on: [left, right]}
  - {id: report, type: noop, depends_on: [join]}
";

#[test]
fn issue7_selection_dry_run_rerun_and_mark() {
    on_both_backends("selection", &[("diamond.yaml", DIAMOND)], |dir| {
        ferry_in(dir, &["run", "diamond"], &[]);
        let run = newest_run(dir);
        let prefix = &run[..run.len() - 6];
        let failed = show(dir, prefix);
        assert_eq!(failed["state"], "failed");
        assert_eq!(task(&failed, "join")["state"], "upstream_failed");

        // A dry run names what a clear would do and changes nothing.
        let plan: Value = serde_json::from_str(&ok(
            dir,
            &[
                "tasks",
                "clear",
                prefix,
                "left",
                "--upstream",
                "--downstream",
                "--dry-run",
                "--format",
                "json",
            ],
        ))
        .expect("JSON");
        let planned: Vec<&str> = plan["plan"]["tasks"]
            .as_array()
            .expect("tasks")
            .iter()
            .map(|t| t["task_id"].as_str().expect("id"))
            .collect();
        assert_eq!(planned, ["extract", "left", "join", "report"]);
        assert_eq!(show(dir, &run)["state"], "failed");

        // --only-failed keeps the failed ones of the selection.
        let plan: Value = serde_json::from_str(&ok(
            dir,
            &[
                "tasks",
                "clear",
                &run,
                "--only-failed",
                "--dry-run",
                "--format",
                "json",
            ],
        ))
        .expect("JSON");
        let planned: Vec<&str> = plan["plan"]["tasks"]
            .as_array()
            .expect("tasks")
            .iter()
            .map(|t| t["task_id"].as_str().expect("id"))
            .collect();
        assert_eq!(planned, ["left", "join", "report"]);

        // Rerun from failed: the failed task and what depends on them, not the rest.
        let said = ok(dir, &["runs", "rerun", &run, "--reason", "upstream fixed"]);
        assert!(said.contains("cleared 3 task(s)"), "{said}");
        let after = show(dir, &run);
        assert_eq!(after["state"], "queued");
        assert_eq!(task(&after, "right")["state"], "success");
        assert_eq!(task(&after, "left")["state"], "pending");

        // Let it fail again, then mark the broken task success: its downstream tasks follow
        // their trigger rules and the run succeeds.
        serve_until(dir, &run, |r| r["state"] == "failed");
        let said = ok(
            dir,
            &[
                "tasks",
                "mark",
                &run,
                "left",
                "success",
                "--reason",
                "loaded by hand",
            ],
        );
        assert!(said.contains("join") && said.contains("report"), "{said}");
        let done = serve_until(dir, &run, |r| r["state"] == "success");
        assert_eq!(task(&done, "left")["state"], "success");
        assert_eq!(task(&done, "report")["state"], "success");
        let who: Vec<&str> = done["interventions"]
            .as_array()
            .expect("interventions")
            .iter()
            .filter_map(|e| e["reason"].as_str())
            .collect();
        assert!(
            who.contains(&"loaded by hand") && who.contains(&"upstream fixed"),
            "{done:#}"
        );

        // Unknown names are named.
        let unknown = ferry_in(dir, &["tasks", "clear", &run, "lefty"], &[]);
        assert!(
            stderr(&unknown).contains("has no task `lefty`; did you mean `left`?"),
            "{}",
            stderr(&unknown)
        );
        let unknown = ferry_in(dir, &["runs", "show", "nope"], &[]);
        assert!(
            stderr(&unknown).contains("no run `nope`"),
            "{}",
            stderr(&unknown)
        );
        let bad = ferry_in(dir, &["tasks", "mark", &run, "left", "running"], &[]);
        assert!(
            stderr(&bad).contains("success, failed or skipped"),
            "{}",
            stderr(&bad)
        );
    });
}

// ---- pause ----

#[test]
fn issue7_a_paused_dag_gets_no_new_scheduled_runs() {
    let dag = "schedule: '@daily'\nstart_date: 2026-11-20\ncatchup: true\ntasks:\n  - {id: work, type: noop}\n";
    on_both_backends("pause", &[("daily.yaml", dag)], |dir| {
        let said = ok(dir, &["dags", "pause", "daily", "--reason", "source down"]);
        assert!(said.contains("DAG daily is paused"), "{said}");
        let listed: Value =
            serde_json::from_str(&ok(dir, &["dags", "list", "--format", "json"])).expect("JSON");
        assert_eq!(listed[0]["state"], "paused");
        assert_eq!(listed[0]["paused"]["reason"], "source down");
        let serve = spawn_ferry(dir, &["serve"]);
        std::thread::sleep(Duration::from_secs(3));
        let runs: Value =
            serde_json::from_str(&ok(dir, &["runs", "list", "--format", "json"])).expect("JSON");
        assert_eq!(runs, Value::Array(Vec::new()));
        ok(dir, &["dags", "unpause", "daily"]);
        wait_until(Duration::from_secs(20), || {
            serde_json::from_str::<Value>(&ok(dir, &["runs", "list", "--format", "json"]))
                .is_ok_and(|runs| runs.as_array().is_some_and(|r| !r.is_empty()))
        });
        stop(serve);
        let unknown = ferry_in(dir, &["dags", "pause", "dayly"], &[]);
        assert!(
            stderr(&unknown).contains("did you mean `daily`?"),
            "{}",
            stderr(&unknown)
        );
    });
}

// ---- 5. the catch-up cursor, dates that are not complete, reversed ranges ----

/// A date `days` from today (UTC), as `--date` takes it.
fn day(days: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::days(days))
        .format("%Y-%m-%d")
        .to_string()
}

fn daily_dag(start_days_ago: i64) -> String {
    format!(
        "schedule: '@daily'\nstart_date: {}\ncatchup: true\nmax_active_runs: 8\ntasks:\n  - {{id: work, type: noop}}\n",
        day(-start_days_ago)
    )
}

#[test]
fn issue7_only_scheduled_runs_move_the_catch_up_cursor() {
    let dag = daily_dag(6);
    on_both_backends("cursor", &[("daily.yaml", &dag)], |dir| {
        ok(dir, &["run", "daily", "--date", &day(-2)]);
        // A manual run for a date after every scheduled one: catch-up still makes the days
        // before it (and the manual run stands for its own day).
        let serve = spawn_ferry(dir, &["serve"]);
        let expected: Vec<String> = (1..=6).map(|d| day(-d)).collect();
        wait_until(Duration::from_secs(30), || {
            let runs: Value = serde_json::from_str(&ok(dir, &["runs", "list", "--format", "json"]))
                .expect("JSON");
            let dates: Vec<String> = runs
                .as_array()
                .expect("runs")
                .iter()
                .filter(|r| r["state"] == "success")
                .map(|r| r["logical_date"].as_str().expect("date")[..10].to_string())
                .collect();
            expected.iter().all(|d| dates.contains(d))
        });
        stop(serve);
        let runs: Value =
            serde_json::from_str(&ok(dir, &["runs", "list", "--format", "json"])).expect("JSON");
        let manual: Vec<&Value> = runs
            .as_array()
            .expect("runs")
            .iter()
            .filter(|r| r["run_type"] == "manual")
            .collect();
        assert_eq!(manual.len(), 1, "{runs:#}");
    });
}

#[test]
fn issue7_dates_not_complete_or_before_start_date_are_refused_unless_forced() {
    let dag = daily_dag(3);
    on_both_backends("dates", &[("daily.yaml", &dag)], |dir| {
        for (args, why) in [
            (vec!["run", "daily", "--date", &day(0)], "has not ended yet"),
            (vec!["run", "daily", "--date", &day(5)], "has not ended yet"),
            (
                vec!["run", "daily", "--date", &day(-10)],
                "before the start_date",
            ),
            (
                vec!["backfill", "daily", "--from", &day(-1), "--to", &day(-3)],
                "the range is reversed",
            ),
        ] {
            let output = ferry_in(dir, &args, &[]);
            assert_eq!(
                output.status.code(),
                Some(2),
                "{args:?}: {}",
                stderr(&output)
            );
            assert!(
                stderr(&output).contains(why),
                "{args:?}: {}",
                stderr(&output)
            );
        }
        // A backfill over a range that reaches into the future makes the complete days only.
        let output = ferry_in(
            dir,
            &["backfill", "daily", "--from", &day(-2), "--to", &day(2)],
            &[],
        );
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        assert!(
            stderr(&output).contains("interval(s) of the range skipped"),
            "{}",
            stderr(&output)
        );
        let runs: Value =
            serde_json::from_str(&ok(dir, &["runs", "list", "--format", "json"])).expect("JSON");
        assert_eq!(runs.as_array().expect("runs").len(), 2, "{runs:#}");
        // --force runs a future date anyway; and the same date again names the run that exists.
        ok(dir, &["run", "daily", "--date", &day(1), "--force"]);
        let again = ferry_in(dir, &["run", "daily", "--date", &day(-1)], &[]);
        assert_eq!(again.status.code(), Some(2));
        let said = stderr(&again);
        assert!(
            said.contains(&format!(
                "daily__backfill__{}T00:00:00+00:00 (success)",
                day(-1)
            )),
            "{said}"
        );
    });
}

// ---- 6. backfill --parallel ----

#[test]
fn issue7_backfill_parallel_runs_that_many_at_once() {
    let marks = tempfile::tempdir().expect("temp dir");
    let ledger = marks.path().join("ledger");
    let dag = format!(
        "schedule: '@daily'\nstart_date: 2026-01-01\nmax_active_runs: 1\ntasks:\n  - {{id: work, type: command, command: 'echo start >> {l}; sleep 2; echo end >> {l}'}}\n",
        l = ledger.display()
    );
    on_both_backends("parallel", &[("slow.yaml", &dag)], |dir| {
        let _ = std::fs::remove_file(&ledger);
        ok(
            dir,
            &[
                "backfill",
                "slow",
                "--from",
                "2026-11-01",
                "--to",
                "2026-11-03",
                "--parallel",
                "3",
            ],
        );
        // All three started before any ended.
        let entries = lines(&ledger);
        assert_eq!(entries[..3], ["start", "start", "start"], "{entries:?}");
    });
}

// ---- 8. wait_for_dag fails fast ----

#[test]
fn issue7_wait_for_dag_fails_fast_when_the_awaited_run_failed() {
    let upstream = "schedule: '@daily'\nstart_date: 2026-01-01\ntasks:\n  - {id: load, type: command, command: 'exit 1'}\n";
    let fast = "schedule: '@daily'\nstart_date: 2026-01-01\ntasks:\n  - {id: wait, type: wait_for_dag, dag: upstream, timeout: 1h, poll_interval: 1s}\n";
    let patient = "schedule: '@daily'\nstart_date: 2026-01-01\ntasks:\n  - {id: wait, type: wait_for_dag, dag: upstream, timeout: 3s, poll_interval: 1s, on_failed: wait}\n";
    on_both_backends(
        "waitfail",
        &[
            ("upstream.yaml", upstream),
            ("fast.yaml", fast),
            ("patient.yaml", patient),
        ],
        |dir| {
            let range = ["--from", "2026-11-01", "--to", "2026-11-01"];
            let failed = ferry_in(dir, &[&["backfill", "upstream"][..], &range].concat(), &[]);
            assert_eq!(failed.status.code(), Some(1));
            let began = std::time::Instant::now();
            let output = ferry_in(dir, &[&["backfill", "fast"][..], &range].concat(), &[]);
            assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
            assert!(
                began.elapsed() < Duration::from_secs(20),
                "waited {:?}",
                began.elapsed()
            );
            let log = ok(dir, &["logs", "fast__backfill__2026-11-01", "wait"]);
            assert!(log.contains("ended without success"), "{log}");
            // on_failed: wait waits for its timeout instead.
            let output = ferry_in(dir, &[&["backfill", "patient"][..], &range].concat(), &[]);
            assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
            let log = ok(dir, &["logs", "patient__backfill__2026-11-01", "wait"]);
            assert!(log.contains("gave up waiting"), "{log}");
        },
    );
}

// ---- 10. the README's examples, 11. closed pipes, 12. run ids and JSON ----

#[test]
fn issue7_the_readmes_examples_pass_on_a_fresh_copy() {
    let repo = crate::util::repo();
    let readme = std::fs::read_to_string(repo.join("README.md")).expect("README");
    let section = readme
        .split("## Watching it work")
        .nth(1)
        .and_then(|rest| rest.split("```sh").nth(1))
        .and_then(|block| block.split("```").next())
        .expect("the README's example block");
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = std::process::Command::new("cp")
        .args(["-r", "dags", "dev", "ferry.toml"])
        .arg(dir.path())
        .current_dir(&repo)
        .status()
        .expect("cp runs");
    assert!(copy.success());
    let serve = crate::util::spawn_ferry_logged(dir.path(), &["serve"]);
    let run = wait_for_success_of(dir.path(), "warehouse_housekeeping");
    // The Forward example moves the seeded application database's events of each day into
    // the dev warehouse.
    let forward = wait_for_success_of(dir.path(), "forward_app_events");
    let shown: Value = serde_json::from_str(&stdout(&ferry_in(
        dir.path(),
        &["runs", "show", &forward, "--format", "json"],
        &[],
    )))
    .expect("JSON");
    let moved = shown["tasks"]
        .as_array()
        .and_then(|tasks| tasks.iter().find(|t| t["task_id"] == "forward_events"))
        .and_then(|t| t["metrics"]["rows_written"].as_i64())
        .expect("rows written are recorded");
    assert!(moved > 0, "{shown}");
    // The dashboard pipeline publishes its aggregates into the seeded application database.
    let dashboard = wait_for_success_of(dir.path(), "dashboard_daily");
    let shown: Value = serde_json::from_str(&stdout(&ferry_in(
        dir.path(),
        &["runs", "show", &dashboard, "--format", "json"],
        &[],
    )))
    .expect("JSON");
    let published = shown["tasks"]
        .as_array()
        .and_then(|tasks| tasks.iter().find(|t| t["task_id"] == "publish"))
        .map(|t| t["metrics"].clone())
        .expect("the publish task");
    assert_eq!(published["rows_read"], 3600, "a row per class: {shown}");
    assert_eq!(published["rows_inserted"], 3600, "{shown}");
    let app = format!(
        "sqlite:{}",
        dir.path().join(".ferry/dev/app_db.sqlite").display()
    );
    assert_eq!(
        crate::util::sql_scalar(
            &app,
            "SELECT CAST(COUNT(*) AS TEXT) FROM dashboard_class_daily"
        ),
        "3600"
    );
    for line in section.lines().filter(|l| !l.trim().is_empty()) {
        let command = line.split(" # ").next().expect("command").trim();
        let args: Vec<String> = command
            .strip_prefix("cargo run --release -- ")
            .unwrap_or_else(|| panic!("not a ferry command: {line}"))
            .split_whitespace()
            .map(|word| word.replace("<RUN>", &run))
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = ferry_in(dir.path(), &args, &[]);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{line}: {}{}",
            stdout(&output),
            stderr(&output)
        );
    }
    stop(serve);
}

/// Waits for a successful run of `dag` and returns its id.
fn wait_for_success_of(dir: &Path, dag: &str) -> String {
    let found = std::cell::RefCell::new(String::new());
    wait_until(Duration::from_secs(40), || {
        let output = ferry_in(
            dir,
            &["runs", "list", "--dag", dag, "--format", "json"],
            &[],
        );
        let Ok(runs) = serde_json::from_str::<Value>(&stdout(&output)) else {
            return false;
        };
        let done = runs
            .as_array()
            .and_then(|runs| runs.iter().find(|r| r["state"] == "success"))
            .and_then(|r| r["run_id"].as_str().map(str::to_string));
        done.map(|id| *found.borrow_mut() = id).is_some()
    });
    found.into_inner()
}

#[test]
fn issue7_every_command_ends_quietly_on_a_closed_pipe() {
    let repo = crate::util::repo();
    for args in [
        &["dags", "show", "warehouse_housekeeping"][..],
        &["dags", "list"],
        &["validate"],
        &["schema"],
        &["schedule", "warehouse_housekeeping", "-n", "500"],
    ] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(args)
            .current_dir(&repo)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("ferry starts");
        // The reader goes away before ferry writes (as `| head -1` does after one line).
        drop(child.stdout.take());
        let output = child.wait_with_output().expect("ferry ends");
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(!stderr(&output).contains("panicked"), "{}", stderr(&output));
    }
}

#[test]
fn issue7_run_ids_have_microseconds_and_json_has_rfc3339_times_and_objects() {
    let dag = "params: {table: scores}\ntasks:\n  - {id: work, type: noop}\n";
    on_both_backends("runids", &[("adhoc.yaml", dag)], |dir| {
        ok(dir, &["run", "adhoc", "--param", "table=users"]);
        let runs: Value =
            serde_json::from_str(&ok(dir, &["runs", "list", "--format", "json"])).expect("JSON");
        let run = &runs[0];
        let id = run["run_id"].as_str().expect("id");
        let stamp = id.strip_prefix("adhoc__manual__").expect("manual id");
        // 2026-11-29T07:39:51.085877+00:00: microseconds, as Airflow's ids.
        assert_eq!(
            stamp.len(),
            "2026-11-29T07:39:51.085877+00:00".len(),
            "{id}"
        );
        assert!(chrono::DateTime::parse_from_rfc3339(stamp).is_ok(), "{id}");
        assert_eq!(run["conf"], serde_json::json!({"table": "users"}));
        for field in ["logical_date", "queued_at", "started_at", "ended_at"] {
            let text = run[field]
                .as_str()
                .unwrap_or_else(|| panic!("{field}: {run:#}"));
            assert!(
                chrono::DateTime::parse_from_rfc3339(text).is_ok(),
                "{field}: {text}"
            );
        }
        let shown = show(dir, id);
        let ended = task(&shown, "work")["ended_at"].as_str().expect("time");
        assert!(
            chrono::DateTime::parse_from_rfc3339(ended).is_ok(),
            "{ended}"
        );
    });
}

// ---- ferry logs: prefixes, unknown names, --follow ----

#[test]
fn issue7_logs_follow_a_running_attempt_and_name_what_is_unknown() {
    let dag = "tasks:\n  - {id: talk, type: command, command: 'echo one; sleep 1; echo two; sleep 1; echo three'}\n";
    on_both_backends("follow", &[("talk.yaml", dag)], |dir| {
        let engine = spawn_ferry(dir, &["run", "talk"]);
        wait_until(Duration::from_secs(20), || {
            ferry_in(dir, &["runs", "list"], &[]).status.success()
        });
        let run = newest_run(dir);
        wait_for_run(dir, &run, Duration::from_secs(20), |r| {
            task(r, "talk")["state"] == "running"
        });
        let followed = ok(dir, &["logs", "talk__", "talk", "--follow"]);
        assert!(
            followed.contains("one\ntwo\nthree\n") && followed.contains("# ended: success"),
            "{followed}"
        );
        engine.wait_with_output().expect("ferry run ends");
        for (args, said) in [
            (vec!["logs", "nope", "talk"], "no run `nope`".to_string()),
            (
                vec!["logs", &run, "tlak"],
                format!("run `{run}` has no task `tlak`; did you mean `talk`?"),
            ),
            (
                vec!["logs", &run, "talk", "--try", "7"],
                format!("task `talk` of run `{run}` has no try 7 (it has had 1)"),
            ),
        ] {
            let output = ferry_in(dir, &args, &[]);
            assert_eq!(output.status.code(), Some(2), "{args:?}");
            assert!(
                stderr(&output).contains(&said),
                "{args:?}: {}",
                stderr(&output)
            );
        }
    });
}

// ---- language and validation ----

#[test]
fn issue7_a_pool_that_is_not_configured_is_an_error() {
    let dag = "defaults: {pool: heavy}\ntasks:\n  - {id: a, type: noop}\n  - {id: b, type: noop, pool: maintenanc}\n";
    let dir = project(&[("pools.yaml", dag)]);
    std::fs::write(
        dir.path().join("ferry.toml"),
        "[engine.pools]\nmaintenance = 1\n",
    )
    .expect("config");
    let output = ferry_in(dir.path(), &["validate"], &[]);
    assert_eq!(output.status.code(), Some(1));
    let said = stdout(&output);
    assert!(
        said.contains("pools.yaml:1:18: error[unknown-pool]: dag `pools`, task `a`, field `pool`: pool `heavy` is not defined in the configuration"),
        "{said}"
    );
    assert!(
        said.contains("task `b`, field `pool`: pool `maintenanc` is not defined")
            && said.contains("did you mean `maintenance`?"),
        "{said}"
    );
}

#[test]
fn issue7_airflow_template_variables_render_in_a_real_run() {
    let marks = tempfile::tempdir().expect("temp dir");
    let out = marks.path().join("out");
    let dag = format!(
        "schedule: '@daily'\nstart_date: 2026-11-01\nparams: {{table: scores}}\ntasks:\n  - id: show\n    type: command\n    command: \"echo '{{{{ ds }}}} prev={{{{ prev_ds }}}} next={{{{ next_ds }}}} success={{{{ prev_data_interval_start_success }}}} nodash={{{{ ts_nodash }}}} add={{{{ macros.ds_add(ds, 2) }}}} fmt={{{{ macros.ds_format(ds, \\\"%Y-%m-%d\\\", \\\"%d/%m\\\") }}}} conf={{{{ dag_run.conf.table | default(\\\"-\\\") }}}}' >> {}\"\n  - {{id: cleanup, type: noop, depends_on: [show], trigger_rule: always}}\n",
        out.display()
    );
    let dir = project(&[("vars.yaml", &dag)]);
    ok(
        dir.path(),
        &[
            "backfill",
            "vars",
            "--from",
            "2026-11-03",
            "--to",
            "2026-11-03",
        ],
    );
    ok(
        dir.path(),
        &[
            "run",
            "vars",
            "--date",
            "2026-11-05",
            "--param",
            "table=users",
        ],
    );
    assert_eq!(
        lines(&out),
        [
            "2026-11-03 prev=2026-11-02 next=2026-11-04 success=None nodash=20261103T000000 add=2026-11-05 fmt=03/11 conf=-",
            "2026-11-05 prev=2026-11-04 next=2026-11-06 success=2026-11-03T00:00:00+00:00 nodash=20261105T000000 add=2026-11-07 fmt=05/11 conf=users",
        ]
    );
}

#[test]
fn issue7_validate_reports_every_template_problem_and_points_at_the_offending_character() {
    let dir = project(&[
        (
            "templates.yaml",
            "tasks:\n  - id: a\n    type: comand\n    command: 'echo {{ ds_addd(ds, 1) }} {{ dss }} {{ ds | uper }}'\n  - id: b\n    type: noop\n    retry: 2\n",
        ),
        (
            "tabs.yaml",
            "tasks:\n  - id: a\n    type: noop\n  - id: b\n\ttype: noop\n",
        ),
        ("indent.yaml", "tasks:\n  - id: a\n     type: noop\n"),
    ]);
    let output = ferry_in(dir.path(), &["validate"], &[]);
    assert_eq!(output.status.code(), Some(1));
    let said = stdout(&output);
    for expected in [
        "templates.yaml:3:11: error[unknown-task-type]: dag `templates`, task `a`, field `type`: unknown task type `comand`\n  help: did you mean `command`?",
        "field `command`: unknown template variable `ds_addd`\n  help: did you mean the filter `ds_add`? (`{{ ds | ds_add(...) }}`)",
        "field `command`: unknown template variable `dss`\n  help: did you mean `ds`?",
        "field `command`: unknown template filter `uper`\n  help: did you mean `upper`?",
        "templates.yaml:7:5: error[unknown-field]: dag `templates`, task `b`, field `retry`: unknown field `retry`\n  help: did you mean `retries`?",
        "tabs.yaml:5:1: error[yaml-syntax]: invalid YAML: while scanning a plain scalar, found a tab\n  help: YAML indents with spaces only",
        "indent.yaml:3:6: error[yaml-syntax]: invalid YAML: mapping values are not allowed in this context\n  help: this line's indentation",
    ] {
        assert!(said.contains(expected), "missing:\n{expected}\nin:\n{said}");
    }
}

#[test]
fn issue7_typed_params_are_checked_when_a_run_is_created() {
    let marks = tempfile::tempdir().expect("temp dir");
    let out = marks.path().join("out");
    let dag = format!(
        "params:\n  days: {{type: integer, default: 7}}\n  mode: {{enum: [full, incremental], default: full}}\n  day: {{type: date}}\ntasks:\n  - {{id: show, type: command, command: 'echo {{{{ params.day }}}} {{{{ params.days + 1 }}}} {{{{ params.mode }}}} >> {}'}}\n",
        out.display()
    );
    let broken = "schedule: '@daily'\nstart_date: 2026-11-01\nparams:\n  a: {type: integr}\n  b: {type: integer, default: x}\n  c: {type: string}\n  d: {enum: []}\ntasks:\n  - {id: t, type: noop}\n";
    let dir = project(&[("typed.yaml", &dag), ("broken.yaml", broken)]);
    for (args, said) in [
        (
            vec![
                "run",
                "typed",
                "--param",
                "day=2026-11-24",
                "--param",
                "days=seven",
            ],
            "parameter `days`: `seven` is not an integer",
        ),
        (
            vec!["run", "typed"],
            "parameter `day` has no default: give it with `--param day=...`",
        ),
        (
            vec!["run", "typed", "--param", "day=24/11/2026"],
            "parameter `day`: `24/11/2026` is not a date (YYYY-MM-DD)",
        ),
        (
            vec![
                "run",
                "typed",
                "--param",
                "day=2026-11-24",
                "--param",
                "mode=partial",
            ],
            "`partial` is not one of `full`, `incremental`",
        ),
        (
            vec!["run", "typed", "--param", "dya=2026-11-24"],
            "DAG `typed` has no parameter `dya` (did you mean `day`?)",
        ),
    ] {
        let output = ferry_in(dir.path(), &args, &[]);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&output).contains(said),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    assert!(!out.exists(), "no run was made from bad parameters");
    ok(
        dir.path(),
        &[
            "run",
            "typed",
            "--param",
            "day=2026-11-24",
            "--param",
            "days=14",
        ],
    );
    assert_eq!(lines(&out), ["2026-11-24 15 full"]);
    let output = ferry_in(dir.path(), &["validate"], &[]);
    let said = stdout(&output);
    for expected in [
        "field `params.a`: parameter `a`: unknown parameter type `integr`; did you mean `integer`?",
        "field `params.b`: parameter `b`: its default `x` is not an integer",
        "field `params.c`: parameter `c` has no default, but scheduled runs are given no parameters",
        "field `params.d`: parameter `d`: `enum` must be a non-empty list of values",
    ] {
        assert!(said.contains(expected), "missing {expected} in:\n{said}");
    }
}

#[test]
fn issue7_secrets_refer_to_environment_variables_and_an_unset_one_is_shown() {
    let dir = project(&[]);
    std::fs::write(
        dir.path().join("ferry.toml"),
        "[alerts.channels.data-oncall]\nkind = \"slack\"\nwebhook_url = \"${ONCALL_URL}\"\n[alerts.channels.owners]\nkind = \"slack\"\nwebhook_url = \"${OWNERS_URL}\"\n",
    )
    .expect("config");
    let output = ferry_in(
        dir.path(),
        &["config", "show"],
        &[("ONCALL_URL", "https://hooks.example/T0/hunter2-token")],
    );
    let shown = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(shown.contains("webhook_url = \"********\""), "{shown}");
    assert!(
        shown.contains("webhook_url = \"<unset: ${OWNERS_URL}>\""),
        "{shown}"
    );
    assert!(!shown.contains("hunter2"), "{shown}");
}

// ---- dags list and reloads ----

#[test]
fn issue7_dags_list_shows_broken_and_paused_dags_and_serve_logs_reloads() {
    let dir = project(&[
        ("kept.yaml", "tasks:\n  - {id: a, type: noop}\n"),
        ("other.yaml", "tasks:\n  - {id: a, type: noop}\n"),
    ]);
    let dags = dir.path().join("dags/internal");
    ok(dir.path(), &["run", "kept"]);
    let serve = spawn_ferry(dir.path(), &["serve"]);
    wait_until(Duration::from_secs(20), || {
        ferry_in(dir.path(), &["runs", "list"], &[])
            .status
            .success()
    });
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::write(dags.join("kept.yaml"), "tasks:\n  - {id: a, type: nope}\n").expect("break");
    std::fs::write(dags.join("added.yaml"), "tasks:\n  - {id: a, type: noop}\n").expect("add");
    std::fs::remove_file(dags.join("other.yaml")).expect("remove");
    std::thread::sleep(Duration::from_millis(3000));
    ok(dir.path(), &["dags", "pause", "added"]);
    let listed = ok(dir.path(), &["dags", "list"]);
    assert!(listed.contains("kept   broken"), "{listed}");
    assert!(listed.contains("added  paused"), "{listed}");
    assert!(
        listed.contains("kept is broken: ")
            && listed.contains("unknown task type `nope`")
            && listed.contains("keeps scheduling its last valid version (1, loaded "),
        "{listed}"
    );
    let json: Value =
        serde_json::from_str(&ok(dir.path(), &["dags", "list", "--format", "json"])).expect("JSON");
    let kept = json
        .as_array()
        .expect("list")
        .iter()
        .find(|d| d["id"] == "kept")
        .expect("kept");
    assert_eq!(kept["state"], "broken");
    assert_eq!(kept["last_valid_version"]["version"], 1);
    nix_kill(&serve, "TERM");
    let output = serve.wait_with_output().expect("serve ends");
    let said = stderr(&output);
    for expected in [
        "ferry: DAG added added",
        "ferry: DAG kept has errors now: its last valid version goes on being scheduled",
        "ferry: DAG other removed: it gets no new runs; its history stays",
    ] {
        assert!(said.contains(expected), "missing {expected} in:\n{said}");
    }
}

// ---- the live board of `ferry run` ----

/// Runs `ferry ARGS` in `dir` under a pseudo-terminal (`script`), so that it draws its board.
fn on_a_terminal(dir: &Path, args: &str) -> String {
    let output = std::process::Command::new("script")
        .args([
            "-qec",
            &format!("{} {args}", env!("CARGO_BIN_EXE_ferry")),
            "/dev/null",
        ])
        .current_dir(dir)
        .env_remove("FERRY_CONFIG")
        .output()
        .expect("script runs (util-linux)");
    assert!(output.status.success(), "{}", stderr(&output));
    stdout(&output)
}

#[test]
fn issue7_the_live_board_counts_up_running_tasks_and_follows_another_engine() {
    let dag = "tasks:\n  - {id: nap, type: command, command: 'sleep 3'}\n  - {id: after, type: noop, depends_on: [nap]}\n";
    let dir = project(&[("slow.yaml", dag)]);
    let board = on_a_terminal(dir.path(), "run slow");
    // Redrawn while the task runs: its elapsed time counts up without any new event.
    assert!(board.contains("running          2s"), "{board}");
    assert!(board.contains("✓ after"), "{board}");
    // With a daemon owning the store, the run is handed over and the board follows the store.
    let serve = spawn_ferry(dir.path(), &["serve"]);
    std::thread::sleep(Duration::from_millis(1000));
    let board = on_a_terminal(dir.path(), "run slow");
    stop(serve);
    assert!(board.contains("running          2s"), "{board}");
    assert!(board.contains("✓ after"), "{board}");
}

#[test]
fn issue7_a_rerun_goes_on_with_the_recorded_version_or_the_latest_when_asked() {
    let v1 = "tasks:\n  - {id: a, type: command, command: 'exit 1'}\n  - {id: b, type: noop, depends_on: [a]}\n";
    let v2 = "tasks:\n  - {id: a, type: command, command: 'echo fixed'}\n  - {id: c, type: noop, depends_on: [a]}\n";
    on_both_backends("versions", &[("versioned.yaml", v1)], |dir| {
        std::fs::write(dir.join("dags/internal/versioned.yaml"), v1).expect("v1");
        ferry_in(dir, &["run", "versioned"], &[]);
        let run = newest_run(dir);
        std::fs::write(dir.join("dags/internal/versioned.yaml"), v2).expect("v2");
        // By default the run keeps its own version: `a` fails again.
        ok(dir, &["runs", "rerun", &run]);
        let again = serve_until(dir, &run, |r| r["state"] == "failed");
        let version = again["dag_version_id"].clone();
        // With --latest-version it goes on with the file as it is now, recorded on the run.
        let said = ok(
            dir,
            &[
                "runs",
                "rerun",
                &run,
                "--latest-version",
                "--reason",
                "fixed a",
            ],
        );
        assert!(
            said.contains("goes on with DAG version")
                && said.contains("tasks added by that version: c")
                && said.contains("tasks that version no longer has (skipped): b"),
            "{said}"
        );
        let done = serve_until(dir, &run, |r| r["state"] == "success");
        assert_ne!(done["dag_version_id"], version, "{done:#}");
        assert_eq!(task(&done, "c")["state"], "success");
        assert_eq!(task(&done, "b")["state"], "skipped");
    });
}

// ---- 7. max_active_tasks counts across the DAG's runs; 9. a stuck wait can be cleared ----

#[test]
fn issue7_max_active_tasks_counts_the_dags_tasks_across_its_runs() {
    let marks = tempfile::tempdir().expect("temp dir");
    let ledger = marks.path().join("ledger");
    let dag = format!(
        "schedule: '@daily'\nstart_date: 2026-01-01\nmax_active_runs: 3\nmax_active_tasks: 1\ntasks:\n  - {{id: work, type: command, command: 'echo start >> {l}; sleep 0.5; echo end >> {l}'}}\n",
        l = ledger.display()
    );
    on_both_backends("maxtasks", &[("narrow.yaml", &dag)], |dir| {
        let _ = std::fs::remove_file(&ledger);
        ok(
            dir,
            &[
                "backfill",
                "narrow",
                "--from",
                "2026-11-01",
                "--to",
                "2026-11-03",
            ],
        );
        // Three runs at once, but one task of the DAG at a time.
        assert_eq!(
            lines(&ledger),
            ["start", "end", "start", "end", "start", "end"]
        );
    });
}

#[test]
fn issue7_a_stuck_wait_can_be_cleared() {
    let waiting = "schedule: '@daily'\nstart_date: 2026-01-01\ntasks:\n  - {id: wait, type: wait_for_dag, dag: never, timeout: 1h, poll_interval: 1h}\n";
    let never = "schedule: '@daily'\nstart_date: 2026-01-01\ntasks:\n  - {id: t, type: noop}\n";
    on_both_backends(
        "stuckwait",
        &[("waiting.yaml", waiting), ("never.yaml", never)],
        |dir| {
            let engine = spawn_ferry(
                dir,
                &[
                    "backfill",
                    "waiting",
                    "--from",
                    "2026-11-01",
                    "--to",
                    "2026-11-01",
                ],
            );
            let run = "waiting__backfill__2026-11-01";
            wait_until(Duration::from_secs(20), || {
                ferry_in(dir, &["runs", "show", run, "--format", "json"], &[])
                    .status
                    .success()
            });
            wait_for_run(dir, run, Duration::from_secs(20), |r| {
                task(r, "wait")["state"] == "deferred"
            });
            let said = ok(dir, &["tasks", "clear", run, "wait", "--reason", "stuck"]);
            assert!(said.contains("wait (was deferred"), "{said}");
            // It waits again, as a new try; the first one is closed as cleared.
            let shown = wait_for_run(dir, run, Duration::from_secs(20), |r| {
                task(r, "wait")["state"] == "deferred" && task(r, "wait")["try_number"] == 2
            });
            assert_eq!(shown["state"], "running");
            let first = ok(dir, &["logs", run, "wait", "--try", "1"]);
            assert!(first.contains("— cleared"), "{first}");
            nix_kill(&engine, "TERM");
            engine.wait_with_output().expect("backfill ends");
        },
    );
}

// ---- review findings: an engine that never hears of a clear; catch-up past existing runs;
// the timeout of a reopened run ----

#[test]
fn issue7_a_cleared_attempt_is_stopped_by_the_next_engine_when_the_owner_never_heard() {
    let long = LockedTask::new();
    let ledger = &long.ledger;
    on_both_backends("frozenowner", &[("long.yaml", &long.dag())], |dir| {
        let serve = spawn_ferry(dir, &["serve"]);
        let (engine, run) = long.start(dir);
        // The owner is frozen: it holds the store but hears nothing.
        nix_kill(&serve, "STOP");
        long.hurry();
        let said = ok(dir, &["tasks", "clear", &run, "long"]);
        assert!(said.contains("long (was running"), "{said}");
        nix_kill(&serve, "KILL");
        drop(serve);
        drop(engine);
        // The next engine stops the fenced attempt before the task runs again.
        let shown = serve_until(dir, &run, |r| r["state"] == "success");
        assert_eq!(task(&shown, "long")["try_number"], 2, "{shown:#}");
        assert_eq!(lines(ledger), ["start", "start", "end"]);
        let first = ok(dir, &["logs", &run, "long", "--try", "1"]);
        assert!(first.contains("— cleared"), "{first}");
    });
}

#[test]
fn issue7_catch_up_moves_past_intervals_that_already_have_runs() {
    let start = (chrono::Utc::now() - chrono::Duration::hours(720))
        .format("%Y-%m-%d")
        .to_string();
    let dag = format!(
        "schedule: '@hourly'\nstart_date: {start}\ncatchup: true\nmax_active_runs: 64\ntasks:\n  - {{id: t, type: noop}}\n"
    );
    let dir = project(&[("hourly.yaml", &dag)]);
    // 600 hours made by a backfill: more than one pass of the scheduler (500).
    let to = (chrono::Utc::now() - chrono::Duration::hours(720) + chrono::Duration::days(24))
        .format("%Y-%m-%d")
        .to_string();
    ok(
        dir.path(),
        &["backfill", "hourly", "--from", &start, "--to", &to],
    );
    // Its output is not read: it must not fill a pipe.
    let serve = Spawned::from(
        std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
            .arg("serve")
            .env(crate::util::ANY_PORT.0, crate::util::ANY_PORT.1)
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("ferry starts"),
    );
    // The scheduler made its own runs after the 600 of the backfill (the first pass of 500
    // intervals all had runs already).
    wait_until(Duration::from_secs(60), || {
        let output = ferry_in(
            dir.path(),
            &[
                "runs", "list", "--dag", "hourly", "--limit", "1", "--format", "json",
            ],
            &[],
        );
        serde_json::from_str::<Value>(&stdout(&output))
            .is_ok_and(|runs| runs[0]["run_type"] == "scheduled")
    });
    stop(serve);
}

#[test]
fn issue7_a_reopened_run_is_not_timed_out_by_its_earlier_start() {
    let dag = "dagrun_timeout: 3s\ntasks:\n  - {id: work, type: command, command: 'sleep 2'}\n";
    on_both_backends("reopentimeout", &[("timed.yaml", dag)], |dir| {
        let serve = spawn_ferry(dir, &["serve"]);
        std::thread::sleep(Duration::from_millis(800));
        ok(dir, &["run", "timed"]);
        let run = newest_run(dir);
        std::thread::sleep(Duration::from_millis(300));
        // Cleared within the first start's three seconds, in the same daemon.
        ok(dir, &["tasks", "clear", &run]);
        let done = wait_for_run(dir, &run, Duration::from_secs(20), |r| {
            (r["state"] == "success" || r["state"] == "failed")
                && task(r, "work")["try_number"] == 2
        });
        stop(serve);
        assert_eq!(done["state"], "success", "{done:#}");
    });
}
