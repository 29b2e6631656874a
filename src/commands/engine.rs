//! What the engine commands share: the runtime, the store and who owns it, the engine, the
//! signals, and following a run that another process executes.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use ferry_config::{Config, LeftoverProcesses, OnStop};
use ferry_executor::supervisor::{Launcher, Leftovers};
use ferry_scheduler::clock::{Clock, from_millis};
use ferry_scheduler::{Engine, EngineConfig, Progress, Shutdown, StopMode, worker_name};
use ferry_store::{OpenMode, OwnerLock, Store, StoreError};

use crate::cli::{self, EngineArgs, StopArgs};
use crate::progress::Observer;

/// Runs `future` on a multi-threaded runtime.
pub(crate) fn block_on<T>(future: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(future)
}

/// The state database named by `--database-url` or the configuration.
pub(crate) fn database_url(config: &Config, args: &EngineArgs) -> String {
    args.database_url
        .clone()
        .unwrap_or_else(|| config.engine.database_url())
}

/// The state database as shown to people (password masked).
pub(crate) fn shown_url(config: &Config, args: &EngineArgs) -> String {
    ferry_secrets::redact_text(&database_url(config, args))
}

/// Opens the state database. Only the engine's commands ([`OpenMode::Create`]) create a new
/// one; the others fail clearly when there is none.
pub(crate) async fn open_store(
    config: &Config,
    args: &EngineArgs,
    mode: OpenMode,
) -> Result<Store> {
    Ok(Store::open_with(&database_url(config, args), mode).await?)
}

/// An error of a command that works on `store`, naming the database when the store's own
/// message does not (a write refused because the file is read-only, say).
pub(crate) fn naming(shown: &str, error: anyhow::Error) -> anyhow::Error {
    let Some(store_error) = error.downcast_ref::<StoreError>() else {
        return error;
    };
    if store_error.is_read_only() {
        return StoreError::ReadOnly {
            url: shown.to_string(),
        }
        .into();
    }
    if matches!(
        store_error,
        StoreError::Database(_) | StoreError::Unreadable(_) | StoreError::IllegalTransition { .. }
    ) {
        return error.context(format!("the state database {shown}"));
    }
    error
}

/// How this process describes itself as the owner of a store.
pub(crate) fn holder(command: &str) -> String {
    format!(
        "`{command}` (pid {} on {}, env {}, since {})",
        std::process::id(),
        ferry_executor::supervisor::host_name(),
        ENVIRONMENT
            .get()
            .map_or(ferry_config::DEFAULT_ENVIRONMENT, String::as_str),
        chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC")
    )
}

/// The environment this process runs in (`--env`), named in its owner description so that a
/// process handing runs to the owner can tell whether their connections agree.
pub(crate) static ENVIRONMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The environment named in an owner's description, if it names one.
pub(crate) fn holder_environment(holder: &str) -> Option<&str> {
    let rest = &holder[holder.find(", env ")? + ", env ".len()..];
    rest.split([',', ')']).next()
}

/// Takes the store for this process, or says who holds it (`Ok(Err(holder))`).
pub(crate) async fn try_own(store: &Store, command: &str) -> Result<Result<OwnerLock, String>> {
    match store
        .acquire_owner(&holder(command), chrono::Utc::now().timestamp_millis())
        .await
    {
        Ok(lock) => Ok(Ok(lock)),
        Err(StoreError::Owned { holder, .. }) => Ok(Err(holder)),
        Err(error) => Err(error.into()),
    }
}

/// An engine with the configured limits; `observer` hears of every change. The SQLite
/// databases of the environment that have a seed script and do not exist yet are made first.
pub(crate) async fn engine(
    config: &Config,
    store: Store,
    clock: Arc<dyn Clock>,
    observer: Observer,
    stop: &StopArgs,
) -> Result<Engine> {
    for made in ferry_connectors::seed(config.connections()).await? {
        say!("ferry: {made}");
    }
    let settings = engine_config(config, &store, stop)?;
    Ok(Engine::new(store, clock, settings, observer))
}

/// The engine's settings from the configuration (and `--on-stop`).
pub(crate) fn engine_config(
    config: &Config,
    store: &Store,
    stop: &StopArgs,
) -> Result<EngineConfig> {
    let environment: Vec<(String, String)> = std::env::vars().collect();
    let task_env = config.engine.inherited_env(&environment);
    let mut secrets = config.secrets();
    for (name, value) in &task_env {
        secrets.add_pair(name, value);
    }
    let stop_mode = match stop.on_stop {
        Some(cli::OnStop::Drain) => StopMode::Drain,
        Some(cli::OnStop::Detach) => StopMode::Detach,
        None => match config.engine.on_stop {
            OnStop::Drain => StopMode::Drain,
            OnStop::Detach => StopMode::Detach,
        },
    };
    // Supervisors are this very build, shown under the name ferry was started by.
    let name = std::env::args_os().next().unwrap_or_else(|| "ferry".into());
    Ok(EngineConfig {
        worker: worker_name(),
        parallelism: config.engine.parallelism.max(1),
        pools: config.engine.pools.clone(),
        heartbeat_interval: Duration::from_secs(config.engine.heartbeat_interval_secs.max(1)),
        heartbeat_timeout: Duration::from_secs(config.engine.heartbeat_timeout_secs.max(2)),
        shutdown_grace: Duration::from_secs(config.engine.shutdown_grace_secs),
        stop_mode,
        attempts_dir: attempts_dir(config, store),
        launcher: Launcher::this_binary(name),
        task_env,
        leftovers: match config.engine.leftover_processes {
            LeftoverProcesses::Stop => Leftovers::Stop,
            LeftoverProcesses::Keep => Leftovers::Keep,
        },
        secrets,
        connectors: Some(ferry_executor::connector::SharedConnectors(Arc::new(
            ferry_connectors::LiveConnectors::new(config.connections().clone()),
        ))),
        environment: config.environment.clone(),
    })
}

/// Where the attempt folders of `store` live: under the data folder, one folder per store so
/// that two stores never share them.
fn attempts_dir(config: &Config, store: &Store) -> PathBuf {
    let key = store
        .shown()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    let data_dir = if config.engine.data_dir.is_absolute() {
        config.engine.data_dir.clone()
    } else {
        std::env::current_dir()
            .map(|dir| dir.join(&config.engine.data_dir))
            .unwrap_or_else(|_| config.engine.data_dir.clone())
    };
    data_dir.join("attempts").join(format!("{key:016x}"))
}

/// Loads every valid DAG of the catalog into the engine, with its file's text as its version.
pub(crate) async fn load_all(engine: &mut Engine, catalog: &ferry_dag::Catalog) -> Result<()> {
    let mut dags = Vec::with_capacity(catalog.dags.len());
    for dag in catalog.dags.values() {
        let source = std::fs::read_to_string(&dag.file)
            .with_context(|| format!("cannot read {}", dag.file.display()))?;
        dags.push((dag.clone(), source));
    }
    Ok(engine.load_dags(dags).await?)
}

/// SIGTERM and SIGINT (Ctrl-C) watched for as long as this lives: the first signal requests
/// the stop (and prints a message), the second forces it.
pub(crate) struct Signals {
    /// What the signals ask for.
    pub(crate) shutdown: Shutdown,
    watcher: tokio::task::AbortHandle,
}

impl Drop for Signals {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// Starts watching the signals; `first` is printed at the first one, `second` (if any) at the
/// second.
pub(crate) fn watch_signals(first: &str, second: Option<&str>) -> Result<Signals> {
    use tokio::signal::unix::{SignalKind, signal};
    let shutdown = Shutdown::default();
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let signals = shutdown.clone();
    let first = first.to_string();
    let second = second.map(str::to_string);
    let watcher = tokio::spawn(async move {
        for step in 0..2 {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
            if step == 0 {
                say!("ferry: {first}");
                signals.requested.cancel();
            } else {
                if let Some(second) = &second {
                    say!("ferry: {second}");
                }
                signals.forced.cancel();
            }
        }
    });
    Ok(Signals {
        shutdown,
        watcher: watcher.abort_handle(),
    })
}

/// What a second signal does, in words.
pub(crate) const FORCED_STOP: &str = "stopping now: running commands are stopped";

/// What a stop request does, in words.
pub(crate) fn stop_message(config: &Config, stop: &StopArgs) -> &'static str {
    let drain = match stop.on_stop {
        Some(mode) => mode == cli::OnStop::Drain,
        None => config.engine.on_stop == OnStop::Drain,
    };
    if drain {
        "stopping: no new task starts; running commands may finish within the grace period (signal again to stop them now)"
    } else {
        "stopping: no new task starts; running commands go on under their supervisors and are picked up at the next start (signal again to stop them now)"
    }
}

/// Whether the store's owner may be gone. A SQLite file lock is released only when its owner
/// process ends, so trying it is always safe; a PostgreSQL advisory lock is also released for a
/// moment when the owner's connection breaks (a database restart), so the owner must also have
/// been silent for `after` (it says it is alive every heartbeat).
async fn owner_is_gone(store: &Store, after: Duration) -> Result<bool> {
    if store.backend() == ferry_store::Backend::Sqlite {
        return Ok(true);
    }
    let silent_since = chrono::Utc::now().timestamp_millis()
        - i64::try_from(after.as_millis()).unwrap_or(i64::MAX / 2);
    Ok(store
        .owner_seen_at()
        .await?
        .is_none_or(|seen| seen < silent_since))
}

/// Prints the changes of `run_ids` recorded since `seen`; the runs once they have all ended.
async fn look(
    store: &Store,
    run_ids: &[String],
    seen: &mut [i64],
    engine: &Engine,
) -> Result<Option<Vec<ferry_store::RunRecord>>, StoreError> {
    for (run_id, last) in run_ids.iter().zip(seen.iter_mut()) {
        for event in store.events_after(run_id, *last).await? {
            *last = event.id;
            if event.task_id.is_none() && event.to_state == "queued" {
                // This process created the run and has said so.
                continue;
            }
            engine.observe(&Progress {
                at: from_millis(event.at),
                dag_id: event.dag_id,
                run_id: event.run_id,
                task_id: event.task_id,
                try_number: event.try_number.unwrap_or(0),
                state: event.to_state,
                detail: event.detail,
            });
        }
    }
    let mut ended = Vec::new();
    for run_id in run_ids {
        match store.run(run_id).await? {
            Some(run) if run.state()?.is_terminal() => ended.push(run),
            _ => return Ok(None),
        }
    }
    Ok(Some(ended))
}

/// How following runs ended.
pub(crate) enum Followed {
    /// Every run ended.
    Ended(Vec<ferry_store::RunRecord>),
    /// Ctrl-C: the runs go on without this process.
    Interrupted,
    /// The store became free (its owner, a `ferry run` perhaps, finished): this process owns
    /// it now and must execute the runs itself.
    Owner(OwnerLock),
}

/// Follows runs that the process owning the store executes: prints their changes as they are
/// recorded through `engine`'s observer, until they have all ended, Ctrl-C, or the store
/// becomes free (then this process takes it).
pub(crate) async fn follow(
    store: &Store,
    run_ids: &[String],
    engine: &Engine,
    command: &str,
    owner_gone_after: Duration,
) -> Result<Followed> {
    let signals = watch_signals(
        "stopped following; the runs go on under the process that owns the store",
        None,
    )?;
    let mut seen: Vec<i64> = vec![0; run_ids.len()];
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut ownership_checked = std::time::Instant::now();
    let mut unreachable = false;
    loop {
        match look(store, run_ids, &mut seen, engine).await {
            Ok(Some(ended)) => return Ok(Followed::Ended(ended)),
            Ok(None) => unreachable = false,
            // The store may come back: the runs go on meanwhile; say it once.
            Err(error) if error.is_transient() => {
                if !unreachable {
                    say!("ferry: the state database is unreachable ({error}); still following");
                }
                unreachable = true;
            }
            Err(error) => return Err(error.into()),
        }
        if !unreachable && ownership_checked.elapsed() >= Duration::from_secs(1) {
            ownership_checked = std::time::Instant::now();
            if owner_is_gone(store, owner_gone_after).await?
                && let Ok(lock) = try_own(store, command).await?
            {
                return Ok(Followed::Owner(lock));
            }
        }
        tokio::select! {
            _ = tick.tick() => {}
            () = signals.shutdown.requested.cancelled() => return Ok(Followed::Interrupted),
        }
    }
}

/// A byte count for people: `12.3 GB`.
pub(crate) fn human_bytes(bytes: i64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB", "PB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}
