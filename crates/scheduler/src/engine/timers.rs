//! Timers: retry delays, `wait_for_dag` deferrals and run timeouts that come due.

use super::*;

impl Engine {
    /// A `wait_for_dag` attempt: success when the other DAG's run for the same interval has
    /// succeeded; otherwise deferred (no slot held) until the next poll, failed at its timeout.
    pub(super) async fn check_wait(
        &mut self,
        pk: i64,
        index: usize,
        lease: i64,
        attempt_id: i64,
        prepared: &Prepared,
    ) -> Result<(), EngineError> {
        let Work::WaitForDag { dag, task, poll } = &prepared.work else {
            return Ok(());
        };
        let Some(active) = self.runs.get(&pk) else {
            return Ok(());
        };
        let record = active.tasks[index].clone();
        let logical = active.run.logical_date;
        let timeout = active.task(index).and_then(|t| t.timeout);
        let target = self.store.run_for_interval(dag, logical).await?;
        let done = match (&target, task) {
            (Some(run), None) => run.state()? == RunState::Success,
            (Some(run), Some(task_id)) => {
                self.store.task_instances(run.id).await?.iter().any(|t| {
                    &t.task_id == task_id && t.state().is_ok_and(|s| s == TaskState::Success)
                })
            }
            (None, _) => false,
        };
        let now = millis(self.clock.now());
        let since = self
            .deferred_since
            .get(&(pk, index))
            .copied()
            .unwrap_or(now);
        let from = record.state()?;
        if done {
            self.deferred_since.remove(&(pk, index));
            self.store
                .finish_attempt(
                    attempt_id,
                    "success",
                    None,
                    &format!("DAG {dag} has succeeded for this interval\n"),
                    now,
                )
                .await?;
            if self
                .move_task(
                    pk,
                    index,
                    from,
                    TaskState::Success,
                    Some(lease),
                    None,
                    None,
                    "executor",
                    &format!("{dag} succeeded"),
                )
                .await?
            {
                let downstream = self.downstream_indexes(pk, index);
                self.advance(pk, downstream).await?;
            }
            return Ok(());
        }
        let timed_out = timeout
            .is_some_and(|t| now - since >= i64::try_from(t.0.as_millis()).unwrap_or(i64::MAX));
        if timed_out {
            self.deferred_since.remove(&(pk, index));
            let reason = format!("gave up waiting for DAG {dag}");
            self.store
                .finish_attempt(attempt_id, "failed", None, &format!("{reason}\n"), now)
                .await?;
            if self
                .move_task(
                    pk,
                    index,
                    from,
                    TaskState::Failed,
                    Some(lease),
                    None,
                    None,
                    "timeout",
                    &reason,
                )
                .await?
            {
                let downstream = self.downstream_indexes(pk, index);
                self.advance(pk, downstream).await?;
            }
            return Ok(());
        }
        let next = now + i64::try_from(poll.as_millis()).unwrap_or(60_000);
        let next = timeout.map_or(next, |t| {
            next.min(since + i64::try_from(t.0.as_millis()).unwrap_or(i64::MAX / 2))
        });
        if from == TaskState::Running {
            self.move_task(
                pk,
                index,
                from,
                TaskState::Deferred,
                Some(lease),
                Some(next),
                None,
                "executor",
                &format!("waiting for DAG {dag}"),
            )
            .await?;
        }
        self.timers
            .push(Reverse((next, TimerKind::Deferral, pk, index)));
        Ok(())
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
                            from,
                            to,
                            None,
                            None,
                            None,
                            "retry",
                            "retry delay passed",
                        )
                        .await?;
                    if moved {
                        self.push_ready(pk, index, record.priority);
                    }
                }
                (TimerKind::Deferral, TaskState::Deferred) => {
                    let run = active.run.clone();
                    let dag = active.dag.clone();
                    if let Some(task) = dag.dag.task(&record.task_id)
                        && let Ok(prepared) = prepare(&dag.dag, task, &run, &self.templates)
                    {
                        let attempt = self
                            .store
                            .attempt(&run.run_id, &record.task_id, Some(record.try_number))
                            .await?;
                        if let Some(attempt) = attempt {
                            self.check_wait(pk, index, record.lease, attempt.id, &prepared)
                                .await?;
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}
