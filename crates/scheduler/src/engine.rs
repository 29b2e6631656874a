//! The engine loop: creates runs from timetables, queues tasks whose upstream tasks have
//! decided, claims slots, starts attempts, and reacts to each attempt's end at once.
//!
//! One task owns all the engine's state; attempts run in their own tasks and report back over a
//! channel, so nothing is locked and no polling interval sits between two tasks. Every decision
//! is written to the store before it is acted on.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ferry_dag::dag::Dag;
use ferry_dag::template::Templates;
use ferry_executor::command::{GroupSignal, signal_group};
use ferry_executor::{LogBuffer, Outcome};
use ferry_store::{
    NewDagVersion, NewRun, NewTaskInstance, RunFilter, RunRecord, RunState, Store, TaskChange,
    TaskInstanceRecord, TaskState,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, from_millis, millis};
use crate::render::{Prepared, Work, prepare};
use crate::trigger::{Decision, decide, run_outcome};
use crate::{EngineError, due, retry};

/// How much output of one attempt is kept.
const LOG_LIMIT: usize = 1 << 20;

/// Settings of the engine.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// This process's name in the store (`host:pid`).
    pub worker: String,
    /// Attempts executing at once, over all DAGs.
    pub parallelism: usize,
    /// Slots per named pool; a pool not listed has `parallelism` slots.
    pub pools: BTreeMap<String, usize>,
    /// How often running attempts are marked alive.
    pub heartbeat_interval: Duration,
    /// An attempt not marked alive for this long is considered lost.
    pub heartbeat_timeout: Duration,
    /// On shutdown, how long running attempts may take to finish before they are stopped.
    pub shutdown_grace: Duration,
}

/// A change worth telling the person watching.
#[derive(Clone, Debug)]
pub struct Progress {
    /// When.
    pub at: DateTime<Utc>,
    /// The DAG.
    pub dag_id: String,
    /// The run.
    pub run_id: String,
    /// The task, for task changes.
    pub task_id: Option<String>,
    /// The attempt, for task changes.
    pub try_number: i64,
    /// The new state (`running`, `success`, ...).
    pub state: String,
    /// Why, or what happened.
    pub detail: String,
}

/// A loaded DAG and the version of it runs are created with.
#[derive(Debug)]
pub struct LoadedDag {
    /// The DAG.
    pub dag: Dag,
    /// Its version id in the store.
    pub version_id: i64,
    hash: String,
}

/// What a reload of the DAG folders gave.
#[derive(Debug, Default)]
pub struct Reload {
    /// Valid DAGs with the text of their files.
    pub dags: Vec<(Dag, String)>,
    /// Ids to keep scheduling: the valid DAGs and those whose file exists but is now invalid
    /// (they keep their last valid version). Others were deleted and stop being scheduled.
    pub keep: Vec<String>,
    /// False when nothing changed on disk (the other fields are then empty and ignored).
    pub changed: bool,
}

impl Reload {
    /// Nothing changed on disk: keep everything as it is.
    pub fn unchanged() -> Self {
        Self {
            dags: Vec::new(),
            keep: Vec::new(),
            changed: false,
        }
    }
}

/// Reads the DAG folders again; `ferry serve` calls it every `reload_interval`.
pub type Reloader<'a> = (&'a mut (dyn FnMut() -> Reload + Send), Duration);

struct ActiveRun {
    run: RunRecord,
    dag: Arc<LoadedDag>,
    tasks: Vec<TaskInstanceRecord>,
    unfinished: usize,
    /// Task instance index → index of the task in the DAG, and back.
    to_dag: Vec<Option<usize>>,
    to_instance: Vec<Option<usize>>,
}

impl ActiveRun {
    fn new(run: RunRecord, dag: Arc<LoadedDag>, tasks: Vec<TaskInstanceRecord>) -> Self {
        let by_id: HashMap<&str, usize> = dag
            .dag
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.as_str(), i))
            .collect();
        let to_dag: Vec<Option<usize>> = tasks
            .iter()
            .map(|t| by_id.get(t.task_id.as_str()).copied())
            .collect();
        let mut to_instance = vec![None; dag.dag.tasks.len()];
        for (instance, position) in to_dag.iter().enumerate() {
            if let Some(position) = position {
                to_instance[*position] = Some(instance);
            }
        }
        let unfinished = tasks
            .iter()
            .filter(|t| t.state().is_ok_and(|s| !s.is_terminal()))
            .count();
        Self {
            run,
            dag,
            tasks,
            unfinished,
            to_dag,
            to_instance,
        }
    }

    /// The DAG's definition of task instance `index`.
    fn task(&self, index: usize) -> Option<&ferry_dag::Task> {
        self.to_dag[index].map(|position| &self.dag.dag.tasks[position])
    }

    /// Instance indexes of the upstream (or downstream) tasks of instance `index`.
    fn neighbours(&self, index: usize, upstream: bool) -> Vec<usize> {
        let Some(position) = self.to_dag[index] else {
            return Vec::new();
        };
        let graph = &self.dag.dag.graph;
        let positions = if upstream {
            graph.upstream(position)
        } else {
            graph.downstream(position)
        };
        positions
            .into_iter()
            .filter_map(|p| self.to_instance[p])
            .collect()
    }
}

struct Slot {
    run_pk: i64,
    dag_id: String,
    pool: String,
    cancel: CancellationToken,
}

struct Finished {
    run_pk: i64,
    index: usize,
    lease: i64,
    attempt_id: i64,
    outcome: Outcome,
    log: String,
}

enum Message {
    Started { task_id: i64, lease: i64, pid: u32 },
    Finished(Finished),
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    Retry,
    Deferral,
    RunTimeout,
}

/// The engine.
pub struct Engine {
    store: Store,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
    templates: Templates,
    http: reqwest::Client,
    dags: HashMap<String, Arc<LoadedDag>>,
    runs: HashMap<i64, ActiveRun>,
    ready: BinaryHeap<(i64, Reverse<u64>, i64, usize)>,
    sequence: u64,
    timers: BinaryHeap<Reverse<(i64, TimerKind, i64, usize)>>,
    running: HashMap<i64, Slot>,
    deferred_since: HashMap<(i64, usize), i64>,
    sender: mpsc::UnboundedSender<Message>,
    receiver: mpsc::UnboundedReceiver<Message>,
    observer: Box<dyn Fn(&Progress) + Send>,
    stop_attempts: CancellationToken,
    /// A run was created or ended since runs were last looked at.
    runs_changed: bool,
    /// When the timetables must be looked at again (`None`: now).
    next_schedule_check: Option<DateTime<Utc>>,
    /// Runs past their `dagrun_timeout`: their attempts are not retried.
    timed_out: std::collections::HashSet<i64>,
}

impl Engine {
    /// An engine over `store`; `observer` hears of every state change.
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        config: EngineConfig,
        observer: Box<dyn Fn(&Progress) + Send>,
    ) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        Self {
            store,
            clock,
            config,
            templates: Templates::new(),
            http: reqwest::Client::new(),
            dags: HashMap::new(),
            runs: HashMap::new(),
            ready: BinaryHeap::new(),
            sequence: 0,
            timers: BinaryHeap::new(),
            running: HashMap::new(),
            deferred_since: HashMap::new(),
            sender,
            receiver,
            observer,
            stop_attempts: CancellationToken::new(),
            runs_changed: true,
            next_schedule_check: None,
            timed_out: std::collections::HashSet::new(),
        }
    }

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

    async fn insert_run(
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

    /// Runs until `until` is cancelled or, with `focus`, until those runs have ended (only they
    /// are worked on). `schedule` creates runs from timetables (`ferry serve`); `reloader`
    /// rereads the DAG folders now and then. Returns the focus runs as they ended.
    pub async fn drive(
        &mut self,
        until: CancellationToken,
        focus: Option<&[String]>,
        schedule: bool,
        mut reloader: Option<Reloader<'_>>,
    ) -> Result<Vec<RunRecord>, EngineError> {
        self.recover_lost_attempts(true).await?;
        let mut heartbeat = tokio::time::interval(self.config.heartbeat_interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let reload_every = reloader
            .as_ref()
            .map_or(Duration::from_secs(3600), |(_, every)| *every);
        let mut reload_tick = tokio::time::interval(reload_every);
        reload_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        reload_tick.tick().await;
        loop {
            if schedule
                && self
                    .next_schedule_check
                    .is_none_or(|at| at <= self.clock.now())
            {
                self.create_due_runs().await?;
            }
            let runs_changed = std::mem::take(&mut self.runs_changed);
            if runs_changed {
                self.start_queued_runs(focus).await?;
            }
            self.fire_timers().await?;
            self.dispatch().await?;
            if let Some(run_ids) = focus
                && runs_changed
                && self.running.is_empty()
            {
                let mut ended = Vec::new();
                for run_id in run_ids {
                    match self.store.run(run_id).await? {
                        Some(run) if run.state()?.is_terminal() => ended.push(run),
                        _ => break,
                    }
                }
                if ended.len() == run_ids.len() {
                    return Ok(ended);
                }
            }
            if self.runs_changed {
                // Something ended or started during this pass: look again before sleeping.
                continue;
            }
            let wake = self.next_wakeup(schedule);
            let sleep = match wake {
                Some(at) => (at - self.clock.now()).to_std().unwrap_or_default(),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                message = self.receiver.recv() => {
                    if let Some(message) = message {
                        self.handle(message).await?;
                        // Drain what else has arrived before deciding again.
                        while let Ok(message) = self.receiver.try_recv() {
                            self.handle(message).await?;
                        }
                    }
                }
                () = tokio::time::sleep(sleep) => {}
                _ = heartbeat.tick() => {
                    self.store.heartbeat(&self.config.worker, millis(self.clock.now())).await?;
                    self.recover_lost_attempts(false).await?;
                    // Runs changed by others (`ferry tasks clear`, another node) are picked up.
                    self.runs_changed = true;
                }
                _ = reload_tick.tick(), if reloader.is_some() => {
                    if let Some((reload, _)) = reloader.as_mut() {
                        let Reload { dags, keep, changed } = reload();
                        if changed {
                            self.load_dags(dags).await?;
                            self.dags.retain(|id, _| keep.contains(id));
                            self.next_schedule_check = None;
                            self.runs_changed = true;
                        }
                    }
                }
                () = until.cancelled() => {
                    self.shut_down().await?;
                    return Ok(Vec::new());
                }
            }
        }
    }

    /// Stops starting tasks, lets running attempts finish within the grace period, then stops
    /// them; their ends are recorded like any other.
    async fn shut_down(&mut self) -> Result<(), EngineError> {
        let deadline = tokio::time::Instant::now() + self.config.shutdown_grace;
        while !self.running.is_empty() {
            tokio::select! {
                message = self.receiver.recv() => match message {
                    Some(message) => self.handle(message).await?,
                    None => break,
                },
                () = tokio::time::sleep_until(deadline) => {
                    self.stop_attempts.cancel();
                }
            }
        }
        Ok(())
    }

    fn next_wakeup(&self, schedule: bool) -> Option<DateTime<Utc>> {
        let timer = self.timers.peek().map(|Reverse((at, ..))| from_millis(*at));
        let due = if schedule {
            self.next_schedule_check
        } else {
            None
        };
        [timer, due].into_iter().flatten().min()
    }

    /// Creates the runs that are due, and notes when the next one will be.
    pub async fn create_due_runs(&mut self) -> Result<(), EngineError> {
        let now = self.clock.now();
        let dags: Vec<Arc<LoadedDag>> = self.dags.values().cloned().collect();
        let mut next_check: Option<DateTime<Utc>> = None;
        let latest_dates = self.store.latest_logical_dates().await?;
        let mut pending = Vec::new();
        for loaded in dags {
            if loaded.dag.schedule.is_none() {
                continue;
            }
            let mut latest = latest_dates.get(&loaded.dag.id).map(|ms| from_millis(*ms));
            let due = due::due_intervals(&loaded.dag, latest, now);
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
    async fn start_queued_runs(&mut self, focus: Option<&[String]>) -> Result<(), EngineError> {
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
            let Some(loaded) = self.dags.get(&run.dag_id).cloned() else {
                continue;
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
    async fn activate(&mut self, run: RunRecord) -> Result<(), EngineError> {
        let Some(loaded) = self.dags.get(&run.dag_id).cloned() else {
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
        self.runs.insert(pk, ActiveRun::new(run, loaded, tasks));
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

    fn push_ready(&mut self, pk: i64, index: usize, priority: i64) {
        self.sequence += 1;
        self.ready
            .push((priority, Reverse(self.sequence), pk, index));
    }

    /// Decides the pending tasks among `candidates` of run `pk`, then ends the run if all ended.
    async fn advance(&mut self, pk: i64, candidates: Vec<usize>) -> Result<(), EngineError> {
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
                    TaskState::Pending,
                    to,
                    None,
                    None,
                    None,
                    "scheduler",
                    detail,
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

    fn downstream_indexes(&self, pk: i64, index: usize) -> Vec<usize> {
        self.runs
            .get(&pk)
            .map(|active| active.neighbours(index, false))
            .unwrap_or_default()
    }

    async fn finish_run_if_done(&mut self, pk: i64) -> Result<(), EngineError> {
        let Some(active) = self.runs.get(&pk) else {
            return Ok(());
        };
        if active.unfinished > 0 {
            return Ok(());
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
        }
        self.runs.remove(&pk);
        self.timed_out.remove(&pk);
        self.runs_changed = true;
        Ok(())
    }

    /// Writes a task's change, then mirrors it in memory. False if the store refused (the task
    /// had moved on).
    #[allow(clippy::too_many_arguments)]
    async fn move_task(
        &mut self,
        pk: i64,
        index: usize,
        from: TaskState,
        to: TaskState,
        lease: Option<i64>,
        ready_at: Option<i64>,
        exit_code: Option<i64>,
        cause: &str,
        detail: &str,
    ) -> Result<bool, EngineError> {
        let now = millis(self.clock.now());
        let Some(active) = self.runs.get_mut(&pk) else {
            return Ok(false);
        };
        let record = active.tasks[index].clone();
        let change = TaskChange {
            id: record.id,
            from,
            to,
            lease,
            ready_at,
            exit_code,
            at: now,
            cause,
            detail,
        };
        if !self
            .store
            .transition_task(&active.run, &record, &change)
            .await?
        {
            return Ok(false);
        }
        let task = &mut active.tasks[index];
        task.state = to.as_str().to_string();
        task.ready_at = ready_at;
        if to.is_terminal() && !from.is_terminal() {
            active.unfinished = active.unfinished.saturating_sub(1);
        }
        let run = active.run.clone();
        let (task_id, try_number) = (task.task_id.clone(), task.try_number);
        self.report(&run, Some(&task_id), try_number, to.as_str(), detail);
        Ok(true)
    }

    /// Starts queued tasks, highest priority first, within parallelism, pools and each DAG's
    /// `max_active_tasks`.
    async fn dispatch(&mut self) -> Result<(), EngineError> {
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
    async fn start(&mut self, pk: i64, index: usize) -> Result<(), EngineError> {
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
                    .finish(Finished {
                        run_pk: pk,
                        index,
                        lease,
                        attempt_id,
                        outcome,
                        log: String::new(),
                    })
                    .await;
            }
        };
        match prepared.work {
            Work::Noop => {
                self.finish(Finished {
                    run_pk: pk,
                    index,
                    lease,
                    attempt_id,
                    outcome: Outcome::Succeeded { code: None },
                    log: String::new(),
                })
                .await
            }
            Work::WaitForDag { .. } => {
                self.deferred_since.entry((pk, index)).or_insert(now);
                self.check_wait(pk, index, lease, attempt_id, &prepared)
                    .await
            }
            work => {
                self.spawn(
                    pk,
                    index,
                    lease,
                    attempt_id,
                    &dag.dag.id,
                    &claimed.pool,
                    claimed.id,
                    work,
                );
                Ok(())
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn(
        &mut self,
        pk: i64,
        index: usize,
        lease: i64,
        attempt_id: i64,
        dag_id: &str,
        pool: &str,
        task_id: i64,
        work: Work,
    ) {
        let cancel = self.stop_attempts.child_token();
        self.running.insert(
            task_id,
            Slot {
                run_pk: pk,
                dag_id: dag_id.to_string(),
                pool: pool.to_string(),
                cancel: cancel.clone(),
            },
        );
        let sender = self.sender.clone();
        let http = self.http.clone();
        tokio::spawn(async move {
            let log = LogBuffer::new(LOG_LIMIT);
            let outcome = match &work {
                Work::Command(spec) => {
                    let started = sender.clone();
                    ferry_executor::command::run(spec, &log, &cancel, move |pid| {
                        let _ = started.send(Message::Started {
                            task_id,
                            lease,
                            pid,
                        });
                    })
                    .await
                }
                Work::Http(spec) => ferry_executor::http::run(&http, spec, &log, &cancel).await,
                Work::Noop | Work::WaitForDag { .. } => Outcome::Succeeded { code: None },
            };
            let _ = sender.send(Message::Finished(Finished {
                run_pk: pk,
                index,
                lease,
                attempt_id,
                outcome,
                log: log.text(),
            }));
        });
    }

    async fn handle(&mut self, message: Message) -> Result<(), EngineError> {
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
    async fn finish(&mut self, finished: Finished) -> Result<(), EngineError> {
        let Finished {
            run_pk: pk,
            index,
            lease,
            attempt_id,
            outcome,
            log,
        } = finished;
        let now = self.clock.now();
        self.store
            .finish_attempt(
                attempt_id,
                outcome.label(),
                outcome.code(),
                &log,
                millis(now),
            )
            .await?;
        let Some(active) = self.runs.get(&pk) else {
            return Ok(());
        };
        let record = active.tasks[index].clone();
        let policy = active.task(index).map(|t| t.retry);
        let (to, ready_at, detail) = match &outcome {
            Outcome::Succeeded { .. } => (TaskState::Success, None, "succeeded".to_string()),
            Outcome::Failed {
                retryable,
                retry_after,
                reason,
                ..
            } => {
                let can_retry = *retryable
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
        };
        let cause = if to == TaskState::UpForRetry {
            "retry"
        } else {
            "executor"
        };
        if self
            .move_task(
                pk,
                index,
                TaskState::Running,
                to,
                Some(lease),
                ready_at,
                outcome.code(),
                cause,
                &detail,
            )
            .await?
        {
            if let Some(at) = ready_at {
                self.timers.push(Reverse((at, TimerKind::Retry, pk, index)));
            } else {
                let downstream = self.downstream_indexes(pk, index);
                self.advance(pk, downstream).await?;
            }
        }
        Ok(())
    }

    /// A `wait_for_dag` attempt: success when the other DAG's run for the same interval has
    /// succeeded; otherwise deferred (no slot held) until the next poll, failed at its timeout.
    async fn check_wait(
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
    async fn wake_waiters(&mut self, finished: &RunRecord) -> Result<(), EngineError> {
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

    /// `dagrun_timeout` passed: running attempts are stopped (and not retried), every other
    /// unfinished task fails, and so the run fails.
    async fn time_out_run(&mut self, pk: i64) -> Result<(), EngineError> {
        let Some(active) = self.runs.get(&pk) else {
            return Ok(());
        };
        let waiting: Vec<(usize, TaskState)> = active
            .tasks
            .iter()
            .enumerate()
            .filter_map(|(index, task)| task.state().ok().map(|state| (index, state)))
            .filter(|(_, state)| !state.is_terminal() && *state != TaskState::Running)
            .collect();
        self.timed_out.insert(pk);
        for slot in self.running.values().filter(|slot| slot.run_pk == pk) {
            slot.cancel.cancel();
        }
        let detail = "the run exceeded its dagrun_timeout";
        for (index, state) in waiting {
            self.move_task(
                pk,
                index,
                state,
                TaskState::Failed,
                None,
                None,
                None,
                "timeout",
                detail,
            )
            .await?;
        }
        self.finish_run_if_done(pk).await
    }

    async fn fire_timers(&mut self) -> Result<(), EngineError> {
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

    /// Attempts whose worker is gone: on start-up, those of dead processes on this host (and
    /// any whose heartbeat is older than the timeout); later, only the latter. Their orphaned
    /// processes are stopped, then they are retried or failed by their policy.
    async fn recover_lost_attempts(&mut self, starting: bool) -> Result<(), EngineError> {
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

    fn report(
        &self,
        run: &RunRecord,
        task_id: Option<&str>,
        try_number: i64,
        state: &str,
        detail: &str,
    ) {
        (self.observer)(&Progress {
            at: self.clock.now(),
            dag_id: run.dag_id.clone(),
            run_id: run.run_id.clone(),
            task_id: task_id.map(str::to_string),
            try_number,
            state: state.to_string(),
            detail: detail.to_string(),
        });
    }
}

/// The task instances a new run of `dag` starts with.
fn new_instances(dag: &Dag) -> Vec<NewTaskInstance<'_>> {
    dag.tasks
        .iter()
        .map(|task| NewTaskInstance {
            task_id: &task.id,
            max_tries: i64::from(task.retry.retries) + 1,
            priority: i64::from(task.priority),
            pool: &task.pool,
        })
        .collect()
}

/// A run of `loaded` for `interval`, to create.
fn new_run<'a>(
    loaded: &'a LoadedDag,
    run_id: &'a str,
    interval: ferry_dag::timetable::DataInterval,
    run_type: &'a str,
    conf: &'a str,
    at: i64,
) -> NewRun<'a> {
    NewRun {
        dag_id: &loaded.dag.id,
        run_id,
        interval_start: millis(interval.start),
        interval_end: millis(interval.end),
        run_type,
        conf,
        dag_version_id: loaded.version_id,
        at,
    }
}

/// A run's id, unique among all DAGs: `dag__type__logical-date` (Airflow's run id, prefixed
/// with the DAG so that `ferry logs RUN TASK` needs no DAG).
fn run_id(dag_id: &str, run_type: &str, interval: ferry_dag::timetable::DataInterval) -> String {
    format!("{dag_id}__{run_type}__{}", interval.start.to_rfc3339())
}

/// `host:pid` of this process.
pub fn worker_name() -> String {
    format!("{}:{}", host_name(), std::process::id())
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

/// True when `worker` (`host:pid`) was a process of this host that no longer exists.
fn worker_is_dead_here(worker: &str) -> bool {
    let Some((host, pid)) = worker.rsplit_once(':') else {
        return false;
    };
    host == host_name()
        && pid
            .parse::<u32>()
            .is_ok_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
}

/// FNV-1a of a DAG file's text: the version key (stable across builds, unlike std's hasher).
fn content_hash(text: &str) -> String {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests;
