//! `ferry runs list`, `ferry logs` and `ferry tasks clear`: the run state, for on-call.

use std::process::ExitCode;

use anyhow::{Result, bail};
use chrono::DateTime;
use ferry_config::Config;
use ferry_store::{RunFilter, RunRecord, RunState, TaskChange, TaskState};
use serde_json::json;

use super::engine::{block_on, naming, open_store, shown_url};
use crate::cli::{DagSource, EngineArgs, Format, LogsArgs};
use crate::output;
use ferry_store::OpenMode;

fn shown(ms: Option<i64>) -> String {
    ms.and_then(DateTime::from_timestamp_millis).map_or_else(
        || "-".to_string(),
        |at| at.format("%Y-%m-%d %H:%M:%S").to_string(),
    )
}

pub(crate) fn list(
    config: &Config,
    dag: Option<&str>,
    state: Option<&str>,
    limit: i64,
    format: Format,
    engine: &EngineArgs,
) -> Result<ExitCode> {
    let states = match state {
        Some(text) => vec![text.parse::<RunState>().map_err(|_| {
            anyhow::anyhow!("unknown run state `{text}` (queued, running, success, failed)")
        })?],
        None => Vec::new(),
    };
    block_on(async {
        let store = open_store(config, engine, OpenMode::Existing).await?;
        let runs = store
            .runs(&RunFilter {
                dag_id: dag.map(str::to_string),
                states,
                limit: Some(limit),
            })
            .await?;
        match format {
            Format::Json => output::json(&json!(runs)),
            Format::Text => {
                let rows: Vec<Vec<String>> = runs
                    .iter()
                    .map(|run| {
                        let duration = match (run.started_at, run.ended_at) {
                            (Some(start), Some(end)) => {
                                format!("{:.1}s", (end - start) as f64 / 1000.0)
                            }
                            _ => "-".to_string(),
                        };
                        vec![
                            run.run_id.clone(),
                            run.dag_id.clone(),
                            run.state.clone(),
                            run.run_type.clone(),
                            shown(run.started_at),
                            duration,
                        ]
                    })
                    .collect();
                output::table(
                    &["RUN", "DAG", "STATE", "TYPE", "STARTED (UTC)", "DURATION"],
                    &rows,
                );
            }
        }
        store.close().await;
        Ok(ExitCode::SUCCESS)
    })
    .map_err(|error| naming(&shown_url(config, engine), error))
}

pub(crate) fn logs(config: &Config, args: &LogsArgs) -> Result<ExitCode> {
    block_on(async {
        let store = open_store(config, &args.engine, OpenMode::Existing).await?;
        let Some(attempt) = store
            .attempt(&args.run_id, &args.task_id, args.try_number)
            .await?
        else {
            bail!(
                "no attempt of task `{}` in run `{}`; see `ferry runs list`",
                args.task_id,
                args.run_id
            );
        };
        out!(
            "# run {} task {} try {} — {} (exit {}), started {}, ended {}, worker {}",
            args.run_id,
            args.task_id,
            attempt.try_number,
            attempt.outcome.as_deref().unwrap_or("running"),
            attempt.exit_code.map_or("-".to_string(), |c| c.to_string()),
            shown(Some(attempt.started_at)),
            shown(attempt.ended_at),
            attempt.worker
        );
        out!("# {}", attempt.rendered.replace('\n', "\n# "));
        put!("{}", attempt.log);
        store.close().await;
        Ok(ExitCode::SUCCESS)
    })
    .map_err(|error| naming(&shown_url(config, &args.engine), error))
}

pub(crate) fn clear(
    config: &Config,
    run_id: &str,
    task_id: &str,
    downstream: bool,
    engine: &EngineArgs,
) -> Result<ExitCode> {
    let catalog = super::load_catalog(config, &[], &DagSource { now: None });
    block_on(async {
        let store = open_store(config, engine, OpenMode::Existing).await?;
        let Some(run) = store.run(run_id).await? else {
            bail!("no run `{run_id}`; see `ferry runs list`");
        };
        let mut targets = vec![task_id.to_string()];
        if downstream {
            let Some(dag) = catalog.dags.get(&run.dag_id) else {
                bail!(
                    "DAG `{}` is not loaded, so its downstream tasks are unknown; clear tasks one by one",
                    run.dag_id
                );
            };
            let Some(start) = dag.tasks.iter().position(|t| t.id == task_id) else {
                bail!("DAG `{}` has no task `{task_id}`", run.dag_id);
            };
            let mut stack = vec![start];
            while let Some(index) = stack.pop() {
                for next in dag.graph.downstream(index) {
                    let id = dag.tasks[next].id.clone();
                    if !targets.contains(&id) {
                        targets.push(id);
                        stack.push(next);
                    }
                }
            }
        }
        let now = chrono::Utc::now().timestamp_millis();
        let tasks = store.task_instances(run.id).await?;
        if !tasks.iter().any(|t| t.task_id == task_id) {
            bail!("run `{run_id}` has no task `{task_id}`");
        }
        let mut cleared = Vec::new();
        for task in tasks.iter().filter(|t| targets.contains(&t.task_id)) {
            let from = task.state()?;
            if !from.can_become(TaskState::Pending) {
                say!("ferry: task {} is {from}; left as it is", task.task_id);
                continue;
            }
            let change = TaskChange {
                id: task.id,
                from,
                to: TaskState::Pending,
                lease: None,
                ready_at: None,
                exit_code: None,
                grant_try: false,
                at: now,
                cause: "operator",
                detail: "cleared",
            };
            if store.transition_task(&run, task, &change).await? {
                cleared.push(task.task_id.clone());
            }
        }
        reopen(&store, &run, now).await?;
        // The process that owns the store looks at the run again at once.
        store.wake().await?;
        out!(
            "cleared {} task(s) of {run_id}: {}",
            cleared.len(),
            cleared.join(", ")
        );
        store.close().await;
        Ok(ExitCode::SUCCESS)
    })
    .map_err(|error| naming(&shown_url(config, engine), error))
}

/// An ended run whose tasks were cleared runs again.
async fn reopen(store: &ferry_store::Store, run: &RunRecord, now: i64) -> Result<()> {
    let state = run.state()?;
    if state.is_terminal() {
        store
            .transition_run(run, state, RunState::Running, now, "operator")
            .await?;
    }
    Ok(())
}
