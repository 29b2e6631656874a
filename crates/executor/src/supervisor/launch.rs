//! The engine's side of supervision: start a supervisor, record who it is, give the go-ahead,
//! watch it to its end, stop it, or reattach to one a previous engine started.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt as _;
use tokio::process::{Child, ChildStdin, Command};

use super::procfs;
use super::protocol::{
    AttemptResult, AttemptSpec, create_private_dir, read_command, read_output, read_result,
    went_ahead,
};
use crate::SupervisorError;

/// How often a reattached supervisor (not this process's child) is looked at.
const REATTACHED_POLL: Duration = Duration::from_millis(200);

/// The file a supervisor's own errors go to, in its attempt folder.
const SUPERVISOR_ERRORS: &str = "supervisor.err";

/// The supervisor's identity, in its attempt folder.
const SUPERVISOR_ID: &str = "supervisor.json";

/// Names one supervisor process uniquely (pid and start time within one boot of one host), and
/// where its attempt folder is. Kept in the store as JSON with the attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisorId {
    /// The host it runs on.
    pub host: String,
    /// That host's boot.
    pub boot_id: String,
    /// Its pid.
    pub pid: u32,
    /// Its start time, in clock ticks after boot.
    pub start_ticks: u64,
    /// The attempt folder (output and result).
    pub dir: PathBuf,
    /// The marker in the environment of every process of the attempt.
    pub marker: String,
}

impl SupervisorId {
    /// True when it runs on this machine, in this boot (the boot id is unique to both; the host
    /// name may change between restarts). Without a readable boot id, by host name.
    pub fn is_here(&self) -> bool {
        let boot = procfs::boot_id();
        if boot.is_empty() || self.boot_id.is_empty() {
            return self.host == procfs::host_name();
        }
        self.boot_id == boot
    }

    /// True when it ran on this machine in an earlier boot: the machine restarted since, and
    /// the supervisor died with it.
    pub fn rebooted_since(&self) -> bool {
        !self.is_here() && self.host == procfs::host_name()
    }

    /// True while the supervisor process runs.
    pub fn is_running(&self) -> bool {
        self.is_here() && procfs::is_running(self.pid, self.start_ticks)
    }

    /// As stored.
    pub fn to_json(&self) -> Result<String, SupervisorError> {
        serde_json::to_string(self).map_err(|error| {
            SupervisorError::Protocol(format!("cannot record the supervisor: {error}"))
        })
    }

    /// From the store.
    pub fn from_json(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }

    /// The identity written in an attempt folder when its supervisor was started.
    pub fn in_folder(dir: &Path) -> Option<Self> {
        Self::from_json(&std::fs::read_to_string(dir.join(SUPERVISOR_ID)).ok()?)
    }

    /// The result it wrote, if it has ended.
    pub fn result(&self) -> Option<AttemptResult> {
        read_result(&self.dir)
    }

    /// The output it wrote so far.
    pub fn output(&self) -> String {
        read_output(&self.dir)
    }

    /// True once it had its go-ahead: a supervisor lost before never started its command.
    pub fn went_ahead(&self) -> bool {
        went_ahead(&self.dir)
    }

    /// For a supervisor that is gone: stops what its command left running (its process group,
    /// and every process carrying its marker), SIGTERM then SIGKILL after `grace`. Blocks; returns
    /// how many processes there were.
    pub fn stop_what_is_left(&self, grace: Duration) -> usize {
        procfs::stop_remaining(read_command(&self.dir), &self.marker, grace)
    }

    /// Asks the supervisor to stop the command: gracefully (SIGTERM, then SIGKILL after the
    /// grace period) or `now`. False if the supervisor is no longer running.
    pub fn stop(&self, now: bool) -> bool {
        let signal = if now {
            Signal::SIGUSR1
        } else {
            Signal::SIGTERM
        };
        self.is_running() && procfs::signal_process(self.pid, signal)
    }
}

/// How to start a supervisor: `ferry supervise` of the running binary, or (in tests) another
/// program that runs [`super::serve`].
#[derive(Clone, Debug)]
pub struct Launcher {
    program: PathBuf,
    name: Option<OsString>,
    args: Vec<OsString>,
    env: Vec<(String, String)>,
}

impl Launcher {
    /// `program args… DIR` with exactly `env` as its environment.
    pub fn new(program: PathBuf, args: Vec<OsString>, env: Vec<(String, String)>) -> Self {
        Self {
            program,
            name: None,
            args,
            env,
        }
    }

    /// The supervisors of this ferry: its own binary (`/proc/self/exe`, which stays the
    /// running build even when the file is replaced by an upgrade), shown as `name supervise`.
    pub fn this_binary(name: OsString) -> Self {
        Self {
            program: PathBuf::from("/proc/self/exe"),
            name: Some(name),
            args: vec!["supervise".into()],
            env: Vec::new(),
        }
    }

    /// Starts a supervisor for an attempt whose folder is `dir` (created here). It waits for
    /// [`Pending::start`]; nothing runs before.
    pub fn spawn(&self, dir: &Path, marker: &str) -> Result<Pending, SupervisorError> {
        let io = |action: &'static str| {
            move |cause| SupervisorError::Io {
                action,
                path: dir.display().to_string(),
                cause,
            }
        };
        create_private_dir(dir).map_err(io("create the attempt folder"))?;
        let errors = std::fs::File::create(dir.join(SUPERVISOR_ERRORS))
            .map_err(io("create the supervisor's error file in"))?;
        let mut command = Command::new(&self.program);
        if let Some(name) = &self.name {
            command.arg0(name);
        }
        let mut child = command
            .args(&self.args)
            .arg(dir)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(errors)
            // Its own group: a Ctrl-C meant for ferry does not reach it.
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
            .map_err(|cause| SupervisorError::Io {
                action: "start the supervisor",
                path: self.program.display().to_string(),
                cause,
            })?;
        let stdin = child.stdin.take();
        let identity = child
            .id()
            .and_then(|pid| Some((pid, procfs::stat(pid)?.start_ticks)));
        let (Some(stdin), Some((pid, start_ticks))) = (stdin, identity) else {
            return Err(SupervisorError::Protocol(
                "the supervisor ended as soon as it started".to_string(),
            ));
        };
        let id = SupervisorId {
            host: procfs::host_name(),
            boot_id: procfs::boot_id(),
            pid,
            start_ticks,
            dir: dir.to_path_buf(),
            marker: marker.to_string(),
        };
        std::fs::write(dir.join(SUPERVISOR_ID), id.to_json()?)
            .map_err(io("write the supervisor's identity into"))?;
        Ok(Pending { child, stdin, id })
    }
}

/// Supervisors started ahead of need: starting a task then only records one and gives it the
/// go-ahead, instead of waiting for a process to start (a few milliseconds per attempt). Each
/// has its own attempt folder under `root` and its own marker. Spares that never get a
/// go-ahead exit when the engine does (their standard input closes).
#[derive(Debug)]
pub struct Spares {
    launcher: Launcher,
    root: PathBuf,
    idle: std::collections::VecDeque<Pending>,
    size: usize,
}

impl Spares {
    /// Keeps `size` supervisors ready, with their folders under `root`.
    pub fn new(launcher: Launcher, root: PathBuf, size: usize) -> Self {
        Self {
            launcher,
            root,
            idle: std::collections::VecDeque::new(),
            size,
        }
    }

    /// A supervisor waiting for its go-ahead: a spare if one is ready, else a new one.
    pub fn take(&mut self) -> Result<Pending, SupervisorError> {
        while let Some(spare) = self.idle.pop_front() {
            if spare.id.is_running() {
                return Ok(spare);
            }
            remove_attempt_dir(&spare.id.dir);
        }
        self.start_one()
    }

    /// Starts spares until `size` are ready.
    pub fn fill(&mut self) {
        while self.idle.len() < self.size {
            match self.start_one() {
                Ok(spare) => self.idle.push_back(spare),
                Err(_) => break,
            }
        }
    }

    fn start_one(&self) -> Result<Pending, SupervisorError> {
        let marker = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let dir = self.root.join(&marker[..16]);
        self.launcher.spawn(&dir, &marker)
    }
}

/// A supervisor that is waiting for its go-ahead.
#[derive(Debug)]
pub struct Pending {
    child: Child,
    stdin: ChildStdin,
    id: SupervisorId,
}

impl Pending {
    /// Who it is (record this before [`Pending::start`]).
    pub fn id(&self) -> &SupervisorId {
        &self.id
    }

    /// The go-ahead: the supervisor starts the command of `spec`.
    pub async fn start(mut self, spec: &AttemptSpec) -> Supervised {
        // A supervisor that died meanwhile is found by `Supervised::ended`.
        let sent = match serde_json::to_vec(spec) {
            Ok(mut line) => {
                line.push(b'\n');
                self.stdin.write_all(&line).await.is_ok()
            }
            Err(_) => false,
        };
        let _ = self.stdin.shutdown().await;
        drop(self.stdin);
        Supervised {
            id: self.id,
            child: Some(self.child),
            go_ahead_sent: sent,
        }
    }

    /// No go-ahead: the supervisor exits without running anything, and its folder is removed.
    pub async fn abandon(mut self) {
        drop(self.stdin);
        let _ = self.child.wait().await;
        remove_attempt_dir(&self.id.dir);
    }
}

/// A supervisor running an attempt.
#[derive(Debug)]
pub struct Supervised {
    id: SupervisorId,
    /// Set when this process started it (its end is then known at once).
    child: Option<Child>,
    /// Whether this process sent it the go-ahead (for one it started).
    go_ahead_sent: bool,
}

/// How a supervised attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The supervisor wrote a result.
    Finished {
        /// The result.
        result: AttemptResult,
        /// The command's output, secrets masked.
        output: String,
    },
    /// The supervisor is gone without a result (killed, or the machine rebooted).
    Lost {
        /// Why, for people.
        reason: String,
        /// The output it wrote before it was lost.
        output: String,
        /// Whether it had its go-ahead (if not, its command never ran).
        went_ahead: bool,
    },
}

impl Supervised {
    /// Watches a supervisor that an earlier engine started (or that has ended already).
    pub fn reattach(id: SupervisorId) -> Self {
        Self {
            id,
            child: None,
            go_ahead_sent: false,
        }
    }

    /// Who it is.
    pub fn id(&self) -> &SupervisorId {
        &self.id
    }

    /// Waits for the attempt's end.
    pub async fn ended(&mut self) -> Ended {
        if let Some(child) = self.child.as_mut() {
            let status = child.wait().await;
            return match read_result(&self.id.dir) {
                Some(result) => self.finished(result),
                None => {
                    let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                    let errors = std::fs::read_to_string(self.id.dir.join(SUPERVISOR_ERRORS))
                        .unwrap_or_default();
                    let reason = match errors.lines().next() {
                        Some(line) => {
                            format!("the supervisor ended ({status}) without a result: {line}")
                        }
                        None => format!("the supervisor ended ({status}) without a result"),
                    };
                    Ended::Lost {
                        reason,
                        output: read_output(&self.id.dir),
                        went_ahead: self.go_ahead_sent || self.id.went_ahead(),
                    }
                }
            };
        }
        loop {
            if let Some(result) = read_result(&self.id.dir) {
                return self.finished(result);
            }
            if !self.id.is_running() {
                // It may have written its result just before it exited.
                return match read_result(&self.id.dir) {
                    Some(result) => self.finished(result),
                    None => Ended::Lost {
                        reason: format!(
                            "its supervisor (pid {} on {}) is gone without a result",
                            self.id.pid, self.id.host
                        ),
                        output: read_output(&self.id.dir),
                        went_ahead: self.id.went_ahead(),
                    },
                };
            }
            tokio::time::sleep(REATTACHED_POLL).await;
        }
    }

    fn finished(&self, result: AttemptResult) -> Ended {
        Ended::Finished {
            result,
            output: read_output(&self.id.dir),
        }
    }

    /// Asks the supervisor to stop the command (see [`SupervisorId::stop`]).
    pub fn stop(&self, now: bool) -> bool {
        self.id.stop(now)
    }
}

/// Removes an attempt folder once its result is recorded.
pub fn remove_attempt_dir(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}
