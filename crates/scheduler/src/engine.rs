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
    /// Every DAG file found, valid or not. A loaded DAG whose file is still there but now
    /// invalid keeps its last valid version; one whose file is gone stops being scheduled (its
    /// history stays).
    pub files: Vec<std::path::PathBuf>,
    /// False when nothing changed on disk (the other fields are then empty and ignored).
    pub changed: bool,
}

impl Reload {
    /// Nothing changed on disk: keep everything as it is.
    pub fn unchanged() -> Self {
        Self {
            dags: Vec::new(),
            files: Vec::new(),
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

/// A task state change the engine makes: from, to, why; and, for an attempt's worker, the
/// fencing lease it holds.
pub(crate) struct Transition<'a> {
    from: TaskState,
    to: TaskState,
    lease: Option<i64>,
    ready_at: Option<i64>,
    exit_code: Option<i64>,
    cause: &'a str,
    detail: &'a str,
}

impl<'a> Transition<'a> {
    fn new(from: TaskState, to: TaskState, cause: &'a str, detail: &'a str) -> Self {
        Self {
            from,
            to,
            lease: None,
            ready_at: None,
            exit_code: None,
            cause,
            detail,
        }
    }

    /// Only if the task still holds this fencing lease.
    fn lease(mut self, lease: i64) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Not before this time (retry delay, deferral poll).
    fn ready_at(mut self, at: Option<i64>) -> Self {
        self.ready_at = at;
        self
    }

    /// The attempt's exit code.
    fn exit_code(mut self, code: Option<i64>) -> Self {
        self.exit_code = code;
        self
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
    /// Running runs, by primary key.
    runs: HashMap<i64, ActiveRun>,
    /// Queued tasks: highest priority first, then first come: (priority, order, run, index).
    ready: BinaryHeap<(i64, Reverse<u64>, i64, usize)>,
    sequence: u64,
    /// Retries, deferral polls and run timeouts, earliest first: (due ms, kind, run, index).
    timers: BinaryHeap<Reverse<(i64, TimerKind, i64, usize)>>,
    /// Attempts holding an execution slot, by task instance id.
    running: HashMap<i64, Slot>,
    sender: mpsc::UnboundedSender<Message>,
    receiver: mpsc::UnboundedReceiver<Message>,
    observer: Box<dyn Fn(&Progress) + Send>,
    stop_attempts: CancellationToken,
    /// A run was created or ended since runs were last looked at.
    runs_changed: bool,
    /// When the timetables must be looked at again (`None`: now).
    next_schedule_check: Option<DateTime<Utc>>,
    /// Older DAG versions that active runs still use, by version id.
    versions: HashMap<i64, Arc<LoadedDag>>,
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
            sender,
            receiver,
            observer,
            stop_attempts: CancellationToken::new(),
            runs_changed: true,
            next_schedule_check: None,
            versions: HashMap::new(),
            timed_out: std::collections::HashSet::new(),
        }
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
                        let Reload { dags, files, changed } = reload();
                        if changed {
                            self.retain_present(&dags, &files);
                            self.load_dags(dags).await?;
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
    pub(super) async fn shut_down(&mut self) -> Result<(), EngineError> {
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

    pub(super) fn next_wakeup(&self, schedule: bool) -> Option<DateTime<Utc>> {
        let timer = self.timers.peek().map(|Reverse((at, ..))| from_millis(*at));
        let due = if schedule {
            self.next_schedule_check
        } else {
            None
        };
        [timer, due].into_iter().flatten().min()
    }

    pub(super) fn report(
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

mod recovery;
mod runs;
mod tasks;
mod timers;

#[cfg(test)]
mod tests;
