//! `ferry bench validate`: parses and validates generated DAG files and prints the figures
//! recorded in docs/benchmarks.md. `ferry bench engine` (in `bench_engine.rs`) runs the engine
//! workloads.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use chrono::Utc;
use ferry_dag::CatalogOptions;

pub(crate) fn validate(dags: usize, tasks: usize, runs: usize) -> Result<ExitCode> {
    let dir = tempfile::tempdir().context("cannot create a temporary folder")?;
    for index in 0..dags {
        std::fs::write(
            dir.path().join(format!("dag_{index:05}.yaml")),
            dag_file(index, tasks),
        )
        .context("cannot write a generated DAG file")?;
    }
    let options = CatalogOptions {
        channels: BTreeSet::from(["log".to_string()]),
        pools: BTreeSet::new(),
        connections: std::collections::BTreeMap::new(),
        environment: ferry_config::DEFAULT_ENVIRONMENT.to_string(),
        now: Utc::now(),
    };
    let folders = [dir.path().to_path_buf()];
    let mut timings = Vec::new();
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        let catalog = ferry_dag::catalog::load(&folders, &options);
        timings.push(started.elapsed());
        anyhow::ensure!(
            catalog.dags.len() == dags && !catalog.has_errors(),
            "the generated DAGs should all be valid: {:?}",
            catalog.diagnostics.first()
        );
    }
    timings.sort();
    let median = timings[timings.len() / 2];
    let seconds = |d: Duration| format!("{:.3}s", d.as_secs_f64());
    out!(
        "ferry bench validate: {dags} DAG files x {tasks} tasks, {} runs",
        timings.len()
    );
    out!("  wall (median): {}", seconds(median));
    out!("  wall (min):    {}", seconds(timings[0]));
    out!("  wall (max):    {}", seconds(timings[timings.len() - 1]));
    out!(
        "  per DAG file:  {:.1}µs",
        median.as_secs_f64() * 1e6 / dags.max(1) as f64
    );
    match peak_resident_memory() {
        Some(kib) => out!(
            "  peak RSS:      {:.1} MB (whole process, VmHWM)",
            kib as f64 / 1024.0
        ),
        None => out!("  peak RSS:      unavailable (no /proc/self/status)"),
    }
    Ok(ExitCode::SUCCESS)
}

/// A DAG file like a real one: a schedule in Tokyo, params, templates, a diamond-ish chain.
pub(crate) fn dag_file(index: usize, tasks: usize) -> String {
    let mut text = format!(
        "description: generated DAG {index}\nowner: bench\nschedule: '{} 2 * * *'\ntimezone: Asia/Tokyo\n\
         start_date: 2026-01-01\ncatchup: false\nparams:\n  table: events_{index}\n\
         defaults:\n  retries: 2\n  retry_delay: 1m\n  timeout: 30m\nalerts:\n  on_failure: [log]\ntasks:\n",
        index % 60
    );
    for task in 0..tasks {
        let _ = write!(
            text,
            "  - id: step_{task}\n    type: command\n    command: echo {{{{ ds }}}} {{{{ params.table }}}} {task}\n"
        );
        if task > 0 {
            let _ = writeln!(text, "    depends_on: [step_{}]", task - 1);
        }
    }
    text
}

/// Resets the process's peak resident memory (Linux: `/proc/self/clear_refs`), so that each
/// measured step's peak is its own.
pub(crate) fn reset_peak_memory() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The process's peak resident set size in KiB, from /proc/self/status.
pub(crate) fn peak_resident_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
