//! What the engine commands share: the runtime, the store, the engine and the progress lines.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use ferry_config::Config;
use ferry_dag::Catalog;
use ferry_scheduler::clock::Clock;
use ferry_scheduler::{Engine, EngineConfig, worker_name};

use crate::progress::Observer;
use ferry_store::Store;
use tokio_util::sync::CancellationToken;

use crate::cli::EngineArgs;

/// Runs `future` on a multi-threaded runtime.
pub(crate) fn block_on<T>(future: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(future)
}

/// Opens the state database named by `--database-url` or the configuration.
pub(crate) async fn open_store(config: &Config, args: &EngineArgs) -> Result<Store> {
    let url = args
        .database_url
        .clone()
        .unwrap_or_else(|| config.engine.database_url());
    let path = url
        .strip_prefix("sqlite://")
        .filter(|_| !url.starts_with("postgres"));
    if let Some(parent) = path
        .and_then(|p| std::path::Path::new(p).parent())
        .filter(|p| !p.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create the data folder {}", parent.display()))?;
    }
    Ok(Store::open(&url).await?)
}

/// An engine with the configured limits; `observer` hears of every change.
pub(crate) fn engine(
    config: &Config,
    store: Store,
    clock: Arc<dyn Clock>,
    observer: Observer,
) -> Engine {
    let settings = EngineConfig {
        worker: worker_name(),
        parallelism: config.engine.parallelism.max(1),
        pools: config.engine.pools.clone(),
        heartbeat_interval: Duration::from_secs(config.engine.heartbeat_interval_secs.max(1)),
        heartbeat_timeout: Duration::from_secs(config.engine.heartbeat_timeout_secs.max(2)),
        shutdown_grace: Duration::from_secs(config.engine.shutdown_grace_secs),
    };
    Engine::new(store, clock, settings, observer)
}

/// Loads every valid DAG of the catalog into the engine, with its file's text as its version.
pub(crate) async fn load_all(engine: &mut Engine, catalog: &Catalog) -> Result<()> {
    let mut dags = Vec::with_capacity(catalog.dags.len());
    for dag in catalog.dags.values() {
        let source = std::fs::read_to_string(&dag.file)
            .with_context(|| format!("cannot read {}", dag.file.display()))?;
        dags.push((dag.clone(), source));
    }
    Ok(engine.load_dags(dags).await?)
}

/// A token cancelled by SIGTERM or SIGINT (Ctrl-C).
pub(crate) fn cancel_on_signals() -> Result<CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};
    let token = CancellationToken::new();
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        eprintln!(
            "ferry: stopping: no new tasks start; running ones may finish within the grace period"
        );
        cancel.cancel();
    });
    Ok(token)
}
