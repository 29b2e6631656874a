//! `ferry runs list`, `ferry logs` and `ferry tasks clear`: the run state, for on-call.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Result, bail};
use chrono::DateTime;
use ferry_config::Config;
use ferry_store::{EventRecord, RunFilter, RunRecord, RunState, TaskInstanceRecord, TaskState};
use serde_json::Value;
use serde_json::json;

use super::engine::{block_on, naming, open_store, shown_url};
use crate::cli::{EngineArgs, Format, LogsArgs};
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
                ..RunFilter::default()
            })
            .await?;
        match format {
            Format::Json => output::json(&json!(runs.iter().map(run_json).collect::<Vec<_>>())),
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
        let run = ferry_scheduler::operations::find_run(&store, &args.run_id).await?;
        let tasks = store.task_instances(run.id).await?;
        let Some(task) = tasks.iter().find(|t| t.task_id == args.task_id) else {
            let names = tasks.iter().map(|t| t.task_id.as_str());
            let hint = ferry_dag::diagnostic::suggestion(&args.task_id, names)
                .map(|hint| format!("; {hint}"))
                .unwrap_or_default();
            bail!("run `{}` has no task `{}`{hint}", run.run_id, args.task_id);
        };
        let Some(attempt) = store
            .attempt(&run.run_id, &args.task_id, args.try_number)
            .await?
        else {
            match args.try_number {
                Some(wanted) => bail!(
                    "task `{}` of run `{}` has no try {wanted} (it has had {})",
                    task.task_id,
                    run.run_id,
                    task.try_number
                ),
                None => bail!(
                    "task `{}` of run `{}` has not started yet (it is {})",
                    task.task_id,
                    run.run_id,
                    task.state
                ),
            }
        };
        out!(
            "# run {} task {} try {} — {} (exit {}), started {}, ended {}, worker {}",
            run.run_id,
            task.task_id,
            attempt.try_number,
            attempt.outcome.as_deref().unwrap_or("running"),
            attempt.exit_code.map_or("-".to_string(), |c| c.to_string()),
            shown(Some(attempt.started_at)),
            shown(attempt.ended_at),
            attempt.worker
        );
        out!("# {}", attempt.rendered.replace('\n', "\n# "));
        let live = attempt
            .supervisor
            .as_deref()
            .and_then(ferry_executor::supervisor::SupervisorId::from_json)
            .filter(|id| attempt.ended_at.is_none() && id.is_here());
        match live {
            // A running attempt: its supervisor's output file, as it grows with --follow.
            Some(id) => {
                follow_output(
                    &store,
                    &run.run_id,
                    &task.task_id,
                    &attempt,
                    &id,
                    args.follow,
                )
                .await?;
            }
            None => put!("{}", attempt.log),
        }
        store.close().await;
        Ok(ExitCode::SUCCESS)
    })
    .map_err(|error| naming(&shown_url(config, &args.engine), error))
}

/// Prints a running attempt's output (secrets already masked by its supervisor); with
/// `follow`, goes on printing what comes until the attempt ends, then the rest of its log.
async fn follow_output(
    store: &ferry_store::Store,
    run_id: &str,
    task_id: &str,
    attempt: &ferry_store::AttemptRecord,
    id: &ferry_executor::supervisor::SupervisorId,
    follow: bool,
) -> Result<()> {
    let path = id
        .dir
        .join(ferry_executor::supervisor::protocol::OUTPUT_FILE);
    // Bytes of the file printed so far; only whole characters are printed.
    let mut printed = 0;
    let mut supervisor_gone = false;
    loop {
        let bytes = std::fs::read(&path).unwrap_or_default();
        if let Some(new) = bytes.get(printed..) {
            let whole = match std::str::from_utf8(new) {
                Ok(text) => text,
                Err(error) => std::str::from_utf8(&new[..error.valid_up_to()]).unwrap_or_default(),
            };
            put!("{whole}");
            printed += whole.len();
        }
        if !follow {
            return Ok(());
        }
        let now = store
            .attempt(run_id, task_id, Some(attempt.try_number))
            .await?;
        if let Some(ended) = now.filter(|a| a.ended_at.is_some()) {
            // The end is recorded (and the folder may be gone): what the store kept beyond what
            // was printed.
            if let Some(rest) = ended.log.get(printed..) {
                put!("{rest}");
            }
            out!(
                "# ended: {} (exit {})",
                ended.outcome.as_deref().unwrap_or("-"),
                ended.exit_code.map_or("-".to_string(), |c| c.to_string())
            );
            return Ok(());
        }
        if supervisor_gone {
            out!(
                "# the attempt's supervisor has ended; its result is recorded when a ferry engine works on the store"
            );
            return Ok(());
        }
        // One more read after the supervisor is gone, for its last output.
        supervisor_gone = !id.is_running();
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// How many lines of a failed task's log `ferry runs show` prints.
const LOG_TAIL: usize = 10;

/// `ferry runs show`: one run, every task, the end of each failed task's log, and the
/// interventions on it.
pub(crate) fn show(
    config: &Config,
    run_id: &str,
    format: Format,
    engine: &EngineArgs,
) -> Result<ExitCode> {
    block_on(async {
        let store = open_store(config, engine, OpenMode::Existing).await?;
        let run = ferry_scheduler::operations::find_run(&store, run_id).await?;
        let tasks = store.task_instances(run.id).await?;
        let mut tails = Vec::new();
        let mut figures = Vec::new();
        for task in &tasks {
            let failed = task
                .state()
                .is_ok_and(|s| matches!(s, TaskState::Failed | TaskState::UpForRetry));
            let attempt = store.latest_attempt(task.id).await?;
            let tail = match &attempt {
                Some(attempt) if failed => last_lines(&attempt.log, LOG_TAIL),
                _ => Vec::new(),
            };
            tails.push(tail);
            figures.push(
                attempt
                    .and_then(|a| a.metrics)
                    .and_then(|m| serde_json::from_str::<BTreeMap<String, i64>>(&m).ok())
                    .unwrap_or_default(),
            );
        }
        let interventions: Vec<EventRecord> = store
            .events(&run.run_id)
            .await?
            .into_iter()
            .filter(|event| event.actor.is_some())
            .collect();
        match format {
            Format::Json => {
                let mut value = run_json(&run);
                value["tasks"] = Value::Array(
                    tasks
                        .iter()
                        .zip(&tails)
                        .zip(&figures)
                        .map(|((task, tail), figures)| {
                            let mut task = task_json(task);
                            task["log_tail"] = json!(tail);
                            task["metrics"] = json!(figures);
                            task
                        })
                        .collect(),
                );
                value["interventions"] =
                    Value::Array(interventions.iter().map(event_json).collect());
                output::json(&value);
            }
            Format::Text => print_run(&run, &tasks, &tails, &figures, &interventions),
        }
        store.close().await;
        Ok(ExitCode::SUCCESS)
    })
    .map_err(|error| naming(&shown_url(config, engine), error))
}

fn print_run(
    run: &RunRecord,
    tasks: &[TaskInstanceRecord],
    tails: &[Vec<String>],
    figures: &[BTreeMap<String, i64>],
    interventions: &[EventRecord],
) {
    out!("run       {}", run.run_id);
    out!("dag       {} (version {})", run.dag_id, run.dag_version_id);
    out!("state     {} ({})", run.state, run.run_type);
    out!(
        "interval  {} .. {} (UTC)",
        shown(Some(run.interval_start)),
        shown(Some(run.interval_end))
    );
    out!(
        "started   {}   ended {}   duration {}",
        shown(run.started_at),
        shown(run.ended_at),
        duration(run.started_at, run.ended_at)
    );
    out!("");
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|task| {
            vec![
                task.task_id.clone(),
                task.state.clone(),
                format!("{}/{}", task.try_number, task.max_tries),
                shown(task.started_at),
                shown(task.ended_at),
                duration(task.started_at, task.ended_at),
                task.worker.clone().unwrap_or_else(|| "-".to_string()),
                task.external_job_id
                    .clone()
                    .unwrap_or_else(|| "-".to_string()),
            ]
        })
        .collect();
    output::table(
        &[
            "TASK",
            "STATE",
            "TRY",
            "STARTED (UTC)",
            "ENDED (UTC)",
            "DURATION",
            "WORKER",
            "EXTERNAL JOB",
        ],
        &rows,
    );
    let measured: Vec<String> = tasks
        .iter()
        .zip(figures)
        .filter(|(_, figures)| !figures.is_empty())
        .map(|(task, figures)| {
            let shown: Vec<String> = figures.iter().map(|(k, v)| format!("{k} {v}")).collect();
            format!(
                "  {} (try {}): {}",
                task.task_id,
                task.try_number,
                shown.join(", ")
            )
        })
        .collect();
    if !measured.is_empty() {
        out!("");
        out!("figures of the latest tries:");
        for line in measured {
            out!("{line}");
        }
    }
    for (task, tail) in tasks.iter().zip(tails) {
        if tail.is_empty() {
            continue;
        }
        out!("");
        out!(
            "--- {} (try {}): last lines of its log; all of it: ferry logs {} {}",
            task.task_id,
            task.try_number,
            run.run_id,
            task.task_id
        );
        for line in tail {
            out!("  {line}");
        }
    }
    if !interventions.is_empty() {
        out!("");
        out!("interventions:");
        for event in interventions {
            out!(
                "  {}  {}  {}{}: {} -> {} ({}){}",
                shown(Some(event.at)),
                event.actor.as_deref().unwrap_or("-"),
                event
                    .task_id
                    .as_deref()
                    .map_or(String::new(), |t| format!("task {t} ")),
                event.detail,
                event.from_state.as_deref().unwrap_or("-"),
                event.to_state,
                event.cause,
                event
                    .reason
                    .as_deref()
                    .map_or(String::new(), |why| format!(", reason: {why}"))
            );
        }
    }
}

fn duration(start: Option<i64>, end: Option<i64>) -> String {
    match (start, end) {
        (Some(start), Some(end)) => format!("{:.1}s", (end - start) as f64 / 1000.0),
        (Some(start), None) => format!(
            "{:.0}s so far",
            (chrono::Utc::now().timestamp_millis() - start) as f64 / 1000.0
        ),
        _ => "-".to_string(),
    }
}

fn last_lines(log: &str, count: usize) -> Vec<String> {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(count)..]
        .iter()
        .map(|line| (*line).to_string())
        .collect()
}

/// A run as JSON: RFC 3339 times and `conf` as an object (the HTTP API serves the same shape).
pub(crate) fn run_json(run: &RunRecord) -> Value {
    json!({
        "run_id": run.run_id,
        "dag_id": run.dag_id,
        "state": run.state,
        "run_type": run.run_type,
        "logical_date": output::rfc3339(Some(run.logical_date)),
        "data_interval_start": output::rfc3339(Some(run.interval_start)),
        "data_interval_end": output::rfc3339(Some(run.interval_end)),
        "conf": serde_json::from_str::<Value>(&run.conf).unwrap_or(Value::Null),
        "dag_version_id": run.dag_version_id,
        "queued_at": output::rfc3339(Some(run.queued_at)),
        "started_at": output::rfc3339(run.started_at),
        "ended_at": output::rfc3339(run.ended_at),
    })
}

fn task_json(task: &TaskInstanceRecord) -> Value {
    json!({
        "task_id": task.task_id,
        "state": task.state,
        "try_number": task.try_number,
        "max_tries": task.max_tries,
        "pool": task.pool,
        "priority": task.priority,
        "queued_at": output::rfc3339(task.queued_at),
        "started_at": output::rfc3339(task.started_at),
        "ended_at": output::rfc3339(task.ended_at),
        "worker": task.worker,
        "external_job_id": task.external_job_id,
        "exit_code": task.exit_code,
    })
}

fn event_json(event: &EventRecord) -> Value {
    json!({
        "at": output::rfc3339(Some(event.at)),
        "task_id": event.task_id,
        "try_number": event.try_number,
        "from_state": event.from_state,
        "to_state": event.to_state,
        "cause": event.cause,
        "detail": event.detail,
        "actor": event.actor,
        "reason": event.reason,
    })
}
