//! Timers: retry delays, `wait_for_dag` deferrals and run timeouts that come due.

use super::tasks::ended_now;
use super::*;

impl Engine {
    /// A `wait_for_dag` attempt: succeeded when the other DAG's run for the same interval (or
    /// the named task of it) has succeeded; failed, without retries, at the task's timeout;
    /// deferred until the next poll otherwise.
    pub(super) async fn check_wait(
        &mut self,
        pk: i64,
        index: usize,
        lease: i64,
        attempt_id: i64,
        prepared: &Prepared,
    ) -> Result<(), EngineError> {
        let Work::WaitForDag {
            dag,
            task,
            poll,
            fail_fast,
        } = &prepared.work
        else {
            return Ok(());
        };
        let Some(active) = self.runs.get(&pk) else {
            return Ok(());
        };
        let logical = active.run.logical_date;
        // The wait began when its attempt was claimed (kept in the store, so a restart does not
        // restart the clock).
        let began = active.tasks[index].started_at;
        let timeout = active
            .task(index)
            .and_then(|t| t.timeout)
            .map_or(ferry_dag::tasks::DEFAULT_WAIT_TIMEOUT, |t| t.0);
        let target = self.store.run_for_interval(dag, logical).await?;
        // What it waits for: succeeded, or ended without success (it will not succeed
        // unless an operator reruns it).
        let (done, failed) = match (&target, task) {
            (Some(run), None) => {
                let state = run.state()?;
                (state == RunState::Success, state == RunState::Failed)
            }
            (Some(run), Some(task_id)) => {
                let tasks = self.store.task_instances(run.id).await?;
                let state = tasks
                    .iter()
                    .find(|t| &t.task_id == task_id)
                    .and_then(|t| t.state().ok());
                (
                    state == Some(TaskState::Success),
                    state.is_some_and(|s| s.is_terminal() && s != TaskState::Success),
                )
            }
            (None, _) => (false, false),
        };
        let now = millis(self.clock.now());
        let since = began.unwrap_or(now);
        let timeout_ms = Some(i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX / 2));
        let (outcome, log) = if done {
            let what = task.as_deref().map_or_else(
                || format!("DAG {dag}"),
                |t| format!("task {t} of DAG {dag}"),
            );
            (
                Outcome::Succeeded { code: None },
                format!("{what} has succeeded for this interval\n"),
            )
        } else if failed && *fail_fast {
            let what = task.as_deref().map_or_else(
                || format!("the run of DAG {dag}"),
                |t| format!("task {t} of DAG {dag}"),
            );
            gave_up(format!(
                "{what} for this interval ended without success (on_failed: fail; rerun it, then clear this task)"
            ))
        } else if timeout_ms.is_some_and(|limit| now - since >= limit) {
            gave_up(format!("gave up waiting for DAG {dag}"))
        } else {
            let mut next = i64::try_from(poll.as_millis()).unwrap_or(60_000);
            if let Some(limit) = timeout_ms {
                next = next.min(since + limit - now).max(0);
            }
            let recheck_after = std::time::Duration::from_millis(u64::try_from(next).unwrap_or(0));
            (
                Outcome::Deferred {
                    recheck_after,
                    reason: format!("waiting for DAG {dag}"),
                },
                String::new(),
            )
        };
        self.conclude(pk, index, lease, attempt_id, ended_now(outcome, log))
            .await
    }

    /// When a run ends, the deferred tasks waiting for its DAG look again at once.
    pub(super) async fn wake_waiters(&mut self, finished: &RunRecord) -> Result<(), EngineError> {
        let waiting: Vec<(i64, usize)> = self
            .runs
            .iter()
            .flat_map(|(pk, active)| {
                active
                    .tasks
                    .iter()
                    .enumerate()
                    .filter_map(move |(index, task)| {
                        let waits = active
                            .dag
                            .dag
                            .task(&task.task_id)
                            .and_then(|t| t.kind.waits_for())
                            .is_some_and(|w| w.dag == finished.dag_id);
                        (waits
                            && task.state().is_ok_and(|s| s == TaskState::Deferred)
                            && active.run.logical_date == finished.logical_date)
                            .then_some((*pk, index))
                    })
            })
            .collect();
        let now = millis(self.clock.now());
        for (pk, index) in waiting {
            self.timers
                .push(Reverse((now, TimerKind::Deferral, pk, index)));
        }
        Ok(())
    }

    pub(super) async fn fire_timers(&mut self) -> Result<(), EngineError> {
        let now = millis(self.clock.now());
        while let Some(Reverse((at, kind, pk, index))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if kind == TimerKind::RunTimeout {
                self.time_out_run(pk).await?;
                continue;
            }
            let Some(active) = self.runs.get(&pk) else {
                continue;
            };
            let record = active.tasks[index].clone();
            match (kind, record.state()?) {
                (TimerKind::Retry, TaskState::UpForRetry) => {
                    let from = TaskState::UpForRetry;
                    let to = TaskState::Queued;
                    let moved = self
                        .move_task(
                            pk,
                            index,
                            Transition::new(from, to, "retry", "retry delay passed"),
                        )
                        .await?;
                    if moved {
                        self.push_ready(pk, index, record.priority);
                    }
                }
                (TimerKind::Requeue, TaskState::Queued) => {
                    self.push_ready(pk, index, record.priority);
                }
                (TimerKind::Deferral, TaskState::Deferred) => {
                    let run = active.run.clone();
                    let dag = active.dag.clone();
                    let context = self.attempt_context(pk, record.try_number);
                    if let Some(task) = dag.dag.task(&record.task_id)
                        && let Ok(prepared) =
                            prepare(&dag.dag, task, &run, &self.templates, &context)
                    {
                        let attempt = self
                            .store
                            .attempt(&run.run_id, &record.task_id, Some(record.try_number))
                            .await?;
                        match (attempt, prepared.work) {
                            // A wait on something outside ferry: one look beside the loop.
                            (Some(attempt), Work::Connector(work))
                                if !self.running.contains_key(&record.id) =>
                            {
                                let now = millis(self.clock.now());
                                let resume = super::tasks::Resume {
                                    resuming: false,
                                    job: None,
                                    elapsed: std::time::Duration::from_millis(
                                        u64::try_from(now - attempt.started_at).unwrap_or(0),
                                    ),
                                    stop_only: false,
                                };
                                self.relaunch_connector(
                                    &run,
                                    &record,
                                    &attempt,
                                    record.lease,
                                    work,
                                    prepared.redactor,
                                    resume,
                                    None,
                                );
                            }
                            (Some(attempt), work) => {
                                let prepared = Prepared {
                                    work,
                                    shown: prepared.shown,
                                    redactor: prepared.redactor,
                                };
                                self.check_wait(pk, index, record.lease, attempt.id, &prepared)
                                    .await?;
                            }
                            (None, _) => {}
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// A wait that ends for good (no retry), and its log line.
fn gave_up(reason: String) -> (Outcome, String) {
    let log = format!("{reason}\n");
    let outcome = Outcome::Failed {
        retryable: false,
        retry_after: None,
        code: None,
        reason,
    };
    (outcome, log)
}
