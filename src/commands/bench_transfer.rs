//! `ferry bench transfer`: moves generated rows from PostgreSQL into PostgreSQL (and into a
//! BigQuery endpoint, the emulator in development) with the `transfer` task's code, and prints
//! rows per second and peak memory for each size, to show that memory stays flat in the row
//! count. The figures are recorded in docs/benchmarks.md.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use ferry_config::{BigqueryCredentials, Connection, Secret};
use ferry_executor::Outcome;
use ferry_executor::connector::{AttemptKey, ConnectorWork, RowSource, TableWrite, WriteMode};

use super::bench::{peak_resident_memory, reset_peak_memory};

/// Runs the benchmark: `sizes` rows each, PostgreSQL at `postgres`, BigQuery at `bigquery`
/// (an emulator's address; project `test-project`, dataset `ferry_bench` made if missing).
pub(crate) fn run(postgres: &str, bigquery: Option<&str>, sizes: &[usize]) -> Result<ExitCode> {
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
        if let Some(endpoint) = bigquery {
            connections.insert(
                "bq".to_string(),
                Connection::Bigquery {
                    project: "test-project".to_string(),
                    location: None,
                    credentials: BigqueryCredentials::None,
                    endpoint: Some(endpoint.to_string()),
                },
            );
            make_dataset(endpoint).await?;
        }
        let connectors = ferry_connectors::LiveConnectors::new(connections);
        out!("ferry bench transfer: PostgreSQL -> PostgreSQL (COPY into a staging table, then one transaction){}", if bigquery.is_some() { "; PostgreSQL -> BigQuery at the given endpoint" } else { "" });
        out!("{:<12} {:>10} {:>9} {:>12} {:>14}", "destination", "rows", "seconds", "rows/s", "peak RSS (MB)");
        for &rows in sizes {
            fill_source(postgres, rows).await?;
            let mut targets = vec![("pg", "ferry_bench_target".to_string(), rows)];
            if bigquery.is_some() {
                targets.push(("bq", "ferry_bench.target".to_string(), rows));
            }
            for (destination, table, rows) in targets {
                reset_peak_memory();
                let work = ConnectorWork::Transfer {
                    source: RowSource::Sql {
                        connection: "pg".to_string(),
                        sql: "SELECT id, user_id, kind, points, created_at FROM ferry_bench_source".to_string(),
                    },
                    destination: destination.to_string(),
                    write: TableWrite {
                        table,
                        mode: WriteMode::Replace,
                    },
                    batch_size: 10_000,
                    schema: Vec::new(),
                    timeout: None,
                };
                let key = AttemptKey {
                    dag: "bench".to_string(),
                    task: destination.to_string(),
                    run_id: format!("bench_{rows}"),
                    run_queued_at: 0,
                    try_number: 1,
                    lease: 1,
                };
                let started = Instant::now();
                let done = super::outside::attempt(&connectors, &work, &key).await;
                let seconds = started.elapsed().as_secs_f64();
                if !matches!(done.outcome, Outcome::Succeeded { .. }) {
                    bail!("the transfer into {destination} failed: {:?}\n{}", done.outcome, done.log);
                }
                let written = done.figures.get("rows_written").copied().unwrap_or(0);
                if written != i64::try_from(rows).unwrap_or(i64::MAX) {
                    bail!("{written} rows written into {destination}, not {rows}");
                }
                let peak = peak_resident_memory().map_or("?".to_string(), |kib| format!("{:.1}", kib as f64 / 1024.0));
                out!(
                    "{:<12} {:>10} {:>9.2} {:>12.0} {:>14}",
                    if destination == "pg" { "postgres" } else { "bigquery" },
                    rows,
                    seconds,
                    rows as f64 / seconds,
                    peak
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Makes `ferry_bench_source` with `rows` generated rows (inside PostgreSQL).
async fn fill_source(url: &str, rows: usize) -> Result<()> {
    use sqlx::Connection as _;
    let mut db = sqlx::PgConnection::connect(url)
        .await
        .with_context(|| "cannot connect to PostgreSQL")?;
    sqlx::raw_sql(&format!(
        "DROP TABLE IF EXISTS ferry_bench_source; DROP TABLE IF EXISTS ferry_bench_target;
         CREATE TABLE ferry_bench_source AS
         SELECT i::bigint AS id, (i % 1000)::int AS user_id,
                CASE i % 3 WHEN 0 THEN 'login' ELSE 'answer' END AS kind,
                ((i % 97) * 0.5)::float8 AS points,
                TIMESTAMPTZ '2026-11-28 00:00:00+09' + (i % 86400) * INTERVAL '1 second' AS created_at
         FROM generate_series(1, {rows}) AS i"
    ))
    .execute(&mut db)
    .await
    .context("cannot make the source table")?;
    Ok(())
}

/// Makes dataset `ferry_bench` on the BigQuery endpoint if missing.
async fn make_dataset(endpoint: &str) -> Result<()> {
    let response = reqwest::Client::new()
        .post(format!(
            "{endpoint}/bigquery/v2/projects/test-project/datasets"
        ))
        .body(r#"{"datasetReference":{"projectId":"test-project","datasetId":"ferry_bench"}}"#)
        .header("Content-Type", "application/json")
        .send()
        .await
        .context("cannot reach the BigQuery endpoint")?;
    let status = response.status();
    if !status.is_success() && status.as_u16() != 409 {
        bail!("the BigQuery endpoint refused the dataset: {status}");
    }
    Ok(())
}
