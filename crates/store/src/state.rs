//! The lifecycles of DAG runs and task instances as explicit state machines: each state, and
//! the table of legal transitions. The store refuses any other transition, except an
//! operator's interventions (see `Store::clear_tasks` and `Store::mark_task`), which may move a
//! task from any state and fence off its running attempt.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A DAG run's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Created, waiting for a slot under `max_active_runs`.
    Queued,
    /// Its tasks are being scheduled.
    Running,
    /// Every leaf task succeeded or was skipped.
    Success,
    /// A task failed for good, or the run timed out.
    Failed,
}

/// A task instance's state (Airflow's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for its upstream tasks.
    Pending,
    /// Ready; waiting for an execution slot.
    Queued,
    /// An attempt is executing.
    Running,
    /// Waiting for something outside (another DAG's run) without holding a slot.
    Deferred,
    /// Failed; will be queued again after its retry delay.
    UpForRetry,
    /// Done.
    Success,
    /// Failed with no retries left.
    Failed,
    /// An upstream task failed, so this one will not run.
    UpstreamFailed,
    /// Its trigger rule can no longer be met, so it will not run.
    Skipped,
}

impl RunState {
    /// Every state.
    pub const ALL: [RunState; 4] = [
        RunState::Queued,
        RunState::Running,
        RunState::Success,
        RunState::Failed,
    ];

    /// The state as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Success => "success",
            RunState::Failed => "failed",
        }
    }

    /// True once the run has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, RunState::Success | RunState::Failed)
    }

    /// Whether `self → to` is a legal transition.
    pub fn can_become(self, to: RunState) -> bool {
        use RunState::*;
        matches!(
            (self, to),
            (Queued, Running) | (Running, Success) | (Running, Failed) | (Queued, Failed)
                // An operator clearing tasks of an ended run queues it again.
                | (Success, Queued) | (Failed, Queued)
        )
    }
}

impl TaskState {
    /// Every state.
    pub const ALL: [TaskState; 9] = [
        TaskState::Pending,
        TaskState::Queued,
        TaskState::Running,
        TaskState::Deferred,
        TaskState::UpForRetry,
        TaskState::Success,
        TaskState::Failed,
        TaskState::UpstreamFailed,
        TaskState::Skipped,
    ];

    /// The state as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Queued => "queued",
            TaskState::Running => "running",
            TaskState::Deferred => "deferred",
            TaskState::UpForRetry => "up_for_retry",
            TaskState::Success => "success",
            TaskState::Failed => "failed",
            TaskState::UpstreamFailed => "upstream_failed",
            TaskState::Skipped => "skipped",
        }
    }

    /// True once the task will not change without an operator.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Success | TaskState::Failed | TaskState::UpstreamFailed | TaskState::Skipped
        )
    }

    /// Whether `self → to` is a legal transition.
    pub fn can_become(self, to: TaskState) -> bool {
        use TaskState::*;
        match (self, to) {
            // The scheduler: upstream tasks decided.
            (Pending, Queued | Skipped | UpstreamFailed) => true,
            // The executor claims a slot.
            (Queued, Running) => true,
            // An attempt ends.
            (Running, Success | Failed | UpForRetry | Deferred) => true,
            // A retry delay or a deferral poll has passed.
            (UpForRetry | Deferred, Queued) => true,
            // A deferral is resolved (the awaited run succeeded) or times out.
            (Deferred, Success | Failed) => true,
            // Run timeout or shutdown: whatever has not ended fails.
            (Pending | Queued | UpForRetry, Failed) => true,
            // An operator clears a task to run it again.
            (from, Pending) => from.is_terminal() || from == UpForRetry,
            _ => false,
        }
    }
}

/// A stored state name that ferry does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown state `{0}` in the database")]
pub struct UnknownState(pub String);

impl FromStr for RunState {
    type Err = UnknownState;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| UnknownState(text.to_string()))
    }
}

impl FromStr for TaskState {
    type Err = UnknownState;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| UnknownState(text.to_string()))
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole task table, written out: any change to the lifecycle must change this test.
    #[test]
    fn task_transition_table() {
        use TaskState::*;
        let legal = [
            (Pending, Queued),
            (Pending, Skipped),
            (Pending, UpstreamFailed),
            (Pending, Failed),
            (Queued, Running),
            (Queued, Failed),
            (Running, Success),
            (Running, Failed),
            (Running, UpForRetry),
            (Running, Deferred),
            (UpForRetry, Queued),
            (UpForRetry, Failed),
            (UpForRetry, Pending),
            (Deferred, Queued),
            (Deferred, Success),
            (Deferred, Failed),
            (Success, Pending),
            (Failed, Pending),
            (UpstreamFailed, Pending),
            (Skipped, Pending),
        ];
        for from in TaskState::ALL {
            for to in TaskState::ALL {
                assert_eq!(
                    from.can_become(to),
                    legal.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn run_transition_table() {
        use RunState::*;
        let legal = [
            (Queued, Running),
            (Queued, Failed),
            (Running, Success),
            (Running, Failed),
            (Success, Queued),
            (Failed, Queued),
        ];
        for from in RunState::ALL {
            for to in RunState::ALL {
                assert_eq!(
                    from.can_become(to),
                    legal.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for state in TaskState::ALL {
            assert_eq!(state.as_str().parse::<TaskState>(), Ok(state));
        }
        for state in RunState::ALL {
            assert_eq!(state.as_str().parse::<RunState>(), Ok(state));
        }
        assert!("paused".parse::<TaskState>().is_err());
    }
}
