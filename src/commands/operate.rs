//! `ferry tasks clear|mark`, `ferry runs rerun`, `ferry dags pause|unpause`: an operator's
//! interventions. What they mean is decided in `ferry_scheduler::operations`; this module reads
//! the arguments, finds out whether an engine owns the store (if none does, a running attempt is
//! stopped here before its task is cleared) and prints what was done.

use std::process::ExitCode;

use anyhow::{Context as _, Result};
use ferry_config::Config;
use ferry_scheduler::operations::{self, ClearPlan, ClearReport, ClearSelection, Operator};
use ferry_store::{Intervention, OpenMode, RunRecord, Store};

use super::engine::{block_on, naming, open_store, shown_url, try_own};
use crate::cli::{ClearArgs, DagSource, EngineArgs, Format, ReasonArgs, RerunArgs};
use crate::output;

/// `ferry tasks clear`.
pub(crate) fn clear(config: &Config, args: &ClearArgs) -> Result<ExitCode> {
    let selection = ClearSelection {
        tasks: args.task_ids.clone(),
        downstream: args.downstream,
        upstream: args.upstream,
        only_failed: args.only_failed,
    };
    clear_with(config, &args.run_id, Some(selection), &args.rerun)
}

/// `ferry runs rerun`: clear every failed or upstream_failed task and what depends on them.
pub(crate) fn rerun(config: &Config, run_id: &str, args: &RerunArgs) -> Result<ExitCode> {
    clear_with(config, run_id, None, args)
}

/// Clears `selection` of the run (`None`: rerun from failed).
fn clear_with(
    config: &Config,
    run_id: &str,
    selection: Option<ClearSelection>,
    args: &RerunArgs,
) -> Result<ExitCode> {
    let command = if selection.is_some() {
        "ferry tasks clear"
    } else {
        "ferry runs rerun"
    };
    block_on(async {
        let store = open_store(config, &args.engine, OpenMode::Existing).await?;
        let run = operations::find_run(&store, run_id).await?;
        let selection = match selection {
            Some(selection) => selection,
            None => {
                let selection = operations::rerun_selection(&store, &run).await?;
                if selection.tasks.is_empty() {
                    out!(
                        "run {} has no failed or upstream_failed task; nothing to rerun (clear tasks by name with `ferry tasks clear`)",
                        run.run_id
                    );
                    return Ok(ExitCode::SUCCESS);
                }
                selection
            }
        };
        // The version the run goes on with: its own, or the one loaded now (recorded on the
        // run; a dry run records nothing).
        let (dag, latest) = if args.latest_version {
            let (dag, id) = latest_version(config, &store, &run, !args.dry_run).await?;
            (dag, Some(id))
        } else {
            (operations::dag_of_run(&store, &run).await?, None)
        };
        let plan = operations::plan_clear(&store, &run, &dag, latest, &selection).await?;
        if args.dry_run {
            print_plan(&plan, args.format);
            return Ok(ExitCode::SUCCESS);
        }
        let report = intervene(&store, command, |engine_runs| {
            let who = operator(&args.reason);
            let store = &store;
            let run = &run;
            async move { operations::clear(store, run, plan, engine_runs, &who).await }
        })
        .await?;
        print_report(&report, args.format);
        store.close().await;
        Ok(ExitCode::SUCCESS)
    })
    .map_err(|error| naming(&shown_url(config, &args.engine), error))
}

/// `ferry tasks mark`.
pub(crate) fn mark(
    config: &Config,
    run_id: &str,
    task_id: &str,
    state: &str,
    reason: &ReasonArgs,
    engine: &EngineArgs,
) -> Result<ExitCode> {
    block_on(async {
        let store = open_store(config, engine, OpenMode::Existing).await?;
        let run = operations::find_run(&store, run_id).await?;
        let dag = operations::dag_of_run(&store, &run).await?;
        let cleared = intervene(&store, "ferry tasks mark", |engine_runs| {
            let who = operator(reason);
            let (store, run, dag) = (&store, &run, &dag);
            async move {
                operations::mark(store, run, dag, task_id, state, engine_runs, &who).await
            }
        })
        .await?;
        out!("marked task {task_id} of {} {state}", run.run_id);
        if !cleared.is_empty() {
            out!(
                "cleared downstream to follow their trigger rules again: {}",
                cleared.join(", ")
            );
        }
        store.close().await;
        Ok(ExitCode::SUCCESS)
    })
    .map_err(|error| naming(&shown_url(config, engine), error))
}

/// `ferry dags pause|unpause`.
pub(crate) fn pause(
    config: &Config,
    dag_id: &str,
    paused: bool,
    reason: &ReasonArgs,
    engine: &EngineArgs,
) -> Result<ExitCode> {
    let catalog = super::load_catalog(config, &[], &DagSource { now: None });
    block_on(async {
        // A DAG may be paused before ferry ever ran (so that its catch-up does not start).
        let store = open_store(config, engine, OpenMode::Create).await?;
        let known = catalog.dags.contains_key(dag_id)
            || catalog
                .diagnostics
                .iter()
                .any(|d| d.dag.as_deref() == Some(dag_id));
        if !known {
            super::find_dag(&catalog, dag_id)?;
        }
        let who = operator(reason);
        let changed = store
            .set_paused(
                dag_id,
                paused,
                Intervention {
                    actor: &who.actor,
                    reason: who.reason.as_deref(),
                    at: who.at,
                },
            )
            .await?;
        store.wake().await?;
        let word = if paused { "paused" } else { "unpaused" };
        if changed {
            out!(
                "DAG {dag_id} is {word}{}",
                if paused {
                    ": no new scheduled runs; runs already made go on"
                } else {
                    ""
                }
            );
        } else {
            out!("DAG {dag_id} was {word} already");
        }
        store.close().await;
        Ok(ExitCode::SUCCESS)
    })
    .map_err(|error| naming(&shown_url(config, engine), error))
}

/// Runs an intervention knowing whether an engine owns the store: if none does, this process
/// holds the store's lock meanwhile, so that no engine starts in the middle of it.
async fn intervene<T, F, Fut>(store: &Store, command: &str, act: F) -> Result<T>
where
    F: FnOnce(bool) -> Fut,
    Fut: std::future::Future<Output = Result<T, operations::OperationError>>,
{
    // Another intervention holding the store is not an engine: wait for it to finish, so that
    // a running attempt is always stopped by someone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let owner = loop {
        match try_own(store, command).await? {
            Err(holder) if is_intervention(&holder) && std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            owner => break owner,
        }
    };
    let result = act(owner.is_err()).await;
    drop(owner);
    Ok(result?)
}

/// The commands that hold the store only for the moment of an intervention.
const INTERVENTIONS: [&str; 3] = ["ferry tasks clear", "ferry tasks mark", "ferry runs rerun"];

/// Whether the owner `holder` (as the store describes it) is an intervention, not an engine.
pub(crate) fn is_intervention(holder: &str) -> bool {
    INTERVENTIONS
        .iter()
        .any(|command| holder.starts_with(&format!("`{command}`")))
}

/// The DAG of `run` as loaded from the DAG folders now, and its version id in the store:
/// recorded if `record`, else looked up (`None` if it was never recorded).
async fn latest_version(
    config: &Config,
    store: &Store,
    run: &RunRecord,
    record: bool,
) -> Result<(ferry_dag::Dag, Option<i64>)> {
    let catalog = super::load_catalog(config, &[], &DagSource { now: None });
    let dag = super::find_dag(&catalog, &run.dag_id)?.clone();
    let source = std::fs::read_to_string(&dag.file)
        .with_context(|| format!("cannot read {}", dag.file.display()))?;
    let hash = ferry_scheduler::engine::content_hash(&source);
    let id = if record {
        Some(
            store
                .record_dag_version(
                    &dag.id,
                    &hash,
                    &dag.file.display().to_string(),
                    &source,
                    chrono::Utc::now().timestamp_millis(),
                )
                .await?,
        )
    } else {
        store.dag_version_id(&dag.id, &hash).await?
    };
    Ok((dag, id))
}

/// Who runs this command (the OS user) and why.
fn operator(reason: &ReasonArgs) -> Operator {
    Operator {
        actor: os_user(),
        reason: reason.reason.clone(),
        at: chrono::Utc::now().timestamp_millis(),
    }
}

/// The OS user running this process (by its user id), or `$USER`.
fn os_user() -> String {
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => user.name,
        _ => std::env::var("USER").unwrap_or_else(|_| format!("uid {uid}")),
    }
}

fn print_plan(plan: &ClearPlan, format: Format) {
    if format == Format::Json {
        output::json(&serde_json::json!({"dry_run": true, "plan": plan}));
        return;
    }
    out!(
        "would clear {} task(s) of {}:",
        plan.tasks.len(),
        plan.run_id
    );
    print_tasks(plan, None);
    if plan.version.is_some() || !plan.added.is_empty() || !plan.removed.is_empty() {
        print_version(plan);
    }
}

fn print_report(report: &ClearReport, format: Format) {
    if format == Format::Json {
        output::json(&serde_json::json!(report));
        return;
    }
    out!(
        "cleared {} task(s) of {}:",
        report.cleared.len(),
        report.plan.run_id
    );
    print_tasks(&report.plan, Some(&report.cleared));
    if report.reopened {
        let starts = if report.engine_running {
            "it starts within max_active_runs"
        } else {
            "no ferry engine works on the store now: the next `ferry serve` starts it"
        };
        out!("run {} is queued again ({starts})", report.plan.run_id);
    }
    if report.plan.version.is_some() {
        print_version(&report.plan);
    }
}

/// What going on with the latest version changes.
fn print_version(plan: &ClearPlan) {
    match plan.version {
        Some(version) => out!("it goes on with DAG version {version} (the one loaded now)"),
        None => out!("it goes on with the DAG version loaded now"),
    }
    if !plan.added.is_empty() {
        out!("  tasks added by that version: {}", plan.added.join(", "));
    }
    if !plan.removed.is_empty() {
        out!(
            "  tasks that version no longer has (skipped): {}",
            plan.removed.join(", ")
        );
    }
}

/// The planned tasks (only those `cleared`, when given) and those left alone.
fn print_tasks(plan: &ClearPlan, cleared: Option<&[String]>) {
    for task in plan
        .tasks
        .iter()
        .filter(|t| cleared.is_none_or(|ids| ids.contains(&t.task_id)))
    {
        out!(
            "  {} (was {}, {} tries so far; next try {}, with {} retries)",
            task.task_id,
            task.state,
            task.try_number,
            task.try_number + 1,
            task.retries
        );
    }
    for left in &plan.left {
        out!("  left alone: {} ({})", left.task_id, left.why);
    }
    if let Some(ids) = cleared {
        for task in plan.tasks.iter().filter(|t| !ids.contains(&t.task_id)) {
            out!(
                "  left alone: {} (it changed while being cleared; look again)",
                task.task_id
            );
        }
    }
}
