//! The subcommands. Each returns the process exit code: 0 success, 1 the checked input has
//! errors; other failures (configuration, usage) become exit code 2 in `main`.

mod bench;
mod bench_api;
mod bench_chaos;
mod bench_engine;
mod bench_sync;
mod bench_transfer;
mod client;
mod connections;
mod dags;
mod engine;
mod operate;
mod outside;
mod run;
mod runs;
mod schedule;
mod serve;
mod sync;
mod trigger;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use chrono::Utc;
use ferry_config::{Config, Sources};
use ferry_dag::{Catalog, CatalogOptions, Dag};

use crate::cli::{
    BenchCommand, Cli, Command, ConfigCommand, ConnectionsCommand, DagSource, DagsCommand,
    RunsCommand, SyncCommand, TasksCommand,
};

/// Runs the command the user asked for.
pub(crate) fn run(cli: Cli) -> Result<ExitCode> {
    let config = || {
        let config = Config::load(&Sources::from_process(cli.config.clone(), cli.env.clone()))
            .map_err(anyhow::Error::from)?;
        let _ = engine::ENVIRONMENT.set(config.environment.clone());
        Ok::<Config, anyhow::Error>(config)
    };
    match cli.command {
        Command::Validate(args) => validate::run(&config()?, &args),
        Command::Dags(DagsCommand::List { format, source }) => {
            dags::list(&config()?, format, &source)
        }
        Command::Dags(DagsCommand::Show {
            id,
            graph,
            format,
            source,
        }) => dags::show(&config()?, &id, graph, format, &source),
        Command::Schedule(args) => schedule::run(&config()?, &args),
        Command::Schema => {
            crate::output::json(&ferry_dag::json_schema());
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Show) => {
            put!("{}", config()?.to_toml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Validate { dags, tasks, runs }) => {
            bench::validate(dags, tasks, runs)
        }
        Command::Bench(BenchCommand::Chaos {
            kills,
            runs,
            database_url,
            json,
        }) => bench_chaos::run(kills, runs, database_url.as_deref(), json),
        Command::Bench(BenchCommand::Transfer {
            postgres,
            bigquery,
            rows,
        }) => bench_transfer::run(&postgres, bigquery.as_deref(), &rows),
        Command::Bench(BenchCommand::Sync {
            postgres,
            mysql,
            rows,
            repeat,
        }) => bench_sync::run(&postgres, mysql.as_deref(), rows, repeat),
        Command::Bench(BenchCommand::Api {
            postgres,
            runs,
            rate,
            seconds,
        }) => bench_api::run(&config()?, postgres.as_deref(), runs, rate, seconds),
        Command::Bench(BenchCommand::Engine { database_url }) => {
            bench_engine::run(&config()?, database_url.as_deref())
        }
        Command::Connections(ConnectionsCommand::List { format }) => {
            connections::list(&config()?, format)
        }
        Command::Connections(ConnectionsCommand::Test { name }) => {
            connections::test(&config()?, &name)
        }
        Command::Sync(SyncCommand::Plan {
            dag,
            task,
            date,
            now,
        }) => sync::plan(&config()?, &dag, &task, date.as_deref(), now),
        Command::Serve(args) => serve::run(&config()?, &args),
        Command::Supervise { dir } => Ok(supervise(&dir)),
        Command::Run(args) => run::run(&config()?, &args),
        Command::Backfill(args) => run::backfill(&config()?, &args),
        Command::Runs(RunsCommand::List {
            dag,
            state,
            limit,
            format,
            engine,
        }) => runs::list(
            &config()?,
            dag.as_deref(),
            state.as_deref(),
            limit,
            format,
            &engine,
        ),
        Command::Logs(args) => runs::logs(&config()?, &args),
        Command::Trigger(args) => trigger::run(&config()?, &args),
        Command::Runs(RunsCommand::Show {
            run_id,
            format,
            engine,
        }) => runs::show(&config()?, &run_id, format, &engine),
        Command::Runs(RunsCommand::Rerun { run_id, rerun }) => {
            operate::rerun(&config()?, &run_id, &rerun)
        }
        Command::Tasks(TasksCommand::Clear(args)) => operate::clear(&config()?, &args),
        Command::Tasks(TasksCommand::Mark {
            run_id,
            task_id,
            state,
            reason,
            engine,
        }) => operate::mark(&config()?, &run_id, &task_id, &state, &reason, &engine),
        Command::Dags(DagsCommand::Pause { id, reason, engine }) => {
            operate::pause(&config()?, &id, true, &reason, &engine)
        }
        Command::Dags(DagsCommand::Unpause { id, reason, engine }) => {
            operate::pause(&config()?, &id, false, &reason, &engine)
        }
    }
}

/// `ferry supervise DIR`: the supervisor of one command attempt, started by the engine.
pub(crate) fn supervise(dir: &std::path::Path) -> ExitCode {
    ExitCode::from(ferry_executor::supervisor::main(dir))
}

/// Reads the DAG files under `paths` (default: the configured folders).
fn load_catalog(config: &Config, paths: &[PathBuf], source: &DagSource) -> Catalog {
    let paths = if paths.is_empty() {
        &config.dags.folders[..]
    } else {
        paths
    };
    let options = CatalogOptions {
        channels: config.alerts.channel_names(),
        pools: config.engine.pools.keys().cloned().collect(),
        connections: config
            .connections()
            .iter()
            .map(|(name, connection)| (name.clone(), connection.kind().to_string()))
            .collect(),
        environment: config.environment.clone(),
        now: source.now.unwrap_or_else(Utc::now),
    };
    ferry_dag::catalog::load(paths, &options)
}

/// The DAG `id` from the configured folders, or an error saying why it is not available.
/// `task` of `dag` rendered for `interval` outside any run (`ferry validate --connect`,
/// `ferry sync plan`): a first try of a manual run named `run_id`, queued `now`.
fn prepare_preview(
    dag: &Dag,
    task: &ferry_dag::dag::Task,
    interval: ferry_dag::timetable::DataInterval,
    now: chrono::DateTime<Utc>,
    run_id: &str,
    (secrets, environment): (&ferry_secrets::Redactor, &str),
) -> Result<ferry_scheduler::render::Prepared, ferry_dag::template::TemplateProblem> {
    let run = ferry_store::RunRecord {
        id: 0,
        dag_id: dag.id.clone(),
        run_id: run_id.to_string(),
        logical_date: interval.start.timestamp_millis(),
        interval_start: interval.start.timestamp_millis(),
        interval_end: interval.end.timestamp_millis(),
        run_type: "manual".to_string(),
        conf: "{}".to_string(),
        state: "queued".to_string(),
        dag_version_id: 0,
        queued_at: now.timestamp_millis(),
        started_at: None,
        ended_at: None,
    };
    let context = ferry_scheduler::render::AttemptContext {
        try_number: 1,
        inherited_env: &[],
        secrets,
        previous_success: None,
        environment,
    };
    let templates = ferry_dag::template::Templates::new();
    ferry_scheduler::render::prepare(dag, task, &run, &templates, &context)
}

fn find_dag<'a>(catalog: &'a Catalog, id: &str) -> Result<&'a Dag> {
    if let Some(dag) = catalog.dags.get(id) {
        return Ok(dag);
    }
    let broken = catalog
        .diagnostics
        .iter()
        .any(|d| d.dag.as_deref() == Some(id) && d.is_error());
    if broken {
        bail!("DAG `{id}` has errors; run `ferry validate` to see them");
    }
    let ids: Vec<&str> = catalog.dags.keys().map(String::as_str).collect();
    let hint = ferry_dag::diagnostic::suggestion(id, ids.iter().copied())
        .map(|s| format!("; {s}"))
        .unwrap_or_default();
    let known = if ids.is_empty() {
        "no DAG is loaded from the configured folders".to_string()
    } else {
        format!("known DAGs: {}", ids.join(", "))
    };
    bail!("no DAG `{id}`{hint} ({known})")
}
