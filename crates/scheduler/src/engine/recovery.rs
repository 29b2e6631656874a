//! Recovery: attempts whose worker died (killed daemon, lost node) are found by heartbeat,
//! their orphaned processes stopped, and they are retried or failed by their policy.

use super::*;

impl Engine {
    /// Attempts whose worker is gone: on start-up, those of dead processes on this host (and
    /// any whose heartbeat is older than the timeout); later, only the latter. Their orphaned
    /// processes are stopped, then they are retried or failed by their policy.
    pub(super) async fn recover_lost_attempts(
        &mut self,
        starting: bool,
    ) -> Result<(), EngineError> {
        let now = self.clock.now();
        let timeout = chrono::Duration::from_std(self.config.heartbeat_timeout).unwrap_or_default();
        let mut lost = self.store.stale_running(millis(now - timeout)).await?;
        if starting {
            let all = self.store.stale_running(millis(now) + 1).await?;
            lost.extend(
                all.into_iter()
                    .filter(|t| t.worker.as_deref().is_some_and(worker_is_dead_here)),
            );
            lost.sort_by_key(|t| t.id);
            lost.dedup_by_key(|t| t.id);
        }
        for task in lost {
            if task.worker.as_deref() == Some(self.config.worker.as_str()) {
                continue;
            }
            if let Some(pgid) = task
                .external_job_id
                .as_deref()
                .and_then(|j| j.strip_prefix("pgid:"))
                .and_then(|p| p.parse::<u32>().ok())
            {
                let _ = signal_group(pgid, GroupSignal::SIGKILL);
            }
            let run = self.store.run_of(&task).await?;
            let can_retry = task.try_number < task.max_tries;
            let (to, ready_at) = if can_retry {
                (TaskState::UpForRetry, Some(millis(now)))
            } else {
                (TaskState::Failed, None)
            };
            let detail = format!(
                "worker {} stopped answering",
                task.worker.as_deref().unwrap_or("?")
            );
            let change = TaskChange {
                id: task.id,
                from: TaskState::Running,
                to,
                lease: Some(task.lease),
                ready_at,
                exit_code: None,
                at: millis(now),
                cause: "heartbeat lost",
                detail: &detail,
            };
            if self.store.transition_task(&run, &task, &change).await? {
                if let Some(attempt) = self
                    .store
                    .attempt(&run.run_id, &task.task_id, Some(task.try_number))
                    .await?
                {
                    self.store
                        .finish_attempt(
                            attempt.id,
                            "lost",
                            None,
                            &format!("{}[ferry] {detail}\n", attempt.log),
                            millis(now),
                        )
                        .await?;
                }
                self.report(
                    &run,
                    Some(&task.task_id),
                    task.try_number,
                    to.as_str(),
                    &detail,
                );
                // An active run reloads the task from the store.
                if let Some(active) = self.runs.remove(&run.id) {
                    self.activate(active.run).await?;
                }
            }
        }
        Ok(())
    }
}
