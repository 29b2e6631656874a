//! `ferry bench sync`: the `reverse_sync` task's code on generated rows from PostgreSQL into
//! PostgreSQL and MariaDB: a first full load (beside PostgreSQL's own `COPY` of the same rows
//! into the same kind of table, measured in the same run), a rerun after 1% of the rows
//! changed, and the peak resident memory of each. The figures are recorded in
//! docs/benchmarks.md.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use ferry_config::{Connection, Secret};
use ferry_executor::Outcome;
use ferry_executor::connector::{AttemptKey, ConnectorWork, RowLimit, SyncMode, SyncWork};
use futures_util::StreamExt as _;
use sqlx::Connection as _;

use super::bench::{peak_resident_memory, reset_peak_memory};

/// The source's rows as the syncs without `incremental` read them, for `COPY`.
const SOURCE_COPY: &str = "COPY ferry_bench_sync_source (id, school_id, grade, class_id, day, students, points) TO STDOUT";

/// The target table's columns, as both databases write them.
const COLUMNS: &str = "id BIGINT PRIMARY KEY, school_id INTEGER NOT NULL, grade INTEGER NOT NULL, class_id INTEGER NOT NULL, day VARCHAR(10) NOT NULL, students INTEGER NOT NULL, points BIGINT NOT NULL";

/// Runs the benchmark with `rows` rows `repeat` times: the source and PostgreSQL target at
/// `postgres`, the MariaDB target at `mysql` (if given).
pub(crate) fn run(
    postgres: &str,
    mysql: Option<&str>,
    rows: usize,
    repeat: usize,
) -> Result<ExitCode> {
    let repeat = repeat.max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let mut connections = BTreeMap::from([(
            "pg".to_string(),
            Connection::Postgres {
                url: Secret::new(postgres),
            },
        )]);
        if let Some(url) = mysql {
            connections.insert(
                "mysql".to_string(),
                Connection::Mysql {
                    url: Secret::new(url),
                },
            );
        }
        let connectors = ferry_connectors::LiveConnectors::new(connections);
        fill_source(postgres, rows).await?;
        out!("ferry bench sync: {rows} rows from PostgreSQL, reverse_sync (upsert by id: stage, diff, publish in one transaction), {repeat} pass(es)");
        let mut targets = vec![("pg", postgres)];
        if let Some(url) = mysql {
            targets.push(("mysql", url));
        }
        let mut copies = Vec::new();
        // Seconds by target and step, one per pass.
        let mut timed: BTreeMap<(usize, usize), Vec<f64>> = BTreeMap::new();
        for pass in 1..=repeat {
            let copy = copy_baseline(postgres).await?;
            let floor = read_alone(postgres).await?;
            copies.push(copy);
            out!("pass {pass} of {repeat}");
            out!(
                "PostgreSQL's own COPY of the same rows into a table with a primary key: {copy:.2} s ({:.0} rows/s)",
                rows as f64 / copy
            );
            out!(
                "Reading the source's rows alone (COPY … TO STDOUT, nothing written): {floor:.2} s; a rerun reads them all to find what changed"
            );
            out!(
                "{:<10} {:<24} {:>9} {:>12} {:>10} {:>14} {:>9} {:>9}",
                "target", "sync", "seconds", "rows/s", "written", "peak RSS (MB)", "staging", "publish"
            );
            for (index, &(target, url)) in targets.iter().enumerate() {
                let seconds = one_pass(&connectors, (target, url), postgres, rows).await?;
                for (round, second) in seconds.into_iter().enumerate() {
                    timed.entry((index, round)).or_default().push(second);
                }
            }
        }
        summary(&targets, rows, &copies, &timed);
        Ok(ExitCode::SUCCESS)
    })
}

/// The steps of a pass, in order: the first and the fourth are full loads, each followed by
/// a rerun whose speed is compared with the first.
const STEPS: [&str; 5] = [
    "first full load",
    "rerun, 1% changed",
    "rerun, nothing changed",
    "incremental: first load",
    "incremental: 1% changed",
];

/// Runs every step once into `target`, printing a line each; the seconds of each step.
async fn one_pass(
    connectors: &ferry_connectors::LiveConnectors,
    (target, url): (&str, &str),
    postgres: &str,
    rows: usize,
) -> Result<Vec<f64>> {
    reset_target(target, url).await?;
    let work = SyncWork {
        source: "pg".to_string(),
        sql: "SELECT id, school_id, grade, class_id, day, students, points FROM ferry_bench_sync_source".to_string(),
        target: target.to_string(),
        table: "ferry_bench_sync_target".to_string(),
        key: vec!["id".to_string()],
        mode: SyncMode::Upsert,
        columns: Vec::new(),
        scope: Vec::new(),
        max_delete: RowLimit::Percent(10.0),
        max_rejected: RowLimit::Count(0),
        batch_size: 10_000,
        timeout: None,
        plan_only: false,
        incremental: None,
    };
    // The same sync reading only rows at or past the highest `updated_at` it read.
    let incremental = SyncWork {
        sql: "SELECT id, school_id, grade, class_id, day, students, points, updated_at FROM ferry_bench_sync_source".to_string(),
        incremental: Some("updated_at".to_string()),
        ..work.clone()
    };
    let (work, incremental) = (
        ConnectorWork::ReverseSync(Box::new(work)),
        ConnectorWork::ReverseSync(Box::new(incremental)),
    );
    let mut full = 0.0;
    let mut state = None;
    let mut timed = Vec::new();
    for (round, label) in STEPS.into_iter().enumerate() {
        if round == 1 || round == 4 {
            change_one_percent(postgres).await?;
        }
        if round == 3 {
            drop_state(target, url, state.as_deref()).await?;
            reset_target(target, url).await?;
        }
        let work = if round < 3 { &work } else { &incremental };
        reset_peak_memory();
        let key = AttemptKey {
            dag: "bench".to_string(),
            task: format!("sync_{target}"),
            run_id: format!("bench_{round}"),
            run_queued_at: 0,
            try_number: 1,
            lease: 1,
        };
        let started = Instant::now();
        let done = super::outside::attempt(connectors, work, &key).await;
        let seconds = started.elapsed().as_secs_f64();
        if !matches!(done.outcome, Outcome::Succeeded { .. }) {
            bail!(
                "the sync into {target} failed: {:?}\n{}",
                done.outcome,
                done.log
            );
        }
        timed.push(seconds);
        state = done
            .log
            .lines()
            .find_map(|l| l.split("the synced state is kept in ").nth(1))
            .map(str::to_string);
        let figure = |name: &str| done.figures.get(name).copied().unwrap_or(0);
        let written = figure("rows_inserted") + figure("rows_updated");
        if round == 0 {
            full = seconds;
        }
        let peak = peak_resident_memory()
            .map_or("?".to_string(), |kib| format!("{:.1}", kib as f64 / 1024.0));
        let speed = if round == 0 || round == 3 {
            format!("{:.0}", rows as f64 / seconds)
        } else {
            format!("{:.1}x faster", full / seconds)
        };
        let phase = |marker: &str| {
            done.log
                .lines()
                .find_map(|l| l.split(marker).nth(1))
                .and_then(|rest| rest.split_whitespace().next())
                .unwrap_or("?")
                .to_string()
        };
        out!(
            "{:<10} {:<24} {:>9.2} {:>12} {:>10} {:>14} {:>9} {:>9}",
            database_name(target),
            label,
            seconds,
            speed,
            written,
            peak,
            if done.log.contains("loaded straight into") {
                "direct".to_string()
            } else {
                phase("unchanged) in ")
            },
            phase("published in ")
        );
    }
    drop_state(target, url, state.as_deref()).await?;
    Ok(timed)
}

/// How the summary names a target.
fn database_name(target: &str) -> &'static str {
    if target == "pg" {
        "postgres"
    } else {
        "mariadb"
    }
}

/// The median of `values` (not empty), and their range.
fn median(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    let median = if sorted.len().is_multiple_of(2) {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    } else {
        sorted[middle]
    };
    (median, sorted[0], sorted[sorted.len() - 1])
}

/// Prints each step's median and range over the passes, the full load against `COPY` and
/// each rerun against the full load of its pass.
fn summary(
    targets: &[(&str, &str)],
    rows: usize,
    copies: &[f64],
    timed: &BTreeMap<(usize, usize), Vec<f64>>,
) {
    let (copy, copy_low, copy_high) = median(copies);
    out!(
        "summary over {} pass(es): median (fastest–slowest)",
        copies.len()
    );
    out!("PostgreSQL's own COPY: {copy:.2} s ({copy_low:.2}–{copy_high:.2})");
    out!(
        "{:<10} {:<24} {:>20} {:>12} {:>28}",
        "target",
        "sync",
        "seconds",
        "rows/s",
        "vs the first full load"
    );
    for (index, &(target, _)) in targets.iter().enumerate() {
        let Some(full) = timed.get(&(index, 0)) else {
            continue;
        };
        for (round, label) in STEPS.into_iter().enumerate() {
            let Some(seconds) = timed.get(&(index, round)) else {
                continue;
            };
            let (middle, low, high) = median(seconds);
            let (speed, versus) = if round == 0 || round == 3 {
                (format!("{:.0}", rows as f64 / middle), String::new())
            } else {
                // Each pass's rerun against that pass's full load.
                let ratios: Vec<f64> = full.iter().zip(seconds).map(|(f, s)| f / s).collect();
                let (ratio, worst, best) = median(&ratios);
                (
                    String::new(),
                    format!("{ratio:.1}x faster ({worst:.1}–{best:.1})"),
                )
            };
            out!(
                "{:<10} {:<24} {:>20} {:>12} {:>28}",
                database_name(target),
                label,
                format!("{middle:.2} ({low:.2}–{high:.2})"),
                speed,
                versus
            );
        }
        if target == "pg" {
            let shares: Vec<f64> = copies
                .iter()
                .zip(full)
                .map(|(c, f)| 100.0 * c / f)
                .collect();
            let (share, low, high) = median(&shares);
            out!(
                "postgres full load at {share:.0}% of COPY's speed ({low:.0}–{high:.0}% over the passes)"
            );
        }
    }
}

/// Makes `ferry_bench_sync_source` with `rows` generated rows (inside PostgreSQL).
async fn fill_source(url: &str, rows: usize) -> Result<()> {
    let mut db = sqlx::PgConnection::connect(url)
        .await
        .context("cannot connect to PostgreSQL")?;
    sqlx::raw_sql(&format!(
        "DROP TABLE IF EXISTS ferry_bench_sync_source;
         CREATE TABLE ferry_bench_sync_source AS
         SELECT i::bigint AS id, (i % 300 + 1)::int AS school_id, (i % 6 + 1)::int AS grade,
                (i % 3600 + 1)::int AS class_id, '2026-11-28'::varchar(10) AS day,
                (i % 40)::int AS students, (i * 7 % 1000)::bigint AS points,
                i::bigint AS updated_at
         FROM generate_series(1, {rows}) AS i;
         CREATE INDEX ON ferry_bench_sync_source (updated_at);
         ANALYZE ferry_bench_sync_source"
    ))
    .execute(&mut db)
    .await
    .context("cannot make the source table")?;
    Ok(())
}

/// Changes one row in a hundred of the source (moving its `updated_at` past every other).
async fn change_one_percent(url: &str) -> Result<()> {
    let mut db = sqlx::PgConnection::connect(url).await?;
    sqlx::raw_sql(
        "UPDATE ferry_bench_sync_source SET points = points + 1, updated_at = updated_at + 1000000000 WHERE id % 100 = 0",
    )
        .execute(&mut db)
        .await?;
    Ok(())
}

/// PostgreSQL's own COPY of the source's rows into a fresh table with a primary key: the
/// seconds it took.
async fn copy_baseline(url: &str) -> Result<f64> {
    let mut reader = sqlx::PgConnection::connect(url).await?;
    let mut writer = sqlx::PgConnection::connect(url).await?;
    sqlx::raw_sql(&format!(
        "DROP TABLE IF EXISTS ferry_bench_sync_copy; CREATE TABLE ferry_bench_sync_copy ({COLUMNS})"
    ))
    .execute(&mut writer)
    .await?;
    let started = Instant::now();
    let mut sink = writer
        .copy_in_raw("COPY ferry_bench_sync_copy FROM STDIN")
        .await?;
    {
        let mut source = reader.copy_out_raw(SOURCE_COPY).await?;
        while let Some(chunk) = source.next().await {
            sink.send(chunk?).await?;
        }
    }
    sink.finish().await?;
    let seconds = started.elapsed().as_secs_f64();
    sqlx::raw_sql("DROP TABLE ferry_bench_sync_copy")
        .execute(&mut writer)
        .await?;
    Ok(seconds)
}

/// The seconds PostgreSQL takes to send the source's rows, read and thrown away: the least
/// any sync that reads them all takes.
async fn read_alone(url: &str) -> Result<f64> {
    let mut reader = sqlx::PgConnection::connect(url).await?;
    let started = Instant::now();
    let mut bytes = 0;
    {
        let mut source = reader.copy_out_raw(SOURCE_COPY).await?;
        while let Some(chunk) = source.next().await {
            bytes += chunk?.len();
        }
    }
    if bytes == 0 {
        bail!("the source table sent nothing");
    }
    Ok(started.elapsed().as_secs_f64())
}

/// An empty target table.
async fn reset_target(target: &str, url: &str) -> Result<()> {
    let sql = format!(
        "DROP TABLE IF EXISTS ferry_bench_sync_target; CREATE TABLE ferry_bench_sync_target ({COLUMNS})"
    );
    if target == "pg" {
        let mut db = sqlx::PgConnection::connect(url).await?;
        sqlx::raw_sql(&sql).execute(&mut db).await?;
    } else {
        let mut db = sqlx::MySqlConnection::connect(url)
            .await
            .context("cannot connect to MariaDB")?;
        sqlx::raw_sql(&sql).execute(&mut db).await?;
    }
    Ok(())
}

/// Drops the benchmark's sync state (and marks), so that the next run starts with a first
/// full load.
async fn drop_state(target: &str, url: &str, state: Option<&str>) -> Result<()> {
    let Some(state) = state.filter(|s| s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    else {
        return Ok(());
    };
    let sql = format!(
        "DROP TABLE IF EXISTS {state}; DROP TABLE IF EXISTS ferry_bench_sync_target; DROP TABLE IF EXISTS ferry_sync_marks"
    );
    if target == "pg" {
        let mut db = sqlx::PgConnection::connect(url).await?;
        sqlx::raw_sql(&sql).execute(&mut db).await?;
    } else {
        let mut db = sqlx::MySqlConnection::connect(url).await?;
        sqlx::raw_sql(&sql).execute(&mut db).await?;
    }
    Ok(())
}
