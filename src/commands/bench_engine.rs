//! `ferry bench engine`: the engine workloads W1–W5 on SQLite (or `--database-url`), as a table.
//!
//! W1 chain of 100 `true` commands; W2 fan 1 → 200 → 1 at parallelism 16; W3 1,000 DAG files of
//! 10 tasks loaded and their due runs created; W4 10 DAGs loaded with nothing due: memory and CPU
//! over 5 s; W5 one run of N `noop` tasks in a wide and deep graph, N = 100, 1,000, 10,000.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use chrono::Utc;
use ferry_config::Config;
use ferry_dag::timetable::DataInterval;
use ferry_dag::{CatalogOptions, Templates, parse_dag};
use ferry_scheduler::clock::SystemClock;
use ferry_scheduler::{Engine, Progress, Shutdown};
use ferry_store::{RunState, Store};

use super::bench::{dag_file, peak_resident_memory};
use super::engine::block_on;
use crate::cli::StopArgs;

type Events = Arc<Mutex<Vec<(String, String, Instant)>>>;

pub(crate) fn run(config: &Config, database_url: Option<&str>) -> Result<ExitCode> {
    let dir = tempfile::tempdir().context("cannot create a temporary folder")?;
    let url = database_url.map_or_else(
        || format!("sqlite://{}", dir.path().join("bench.db").display()),
        str::to_string,
    );
    let backend = if url.starts_with("postgres") {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let tag = Utc::now().format("%H%M%S%3f").to_string();
    block_on(async {
        let store = Store::open(&url).await?;
        out!("ferry bench engine ({backend}, release build recommended)");
        out!("{:<6} {:<52} result", "", "workload");
        let (rss, cpu) = idle(config, &store, dir.path(), &tag).await?;
        out!(
            "{:<6} {:<52} RSS {:.1} MB, CPU {:.2}% of a core over 5 s",
            "W4",
            "10 DAGs loaded, nothing due",
            rss,
            cpu
        );
        let (total, gap) = chain(config, &store, dir.path(), &tag).await?;
        out!(
            "{:<6} {:<52} {:.3} s trigger to success, median gap {:.2} ms",
            "W1",
            "chain of 100 `true` tasks",
            total,
            gap
        );
        let fan_time = fan(config, &store, dir.path(), &tag).await?;
        out!(
            "{:<6} {:<52} {:.3} s",
            "W2",
            "fan 1 -> 200 `true` -> 1, parallelism 16",
            fan_time
        );
        for size in [100, 1_000, 10_000] {
            let seconds = wide_and_deep(config, &store, dir.path(), &tag, size).await?;
            out!(
                "{:<6} {:<52} {:.3} s, {:.1} µs per task",
                "W5",
                format!("one run of {size} `noop` tasks (wide and deep)"),
                seconds,
                seconds * 1e6 / size as f64
            );
        }
        let load = load_many(config, &store, dir.path(), &tag).await?;
        out!(
            "{:<6} {:<52} {:.3} s",
            "W3",
            "1,000 DAG files x 10 tasks loaded and scheduled",
            load
        );
        store.close().await;
        Ok(ExitCode::SUCCESS)
    })
}

fn engine(
    config: &Config,
    store: &Store,
    parallelism: usize,
    events: Option<Events>,
) -> Result<Engine> {
    let mut settings = super::engine::engine_config(config, store, &StopArgs { on_stop: None })?;
    settings.parallelism = parallelism;
    let observer = Box::new(move |progress: &Progress| {
        if let (Some(events), Some(task)) = (&events, &progress.task_id) {
            events.lock().unwrap_or_else(PoisonError::into_inner).push((
                task.clone(),
                progress.state.clone(),
                Instant::now(),
            ));
        }
    });
    Ok(Engine::new(
        store.clone(),
        Arc::new(SystemClock::real()),
        settings,
        observer,
    ))
}

/// Loads `text` as DAG `id`, runs it once, returns the wall time from trigger to its end.
async fn run_once(engine: &mut Engine, dir: &Path, id: &str, text: &str) -> Result<f64> {
    let file = dir.join(format!("{id}.yaml"));
    std::fs::write(&file, text)?;
    let parsed = parse_dag(&file, text, &Templates::new());
    let dag = parsed
        .dag
        .with_context(|| format!("benchmark DAG invalid: {:?}", parsed.diagnostics.first()))?;
    engine.load_dag(dag, text).await?;
    let started = Instant::now();
    let now = Utc::now();
    let run = engine
        .create_run(
            id,
            DataInterval {
                start: now,
                end: now,
            },
            "manual",
            &serde_json::Map::new(),
        )
        .await?
        .context("a new run")?;
    let ended = engine
        .drive(
            &Shutdown::default(),
            Some(std::slice::from_ref(&run.run_id)),
            false,
            None,
        )
        .await?;
    let elapsed = started.elapsed().as_secs_f64();
    ensure!(
        ended.first().and_then(|r| r.state().ok()) == Some(RunState::Success),
        "benchmark run did not succeed"
    );
    Ok(elapsed)
}

/// W1: a chain of 100 `true` tasks; the wall time from trigger to success, and the median gap
/// between one task's end and the next one's start (ms).
pub(crate) async fn chain(
    config: &Config,
    store: &Store,
    dir: &Path,
    tag: &str,
) -> Result<(f64, f64)> {
    let events: Events = Arc::default();
    let mut engine = engine(config, store, 16, Some(events.clone()))?;
    let mut text = String::from("max_active_tasks: 16\ntasks:\n");
    for i in 0..100 {
        text.push_str(&format!("  - {{id: t{i}, type: command, argv: [\"true\"]"));
        if i > 0 {
            text.push_str(&format!(", depends_on: [t{}]", i - 1));
        }
        text.push_str("}\n");
    }
    let total = run_once(&mut engine, dir, &format!("w1_{tag}"), &text).await?;
    let events = events
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let at = |task: &str, state: &str| {
        events
            .iter()
            .find(|(t, s, _)| t == task && s == state)
            .map(|(_, _, at)| *at)
    };
    let mut gaps: Vec<f64> = (1..100)
        .filter_map(|i| {
            Some(
                (at(&format!("t{i}"), "running")? - at(&format!("t{}", i - 1), "success")?)
                    .as_secs_f64()
                    * 1000.0,
            )
        })
        .collect();
    gaps.sort_by(f64::total_cmp);
    Ok((total, gaps.get(gaps.len() / 2).copied().unwrap_or_default()))
}

async fn fan(config: &Config, store: &Store, dir: &Path, tag: &str) -> Result<f64> {
    let mut engine = engine(config, store, 16, None)?;
    let mut text = String::from(
        "max_active_tasks: 16\ntasks:\n  - {id: start, type: command, argv: [\"true\"]}\n",
    );
    for i in 0..200 {
        text.push_str(&format!(
            "  - {{id: f{i}, type: command, argv: [\"true\"], depends_on: [start]}}\n"
        ));
    }
    let all: Vec<String> = (0..200).map(|i| format!("f{i}")).collect();
    text.push_str(&format!(
        "  - {{id: end, type: command, argv: [\"true\"], depends_on: [{}]}}\n",
        all.join(", ")
    ));
    run_once(&mut engine, dir, &format!("w2_{tag}"), &text).await
}

async fn wide_and_deep(
    config: &Config,
    store: &Store,
    dir: &Path,
    tag: &str,
    size: usize,
) -> Result<f64> {
    let mut engine = engine(config, store, 64, None)?;
    let width = (size as f64).sqrt().ceil() as usize;
    let mut text = String::from("max_active_tasks: 64\ntasks:\n");
    for i in 0..size {
        let (layer, column) = (i / width, i % width);
        text.push_str(&format!("  - {{id: n{i}, type: noop"));
        if layer > 0 {
            let up = (layer - 1) * width;
            text.push_str(&format!(
                ", depends_on: [n{}, n{}]",
                up + column,
                up + (column + 1) % width
            ));
        }
        text.push_str("}\n");
    }
    run_once(&mut engine, dir, &format!("w5_{size}_{tag}"), &text).await
}

async fn load_many(config: &Config, store: &Store, dir: &Path, tag: &str) -> Result<f64> {
    let folder = dir.join(format!("w3_{tag}"));
    std::fs::create_dir_all(&folder)?;
    for index in 0..1000 {
        let text =
            dag_file(index, 10).replace("tasks:\n", &format!("id: w3_{tag}_{index}\ntasks:\n"));
        std::fs::write(folder.join(format!("dag_{index:05}.yaml")), text)?;
    }
    let started = Instant::now();
    let options = CatalogOptions {
        channels: BTreeSet::from(["log".to_string()]),
        pools: BTreeSet::new(),
        connections: std::collections::BTreeMap::new(),
        environment: ferry_config::DEFAULT_ENVIRONMENT.to_string(),
        now: Utc::now(),
    };
    let catalog = ferry_dag::catalog::load(std::slice::from_ref(&folder), &options);
    ensure!(
        catalog.dags.len() == 1000,
        "generated DAGs invalid: {:?}",
        catalog.diagnostics.first()
    );
    let mut engine = engine(config, store, 16, None)?;
    super::engine::load_all(&mut engine, &catalog).await?;
    engine.create_due_runs().await?;
    Ok(started.elapsed().as_secs_f64())
}

/// Resident memory (MB) and CPU use (% of one core) while 10 DAGs are loaded and nothing is due.
async fn idle(config: &Config, store: &Store, dir: &Path, tag: &str) -> Result<(f64, f64)> {
    let mut engine = engine(config, store, 16, None)?;
    for index in 0..10 {
        let text = format!(
            "schedule: '0 0 1 1 *'\nstart_date: 2099-01-01\ntasks:\n  - {{id: a, type: command, command: 'echo {index}'}}\n"
        );
        let file = dir.join(format!("w4_{tag}_{index}.yaml"));
        std::fs::write(&file, &text)?;
        let dag = parse_dag(&file, &text, &Templates::new())
            .dag
            .context("idle DAG")?;
        engine.load_dag(dag, &text).await?;
    }
    let shutdown = Shutdown::default();
    let stopper = shutdown.requested.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        stopper.cancel();
    });
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    engine.drive(&shutdown, None, true, None).await?;
    let cpu = (cpu_seconds() - cpu_before) / started.elapsed().as_secs_f64() * 100.0;
    let rss = resident_memory().unwrap_or_else(|| peak_resident_memory().unwrap_or_default())
        as f64
        / 1024.0;
    Ok((rss, cpu))
}

/// This process's current resident set in KiB.
fn resident_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// User + system CPU seconds of this process.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}
