//! Recovery: running attempts that this engine does not watch (left by an engine that stopped
//! or died, or by a node that stopped answering) are reattached to their supervisor if it still
//! runs, concluded with the result their supervisor wrote if it has ended, and otherwise
//! declared lost: what they left running is stopped, and they are retried after their retry
//! delay (or failed) by their policy.

use ferry_executor::supervisor::{Ended, Supervised, SupervisorId};

use super::tasks::supervised_end;
use super::*;

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
            let redactor = self.attempt_redactor(&run, &task).await?;
            let supervisor = attempt
                .supervisor
                .as_deref()
                .and_then(SupervisorId::from_json)
                .filter(SupervisorId::is_here);
            let end = match supervisor {
                Some(id) if id.result().is_none() && id.is_running() => {
                    self.reattach(&run, &task, attempt.id, id, redactor).await?;
                    continue;
                }
                Some(id) => {
                    let ended = match id.result() {
                        Some(result) => Ended::Finished {
                            result,
                            output: id.output(),
                        },
                        None => Ended::Lost {
                            reason: format!(
                                "its supervisor (pid {}) is gone without a result",
                                id.pid
                            ),
                            output: id.output(),
                        },
                    };
                    supervised_end(&id, ended, &redactor).await
                }
                // A request that ran in a dead engine, or an attempt of another machine whose
                // node stopped answering: nothing here can finish it.
                None => {
                    let why = format!(
                        "worker {} stopped answering",
                        task.worker.as_deref().unwrap_or("?")
                    );
                    AttemptEnd {
                        outcome: Outcome::failed(None, why.clone()),
                        log: format!("{}[ferry] {why}\n", attempt.log),
                        ended_at: None,
                        lost: true,
                        interrupted: false,
                        dir: None,
                    }
                }
            };
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
        if starting {
            self.sweep_attempt_folders();
        }
        Ok(())
    }

    /// The secrets an attempt of `task` may show: the engine's, and those of its environment,
    /// headers and URL as its DAG version renders them.
    async fn attempt_redactor(
        &mut self,
        run: &RunRecord,
        task: &TaskInstanceRecord,
    ) -> Result<Redactor, EngineError> {
        let Some(loaded) = self.version_of(run).await? else {
            return Ok(self.config.secrets.clone());
        };
        let Some(definition) = loaded.dag.task(&task.task_id) else {
            return Ok(self.config.secrets.clone());
        };
        let context = self.attempt_context(task.try_number);
        Ok(
            prepare(&loaded.dag, definition, run, &self.templates, &context).map_or_else(
                |_| self.config.secrets.clone(),
                |prepared| prepared.redactor,
            ),
        )
    }

    /// Takes over an attempt whose supervisor survived its engine: this worker heartbeats it
    /// and waits for its end.
    async fn reattach(
        &mut self,
        run: &RunRecord,
        task: &TaskInstanceRecord,
        attempt_id: i64,
        id: SupervisorId,
        redactor: Redactor,
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
