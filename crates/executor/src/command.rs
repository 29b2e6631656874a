//! `command` tasks: a program or `sh -c` line in its own process group.

use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::{LogBuffer, Outcome};

/// What to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Program {
    /// A line for `sh -c`.
    Shell(String),
    /// A program and its arguments, without a shell.
    Argv(Vec<String>),
}

/// One attempt of a command task, rendered.
#[derive(Clone, Debug)]
pub struct CommandSpec {
    /// What to run.
    pub program: Program,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Where to run.
    pub working_dir: Option<PathBuf>,
    /// Stop the attempt after this long.
    pub timeout: Option<Duration>,
    /// Between SIGTERM and SIGKILL when stopping.
    pub grace: Duration,
}

/// Runs the command to its end, its timeout, or `cancel`. `on_spawn` receives the process
/// group id as soon as the process exists, so that a restarted ferry can stop an orphan.
pub async fn run(
    spec: &CommandSpec,
    log: &LogBuffer,
    cancel: &CancellationToken,
    on_spawn: impl FnOnce(u32),
) -> Outcome {
    let mut command = match &spec.program {
        Program::Shell(line) => {
            let mut command = Command::new("sh");
            command.arg("-c").arg(line);
            command
        }
        Program::Argv(argv) => {
            let Some((program, args)) = argv.split_first() else {
                return Outcome::Failed {
                    retryable: false,
                    retry_after: None,
                    code: None,
                    reason: "empty argv".to_string(),
                };
            };
            let mut command = Command::new(program);
            command.args(args);
            command
        }
    };
    command
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = &spec.working_dir {
        command.current_dir(dir);
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            let reason = format!("cannot start the command: {error}");
            log.note(&reason);
            return Outcome::Failed {
                retryable: false,
                retry_after: None,
                code: None,
                reason,
            };
        }
    };
    let Some(pid) = child.id() else {
        return Outcome::failed(None, "the command ended before it could be watched");
    };
    on_spawn(pid);
    let readers = [
        child
            .stdout
            .take()
            .map(|out| tokio::spawn(copy_into(out, log.clone()))),
        child
            .stderr
            .take()
            .map(|err| tokio::spawn(copy_into(err, log.clone()))),
    ];
    let timeout = async {
        match spec.timeout {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        status = child.wait() => match status {
            Ok(status) => outcome_of(status, log),
            Err(error) => Outcome::failed(None, format!("lost the command: {error}")),
        },
        () = timeout => {
            let limit = spec.timeout.unwrap_or_default();
            let reason = format!("timed out after {}s; the process group was stopped", limit.as_secs());
            stop_group(pid, &mut child, spec.grace).await;
            log.note(&reason);
            Outcome::failed(None, reason)
        }
        () = cancel.cancelled() => {
            let reason = "stopped because ferry is shutting down".to_string();
            stop_group(pid, &mut child, spec.grace).await;
            log.note(&reason);
            Outcome::failed(None, reason)
        }
    };
    // Background processes may hold the pipes open after the command ends: do not wait for them.
    for reader in readers.into_iter().flatten() {
        let abort = reader.abort_handle();
        if tokio::time::timeout(Duration::from_millis(500), reader)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    outcome
}

fn outcome_of(status: ExitStatus, log: &LogBuffer) -> Outcome {
    match (status.code(), status.signal()) {
        (Some(0), _) => Outcome::Succeeded { code: Some(0) },
        (Some(code), _) => {
            Outcome::failed(Some(i64::from(code)), format!("exited with code {code}"))
        }
        (None, Some(signal)) => {
            let name = Signal::try_from(signal)
                .map_or_else(|_| format!("signal {signal}"), |s| s.as_str().to_string());
            let hint = if signal == Signal::SIGKILL as i32 {
                " (by ferry, an operator, or the kernel's out-of-memory killer)"
            } else {
                ""
            };
            let reason = format!("killed by {name}{hint}");
            log.note(&reason);
            Outcome::failed(Some(128 + i64::from(signal)), reason)
        }
        (None, None) => Outcome::failed(None, "ended without an exit code"),
    }
}

/// SIGTERM to the whole group, then SIGKILL if it has not ended within `grace`.
async fn stop_group(pid: u32, child: &mut Child, grace: Duration) {
    let _ = signal_group(pid, Signal::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = signal_group(pid, Signal::SIGKILL);
        let _ = child.wait().await;
    }
}

/// Sends `signal` to the process group `group`. Used to stop the orphans of an attempt whose
/// ferry died; fails quietly when the group no longer exists.
pub fn signal_group(group: u32, signal: Signal) -> Result<(), nix::Error> {
    let group = i32::try_from(group).map_err(|_| nix::Error::EINVAL)?;
    killpg(Pid::from_raw(group), signal)
}

pub use nix::sys::signal::Signal as GroupSignal;

async fn copy_into(mut stream: impl AsyncRead + Unpin, log: LogBuffer) {
    let mut buffer = [0u8; 8192];
    while let Ok(read) = stream.read(&mut buffer).await {
        if read == 0 {
            break;
        }
        log.push(&buffer[..read]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(line: &str) -> CommandSpec {
        CommandSpec {
            program: Program::Shell(line.to_string()),
            env: vec![("GREETING".to_string(), "hello".to_string())],
            working_dir: None,
            timeout: Some(Duration::from_secs(10)),
            grace: Duration::from_millis(200),
        }
    }

    #[tokio::test]
    async fn captures_output_and_exit_code() {
        let log = LogBuffer::new(1 << 20);
        let outcome = run(
            &shell("echo $GREETING; echo oops >&2; exit 3"),
            &log,
            &CancellationToken::new(),
            |_| {},
        )
        .await;
        assert_eq!(outcome, Outcome::failed(Some(3), "exited with code 3"));
        let text = log.text();
        assert!(
            text.contains("hello\n") && text.contains("oops\n"),
            "{text}"
        );
        let ok = run(&shell("true"), &log, &CancellationToken::new(), |_| {}).await;
        assert_eq!(ok, Outcome::Succeeded { code: Some(0) });
    }

    #[tokio::test]
    async fn argv_runs_without_a_shell() {
        let log = LogBuffer::new(1024);
        let spec = CommandSpec {
            program: Program::Argv(vec!["echo".into(), "$HOME".into()]),
            ..shell("")
        };
        assert_eq!(
            run(&spec, &log, &CancellationToken::new(), |_| {}).await,
            Outcome::Succeeded { code: Some(0) }
        );
        assert_eq!(log.text(), "$HOME\n");
        let missing = CommandSpec {
            program: Program::Argv(vec!["/no/such/program".into()]),
            ..shell("")
        };
        assert!(matches!(
            run(&missing, &log, &CancellationToken::new(), |_| {}).await,
            Outcome::Failed {
                retryable: false,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn a_timeout_stops_the_whole_process_group() {
        let dir = tempfile::tempdir().expect("temp dir");
        let marker = dir.path().join("child-survived");
        // The shell starts a grandchild that would write the marker after 2 s.
        let line = format!("(sleep 2; touch {}) & sleep 30", marker.display());
        let spec = CommandSpec {
            timeout: Some(Duration::from_millis(300)),
            ..shell(&line)
        };
        let log = LogBuffer::new(1024);
        let outcome = run(&spec, &log, &CancellationToken::new(), |_| {}).await;
        assert!(
            matches!(&outcome, Outcome::Failed { retryable: true, reason, .. } if reason.starts_with("timed out")),
            "{outcome:?}"
        );
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(
            !marker.exists(),
            "a process of the group survived the timeout"
        );
    }

    #[tokio::test]
    async fn a_signal_is_a_failure_like_any_other() {
        let log = LogBuffer::new(1024);
        let outcome = run(
            &shell("kill -9 $$"),
            &log,
            &CancellationToken::new(),
            |_| {},
        )
        .await;
        assert!(
            matches!(&outcome, Outcome::Failed { code: Some(137), reason, .. } if reason.starts_with("killed by SIGKILL")),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn cancellation_stops_the_command() {
        let cancel = CancellationToken::new();
        let log = LogBuffer::new(1024);
        let canceller = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            canceller.cancel();
        });
        let outcome = run(&shell("sleep 30"), &log, &cancel, |_| {}).await;
        assert!(
            matches!(&outcome, Outcome::Failed { reason, .. } if reason.contains("shutting down")),
            "{outcome:?}"
        );
    }
}
