//! An attempt's log as it stands: what its supervisor has written so far while it runs on this
//! machine, else what the store kept when it ended (secrets masked either way).

use ferry_executor::supervisor::SupervisorId;
use ferry_store::AttemptRecord;

/// The log of `attempt` so far.
pub fn log_so_far(attempt: &AttemptRecord) -> String {
    let live = attempt
        .supervisor
        .as_deref()
        .and_then(SupervisorId::from_json)
        .filter(|id| attempt.ended_at.is_none() && id.is_here());
    match live {
        Some(id) => id.output(),
        None => attempt.log.clone(),
    }
}
