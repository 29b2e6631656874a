//! `command` tasks: what to run. The supervisor ([`crate::supervisor`]) runs it.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What to run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
    /// The command's whole environment: the DAG's `env`, ferry's variables and the daemon's
    /// allowed variables (nothing else is inherited).
    pub env: Vec<(String, String)>,
    /// Where to run.
    pub working_dir: Option<PathBuf>,
    /// Stop the attempt after this long.
    pub timeout: Option<Duration>,
    /// Between SIGTERM and SIGKILL when stopping.
    pub grace: Duration,
}
