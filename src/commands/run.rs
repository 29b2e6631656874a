//! `ferry run` (one run in the foreground) and `ferry backfill` (a range of dates).

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use chrono::{Duration, Utc};
use ferry_config::Config;
use ferry_dag::Dag;
use ferry_dag::timetable::{DataInterval, parse_instant};
use ferry_scheduler::clock::{Clock, SystemClock};
use ferry_scheduler::manual::{check_interval, interval_for};
use ferry_store::RunState;

use super::engine::{
    FORCED_STOP, Followed, block_on, engine, follow, load_all, naming, open_store, shown_url,
    stop_message, try_own, watch_signals,
};
use crate::cli::{BackfillArgs, DagSource, RunArgs};
use ferry_store::{OpenMode, Store};

pub(crate) fn run(config: &Config, args: &RunArgs) -> Result<ExitCode> {
    let catalog = super::load_catalog(config, &[], &DagSource { now: args.now });
    let dag = super::find_dag(&catalog, &args.dag)?.clone();
    let conf = params(&dag, &args.params)?;
    let clock: Arc<dyn Clock> =
        Arc::new(args.now.map_or_else(SystemClock::real, SystemClock::as_if));
    let interval = interval_for(&dag, args.date.as_deref(), clock.now())?;
    if args.date.is_some() && !args.force {
        check_interval(&dag, interval, clock.now())?;
    }
    block_on(async {
        let store = open_store(config, &args.engine, OpenMode::Create).await?;
        let tasks = dag.tasks.iter().map(|t| t.id.clone()).collect();
        let owner = try_own(&store, "ferry run").await?;
        same_environment(&owner, config)?;
        let mut engine = engine(
            config,
            store.clone(),
            clock,
            crate::progress::for_run(tasks),
            &args.stop,
        )
        .await?;
        load_all(&mut engine, &catalog).await?;
        let Some(run) = engine
            .create_run(&dag.id, interval, "manual", &conf)
            .await?
        else {
            let logical = interval.start.with_timezone(&dag.timezone).to_rfc3339();
            let existing = store
                .run_for_interval(&dag.id, interval.start.timestamp_millis())
                .await?;
            let named = existing.map_or_else(String::new, |run| {
                format!(": {} ({})", run.run_id, run.state)
            });
            bail!(
                "DAG `{}` already has a run for logical date {logical}{named}; see it with `ferry runs show RUN`, or run it again with `ferry runs rerun RUN` or `ferry tasks clear RUN`",
                dag.id,
            );
        };
        let ended = execute(
            engine,
            owner,
            &store,
            &[run.run_id],
            config,
            &args.stop,
            "ferry run",
        )
        .await?;
        store.close().await;
        finish(&ended)
    })
    .map_err(|error| naming(&shown_url(config, &args.engine), error))
}

/// Executes the runs `run_ids` in this process if it owns the store, or hands them to the
/// process that does and follows them (taking the store over if that process goes away first).
async fn execute(
    mut engine: ferry_scheduler::Engine,
    owner: Result<ferry_store::OwnerLock, String>,
    store: &Store,
    run_ids: &[String],
    config: &Config,
    stop: &crate::cli::StopArgs,
    command: &str,
) -> Result<Vec<ferry_store::RunRecord>> {
    let lock = match owner {
        Ok(lock) => lock,
        Err(holder) => {
            store.wake().await?;
            say!("ferry: the store is owned by {holder}: the run(s) are handed to it; following");
            let owner_gone_after =
                std::time::Duration::from_secs(config.engine.heartbeat_timeout_secs.max(2));
            match follow(store, run_ids, &engine, command, owner_gone_after).await? {
                Followed::Ended(runs) => return Ok(runs),
                Followed::Interrupted => return Ok(Vec::new()),
                Followed::Owner(lock) => {
                    say!("ferry: the store is free now: this process executes the run(s)");
                    lock
                }
            }
        }
    };
    engine.set_owner(lock);
    let signals = watch_signals(stop_message(config, stop), Some(FORCED_STOP))?;
    Ok(engine
        .drive(&signals.shutdown, Some(run_ids), false, None)
        .await?)
}

pub(crate) fn backfill(config: &Config, args: &BackfillArgs) -> Result<ExitCode> {
    let catalog = super::load_catalog(config, &[], &DagSource { now: None });
    let dag = super::find_dag(&catalog, &args.dag)?.clone();
    let Some(schedule) = dag.schedule.clone() else {
        bail!(
            "DAG `{}` has no schedule, so it has no intervals to backfill; use `ferry run --date`",
            dag.id
        );
    };
    let tz = dag.timezone;
    let from =
        parse_instant(&args.from, tz).with_context(|| format!("`{}` is not a date", args.from))?;
    let to = parse_instant(&args.to, tz).with_context(|| format!("`{}` is not a date", args.to))?
        + Duration::days(1);
    if to <= from {
        bail!(
            "--from {} is after --to {}: the range is reversed",
            args.from,
            args.to
        );
    }
    let intervals: Vec<DataInterval> = std::iter::successors(
        schedule
            .at_or_after(from)
            .and_then(|s| schedule.interval_from(s)),
        |i| schedule.interval_from(i.end),
    )
    .take_while(|interval| interval.start < to)
    .collect();
    let now = Utc::now();
    let (intervals, refused): (Vec<DataInterval>, Vec<DataInterval>) = intervals
        .into_iter()
        .partition(|interval| args.force || check_interval(&dag, *interval, now).is_ok());
    if let Some(first) = refused.first() {
        let why = check_interval(&dag, *first, now)
            .err()
            .map_or_else(String::new, |error| error.to_string());
        say!(
            "ferry: {} interval(s) of the range skipped ({why}); --force makes them too",
            refused.len()
        );
    }
    let parallel = args.parallel.map(|n| n.max(1));
    block_on(async {
        let store = open_store(config, &args.engine, OpenMode::Create).await?;
        let owner = try_own(&store, "ferry backfill").await?;
        same_environment(&owner, config)?;
        let mut engine = engine(
            config,
            store.clone(),
            Arc::new(SystemClock::real()),
            crate::progress::lines(),
            &args.stop,
        )
        .await?;
        load_all(&mut engine, &catalog).await?;
        if let Some(parallel) = parallel {
            engine.limit_active_runs(&dag.id, parallel);
        }
        let mut run_ids = Vec::new();
        for interval in intervals {
            match engine
                .create_run(&dag.id, interval, "backfill", &serde_json::Map::new())
                .await?
            {
                Some(run) => run_ids.push(run.run_id),
                None => say!(
                    "ferry: {} already has a run for {}; skipped",
                    dag.id,
                    interval.start.with_timezone(&tz).to_rfc3339()
                ),
            }
        }
        if run_ids.is_empty() {
            say!("ferry: nothing to backfill");
            return Ok(ExitCode::SUCCESS);
        }
        let ended = execute(
            engine,
            owner,
            &store,
            &run_ids,
            config,
            &args.stop,
            "ferry backfill",
        )
        .await?;
        store.close().await;
        finish(&ended)
    })
    .map_err(|error| naming(&shown_url(config, &args.engine), error))
}

/// Runs handed to the store's owner execute with the connections of the owner's environment:
/// refused (before any run is made) when that is not the environment asked for.
fn same_environment(owner: &Result<ferry_store::OwnerLock, String>, config: &Config) -> Result<()> {
    if let Err(holder) = owner
        && let Some(theirs) = super::engine::holder_environment(holder)
        && theirs != config.environment
    {
        bail!(
            "the store is owned by {holder}, which runs tasks with the connections of the environment `{theirs}`, not `{}`: run this with --env {theirs}, or stop it first",
            config.environment
        );
    }
    Ok(())
}

/// The exit code: 0 when every run succeeded; 1 otherwise (including interrupted runs).
fn finish(ended: &[ferry_store::RunRecord]) -> Result<ExitCode> {
    if ended.is_empty() {
        say!(
            "ferry: interrupted; the run is recorded and goes on when a ferry engine works on the store (`ferry serve`)"
        );
        return Ok(ExitCode::from(1));
    }
    let failed = ended
        .iter()
        .filter(|run| run.state().map_or(true, |s| s != RunState::Success))
        .count();
    for run in ended {
        out!("{} {}", run.run_id, run.state);
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `--param name=value` overrides, checked against the DAG's declared parameters: values are
/// read as the declared type (JSON for a parameter given only by a default).
fn params(dag: &Dag, overrides: &[String]) -> Result<serde_json::Map<String, serde_json::Value>> {
    let mut given = Vec::new();
    for pair in overrides {
        let Some((name, value)) = pair.split_once('=') else {
            bail!("`--param {pair}`: write NAME=VALUE");
        };
        given.push((name.to_string(), value.to_string()));
    }
    ferry_dag::params::resolve(&dag.id, &dag.param_types, &given).map_err(anyhow::Error::msg)
}
