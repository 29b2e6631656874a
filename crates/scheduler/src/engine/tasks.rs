//! Tasks: deciding pending tasks by their trigger rules, claiming slots within parallelism,
//! pools and `max_active_tasks`, starting attempts (commands under a supervisor), and deciding
//! on each attempt's end.

use ferry_executor::supervisor::{AttemptSpec, Ended, Supervised, SupervisorId, protocol};

use super::*;
use ferry_executor::connector::{AttemptKey, AttemptRecorder, AttemptScope, ConnectorWork};

/// How connector work starts: fresh, or resumed by a ferry that took over the attempt.
pub(super) struct Resume {
    /// Whether an earlier life of the attempt may have started its job.
    pub(super) resuming: bool,
    /// The job it recorded.
    pub(super) job: Option<String>,
    /// How long ago the attempt began.
    pub(super) elapsed: Duration,
    /// Stopped before it begins: it only stops the job it may have started.
    pub(super) stop_only: bool,
}

/// Records what connector work reports on its attempt in the store, fenced by the claim's
/// lease. A write that fails is noted and skipped: the work goes on.
struct StoreRecorder {
    store: Store,
    task_instance: i64,
    lease: i64,
    attempt_id: i64,
    redactor: Redactor,
    /// The figures recorded so far (each report adds to them).
    figures: std::sync::Mutex<BTreeMap<String, i64>>,
}

impl AttemptRecorder for StoreRecorder {
    fn external_job<'a>(
        &'a self,
        id: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            // Kept as the service gave it (a resume waits on it); shown masked.
            if let Err(error) = self
                .store
                .record_external_job(self.task_instance, self.lease, self.attempt_id, id)
                .await
            {
                warn(&format!(
                    "could not record external job {}: {error}",
                    self.redactor.redact(id)
                ));
            }
        })
    }

    fn metrics<'a>(
        &'a self,
        figures: &'a BTreeMap<String, i64>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let text = {
                let mut all = self
                    .figures
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                all.extend(figures.iter().map(|(k, v)| (k.clone(), *v)));
                serde_json::to_string(&*all).unwrap_or_default()
            };
            if let Err(error) = self
                .store
                .record_attempt_metrics(self.attempt_id, &text)
                .await
            {
                warn(&format!("could not record the attempt's figures: {error}"));
            }
        })
    }
}

impl Engine {
    pub(super) fn push_ready(&mut self, pk: i64, index: usize, priority: i64) {
        self.sequence += 1;
        let turn = self.runs.get_mut(&pk).map_or(0, |active| {
            active.turns += 1;
            active.turns
        });
        self.ready
            .push((priority, Reverse(turn), Reverse(self.sequence), pk, index));
    }

    /// Decides the pending tasks among `candidates` of run `pk`, in waves written one
    /// transaction per decision, then ends the run if all ended.
    pub(super) async fn advance(
        &mut self,
        pk: i64,
        candidates: Vec<usize>,
    ) -> Result<(), EngineError> {
        let mut wave = candidates;
        while !wave.is_empty() {
            let Some(active) = self.runs.get(&pk) else {
                return Ok(());
            };
            let mut decided: BTreeMap<(&'static str, String), Vec<usize>> = BTreeMap::new();
            wave.sort_unstable();
            wave.dedup();
            for index in wave.drain(..) {
                if active.tasks[index].state()? != TaskState::Pending {
                    continue;
                }
                let Some(task) = active.task(index) else {
                    continue;
                };
                let upstream: Vec<TaskState> = active
                    .neighbours(index, true)
                    .into_iter()
                    .map(|up| active.tasks[up].state().unwrap_or(TaskState::Pending))
                    .collect();
                let key = match decide(task.trigger_rule, &upstream) {
                    Decision::Wait => continue,
                    Decision::Queue => {
                        let context = self.attempt_context(pk, active.tasks[index].try_number + 1);
                        match run_if(
                            &active.dag.dag,
                            task,
                            &active.run,
                            &self.templates,
                            &context,
                        ) {
                            Ok(Ok(())) => ("queued", "upstream done".to_string()),
                            Ok(Err(why)) => ("skipped", why),
                            Err(problem) => ("failed", format!("template error: {problem}")),
                        }
                    }
                    Decision::Skip => ("skipped", "trigger rule cannot be met".to_string()),
                    Decision::UpstreamFailed => {
                        ("upstream_failed", "an upstream task failed".to_string())
                    }
                };
                decided.entry(key).or_default().push(index);
            }
            for ((to, detail), indexes) in decided {
                let to: TaskState = to.parse().map_err(|_| {
                    EngineError::Store(StoreError::Unreadable(format!("state {to}")))
                })?;
                let moved = self.move_tasks(pk, &indexes, to, &detail).await?;
                if to == TaskState::Queued {
                    for index in moved {
                        let priority = self.runs.get(&pk).map_or(0, |a| a.tasks[index].priority);
                        self.push_ready(pk, index, priority);
                    }
                } else {
                    for index in moved {
                        wave.extend(self.downstream_indexes(pk, index));
                    }
                }
            }
        }
        self.finish_run_if_done(pk).await
    }

    /// Moves pending tasks `indexes` of run `pk` to `to` in one transaction; returns those
    /// that moved.
    async fn move_tasks(
        &mut self,
        pk: i64,
        indexes: &[usize],
        to: TaskState,
        detail: &str,
    ) -> Result<Vec<usize>, EngineError> {
        let now = millis(self.clock.now());
        let Some(active) = self.runs.get(&pk) else {
            return Ok(Vec::new());
        };
        let records: Vec<&TaskInstanceRecord> = indexes.iter().map(|i| &active.tasks[*i]).collect();
        let moved = self
            .store
            .transition_tasks(
                &active.run,
                &records,
                &ferry_store::WaveChange {
                    from: TaskState::Pending,
                    to,
                    at: now,
                    cause: "scheduler",
                    detail,
                },
            )
            .await?;
        let Some(active) = self.runs.get_mut(&pk) else {
            return Ok(Vec::new());
        };
        let moved: Vec<usize> = moved
            .into_iter()
            .filter_map(|id| active.by_id.get(&id).copied())
            .collect();
        for index in &moved {
            let task = &mut active.tasks[*index];
            task.state = to.as_str().to_string();
            task.ready_at = None;
            if to.is_terminal() {
                active.unfinished = active.unfinished.saturating_sub(1);
            }
        }
        if moved.len() < indexes.len() {
            // Another process changed some of these tasks: the store decides.
            self.runs_changed = true;
        }
        let run = active.run.clone();
        let reports: Vec<(String, i64)> = moved
            .iter()
            .map(|i| {
                (
                    active.tasks[*i].task_id.clone(),
                    active.tasks[*i].try_number,
                )
            })
            .collect();
        for (task_id, try_number) in reports {
            self.report(&run, Some(&task_id), try_number, to.as_str(), detail);
        }
        Ok(moved)
    }

    pub(super) fn downstream_indexes(&self, pk: i64, index: usize) -> Vec<usize> {
        self.runs
            .get(&pk)
            .map(|active| active.neighbours(index, false))
            .unwrap_or_default()
    }

    /// Writes a task's change, then mirrors it in memory. False if the store refused (the task
    /// had moved on).
    pub(super) async fn move_task(
        &mut self,
        pk: i64,
        index: usize,
        step: Transition<'_>,
    ) -> Result<bool, EngineError> {
        let now = millis(self.clock.now());
        let Some(active) = self.runs.get_mut(&pk) else {
            return Ok(false);
        };
        let record = active.tasks[index].clone();
        let change = step.change(record.id, now);
        if !self
            .store
            .transition_task(&active.run, &record, &change)
            .await?
        {
            // The store knows better: look at this run again.
            self.runs_changed = true;
            return Ok(false);
        }
        let task = &mut active.tasks[index];
        task.state = step.to.as_str().to_string();
        task.ready_at = step.ready_at;
        if step.grant_try {
            task.max_tries += 1;
            task.free_tries += 1;
        }
        if step.to.is_terminal() && !step.from.is_terminal() {
            active.unfinished = active.unfinished.saturating_sub(1);
        }
        let run = active.run.clone();
        let (task_id, try_number) = (task.task_id.clone(), task.try_number);
        self.report(
            &run,
            Some(&task_id),
            try_number,
            step.to.as_str(),
            step.detail,
        );
        Ok(true)
    }

    /// Starts queued tasks, highest priority first, within parallelism, pools and each DAG's
    /// `max_active_tasks`; at most [`STARTS_PER_PASS`] per pass. True if more could start.
    pub(super) async fn dispatch(&mut self) -> Result<bool, EngineError> {
        let mut held = Vec::new();
        let mut started = 0;
        let mut more = false;
        while self.running.len() < self.config.parallelism {
            if started == STARTS_PER_PASS {
                more = true;
                break;
            }
            let Some(place) = self.ready.pop() else {
                break;
            };
            let (_, _, _, pk, index) = place;
            let Some(active) = self.runs.get(&pk) else {
                continue;
            };
            let record = &active.tasks[index];
            if record.state()? != TaskState::Queued {
                continue;
            }
            if self.running.contains_key(&record.id) || self.fenced_elsewhere.contains(&record.id) {
                // Its previous attempt (cleared by an operator) is still being stopped: this
                // one starts once that has ended.
                held.push(place);
                continue;
            }
            let limit = active.dag.dag.max_active_tasks as usize;
            let pool_slots = self
                .config
                .pools
                .get(&record.pool)
                .copied()
                .unwrap_or(self.config.parallelism);
            let in_dag = self
                .running
                .values()
                .filter(|s| s.dag_id == active.run.dag_id)
                .count();
            let in_pool = self
                .running
                .values()
                .filter(|s| s.pool == record.pool)
                .count();
            if in_dag >= limit || in_pool >= pool_slots {
                held.push(place);
                continue;
            }
            match self.start(pk, index).await? {
                Started::Yes => started += 1,
                // No process can be started now: the rest waits for the next pass.
                Started::NotNow => break,
            }
        }
        self.ready.extend(held);
        if started > 0 {
            self.spares.fill();
        }
        Ok(more)
    }

    /// Claims and starts one queued task. A command's supervisor is started first and its
    /// identity recorded in the claim; it gets the go-ahead only after the claim is committed.
    pub(super) async fn start(&mut self, pk: i64, index: usize) -> Result<Started, EngineError> {
        let Some(active) = self.runs.get(&pk) else {
            return Ok(Started::Yes);
        };
        let record = active.tasks[index].clone();
        let run = active.run.clone();
        let dag = active.dag.clone();
        let Some(task) = active.task(index) else {
            // The run's DAG version has no such task (it was dropped from the version a rerun
            // goes on with): it cannot run, and must not hold the run open.
            self.move_task(
                pk,
                index,
                Transition::new(
                    TaskState::Queued,
                    TaskState::Failed,
                    "scheduler",
                    "the DAG version of the run has no such task",
                ),
            )
            .await?;
            self.finish_run_if_done(pk).await?;
            return Ok(Started::Yes);
        };
        let context = self.attempt_context(pk, record.try_number + 1);
        let now = millis(self.clock.now());
        let (plan, shown) = match prepare(&dag.dag, task, &run, &self.templates, &context) {
            Err(problem) => {
                let reason = format!("template error: {problem}");
                (Plan::Broken(reason.clone()), reason)
            }
            Ok(prepared) => {
                let shown = prepared.shown.clone();
                let plan = match prepared.work {
                    Work::Command(command) => match self.spares.take() {
                        Ok(supervisor) => Plan::Command {
                            command: Box::new(command),
                            supervisor: Box::new(supervisor),
                            redactor: prepared.redactor,
                        },
                        Err(error) => {
                            // The machine cannot start processes now (no memory, no pids): the
                            // task stays queued and is looked at again in a second.
                            warn(&error.to_string());
                            self.timers
                                .push(Reverse((now + 1000, TimerKind::Requeue, pk, index)));
                            return Ok(Started::NotNow);
                        }
                    },
                    Work::Http(request) => Plan::Http {
                        request,
                        redactor: prepared.redactor,
                    },
                    Work::Noop => Plan::Noop,
                    Work::Connector(work) => Plan::Connector {
                        work,
                        redactor: prepared.redactor,
                    },
                    Work::WaitForDag { .. } => Plan::Wait(Box::new(Prepared {
                        work: prepared.work,
                        shown: prepared.shown,
                        redactor: prepared.redactor,
                    })),
                };
                (plan, shown)
            }
        };
        let supervisor = match &plan {
            Plan::Command { supervisor, .. } => Some(supervisor.id().to_json()?),
            _ => None,
        };
        let claim = self
            .store
            .claim(
                &run,
                &record,
                &self.config.worker,
                &shown,
                supervisor.as_deref(),
                now,
            )
            .await;
        let (claimed, attempt_id) = match claim {
            Ok(Some(claimed)) => claimed,
            other => {
                if let Plan::Command { supervisor, .. } = plan {
                    supervisor.abandon().await;
                }
                return other.map(|_| Started::Yes).map_err(EngineError::from);
            }
        };
        if let Some(active) = self.runs.get_mut(&pk) {
            active.tasks[index] = claimed.clone();
        }
        self.report(
            &run,
            Some(&claimed.task_id),
            claimed.try_number,
            "running",
            &shown,
        );
        let lease = claimed.lease;
        let slot = |control| Slot {
            run_pk: pk,
            lease,
            run_id: run.run_id.clone(),
            dag_id: dag.dag.id.clone(),
            pool: claimed.pool.clone(),
            control,
            stop_reason: None,
        };
        let finished = Finished {
            run_pk: pk,
            task_instance: claimed.id,
            lease,
            attempt_id,
            end: AttemptEnd::default(),
        };
        match plan {
            Plan::Broken(reason) => {
                let end = ended_now(Outcome::fatal(reason), String::new());
                self.conclude(pk, index, lease, attempt_id, end).await?;
            }
            Plan::Noop => {
                let done = ended_now(Outcome::Succeeded { code: None }, String::new());
                self.conclude(pk, index, lease, attempt_id, done).await?;
            }
            Plan::Wait(prepared) => {
                self.check_wait(pk, index, lease, attempt_id, &prepared)
                    .await?;
            }
            Plan::Command {
                command,
                supervisor,
                redactor,
            } => {
                let spec = AttemptSpec {
                    version: protocol::PROTOCOL_VERSION,
                    program: command.program,
                    env: command.env,
                    working_dir: command.working_dir,
                    timeout_ms: command
                        .timeout
                        .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
                    grace_ms: u64::try_from(command.grace.as_millis()).unwrap_or(5_000),
                    leftovers: self.config.leftovers,
                    log_limit: LOG_LIMIT,
                    secrets: redactor.values().to_vec(),
                    marker: supervisor.id().marker.clone(),
                };
                let control = Control::Supervised(supervisor.id().clone());
                let supervised = supervisor.start(&spec).await;
                self.watch(claimed.id, slot(control), supervised, finished, redactor);
            }
            Plan::Http { request, redactor } => {
                let cancel = CancellationToken::new();
                self.running
                    .insert(claimed.id, slot(Control::InProcess(cancel.clone())));
                let sender = self.sender.clone();
                let http = self.http.clone();
                let mut message = finished;
                tokio::spawn(async move {
                    let log = ferry_executor::LogBuffer::new(LOG_LIMIT);
                    let outcome = ferry_executor::http::run(&http, &request, &log, &cancel).await;
                    message.end =
                        ended_now(outcome.redacted(&redactor), redactor.redact(&log.text()));
                    let _ = sender.send(Message::Finished(message));
                });
            }
            Plan::Connector { work, redactor } => {
                let key = AttemptKey {
                    dag: dag.dag.id.clone(),
                    task: claimed.task_id.clone(),
                    run_id: run.run_id.clone(),
                    run_queued_at: run.queued_at,
                    try_number: claimed.try_number,
                    lease: claimed.lease,
                };
                let fresh = Resume {
                    resuming: false,
                    job: None,
                    elapsed: Duration::ZERO,
                    stop_only: false,
                };
                self.spawn_connector(claimed.id, slot, work, redactor, finished, key, fresh);
            }
        }
        Ok(Started::Yes)
    }

    /// Runs connector work beside the loop, holding its slot (`slot` makes it from the control).
    /// Work that waits on a job outside ferry is detached, not stopped, by a shutdown.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn spawn_connector(
        &mut self,
        task_instance: i64,
        slot: impl FnOnce(Control) -> Slot,
        work: ConnectorWork,
        redactor: Redactor,
        mut message: Finished,
        key: AttemptKey,
        resume: Resume,
    ) {
        let cancel = CancellationToken::new();
        if resume.stop_only {
            cancel.cancel();
        }
        let detach = CancellationToken::new();
        let resumable = self
            .config
            .connectors
            .as_ref()
            .is_some_and(|c| c.0.resumable(&work));
        let control = if resumable {
            Control::External {
                cancel: cancel.clone(),
                detach: detach.clone(),
            }
        } else {
            Control::InProcess(cancel.clone())
        };
        self.running.insert(task_instance, slot(control));
        let sender = self.sender.clone();
        let connectors = self.config.connectors.clone();
        let recorder = StoreRecorder {
            store: self.store.clone(),
            task_instance,
            lease: message.lease,
            attempt_id: message.attempt_id,
            redactor: redactor.clone(),
            figures: std::sync::Mutex::default(),
        };
        tokio::spawn(async move {
            let log = ferry_executor::LogBuffer::new(LOG_LIMIT);
            let outcome = match &connectors {
                Some(connectors) => {
                    let scope = AttemptScope {
                        key: &key,
                        resuming: resume.resuming,
                        resumed_job: resume.job.as_deref(),
                        elapsed: resume.elapsed,
                        recorder: &recorder,
                        log: &log,
                        cancel: &cancel,
                        shutting_down: &detach,
                    };
                    connectors.0.run(&work, scope).await
                }
                None => Outcome::fatal("this ferry process cannot reach connections"),
            };
            message.end = ended_now(outcome.redacted(&redactor), redactor.redact(&log.text()));
            message.end.detached =
                detach.is_cancelled() && !matches!(message.end.outcome, Outcome::Succeeded { .. });
            let _ = sender.send(Message::Finished(message));
        });
    }

    /// Runs the connector work of an attempt that already exists (a resumed, stopped or
    /// deferred one) under its lease, holding its task's slot.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn relaunch_connector(
        &mut self,
        run: &RunRecord,
        task: &TaskInstanceRecord,
        attempt: &ferry_store::AttemptRecord,
        lease: i64,
        work: ConnectorWork,
        redactor: Redactor,
        resume: Resume,
        stop_reason: Option<StopReason>,
    ) {
        let slot = |control| Slot {
            run_pk: run.id,
            lease,
            run_id: run.run_id.clone(),
            dag_id: run.dag_id.clone(),
            pool: task.pool.clone(),
            control,
            stop_reason,
        };
        let message = Finished {
            run_pk: run.id,
            task_instance: task.id,
            lease,
            attempt_id: attempt.id,
            end: AttemptEnd::default(),
        };
        let key = AttemptKey {
            dag: run.dag_id.clone(),
            task: task.task_id.clone(),
            run_id: run.run_id.clone(),
            run_queued_at: run.queued_at,
            try_number: attempt.try_number,
            lease,
        };
        self.spawn_connector(task.id, slot, work, redactor, message, key, resume);
    }

    /// Holds `slot` for a supervised attempt and waits for its end beside the loop.
    pub(super) fn watch(
        &mut self,
        task_instance: i64,
        slot: Slot,
        mut supervised: Supervised,
        mut message: Finished,
        redactor: Redactor,
    ) {
        self.running.insert(task_instance, slot);
        let sender = self.sender.clone();
        tokio::spawn(async move {
            let ended = supervised.ended().await;
            message.end = supervised_end(supervised.id(), ended, &redactor).await;
            let _ = sender.send(Message::Finished(message));
        });
    }

    pub(super) async fn handle(&mut self, message: Message) -> Result<(), EngineError> {
        match message {
            Message::Finished(finished) => {
                if let Err(error) = self.finish(finished.clone()).await {
                    self.unrecorded.push_back(finished);
                    return Err(error);
                }
                Ok(())
            }
            Message::Wake => {
                // A DAG may have been paused or unpaused too.
                self.next_schedule_check = None;
                self.resync_runs().await
            }
            Message::Reloaded(Reload {
                dags,
                files,
                unreadable,
                changed,
            }) => {
                self.reloading = false;
                if changed {
                    self.retain_present(&dags, &files, &unreadable);
                    self.load_dags(dags).await?;
                    self.next_schedule_check = None;
                    self.runs_changed = true;
                }
                Ok(())
            }
            Message::Fault(fault) => Err(EngineError::Store(fault)),
        }
    }

    /// Records an attempt's end (its slot is freed once the end is recorded) and decides.
    pub(super) async fn finish(&mut self, finished: Finished) -> Result<(), EngineError> {
        let Finished {
            run_pk,
            task_instance,
            lease,
            attempt_id,
            mut end,
        } = finished;
        if end.detached {
            // ferry shuts down while the job goes on: the attempt stays running in the store,
            // and the next start waits on the same job.
            self.running.remove(&task_instance);
            return Ok(());
        }
        match self
            .running
            .get(&task_instance)
            .and_then(|slot| slot.stop_reason)
        {
            Some(StopReason::Shutdown) => {
                end.interrupt("interrupted by ferry's shutdown; this try does not count");
            }
            // A command that succeeded just before the stop stays a success.
            Some(StopReason::RunTimeout) if !matches!(end.outcome, Outcome::Succeeded { .. }) => {
                end.interrupted = false;
                end.outcome = Outcome::Failed {
                    retryable: false,
                    retry_after: None,
                    code: end.outcome.code(),
                    reason: "stopped: the run exceeded its dagrun_timeout".to_string(),
                };
            }
            Some(StopReason::RunTimeout) => {}
            Some(StopReason::Intervention) => {
                end.log
                    .push_str("[ferry] stopped: an operator cleared or marked the task\n");
                end.interrupted = false;
                end.lost = false;
                end.cleared = true;
                end.outcome = Outcome::Failed {
                    retryable: false,
                    retry_after: None,
                    code: end.outcome.code(),
                    reason: "stopped: an operator cleared or marked the task".to_string(),
                };
            }
            None => {}
        }
        let dir = end.dir.clone();
        if !self.runs.contains_key(&run_pk)
            && let Some(run) = self.store.run_by_pk(run_pk).await?
        {
            // A run not in memory (a reattached attempt of a run `ferry run` does not drive):
            // record the end in the store; the run's next driver decides what follows.
            self.record_end_detached(&run, task_instance, lease, attempt_id, &end)
                .await?;
        } else if let Some(index) = self
            .runs
            .get(&run_pk)
            .and_then(|active| active.by_id.get(&task_instance).copied())
        {
            self.conclude(run_pk, index, lease, attempt_id, end).await?;
        }
        self.running.remove(&task_instance);
        if let Some(dir) = dir {
            ferry_executor::supervisor::remove_attempt_dir(&dir);
        }
        Ok(())
    }

    /// Applies an attempt's typed outcome; only here are retries decided. A deferred outcome
    /// leaves the attempt open and the task waiting without a slot until it is looked at again.
    pub(super) async fn conclude(
        &mut self,
        pk: i64,
        index: usize,
        lease: i64,
        attempt_id: i64,
        end: AttemptEnd,
    ) -> Result<(), EngineError> {
        let now = self.clock.now();
        let Some(active) = self.runs.get(&pk) else {
            return Ok(());
        };
        let record = active.tasks[index].clone();
        let from = record.state()?;
        if record.lease != lease || !matches!(from, TaskState::Running | TaskState::Deferred) {
            // A newer attempt holds the task (fencing), or it moved on meanwhile (the store
            // said so): only this attempt is closed.
            return self.close_attempt(attempt_id, end.label(), &end, now).await;
        }
        let policy = active.task(index).map(|t| t.retry);
        if let Outcome::Deferred {
            recheck_after,
            reason,
        } = &end.outcome
        {
            let at = millis(now) + i64::try_from(recheck_after.as_millis()).unwrap_or(i64::MAX / 2);
            if from == TaskState::Running {
                self.move_task(
                    pk,
                    index,
                    Transition::new(from, TaskState::Deferred, "executor", reason)
                        .lease(lease)
                        .ready_at(Some(at)),
                )
                .await?;
            }
            self.timers
                .push(Reverse((at, TimerKind::Deferral, pk, index)));
            return Ok(());
        }
        let decision = decide_end(
            &record,
            from,
            policy.as_ref(),
            &end,
            now,
            self.timed_out.contains(&pk),
        );
        self.close_attempt(attempt_id, decision.label, &end, now)
            .await?;
        let moved = self
            .move_task(
                pk,
                index,
                Transition::new(from, decision.to, decision.cause, &decision.detail)
                    .lease(lease)
                    .ready_at(decision.ready_at)
                    .exit_code(end.outcome.code())
                    .grant_try(decision.grant_try),
            )
            .await?;
        if moved {
            if let Some(at) = decision.ready_at {
                self.timers.push(Reverse((at, TimerKind::Retry, pk, index)));
            } else {
                let downstream = self.downstream_indexes(pk, index);
                self.advance(pk, downstream).await?;
            }
        }
        Ok(())
    }

    /// Records the end of attempt `attempt_id` as `label`, with its exit code, log and time.
    async fn close_attempt(
        &self,
        attempt_id: i64,
        label: &str,
        end: &AttemptEnd,
        now: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        Ok(self
            .store
            .finish_attempt(
                attempt_id,
                label,
                end.outcome.code(),
                &end.log,
                end.ended_at.unwrap_or(millis(now)),
            )
            .await?)
    }

    /// Records an attempt's end for a run that is not in memory.
    pub(super) async fn record_end_detached(
        &mut self,
        run: &RunRecord,
        task_instance: i64,
        lease: i64,
        attempt_id: i64,
        end: &AttemptEnd,
    ) -> Result<(), EngineError> {
        let now = self.clock.now();
        let tasks = self.store.task_instances(run.id).await?;
        let Some(record) = tasks.into_iter().find(|t| t.id == task_instance) else {
            return Ok(());
        };
        let from = record.state()?;
        if record.lease != lease || from != TaskState::Running {
            // Only this attempt is closed: see `conclude`.
            return self.close_attempt(attempt_id, end.label(), end, now).await;
        }
        let policy = self.policy_of(run, &record.task_id).await?;
        let timed_out = self.timed_out.contains(&run.id);
        let decision = decide_end(&record, from, policy.as_ref(), end, now, timed_out);
        self.close_attempt(attempt_id, decision.label, end, now)
            .await?;
        let change = Transition::new(from, decision.to, decision.cause, &decision.detail)
            .lease(lease)
            .ready_at(decision.ready_at)
            .exit_code(end.outcome.code())
            .grant_try(decision.grant_try)
            .change(record.id, millis(now));
        if self.store.transition_task(run, &record, &change).await? {
            self.report(
                run,
                Some(&record.task_id),
                record.try_number,
                decision.to.as_str(),
                &decision.detail,
            );
        }
        Ok(())
    }

    /// The retry policy of task `task_id` in the DAG version `run` was created with.
    pub(super) async fn policy_of(
        &mut self,
        run: &RunRecord,
        task_id: &str,
    ) -> Result<Option<ferry_dag::dag::RetryPolicy>, EngineError> {
        let loaded = self.version_of(run).await?;
        Ok(loaded.and_then(|loaded| loaded.dag.task(task_id).map(|t| t.retry)))
    }
}

/// Whether [`Engine::start`] could start the task.
pub(super) enum Started {
    /// It was started (or had moved on meanwhile).
    Yes,
    /// No process can be started now: it stays queued and is looked at again later.
    NotNow,
}

/// What starting a task will do, decided before it is claimed (a command's supervisor is
/// started first, so that its identity goes into the claim).
enum Plan {
    /// A command, under a supervisor waiting for its go-ahead.
    Command {
        command: Box<ferry_executor::command::CommandSpec>,
        supervisor: Box<ferry_executor::supervisor::Pending>,
        redactor: Redactor,
    },
    /// A request, run inside the engine.
    Http {
        request: ferry_executor::http::HttpSpec,
        redactor: Redactor,
    },
    /// Work on a named connection, run inside the engine.
    Connector {
        work: ferry_executor::connector::ConnectorWork,
        redactor: Redactor,
    },
    /// Nothing to run.
    Noop,
    /// A `wait_for_dag` check.
    Wait(Box<Prepared>),
    /// The task cannot be rendered: it fails without retries.
    Broken(String),
}

impl Default for AttemptEnd {
    fn default() -> Self {
        ended_now(Outcome::Succeeded { code: None }, String::new())
    }
}

impl AttemptEnd {
    /// The attempt's outcome as stored: `lost` and `interrupted` say more than `failed`.
    fn label(&self) -> &'static str {
        if self.cleared {
            "cleared"
        } else if self.lost {
            "lost"
        } else if self.interrupted {
            "interrupted"
        } else {
            self.outcome.label()
        }
    }

    /// Stopped by ferry, not failed (a shutdown; a supervisor lost before its command started):
    /// the try does not count, and it runs again at once. A command that succeeded meanwhile
    /// stays a success.
    pub(super) fn interrupt(&mut self, why: &str) {
        if !matches!(self.outcome, Outcome::Succeeded { .. }) {
            self.outcome = Outcome::Failed {
                retryable: true,
                retry_after: Some(Duration::ZERO),
                code: self.outcome.code(),
                reason: why.to_string(),
            };
            self.lost = false;
            self.interrupted = true;
        }
    }
}

/// How a supervised attempt's end is recorded. A supervisor that wrote `stopped_on_request`
/// was stopped by ferry (a shutdown, or a run timeout that fires again once the run is back in
/// memory): its try does not count. A supervisor gone without a result first has what its
/// command left running stopped; if it never had its go-ahead, its command never ran and the
/// try does not count either.
pub(super) async fn supervised_end(
    id: &SupervisorId,
    ended: Ended,
    redactor: &Redactor,
) -> AttemptEnd {
    match ended {
        Ended::Finished { result, output } => {
            let mut end = AttemptEnd {
                outcome: result.outcome.redacted(redactor),
                log: redactor.redact(&output),
                ended_at: Some(result.ended_at),
                lost: false,
                interrupted: false,
                cleared: false,
                detached: false,
                dir: Some(id.dir.clone()),
            };
            if result.stopped_on_request {
                end.interrupt("stopped by ferry; this try does not count");
            }
            end
        }
        Ended::Lost {
            reason,
            output,
            went_ahead,
        } => {
            let gone = id.clone();
            let stopped = tokio::task::spawn_blocking(move || {
                gone.stop_what_is_left(crate::render::STOP_GRACE)
            })
            .await
            .unwrap_or_default();
            let mut log = redactor.redact(&output);
            if stopped > 0 {
                log.push_str(&format!(
                    "[ferry] stopped {stopped} process(es) the lost attempt left running\n"
                ));
            }
            let reason = redactor.redact(&reason);
            log.push_str(&format!("[ferry] {reason}\n"));
            let mut end = AttemptEnd {
                outcome: Outcome::failed(None, reason.clone()),
                log,
                ended_at: None,
                lost: true,
                interrupted: false,
                cleared: false,
                detached: false,
                dir: Some(id.dir.clone()),
            };
            if !went_ahead {
                end.interrupt(&format!(
                    "{reason}, before its command started; this try does not count"
                ));
            }
            end
        }
    }
}

/// An end known now (no supervisor to say when).
pub(super) fn ended_now(outcome: Outcome, log: String) -> AttemptEnd {
    AttemptEnd {
        outcome,
        log,
        ended_at: None,
        lost: false,
        interrupted: false,
        cleared: false,
        detached: false,
        dir: None,
    }
}

/// How many interrupted tries a task gets back (beyond its `retries`).
const MAX_FREE_TRIES: i64 = 5;

/// What an attempt's end means for its task.
struct EndDecision {
    to: TaskState,
    ready_at: Option<i64>,
    label: &'static str,
    cause: &'static str,
    detail: String,
    grant_try: bool,
}

/// Success, a retry after the policy's delay, or failure, for an attempt of `record` that
/// ended with `end`; `timed_out` runs get no retries. Lost attempts are retried after their
/// delay too (never at once), and interrupted ones at once with their try given back.
fn decide_end(
    record: &TaskInstanceRecord,
    from: TaskState,
    policy: Option<&ferry_dag::dag::RetryPolicy>,
    end: &AttemptEnd,
    now: DateTime<Utc>,
    timed_out: bool,
) -> EndDecision {
    // An interrupted try is given back, but not without end: something that interrupts every
    // try (a supervisor that cannot start its command) must not run the task in a loop.
    let given_back = end.interrupted && record.free_tries < MAX_FREE_TRIES;
    let label = end.label();
    match &end.outcome {
        Outcome::Failed {
            retryable,
            retry_after,
            reason,
            ..
        } => {
            let tries_left = given_back || record.try_number < record.max_tries;
            let can_retry = *retryable && from == TaskState::Running && tries_left && !timed_out;
            let delay = match (can_retry, policy) {
                (true, _) if given_back => Some(Duration::ZERO),
                (true, Some(policy)) => Some(retry_after.unwrap_or_else(|| {
                    let next_try = u32::try_from(record.try_number + 1).unwrap_or(u32::MAX);
                    retry::delay_before(policy, next_try, fastrand::f64())
                })),
                (true, None) => Some(retry_after.unwrap_or_default()),
                (false, _) => None,
            };
            match delay {
                Some(delay) => EndDecision {
                    to: TaskState::UpForRetry,
                    ready_at: Some(
                        millis(now) + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2),
                    ),
                    label,
                    cause: if end.interrupted {
                        "interrupted"
                    } else if end.lost {
                        "lost"
                    } else {
                        "retry"
                    },
                    detail: format!("{reason}; retry in {}s", delay.as_secs()),
                    grant_try: given_back,
                },
                None => EndDecision {
                    to: TaskState::Failed,
                    ready_at: None,
                    label,
                    cause: if end.lost { "lost" } else { "executor" },
                    detail: reason.clone(),
                    grant_try: false,
                },
            }
        }
        _ => EndDecision {
            to: TaskState::Success,
            ready_at: None,
            label,
            cause: "executor",
            detail: "succeeded".to_string(),
            grant_try: false,
        },
    }
}
