//! Rows as the store returns them, and what callers pass to create them. Times are Unix
//! milliseconds (UTC); states are kept as text and parsed with [`crate::state`].

use serde::Serialize;
use sqlx::FromRow;

use crate::StoreError;
use crate::state::{RunState, TaskState};

/// A DAG run.
#[derive(Clone, Debug, PartialEq, Eq, FromRow, Serialize)]
pub struct RunRecord {
    /// Primary key.
    pub id: i64,
    /// The DAG.
    pub dag_id: String,
    /// Unique id (`scheduled__2026-11-24T17:00:00+00:00`).
    pub run_id: String,
    /// Start of the data interval.
    pub logical_date: i64,
    /// Start of the data interval.
    pub interval_start: i64,
    /// End of the data interval.
    pub interval_end: i64,
    /// `scheduled`, `manual` or `backfill`.
    pub run_type: String,
    /// Parameters (JSON object).
    pub conf: String,
    /// See [`RunState`].
    pub state: String,
    /// The DAG version it runs.
    pub dag_version_id: i64,
    /// Created.
    pub queued_at: i64,
    /// First started.
    pub started_at: Option<i64>,
    /// Ended.
    pub ended_at: Option<i64>,
}

impl RunRecord {
    /// The parsed state.
    pub fn state(&self) -> Result<RunState, StoreError> {
        self.state
            .parse()
            .map_err(|e: crate::state::UnknownState| StoreError::Unreadable(e.to_string()))
    }
}

/// A task of a run.
#[derive(Clone, Debug, PartialEq, Eq, FromRow, Serialize)]
pub struct TaskInstanceRecord {
    /// Primary key.
    pub id: i64,
    /// The run's primary key.
    pub run_pk: i64,
    /// The task's id in the DAG.
    pub task_id: String,
    /// See [`TaskState`].
    pub state: String,
    /// Attempts started so far.
    pub try_number: i64,
    /// Attempts allowed (retries + 1).
    pub max_tries: i64,
    /// Higher first.
    pub priority: i64,
    /// Pool whose slot it takes.
    pub pool: String,
    /// Not before this time.
    pub ready_at: Option<i64>,
    /// Last queued.
    pub queued_at: Option<i64>,
    /// Last attempt started.
    pub started_at: Option<i64>,
    /// Ended.
    pub ended_at: Option<i64>,
    /// Last sign of life of the running attempt.
    pub heartbeat_at: Option<i64>,
    /// Who runs it.
    pub worker: Option<String>,
    /// Fencing number of the current claim.
    pub lease: i64,
    /// Exit code of the last attempt.
    pub exit_code: Option<i64>,
    /// Id of the job started outside ferry (cloud tasks).
    pub external_job_id: Option<String>,
    /// Tries given back so far (attempts interrupted by ferry itself).
    pub free_tries: i64,
}

impl TaskInstanceRecord {
    /// The parsed state.
    pub fn state(&self) -> Result<TaskState, StoreError> {
        self.state
            .parse()
            .map_err(|e: crate::state::UnknownState| StoreError::Unreadable(e.to_string()))
    }
}

/// One attempt of a task.
#[derive(Clone, Debug, PartialEq, Eq, FromRow, Serialize)]
pub struct AttemptRecord {
    /// Primary key.
    pub id: i64,
    /// The task instance.
    pub task_instance_id: i64,
    /// 1 for the first attempt.
    pub try_number: i64,
    /// The fencing number it ran under.
    pub lease: i64,
    /// Who ran it.
    pub worker: String,
    /// The rendered command or request, secrets masked.
    pub rendered: String,
    /// Started.
    pub started_at: i64,
    /// Ended.
    pub ended_at: Option<i64>,
    /// `success`, `failed`, `timeout`, `deferred`, `lost`, ...
    pub outcome: Option<String>,
    /// Process exit code or HTTP status.
    pub exit_code: Option<i64>,
    /// Captured output (secrets masked).
    pub log: String,
    /// Who supervises a command attempt (JSON written by the engine), recorded before the
    /// command may start.
    pub supervisor: Option<String>,
    /// The job it started outside ferry (a Glue run id, an execution ARN, a BigQuery job id).
    pub external_job_id: Option<String>,
    /// Its figures (`rows_written`, `bytes_processed`): a JSON object.
    pub metrics: Option<String>,
}

/// One state change.
#[derive(Clone, Debug, PartialEq, Eq, FromRow, Serialize)]
pub struct EventRecord {
    /// Order.
    pub id: i64,
    /// When.
    pub at: i64,
    /// The DAG.
    pub dag_id: String,
    /// The run.
    pub run_id: String,
    /// The task, for task events.
    pub task_id: Option<String>,
    /// The attempt, for task events.
    pub try_number: Option<i64>,
    /// Previous state.
    pub from_state: Option<String>,
    /// New state.
    pub to_state: String,
    /// Why: `scheduler`, `executor`, `retry`, `timeout`, `operator`, `lost`, `interrupted`, `recovery`, ...
    pub cause: String,
    /// Details.
    pub detail: String,
    /// Who made the change, for an operator's intervention (OS user, API token).
    pub actor: Option<String>,
    /// Why, as the operator said (`--reason`).
    pub reason: Option<String>,
}

/// A run to create.
#[derive(Clone, Debug)]
pub struct NewRun<'a> {
    /// The DAG.
    pub dag_id: &'a str,
    /// Unique id.
    pub run_id: &'a str,
    /// Data interval start (the logical date).
    pub interval_start: i64,
    /// Data interval end.
    pub interval_end: i64,
    /// `scheduled`, `manual` or `backfill`.
    pub run_type: &'a str,
    /// Parameters (JSON object).
    pub conf: &'a str,
    /// The DAG version.
    pub dag_version_id: i64,
    /// Now.
    pub at: i64,
}

/// A task instance to create with its run.
#[derive(Clone, Debug)]
pub struct NewTaskInstance<'a> {
    /// The task's id.
    pub task_id: &'a str,
    /// Retries + 1.
    pub max_tries: i64,
    /// Higher first.
    pub priority: i64,
    /// Pool.
    pub pool: &'a str,
}

/// A DAG file's content to record as a version.
#[derive(Clone, Copy, Debug)]
pub struct NewDagVersion<'a> {
    /// The DAG.
    pub dag_id: &'a str,
    /// Hash of the file's text.
    pub content_hash: &'a str,
    /// The file's path.
    pub file: &'a str,
    /// The file's text.
    pub source: &'a str,
}
