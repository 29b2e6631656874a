//! What a supervisor is told and what it leaves behind.
//!
//! The engine sends one JSON line, the [`AttemptSpec`], on the supervisor's standard input:
//! that line is the go-ahead, sent only once the supervisor's identity is in the store. The
//! supervisor writes the command's output (secrets masked) to [`OUTPUT_FILE`] as it comes and,
//! when the command has ended, the [`AttemptResult`] to [`RESULT_FILE`], atomically.
//! The attempt folder is removed by the engine once the result is recorded in the store.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Outcome;
use crate::command::Program;

/// The command's output, secrets masked.
pub const OUTPUT_FILE: &str = "output.log";
/// How the attempt ended (JSON), written once the command has ended.
pub const RESULT_FILE: &str = "result.json";
/// The command's main process (JSON [`super::CommandProcess`]), written as soon as it started.
pub const COMMAND_FILE: &str = "command.json";

/// The version of the go-ahead. An engine starts supervisors from its own binary (see
/// [`super::Launcher`]), so both sides speak the same version; a mismatch is refused with a
/// result that no retry mends.
pub const PROTOCOL_VERSION: u32 = 1;

/// What to do with processes left in the attempt's process group when its main process ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Leftovers {
    /// Stop them (SIGTERM, then SIGKILL after the grace period).
    #[default]
    Stop,
    /// Leave them running.
    Keep,
}

/// Everything a supervisor needs to run one attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptSpec {
    /// [`PROTOCOL_VERSION`].
    pub version: u32,
    /// What to run.
    pub program: Program,
    /// The command's whole environment (nothing else is inherited).
    pub env: Vec<(String, String)>,
    /// Where to run.
    pub working_dir: Option<PathBuf>,
    /// Stop the command after this many milliseconds.
    pub timeout_ms: Option<u64>,
    /// Between SIGTERM and SIGKILL when stopping, in milliseconds.
    pub grace_ms: u64,
    /// What happens to processes the command leaves behind.
    pub leftovers: Leftovers,
    /// How much output to keep (the start and the end of longer output).
    pub log_limit: usize,
    /// Values to mask in the output.
    pub secrets: Vec<String>,
    /// The value of [`super::MARKER_VARIABLE`] given to the command.
    pub marker: String,
}

/// How an attempt ended, as its supervisor saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptResult {
    /// The outcome.
    pub outcome: Outcome,
    /// True when the command was stopped because ferry asked (shutdown, run timeout).
    pub stopped_on_request: bool,
    /// When the command started (Unix milliseconds).
    pub started_at: i64,
    /// When it ended (Unix milliseconds).
    pub ended_at: i64,
}

/// Writes `value` as JSON into `dir/name` atomically (the folder is made again if it was
/// removed meanwhile): a reader sees the whole file or none.
pub(crate) fn write_json(dir: &Path, name: &str, value: &impl Serialize) -> std::io::Result<()> {
    create_private_dir(dir)?;
    let temporary = dir.join(format!("{name}.tmp"));
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(&serde_json::to_vec(value).map_err(std::io::Error::other)?)?;
    drop(file);
    std::fs::rename(&temporary, dir.join(name))
}

/// Writes `result` into `dir` atomically: a reader sees the whole result or none. It is not
/// forced to disk: it must survive the engine and the supervisor, not the machine (if the
/// machine dies, the attempt is lost and run again: at-least-once), and an fsync per attempt
/// would cost more than the rest of the supervision.
pub fn write_result(dir: &Path, result: &AttemptResult) -> std::io::Result<()> {
    write_json(dir, RESULT_FILE, result)
}

/// The command's main process, if the supervisor started it.
pub fn read_command(dir: &Path) -> Option<super::CommandProcess> {
    serde_json::from_slice(&std::fs::read(dir.join(COMMAND_FILE)).ok()?).ok()
}

/// Marks that the supervisor had its go-ahead (the output file, made before anything else).
pub(crate) fn mark_went_ahead(dir: &Path) -> std::io::Result<()> {
    create_private_dir(dir)?;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(OUTPUT_FILE))
        .map(drop)
}

/// True once the supervisor had its go-ahead: an attempt lost without it never ran anything
/// (unless someone removed its folder).
pub fn went_ahead(dir: &Path) -> bool {
    dir.join(OUTPUT_FILE).exists()
}

/// Makes `dir` (and its parents) readable by its owner only, as attempt output may be private.
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The result in `dir`, if the supervisor wrote one.
pub fn read_result(dir: &Path) -> Option<AttemptResult> {
    let text = std::fs::read(dir.join(RESULT_FILE)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// The output in `dir` (empty if there is none).
pub fn read_output(dir: &Path) -> String {
    std::fs::read(dir.join(OUTPUT_FILE))
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}
