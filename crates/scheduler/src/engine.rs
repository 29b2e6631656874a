//! The engine loop: creates runs from timetables, queues tasks whose upstream tasks have
//! decided, claims slots, starts attempts, and reacts to each attempt's end at once.
//!
//! One task owns all the engine's state; attempts run under their own supervisors (commands) or
//! tasks (requests) and report back over a channel, so nothing is locked and no polling interval
//! sits between two tasks. Every decision is written to the store before it is acted on, and the
//! in-memory copy of the runs is only a cache: when another process changes the store, or the
//! store fails for a while, it is rebuilt from the store. Heartbeats, the watch on the store and
//! DAG reloads run beside the loop, so a long pass never delays them.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ferry_dag::dag::Dag;
use ferry_dag::template::Templates;
use ferry_executor::Outcome;
use ferry_executor::supervisor::{Launcher, Leftovers, Spares, SupervisorId};
use ferry_secrets::Redactor;
use ferry_store::{
    NewDagVersion, NewRun, NewTaskInstance, OwnerLock, RunFilter, RunRecord, RunState, Store,
    StoreError, TaskChange, TaskInstanceRecord, TaskState,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, from_millis, millis};
use crate::render::{AttemptContext, Prepared, Work, prepare, run_if};
use crate::trigger::{Decision, decide, run_outcome};
use crate::{EngineError, due, retry};

/// How much output of one attempt is kept.
const LOG_LIMIT: usize = 1 << 20;

/// Supervisors kept started ahead of need (each waits, idle, for a go-ahead).
const SPARE_SUPERVISORS: usize = 2;

/// At most this many tasks are started in one pass of the loop; then messages, timers and
/// wake-ups are looked at before the next pass.
const STARTS_PER_PASS: usize = 64;

/// What SIGTERM (or Ctrl-C) does to running command attempts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StopMode {
    /// Leave them to their supervisors and exit at once; the next start reattaches to them.
    #[default]
    Detach,
    /// Let them finish within the grace period, then stop them (their try does not count).
    Drain,
}

/// Settings of the engine.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// This process's name in the store, unique per process start ([`worker_name`]).
    pub worker: String,
    /// Attempts executing at once, over all DAGs.
    pub parallelism: usize,
    /// Slots per named pool; a pool not listed has `parallelism` slots.
    pub pools: BTreeMap<String, usize>,
    /// How often running attempts are marked alive.
    pub heartbeat_interval: Duration,
    /// An attempt of another worker not marked alive for this long is considered lost.
    pub heartbeat_timeout: Duration,
    /// On a drain, how long running attempts may take to finish before they are stopped.
    pub shutdown_grace: Duration,
    /// What a stop request does to running command attempts.
    pub stop_mode: StopMode,
    /// Where attempt folders (output and result of each supervised attempt) are kept.
    pub attempts_dir: PathBuf,
    /// How supervisors are started.
    pub launcher: Launcher,
    /// The daemon's environment variables that commands inherit (the allow-list, resolved).
    pub task_env: Vec<(String, String)>,
    /// What happens to processes a command leaves behind.
    pub leftovers: Leftovers,
    /// The configuration's secrets, masked wherever they would show.
    pub secrets: Redactor,
    /// What runs work on named connections (`query` tasks); without it such tasks fail.
    pub connectors: Option<ferry_executor::connector::SharedConnectors>,
    /// The environment ferry runs in (`--env`), the templates' `env`.
    pub environment: String,
}

/// How a caller asks the engine to stop: `requested` once (SIGTERM, Ctrl-C) applies the
/// [`StopMode`]; `forced` (a second signal) stops running attempts at once.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    /// Stop starting tasks and shut down by the stop mode.
    pub requested: CancellationToken,
    /// Stop everything now.
    pub forced: CancellationToken,
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

/// Figures of the engine's loop that a metrics endpoint reads while the loop runs.
#[derive(Debug, Default)]
pub struct LoopGauges {
    /// How late (µs) the loop last woke for work it had planned (a due run, a retry, a
    /// timeout): the scheduler's lag.
    pub lag_micros: AtomicU64,
    /// Attempts running now (slots in use, over all pools).
    pub running: AtomicU64,
}

/// A loaded DAG and the version of it runs are created with.
#[derive(Clone, Debug)]
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
    /// Paths that could not be read (an unreadable folder or file): the DAGs whose files are
    /// there or below keep their last valid version.
    pub unreadable: Vec<std::path::PathBuf>,
    /// False when nothing changed on disk (the other fields are then empty and ignored).
    pub changed: bool,
}

impl Reload {
    /// Nothing changed on disk: keep everything as it is.
    pub fn unchanged() -> Self {
        Self::default()
    }
}

/// Reads the DAG folders again, on a blocking thread beside the loop; `ferry serve` gives one
/// with its `reload_interval`.
pub type Reloader = (Arc<dyn Fn() -> Reload + Send + Sync>, Duration);

struct ActiveRun {
    run: RunRecord,
    dag: Arc<LoadedDag>,
    tasks: Vec<TaskInstanceRecord>,
    unfinished: usize,
    /// Task instance index → index of the task in the DAG, and back.
    to_dag: Vec<Option<usize>>,
    to_instance: Vec<Option<usize>>,
    /// Task instance id → index.
    by_id: HashMap<i64, usize>,
    /// How many of its tasks were queued so far (their turns).
    turns: u64,
    /// The data interval of the DAG's latest successful run before this one (templates).
    previous_success: Option<ferry_dag::timetable::DataInterval>,
}

impl ActiveRun {
    fn new(run: RunRecord, dag: Arc<LoadedDag>, tasks: Vec<TaskInstanceRecord>) -> Self {
        let by_name: HashMap<&str, usize> = dag
            .dag
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.as_str(), i))
            .collect();
        let to_dag: Vec<Option<usize>> = tasks
            .iter()
            .map(|t| by_name.get(t.task_id.as_str()).copied())
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
        let by_id = tasks.iter().enumerate().map(|(i, t)| (t.id, i)).collect();
        Self {
            run,
            dag,
            tasks,
            unfinished,
            to_dag,
            to_instance,
            by_id,
            turns: 0,
            previous_success: None,
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
    grant_try: bool,
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
            grant_try: false,
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

    /// The attempt that ends here does not count against the task's tries.
    fn grant_try(mut self, grant: bool) -> Self {
        self.grant_try = grant;
        self
    }

    fn change(&self, id: i64, at: i64) -> TaskChange<'a> {
        TaskChange {
            id,
            from: self.from,
            to: self.to,
            lease: self.lease,
            ready_at: self.ready_at,
            exit_code: self.exit_code,
            grant_try: self.grant_try,
            at,
            cause: self.cause,
            detail: self.detail,
        }
    }
}

/// Why the engine asked an attempt to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StopReason {
    /// ferry is shutting down: the try does not count.
    Shutdown,
    /// The run exceeded its `dagrun_timeout`: the task fails without retries.
    RunTimeout,
    /// An operator cleared or marked the task: the attempt is fenced off and only closed.
    Intervention,
}

/// How the engine stops an attempt.
#[derive(Debug)]
enum Control {
    /// A request running inside the engine.
    InProcess(CancellationToken),
    /// Connector work waiting on a job outside ferry (a Glue run, an execution): a shutdown
    /// detaches it (the job goes on; the next start waits on it again), other stops cancel it.
    External {
        /// Stops the job.
        cancel: CancellationToken,
        /// Leaves the job running.
        detach: CancellationToken,
    },
    /// A command under its supervisor.
    Supervised(SupervisorId),
}

/// An attempt holding an execution slot.
struct Slot {
    run_pk: i64,
    /// The fencing lease of its claim: when the store's moves on, an operator cleared or
    /// marked the task and the attempt is stopped.
    lease: i64,
    run_id: String,
    dag_id: String,
    pool: String,
    control: Control,
    stop_reason: Option<StopReason>,
}

impl Slot {
    /// Asks the attempt to stop (gracefully, or `now`).
    fn stop(&mut self, reason: StopReason, now: bool) {
        self.stop_reason.get_or_insert(reason);
        match &self.control {
            Control::InProcess(cancel) => cancel.cancel(),
            Control::External { detach, .. } if reason == StopReason::Shutdown => detach.cancel(),
            Control::External { cancel, .. } => cancel.cancel(),
            Control::Supervised(id) => {
                id.stop(now);
            }
        }
    }
}

/// A queued task's place: highest priority first; then the runs take turns (the first task
/// queued of every run, then the second of every run, ...), so that a run of 20,000 tasks does
/// not hold back a small run queued after it; then first come: (priority, turn within its run,
/// order, run, index).
type Ready = (i64, Reverse<u64>, Reverse<u64>, i64, usize);

/// How an attempt ended, as its runner or supervisor reported it.
#[derive(Clone, Debug)]
struct AttemptEnd {
    outcome: Outcome,
    log: String,
    /// When it ended, if the supervisor said (else: when the engine hears of it).
    ended_at: Option<i64>,
    /// Its supervisor is gone without a result.
    lost: bool,
    /// Stopped by ferry's shutdown: the try does not count.
    interrupted: bool,
    /// Stopped because an operator cleared or marked its task.
    cleared: bool,
    /// Left running by ferry's shutdown (a job outside ferry): not recorded; the next start
    /// waits on the job again.
    detached: bool,
    /// The attempt folder to remove once the end is recorded.
    dir: Option<PathBuf>,
}

/// An attempt that ended, for the loop to record.
#[derive(Clone, Debug)]
struct Finished {
    run_pk: i64,
    task_instance: i64,
    lease: i64,
    attempt_id: i64,
    end: AttemptEnd,
}

enum Message {
    /// An attempt ended.
    Finished(Finished),
    /// Another process changed the store: look again.
    Wake,
    /// The DAG folders were read again.
    Reloaded(Reload),
    /// The store can no longer be used (replaced, or owned by another process now).
    Fault(StoreError),
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    /// A retry delay has passed.
    Retry,
    /// A queued task that could not start (no process could be made) is looked at again.
    Requeue,
    /// A `wait_for_dag` looks again.
    Deferral,
    /// A run's `dagrun_timeout` has passed.
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
    /// Running runs, by primary key: a cache of the store, rebuilt whenever in doubt.
    runs: HashMap<i64, ActiveRun>,
    /// Queued tasks, in the order they start: see [`Ready`].
    ready: BinaryHeap<Ready>,
    sequence: u64,
    /// Retries, deferral polls and run timeouts, earliest first: (due ms, kind, run, index).
    timers: BinaryHeap<Reverse<(i64, TimerKind, i64, usize)>>,
    /// Attempts holding an execution slot, by task instance id. Kept across rebuilds: their
    /// runners and supervisors go on whatever the store does.
    running: HashMap<i64, Slot>,
    /// The loop's figures, for metrics.
    gauges: Arc<LoopGauges>,
    sender: mpsc::UnboundedSender<Message>,
    receiver: mpsc::UnboundedReceiver<Message>,
    /// Attempt ends that could not be recorded yet (the store failed): recorded first after
    /// the store is back.
    unrecorded: VecDeque<Finished>,
    observer: Box<dyn Fn(&Progress) + Send>,
    /// A run was created or ended since runs were last looked at.
    runs_changed: bool,
    /// When the timetables must be looked at again (`None`: now).
    next_schedule_check: Option<DateTime<Utc>>,
    /// Older DAG versions that active runs still use, by version id.
    versions: HashMap<i64, Arc<LoadedDag>>,
    /// Runs past their `dagrun_timeout`: their attempts are not retried.
    timed_out: HashSet<i64>,
    /// Proof that this process owns the store, checked beside the loop.
    owner: Option<Arc<OwnerLock>>,
    /// Heartbeats and the watch on the store, stopped with the engine.
    background: Vec<tokio::task::AbortHandle>,
    /// A reload of the DAG folders is under way.
    reloading: bool,
    /// Supervisors started ahead of need.
    spares: Spares,
    /// Attempts running under another machine's supervisor, already reported.
    foreign: HashSet<i64>,
    /// Tasks whose fenced-off attempt (cleared by an operator) runs on another machine: they
    /// do not start again until it is recorded there.
    fenced_elsewhere: HashSet<i64>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        for task in &self.background {
            task.abort();
        }
    }
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
        let spares = Spares::new(
            config.launcher.clone(),
            config.attempts_dir.clone(),
            SPARE_SUPERVISORS.min(config.parallelism),
        );
        Self {
            spares,
            foreign: HashSet::new(),
            fenced_elsewhere: HashSet::new(),
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
            unrecorded: VecDeque::new(),
            observer,
            runs_changed: true,
            next_schedule_check: None,
            versions: HashMap::new(),
            timed_out: HashSet::new(),
            owner: None,
            background: Vec::new(),
            reloading: false,
            gauges: Arc::new(LoopGauges::default()),
        }
    }

    /// The loop's figures, as they change.
    pub fn gauges(&self) -> Arc<LoopGauges> {
        self.gauges.clone()
    }

    /// Tells the observer of a change this engine did not make (a caller following runs that
    /// another process executes).
    pub fn observe(&self, progress: &Progress) {
        (self.observer)(progress);
    }

    /// Hands the engine the proof that this process owns the store; the engine checks it beside
    /// the loop and stops if another process took the store.
    pub fn set_owner(&mut self, owner: OwnerLock) {
        self.owner = Some(Arc::new(owner));
    }

    /// Runs until `shutdown` is requested or, with `focus`, until those runs have ended (only
    /// they are started). `schedule` creates runs from timetables (`ferry serve`); `reloader`
    /// rereads the DAG folders now and then. Returns the focus runs as they ended.
    ///
    /// A store that fails for a while (a database restart, a network cut) does not stop the
    /// engine: it says so once, keeps the attempts running, waits for the store with backoff,
    /// rebuilds its view from the store and goes on.
    pub async fn drive(
        &mut self,
        shutdown: &Shutdown,
        focus: Option<&[String]>,
        schedule: bool,
        reloader: Option<Reloader>,
    ) -> Result<Vec<RunRecord>, EngineError> {
        self.start_background();
        loop {
            match self
                .drive_once(shutdown, focus, schedule, reloader.as_ref())
                .await
            {
                Err(EngineError::Store(error)) if error.is_transient() => {
                    let began = std::time::Instant::now();
                    warn(&format!(
                        "the state database {} is unreachable ({error}); running tasks go on under their supervisors; retrying",
                        self.store.shown()
                    ));
                    loop {
                        if !self.wait_for_store(shutdown).await {
                            // Stopped while the store is away: stop as asked; the ends of
                            // attempts are recorded at the next start (supervisors keep their
                            // results).
                            self.shut_down(shutdown, false).await?;
                            return Ok(Vec::new());
                        }
                        // Still the owner? (Another process may have taken the store while
                        // this one could not reach it; it must not act then.)
                        match self.verify_ownership().await {
                            Ok(()) => break,
                            Err(EngineError::Store(error)) if error.is_transient() => {}
                            Err(error) => return Err(error),
                        }
                    }
                    warn(&format!(
                        "the state database is back after {:.1}s; resuming",
                        began.elapsed().as_secs_f64()
                    ));
                    self.forget_runs();
                }
                other => return other,
            }
        }
    }

    /// One stretch of work on a healthy store: recovery first, then the loop.
    async fn drive_once(
        &mut self,
        shutdown: &Shutdown,
        focus: Option<&[String]>,
        schedule: bool,
        reloader: Option<&Reloader>,
    ) -> Result<Vec<RunRecord>, EngineError> {
        self.recover_attempts(true).await?;
        while let Some(finished) = self.unrecorded.pop_front() {
            if let Err(error) = self.finish(finished.clone()).await {
                self.unrecorded.push_front(finished);
                return Err(error);
            }
        }
        self.runs_changed = true;
        let mut checks = tokio::time::interval(self.config.heartbeat_interval);
        checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        checks.tick().await;
        let reload_every = reloader.map_or(Duration::from_secs(3600), |(_, every)| *every);
        let mut reload_tick = tokio::time::interval(reload_every);
        reload_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        reload_tick.tick().await;
        loop {
            while let Ok(message) = self.receiver.try_recv() {
                self.handle(message).await?;
            }
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
            let more = self.dispatch().await?;
            if let Some(run_ids) = focus
                && runs_changed
                && let Some(ended) = self.focus_ended(run_ids).await?
            {
                return Ok(ended);
            }
            if more || self.runs_changed {
                // Something ended or started during this pass, or more is queued: look again
                // before sleeping, after letting the rest of the process run.
                tokio::task::yield_now().await;
                continue;
            }
            self.gauges
                .running
                .store(self.running.len() as u64, Ordering::Relaxed);
            let wake = self.next_wakeup(schedule);
            let sleep = match wake {
                Some(at) => (at - self.clock.now()).to_std().unwrap_or_default(),
                None => Duration::from_secs(3600),
            };
            let planned = std::time::Instant::now() + sleep;
            tokio::select! {
                message = self.receiver.recv() => {
                    if let Some(message) = message {
                        self.handle(message).await?;
                    }
                }
                () = tokio::time::sleep(sleep) => {
                    let late = std::time::Instant::now().saturating_duration_since(planned);
                    self.gauges.lag_micros.store(
                        u64::try_from(late.as_micros()).unwrap_or(u64::MAX),
                        Ordering::Relaxed,
                    );
                }
                _ = checks.tick() => {
                    // Attempts of other workers that stopped answering (several nodes).
                    self.recover_attempts(false).await?;
                }
                _ = reload_tick.tick(), if reloader.is_some() && !self.reloading => {
                    if let Some((reload, _)) = reloader {
                        self.reloading = true;
                        let reload = reload.clone();
                        let sender = self.sender.clone();
                        tokio::task::spawn_blocking(move || {
                            let _ = sender.send(Message::Reloaded(reload()));
                        });
                    }
                }
                () = shutdown.requested.cancelled() => {
                    self.shut_down(shutdown, true).await?;
                    return Ok(Vec::new());
                }
            }
        }
    }

    /// The focus runs, if they have all ended and none of their attempts still runs.
    async fn focus_ended(&self, run_ids: &[String]) -> Result<Option<Vec<RunRecord>>, EngineError> {
        if self
            .running
            .values()
            .any(|slot| run_ids.contains(&slot.run_id))
        {
            return Ok(None);
        }
        let mut ended = Vec::new();
        for run_id in run_ids {
            match self.store.run(run_id).await? {
                Some(run) if run.state()?.is_terminal() => ended.push(run),
                _ => return Ok(None),
            }
        }
        Ok(Some(ended))
    }

    /// Fails with [`StoreError::OwnershipLost`] if another process owns the store now.
    async fn verify_ownership(&self) -> Result<(), EngineError> {
        if let Some(owner) = &self.owner {
            owner.verify(&self.store, millis(self.clock.now())).await?;
        }
        Ok(())
    }

    /// Waits until the store answers again (backoff from 0.5 s to 10 s). False if a shutdown
    /// was requested meanwhile.
    async fn wait_for_store(&mut self, shutdown: &Shutdown) -> bool {
        let mut delay = Duration::from_millis(500);
        loop {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.requested.cancelled() => return false,
            }
            if self.store.ping().await.is_ok() {
                return true;
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    /// Drops the in-memory copy of the runs (not the running attempts): it is rebuilt from the
    /// store.
    fn forget_runs(&mut self) {
        self.runs.clear();
        self.ready.clear();
        self.timers.clear();
        self.versions.clear();
        self.timed_out.clear();
        self.runs_changed = true;
    }

    /// Stops starting tasks, then by the stop mode: detach leaves commands to their supervisors
    /// and exits at once; drain lets them finish within the grace period, then stops them. A
    /// forced stop stops everything at once. Requests running in the engine are always stopped.
    /// An attempt stopped this way does not use up a try. Without `record` (the store is
    /// away) ends are not recorded now: the next start finds them.
    pub(super) async fn shut_down(
        &mut self,
        shutdown: &Shutdown,
        record: bool,
    ) -> Result<(), EngineError> {
        let drain = self.config.stop_mode == StopMode::Drain;
        let mut forced = false;
        for slot in self.running.values_mut() {
            if matches!(
                slot.control,
                Control::InProcess(_) | Control::External { .. }
            ) {
                slot.stop(StopReason::Shutdown, true);
            }
        }
        let mut drain_until =
            drain.then(|| tokio::time::Instant::now() + self.config.shutdown_grace);
        // Once stopped, supervisors need their own grace to end what they run; what does not
        // report by then is found by the next start.
        let mut give_up: Option<tokio::time::Instant> = None;
        loop {
            let waiting = self.running.values().any(|slot| {
                drain
                    || forced
                    || matches!(
                        slot.control,
                        Control::InProcess(_) | Control::External { .. }
                    )
            });
            if !waiting {
                return Ok(());
            }
            tokio::select! {
                message = self.receiver.recv() => match message {
                    Some(Message::Finished(finished)) if !record => {
                        self.running.remove(&finished.task_instance);
                    }
                    Some(Message::Finished(finished)) => {
                        let task = finished.task_instance;
                        if let Err(error) = self.finish(finished).await {
                            self.running.remove(&task);
                            warn(&format!("could not record an attempt's end while stopping: {error}"));
                        }
                    }
                    Some(_) => {}
                    None => return Ok(()),
                },
                () = sleep_until(drain_until) => {
                    drain_until = None;
                    give_up = Some(tokio::time::Instant::now() + crate::render::STOP_GRACE + Duration::from_secs(2));
                    for slot in self.running.values_mut() {
                        slot.stop(StopReason::Shutdown, false);
                    }
                }
                () = shutdown.forced.cancelled(), if !forced => {
                    forced = true;
                    drain_until = None;
                    give_up = Some(tokio::time::Instant::now() + Duration::from_secs(2));
                    for slot in self.running.values_mut() {
                        slot.stop(StopReason::Shutdown, true);
                    }
                }
                () = sleep_until(give_up) => return Ok(()),
            }
        }
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

    /// What an attempt of a task of run `pk` gets beyond its DAG.
    pub(super) fn attempt_context(&self, pk: i64, try_number: i64) -> AttemptContext<'_> {
        AttemptContext {
            try_number,
            inherited_env: &self.config.task_env,
            secrets: &self.config.secrets,
            environment: &self.config.environment,
            previous_success: self
                .runs
                .get(&pk)
                .and_then(|active| active.previous_success),
        }
    }
}

/// Says something to the operator on standard error. A closed standard error (the daemon's
/// output piped into a program that ended) must not stop the engine, so failures are ignored.
pub(crate) fn warn(message: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "ferry: {message}");
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The task instances a new run of `dag` starts with.
pub(crate) fn new_instances(dag: &Dag) -> Vec<NewTaskInstance<'_>> {
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
/// Airflow's run id form: `<dag>__<type>__<logical date, UTC, RFC 3339>`, with microseconds
/// only when the logical date has them (a manual run of a DAG without a schedule).
pub(crate) fn run_id(
    dag_id: &str,
    run_type: &str,
    interval: ferry_dag::timetable::DataInterval,
) -> String {
    use chrono::SubsecRound as _;
    let start = interval.start.trunc_subsecs(6);
    let format = if start.timestamp_subsec_micros() == 0 {
        chrono::SecondsFormat::Secs
    } else {
        chrono::SecondsFormat::Micros
    };
    format!(
        "{dag_id}__{run_type}__{}",
        start.to_rfc3339_opts(format, false)
    )
}

/// `host:pid:start` of this process: unique per process start, so that a restarted daemon with
/// the same pid (PID 1 in a container) is never taken for the one before it.
pub fn worker_name() -> String {
    format!(
        "{}:{}:{}",
        ferry_executor::supervisor::host_name(),
        std::process::id(),
        ferry_executor::supervisor::own_start_ticks()
    )
}

/// FNV-1a of a DAG file's text: the version key (stable across builds, unlike std's hasher).
/// The key of a DAG version: the SHA-256 digest of its file's text, in hex.
pub fn content_hash(text: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(text.as_bytes());
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

mod background;
mod recovery;
mod runs;
mod tasks;
mod timers;

#[cfg(test)]
mod tests;
