//! The supervisor process (`ferry supervise DIR`): one per command attempt.
//!
//! It waits for the engine's go-ahead on standard input (the [`AttemptSpec`]); if the engine
//! dies first, standard input closes and the command never starts. It then runs the command in
//! a process group of its own with exactly the environment it was given, writes the output
//! (secrets masked) to the attempt folder as it comes, enforces the timeout itself (so it holds
//! while no engine runs), stops what the command left behind, and writes the result.
//! It outlives the engine: a restarted engine reattaches to it or takes its result.
//!
//! Signals: SIGTERM (or SIGINT) stops the command gracefully (SIGTERM to its group, SIGKILL
//! after the grace period); SIGUSR1 stops it at once; SIGHUP is ignored.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, BufReader};
use tokio::process::Command;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use super::procfs::{self, MARKER_VARIABLE};
use super::protocol::{
    self, AttemptResult, AttemptSpec, COMMAND_FILE, Leftovers, OUTPUT_FILE, PROTOCOL_VERSION,
    write_json, write_result,
};
use crate::command::Program;
use crate::log::LogFile;
use crate::{Outcome, SupervisorError};
use ferry_secrets::{Redactor, StreamRedactor};

/// A request to stop the command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopRequest {
    /// Nothing asked.
    None,
    /// SIGTERM to the group, SIGKILL after the grace period.
    Graceful,
    /// SIGKILL to the group now.
    Now,
}

/// The supervisor process's main: [`serve`] on a runtime of its own; its errors go to standard
/// error (which the engine keeps in the attempt folder). Returns the exit code.
pub fn main(dir: &Path) -> u8 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ferry supervise: cannot start the runtime: {error}");
            return 2;
        }
    };
    match runtime.block_on(serve(dir)) {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("ferry supervise: {error}");
            2
        }
    }
}

/// The supervisor's whole life: the go-ahead on standard input, the command, the result in
/// `dir`. Returns once the result is written (or at once, with nothing run, if standard input
/// closes before the go-ahead).
pub async fn serve(dir: &Path) -> Result<(), SupervisorError> {
    // What a command leaves behind, even after `setsid` or a double fork, is reparented here
    // rather than to init, so it can be found and stopped.
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let io = |action: &'static str| {
        move |cause| SupervisorError::Io {
            action,
            path: dir.display().to_string(),
            cause,
        }
    };
    let mut terminate = signal(SignalKind::terminate()).map_err(io("watch signals in"))?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(io("watch signals in"))?;
    let mut immediate = signal(SignalKind::user_defined1()).map_err(io("watch signals in"))?;
    // Handled (and ignored): a closing terminal must not end the supervisor.
    let _hangup = signal(SignalKind::hangup()).map_err(io("watch signals in"))?;
    let mut line = String::new();
    let mut stdin = BufReader::new(tokio::io::stdin());
    tokio::select! {
        read = stdin.read_line(&mut line) => {
            read.map_err(io("read the go-ahead for"))?;
        }
        _ = terminate.recv() => return Ok(()),
        _ = interrupt.recv() => return Ok(()),
        _ = immediate.recv() => return Ok(()),
    }
    if line.trim().is_empty() {
        // The engine went away before confirming: nothing may run.
        return Ok(());
    }
    // From here on the attempt counts: mark that the go-ahead came (an attempt lost before
    // this mark never ran anything, and its try is given back).
    protocol::mark_went_ahead(dir).map_err(io("mark the go-ahead in"))?;
    let spec = match serde_json::from_str::<AttemptSpec>(&line) {
        Ok(spec) if spec.version == PROTOCOL_VERSION => spec,
        Ok(spec) => {
            return refuse(
                dir,
                &format!(
                    "the supervisor speaks protocol version {PROTOCOL_VERSION}, the engine {}",
                    spec.version
                ),
            );
        }
        Err(error) => return refuse(dir, &format!("unreadable go-ahead: {error}")),
    };
    let (stop, stops) = watch::channel(StopRequest::None);
    tokio::spawn(async move {
        loop {
            let request = tokio::select! {
                _ = terminate.recv() => StopRequest::Graceful,
                _ = interrupt.recv() => StopRequest::Graceful,
                _ = immediate.recv() => StopRequest::Now,
            };
            if stop.send(request).is_err() {
                break;
            }
        }
    });
    let result = execute(&spec, dir, stops).await?;
    write_result(dir, &result).map_err(io("write the result into"))
}

/// A go-ahead this supervisor cannot follow: a failure that no retry mends, as the result.
fn refuse(dir: &Path, reason: &str) -> Result<(), SupervisorError> {
    let now = now_ms();
    let result = AttemptResult {
        outcome: Outcome::fatal(format!("supervisor: {reason}")),
        stopped_on_request: false,
        started_at: now,
        ended_at: now,
    };
    write_result(dir, &result).map_err(|cause| SupervisorError::Io {
        action: "write the result into",
        path: dir.display().to_string(),
        cause,
    })
}

/// Runs the command of `spec` with its output in `dir`, until it ends, times out or is
/// stopped through `stops`; returns how it ended.
pub async fn execute(
    spec: &AttemptSpec,
    dir: &Path,
    mut stops: watch::Receiver<StopRequest>,
) -> Result<AttemptResult, SupervisorError> {
    let output_path = dir.join(OUTPUT_FILE);
    // The folder may have been removed since the supervisor started: make it again.
    let _ = protocol::create_private_dir(dir);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&output_path)
        .map_err(|cause| SupervisorError::Io {
            action: "create the output file",
            path: output_path.display().to_string(),
            cause,
        })?;
    let log = Arc::new(Mutex::new(LogFile::new(file, spec.log_limit)));
    let note = |line: &str| {
        let _ = log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .note(line);
    };
    let started_at = now_ms();
    let grace = Duration::from_millis(spec.grace_ms);
    let mut command = match &spec.program {
        Program::Shell(line) => {
            let mut command = Command::new("sh");
            command.arg("-c").arg(line);
            command
        }
        Program::Argv(argv) => match argv.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args);
                command
            }
            None => {
                note("empty argv: nothing to run");
                return finish(&log, started_at, not_started("empty argv"), false);
            }
        },
    };
    command
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .env(MARKER_VARIABLE, &spec.marker)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(dir) = &spec.working_dir {
        command.current_dir(dir);
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            let reason = format!("cannot start the command: {error}");
            note(&reason);
            return finish(&log, started_at, not_started(&reason), false);
        }
    };
    let Some(pid) = child.id() else {
        return finish(
            &log,
            started_at,
            Outcome::failed(None, "the command ended before it could be watched"),
            false,
        );
    };
    // Who the command is, for a recovery that finds this supervisor gone.
    if let Some(stat) = procfs::stat(pid) {
        let command = procfs::CommandProcess {
            pid,
            start_ticks: stat.start_ticks,
        };
        let _ = write_json(dir, COMMAND_FILE, &command);
    }
    let redactor = Redactor::from_values(spec.secrets.iter().cloned());
    let readers = [
        child.stdout.take().map(|out| {
            tokio::spawn(copy_into(
                out,
                StreamRedactor::new(redactor.clone()),
                log.clone(),
            ))
        }),
        child.stderr.take().map(|err| {
            tokio::spawn(copy_into(
                err,
                StreamRedactor::new(redactor.clone()),
                log.clone(),
            ))
        }),
    ];
    // Wait for the main process to end without reaping it: while it is a zombie its pid (the
    // group's id) cannot be reused, so signals to the group reach only what it left.
    let mut exited = tokio::task::spawn_blocking(move || {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
        loop {
            match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => return other,
            }
        }
    });
    let deadline = spec
        .timeout_ms
        .map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms));
    let mut kill_at: Option<tokio::time::Instant> = None;
    let mut timed_out = false;
    let mut stopped = false;
    let mut stopped_now = false;
    let mut stop_channel_open = true;
    let status = loop {
        tokio::select! {
            status = &mut exited => break status,
            () = sleep_until(deadline), if !timed_out && !stopped => {
                timed_out = true;
                procfs::signal_group(pid, Signal::SIGTERM);
                kill_at = Some(tokio::time::Instant::now() + grace);
            }
            () = sleep_until(kill_at) => {
                procfs::signal_group(pid, Signal::SIGKILL);
                kill_at = None;
            }
            changed = stops.changed(), if stop_channel_open && !stopped_now => {
                if changed.is_err() {
                    // No one can ask for a stop any more; the timeout still holds.
                    stop_channel_open = false;
                    continue;
                }
                let request = *stops.borrow();
                match request {
                    StopRequest::None => {}
                    StopRequest::Graceful if !stopped => {
                        stopped = true;
                        procfs::signal_group(pid, Signal::SIGTERM);
                        kill_at = Some(tokio::time::Instant::now() + grace);
                    }
                    StopRequest::Graceful => {}
                    // Also after a graceful request: a second Ctrl-C does not wait the grace.
                    StopRequest::Now => {
                        stopped = true;
                        stopped_now = true;
                        procfs::signal_group(pid, Signal::SIGKILL);
                    }
                }
            }
        }
    };
    let stopped_on_request = stopped;
    if spec.leftovers == Leftovers::Stop || timed_out || stopped_on_request {
        let marker = spec.marker.clone();
        // A supervisor adopts what its command leaves behind: its descendants are exactly
        // that, and cheap to list. Otherwise the group and the marker find them.
        let left = tokio::task::spawn_blocking(move || {
            if procfs::is_child_subreaper() {
                procfs::stop_descendants(pid, grace)
            } else {
                procfs::stop_remaining(
                    procfs::stat(pid).map(|s| procfs::CommandProcess {
                        pid,
                        start_ticks: s.start_ticks,
                    }),
                    &marker,
                    grace,
                )
            }
        })
        .await
        .unwrap_or_default();
        if left > 0 {
            note(&format!(
                "stopped {left} process(es) the command left running"
            ));
        }
    }
    let reaped = child.wait().await;
    // Background processes that were kept may hold the pipes open: do not wait for them.
    for reader in readers.into_iter().flatten() {
        let abort = reader.abort_handle();
        if tokio::time::timeout(Duration::from_millis(500), reader)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    let outcome = if timed_out {
        let reason = format!(
            "timed out after {}; the process group was stopped",
            shown_duration(spec.timeout_ms.unwrap_or_default())
        );
        note(&reason);
        Outcome::failed(None, reason)
    } else if stopped_on_request {
        let reason = "stopped by ferry".to_string();
        note(&reason);
        Outcome::failed(None, reason)
    } else {
        match (status.ok().and_then(Result::ok), reaped) {
            (Some(WaitStatus::Exited(_, code)), _) => exited_with(code),
            (Some(WaitStatus::Signaled(_, signal, _)), _) => killed_by(signal, &note),
            (_, Ok(status)) => outcome_of(status, &note),
            (_, Err(error)) => Outcome::failed(None, format!("lost the command: {error}")),
        }
    };
    finish(&log, started_at, outcome, stopped_on_request)
}

fn finish(
    log: &Mutex<LogFile>,
    started_at: i64,
    outcome: Outcome,
    stopped_on_request: bool,
) -> Result<AttemptResult, SupervisorError> {
    let _ = log.lock().unwrap_or_else(PoisonError::into_inner).finish();
    Ok(AttemptResult {
        outcome,
        stopped_on_request,
        started_at,
        ended_at: now_ms(),
    })
}

fn not_started(reason: &str) -> Outcome {
    Outcome::fatal(reason)
}

/// `1.5s`, `30s`, `2m 30s`.
fn shown_duration(ms: u64) -> String {
    if ms < 60_000 && !ms.is_multiple_of(1000) {
        format!("{}s", ms as f64 / 1000.0)
    } else if ms < 60_000 {
        format!("{}s", ms / 1000)
    } else {
        let (minutes, seconds) = (ms / 60_000, (ms % 60_000) / 1000);
        if seconds == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m {seconds}s")
        }
    }
}

fn exited_with(code: i32) -> Outcome {
    if code == 0 {
        Outcome::Succeeded { code: Some(0) }
    } else {
        Outcome::failed(Some(i64::from(code)), format!("exited with code {code}"))
    }
}

fn killed_by(signal: Signal, note: &impl Fn(&str)) -> Outcome {
    let hint = if signal == Signal::SIGKILL {
        " (by an operator or the kernel's out-of-memory killer)"
    } else {
        ""
    };
    let reason = format!("killed by {}{hint}", signal.as_str());
    note(&reason);
    Outcome::failed(Some(128 + signal as i64), reason)
}

fn outcome_of(status: ExitStatus, note: &impl Fn(&str)) -> Outcome {
    use std::os::unix::process::ExitStatusExt as _;
    match (
        status.code(),
        status.signal().and_then(|s| Signal::try_from(s).ok()),
    ) {
        (Some(code), _) => exited_with(code),
        (None, Some(signal)) => killed_by(signal, note),
        (None, None) => Outcome::failed(None, "ended without an exit code"),
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn copy_into(
    mut stream: impl AsyncRead + Unpin,
    mut redactor: StreamRedactor,
    log: Arc<Mutex<LogFile>>,
) {
    let mut buffer = [0u8; 8192];
    let write = |bytes: Vec<u8>| {
        if !bytes.is_empty() {
            let _ = log
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(&bytes);
        }
    };
    while let Ok(read) = stream.read(&mut buffer).await {
        if read == 0 {
            break;
        }
        write(redactor.push(&buffer[..read]));
    }
    write(redactor.finish());
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
