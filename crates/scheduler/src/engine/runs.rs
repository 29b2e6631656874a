//! Runs: loading DAG versions, creating runs (manual, backfill, from timetables), starting
//! queued runs within `max_active_runs`, and ending them (also by `dagrun_timeout`).

use super::*;

impl Engine {
    /// Makes `dag` (read from `source`) the version new runs use.
    pub async fn load_dag(
        &mut self,
        dag: Dag,
        source: &str,
    ) -> Result<Arc<LoadedDag>, EngineError> {
        let id = dag.id.clone();
        self.load_dags(vec![(dag, source.to_string())]).await?;
        self.dags
            .get(&id)
            .cloned()
            .ok_or(EngineError::UnknownDag(id))
    }

    /// Loads many DAGs with the text of their files; unchanged ones are left as they are and the
    /// new versions are recorded together.
    pub async fn load_dags(&mut self, dags: Vec<(Dag, String)>) -> Result<(), EngineError> {
        let changed: Vec<(Dag, String, String)> = dags
            .into_iter()
            .map(|(dag, source)| {
                let hash = content_hash(&source);
                (dag, source, hash)
            })
            .filter(|(dag, _, hash)| {
                self.dags
                    .get(&dag.id)
                    .is_none_or(|known| &known.hash != hash)
            })
            .collect();
        if changed.is_empty() {
            return Ok(());
        }
        let files: Vec<String> = changed
            .iter()
            .map(|(dag, ..)| dag.file.display().to_string())
            .collect();
        let versions: Vec<NewDagVersion<'_>> = changed
            .iter()
            .zip(&files)
            .map(|((dag, source, hash), file)| NewDagVersion {
                dag_id: &dag.id,
                content_hash: hash,
                file,
                source,
            })
            .collect();
        let ids = self
            .store
            .record_dag_versions(&versions, millis(self.clock.now()))
            .await?;
        for ((dag, _, hash), version_id) in changed.into_iter().zip(ids) {
            self.dags.insert(
                dag.id.clone(),
                Arc::new(LoadedDag {
                    dag,
                    version_id,
                    hash,
                }),
            );
        }
        self.next_schedule_check = None;
        Ok(())
    }

    /// Lets at most `limit` runs of DAG `dag_id` run at once in this engine, whatever its
    /// `max_active_runs` (`ferry backfill --parallel`).
    pub fn limit_active_runs(&mut self, dag_id: &str, limit: u32) {
        if let Some(loaded) = self.dags.get_mut(dag_id) {
            Arc::make_mut(loaded).dag.max_active_runs = limit;
        }
    }

    /// The DAGs loaded.
    pub fn dag(&self, id: &str) -> Option<&Arc<LoadedDag>> {
        self.dags.get(id)
    }

    /// Creates a run of `dag_id` for `interval` (manual or backfill). Returns `None` when the
    /// DAG already has a run for that logical date.
    pub async fn create_run(
        &mut self,
        dag_id: &str,
        interval: ferry_dag::timetable::DataInterval,
        run_type: &str,
        conf: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Option<RunRecord>, EngineError> {
        let loaded = self
            .dags
            .get(dag_id)
            .cloned()
            .ok_or_else(|| EngineError::UnknownDag(dag_id.to_string()))?;
        let run_id = run_id(dag_id, run_type, interval);
        self.insert_run(
            &loaded,
            &run_id,
            interval,
            run_type,
            &serde_json::Value::Object(conf.clone()).to_string(),
        )
        .await
    }

    pub(super) async fn insert_run(
        &mut self,
        loaded: &LoadedDag,
        run_id: &str,
        interval: ferry_dag::timetable::DataInterval,
        run_type: &str,
        conf: &str,
    ) -> Result<Option<RunRecord>, EngineError> {
        let tasks = new_instances(&loaded.dag);
        let new_run = new_run(
            loaded,
            run_id,
            interval,
            run_type,
            conf,
            millis(self.clock.now()),
        );
        let created = self
            .store
            .create_run(
                &new_run,
                &tasks,
                if run_type == "scheduled" {
                    "scheduler"
                } else {
                    "operator"
                },
            )
            .await?;
        if let Some(run) = &created {
            self.runs_changed = true;
            self.report(run, None, 0, "queued", run_type);
        }
        Ok(created)
    }

    /// Creates the runs that are due, and notes when the next one will be.
    pub async fn create_due_runs(&mut self) -> Result<(), EngineError> {
        let now = self.clock.now();
        let dags: Vec<Arc<LoadedDag>> = self.dags.values().cloned().collect();
        let mut next_check: Option<DateTime<Utc>> = None;
        let latest_dates = self.store.latest_scheduled_dates().await?;
        let paused: HashSet<String> = self
            .store
            .paused_dags()
            .await?
            .into_iter()
            .map(|paused| paused.dag_id)
            .collect();
        let mut pending = Vec::new();
        for loaded in dags {
            if loaded.dag.schedule.is_none() || paused.contains(&loaded.dag.id) {
                continue;
            }
            let mut latest = latest_dates.get(&loaded.dag.id).map(|ms| from_millis(*ms));
            let mut due = due::due_intervals(&loaded.dag, latest, now);
            // A full pass whose every interval has a run already (manual or backfill runs
            // beyond the scheduled ones): move past them, or the same pass would come back
            // forever.
            while due.len() == due::MAX_NEW_RUNS_PER_PASS
                && let (Some(first), Some(last)) = (due.first(), due.last())
                && {
                    let taken = self
                        .store
                        .logical_dates_between(
                            &loaded.dag.id,
                            millis(first.start),
                            millis(last.start),
                        )
                        .await?;
                    due.iter()
                        .all(|interval| taken.contains(&millis(interval.start)))
                }
            {
                latest = Some(last.start);
                due = due::due_intervals(&loaded.dag, latest, now);
            }
            let more = due.len() == due::MAX_NEW_RUNS_PER_PASS;
            if let Some(last) = due.last() {
                latest = Some(last.start);
            }
            pending.extend(due.into_iter().map(|interval| (loaded.clone(), interval)));
            let next = if more {
                Some(now)
            } else {
                due::next_due(&loaded.dag, latest)
            };
            next_check = [next_check, next].into_iter().flatten().min();
        }
        // All of this pass's runs in one transaction.
        let ids: Vec<String> = pending
            .iter()
            .map(|(loaded, interval)| run_id(&loaded.dag.id, "scheduled", *interval))
            .collect();
        let instances: Vec<Vec<NewTaskInstance<'_>>> = pending
            .iter()
            .map(|(loaded, _)| new_instances(&loaded.dag))
            .collect();
        let at = millis(now);
        let batch: Vec<(NewRun<'_>, &[NewTaskInstance<'_>])> = pending
            .iter()
            .zip(&ids)
            .zip(&instances)
            .map(|(((loaded, interval), id), tasks)| {
                (
                    new_run(loaded, id, *interval, "scheduled", "{}", at),
                    tasks.as_slice(),
                )
            })
            .collect();
        for run in self
            .store
            .create_runs(&batch, "scheduler")
            .await?
            .into_iter()
            .flatten()
        {
            self.runs_changed = true;
            self.report(&run, None, 0, "queued", "scheduled");
        }
        // Look again at the next due time, and at least hourly (clock changes, reloads).
        let hourly = now + chrono::Duration::hours(1);
        self.next_schedule_check = Some(next_check.map_or(hourly, |at| at.min(hourly)));
        Ok(())
    }

    /// Moves queued runs to running, oldest first, within each DAG's `max_active_runs`.
    pub(super) async fn start_queued_runs(
        &mut self,
        focus: Option<&[String]>,
    ) -> Result<(), EngineError> {
        let in_focus = |run: &RunRecord| focus.is_none_or(|ids| ids.contains(&run.run_id));
        let running = self
            .store
            .runs(&RunFilter {
                states: vec![RunState::Running],
                limit: Some(10_000),
                ..RunFilter::default()
            })
            .await?;
        for run in running {
            if !self.runs.contains_key(&run.id) && in_focus(&run) {
                self.activate(run).await?;
            }
        }
        let mut queued = self
            .store
            .runs(&RunFilter {
                states: vec![RunState::Queued],
                limit: Some(10_000),
                ..RunFilter::default()
            })
            .await?;
        queued.sort_by_key(|run| run.logical_date);
        for run in queued {
            if !in_focus(&run) {
                continue;
            }
            // The DAG as loaded now decides; a DAG this process has not loaded (a run handed
            // over by `ferry run`, or of a DAG whose file is gone) by the run's own version.
            let loaded = match self.dags.get(&run.dag_id).cloned() {
                Some(loaded) => loaded,
                None => match self.version_of(&run).await? {
                    Some(loaded) => loaded,
                    None => continue,
                },
            };
            let active = self
                .runs
                .values()
                .filter(|r| r.run.dag_id == run.dag_id)
                .count();
            if active >= loaded.dag.max_active_runs as usize {
                continue;
            }
            let now = millis(self.clock.now());
            if self
                .store
                .transition_run(&run, RunState::Queued, RunState::Running, now, "scheduler")
                .await?
            {
                self.report(&run, None, 0, "running", "started");
                if let Some(run) = self.store.run(&run.run_id).await? {
                    self.activate(run).await?;
                }
            }
        }
        Ok(())
    }

    /// Loads a running run into memory and decides what its tasks can do.
    pub(super) async fn activate(&mut self, run: RunRecord) -> Result<(), EngineError> {
        let Some(loaded) = self.version_of(&run).await? else {
            return Ok(());
        };
        let tasks = self.store.task_instances(run.id).await?;
        let pk = run.id;
        let mut queued = Vec::new();
        let mut retries = Vec::new();
        for (index, task) in tasks.iter().enumerate() {
            match task.state()? {
                TaskState::Queued => queued.push((index, task.priority)),
                TaskState::UpForRetry | TaskState::Deferred => {
                    retries.push((
                        index,
                        task.ready_at.unwrap_or_default(),
                        task.state()? == TaskState::Deferred,
                    ));
                }
                _ => {}
            }
        }
        if let Some(limit) = loaded.dag.dagrun_timeout {
            let started = run.started_at.unwrap_or_else(|| millis(self.clock.now()));
            let deadline = started + i64::try_from(limit.0.as_millis()).unwrap_or(i64::MAX / 2);
            self.timers
                .push(Reverse((deadline, TimerKind::RunTimeout, pk, 0)));
        }
        let previous_success = self
            .store
            .previous_success(&run.dag_id, run.logical_date)
            .await?
            .map(|earlier| ferry_dag::timetable::DataInterval {
                start: from_millis(earlier.interval_start),
                end: from_millis(earlier.interval_end),
            });
        let mut active = ActiveRun::new(run, loaded, tasks);
        active.previous_success = previous_success;
        self.runs.insert(pk, active);
        for (index, priority) in queued {
            self.push_ready(pk, index, priority);
        }
        for (index, at, deferred) in retries {
            let kind = if deferred {
                TimerKind::Deferral
            } else {
                TimerKind::Retry
            };
            self.timers.push(Reverse((at, kind, pk, index)));
        }
        let all: Vec<usize> = (0..self.runs.get(&pk).map_or(0, |r| r.tasks.len())).collect();
        self.advance(pk, all).await
    }

    pub(super) async fn finish_run_if_done(&mut self, pk: i64) -> Result<(), EngineError> {
        let Some(active) = self.runs.get(&pk) else {
            return Ok(());
        };
        if active.unfinished > 0 {
            return Ok(());
        }
        // An operator may have cleared tasks meanwhile (`ferry tasks clear`): the store decides.
        let stored = self.store.task_instances(pk).await?;
        let changed = stored.len() != active.tasks.len()
            || stored
                .iter()
                .zip(&active.tasks)
                .any(|(s, m)| s.state != m.state || s.try_number != m.try_number);
        if changed {
            let run = active.run.clone();
            self.runs.remove(&pk);
            return Box::pin(self.activate(run)).await;
        }
        let states: Vec<TaskState> = active
            .tasks
            .iter()
            .map(|t| t.state().unwrap_or(TaskState::Failed))
            .collect();
        let Some(success) = run_outcome(&states) else {
            return Ok(());
        };
        let to = if success {
            RunState::Success
        } else {
            RunState::Failed
        };
        let run = active.run.clone();
        if self
            .store
            .transition_run(
                &run,
                RunState::Running,
                to,
                millis(self.clock.now()),
                "scheduler",
            )
            .await?
        {
            self.report(
                &run,
                None,
                0,
                to.as_str(),
                if success {
                    "all tasks done"
                } else {
                    "a task failed"
                },
            );
            self.wake_waiters(&run).await?;
            // An operator may have cleared tasks just as the run ended: if so, it is queued
            // again (the operator's command checks the same after its own change).
            if self
                .store
                .reopen_if_unfinished(pk, millis(self.clock.now()))
                .await?
            {
                self.report(
                    &run,
                    None,
                    0,
                    "queued",
                    "reopened: tasks were cleared as it ended",
                );
            }
        }
        self.runs.remove(&pk);
        self.timed_out.remove(&pk);
        let runs = &self.runs;
        self.versions
            .retain(|id, _| runs.values().any(|active| active.dag.version_id == *id));
        self.runs_changed = true;
        Ok(())
    }

    /// `dagrun_timeout` passed: running attempts are stopped (and not retried), every other
    /// unfinished task fails, and so the run fails.
    pub(super) async fn time_out_run(&mut self, pk: i64) -> Result<(), EngineError> {
        let Some(active) = self.runs.get(&pk) else {
            return Ok(());
        };
        // A timer of an earlier start of this run (it was cleared and started again) is not
        // this start's deadline.
        let deadline = active
            .dag
            .dag
            .dagrun_timeout
            .zip(active.run.started_at)
            .map(|(limit, started)| {
                started + i64::try_from(limit.0.as_millis()).unwrap_or(i64::MAX / 2)
            });
        if deadline.is_none_or(|deadline| deadline > millis(self.clock.now())) {
            return Ok(());
        }
        let waiting: Vec<(usize, TaskState)> = active
            .tasks
            .iter()
            .enumerate()
            .filter_map(|(index, task)| task.state().ok().map(|state| (index, state)))
            .filter(|(_, state)| !state.is_terminal() && *state != TaskState::Running)
            .collect();
        self.timed_out.insert(pk);
        for slot in self.running.values_mut().filter(|slot| slot.run_pk == pk) {
            slot.stop(StopReason::RunTimeout, false);
        }
        let detail = "the run exceeded its dagrun_timeout";
        for (index, state) in waiting {
            self.move_task(
                pk,
                index,
                Transition::new(state, TaskState::Failed, "timeout", detail),
            )
            .await?;
        }
        self.finish_run_if_done(pk).await
    }

    /// After a reload: keep the DAGs that are valid now, those whose file is still there but
    /// no longer valid, and those whose file or folder could not be read (their last valid
    /// version); drop those whose file is gone or now defines another DAG.
    pub(super) fn retain_present(
        &mut self,
        valid: &[(Dag, String)],
        files: &[std::path::PathBuf],
        unreadable: &[std::path::PathBuf],
    ) {
        let valid_ids: Vec<&str> = valid.iter().map(|(dag, _)| dag.id.as_str()).collect();
        let valid_files: Vec<&std::path::Path> =
            valid.iter().map(|(dag, _)| dag.file.as_path()).collect();
        self.dags.retain(|id, loaded| {
            let file = &loaded.dag.file;
            valid_ids.contains(&id.as_str())
                || ((files.contains(file) || unreadable.iter().any(|path| file.starts_with(path)))
                    && !valid_files.contains(&file.as_path()))
        });
    }

    /// The DAG as it was when `run` was created: a run keeps the version it started with even
    /// if the file changed since, or is not loaded here. Falls back to the version loaded now
    /// if the recorded one cannot be read; `None` if there is neither.
    pub(super) async fn version_of(
        &mut self,
        run: &RunRecord,
    ) -> Result<Option<Arc<LoadedDag>>, EngineError> {
        let current = self.dags.get(&run.dag_id).cloned();
        if let Some(current) = current
            .as_ref()
            .filter(|c| c.version_id == run.dag_version_id)
        {
            return Ok(Some(current.clone()));
        }
        if let Some(known) = self.versions.get(&run.dag_version_id) {
            return Ok(Some(known.clone()));
        }
        let Some((file, source)) = self.store.dag_version(run.dag_version_id).await? else {
            return Ok(current);
        };
        let parsed = ferry_dag::parse_dag(std::path::Path::new(&file), &source, &self.templates);
        let Some(dag) = parsed.dag else {
            return Ok(current);
        };
        let loaded = Arc::new(LoadedDag {
            dag,
            version_id: run.dag_version_id,
            hash: content_hash(&source),
        });
        self.versions.insert(run.dag_version_id, loaded.clone());
        Ok(Some(loaded))
    }
}
