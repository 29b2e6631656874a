//! The supervisor in-process ([`execute`]) and as a real process started through a
//! [`Launcher`]: this test binary re-executes itself as the supervisor (see `supervisor_entry`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::*;
use crate::Outcome;
use crate::command::Program;

fn spec(line: &str) -> AttemptSpec {
    AttemptSpec {
        version: protocol::PROTOCOL_VERSION,
        program: Program::Shell(line.to_string()),
        env: vec![
            ("GREETING".to_string(), "hello".to_string()),
            (
                "PATH".to_string(),
                std::env::var("PATH").unwrap_or_default(),
            ),
        ],
        working_dir: None,
        timeout_ms: Some(10_000),
        grace_ms: 300,
        leftovers: Leftovers::Stop,
        log_limit: 1 << 20,
        secrets: vec!["hunter2-secret".to_string()],
        marker: format!("test-{}-{}", std::process::id(), fastrand_marker()),
    }
}

fn fastrand_marker() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

async fn run(spec: &AttemptSpec) -> (AttemptResult, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_stop, stops) = watch::channel(StopRequest::None);
    let result = execute(spec, dir.path(), stops).await.expect("executes");
    let output = protocol::read_output(dir.path());
    (result, output, dir)
}

/// Waits up to `limit` for `check`.
fn eventually(limit: Duration, check: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    check()
}

#[tokio::test]
async fn captures_output_and_exit_code_with_only_the_given_environment() {
    // SAFETY of the assertion: the test process has HOME; the command must not see it.
    let (result, output, _dir) = run(&spec(
        "echo $GREETING; echo home=$HOME; echo oops >&2; echo pw hunter2-secret; exit 3",
    ))
    .await;
    assert_eq!(
        result.outcome,
        Outcome::failed(Some(3), "exited with code 3")
    );
    assert!(!result.stopped_on_request);
    assert!(
        output.contains("hello\n") && output.contains("oops\n"),
        "{output}"
    );
    assert!(
        output.contains("home=\n"),
        "the environment is explicit: {output}"
    );
    assert!(
        output.contains("pw ********\n") && !output.contains("hunter2"),
        "{output}"
    );
    let (ok, ..) = run(&spec("true")).await;
    assert_eq!(ok.outcome, Outcome::Succeeded { code: Some(0) });
}

#[tokio::test]
async fn argv_runs_without_a_shell_and_a_missing_program_is_not_retried() {
    let mut argv = spec("");
    argv.program = Program::Argv(vec!["echo".into(), "$HOME".into()]);
    let (result, output, _dir) = run(&argv).await;
    assert_eq!(result.outcome, Outcome::Succeeded { code: Some(0) });
    assert_eq!(output, "$HOME\n");
    argv.program = Program::Argv(vec!["/no/such/program".into()]);
    let (missing, output, _dir) = run(&argv).await;
    assert!(
        matches!(
            missing.outcome,
            Outcome::Failed {
                retryable: false,
                ..
            }
        ),
        "{missing:?}"
    );
    assert!(output.contains("cannot start the command"), "{output}");
}

#[tokio::test]
async fn a_timeout_stops_the_whole_process_group() {
    let marker_dir = tempfile::tempdir().expect("temp dir");
    let marker = marker_dir.path().join("child-survived");
    let mut slow = spec(&format!("(sleep 2; touch {}) & sleep 30", marker.display()));
    slow.timeout_ms = Some(300);
    let started = Instant::now();
    let (result, output, _dir) = run(&slow).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        matches!(&result.outcome, Outcome::Failed { retryable: true, reason, .. } if reason.starts_with("timed out")),
        "{result:?}"
    );
    assert!(output.contains("[ferry] timed out"), "{output}");
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        !marker.exists(),
        "a process of the group survived the timeout"
    );
}

#[tokio::test]
async fn a_signal_is_a_failure_like_any_other() {
    let (result, ..) = run(&spec("kill -9 $$")).await;
    assert!(
        matches!(&result.outcome, Outcome::Failed { code: Some(137), reason, .. } if reason.starts_with("killed by SIGKILL")),
        "{result:?}"
    );
}

#[tokio::test]
async fn what_the_command_leaves_behind_is_stopped_or_kept() {
    let mut leaves = spec("sleep 300 & setsid sleep 301 & echo started");
    let (result, _, _dir) = run(&leaves).await;
    assert_eq!(result.outcome, Outcome::Succeeded { code: Some(0) });
    assert!(
        eventually(Duration::from_secs(2), || procfs::marked(&leaves.marker)
            .is_empty()),
        "left running: {:?}",
        procfs::marked(&leaves.marker)
    );
    leaves.leftovers = Leftovers::Keep;
    leaves.marker.push_str("-kept");
    let (result, _, _dir) = run(&leaves).await;
    assert_eq!(result.outcome, Outcome::Succeeded { code: Some(0) });
    assert_eq!(procfs::marked(&leaves.marker).len(), 2, "kept on request");
    assert_eq!(
        stop_remaining(None, &leaves.marker, Duration::from_millis(300)),
        2
    );
    assert!(procfs::marked(&leaves.marker).is_empty());
}

#[tokio::test]
async fn a_stop_request_stops_the_command() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (stop, stops) = watch::channel(StopRequest::None);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = stop.send(StopRequest::Graceful);
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let started = Instant::now();
    let result = execute(&spec("trap '' TERM; sleep 30"), dir.path(), stops)
        .await
        .expect("executes");
    assert!(result.stopped_on_request, "{result:?}");
    // SIGTERM is ignored: SIGKILL follows after the grace period.
    assert!(started.elapsed() < Duration::from_secs(5));
}

// ---- the supervisor as a process ----

/// Not a test: the entry point through which the tests below start this binary as a supervisor
/// (`<test binary> supervisor::tests::supervisor_entry --exact --ignored … DIR`).
#[test]
#[ignore = "entry point of the supervisor process for the other tests"]
fn supervisor_entry() {
    if std::env::var_os("FERRY_TEST_SUPERVISOR").is_some() {
        let dir = std::path::PathBuf::from(std::env::args().next_back().unwrap_or_default());
        std::process::exit(i32::from(main(&dir)));
    }
}

fn launcher() -> Launcher {
    Launcher::new(
        std::env::current_exe().expect("test binary"),
        [
            "supervisor::tests::supervisor_entry",
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
    )
}

fn attempt_dir(root: &Path, name: &str) -> PathBuf {
    root.join("attempts").join(name)
}

#[tokio::test]
async fn the_handshake_runs_nothing_until_the_go_ahead() {
    let root = tempfile::tempdir().expect("temp dir");
    let witness = root.path().join("ran");
    let work = spec(&format!("touch {}", witness.display()));
    let pending = launcher()
        .spawn(&attempt_dir(root.path(), "a"), &work.marker)
        .expect("spawns");
    let id = pending.id().clone();
    assert!(id.is_running(), "the supervisor waits for its go-ahead");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!witness.exists(), "nothing runs before the go-ahead");
    pending.abandon().await;
    assert!(!id.is_running() && !witness.exists() && !id.dir.exists());

    let pending = launcher()
        .spawn(&attempt_dir(root.path(), "b"), &work.marker)
        .expect("spawns");
    let mut supervised = pending.start(&work).await;
    let Ended::Finished { result, .. } = supervised.ended().await else {
        panic!("the supervisor writes a result");
    };
    assert_eq!(result.outcome, Outcome::Succeeded { code: Some(0) });
    assert!(witness.exists());
}

#[tokio::test]
async fn a_supervisor_outlives_its_engine_and_is_reattached() {
    let root = tempfile::tempdir().expect("temp dir");
    let work = spec("sleep 0.6; echo done");
    let pending = launcher()
        .spawn(&attempt_dir(root.path(), "a"), &work.marker)
        .expect("spawns");
    let id = pending.id().clone();
    let supervised = pending.start(&work).await;
    // The engine forgets it (as if it died): the supervisor goes on, and is found by its id.
    drop(supervised);
    let stored = SupervisorId::from_json(&id.to_json().expect("json")).expect("round trip");
    let mut reattached = Supervised::reattach(stored);
    let Ended::Finished { result, output } = reattached.ended().await else {
        panic!("finished");
    };
    assert_eq!(result.outcome, Outcome::Succeeded { code: Some(0) });
    assert_eq!(output, "done\n");
}

#[tokio::test]
async fn a_killed_supervisor_is_lost_and_its_command_can_be_stopped_by_marker() {
    let root = tempfile::tempdir().expect("temp dir");
    let work = spec("echo begun; sleep 300");
    let pending = launcher()
        .spawn(&attempt_dir(root.path(), "a"), &work.marker)
        .expect("spawns");
    let id = pending.id().clone();
    let mut supervised = pending.start(&work).await;
    assert!(eventually(Duration::from_secs(5), || !procfs::marked(
        &work.marker
    )
    .is_empty()));
    assert!(procfs::signal_process(
        id.pid,
        nix::sys::signal::Signal::SIGKILL
    ));
    let Ended::Lost {
        reason,
        output,
        went_ahead,
    } = supervised.ended().await
    else {
        panic!("lost");
    };
    assert!(went_ahead, "it had its go-ahead");
    assert!(reason.contains("without a result"), "{reason}");
    assert_eq!(output, "begun\n");
    assert!(
        !procfs::marked(&work.marker).is_empty(),
        "the command survived its supervisor"
    );
    assert!(stop_remaining(None, &work.marker, Duration::from_millis(500)) > 0);
    assert!(procfs::marked(&work.marker).is_empty());
}

#[tokio::test]
async fn a_stop_reaches_a_reattached_supervisor() {
    let root = tempfile::tempdir().expect("temp dir");
    let work = spec("sleep 300");
    let pending = launcher()
        .spawn(&attempt_dir(root.path(), "a"), &work.marker)
        .expect("spawns");
    let id = pending.id().clone();
    drop(pending.start(&work).await);
    let mut reattached = Supervised::reattach(id);
    assert!(eventually(Duration::from_secs(5), || !procfs::marked(
        &work.marker
    )
    .is_empty()));
    assert!(reattached.stop(false));
    let Ended::Finished { result, .. } = reattached.ended().await else {
        panic!("finished");
    };
    assert!(result.stopped_on_request, "{result:?}");
    assert!(procfs::marked(&work.marker).is_empty());
}

#[tokio::test]
async fn a_chain_that_keeps_respawning_itself_is_stopped_for_good() {
    let root = tempfile::tempdir().expect("temp dir");
    let hop = root.path().join("hop.sh");
    let beats = root.path().join("beats");
    std::fs::write(
        &hop,
        format!(
            "#!/bin/sh\ntrap '' TERM\necho x >> {}\nsleep 0.03\n{} &\n",
            beats.display(),
            hop.display()
        ),
    )
    .expect("script");
    let mut chain = spec(&format!("sh {} & sleep 0.5", hop.display()));
    chain.program = Program::Shell(format!("chmod +x {0}; {0} & sleep 0.5", hop.display()));
    chain.grace_ms = 200;
    // In-process, this test is not a subreaper: the marker finds the chain.
    let (result, output, _dir) = run(&chain).await;
    assert_eq!(
        result.outcome,
        Outcome::Succeeded { code: Some(0) },
        "{output}"
    );
    let settled = std::fs::read_to_string(&beats).unwrap_or_default().len();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        std::fs::read_to_string(&beats).unwrap_or_default().len(),
        settled,
        "the chain still runs: {:?}",
        procfs::marked(&chain.marker)
    );
}
