//! Recovery: running attempts that this engine does not watch (left by an engine that stopped
//! or died, or by a node that stopped answering) are reattached to their supervisor if it still
//! runs, concluded with the result their supervisor wrote if it has ended, and otherwise
//! declared lost: what they left running is stopped, and they are retried after their retry
//! delay (or failed) by their policy.

use ferry_executor::supervisor::{Supervised, SupervisorId};

use ferry_executor::connector::ConnectorWork;

use super::tasks::ended_now;
use super::*;

impl Engine {
    /// Looks at running attempts this engine does not watch: on start-up (and after the store
    /// came back) all of them, this engine's own included (one cut short by a store fault), since
    /// this engine owns the store; later, those whose worker's heartbeat is older than the
    /// timeout. A supervisor of this machine is watched again, whether it still runs, has ended
    /// or is gone (beside the loop: stopping what a lost one left takes seconds); one of another
    /// machine is left alone; an attempt without one is concluded here.
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
            let ours = task.worker.as_deref() == Some(self.config.worker.as_str());
            if self.running.contains_key(&task.id) || (ours && !starting) {
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
            // Work waiting on a job outside ferry (a Glue run, an execution): the job is not
            // tied to the engine that died, so this engine waits on it again.
            if supervisor.is_none() && self.resume_external(&run, &task, &attempt).await? {
                if let Some(active) = self.runs.remove(&run.id) {
                    self.activate(active.run).await?;
                }
                continue;
            }
            let end = match supervisor {
                Some(id) if id.is_here() => {
                    let redactor = self.attempt_redactor(&run, &task).await?;
                    self.reattach(&run, &task, attempt.id, id, redactor).await?;
                    continue;
                }
                Some(id) if !id.rebooted_since() => {
                    // Another machine's supervisor: whether it still runs cannot be seen from
                    // here, and retrying it could run its command twice.
                    if self.foreign.insert(task.id) {
                        warn(&format!(
                            "task {} of run {} runs under a supervisor on {} (pid {}), which this machine cannot reach: it is left running; start ferry on {} to record it",
                            task.task_id, run.run_id, id.host, id.pid, id.host
                        ));
                    }
                    continue;
                }
                // This engine's own attempt without a supervisor (a `noop` or `wait_for_dag`
                // cut short by a store fault after its claim): nothing outside ran.
                None if ours => {
                    let mut end = ended_now(
                        Outcome::failed(None, "cut short by a store fault"),
                        attempt.log.clone(),
                    );
                    end.interrupt("cut short by a store fault before it did anything; this try does not count");
                    end
                }
                // A request that ran in a dead engine, a supervisor that died with an earlier
                // boot of this machine, or an attempt of the first release (which recorded
                // only its process group): nothing can finish it.
                other => {
                    if other.is_none()
                        && let Some(group) = task
                            .external_job_id
                            .as_deref()
                            .and_then(|job| job.strip_prefix("pgid:"))
                            .and_then(|pgid| pgid.parse::<u32>().ok())
                    {
                        ferry_executor::supervisor::kill_recorded_group(group);
                    }
                    let why = match &other {
                        Some(id) => format!(
                            "its supervisor (pid {} on {}) died with an earlier boot of this machine",
                            id.pid, id.host
                        ),
                        None => format!(
                            "worker {} stopped answering",
                            task.worker.as_deref().unwrap_or("?")
                        ),
                    };
                    AttemptEnd {
                        outcome: Outcome::failed(None, why.clone()),
                        log: format!("{}[ferry] {why}\n", attempt.log),
                        ended_at: None,
                        lost: true,
                        interrupted: false,
                        cleared: false,
                        detached: false,
                        dir: other.map(|id| id.dir),
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
        // Before any folder is swept: a fenced attempt's supervisor is watched from here on.
        self.watch_fenced_attempts().await?;
        if starting {
            self.sweep_attempt_folders();
        }
        Ok(())
    }

    /// Attempts an operator fenced off (their task was cleared or marked while they ran) that
    /// no slot of this engine holds, left by a `ferry tasks clear` while this engine was down or
    /// busy: a supervisor of this machine is stopped and watched until it ends, and its task
    /// waits for it (the slot is keyed by the task); one of another machine holds its task back
    /// until that machine's ferry records it; one without a supervisor ran inside an engine that
    /// is gone, so nothing of it runs.
    pub(super) async fn watch_fenced_attempts(&mut self) -> Result<(), EngineError> {
        let mut elsewhere = HashSet::new();
        for (attempt, task) in self.store.fenced_attempts().await? {
            if self
                .running
                .get(&task.id)
                .is_some_and(|slot| slot.lease == attempt.lease)
            {
                continue;
            }
            let supervisor = attempt
                .supervisor
                .as_deref()
                .and_then(SupervisorId::from_json);
            match supervisor {
                Some(id) if id.is_here() && !self.running.contains_key(&task.id) => {
                    let Some(run) = self.store.run_by_pk(task.run_pk).await? else {
                        continue;
                    };
                    if id.is_running() {
                        id.stop(false);
                    }
                    let slot = Slot {
                        run_pk: run.id,
                        lease: attempt.lease,
                        run_id: run.run_id.clone(),
                        dag_id: run.dag_id.clone(),
                        pool: task.pool.clone(),
                        control: Control::Supervised(id.clone()),
                        stop_reason: Some(StopReason::Intervention),
                    };
                    let message = Finished {
                        run_pk: run.id,
                        task_instance: task.id,
                        lease: attempt.lease,
                        attempt_id: attempt.id,
                        end: AttemptEnd::default(),
                    };
                    let redactor = self.config.secrets.clone();
                    self.watch(task.id, slot, Supervised::reattach(id), message, redactor);
                }
                Some(id) if id.is_here() => {
                    // A newer attempt holds the slot already (it cannot have started while this
                    // one was known): wait for it to end, then look again.
                }
                Some(id) if !id.rebooted_since() => {
                    if !self.fenced_elsewhere.contains(&task.id) {
                        warn(&format!(
                            "task {} was cleared while it ran under a supervisor on {} (pid {}), which this machine cannot stop: it runs again only once ferry on {} has recorded that attempt",
                            task.task_id, id.host, id.pid, id.host
                        ));
                    }
                    elsewhere.insert(task.id);
                }
                // A job outside ferry (a Glue run, an execution) that a shutdown left going:
                // this engine takes the attempt over only to stop the job.
                None if !self.running.contains_key(&task.id)
                    && self.stop_external(&attempt, &task).await? => {}
                // No supervisor (a request or wait of an engine that is gone), or one that died
                // with an earlier boot: nothing of it runs.
                _ => {
                    self.store
                        .finish_attempt(
                            attempt.id,
                            "cleared",
                            None,
                            &attempt.log,
                            millis(self.clock.now()),
                        )
                        .await?;
                }
            }
        }
        self.fenced_elsewhere = elsewhere;
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
        let context = self.attempt_context(run.id, task.try_number);
        Ok(
            prepare(&loaded.dag, definition, run, &self.templates, &context).map_or_else(
                |_| self.config.secrets.clone(),
                |prepared| prepared.redactor,
            ),
        )
    }

    /// The connector work of `task` at try `try_number` of `run`, rendered, if a restarted
    /// ferry takes such work over (see `Connectors::resumable`).
    async fn resumable_work(
        &mut self,
        run: &RunRecord,
        task: &TaskInstanceRecord,
        try_number: i64,
    ) -> Result<Option<(ConnectorWork, Redactor)>, EngineError> {
        let Some(connectors) = self.config.connectors.clone() else {
            return Ok(None);
        };
        let Some(loaded) = self.version_of(run).await? else {
            return Ok(None);
        };
        let Some(definition) = loaded.dag.task(&task.task_id) else {
            return Ok(None);
        };
        let context = self.attempt_context(run.id, try_number);
        let Ok(prepared) = prepare(&loaded.dag, definition, run, &self.templates, &context) else {
            return Ok(None);
        };
        Ok(match prepared.work {
            Work::Connector(work) if connectors.0.resumable(&work) => {
                Some((work, prepared.redactor))
            }
            _ => None,
        })
    }

    /// Stops the job outside ferry of a fenced attempt (its task was cleared or marked while no
    /// engine watched it): the attempt is run again with its stop already asked for, which
    /// stops the job by its recorded id or its token and starts nothing. False if the
    /// attempt's work is not such a job.
    async fn stop_external(
        &mut self,
        attempt: &ferry_store::AttemptRecord,
        task: &TaskInstanceRecord,
    ) -> Result<bool, EngineError> {
        let Some(run) = self.store.run_by_pk(task.run_pk).await? else {
            return Ok(false);
        };
        // A job to stop: a Glue run, an execution, a BigQuery query (a wait has none).
        let Some((work, redactor)) = self
            .resumable_work(&run, task, attempt.try_number)
            .await?
            .filter(|(work, _)| !matches!(work, ConnectorWork::Wait { .. }))
        else {
            return Ok(false);
        };
        let resume = super::tasks::Resume {
            resuming: true,
            job: attempt.external_job_id.clone(),
            elapsed: Duration::ZERO,
            stop_only: true,
        };
        let stop_reason = Some(StopReason::Intervention);
        let lease = attempt.lease;
        self.relaunch_connector(
            &run,
            task,
            attempt,
            lease,
            work,
            redactor,
            resume,
            stop_reason,
        );
        Ok(true)
    }

    /// Takes over an attempt that waits on a job outside ferry, left by an engine that died or
    /// shut down, and waits on the same job (found by the id the attempt recorded, or by its
    /// token). False if the attempt's work is not such a job.
    async fn resume_external(
        &mut self,
        run: &RunRecord,
        task: &TaskInstanceRecord,
        attempt: &ferry_store::AttemptRecord,
    ) -> Result<bool, EngineError> {
        let Some((work, redactor)) = self.resumable_work(run, task, task.try_number).await? else {
            return Ok(false);
        };
        let now = millis(self.clock.now());
        let detail = match &attempt.external_job_id {
            Some(job) => format!("resumed: waiting again on {job}"),
            None => "resumed: looking for the job this attempt started".to_string(),
        };
        if !self
            .store
            .take_over(run, task, &self.config.worker, now, &detail)
            .await?
        {
            return Ok(true);
        }
        self.report(
            run,
            Some(&task.task_id),
            task.try_number,
            "running",
            &detail,
        );
        let resume = super::tasks::Resume {
            resuming: true,
            job: attempt.external_job_id.clone(),
            elapsed: Duration::from_millis(u64::try_from(now - attempt.started_at).unwrap_or(0)),
            stop_only: false,
        };
        self.relaunch_connector(run, task, attempt, task.lease, work, redactor, resume, None);
        Ok(true)
    }

    /// Takes over an attempt whose supervisor is on this machine: this worker heartbeats it and
    /// waits for its end (at once if it has ended; if it is gone, once what it left running is
    /// stopped).
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
            lease: task.lease,
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
                Control::InProcess(_) | Control::External { .. } => None,
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
