//! An operator's interventions on runs, with their semantics in one place so that every front
//! end (the CLI now, the HTTP API next) behaves the same:
//!
//! - **clear**: chosen tasks (and, if asked, what depends on them or what they depend on) go back
//!   to `pending` and run again. A cleared task keeps its try number and gets its full `retries`
//!   again (Airflow's rule); a running attempt is stopped first (by the engine that owns the
//!   store, or here when none runs); an ended run is queued again, so that it starts within
//!   `max_active_runs`, oldest first, with a fresh start for `dagrun_timeout`.
//! - **rerun**: every `failed` or `upstream_failed` task and what depends on them.
//! - **mark**: a task becomes `success`, `failed` or `skipped` by hand; tasks downstream of it that
//!   were decided without running (`upstream_failed`, `skipped`) are cleared so that they follow
//!   their trigger rules again.
//!
//! Every intervention is recorded as events with who and why.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use ferry_dag::Dag;
use ferry_dag::Templates;
use ferry_executor::supervisor::SupervisorId;
use ferry_store::{
    Intervention, NewTaskInstance, RunRecord, Store, StoreError, TaskInstanceRecord, TaskState,
    TaskToClear, VersionChange,
};

/// Who intervenes, and why.
#[derive(Clone, Debug)]
pub struct Operator {
    /// The OS user of a CLI command; an API token's name.
    pub actor: String,
    /// Why (`--reason`).
    pub reason: Option<String>,
    /// When (Unix ms).
    pub at: i64,
}

impl Operator {
    /// As the store records it.
    pub fn intervention(&self) -> Intervention<'_> {
        Intervention {
            actor: &self.actor,
            reason: self.reason.as_deref(),
            at: self.at,
        }
    }
}

/// Which tasks of a run to clear.
#[derive(Clone, Debug, Default)]
pub struct ClearSelection {
    /// The tasks named; empty: every task of the run.
    pub tasks: Vec<String>,
    /// Also every task downstream of them.
    pub downstream: bool,
    /// Also every task upstream of them.
    pub upstream: bool,
    /// Only those (of the above) that are `failed` or `upstream_failed`.
    pub only_failed: bool,
}

/// What a clear will do (a dry run shows it) or did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ClearPlan {
    /// The run.
    pub run_id: String,
    /// The tasks to clear, with their state and try number before.
    pub tasks: Vec<PlannedTask>,
    /// Tasks selected but left alone, and why.
    pub left: Vec<LeftTask>,
    /// The DAG version the run goes on with, when it changes.
    pub version: Option<i64>,
    /// Tasks that version adds to the run (they run as new tasks).
    pub added: Vec<String>,
    /// Tasks of the run that version no longer has (they are skipped).
    pub removed: Vec<String>,
    #[serde(skip)]
    records: Vec<(TaskInstanceRecord, i64)>,
    #[serde(skip)]
    new_instances: Vec<(String, i64, i64, String)>,
    #[serde(skip)]
    gone: Vec<TaskInstanceRecord>,
}

/// A task a clear puts back to `pending`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PlannedTask {
    /// The task.
    pub task_id: String,
    /// Its state before.
    pub state: String,
    /// Tries it had so far; the next one is this plus one.
    pub try_number: i64,
    /// Retries it gets again.
    pub retries: i64,
}

/// A task selected but not cleared.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LeftTask {
    /// The task.
    pub task_id: String,
    /// Why.
    pub why: String,
}

/// What an intervention did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ClearReport {
    /// The plan it carried out.
    #[serde(flatten)]
    pub plan: ClearPlan,
    /// The tasks cleared (a task that changed meanwhile is not).
    pub cleared: Vec<String>,
    /// The run was ended and is queued again.
    pub reopened: bool,
    /// An engine owned the store (it goes on with the run at once; else the next one does).
    pub engine_running: bool,
}

/// Why an intervention was refused.
#[derive(Debug, thiserror::Error)]
pub enum OperationError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No such run.
    #[error("no run `{0}`; see `ferry runs list`")]
    UnknownRun(String),
    /// The run has no such task.
    #[error("run `{run}` has no task `{task}`{hint}")]
    UnknownTask {
        /// The run.
        run: String,
        /// The task asked for.
        task: String,
        /// A close name, if any (`; did you mean ...?`).
        hint: String,
    },
    /// The DAG version of the run cannot be read.
    #[error("the DAG version of run `{0}` cannot be read from the store")]
    UnknownVersion(String),
    /// An attempt runs on another machine and cannot be stopped from here.
    #[error(
        "task `{task}` runs under a supervisor on {host} (pid {pid}); start ferry there (or clear it while ferry serves there) so that it is stopped before it runs again"
    )]
    Elsewhere {
        /// The task.
        task: String,
        /// Its supervisor's host.
        host: String,
        /// Its supervisor's pid.
        pid: u32,
    },
    /// An attempt did not stop in time.
    #[error(
        "task `{0}`'s running attempt was asked to stop but still runs after 60 s; the task was not cleared (look at it with `ferry logs RUN TASK`, and try again)"
    )]
    DidNotStop(String),
    /// A rerun on the latest version would drop a task that is running.
    #[error(
        "task `{0}` is running, and the DAG version loaded now no longer has it: wait for it to end (or clear it first), then rerun with --latest-version"
    )]
    DroppedTaskRuns(String),
    /// The run has ended already.
    #[error("run `{0}` has ended ({1}): there is nothing to cancel")]
    Ended(String, String),
    /// Not a state a task can be marked with.
    #[error("a task can be marked success, failed or skipped, not `{0}`")]
    BadMark(String),
}

/// Finds a run by its id or a unique prefix of it.
pub async fn find_run(store: &Store, id_or_prefix: &str) -> Result<RunRecord, OperationError> {
    store
        .find_run(id_or_prefix)
        .await?
        .ok_or_else(|| OperationError::UnknownRun(id_or_prefix.to_string()))
}

/// The DAG as `run` was created with (its recorded version).
pub async fn dag_of_run(store: &Store, run: &RunRecord) -> Result<Dag, OperationError> {
    let (file, source) = store
        .dag_version(run.dag_version_id)
        .await?
        .ok_or_else(|| OperationError::UnknownVersion(run.run_id.clone()))?;
    ferry_dag::parse_dag(Path::new(&file), &source, &Templates::new())
        .dag
        .ok_or_else(|| OperationError::UnknownVersion(run.run_id.clone()))
}

/// Works out which tasks of `run` a clear of `selection` puts back to `pending`, in `dag` (the
/// version the run goes on with). With `latest`, `dag` is the version loaded now (recorded as
/// `version`, if it is recorded already): the tasks it adds or drops are worked out too.
pub async fn plan_clear(
    store: &Store,
    run: &RunRecord,
    dag: &Dag,
    latest: Option<Option<i64>>,
    selection: &ClearSelection,
) -> Result<ClearPlan, OperationError> {
    let version = latest.flatten().filter(|id| *id != run.dag_version_id);
    let instances = store.task_instances(run.id).await?;
    for name in &selection.tasks {
        if !instances.iter().any(|t| &t.task_id == name) {
            let names: Vec<&str> = instances.iter().map(|t| t.task_id.as_str()).collect();
            return Err(OperationError::UnknownTask {
                run: run.run_id.clone(),
                task: name.clone(),
                hint: ferry_dag::diagnostic::suggestion(name, names)
                    .map(|hint| format!("; {hint}"))
                    .unwrap_or_default(),
            });
        }
    }
    let position = |id: &str| dag.tasks.iter().position(|t| t.id == id);
    let mut chosen: BTreeSet<String> = if selection.tasks.is_empty() {
        instances.iter().map(|t| t.task_id.clone()).collect()
    } else {
        selection.tasks.iter().cloned().collect()
    };
    for (wanted, upstream) in [(selection.downstream, false), (selection.upstream, true)] {
        if !wanted {
            continue;
        }
        let mut stack: Vec<usize> = selection
            .tasks
            .iter()
            .filter_map(|id| position(id))
            .collect();
        while let Some(index) = stack.pop() {
            let next = if upstream {
                dag.graph.upstream(index)
            } else {
                dag.graph.downstream(index)
            };
            for next in next {
                if chosen.insert(dag.tasks[next].id.clone()) {
                    stack.push(next);
                }
            }
        }
    }
    let mut plan = ClearPlan {
        run_id: run.run_id.clone(),
        tasks: Vec::new(),
        left: Vec::new(),
        version,
        added: Vec::new(),
        removed: Vec::new(),
        records: Vec::new(),
        new_instances: Vec::new(),
        gone: Vec::new(),
    };
    if latest.is_some() {
        // Going on with another version: its new tasks join the run, its dropped ones leave it.
        for task in dag
            .tasks
            .iter()
            .filter(|t| !instances.iter().any(|i| i.task_id == t.id))
        {
            plan.added.push(task.id.clone());
            plan.new_instances.push((
                task.id.clone(),
                i64::from(task.retry.retries) + 1,
                i64::from(task.priority),
                task.pool.clone(),
            ));
        }
        for instance in instances.iter().filter(|i| dag.task(&i.task_id).is_none()) {
            if instance.state()? == TaskState::Running {
                return Err(OperationError::DroppedTaskRuns(instance.task_id.clone()));
            }
            plan.removed.push(instance.task_id.clone());
            plan.gone.push(instance.clone());
        }
    }
    for task in instances
        .iter()
        .filter(|t| chosen.contains(&t.task_id) && !plan.removed.contains(&t.task_id))
    {
        let state = task.state()?;
        let failed = matches!(state, TaskState::Failed | TaskState::UpstreamFailed);
        let why = if state == TaskState::Pending {
            Some("it is pending already".to_string())
        } else if selection.only_failed && !failed {
            Some(format!("it is {state}, not failed (--only-failed)"))
        } else {
            None
        };
        if let Some(why) = why {
            plan.left.push(LeftTask {
                task_id: task.task_id.clone(),
                why,
            });
            continue;
        }
        let retries = dag
            .task(&task.task_id)
            .map_or(0, |definition| i64::from(definition.retry.retries));
        plan.tasks.push(PlannedTask {
            task_id: task.task_id.clone(),
            state: state.to_string(),
            try_number: task.try_number,
            retries,
        });
        plan.records.push((task.clone(), retries));
    }
    Ok(plan)
}

/// The tasks a rerun clears: every `failed` or `upstream_failed` task, and what depends on them.
pub async fn rerun_selection(
    store: &Store,
    run: &RunRecord,
) -> Result<ClearSelection, OperationError> {
    let instances = store.task_instances(run.id).await?;
    Ok(ClearSelection {
        tasks: instances
            .iter()
            .filter(|t| {
                t.state()
                    .is_ok_and(|s| matches!(s, TaskState::Failed | TaskState::UpstreamFailed))
            })
            .map(|t| t.task_id.clone())
            .collect(),
        downstream: true,
        upstream: false,
        only_failed: false,
    })
}

/// Carries out `plan`, then wakes the engine that owns the store. `engine_runs` says whether an
/// engine owns the store: if none does, the running attempts among the tasks are stopped here
/// first (they run under supervisors of this machine), so that nothing runs twice.
pub async fn clear(
    store: &Store,
    run: &RunRecord,
    plan: ClearPlan,
    engine_runs: bool,
    who: &Operator,
) -> Result<ClearReport, OperationError> {
    if !engine_runs {
        let running: Vec<&TaskInstanceRecord> = plan
            .records
            .iter()
            .map(|(task, _)| task)
            .filter(|task| task.state().is_ok_and(|s| s == TaskState::Running))
            .collect();
        stop_unwatched(store, &running).await?;
    }
    let tasks: Vec<TaskToClear<'_>> = plan
        .records
        .iter()
        .map(|(task, retries)| TaskToClear {
            task,
            retries: *retries,
        })
        .collect();
    let change = plan.version.map(|id| VersionChange {
        id,
        added: plan
            .new_instances
            .iter()
            .map(|(task_id, max_tries, priority, pool)| NewTaskInstance {
                task_id,
                max_tries: *max_tries,
                priority: *priority,
                pool,
            })
            .collect(),
        removed: plan.gone.iter().collect(),
    });
    let (cleared, mut reopened) = store
        .clear_tasks(run, &tasks, change.as_ref(), who.intervention())
        .await?;
    // The run may have ended while this clear was under way.
    reopened |= store.reopen_if_unfinished(run.id, who.at).await?;
    store.wake().await?;
    Ok(ClearReport {
        plan,
        cleared,
        reopened,
        engine_running: engine_runs,
    })
}

/// Marks `task_id` of `run` `to` (`success`, `failed` or `skipped`); its downstream tasks that
/// were decided without running are cleared to follow their trigger rules. Returns the tasks
/// cleared downstream.
pub async fn mark(
    store: &Store,
    run: &RunRecord,
    dag: &Dag,
    task_id: &str,
    to: &str,
    engine_runs: bool,
    who: &Operator,
) -> Result<Vec<String>, OperationError> {
    let to: TaskState = to
        .parse()
        .ok()
        .filter(|s| {
            matches!(
                s,
                TaskState::Success | TaskState::Failed | TaskState::Skipped
            )
        })
        .ok_or_else(|| OperationError::BadMark(to.to_string()))?;
    let selection = ClearSelection {
        tasks: vec![task_id.to_string()],
        downstream: true,
        ..ClearSelection::default()
    };
    let plan = plan_clear(store, run, dag, None, &selection).await?;
    let instances = store.task_instances(run.id).await?;
    let Some(task) = instances.iter().find(|t| t.task_id == task_id) else {
        return Err(OperationError::UnknownTask {
            run: run.run_id.clone(),
            task: task_id.to_string(),
            hint: String::new(),
        });
    };
    if !engine_runs && task.state()? == TaskState::Running {
        stop_unwatched(store, &[task]).await?;
    }
    let undecided: Vec<TaskToClear<'_>> = plan
        .records
        .iter()
        .filter(|(t, _)| {
            t.task_id != task_id
                && t.state()
                    .is_ok_and(|s| matches!(s, TaskState::UpstreamFailed | TaskState::Skipped))
        })
        .map(|(task, retries)| TaskToClear {
            task,
            retries: *retries,
        })
        .collect();
    let cleared = store
        .mark_task(run, task, to, &undecided, who.intervention())
        .await?
        .ok_or_else(|| {
            OperationError::Store(StoreError::Conflict(format!(
                "task {task_id} of run {} changed while it was being marked; look again",
                run.run_id
            )))
        })?;
    store.reopen_if_unfinished(run.id, who.at).await?;
    store.wake().await?;
    Ok(cleared)
}

/// Cancels `run`: whatever of it has not ended stops (started tasks `failed`, the others
/// `skipped`) and the run ends `failed`. Without an engine owning the store, running attempts
/// are stopped here first. Returns each task changed and its new state.
pub async fn cancel(
    store: &Store,
    run: &RunRecord,
    engine_runs: bool,
    who: &Operator,
) -> Result<Vec<(String, TaskState)>, OperationError> {
    if !engine_runs {
        let instances = store.task_instances(run.id).await?;
        let running: Vec<&TaskInstanceRecord> = instances
            .iter()
            .filter(|t| t.state().is_ok_and(|s| s == TaskState::Running))
            .collect();
        stop_unwatched(store, &running).await?;
    }
    let changed = store
        .cancel_run(run, who.intervention())
        .await?
        .ok_or_else(|| OperationError::Ended(run.run_id.clone(), run.state.clone()))?;
    store.wake().await?;
    Ok(changed)
}

/// Stops running attempts that no engine watches (no engine owns the store) and waits until
/// their supervisors have ended. An attempt on another machine cannot be stopped from here.
async fn stop_unwatched(
    store: &Store,
    tasks: &[&TaskInstanceRecord],
) -> Result<(), OperationError> {
    // Every supervisor is found (and one on another machine refused) before any is stopped.
    let mut found = Vec::new();
    for task in tasks {
        let Some(attempt) = store.latest_attempt(task.id).await? else {
            continue;
        };
        let Some(id) = attempt
            .supervisor
            .as_deref()
            .and_then(SupervisorId::from_json)
        else {
            // A request or wait of an engine that is gone: nothing runs.
            continue;
        };
        if !id.is_here() && !id.rebooted_since() {
            return Err(OperationError::Elsewhere {
                task: task.task_id.clone(),
                host: id.host,
                pid: id.pid,
            });
        }
        found.push((task.task_id.clone(), id));
    }
    let mut stopping = Vec::new();
    for (task_id, id) in found {
        if id.is_running() {
            id.stop(false);
            stopping.push((task_id, id));
        }
    }
    // The supervisor stops its command with the command's grace (SIGTERM, then SIGKILL).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for (task_id, id) in stopping {
        let mut forced = false;
        while id.is_running() {
            if std::time::Instant::now() > deadline {
                return Err(OperationError::DidNotStop(task_id));
            }
            if !forced && std::time::Instant::now() + Duration::from_secs(30) > deadline {
                id.stop(true);
                forced = true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}
