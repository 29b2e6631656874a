//! `ferry bench api`: the HTTP API under load. A state database (a temporary SQLite file, or a
//! scratch database on the PostgreSQL server of `--postgres`) is filled with `--runs` ended runs
//! of 100 DAGs with 10 task instances each; the API answers on loopback; requests are sent at
//! `--rate` per second for `--seconds`, on a fixed schedule whatever the answers (latency counts
//! from when a request was due, so a slow answer is not hidden by the requests behind it),
//! alternately listing one DAG's runs and reading one run with its task instances. Then the
//! engine's W1 (a chain of 100 `true` tasks) runs on the same store, alone and under the load.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use ferry_config::{ApiConfig, ApiToken, Config, Role};
use ferry_store::{NewRun, NewTaskInstance, Store};
use sqlx::Connection as _;

use super::engine::block_on;

/// DAGs the runs are spread over.
const DAGS: usize = 100;
/// Task instances per run.
const TASKS: usize = 10;
/// Times W1 runs alone, and again under the load.
const W1_PASSES: usize = 3;
/// The token the load sends.
const TOKEN: &str = "bench-token";

pub(crate) fn run(
    config: &Config,
    postgres: Option<&str>,
    runs: usize,
    rate: u32,
    seconds: u64,
) -> Result<ExitCode> {
    ensure!(runs >= DAGS, "--runs must be at least {DAGS}");
    ensure!(rate > 0, "--rate must be at least 1");
    let dir = tempfile::tempdir().context("cannot create a temporary folder")?;
    block_on(async {
        let scratch = match postgres {
            Some(url) => Some(Scratch::create(url).await?),
            None => None,
        };
        let url = scratch.as_ref().map_or_else(
            || format!("sqlite://{}", dir.path().join("bench.db").display()),
            |s| s.url.clone(),
        );
        let backend = if scratch.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        };
        let store = Store::open(&url).await?;
        out!(
            "ferry bench api ({backend}, release build recommended): {runs} runs, {} task instances",
            runs * TASKS
        );
        let began = Instant::now();
        let run_ids = fill(&store, &url, runs).await?;
        out!("filled in {:.1} s", began.elapsed().as_secs_f64());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        // The API reads through a pool of its own, as `ferry serve` does.
        let api_store = Store::open_with(&url, ferry_store::OpenMode::Existing).await?;
        let router = ferry_api::router(
            api_store,
            &api_config()?,
            ferry_api::DagCatalog::default(),
            ferry_api::Metrics::new(vec![("default".to_string(), 16)]),
        );
        // As in `ferry serve`: the API on a runtime of its own.
        let stop = tokio_util::sync::CancellationToken::new();
        let api = ferry_api::spawn(listener.into_std()?, router, stop.clone(), Duration::ZERO)?;
        // A short warm-up, as a daemon that has answered before.
        load(&base, &run_ids, rate, 1).await?;
        let mut alone = Vec::new();
        for pass in 0..W1_PASSES {
            alone.push(
                super::bench_engine::chain(config, &store, dir.path(), &format!("alone{pass}"))
                    .await?
                    .0,
            );
        }
        // The load alone, then the load while W1 runs.
        let quiet = in_background(&base, &run_ids, rate, seconds).await??;
        report(
            &format!("{rate} requests/s for {seconds} s, the engine idle"),
            quiet,
        );
        let during = in_background(&base, &run_ids, rate, seconds);
        // W1 starts once the load is steady.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut loaded = Vec::new();
        for pass in 0..W1_PASSES {
            loaded.push(
                super::bench_engine::chain(config, &store, dir.path(), &format!("loaded{pass}"))
                    .await?
                    .0,
            );
        }
        report(
            &format!("{rate} requests/s for {seconds} s, W1 running {W1_PASSES} times meanwhile"),
            during.await??,
        );
        let [alone_median, alone_fastest, alone_slowest] = spread(alone);
        let [loaded_median, loaded_fastest, loaded_slowest] = spread(loaded);
        out!(
            "W1 chain of 100 `true` tasks, {W1_PASSES} passes: median {alone_median:.3} s ({alone_fastest:.3}–{alone_slowest:.3}) alone; median {loaded_median:.3} s ({loaded_fastest:.3}–{loaded_slowest:.3}) under the load"
        );
        stop.cancel();
        api.await??;
        store.close().await;
        if let Some(scratch) = scratch {
            scratch.drop_it().await?;
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// An admin token for the load.
fn api_config() -> Result<ApiConfig> {
    let hash = ferry_scheduler::engine::content_hash(TOKEN);
    Ok(ApiConfig {
        listen: "127.0.0.1:0".to_string(),
        tokens: [(
            "bench".to_string(),
            ApiToken {
                hash: format!("sha256:{hash}"),
                role: Role::Admin,
                trees: Vec::new(),
                tags: Vec::new(),
            },
        )]
        .into(),
    })
}

/// Makes `runs` runs over [`DAGS`] DAGs with [`TASKS`] task instances each, through the store,
/// then ends them all `success` (one statement each for runs and task instances); returns the
/// run ids.
async fn fill(store: &Store, url: &str, runs: usize) -> Result<Vec<String>> {
    let source = "tasks:\n".to_string()
        + &(0..TASKS)
            .map(|i| format!("  - {{id: t{i}, type: noop}}\n"))
            .collect::<String>();
    let mut versions = Vec::new();
    for d in 0..DAGS {
        let hash = ferry_scheduler::engine::content_hash(&format!("{d}{source}"));
        versions.push(
            store
                .record_dag_version(&format!("dag_{d:03}"), &hash, "bench.yaml", &source, 0)
                .await?,
        );
    }
    let task_ids: Vec<String> = (0..TASKS).map(|i| format!("t{i}")).collect();
    let tasks: Vec<NewTaskInstance<'_>> = task_ids
        .iter()
        .map(|id| NewTaskInstance {
            task_id: id,
            max_tries: 1,
            priority: 1,
            pool: "default",
        })
        .collect();
    let dag_ids: Vec<String> = (0..DAGS).map(|d| format!("dag_{d:03}")).collect();
    let day = 86_400_000_i64;
    let start = 1_700_000_000_000_i64;
    let run_ids: Vec<String> = (0..runs)
        .map(|i| format!("{}__scheduled__{}", dag_ids[i % DAGS], i / DAGS))
        .collect();
    for chunk in (0..runs).collect::<Vec<_>>().chunks(1000) {
        let batch: Vec<(NewRun<'_>, &[NewTaskInstance<'_>])> = chunk
            .iter()
            .map(|&i| {
                let logical = start + (i / DAGS) as i64 * day;
                (
                    NewRun {
                        dag_id: &dag_ids[i % DAGS],
                        run_id: &run_ids[i],
                        interval_start: logical,
                        interval_end: logical + day,
                        run_type: "scheduled",
                        conf: "{}",
                        dag_version_id: versions[i % DAGS],
                        at: logical + day,
                    },
                    tasks.as_slice(),
                )
            })
            .collect();
        store.create_runs(&batch, "scheduler").await?;
    }
    let end = [
        "UPDATE dag_runs SET state = 'success', started_at = queued_at, ended_at = queued_at + 60000",
        "UPDATE task_instances SET state = 'success', try_number = 1, started_at = 1700000000000, ended_at = 1700000006000",
    ];
    if url.starts_with("postgres") {
        let mut db = sqlx::PgConnection::connect(url).await?;
        for statement in end {
            sqlx::query(statement).execute(&mut db).await?;
        }
        sqlx::query("ANALYZE").execute(&mut db).await?;
    } else {
        let mut db = sqlx::SqliteConnection::connect(url).await?;
        for statement in end {
            sqlx::query(statement).execute(&mut db).await?;
        }
        sqlx::query("ANALYZE").execute(&mut db).await?;
    }
    Ok(run_ids)
}

/// Sends the load from a thread and runtime of their own, at the lowest CPU priority: clients
/// elsewhere would take none of this machine's CPU, here they take what is left.
fn in_background(
    base: &str,
    run_ids: &[String],
    rate: u32,
    seconds: u64,
) -> tokio::task::JoinHandle<Result<Latencies>> {
    let (base, run_ids) = (base.to_string(), run_ids.to_vec());
    tokio::task::spawn_blocking(move || {
        let _ = thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min);
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(load(&base, &run_ids, rate, seconds))
    })
}

/// Prints the latency percentiles of a load.
fn report(title: &str, (lists, details, late): Latencies) {
    out!(
        "{title} ({} sent, {late} sent more than 5 ms late by the client):",
        lists.len() + details.len()
    );
    out!(
        "  {:<48} {:>8} {:>8} {:>8}",
        "route",
        "p50 ms",
        "p99 ms",
        "max ms"
    );
    for (name, latencies) in [
        ("GET /api/v1/runs?dag_id=D (100 runs)", lists),
        ("GET /api/v1/runs/RUN (10 task instances)", details),
    ] {
        let [p50, p99, max] = percentiles(latencies);
        out!("  {name:<48} {p50:>8.2} {p99:>8.2} {max:>8.2}");
    }
}

/// Latencies (ms) of the list and detail requests, and how many were sent more than 5 ms
/// after they were due.
type Latencies = (Vec<f64>, Vec<f64>, usize);

/// Sends `rate` requests a second for `seconds`, each on its own schedule.
async fn load(base: &str, run_ids: &[String], rate: u32, seconds: u64) -> Result<Latencies> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let every = Duration::from_secs(1) / rate;
    let total = u64::from(rate) * seconds;
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut handles = Vec::new();
    for i in 0..total {
        let due = start + every * u32::try_from(i).unwrap_or(u32::MAX);
        let path = if i % 2 == 0 {
            format!(
                "/api/v1/runs?dag_id=dag_{:03}&limit=100",
                (i / 2) as usize % DAGS
            )
        } else {
            let pick = (i as usize).wrapping_mul(7919) % run_ids.len();
            format!("/api/v1/runs/{}", run_ids[pick])
        };
        let url = format!("{base}{path}");
        let client = client.clone();
        tokio::time::sleep_until(due).await;
        let late = due.elapsed() > Duration::from_millis(5);
        handles.push((
            i % 2 == 0,
            late,
            tokio::spawn(async move {
                let response = client.get(url).bearer_auth(TOKEN).send().await?;
                let ok = response.status().is_success();
                let _ = response.bytes().await?;
                anyhow::ensure!(ok, "an answer was not 2xx");
                Ok::<f64, anyhow::Error>(due.elapsed().as_secs_f64() * 1000.0)
            }),
        ));
    }
    let (mut lists, mut details, mut late_count) = (Vec::new(), Vec::new(), 0);
    for (is_list, late, handle) in handles {
        let took = handle.await??;
        late_count += usize::from(late);
        if is_list {
            lists.push(took);
        } else {
            details.push(took);
        }
    }
    Ok((lists, details, late_count))
}

/// The median, fastest and slowest of `seconds`.
fn spread(mut seconds: Vec<f64>) -> [f64; 3] {
    seconds.sort_by(f64::total_cmp);
    [
        seconds.get(seconds.len() / 2).copied().unwrap_or_default(),
        seconds.first().copied().unwrap_or_default(),
        seconds.last().copied().unwrap_or_default(),
    ]
}

/// p50, p99 and max of `latencies`.
fn percentiles(mut latencies: Vec<f64>) -> [f64; 3] {
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or_default()
    };
    [at(0.50), at(0.99), at(1.0)]
}

/// A database made for the benchmark on a PostgreSQL server, dropped at the end.
struct Scratch {
    admin: String,
    name: String,
    url: String,
}

impl Scratch {
    async fn create(admin: &str) -> Result<Self> {
        let name = format!("ferry_bench_api_{}", std::process::id());
        let mut db = sqlx::PgConnection::connect(admin)
            .await
            .context("cannot connect to PostgreSQL")?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
            .execute(&mut db)
            .await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut db)
            .await?;
        let base = admin.rsplit_once('/').map_or(admin, |(base, _)| base);
        Ok(Self {
            admin: admin.to_string(),
            url: format!("{base}/{name}"),
            name,
        })
    }

    async fn drop_it(self) -> Result<()> {
        let mut db = sqlx::PgConnection::connect(&self.admin).await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut db)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_of_the_sorted_figures() {
        let figures: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentiles(figures), [50.0, 99.0, 100.0]);
        assert_eq!(percentiles(Vec::new()), [0.0, 0.0, 0.0]);
    }
}
