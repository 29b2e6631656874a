//! Tasks: deciding pending tasks by their trigger rules, claiming slots within parallelism,
//! pools and `max_active_tasks`, starting attempts, and deciding on each attempt's end.

use super::*;

impl Engine {
    pub(super) fn push_ready(&mut self, pk: i64, index: usize, priority: i64) {
        self.sequence += 1;
        self.ready
            .push((priority, Reverse(self.sequence), pk, index));
    }

    /// Decides the pending tasks among `candidates` of run `pk`, then ends the run if all ended.
    pub(super) async fn advance(
        &mut self,
        pk: i64,
        candidates: Vec<usize>,
    ) -> Result<(), EngineError> {
        let mut queue = candidates;
        while let Some(index) = queue.pop() {
            let Some(active) = self.runs.get(&pk) else {
                return Ok(());
            };
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
            let (to, detail) = match decide(task.trigger_rule, &upstream) {
                Decision::Wait => continue,
                Decision::Queue => (TaskState::Queued, "upstream done"),
                Decision::Skip => (TaskState::Skipped, "trigger rule cannot be met"),
                Decision::UpstreamFailed => (TaskState::UpstreamFailed, "an upstream task failed"),
            };
            let priority = active.tasks[index].priority;
            let downstream = self.downstream_indexes(pk, index);
            if self
                .move_task(
                    pk,
                    index,
                    Transition::new(TaskState::Pending, to, "scheduler", detail),
                )
                .await?
            {
                if to == TaskState::Queued {
                    self.push_ready(pk, index, priority);
                } else {
                    queue.extend(downstream);
                }
            }
        }
        self.finish_run_if_done(pk).await
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
        let change = TaskChange {
            id: record.id,
            from: step.from,
            to: step.to,
            lease: step.lease,
            ready_at: step.ready_at,
            exit_code: step.exit_code,
            at: now,
            cause: step.cause,
            detail: step.detail,
        };
        if !self
            .store
            .transition_task(&active.run, &record, &change)
            .await?
        {
            return Ok(false);
        }
        let task = &mut active.tasks[index];
        task.state = step.to.as_str().to_string();
        task.ready_at = step.ready_at;
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
    /// `max_active_tasks`.
    pub(super) async fn dispatch(&mut self) -> Result<(), EngineError> {
        let mut held = Vec::new();
        while self.running.len() < self.config.parallelism {
            let Some((priority, order, pk, index)) = self.ready.pop() else {
                break;
            };
            let Some(active) = self.runs.get(&pk) else {
                continue;
            };
            let record = active.tasks[index].clone();
            if record.state()? != TaskState::Queued {
                continue;
            }
            let dag_id = active.run.dag_id.clone();
            let limit = active.dag.dag.max_active_tasks as usize;
            let pool_slots = self
                .config
                .pools
                .get(&record.pool)
                .copied()
                .unwrap_or(self.config.parallelism);
            let in_dag = self.running.values().filter(|s| s.dag_id == dag_id).count();
            let in_pool = self
                .running
                .values()
                .filter(|s| s.pool == record.pool)
                .count();
            if in_dag >= limit || in_pool >= pool_slots {
                held.push((priority, order, pk, index));
                continue;
            }
            self.start(pk, index).await?;
        }
        self.ready.extend(held);
        Ok(())
    }

    /// Claims and starts one queued task.
    pub(super) async fn start(&mut self, pk: i64, index: usize) -> Result<(), EngineError> {
        let Some(active) = self.runs.get(&pk) else {
            return Ok(());
        };
        let record = active.tasks[index].clone();
        let run = active.run.clone();
        let dag = active.dag.clone();
        let Some(task) = active.task(index) else {
            return Ok(());
        };
        let prepared = prepare(&dag.dag, task, &run, &self.templates);
        let shown = prepared
            .as_ref()
            .map_or_else(|p| format!("template error: {p}"), |p| p.shown.clone());
        let now = millis(self.clock.now());
        let Some((claimed, attempt_id)) = self
            .store
            .claim(&run, &record, &self.config.worker, &shown, now)
            .await?
        else {
            return Ok(());
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
        let prepared = match prepared {
            Ok(prepared) => prepared,
            Err(problem) => {
                let outcome = Outcome::Failed {
                    retryable: false,
                    retry_after: None,
                    code: None,
                    reason: format!("template error: {problem}"),
                };
                return self
                    .conclude(pk, index, lease, attempt_id, outcome, "")
                    .await;
            }
        };
        match prepared.work {
            Work::Noop => {
                let done = Outcome::Succeeded { code: None };
                self.conclude(pk, index, lease, attempt_id, done, "").await
            }
            Work::WaitForDag { .. } => {
                self.check_wait(pk, index, lease, attempt_id, &prepared)
                    .await
            }
            work => {
                let slot = Slot {
                    run_pk: pk,
                    dag_id: dag.dag.id.clone(),
                    pool: claimed.pool.clone(),
                    cancel: self.stop_attempts.child_token(),
                };
                let ended = Finished {
                    run_pk: pk,
                    index,
                    lease,
                    attempt_id,
                    outcome: Outcome::Succeeded { code: None },
                    log: String::new(),
                };
                self.spawn(claimed.id, slot, ended, work);
                Ok(())
            }
        }
    }

    /// Starts an attempt in its own task, holding `slot` until it reports its end; `ended`
    /// names the attempt and receives the outcome and log.
    pub(super) fn spawn(
        &mut self,
        task_instance: i64,
        slot: Slot,
        mut ended: Finished,
        work: Work,
    ) {
        let cancel = slot.cancel.clone();
        self.running.insert(task_instance, slot);
        let sender = self.sender.clone();
        let http = self.http.clone();
        tokio::spawn(async move {
            let log = LogBuffer::new(LOG_LIMIT);
            let lease = ended.lease;
            ended.outcome = match &work {
                Work::Command(spec) => {
                    let started = sender.clone();
                    ferry_executor::command::run(spec, &log, &cancel, move |pid| {
                        let _ = started.send(Message::Started {
                            task_id: task_instance,
                            lease,
                            pid,
                        });
                    })
                    .await
                }
                Work::Http(spec) => ferry_executor::http::run(&http, spec, &log, &cancel).await,
                Work::Noop | Work::WaitForDag { .. } => Outcome::Succeeded { code: None },
            };
            ended.log = log.text();
            let _ = sender.send(Message::Finished(ended));
        });
    }

    pub(super) async fn handle(&mut self, message: Message) -> Result<(), EngineError> {
        match message {
            Message::Started {
                task_id,
                lease,
                pid,
            } => {
                self.store
                    .record_external_job(task_id, lease, &format!("pgid:{pid}"))
                    .await?;
                Ok(())
            }
            Message::Finished(finished) => {
                if let Some(task) = self
                    .runs
                    .get(&finished.run_pk)
                    .map(|r| r.tasks[finished.index].id)
                {
                    self.running.remove(&task);
                }
                self.finish(finished).await
            }
        }
    }

    /// Records an attempt's end and decides: success, retry later, or failure.
    pub(super) async fn finish(&mut self, finished: Finished) -> Result<(), EngineError> {
        let Finished {
            run_pk,
            index,
            lease,
            attempt_id,
            outcome,
            log,
        } = finished;
        self.conclude(run_pk, index, lease, attempt_id, outcome, &log)
            .await
    }

    /// Applies an attempt's typed outcome; only here are retries decided. A deferred outcome
    /// leaves the attempt open and the task waiting without a slot until it is looked at again.
    pub(super) async fn conclude(
        &mut self,
        pk: i64,
        index: usize,
        lease: i64,
        attempt_id: i64,
        outcome: Outcome,
        log: &str,
    ) -> Result<(), EngineError> {
        let now = self.clock.now();
        let Some(active) = self.runs.get(&pk) else {
            return Ok(());
        };
        let record = active.tasks[index].clone();
        let from = record.state()?;
        let policy = active.task(index).map(|t| t.retry);
        if let Outcome::Deferred {
            recheck_after,
            reason,
        } = &outcome
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
        self.store
            .finish_attempt(
                attempt_id,
                outcome.label(),
                outcome.code(),
                log,
                millis(now),
            )
            .await?;
        let (to, ready_at, detail) = match &outcome {
            Outcome::Failed {
                retryable,
                retry_after,
                reason,
                ..
            } => {
                let can_retry = *retryable
                    && from == TaskState::Running
                    && record.try_number < record.max_tries
                    && !self.timed_out.contains(&pk);
                match (can_retry, policy) {
                    (true, Some(policy)) => {
                        let next_try = u32::try_from(record.try_number + 1).unwrap_or(u32::MAX);
                        let delay = retry_after.unwrap_or_else(|| {
                            retry::delay_before(&policy, next_try, fastrand::f64())
                        });
                        let at =
                            millis(now) + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
                        (
                            TaskState::UpForRetry,
                            Some(at),
                            format!("{reason}; retry in {}s", delay.as_secs()),
                        )
                    }
                    _ => (TaskState::Failed, None, reason.clone()),
                }
            }
            _ => (TaskState::Success, None, "succeeded".to_string()),
        };
        let cause = if to == TaskState::UpForRetry {
            "retry"
        } else {
            "executor"
        };
        let moved = self
            .move_task(
                pk,
                index,
                Transition::new(from, to, cause, &detail)
                    .lease(lease)
                    .ready_at(ready_at)
                    .exit_code(outcome.code()),
            )
            .await?;
        if moved {
            if let Some(at) = ready_at {
                self.timers.push(Reverse((at, TimerKind::Retry, pk, index)));
            } else {
                let downstream = self.downstream_indexes(pk, index);
                self.advance(pk, downstream).await?;
            }
        }
        Ok(())
    }
}
