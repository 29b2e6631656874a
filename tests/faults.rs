//! Issue 6, crash-proof execution: every fault measured there, reproduced through the binary.
//! Tasks outlive the daemon and are never run twice, one engine owns a store, folder and
//! database faults are survived or reported clearly, secrets never leak, a huge run does not
//! block the engine, and stopping is graceful.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::util::{
    Spawned, ferry_in, fresh_postgres, nix_kill, project, serve_until_success, spawn_ferry,
    spawn_ferry_with, stderr, stdout, wait_for_runs_of, wait_until,
};

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join(".ferry/ferry.db").display())
}

/// Runs `future` on a small runtime (to read the store as the engine wrote it).
fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

/// The task instances of the first run of `dag` (none while ferry is still making the store,
/// or while the store cannot be opened).
fn tasks_of(url: &str, dag: &str) -> Vec<ferry_store::TaskInstanceRecord> {
    block_on(async {
        let store = match ferry_store::Store::open_with(url, ferry_store::OpenMode::Existing).await
        {
            Ok(store) => store,
            // Made but not yet (fully) migrated by the ferry under test: callers wait and
            // look again.
            Err(_) => return Vec::new(),
        };
        let runs = store
            .runs(&ferry_store::RunFilter {
                dag_id: Some(dag.to_string()),
                ..Default::default()
            })
            .await
            .expect("runs");
        let tasks = match runs.first() {
            Some(run) => store.task_instances(run.id).await.expect("tasks"),
            None => Vec::new(),
        };
        store.close().await;
        tasks
    })
}

/// Waits until the process `pid` owns the store at `url`.
fn wait_for_owner(url: &str, pid: u32) {
    let needle = format!("(pid {pid} on");
    wait_until(Duration::from_secs(20), || {
        block_on(async {
            let Ok(store) =
                ferry_store::Store::open_with(url, ferry_store::OpenMode::Existing).await
            else {
                return false;
            };
            let owner = store.owner().await.ok().flatten();
            store.close().await;
            owner.is_some_and(|holder| holder.contains(&needle))
        })
    });
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn is_alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

/// `ferry` in `dir` without the capabilities that let root ignore file permissions, so that a
/// folder or file without permissions is unreadable even when the tests run as root.
fn unprivileged(dir: &Path, args: &[&str]) -> Command {
    let ferry = env!("CARGO_BIN_EXE_ferry");
    let mut command = if nix_is_root() {
        let mut command = Command::new("setpriv");
        command
            .arg("--bounding-set=-dac_override,-dac_read_search")
            .arg("--")
            .arg(ferry);
        command
    } else {
        Command::new(ferry)
    };
    command.args(args).current_dir(dir);
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("FERRY")) {
        command.env_remove(name);
    }
    command.env(crate::util::ANY_PORT.0, crate::util::ANY_PORT.1);
    command
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    })
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn finish(child: Spawned) -> Output {
    child.wait_with_output().expect("ferry ends")
}

// ---- 1. kill -9 never runs a command twice ----

fn chaos(url: Option<&str>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut args = vec!["bench", "chaos", "--kills", "9", "--runs", "6", "--json"];
    if let Some(url) = url {
        args.extend(["--database-url", url]);
    }
    let output = ferry_in(dir.path(), &args, &[]);
    let text = stdout(&output);
    let findings: serde_json::Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|_| panic!("JSON findings: {text}{}", stderr(&output)));
    for oracle in [
        "runs_lost",
        "attempts_overlapping",
        "commands_executed_more_than_once",
        "attempts_without_end",
        "orphans_left",
    ] {
        assert_eq!(findings[oracle], 0, "{oracle}: {findings}");
    }
    assert_eq!(findings["kills"], 9);
    assert_eq!(output.status.code(), Some(0), "{findings}");
}

#[test]
fn issue6_kill_9_at_random_moments_loses_nothing_and_runs_nothing_twice() {
    chaos(None);
    if let Some(url) = fresh_postgres("chaos") {
        chaos(Some(&url));
    }
}

#[test]
fn issue6_a_command_that_ended_while_ferry_was_down_is_not_run_again() {
    let marks = tempfile::tempdir().expect("temp dir");
    let marker = marks.path().join("attempts");
    let dag = format!(
        "tasks:\n  - {{id: quick, type: command, command: 'echo attempt >> {}; sleep 1; echo done', retries: 2, retry_delay: 0s}}\n",
        marker.display()
    );
    let dir = project(&[("quick.yaml", &dag)]);
    let mut first = spawn_ferry(dir.path(), &["run", "quick"]);
    wait_until(Duration::from_secs(15), || lines(&marker).len() == 1);
    first.kill().expect("kill -9");
    first.wait().expect("reaped");
    // The command ends while no ferry runs; its supervisor keeps the result.
    std::thread::sleep(Duration::from_millis(1500));
    let runs = serve_until_success(dir.path());
    assert_eq!(lines(&marker), ["attempt"], "the command ran once");
    let run_id = runs[0]["run_id"].as_str().expect("run id");
    let log = stdout(&ferry_in(dir.path(), &["logs", run_id, "quick"], &[]));
    assert!(
        log.contains("try 1 — success") && log.contains("done"),
        "{log}"
    );
}

#[test]
fn issue6_background_processes_do_not_outlive_their_task() {
    let marks = tempfile::tempdir().expect("temp dir");
    let pids = marks.path().join("pids");
    let dag = format!(
        "tasks:\n  - {{id: spawner, type: command, command: 'sleep 300 & echo $! > {p}; setsid sleep 301 & echo $! >> {p}; echo started'}}\n",
        p = pids.display()
    );
    let dir = project(&[("spawner.yaml", &dag)]);
    let output = ferry_in(dir.path(), &["run", "spawner"], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let left = lines(&pids);
    assert_eq!(left.len(), 2, "{left:?}");
    wait_until(Duration::from_secs(5), || {
        !left.iter().any(|pid| is_alive(pid))
    });
}

// ---- 2. one engine per store ----

fn second_serve_is_refused(url: &str) {
    let dir = project(&[("idle.yaml", "tasks:\n  - {id: a, type: noop}\n")]);
    let mut first = spawn_ferry(dir.path(), &["serve", "--database-url", url]);
    wait_for_owner(url, first.id());
    let second = ferry_in(dir.path(), &["serve", "--database-url", url], &[]);
    let refused = stderr(&second);
    assert_eq!(second.status.code(), Some(2), "{refused}");
    assert!(
        refused.contains(&format!("is owned by `ferry serve` (pid {} on", first.id())),
        "{refused}"
    );
    nix_kill(&first, "TERM");
    assert!(first.wait().expect("exits").success());
}

#[test]
fn issue6_a_second_serve_on_the_same_store_exits_naming_the_holder() {
    let dir = tempfile::tempdir().expect("temp dir");
    second_serve_is_refused(&sqlite_url(dir.path()));
    if let Some(url) = fresh_postgres("owner") {
        second_serve_is_refused(&url);
    }
}

fn run_hands_over_to_the_daemon(url: &str) {
    let marks = tempfile::tempdir().expect("temp dir");
    let ledger = marks.path().join("ledger");
    let dag = format!(
        "max_active_runs: 1\ntasks:\n  - {{id: work, type: command, command: 'echo start $(date +%s%N) >> {l}; sleep 1; echo end $(date +%s%N) >> {l}'}}\n",
        l = ledger.display()
    );
    let dir = project(&[("handed.yaml", &dag)]);
    let mut serve = spawn_ferry(dir.path(), &["serve", "--database-url", url]);
    wait_for_owner(url, serve.id());
    let runs: Vec<Spawned> = (0..2)
        .map(|_| {
            let child =
                spawn_ferry_with(dir.path(), &["run", "handed", "--database-url", url], &[]);
            std::thread::sleep(Duration::from_millis(50));
            child
        })
        .collect();
    for child in runs {
        let output = finish(child);
        let (out, err) = (stdout(&output), stderr(&output));
        assert_eq!(output.status.code(), Some(0), "{out}{err}");
        assert!(err.contains("owned by `ferry serve`"), "{err}");
        assert!(out.contains("work") && out.contains("success"), "{out}");
    }
    nix_kill(&serve, "TERM");
    assert!(serve.wait().expect("exits").success());
    // max_active_runs: 1 held: the two runs' commands did not overlap.
    let entries = lines(&ledger);
    let times: Vec<(String, u128)> = entries
        .iter()
        .map(|l| {
            let (what, at) = l.split_once(' ').expect("entry");
            (what.to_string(), at.parse().expect("time"))
        })
        .collect();
    assert_eq!(
        times.iter().map(|(w, _)| w.as_str()).collect::<Vec<_>>(),
        ["start", "end", "start", "end"],
        "{entries:?}"
    );
}

#[test]
fn issue6_ferry_run_while_the_daemon_runs_hands_the_run_over() {
    let dir = tempfile::tempdir().expect("temp dir");
    run_hands_over_to_the_daemon(&sqlite_url(dir.path()));
    if let Some(url) = fresh_postgres("handover") {
        run_hands_over_to_the_daemon(&url);
    }
}

#[test]
fn issue6_a_run_handed_to_another_ferry_run_is_taken_over_when_it_ends() {
    let dir = project(&[(
        "short.yaml",
        "tasks:\n  - {id: work, type: command, command: 'sleep 1; echo done'}\n",
    )]);
    let url = sqlite_url(dir.path());
    let first = spawn_ferry(dir.path(), &["run", "short"]);
    wait_for_owner(&url, first.id());
    let second = spawn_ferry(dir.path(), &["run", "short"]);
    let (first, second) = (finish(first), finish(second));
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let said = stderr(&second);
    assert_eq!(second.status.code(), Some(0), "{said}");
    assert!(
        said.contains("owned by `ferry run`") && said.contains("the store is free now"),
        "{said}"
    );
    assert!(stdout(&second).contains("success"), "{}", stdout(&second));
}

// ---- 3. DAG folders ----

#[test]
fn issue6_an_unreadable_folder_is_named_and_the_other_dags_are_still_scheduled() {
    let scheduled = "schedule: '0 0 * * *'\ntimezone: UTC\nstart_date: 2026-11-01\nend_date: 2026-11-01\ncatchup: true\ntasks:\n  - {id: a, type: noop}\n";
    let dir = project(&[("ok.yaml", scheduled)]);
    let locked = dir.path().join("dags/locked");
    std::fs::create_dir_all(&locked).expect("folder");
    std::fs::write(
        locked.join("hidden.yaml"),
        "tasks:\n  - {id: a, type: noop}\n",
    )
    .expect("file");
    chmod(&locked, 0o000);
    let validate = unprivileged(dir.path(), &["validate"])
        .output()
        .expect("validate runs");
    let text = format!("{}{}", stdout(&validate), stderr(&validate));
    assert_eq!(validate.status.code(), Some(1), "{text}");
    assert!(
        text.contains("dags/locked") && text.contains("Permission denied"),
        "{text}"
    );
    let mut serve = unprivileged(dir.path(), &["serve"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map(Spawned::from)
        .expect("serve starts");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for_runs_of(
            dir.path(),
            Duration::from_secs(20),
            Some(&mut serve),
            |runs| runs[0]["dag_id"] == "ok" && runs[0]["state"] == "success",
        )
    }));
    nix_kill(&serve, "TERM");
    let output = serve.wait_with_output().expect("serve exits");
    chmod(&locked, 0o755);
    result.expect("the readable DAG was scheduled");
    let errors = stderr(&output);
    assert!(errors.contains("dags/locked"), "{errors}");
}

#[test]
fn issue6_a_symlink_loop_is_reported_and_does_not_stall() {
    let dir = project(&[("ok.yaml", "tasks:\n  - {id: a, type: noop}\n")]);
    std::os::unix::fs::symlink(
        dir.path().join("dags"),
        dir.path().join("dags/internal/loop"),
    )
    .expect("loop");
    let started = Instant::now();
    let output = ferry_in(dir.path(), &["validate"], &[]);
    assert!(started.elapsed() < Duration::from_secs(10));
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "a loop is a warning: {text}");
    assert!(
        text.contains("a loop") && text.contains("internal/loop"),
        "{text}"
    );
    let listed = stdout(&ferry_in(dir.path(), &["dags", "list"], &[]));
    assert_eq!(
        listed.lines().filter(|l| l.starts_with("ok ")).count(),
        1,
        "{listed}"
    );
}

// ---- 4. database faults ----

/// A TCP proxy to PostgreSQL that can cut every connection and refuse new ones for a while.
struct Proxy {
    port: u16,
    state: Arc<Mutex<(bool, Vec<TcpStream>)>>,
}

impl Proxy {
    fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let state: Arc<Mutex<(bool, Vec<TcpStream>)>> = Arc::default();
        let shared = state.clone();
        let target = target.to_string();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if shared.lock().expect("lock").0 {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let mut guard = shared.lock().expect("lock");
                guard.1.push(client.try_clone().expect("clone"));
                guard.1.push(server.try_clone().expect("clone"));
                drop(guard);
                for (mut from, mut to) in [
                    (
                        client.try_clone().expect("clone"),
                        server.try_clone().expect("clone"),
                    ),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let mut buffer = [0u8; 16384];
                        while let Ok(n) = from.read(&mut buffer) {
                            if n == 0 || to.write_all(&buffer[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Self { port, state }
    }

    /// Cuts every connection and refuses new ones for `length`.
    fn outage(&self, length: Duration) {
        {
            let mut guard = self.state.lock().expect("lock");
            guard.0 = true;
            for stream in guard.1.drain(..) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
        std::thread::sleep(length);
        self.state.lock().expect("lock").0 = false;
    }
}

#[test]
fn issue6_the_daemon_survives_a_postgresql_outage_and_its_task_goes_on() {
    let Some(url) = fresh_postgres("outage") else {
        return;
    };
    let proxy = Proxy::start("127.0.0.1:5432");
    let database = url.rsplit_once('/').expect("database").1;
    let via_proxy = format!("postgres://postgres@127.0.0.1:{}/{database}", proxy.port);
    let marks = tempfile::tempdir().expect("temp dir");
    let marker = marks.path().join("attempts");
    let dag = format!(
        "tasks:\n  - {{id: long, type: command, command: 'echo attempt >> {}; sleep 4; echo done'}}\n  - {{id: after, type: noop, depends_on: [long]}}\n",
        marker.display()
    );
    let dir = project(&[("steady.yaml", &dag)]);
    let mut serve = spawn_ferry(dir.path(), &["serve", "--database-url", &via_proxy]);
    wait_for_owner(&url, serve.id());
    let run = spawn_ferry_with(dir.path(), &["run", "steady", "--database-url", &url], &[]);
    wait_until(Duration::from_secs(20), || lines(&marker).len() == 1);
    proxy.outage(Duration::from_secs(1));
    let output = finish(run);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    if serve.try_wait().expect("status").is_some() {
        panic!("the daemon exited: {}", stderr(&finish(serve)));
    }
    nix_kill(&serve, "TERM");
    let daemon = finish(serve);
    let said = stderr(&daemon);
    assert!(daemon.status.success(), "{said}");
    assert_eq!(said.matches("is unreachable").count(), 1, "{said}");
    assert!(said.contains("is back after"), "{said}");
    assert_eq!(
        lines(&marker),
        ["attempt"],
        "the task was neither stopped nor rerun"
    );
    let log = stdout(&ferry_in(
        dir.path(),
        &[
            "logs",
            "--database-url",
            &url,
            &run_id_of(dir.path(), &url),
            "long",
        ],
        &[],
    ));
    assert!(log.contains("try 1 — success"), "{log}");
}

fn run_id_of(dir: &Path, url: &str) -> String {
    let list = stdout(&ferry_in(
        dir,
        &["runs", "list", "--format", "json", "--database-url", url],
        &[],
    ));
    let runs: serde_json::Value = serde_json::from_str(&list).expect("JSON");
    runs[0]["run_id"].as_str().expect("run id").to_string()
}

#[test]
fn issue6_a_deleted_sqlite_file_stops_the_daemon_and_its_tasks_go_on() {
    let marks = tempfile::tempdir().expect("temp dir");
    let marker = marks.path().join("done");
    let dag = format!(
        "schedule: '0 0 * * *'\ntimezone: UTC\nstart_date: 2026-11-01\nend_date: 2026-11-01\ncatchup: true\ntasks:\n  - {{id: slow, type: command, command: 'sleep 2; echo done > {}'}}\n",
        marker.display()
    );
    let dir = project(&[("doomed.yaml", &dag)]);
    let mut serve = spawn_ferry(dir.path(), &["serve"]);
    wait_for_runs_of(
        dir.path(),
        Duration::from_secs(20),
        Some(&mut serve),
        |runs| runs[0]["state"] == "running",
    );
    for name in ["ferry.db", "ferry.db-wal", "ferry.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join(".ferry").join(name));
    }
    let started = Instant::now();
    let output = finish(serve);
    assert!(started.elapsed() < Duration::from_secs(5));
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(
        text.contains(".ferry/ferry.db was deleted or replaced while ferry was running"),
        "{text}"
    );
    wait_until(Duration::from_secs(5), || marker.exists());
    // A restart does not quietly begin an empty state (and run every past interval again).
    let restart = ferry_in(dir.path(), &["serve"], &[]);
    let text = stderr(&restart);
    assert_eq!(restart.status.code(), Some(2), "{text}");
    assert!(
        text.contains("is missing, but ferry has used it before"),
        "{text}"
    );
}

#[test]
fn issue6_read_only_commands_never_create_a_database() {
    let dir = project(&[]);
    for args in [
        &["runs", "list"][..],
        &["logs", "some_run", "some_task"],
        &["tasks", "clear", "some_run", "some_task"],
    ] {
        let output = ferry_in(dir.path(), args, &[]);
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {text}");
        assert!(
            text.contains("no state database at .ferry/ferry.db: start `ferry serve` first"),
            "{args:?}: {text}"
        );
    }
    assert!(!dir.path().join(".ferry").exists());
}

#[test]
fn issue6_a_read_only_database_is_named() {
    let dir = project(&[("one.yaml", "tasks:\n  - {id: a, type: noop}\n")]);
    let first = ferry_in(dir.path(), &["run", "one"], &[]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let data = dir.path().join(".ferry");
    for entry in std::fs::read_dir(&data).expect("data folder").flatten() {
        chmod(&entry.path(), 0o444);
    }
    chmod(&data, 0o555);
    let again = unprivileged(dir.path(), &["run", "one"])
        .output()
        .expect("runs");
    chmod(&data, 0o755);
    let text = stderr(&again);
    assert_eq!(again.status.code(), Some(2), "{text}");
    assert!(
        text.contains(".ferry/ferry.db") && text.contains("read-only"),
        "{text}"
    );
}

// ---- 5. secrets ----

#[test]
fn issue6_tasks_get_an_explicit_environment_and_secrets_are_masked_by_value() {
    let dag = "tasks:\n  - id: show\n    type: command\n    command: 'env | sort; echo hook https://hooks.example/T0/hunter2-token'\n    env: {DATABASE_URL: 'postgres://app:pa55-word@db/app', TABLE: scores}\n";
    let dir = project(&[("show.yaml", dag)]);
    std::fs::write(
        dir.path().join("ferry.toml"),
        "[engine]\ntask_env = [\"PATH\", \"HOME\", \"MY_TOKEN\"]\n",
    )
    .expect("config");
    let secrets = [
        ("FERRY__ALERTS__CHANNELS__ONCALL__KIND", "slack"),
        (
            "FERRY__ALERTS__CHANNELS__ONCALL__WEBHOOK_URL",
            "https://hooks.example/T0/hunter2-token",
        ),
        ("MY_TOKEN", "tok-abcdef12"),
        ("UNRELATED_VARIABLE", "not-passed"),
    ];
    let output = ferry_in(dir.path(), &["run", "show"], &secrets);
    let progress = format!("{}{}", stdout(&output), stderr(&output));
    assert_eq!(output.status.code(), Some(0), "{progress}");
    let run_id = run_id_of(dir.path(), &sqlite_url(dir.path()));
    let log = stdout(&ferry_in(dir.path(), &["logs", &run_id, "show"], &[]));
    for leaked in [
        "FERRY__",
        "hunter2-token",
        "tok-abcdef12",
        "pa55-word",
        "not-passed",
    ] {
        assert!(!log.contains(leaked), "{leaked} in {log}");
        assert!(!progress.contains(leaked), "{leaked} in {progress}");
    }
    for shown in [
        "DATABASE_URL=postgres://app:********@db/app",
        "MY_TOKEN=********",
        "TABLE=scores",
        "FERRY_TASK_ID=show",
        "FERRY_TRY_NUMBER=1",
        "hook ********",
    ] {
        assert!(log.contains(shown), "{shown} missing from {log}");
    }
}

#[test]
fn issue6_request_secrets_are_masked_in_logs_and_records() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buffer = [0u8; 4096];
            let _ = stream.read(&mut buffer);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    let dag = format!(
        "tasks:\n  - id: call\n    type: http\n    url: 'http://user:pa55-word@127.0.0.1:{port}/hook?api_key=key-123456&x=1'\n    headers: {{X-Auth: auth-secret-1}}\n"
    );
    let dir = project(&[("call.yaml", &dag)]);
    let output = ferry_in(dir.path(), &["run", "call"], &[]);
    let progress = format!("{}{}", stdout(&output), stderr(&output));
    assert_eq!(output.status.code(), Some(0), "{progress}");
    let run_id = run_id_of(dir.path(), &sqlite_url(dir.path()));
    let log = stdout(&ferry_in(dir.path(), &["logs", &run_id, "call"], &[]));
    for leaked in ["pa55-word", "key-123456", "auth-secret-1"] {
        assert!(!log.contains(leaked), "{leaked} in {log}");
        assert!(!progress.contains(leaked), "{leaked} in {progress}");
    }
    assert!(log.contains("X-Auth: ********"), "{log}");
}

#[test]
fn issue6_passwords_in_urls_and_dsns_never_appear_in_errors() {
    let dir = project(&[]);
    for url in [
        "postgres://ferry@127.0.0.1:1/ferry?password=hunter2",
        "host=127.0.0.1 port=1 user=ferry password=hunter2 dbname=ferry",
    ] {
        let output = ferry_in(dir.path(), &["runs", "list", "--database-url", url], &[]);
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{text}");
        assert!(text.contains("cannot open the database"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
    let typo = ferry_in(
        dir.path(),
        &["runs", "list", "--database-url", "host=127.0.0.1 pasword=x"],
        &[],
    );
    assert!(
        stderr(&typo).contains("unknown setting `pasword`"),
        "{}",
        stderr(&typo)
    );
    let files: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .expect("list")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        !files.iter().any(|f| f.to_string_lossy().contains("host=")),
        "a DSN is never taken for a file name: {files:?}"
    );
}

#[test]
fn issue6_a_key_value_dsn_names_a_postgresql_database() {
    let Some(url) = fresh_postgres("dsn") else {
        return;
    };
    let database = url.rsplit_once('/').expect("database").1;
    let dsn = format!("host=127.0.0.1 port=5432 user=postgres dbname={database}");
    let dir = project(&[(
        "one.yaml",
        "tasks:\n  - {id: a, type: command, command: 'echo via dsn'}\n",
    )]);
    let output = ferry_in(dir.path(), &["run", "one", "--database-url", &dsn], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        !dir.path().join(".ferry/ferry.db").exists(),
        "no SQLite database was made of it"
    );
    let list = stdout(&ferry_in(
        dir.path(),
        &["runs", "list", "--database-url", &url],
        &[],
    ));
    assert!(list.contains("success"), "{list}");
}

// ---- 6. a huge run does not block the engine ----

#[test]
fn issue6_a_20000_task_run_does_not_delay_heartbeats_or_timeouts() {
    let mut big = String::from("tasks:\n");
    for index in 0..20_000 {
        big.push_str(&format!("  - {{id: n{index:05}, type: noop}}\n"));
    }
    let small = "tasks:\n  - {id: capped, type: command, command: 'sleep 30', timeout: 3s}\n  - {id: steady, type: command, command: 'sleep 10'}\n";
    let dir = project(&[("big.yaml", &big), ("small.yaml", small)]);
    let url = sqlite_url(dir.path());
    // 40,000 lines of progress: into a file, not a pipe nobody reads.
    let progress = std::fs::File::create(dir.path().join("serve.out")).expect("file");
    let mut serve = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("serve")
        .env(crate::util::ANY_PORT.0, crate::util::ANY_PORT.1)
        .current_dir(dir.path())
        .stdout(progress)
        .stderr(Stdio::null())
        .spawn()
        .map(Spawned::from)
        .expect("serve starts");
    wait_for_owner(&url, serve.id());
    let small_run = spawn_ferry_with(dir.path(), &["run", "small"], &[]);
    wait_until(Duration::from_secs(20), || {
        tasks_of(&url, "small")
            .iter()
            .filter(|t| t.state == "running")
            .count()
            == 2
    });
    // The big run is created and worked through while the small run's tasks run.
    let mut big_run = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["run", "big"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Spawned::from)
        .expect("run starts");
    let mut beats = Vec::new();
    let watch_until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < watch_until {
        if let Some(steady) = tasks_of(&url, "small")
            .into_iter()
            .find(|t| t.task_id == "steady")
            && steady.state == "running"
            && let Some(at) = steady.heartbeat_at
            && beats.last() != Some(&at)
        {
            beats.push(at);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let gaps: Vec<i64> = beats.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        beats.len() >= 3 && gaps.iter().all(|gap| *gap <= 2500),
        "heartbeats every second, not delayed: {gaps:?}"
    );
    let output = finish(small_run);
    assert_eq!(output.status.code(), Some(1), "the capped task fails");
    let capped = block_on(async {
        let store = ferry_store::Store::open_with(&url, ferry_store::OpenMode::Existing)
            .await
            .expect("store");
        let runs = store
            .runs(&ferry_store::RunFilter {
                dag_id: Some("small".to_string()),
                ..Default::default()
            })
            .await
            .expect("runs");
        store
            .attempt(&runs[0].run_id, "capped", Some(1))
            .await
            .expect("attempt")
            .expect("try 1")
    });
    let took = capped.ended_at.expect("ended") - capped.started_at;
    assert!(took < 4500, "a 3 s timeout fired after {took} ms");
    // Loading the 20,000-task DAG and making its run takes a while on a busy machine.
    wait_until(Duration::from_secs(60), || {
        tasks_of(&url, "big").len() == 20_000
    });
    let big_tasks = tasks_of(&url, "big");
    assert!(
        big_tasks.iter().any(|t| t.state == "success"),
        "the big run progressed meanwhile"
    );
    nix_kill(&serve, "TERM");
    serve.wait().expect("serve exits");
    let _ = big_run.kill();
    let _ = big_run.wait();
}

// ---- 7. stopping ----

#[test]
fn issue6_sigterm_leaves_running_commands_to_their_supervisors() {
    let marks = tempfile::tempdir().expect("temp dir");
    let marker = marks.path().join("attempts");
    let dag = format!(
        "schedule: '0 0 * * *'\ntimezone: UTC\nstart_date: 2026-11-01\nend_date: 2026-11-01\ncatchup: true\ntasks:\n  - {{id: slow, type: command, command: 'echo attempt >> {m}; sleep 2; echo finished >> {m}'}}\n",
        m = marker.display()
    );
    let dir = project(&[("detached.yaml", &dag)]);
    let mut serve = spawn_ferry(dir.path(), &["serve"]);
    wait_until(Duration::from_secs(20), || lines(&marker).len() == 1);
    nix_kill(&serve, "TERM");
    let started = Instant::now();
    assert!(serve.wait().expect("exits").success());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "detach exits at once"
    );
    wait_until(Duration::from_secs(5), || lines(&marker).len() == 2);
    serve_until_success(dir.path());
    assert_eq!(lines(&marker), ["attempt", "finished"]);
}

#[test]
fn issue6_a_drain_that_runs_out_of_grace_does_not_use_up_a_try() {
    let marks = tempfile::tempdir().expect("temp dir");
    let marker = marks.path().join("attempts");
    let dag = format!(
        "schedule: '0 0 * * *'\ntimezone: UTC\nstart_date: 2026-11-01\nend_date: 2026-11-01\ncatchup: true\ntasks:\n  - {{id: long, type: command, command: 'echo attempt >> {m}; sleep 4'}}\n",
        m = marker.display()
    );
    let dir = project(&[("drained.yaml", &dag)]);
    std::fs::write(
        dir.path().join("ferry.toml"),
        "[engine]\nheartbeat_interval_secs = 1\nshutdown_grace_secs = 1\nreload_interval_secs = 1\n",
    )
    .expect("config");
    let mut serve = spawn_ferry(dir.path(), &["serve", "--on-stop", "drain"]);
    wait_until(Duration::from_secs(20), || lines(&marker).len() == 1);
    nix_kill(&serve, "TERM");
    assert!(serve.wait().expect("exits").success());
    let url = sqlite_url(dir.path());
    let long = tasks_of(&url, "drained").remove(0);
    assert_eq!(
        (long.state.as_str(), long.max_tries),
        ("up_for_retry", 2),
        "interrupted, with its try given back"
    );
    let runs = serve_until_success(dir.path());
    assert_eq!(lines(&marker).len(), 2);
    let run_id = runs[0]["run_id"].as_str().expect("run id");
    let first = stdout(&ferry_in(
        dir.path(),
        &["logs", run_id, "long", "--try", "1"],
        &[],
    ));
    assert!(first.contains("try 1 — interrupted"), "{first}");
}

#[test]
fn issue6_a_second_signal_stops_ferry_run_at_once() {
    let dir = project(&[(
        "stuck.yaml",
        "tasks:\n  - {id: long, type: command, command: 'sleep 60'}\n",
    )]);
    let mut run = spawn_ferry(dir.path(), &["run", "stuck", "--on-stop", "drain"]);
    let url = sqlite_url(dir.path());
    wait_until(Duration::from_secs(20), || {
        dir.path().join(".ferry/ferry.db").exists()
            && tasks_of(&url, "stuck").iter().any(|t| t.state == "running")
    });
    nix_kill(&run, "INT");
    std::thread::sleep(Duration::from_millis(300));
    assert!(run.try_wait().expect("status").is_none(), "draining");
    nix_kill(&run, "INT");
    let started = Instant::now();
    let status = run.wait().expect("exits");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(status.code(), Some(1));
    let long = tasks_of(&url, "stuck").remove(0);
    assert_eq!(long.state, "up_for_retry", "stopped, to run again");
}

#[test]
fn issue6_a_lost_attempt_waits_for_its_retry_delay() {
    let marks = tempfile::tempdir().expect("temp dir");
    let marker = marks.path().join("attempts");
    let dag = format!(
        "tasks:\n  - {{id: fragile, type: command, command: 'echo $$ >> {}; if [ $FERRY_TRY_NUMBER = 1 ]; then sleep 30; fi', retries: 1, retry_delay: 3s}}\n",
        marker.display()
    );
    let dir = project(&[("fragile.yaml", &dag)]);
    let mut run = spawn_ferry(dir.path(), &["run", "fragile"]);
    wait_until(Duration::from_secs(20), || lines(&marker).len() == 1);
    run.kill().expect("kill -9 ferry");
    run.wait().expect("reaped");
    // Its supervisor dies too (as if the OOM killer took it): nothing can finish the attempt.
    let mut killed = 0;
    for store_folder in std::fs::read_dir(dir.path().join(".ferry/attempts"))
        .expect("attempts")
        .flatten()
    {
        for attempt in std::fs::read_dir(store_folder.path())
            .expect("attempt")
            .flatten()
        {
            let Ok(id) = std::fs::read_to_string(attempt.path().join("supervisor.json")) else {
                continue;
            };
            let id: serde_json::Value = serde_json::from_str(&id).expect("identity");
            // The attempt's own supervisor, not an idle spare (spares exit with their engine).
            if attempt.path().join("output.log").exists() {
                let pid = id["pid"].to_string();
                assert!(
                    Command::new("kill")
                        .args(["-9", &pid])
                        .status()
                        .expect("kill")
                        .success()
                );
                killed += 1;
            }
        }
    }
    assert_eq!(killed, 1);
    let first_command = lines(&marker).remove(0);
    assert!(
        is_alive(&first_command),
        "the command outlived its supervisor"
    );
    let restarted = Instant::now();
    let mut serve = spawn_ferry(dir.path(), &["serve"]);
    let runs = wait_for_runs_of(
        dir.path(),
        Duration::from_secs(30),
        Some(&mut serve),
        |runs| runs[0]["state"] == "success",
    );
    let waited = restarted.elapsed();
    nix_kill(&serve, "TERM");
    serve.wait().expect("exits");
    assert!(waited >= Duration::from_secs(3), "retried after {waited:?}");
    assert!(
        !is_alive(&first_command),
        "the lost attempt's command was stopped"
    );
    assert_eq!(lines(&marker).len(), 2);
    let run_id = runs[0]["run_id"].as_str().expect("run id");
    let first = stdout(&ferry_in(
        dir.path(),
        &["logs", run_id, "fragile", "--try", "1"],
        &[],
    ));
    assert!(
        first.contains("try 1 — lost") && first.contains("is gone"),
        "{first}"
    );
}

// ---- found by an adversarial trial of the above ----

/// Pids of the supervisors under `.ferry/attempts` that had their go-ahead (spares are left).
fn working_supervisors(dir: &Path) -> Vec<String> {
    let mut pids = Vec::new();
    for store_folder in std::fs::read_dir(dir.join(".ferry/attempts"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for attempt in std::fs::read_dir(store_folder.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let (Ok(id), true) = (
                std::fs::read_to_string(attempt.path().join("supervisor.json")),
                attempt.path().join("output.log").exists(),
            ) else {
                continue;
            };
            let id: serde_json::Value = serde_json::from_str(&id).expect("identity");
            pids.push(id["pid"].to_string());
        }
    }
    pids
}

fn kill_9(pid: &str) {
    assert!(
        Command::new("kill")
            .args(["-9", pid])
            .status()
            .expect("kill")
            .success()
    );
}

#[test]
fn issue6_a_supervisor_killed_under_a_running_daemon_leaves_nothing_beside_the_retry() {
    let marks = tempfile::tempdir().expect("temp dir");
    let marker = marks.path().join("pids");
    let dag = format!(
        "tasks:\n  - {{id: victim, type: command, command: 'echo $$ >> {}; [ $FERRY_TRY_NUMBER = 2 ] || sleep 20', retries: 1, retry_delay: 1s}}\n",
        marker.display()
    );
    let dir = project(&[("victim.yaml", &dag)]);
    let run = spawn_ferry(dir.path(), &["run", "victim"]);
    wait_until(Duration::from_secs(20), || lines(&marker).len() == 1);
    let supervisors = working_supervisors(dir.path());
    assert_eq!(supervisors.len(), 1, "{supervisors:?}");
    kill_9(&supervisors[0]);
    let output = finish(run);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let pids = lines(&marker);
    assert_eq!(pids.len(), 2, "{pids:?}");
    assert!(
        !is_alive(&pids[0]),
        "the lost try's command was stopped before the retry"
    );
}

#[test]
fn issue6_a_removed_attempts_folder_does_not_make_a_command_run_again() {
    let marks = tempfile::tempdir().expect("temp dir");
    let marker = marks.path().join("ledger");
    let dag = format!(
        "tasks:\n  - {{id: steady, type: command, command: 'echo start >> {m}; sleep 2; echo end >> {m}', retries: 3, retry_delay: 1s}}\n",
        m = marker.display()
    );
    let dir = project(&[("steady.yaml", &dag)]);
    let run = spawn_ferry(dir.path(), &["run", "steady"]);
    wait_until(Duration::from_secs(20), || lines(&marker).len() == 1);
    std::fs::remove_dir_all(dir.path().join(".ferry/attempts")).expect("removed");
    let output = finish(run);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(lines(&marker), ["start", "end"]);
    let run_id = run_id_of(dir.path(), &sqlite_url(dir.path()));
    let log = stdout(&ferry_in(dir.path(), &["logs", &run_id, "steady"], &[]));
    assert!(log.contains("try 1 — success"), "{log}");
}

#[test]
fn issue6_a_stop_that_outlives_the_drain_still_gives_the_try_back() {
    let marks = tempfile::tempdir().expect("temp dir");
    let marker = marks.path().join("attempts");
    // Its main process and a child that left its group both ignore SIGTERM: the supervisor
    // needs two grace periods to stop them, longer than the daemon waits.
    let dag = format!(
        "schedule: '0 0 * * *'\ntimezone: UTC\nstart_date: 2026-11-01\nend_date: 2026-11-01\ncatchup: true\ntasks:\n  - id: stubborn\n    type: command\n    command: 'echo attempt >> {}; [ $FERRY_TRY_NUMBER = 2 ] && exit 0; setsid sh -c \"trap \\\"\\\" TERM; sleep 60\" & trap \"\" TERM; sleep 60'\n",
        marker.display()
    );
    let dir = project(&[("stubborn.yaml", &dag)]);
    std::fs::write(
        dir.path().join("ferry.toml"),
        "[engine]\nheartbeat_interval_secs = 1\nshutdown_grace_secs = 1\nreload_interval_secs = 1\n",
    )
    .expect("config");
    let mut serve = spawn_ferry(dir.path(), &["serve", "--on-stop", "drain"]);
    wait_until(Duration::from_secs(20), || lines(&marker).len() == 1);
    nix_kill(&serve, "TERM");
    assert!(serve.wait().expect("exits").success());
    // The supervisor finishes stopping it after the daemon has gone; the next start records
    // it as interrupted, not failed, and runs it again.
    let runs = serve_until_success(dir.path());
    assert_eq!(lines(&marker).len(), 2);
    let run_id = runs[0]["run_id"].as_str().expect("run id");
    let first = stdout(&ferry_in(
        dir.path(),
        &["logs", run_id, "stubborn", "--try", "1"],
        &[],
    ));
    assert!(first.contains("try 1 — interrupted"), "{first}");
}

#[test]
fn issue6_a_secret_in_a_long_line_stays_masked_across_a_restart() {
    let dag = "tasks:\n  - id: chatty\n    type: command\n    command: 'sleep 2; yes \"$API_TOKEN\" | head -c 400000 | tr -d \"\\n\"; echo'\n    env: {API_TOKEN: tok-ABCDEFGHIJ}\n";
    let dir = project(&[("chatty.yaml", dag)]);
    let mut run = spawn_ferry(dir.path(), &["run", "chatty"]);
    wait_until(Duration::from_secs(20), || {
        !working_supervisors(dir.path()).is_empty()
    });
    run.kill().expect("kill -9");
    run.wait().expect("reaped");
    let runs = serve_until_success(dir.path());
    let run_id = runs[0]["run_id"].as_str().expect("run id");
    let log = stdout(&ferry_in(dir.path(), &["logs", run_id, "chatty"], &[]));
    assert!(log.contains("********"), "{}", &log[..log.len().min(300)]);
    assert!(!log.contains("tok-ABCDEFGHIJ"), "the token leaked");
}

#[test]
fn issue6_a_closed_output_does_not_stop_the_daemon_or_its_stop() {
    let dag = "schedule: '0 0 * * *'\ntimezone: UTC\nstart_date: 2026-11-01\nend_date: 2026-11-03\ncatchup: true\ntasks:\n  - {id: a, type: command, command: 'echo hello'}\n";
    let dir = project(&[("talk.yaml", dag)]);
    let mut serve = spawn_ferry(dir.path(), &["serve"]);
    // Whoever read the daemon's output went away.
    drop(serve.stdout.take());
    drop(serve.stderr.take());
    crate::util::wait_for_runs(dir.path(), Duration::from_secs(20), |runs| {
        runs.as_array()
            .is_some_and(|r| r.len() == 3 && r.iter().all(|run| run["state"] == "success"))
    });
    assert!(serve.try_wait().expect("status").is_none(), "still serving");
    nix_kill(&serve, "TERM");
    let started = Instant::now();
    let status = serve.wait().expect("exits");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(status.success(), "{status:?}");
}

#[test]
fn issue6_a_lost_attempts_children_without_the_marker_are_stopped_by_their_group() {
    let marks = tempfile::tempdir().expect("temp dir");
    let outer = marks.path().join("outer");
    let inner = marks.path().join("inner");
    let dag = format!(
        "tasks:\n  - id: wrapper\n    type: command\n    command: '[ $FERRY_TRY_NUMBER = 2 ] && exit 0; env -i /bin/sh -c \"echo \\$\\$ >> {i}; sleep 30\" & echo $$ >> {o}; wait'\n    retries: 1\n    retry_delay: 1s\n",
        i = inner.display(),
        o = outer.display()
    );
    let dir = project(&[("wrapper.yaml", &dag)]);
    let mut run = spawn_ferry(dir.path(), &["run", "wrapper"]);
    wait_until(Duration::from_secs(20), || lines(&inner).len() == 1);
    run.kill().expect("kill -9 ferry");
    run.wait().expect("reaped");
    for pid in working_supervisors(dir.path()) {
        kill_9(&pid);
    }
    let child = lines(&inner).remove(0);
    assert!(
        is_alive(&child),
        "the child without the marker outlived its supervisor"
    );
    serve_until_success(dir.path());
    assert!(!is_alive(&child), "stopped with its process group");
}

#[test]
fn issue6_a_drain_requested_during_a_database_outage_still_stops_the_commands() {
    let Some(url) = fresh_postgres("drain_outage") else {
        return;
    };
    let proxy = Arc::new(Proxy::start("127.0.0.1:5432"));
    let database = url.rsplit_once('/').expect("database").1;
    let via_proxy = format!("postgres://postgres@127.0.0.1:{}/{database}", proxy.port);
    let marks = tempfile::tempdir().expect("temp dir");
    let marker = marks.path().join("pids");
    let dag = format!(
        "schedule: '0 0 * * *'\ntimezone: UTC\nstart_date: 2026-11-01\nend_date: 2026-11-01\ncatchup: true\ntasks:\n  - {{id: long, type: command, command: 'echo $$ >> {}; [ $FERRY_TRY_NUMBER = 2 ] || sleep 45'}}\n",
        marker.display()
    );
    let dir = project(&[("long.yaml", &dag)]);
    // The configuration names the database directly; the first daemon goes through the proxy.
    std::fs::write(
        dir.path().join("ferry.toml"),
        format!("[engine]\nheartbeat_interval_secs = 1\nheartbeat_timeout_secs = 3\nshutdown_grace_secs = 1\nreload_interval_secs = 1\ndatabase_url = {url:?}\n"),
    )
    .expect("config");
    let mut serve = spawn_ferry(
        dir.path(),
        &["serve", "--on-stop", "drain", "--database-url", &via_proxy],
    );
    wait_until(Duration::from_secs(20), || lines(&marker).len() == 1);
    let cut = proxy.clone();
    let outage = std::thread::spawn(move || cut.outage(Duration::from_secs(12)));
    std::thread::sleep(Duration::from_millis(2500));
    nix_kill(&serve, "TERM");
    let started = Instant::now();
    let status = serve.wait().expect("exits");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(status.success(), "{status:?}");
    let command = lines(&marker).remove(0);
    assert!(!is_alive(&command), "drained: the command was stopped");
    outage.join().expect("outage over");
    serve_until_success(dir.path());
    assert_eq!(lines(&marker).len(), 2);
}
