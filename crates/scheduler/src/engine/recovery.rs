//! Recovery: running attempts that this engine does not watch (left by an engine that stopped
//! or died, or by a node that stopped answering) are reattached to their supervisor if it still
//! runs, concluded with the result their supervisor wrote if it has ended, and otherwise
//! declared lost: what they left running is stopped, and they are retried after their retry
//! delay (or failed) by their policy.

use ferry_executor::supervisor::{Supervised, SupervisorId, stop_remaining};

use super::*;

/// What became of a running attempt that no one watched.
enum Found {
    /// Its supervisor still runs: watch it again.
    Running(SupervisorId),
    /// Its supervisor ended and wrote the result.
    Ended(AttemptEnd),
    /// Nothing can finish it.
    Lost(AttemptEnd),
}

impl Engine {
    /// Looks at running attempts this engine does not watch: on start-up (and after the store
    /// came back) all of them, since this engine owns the store; later, only those whose
    /// worker's heartbeat is older than the timeout.
    pub(super) async fn recover_attempts(&mut self, starting: bool) -> Result<(), EngineError> {
        let now = self.clock.now();
        let timeout = chrono::Duration::from_std(self.config.heartbeat_timeout).unwrap_or_default();
        let before = if starting {
            i64::MAX
        } else {
            millis(now - timeout)
        };
        let running = self.store.stale_running(before).await?;
        for task in running {
            if self.running.contains_key(&task.id)
                || task.worker.as_deref() == Some(self.config.worker.as_str())
            {
                continue;
            }
            let run = self.store.run_of(&task).await?;
            let attempt = self.store.latest_attempt(task.id).await?;
            let Some(attempt) = attempt.filter(|a| a.try_number == task.try_number) else {
                continue;
            };
            let supervisor = attempt
                .supervisor
                .as_deref()
                .and_then(SupervisorId::from_json);
            let found = match supervisor {
                Some(id) if id.is_here() => match id.result() {
                    Some(result) => Found::Ended(AttemptEnd {
                        outcome: result.outcome,
                        log: self.config.secrets.redact(&id.output()),
                        ended_at: Some(result.ended_at),
                        lost: false,
                        interrupted: false,
                        dir: Some(id.dir.clone()),
                    }),
                    None if id.is_running() => Found::Running(id),
                    None => Found::Lost(self.lost(&task, Some(&id), &attempt.log).await),
                },
                // Another host's supervisor, whose node stopped answering: it cannot be
                // reached from here.
                Some(_) | None => Found::Lost(self.lost(&task, None, &attempt.log).await),
            };
            match found {
                Found::Running(id) => self.reattach(&run, &task, attempt.id, id).await?,
                Found::Ended(end) | Found::Lost(end) => {
                    let dir = end.dir.clone();
                    self.record_end_detached(&run, task.id, task.lease, attempt.id, &end)
                        .await?;
                    if let Some(dir) = dir {
                        ferry_executor::supervisor::remove_attempt_dir(&dir);
                    }
                    // An active run reloads the task from the store.
                    if let Some(active) = self.runs.remove(&run.id) {
                        self.activate(active.run).await?;
                    }
                }
            }
        }
        if starting {
            self.sweep_attempt_folders();
        }
        Ok(())
    }

    /// The end of an attempt that nothing can finish: what it left running here is stopped
    /// first, so that its retry never runs beside it.
    async fn lost(
        &self,
        task: &TaskInstanceRecord,
        supervisor: Option<&SupervisorId>,
        log_so_far: &str,
    ) -> AttemptEnd {
        let why = match supervisor {
            Some(id) => format!("its supervisor (pid {}) is gone without a result", id.pid),
            None => format!(
                "worker {} stopped answering",
                task.worker.as_deref().unwrap_or("?")
            ),
        };
        let mut log = log_so_far.to_string();
        if let Some(id) = supervisor {
            log.push_str(&self.config.secrets.redact(&id.output()));
            let marker = id.marker.clone();
            let stopped = tokio::task::spawn_blocking(move || {
                stop_remaining(None, &marker, crate::render::STOP_GRACE)
            })
            .await
            .unwrap_or_default();
            if stopped > 0 {
                log.push_str(&format!(
                    "[ferry] stopped {stopped} process(es) the lost attempt left running\n"
                ));
            }
        }
        log.push_str(&format!("[ferry] {why}\n"));
        AttemptEnd {
            outcome: Outcome::failed(None, why),
            log,
            ended_at: None,
            lost: true,
            interrupted: false,
            dir: supervisor.map(|id| id.dir.clone()),
        }
    }

    /// Takes over an attempt whose supervisor survived its engine: this worker heartbeats it
    /// and waits for its end.
    async fn reattach(
        &mut self,
        run: &RunRecord,
        task: &TaskInstanceRecord,
        attempt_id: i64,
        id: SupervisorId,
    ) -> Result<(), EngineError> {
        let now = millis(self.clock.now());
        let detail = format!("reattached to its supervisor (pid {})", id.pid);
        if !self
            .store
            .take_over(run, task, &self.config.worker, now, &detail)
            .await?
        {
            return Ok(());
        }
        self.report(
            run,
            Some(&task.task_id),
            task.try_number,
            "running",
            &detail,
        );
        let slot = Slot {
            run_pk: run.id,
            run_id: run.run_id.clone(),
            dag_id: run.dag_id.clone(),
            pool: task.pool.clone(),
            control: Control::Supervised(id.clone()),
            stop_reason: None,
        };
        let message = Finished {
            run_pk: run.id,
            task_instance: task.id,
            lease: task.lease,
            attempt_id,
            end: AttemptEnd::default(),
        };
        let redactor = self.config.secrets.clone();
        self.watch(task.id, slot, Supervised::reattach(id), message, redactor);
        Ok(())
    }

    /// Removes attempt folders that no attempt uses any more: their supervisor is not running
    /// and this engine does not watch them (left by an engine killed between starting a
    /// supervisor and recording its claim, or before removing a recorded attempt's folder).
    fn sweep_attempt_folders(&self) {
        let in_use: HashSet<PathBuf> = self
            .running
            .values()
            .filter_map(|slot| match &slot.control {
                Control::Supervised(id) => Some(id.dir.clone()),
                Control::InProcess(_) => None,
            })
            .collect();
        let Ok(entries) = std::fs::read_dir(&self.config.attempts_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let alive = SupervisorId::in_folder(&path).is_some_and(|id| id.is_running());
            if !in_use.contains(&path) && !alive {
                ferry_executor::supervisor::remove_attempt_dir(&path);
            }
        }
    }
}
