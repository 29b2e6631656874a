//! The DAG file format, field by field, as serde and JSON Schema types.
//!
//! These types say what a DAG file may contain; [`crate::dag`] turns them into a checked
//! [`crate::Dag`]. The JSON Schema published as `docs/dag.schema.json` is generated from them, so
//! the schema and the parser cannot drift apart.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::tasks::TaskKind;
use crate::timetable::DstPolicy;

/// One DAG file. `T` is the task type: [`TaskSpec`] for the schema, anything for the header
/// alone (tasks are read one by one so that each task's errors are reported).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "ferry DAG",
    description = "A ferry DAG file (one DAG per file). See docs/dags.md."
)]
pub struct DagSpec<T> {
    /// The DAG's id: letters, digits, `_`, `-` and `.`. Defaults to the file name without `.yaml`.
    pub id: Option<String>,
    /// What the DAG does, for people.
    pub description: Option<String>,
    /// Who answers for it (a team or person). Required under `dags/user-facing/`.
    pub owner: Option<String>,
    /// Free labels for filtering.
    #[serde(default)]
    pub tags: Vec<String>,
    /// When runs are due: five-field cron (`30 2 * * *`) or `@hourly`, `@daily`, `@weekly`,
    /// `@monthly`, `@yearly`. Leave out for a DAG that only runs when triggered.
    pub schedule: Option<String>,
    /// IANA time zone the schedule, dates and deadlines are read in. Default `UTC`.
    pub timezone: Option<String>,
    /// First data interval to run: `2026-01-01` or `2026-01-01T06:00` in the DAG's time zone.
    /// Required with a `schedule`.
    pub start_date: Option<String>,
    /// No run starts after this date.
    pub end_date: Option<String>,
    /// Run every interval missed since `start_date` (true) or only the latest (false, default).
    #[serde(default)]
    pub catchup: bool,
    /// How many runs of this DAG may be active at once. Default 1.
    pub max_active_runs: Option<u32>,
    /// How many tasks of this DAG may execute at once, across all its runs (as in Airflow).
    /// Default 16.
    pub max_active_tasks: Option<u32>,
    /// A run still going this long after it started fails: its running tasks are stopped and
    /// the rest fail, without retries.
    pub dagrun_timeout: Option<Duration>,
    /// What to do with scheduled times that daylight saving skips or repeats.
    pub dst: Option<DstPolicy>,
    /// Run parameters and their defaults; a manual run may override them.
    /// Templates read them as `{{ params.name }}`.
    #[serde(default)]
    pub params: BTreeMap<String, serde_json::Value>,
    /// Settings every task takes unless it sets its own.
    #[serde(default)]
    pub defaults: TaskSettings,
    /// When the run's data must be ready. Required under `dags/user-facing/`.
    pub sla: Option<SlaSpec>,
    /// Alert channels (defined in ferry's configuration) per event.
    #[serde(default)]
    pub alerts: AlertsSpec,
    /// The tasks.
    pub tasks: Vec<T>,
}

/// A task: its identity, its settings, `type`, and the fields of its type.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct TaskSpec {
    /// Id, description, dependencies.
    #[serde(flatten)]
    pub base: TaskBase,
    /// Retries, timeout, pool, priority and trigger rule.
    #[serde(flatten)]
    pub settings: TaskSettings,
    /// `type` and the fields of that type.
    #[serde(flatten)]
    pub kind: TaskKind,
}

/// A task's identity and dependencies, whatever its type.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct TaskBase {
    /// The task's id, unique in the DAG: letters, digits, `_`, `-` and `.`.
    pub id: String,
    /// What the task does, for people.
    pub description: Option<String>,
    /// Ids of tasks that must end before this one starts (see `trigger_rule`).
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// A condition (templated), decided when the task's upstream tasks allow it to run:
    /// `true` runs it, `false` (or nothing) marks it `skipped` without running it, and its
    /// downstream tasks follow their trigger rules. Example: `"{{ env == 'prod' }}"`.
    #[serde(default)]
    pub run_if: Option<String>,
}

/// Settings a task may set, and `defaults:` may set for all tasks.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskSettings {
    /// When the task runs, given its upstream tasks' states. Default `all_success`.
    pub trigger_rule: Option<TriggerRule>,
    /// How many times a failed attempt is retried. Default 0.
    pub retries: Option<u32>,
    /// Wait before a retry. Default 5m.
    pub retry_delay: Option<Duration>,
    /// Double the wait after each failed attempt (with jitter). Default false.
    pub retry_exponential_backoff: Option<bool>,
    /// Cap on the wait between attempts with backoff. Default 1h.
    pub max_retry_delay: Option<Duration>,
    /// An attempt running longer than this is stopped and counts as failed.
    pub timeout: Option<Duration>,
    /// Named pool whose slots limit how many such tasks run at once. Default `default`.
    pub pool: Option<String>,
    /// Higher runs first when tasks wait for a slot. Default 1.
    pub priority: Option<i32>,
}

/// Airflow's trigger rules: when a task runs, given its upstream tasks' states.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TriggerRule {
    /// Every upstream task succeeded (the default).
    #[default]
    AllSuccess,
    /// Every upstream task ended, whatever its state.
    AllDone,
    /// Every upstream task failed.
    AllFailed,
    /// At least one upstream task succeeded (runs as soon as one does).
    OneSuccess,
    /// At least one upstream task failed (runs as soon as one does).
    OneFailed,
    /// No upstream task failed (succeeded or skipped).
    NoneFailed,
    /// No upstream task failed and at least one succeeded (all skipped: skipped).
    NoneFailedMinOneSuccess,
    /// Every upstream task ended and none was skipped (failures allowed).
    NoneSkipped,
    /// At least one upstream task succeeded or failed (runs as soon as one does).
    OneDone,
    /// Runs at once, without waiting for its upstream tasks (they only order the graph).
    Always,
}

/// When a run's data must be ready.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlaSpec {
    /// Wall-clock `HH:MM` in the DAG's time zone: the run must succeed by the first such time
    /// after it is due (a run due at 02:00 with deadline `08:00` must end by 08:00 that morning).
    pub deadline: Option<String>,
    /// Or: the run must succeed within this long of being due (`4h`).
    pub within: Option<Duration>,
    /// Raise `on_late` alerts this long before the deadline if the run is not done.
    pub warn_before: Option<Duration>,
}

/// Alert channels per event; each name must be a channel in ferry's configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertsSpec {
    /// A task failed for good (no retries left).
    #[serde(default)]
    pub on_failure: Vec<String>,
    /// A task failed and will be retried.
    #[serde(default)]
    pub on_retry: Vec<String>,
    /// The run is predicted to miss its deadline, or is within `warn_before` of it.
    #[serde(default)]
    pub on_late: Vec<String>,
    /// The run missed its deadline.
    #[serde(default)]
    pub on_sla_miss: Vec<String>,
}

impl AlertsSpec {
    /// Each event's name and channels.
    pub fn events(&self) -> [(&'static str, &[String]); 4] {
        [
            ("on_failure", &self.on_failure),
            ("on_retry", &self.on_retry),
            ("on_late", &self.on_late),
            ("on_sla_miss", &self.on_sla_miss),
        ]
    }
}
