//! Trigger rules: what a pending task should do, given its upstream tasks' states; and how a
//! run ends, given all its tasks' states. Pure functions, tested exhaustively.

use ferry_dag::spec::TriggerRule;
use ferry_store::TaskState;

/// What to do with a pending task now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Upstream tasks are still running: nothing yet.
    Wait,
    /// Ready to run.
    Queue,
    /// The rule can no longer be met, and nothing failed.
    Skip,
    /// The rule can no longer be met because something upstream failed.
    UpstreamFailed,
}

fn failed(state: TaskState) -> bool {
    matches!(state, TaskState::Failed | TaskState::UpstreamFailed)
}

/// The decision for a pending task whose upstream tasks are in `upstream`.
pub fn decide(rule: TriggerRule, upstream: &[TaskState]) -> Decision {
    let done = upstream.iter().all(|s| s.is_terminal());
    let any_failed = upstream.iter().any(|s| failed(*s));
    let any_success = upstream.contains(&TaskState::Success);
    let any_skipped = upstream.contains(&TaskState::Skipped);
    match rule {
        TriggerRule::AllSuccess => {
            if upstream.iter().all(|s| *s == TaskState::Success) {
                Decision::Queue
            } else if any_failed {
                Decision::UpstreamFailed
            } else if any_skipped {
                Decision::Skip
            } else {
                Decision::Wait
            }
        }
        TriggerRule::AllDone => {
            if done {
                Decision::Queue
            } else {
                Decision::Wait
            }
        }
        TriggerRule::AllFailed => {
            if upstream.iter().all(|s| failed(*s)) {
                Decision::Queue
            } else if upstream
                .iter()
                .any(|s| matches!(s, TaskState::Success | TaskState::Skipped))
            {
                Decision::Skip
            } else {
                Decision::Wait
            }
        }
        TriggerRule::OneSuccess => {
            if any_success || upstream.is_empty() {
                Decision::Queue
            } else if done && any_failed {
                Decision::UpstreamFailed
            } else if done {
                Decision::Skip
            } else {
                Decision::Wait
            }
        }
        TriggerRule::OneFailed => {
            if any_failed {
                Decision::Queue
            } else if done {
                Decision::Skip
            } else {
                Decision::Wait
            }
        }
        TriggerRule::NoneFailed => {
            if any_failed {
                Decision::UpstreamFailed
            } else if done {
                Decision::Queue
            } else {
                Decision::Wait
            }
        }
        TriggerRule::NoneFailedMinOneSuccess => {
            if any_failed {
                Decision::UpstreamFailed
            } else if !done {
                Decision::Wait
            } else if any_success || upstream.is_empty() {
                Decision::Queue
            } else {
                Decision::Skip
            }
        }
        TriggerRule::NoneSkipped => {
            if any_skipped {
                Decision::Skip
            } else if done {
                Decision::Queue
            } else {
                Decision::Wait
            }
        }
        TriggerRule::OneDone => {
            let one_done = upstream
                .iter()
                .any(|s| matches!(s, TaskState::Success | TaskState::Failed));
            if one_done || upstream.is_empty() {
                Decision::Queue
            } else if done {
                Decision::Skip
            } else {
                Decision::Wait
            }
        }
        TriggerRule::Always => Decision::Queue,
    }
}

/// How a run whose tasks are all in a terminal state ended: failed if any task failed or could
/// not run because of a failure, success otherwise. `None` while some task has not ended.
pub fn run_outcome(tasks: &[TaskState]) -> Option<bool> {
    if !tasks.iter().all(|s| s.is_terminal()) {
        return None;
    }
    Some(!tasks.iter().any(|s| failed(*s)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskState::*;

    #[test]
    fn all_success() {
        assert_eq!(decide(TriggerRule::AllSuccess, &[]), Decision::Queue);
        assert_eq!(
            decide(TriggerRule::AllSuccess, &[Success, Success]),
            Decision::Queue
        );
        assert_eq!(
            decide(TriggerRule::AllSuccess, &[Success, Running]),
            Decision::Wait
        );
        assert_eq!(
            decide(TriggerRule::AllSuccess, &[Failed, Running]),
            Decision::UpstreamFailed
        );
        assert_eq!(
            decide(TriggerRule::AllSuccess, &[UpstreamFailed, Success]),
            Decision::UpstreamFailed
        );
        assert_eq!(
            decide(TriggerRule::AllSuccess, &[Skipped, Success]),
            Decision::Skip
        );
    }

    #[test]
    fn all_done_runs_after_anything() {
        assert_eq!(
            decide(TriggerRule::AllDone, &[Failed, Success, Skipped]),
            Decision::Queue
        );
        assert_eq!(
            decide(TriggerRule::AllDone, &[Failed, UpForRetry]),
            Decision::Wait
        );
    }

    #[test]
    fn all_failed() {
        assert_eq!(
            decide(TriggerRule::AllFailed, &[Failed, UpstreamFailed]),
            Decision::Queue
        );
        assert_eq!(
            decide(TriggerRule::AllFailed, &[Failed, Success]),
            Decision::Skip
        );
        assert_eq!(
            decide(TriggerRule::AllFailed, &[Failed, Running]),
            Decision::Wait
        );
    }

    #[test]
    fn one_success_and_one_failed_fire_early() {
        assert_eq!(
            decide(TriggerRule::OneSuccess, &[Success, Running]),
            Decision::Queue
        );
        assert_eq!(
            decide(TriggerRule::OneSuccess, &[Failed, Skipped]),
            Decision::UpstreamFailed
        );
        assert_eq!(
            decide(TriggerRule::OneSuccess, &[Skipped, Skipped]),
            Decision::Skip
        );
        assert_eq!(
            decide(TriggerRule::OneFailed, &[Failed, Running]),
            Decision::Queue
        );
        assert_eq!(
            decide(TriggerRule::OneFailed, &[Success, Success]),
            Decision::Skip
        );
        assert_eq!(
            decide(TriggerRule::OneFailed, &[Success, Queued]),
            Decision::Wait
        );
    }

    #[test]
    fn none_failed() {
        assert_eq!(
            decide(TriggerRule::NoneFailed, &[Success, Skipped]),
            Decision::Queue
        );
        assert_eq!(
            decide(TriggerRule::NoneFailed, &[Success, Failed]),
            Decision::UpstreamFailed
        );
        assert_eq!(
            decide(TriggerRule::NoneFailed, &[Success, Deferred]),
            Decision::Wait
        );
    }

    #[test]
    fn runs_fail_when_anything_failed() {
        assert_eq!(run_outcome(&[Success, Skipped]), Some(true));
        assert_eq!(run_outcome(&[Success, Failed]), Some(false));
        assert_eq!(run_outcome(&[Success, UpstreamFailed]), Some(false));
        assert_eq!(run_outcome(&[Success, Running]), None);
    }

    #[test]
    fn none_failed_min_one_success() {
        let rule = TriggerRule::NoneFailedMinOneSuccess;
        assert_eq!(decide(rule, &[Success, Skipped]), Decision::Queue);
        assert_eq!(decide(rule, &[Skipped, Skipped]), Decision::Skip);
        assert_eq!(decide(rule, &[Success, Failed]), Decision::UpstreamFailed);
        assert_eq!(decide(rule, &[Success, Running]), Decision::Wait);
        assert_eq!(decide(rule, &[]), Decision::Queue);
    }

    #[test]
    fn none_skipped() {
        let rule = TriggerRule::NoneSkipped;
        assert_eq!(decide(rule, &[Success, Failed]), Decision::Queue);
        assert_eq!(decide(rule, &[Success, Skipped]), Decision::Skip);
        assert_eq!(decide(rule, &[Running, Skipped]), Decision::Skip);
        assert_eq!(decide(rule, &[Success, Running]), Decision::Wait);
    }

    #[test]
    fn one_done() {
        let rule = TriggerRule::OneDone;
        assert_eq!(decide(rule, &[Failed, Running]), Decision::Queue);
        assert_eq!(decide(rule, &[Success, Pending]), Decision::Queue);
        assert_eq!(decide(rule, &[Skipped, Running]), Decision::Wait);
        assert_eq!(decide(rule, &[Skipped, UpstreamFailed]), Decision::Skip);
    }

    #[test]
    fn always() {
        for upstream in [&[Running][..], &[Failed, Pending], &[]] {
            assert_eq!(decide(TriggerRule::Always, upstream), Decision::Queue);
        }
    }
}
