//! `ferry validate`: every problem of every DAG file, for people or for CI.

use std::process::ExitCode;

use anyhow::Result;
use chrono::{DateTime, Utc};
use ferry_config::Config;
use ferry_dag::catalog::{DST_HORIZON, describe_encounter};
use ferry_dag::{Catalog, Severity};
use serde_json::json;

use crate::cli::{Format, ValidateArgs};

/// `--dst`: every daylight-saving encounter of every scheduled DAG in the next year.
fn print_dst_report(catalog: &Catalog, now: DateTime<Utc>) {
    for dag in catalog.dags.values() {
        let Some(schedule) = &dag.schedule else {
            continue;
        };
        let encounters = schedule.dst_encounters(now, now + DST_HORIZON);
        if encounters.is_empty() {
            out!(
                "dst: {}: `{}` in {} meets no daylight-saving change in the next year",
                dag.id,
                schedule.expression(),
                dag.timezone
            );
        }
        for encounter in &encounters {
            out!("dst: {}: {}", dag.id, describe_encounter(encounter, dag));
        }
    }
    out!();
}

/// `--connect`: BigQuery dry-runs the SQL of every `query` task on a `bigquery` connection,
/// rendered for the DAG's latest interval; prints one line per task and returns how many
/// BigQuery refused.
fn dry_runs(config: &Config, catalog: &Catalog, now: DateTime<Utc>) -> Result<usize> {
    let connections = config.connections();
    let secrets = config.secrets();
    let mut refused = 0;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    for dag in catalog.dags.values() {
        for task in &dag.tasks {
            let ferry_dag::tasks::TaskKind::Query(query) = &task.kind else {
                continue;
            };
            let Some(connection) = connections
                .get(&query.connection)
                .filter(|c| c.kind() == "bigquery")
            else {
                continue;
            };
            let interval = ferry_scheduler::manual::interval_for(dag, None, now)?;
            let place = format!(
                "{}: dag `{}`, task `{}`",
                dag.file.display(),
                dag.id,
                task.id
            );
            let sql = match super::prepare_preview(
                dag,
                task,
                interval,
                now,
                "validate__connect",
                (&secrets, &config.environment),
            ) {
                Ok(ferry_scheduler::render::Prepared {
                    work:
                        ferry_scheduler::render::Work::Connector(
                            ferry_executor::connector::ConnectorWork::Query { sql, .. },
                        ),
                    ..
                }) => sql,
                Ok(_) => continue,
                Err(problem) => {
                    refused += 1;
                    out!(
                        "{place}: error[dry-run]: the SQL does not render: {}",
                        problem.message
                    );
                    continue;
                }
            };
            match runtime.block_on(ferry_connectors::dry_run(
                &query.connection,
                connection,
                &sql,
            )) {
                Ok(bytes) => out!(
                    "{place}: BigQuery dry run ok: would process {bytes} bytes ({})",
                    super::engine::human_bytes(bytes)
                ),
                Err(error) => {
                    refused += 1;
                    out!(
                        "{place}: error[dry-run]: {}",
                        secrets.redact(&error.to_string())
                    );
                }
            }
        }
    }
    Ok(refused)
}

pub(crate) fn run(config: &Config, args: &ValidateArgs) -> Result<ExitCode> {
    let catalog = super::load_catalog(config, &args.paths, &args.source);
    let errors = catalog.count(Severity::Error);
    let warnings = catalog.count(Severity::Warning);
    // Files read that have errors (an unreadable folder is an error, not a file).
    let files_with_errors = catalog
        .files
        .iter()
        .filter(|file| {
            catalog
                .diagnostics
                .iter()
                .any(|d| d.is_error() && &d.file == *file)
        })
        .count();
    let unreadable = catalog
        .unreadable
        .iter()
        .filter(|path| !catalog.files.contains(path))
        .count();
    match args.format {
        Format::Json => crate::output::json(&json!({
            "files": catalog.files.len(),
            "valid_dags": catalog.dags.keys().collect::<Vec<_>>(),
            "errors": errors,
            "warnings": warnings,
            "diagnostics": catalog.diagnostics,
        })),
        Format::Text => {
            for diagnostic in &catalog.diagnostics {
                out!("{diagnostic}");
            }
            if !catalog.diagnostics.is_empty() {
                out!();
            }
            if args.dst {
                print_dst_report(&catalog, args.source.now.unwrap_or_else(Utc::now));
            }
            let unreadable = if unreadable > 0 {
                format!(", {unreadable} folder(s) or file(s) unreadable")
            } else {
                String::new()
            };
            out!(
                "checked {} file(s): {} DAG(s) valid, {} file(s) with errors{unreadable} ({} error(s), {} warning(s))",
                catalog.files.len(),
                catalog.dags.len(),
                files_with_errors,
                errors,
                warnings
            );
        }
    }
    let refused = if args.connect {
        dry_runs(config, &catalog, args.source.now.unwrap_or_else(Utc::now))?
    } else {
        0
    };
    let failed = errors > 0 || refused > 0 || (args.deny_warnings && warnings > 0);
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
