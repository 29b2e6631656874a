//! The engine end to end on a temporary SQLite store, with real processes.

use std::sync::{Arc, Mutex};

use ferry_dag::{Templates, parse_dag};

use super::*;
use crate::clock::SystemClock;

/// Not a test: the entry point through which these tests start this binary as a supervisor
/// (the `ferry supervise` of the real binary).
#[test]
#[ignore = "entry point of the supervisor process for the other tests"]
fn supervisor_entry() {
    if std::env::var_os("FERRY_TEST_SUPERVISOR").is_some() {
        let dir = std::path::PathBuf::from(std::env::args().next_back().unwrap_or_default());
        std::process::exit(i32::from(ferry_executor::supervisor::main(&dir)));
    }
}

/// The engine's settings in these tests: supervisors are this test binary.
pub(super) fn test_config(dir: &std::path::Path, parallelism: usize) -> EngineConfig {
    EngineConfig {
        worker: worker_name(),
        parallelism,
        pools: BTreeMap::new(),
        heartbeat_interval: Duration::from_secs(5),
        heartbeat_timeout: Duration::from_secs(30),
        shutdown_grace: Duration::from_secs(5),
        stop_mode: StopMode::Detach,
        attempts_dir: dir.join("attempts"),
        launcher: Launcher::new(
            std::env::current_exe().expect("test binary"),
            [
                "engine::tests::supervisor_entry",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
                "-q",
            ]
            .into_iter()
            .map(Into::into)
            .collect(),
            vec![("FERRY_TEST_SUPERVISOR".to_string(), "1".to_string())],
        ),
        task_env: vec![(
            "PATH".to_string(),
            std::env::var("PATH").unwrap_or_default(),
        )],
        leftovers: Leftovers::Stop,
        secrets: Redactor::new(),
        connectors: None,
        environment: "dev".to_string(),
    }
}

struct Harness {
    engine: Engine,
    seen: Arc<Mutex<Vec<String>>>,
    dir: tempfile::TempDir,
}

async fn harness(parallelism: usize) -> Harness {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&format!(
        "sqlite://{}",
        dir.path().join("ferry.db").display()
    ))
    .await
    .expect("store");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let config = test_config(dir.path(), parallelism);
    let observer = Box::new(move |p: &Progress| {
        if let Some(task) = &p.task_id {
            sink.lock()
                .expect("lock")
                .push(format!("{task}:{}", p.state));
        }
    });
    Harness {
        engine: Engine::new(store, Arc::new(SystemClock::real()), config, observer),
        seen,
        dir,
    }
}

async fn run_dag(harness: &mut Harness, yaml: &str) -> RunState {
    let file = harness.dir.path().join("t.yaml");
    let dag = parse_dag(&file, yaml, &Templates::new())
        .dag
        .expect("valid DAG");
    let id = dag.id.clone();
    harness.engine.load_dag(dag, yaml).await.expect("load");
    let start = chrono::Utc::now();
    let interval = ferry_dag::timetable::DataInterval { start, end: start };
    let run = harness
        .engine
        .create_run(&id, interval, "manual", &serde_json::Map::new())
        .await
        .expect("create")
        .expect("new");
    let focus = [run.run_id.clone()];
    let ended = tokio::time::timeout(
        Duration::from_secs(60),
        harness
            .engine
            .drive(&Shutdown::default(), Some(&focus), false, None),
    )
    .await
    .expect("the run ends within a minute")
    .expect("no engine error");
    ended[0].state().expect("the run's state")
}

#[tokio::test]
async fn a_chain_runs_in_order() {
    let mut h = harness(4).await;
    let state = run_dag(
        &mut h,
        "tasks:\n  - {id: a, type: command, command: 'echo a'}\n  - {id: b, type: command, command: 'echo b', depends_on: [a]}\n  - {id: c, type: noop, depends_on: [b]}\n",
    )
    .await;
    assert_eq!(state, RunState::Success);
    let seen = h.seen.lock().expect("lock").clone();
    let order: Vec<&str> = seen
        .iter()
        .filter(|s| s.ends_with(":success"))
        .map(String::as_str)
        .collect();
    assert_eq!(order, ["a:success", "b:success", "c:success"]);
}

#[tokio::test]
async fn failures_propagate_and_trigger_rules_apply() {
    let mut h = harness(4).await;
    let state = run_dag(
        &mut h,
        concat!(
            "tasks:\n",
            "  - {id: bad, type: command, command: 'exit 1'}\n",
            "  - {id: after, type: noop, depends_on: [bad]}\n",
            "  - {id: cleanup, type: noop, depends_on: [bad], trigger_rule: all_done}\n",
            "  - {id: on_failure, type: noop, depends_on: [bad], trigger_rule: one_failed}\n",
            "  - {id: on_success, type: noop, depends_on: [after], trigger_rule: none_failed}\n",
        ),
    )
    .await;
    assert_eq!(state, RunState::Failed);
    let seen = h.seen.lock().expect("lock").clone();
    for expected in [
        "bad:failed",
        "after:upstream_failed",
        "cleanup:success",
        "on_failure:success",
        "on_success:upstream_failed",
    ] {
        assert!(
            seen.iter().any(|s| s == expected),
            "{expected} missing from {seen:?}"
        );
    }
}

#[tokio::test]
async fn retries_then_succeeds() {
    let mut h = harness(4).await;
    let dir = tempfile::tempdir().expect("dir");
    let flag = dir.path().join("tried");
    let yaml = format!(
        "tasks:\n  - id: flaky\n    type: command\n    command: 'if [ -e {0} ]; then exit 0; else touch {0}; exit 3; fi'\n    retries: 2\n    retry_delay: 0s\n",
        flag.display()
    );
    assert_eq!(run_dag(&mut h, &yaml).await, RunState::Success);
    let seen = h.seen.lock().expect("lock").clone();
    assert_eq!(
        seen.iter()
            .filter(|s| s.as_str() == "flaky:up_for_retry")
            .count(),
        1,
        "{seen:?}"
    );
}

#[tokio::test]
async fn templates_are_rendered_per_run() {
    let mut h = harness(2).await;
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("out");
    let yaml = format!(
        "params: {{table: scores}}\ntasks:\n  - id: write\n    type: command\n    command: 'echo {{{{ dag_id }}}} {{{{ params.table }}}} > {}'\n",
        out.display()
    );
    assert_eq!(run_dag(&mut h, &yaml).await, RunState::Success);
    assert_eq!(std::fs::read_to_string(&out).expect("output"), "t scores\n");
}

#[tokio::test]
async fn a_run_past_its_timeout_fails_without_retries() {
    let mut h = harness(4).await;
    let yaml = concat!(
        "dagrun_timeout: 1s\n",
        "tasks:\n",
        "  - {id: slow, type: command, command: 'sleep 30', retries: 3, retry_delay: 0s}\n",
        "  - {id: after, type: noop, depends_on: [slow]}\n",
        "  - {id: parallel, type: command, command: 'sleep 30'}\n",
    );
    let started = std::time::Instant::now();
    assert_eq!(run_dag(&mut h, yaml).await, RunState::Failed);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let seen = h.seen.lock().expect("lock").clone();
    assert!(!seen.iter().any(|s| s == "slow:up_for_retry"), "{seen:?}");
    assert!(seen.iter().any(|s| s == "slow:failed"), "{seen:?}");
    assert!(
        seen.iter()
            .any(|s| s == "after:upstream_failed" || s == "after:failed"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn timetables_follow_the_injected_clock() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&format!(
        "sqlite://{}",
        dir.path().join("ferry.db").display()
    ))
    .await
    .expect("store");
    let at = |text: &str| {
        chrono::DateTime::parse_from_rfc3339(text)
            .expect("instant")
            .with_timezone(&chrono::Utc)
    };
    let clock = crate::clock::ManualClock::new(at("2026-11-23T03:00:00+09:00"));
    let config = test_config(dir.path(), 4);
    let mut engine = Engine::new(
        store.clone(),
        Arc::new(clock.clone()),
        config,
        Box::new(|_: &Progress| {}),
    );
    let yaml = "schedule: '0 2 * * *'\ntimezone: Asia/Tokyo\nstart_date: 2026-11-20\ncatchup: true\ntasks:\n  - {id: a, type: noop}\n";
    let dag = parse_dag(&dir.path().join("daily.yaml"), yaml, &Templates::new())
        .dag
        .expect("valid");
    engine.load_dag(dag, yaml).await.expect("load");
    engine.create_due_runs().await.expect("schedule");
    let logical = |runs: Vec<RunRecord>| runs.iter().map(|r| r.logical_date).collect::<Vec<_>>();
    let runs = store.runs(&RunFilter::default()).await.expect("runs");
    assert_eq!(
        logical(runs),
        [
            millis(at("2026-11-22T02:00:00+09:00")),
            millis(at("2026-11-21T02:00:00+09:00")),
            millis(at("2026-11-20T02:00:00+09:00"))
        ]
    );
    // Nothing new until the next interval ends; then exactly one more run.
    clock.advance(chrono::Duration::hours(22));
    engine.create_due_runs().await.expect("schedule");
    assert_eq!(
        store.runs(&RunFilter::default()).await.expect("runs").len(),
        3
    );
    clock.advance(chrono::Duration::hours(1));
    engine.create_due_runs().await.expect("schedule");
    let runs = store.runs(&RunFilter::default()).await.expect("runs");
    assert_eq!(
        runs[0].logical_date,
        millis(at("2026-11-23T02:00:00+09:00"))
    );
    assert_eq!(runs.len(), 4);
}

/// A new manual run of DAG `id` for the data interval starting now.
async fn manual_run(h: &mut Harness, id: &str) -> RunRecord {
    let start = chrono::Utc::now();
    let interval = ferry_dag::timetable::DataInterval { start, end: start };
    h.engine
        .create_run(id, interval, "manual", &serde_json::Map::new())
        .await
        .expect("create")
        .expect("new")
}

async fn load(h: &mut Harness, name: &str, yaml: &str) -> String {
    let file = h.dir.path().join(format!("{name}.yaml"));
    let dag = parse_dag(&file, yaml, &Templates::new())
        .dag
        .expect("valid DAG");
    let id = dag.id.clone();
    h.engine.load_dag(dag, yaml).await.expect("load");
    id
}

#[tokio::test]
async fn wait_for_dag_defers_without_a_slot_and_wakes_when_the_other_run_succeeds() {
    // One slot: if the waiting task held it, the awaited run could never run.
    let mut h = harness(1).await;
    let waiter = load(&mut h, "waiter", "tasks:\n  - {id: wait, type: wait_for_dag, dag: upstream, poll_interval: 1h, priority: 10}\n  - {id: after, type: noop, depends_on: [wait]}\n").await;
    let upstream = load(
        &mut h,
        "upstream",
        "tasks:\n  - {id: work, type: command, command: 'sleep 0.2'}\n",
    )
    .await;
    let start = chrono::Utc::now();
    let interval = ferry_dag::timetable::DataInterval { start, end: start };
    let none = serde_json::Map::new();
    let first = h
        .engine
        .create_run(&waiter, interval, "manual", &none)
        .await
        .expect("create")
        .expect("new");
    let second = h
        .engine
        .create_run(&upstream, interval, "manual", &none)
        .await
        .expect("create")
        .expect("new");
    let focus = [first.run_id.clone(), second.run_id.clone()];
    let ended = tokio::time::timeout(
        Duration::from_secs(20),
        h.engine
            .drive(&Shutdown::default(), Some(&focus), false, None),
    )
    .await
    .expect("both runs end long before the 1 h poll")
    .expect("no engine error");
    assert!(ended.iter().all(|run| run.state == "success"), "{ended:?}");
    let seen = h.seen.lock().expect("lock").clone();
    assert!(seen.iter().any(|s| s == "wait:deferred"), "{seen:?}");
    assert!(seen.iter().any(|s| s == "wait:success"), "{seen:?}");
}

#[tokio::test]
async fn wait_for_dag_gives_up_at_its_timeout() {
    let mut h = harness(2).await;
    let state = run_dag(&mut h, "tasks:\n  - {id: wait, type: wait_for_dag, dag: missing, timeout: 1s, poll_interval: 10m}\n").await;
    assert_eq!(state, RunState::Failed);
    let seen = h.seen.lock().expect("lock").clone();
    assert!(seen.iter().any(|s| s == "wait:failed"), "{seen:?}");
}

#[tokio::test]
async fn a_reload_keeps_broken_files_last_version_and_drops_deleted_files() {
    let mut h = harness(1).await;
    let kept = load(&mut h, "kept", "tasks:\n  - {id: a, type: noop}\n").await;
    let broken = load(&mut h, "broken", "tasks:\n  - {id: a, type: noop}\n").await;
    let deleted = load(&mut h, "deleted", "tasks:\n  - {id: a, type: noop}\n").await;
    let file = |name: &str| h.dir.path().join(format!("{name}.yaml"));
    let still_valid = h.engine.dag(&kept).expect("loaded").dag.clone();
    // `broken.yaml` is still there but invalid (not among the valid DAGs); `deleted.yaml` is gone.
    h.engine.retain_present(
        &[(still_valid, String::new())],
        &[file("kept"), file("broken")],
        &[],
    );
    assert!(h.engine.dag(&kept).is_some());
    assert!(
        h.engine.dag(&broken).is_some(),
        "an invalid file keeps its last valid version"
    );
    assert!(
        h.engine.dag(&deleted).is_none(),
        "a deleted file stops its DAG"
    );
}

#[tokio::test]
async fn a_run_keeps_the_dag_version_it_was_created_with() {
    let mut h = harness(2).await;
    let out = h.dir.path().join("which");
    let version = |n: u32| {
        format!(
            "tasks:\n  - {{id: a, type: command, command: 'echo v{n} > {}'}}\n",
            out.display()
        )
    };
    let id = load(&mut h, "versioned", &version(1)).await;
    let run = manual_run(&mut h, &id).await;
    load(&mut h, "versioned", &version(2)).await;
    let focus = [run.run_id.clone()];
    let ended = h
        .engine
        .drive(&Shutdown::default(), Some(&focus), false, None)
        .await
        .expect("drive");
    assert_eq!(ended[0].state, "success");
    assert_eq!(std::fs::read_to_string(&out).expect("output"), "v1\n");
}

#[tokio::test]
async fn tasks_cleared_while_the_run_is_active_run_again() {
    let mut h = harness(2).await;
    let id = load(
        &mut h,
        "clearing",
        "tasks:\n  - {id: a, type: noop}\n  - {id: slow, type: command, command: 'sleep 0.5'}\n",
    )
    .await;
    let run = manual_run(&mut h, &id).await;
    let focus = [run.run_id.clone()];
    let dir = h.dir.path().to_path_buf();
    let operator = tokio::spawn(async move {
        // Another process (`ferry tasks clear`) clears `a` while `slow` still runs.
        let store = Store::open(&format!("sqlite://{}", dir.join("ferry.db").display()))
            .await
            .expect("store");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let run = store.run(&run.run_id).await.expect("read").expect("run");
        let a = store
            .task_instances(run.id)
            .await
            .expect("tasks")
            .into_iter()
            .find(|t| t.task_id == "a")
            .expect("a");
        let clear = TaskChange {
            id: a.id,
            from: TaskState::Success,
            to: TaskState::Pending,
            lease: None,
            ready_at: None,
            exit_code: None,
            grant_try: false,
            at: 0,
            cause: "operator",
            detail: "cleared",
        };
        assert!(
            store
                .transition_task(&run, &a, &clear)
                .await
                .expect("clear")
        );
    });
    let ended = h
        .engine
        .drive(&Shutdown::default(), Some(&focus), false, None)
        .await
        .expect("drive");
    operator.await.expect("operator");
    assert_eq!(ended[0].state, "success");
    let seen = h.seen.lock().expect("lock").clone();
    assert_eq!(
        seen.iter().filter(|s| s.as_str() == "a:success").count(),
        2,
        "{seen:?}"
    );
}

#[tokio::test]
async fn an_attempt_of_an_earlier_process_with_the_same_pid_is_recovered() {
    // PID 1 in a container: the daemon that died had the same host and pid as this one.
    let mut h = harness(2).await;
    let id = load(
        &mut h,
        "same_pid",
        "tasks:\n  - {id: a, type: command, command: 'echo again', retries: 1, retry_delay: 0s}\n",
    )
    .await;
    let run = manual_run(&mut h, &id).await;
    let store = h.engine.store.clone();
    let now = millis(chrono::Utc::now());
    assert!(
        store
            .transition_run(&run, RunState::Queued, RunState::Running, now, "test")
            .await
            .expect("start")
    );
    let task = store.task_instances(run.id).await.expect("tasks").remove(0);
    let queue = TaskChange {
        id: task.id,
        from: TaskState::Pending,
        to: TaskState::Queued,
        lease: None,
        ready_at: None,
        exit_code: None,
        grant_try: false,
        at: now,
        cause: "test",
        detail: "",
    };
    assert!(
        store
            .transition_task(&run, &task, &queue)
            .await
            .expect("queue")
    );
    let old_worker = format!(
        "{}:{}",
        ferry_executor::supervisor::host_name(),
        std::process::id()
    );
    store
        .claim(&run, &task, &old_worker, "echo again", None, now)
        .await
        .expect("claim")
        .expect("claimed");
    let focus = [run.run_id.clone()];
    let ended = tokio::time::timeout(
        Duration::from_secs(30),
        h.engine
            .drive(&Shutdown::default(), Some(&focus), false, None),
    )
    .await
    .expect("ends")
    .expect("drive");
    assert_eq!(ended[0].state, "success");
    let first = store
        .attempt(&run.run_id, "a", Some(1))
        .await
        .expect("read")
        .expect("try 1");
    assert_eq!(first.outcome.as_deref(), Some("lost"));
}

#[tokio::test]
async fn a_dag_whose_folder_became_unreadable_keeps_its_last_version() {
    let mut h = harness(1).await;
    let kept = load(&mut h, "kept", "tasks:\n  - {id: a, type: noop}\n").await;
    let file = h.dir.path().join("kept.yaml");
    h.engine
        .retain_present(&[], &[], &[h.dir.path().to_path_buf()]);
    assert!(h.engine.dag(&kept).is_some(), "{}", file.display());
    h.engine.retain_present(&[], &[], &[]);
    assert!(
        h.engine.dag(&kept).is_none(),
        "gone once the folder is readable and the file gone"
    );
}

#[tokio::test]
async fn a_supervisor_lost_before_its_go_ahead_does_not_use_up_a_try() {
    // An engine killed after recording the claim but before the go-ahead: the command never
    // ran, so the task runs again without losing its only try.
    let mut h = harness(2).await;
    let marker = h.dir.path().join("ran");
    let yaml = format!(
        "tasks:\n  - {{id: once, type: command, command: 'echo ran >> {}'}}\n",
        marker.display()
    );
    let id = load(&mut h, "never_started", &yaml).await;
    let run = manual_run(&mut h, &id).await;
    let store = h.engine.store.clone();
    let now = millis(chrono::Utc::now());
    assert!(
        store
            .transition_run(&run, RunState::Queued, RunState::Running, now, "test")
            .await
            .expect("start")
    );
    let task = store.task_instances(run.id).await.expect("tasks").remove(0);
    let queue = TaskChange {
        id: task.id,
        from: TaskState::Pending,
        to: TaskState::Queued,
        lease: None,
        ready_at: None,
        exit_code: None,
        grant_try: false,
        at: now,
        cause: "test",
        detail: "",
    };
    assert!(
        store
            .transition_task(&run, &task, &queue)
            .await
            .expect("queue")
    );
    let pending = h
        .engine
        .config
        .launcher
        .spawn(&h.engine.config.attempts_dir.join("lost"), "marker-lost")
        .expect("spawns");
    let supervisor = pending.id().to_json().expect("json");
    store
        .claim(
            &run,
            &task,
            "dead-engine:1:1",
            "echo ran",
            Some(&supervisor),
            now,
        )
        .await
        .expect("claim")
        .expect("claimed");
    // The engine dies here: its supervisor sees standard input close and exits, nothing run.
    pending.abandon().await;
    let focus = [run.run_id.clone()];
    let ended = tokio::time::timeout(
        Duration::from_secs(30),
        h.engine
            .drive(&Shutdown::default(), Some(&focus), false, None),
    )
    .await
    .expect("ends")
    .expect("drive");
    assert_eq!(ended[0].state, "success");
    assert_eq!(std::fs::read_to_string(&marker).expect("ran"), "ran\n");
    let first = store
        .attempt(&run.run_id, "once", Some(1))
        .await
        .expect("read")
        .expect("try 1");
    assert_eq!(first.outcome.as_deref(), Some("interrupted"));
}

/// A running run of DAG `yaml` (loaded as `name`) whose single task is queued.
async fn queued_single_task(
    h: &mut Harness,
    name: &str,
    yaml: &str,
) -> (RunRecord, TaskInstanceRecord) {
    let id = load(h, name, yaml).await;
    let run = manual_run(h, &id).await;
    let store = h.engine.store.clone();
    let now = millis(chrono::Utc::now());
    assert!(
        store
            .transition_run(&run, RunState::Queued, RunState::Running, now, "test")
            .await
            .expect("start")
    );
    let task = store.task_instances(run.id).await.expect("tasks").remove(0);
    let queue = TaskChange {
        id: task.id,
        from: TaskState::Pending,
        to: TaskState::Queued,
        lease: None,
        ready_at: None,
        exit_code: None,
        grant_try: false,
        at: now,
        cause: "test",
        detail: "",
    };
    assert!(
        store
            .transition_task(&run, &task, &queue)
            .await
            .expect("queue")
    );
    (run, task)
}

async fn drive_to_end(h: &mut Harness, run: &RunRecord) -> RunRecord {
    let focus = [run.run_id.clone()];
    tokio::time::timeout(
        Duration::from_secs(30),
        h.engine
            .drive(&Shutdown::default(), Some(&focus), false, None),
    )
    .await
    .expect("the run ends")
    .expect("drive")
    .remove(0)
}

#[tokio::test]
async fn an_attempt_of_this_engine_cut_short_by_a_store_fault_is_recovered() {
    // The claim was committed, then the store failed before the end was recorded: the task is
    // running, this engine's, and not watched.
    let mut h = harness(2).await;
    let (run, task) =
        queued_single_task(&mut h, "cut_short", "tasks:\n  - {id: a, type: noop}\n").await;
    let store = h.engine.store.clone();
    let worker = h.engine.config.worker.clone();
    store
        .claim(
            &run,
            &task,
            &worker,
            "noop",
            None,
            millis(chrono::Utc::now()),
        )
        .await
        .expect("claim")
        .expect("claimed");
    let ended = drive_to_end(&mut h, &run).await;
    assert_eq!(ended.state, "success");
    let first = store
        .attempt(&run.run_id, "a", Some(1))
        .await
        .expect("read")
        .expect("try 1");
    assert_eq!(first.outcome.as_deref(), Some("interrupted"));
}

#[tokio::test]
async fn a_supervisor_that_cannot_start_is_tried_again() {
    let mut h = harness(2).await;
    // The supervisor's program appears only after a while (no processes could be made).
    let program = h.dir.path().join("late-supervisor");
    let test_binary = std::env::current_exe().expect("test binary");
    h.engine.config.launcher = Launcher::new(
        program.clone(),
        [
            "engine::tests::supervisor_entry",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ]
        .into_iter()
        .map(Into::into)
        .collect(),
        vec![("FERRY_TEST_SUPERVISOR".to_string(), "1".to_string())],
    );
    h.engine.spares = Spares::new(
        h.engine.config.launcher.clone(),
        h.engine.config.attempts_dir.clone(),
        0,
    );
    let (run, _) = queued_single_task(
        &mut h,
        "late",
        "tasks:\n  - {id: a, type: command, command: 'echo ok'}\n",
    )
    .await;
    let appear = program.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        std::os::unix::fs::symlink(test_binary, appear).expect("the program appears");
    });
    assert_eq!(drive_to_end(&mut h, &run).await.state, "success");
}

#[tokio::test]
async fn a_supervisor_that_dies_after_its_go_ahead_uses_up_tries() {
    let mut h = harness(2).await;
    // A "supervisor" that reads its go-ahead and dies without a word.
    let program = h.dir.path().join("dying-supervisor");
    std::fs::write(&program, "#!/bin/sh\nread line\nexit 1\n").expect("script");
    std::fs::set_permissions(
        &program,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("executable");
    h.engine.config.launcher = Launcher::new(program, Vec::new(), Vec::new());
    h.engine.spares = Spares::new(
        h.engine.config.launcher.clone(),
        h.engine.config.attempts_dir.clone(),
        0,
    );
    let (run, _) = queued_single_task(
        &mut h,
        "dying",
        "tasks:\n  - {id: a, type: command, command: 'echo never', retries: 1, retry_delay: 0s}\n",
    )
    .await;
    assert_eq!(drive_to_end(&mut h, &run).await.state, "failed");
    let tasks = h.engine.store.task_instances(run.id).await.expect("tasks");
    assert_eq!(
        (tasks[0].try_number, tasks[0].max_tries),
        (2, 2),
        "no try given back"
    );
}
