//! `ferry serve`: the daemon.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use chrono::Utc;
use ferry_config::Config;
use ferry_dag::{Catalog, CatalogOptions};
use ferry_scheduler::Reload;
use ferry_scheduler::clock::SystemClock;

use super::engine::{block_on, cancel_on_signals, engine, load_all, open_store};
use crate::cli::EngineArgs;

pub(crate) fn run(config: &Config, args: &EngineArgs) -> Result<ExitCode> {
    block_on(async {
        let store = open_store(config, args).await?;
        let mut engine = engine(
            config,
            store.clone(),
            Arc::new(SystemClock::real()),
            crate::progress::lines(),
        );
        let catalog = read(config);
        report(&catalog, None);
        load_all(&mut engine, &catalog).await?;
        eprintln!(
            "ferry: serving {} DAG(s) from {} with state in {}",
            catalog.dags.len(),
            config
                .dags
                .folders
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            ferry_store::redact(
                &args
                    .database_url
                    .clone()
                    .unwrap_or_else(|| config.engine.database_url())
            )
        );
        let until = cancel_on_signals()?;
        let mut last = catalog.diagnostics.clone();
        let mut seen = fingerprint(config);
        let mut reload = move || {
            // Parse again only when a file was added, removed or changed.
            let now = fingerprint(config);
            if now == seen {
                return Reload::unchanged();
            }
            seen = now;
            let catalog = read(config);
            report(&catalog, Some(&last));
            last = catalog.diagnostics.clone();
            let dags = catalog
                .dags
                .into_values()
                .filter_map(|dag| {
                    std::fs::read_to_string(&dag.file)
                        .ok()
                        .map(|source| (dag, source))
                })
                .collect();
            Reload {
                dags,
                files: catalog.files,
                changed: true,
            }
        };
        let every = Duration::from_secs(config.engine.reload_interval_secs.max(1));
        engine
            .drive(until, None, true, Some((&mut reload, every)))
            .await?;
        store.close().await;
        eprintln!("ferry: stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// Path, size and modification time of every DAG file: what decides whether to reload.
fn fingerprint(config: &Config) -> Vec<(std::path::PathBuf, u64, Option<std::time::SystemTime>)> {
    let (files, _) = ferry_dag::catalog::discover(&config.dags.folders);
    files
        .into_iter()
        .map(|file| {
            let meta = std::fs::metadata(&file).ok();
            let size = meta.as_ref().map_or(0, std::fs::Metadata::len);
            let modified = meta.and_then(|m| m.modified().ok());
            (file, size, modified)
        })
        .collect()
}

fn read(config: &Config) -> Catalog {
    let options = CatalogOptions {
        channels: config.alerts.channel_names(),
        now: Utc::now(),
    };
    ferry_dag::catalog::load(&config.dags.folders, &options)
}

/// Prints the catalog's errors when they differ from the last ones printed.
fn report(catalog: &Catalog, last: Option<&Vec<ferry_dag::Diagnostic>>) {
    if last.is_some_and(|last| *last == catalog.diagnostics) {
        return;
    }
    for diagnostic in catalog.diagnostics.iter().filter(|d| d.is_error()) {
        eprintln!("ferry: {diagnostic}");
    }
}
