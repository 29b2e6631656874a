//! `ferry serve`: the daemon.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use ferry_config::Config;
use ferry_dag::Catalog;
use ferry_scheduler::Reload;
use ferry_scheduler::clock::SystemClock;
use ferry_store::OpenMode;

use super::engine::{
    FORCED_STOP, block_on, engine, load_all, naming, open_store, shown_url, stop_message, try_own,
    watch_signals,
};
use crate::cli::ServeArgs;

pub(crate) fn run(config: &Config, args: &ServeArgs) -> Result<ExitCode> {
    for (place, missing) in config.unset_secrets() {
        say!(
            "ferry: warning: `{place}` refers to {missing}: it stays empty until ferry is started with it"
        );
    }
    block_on(async {
        let store = open_store(config, &args.engine, OpenMode::Create).await?;
        let owner = own_or_wait_for_intervention(&store).await?;
        let listen = args.listen.as_deref().unwrap_or(&config.api.listen);
        let listener = if listen == ferry_config::API_OFF {
            None
        } else {
            let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| {
                format!(
                    "cannot listen on {listen} (`--listen` or `[api] listen`; \"off\" for no HTTP API)"
                )
            })?;
            let address = listener.local_addr()?;
            Some((listener, address))
        };
        let metrics = ferry_api::Metrics::new(pools(config));
        let observed = metrics.clone();
        let print = crate::progress::lines();
        let mut engine = engine(
            config,
            store.clone(),
            Arc::new(SystemClock::real()),
            Box::new(move |progress| {
                print(progress);
                observed.observe(progress);
            }),
            &args.stop,
        )
        .await?;
        engine.set_owner(owner);
        metrics.watch_engine(engine.gauges());
        let catalog = read(config);
        report(&catalog, None);
        load_all(&mut engine, &catalog).await?;
        say!(
            "ferry: serving {} DAG(s) from {} with state in {}",
            catalog.dags.len(),
            config
                .dags
                .folders
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            store.shown()
        );
        let signals = watch_signals(stop_message(config, &args.stop), Some(FORCED_STOP))?;
        // The API stops taking requests as soon as a stop is asked for (an intervention
        // needs the engine to go on with it).
        let served = ferry_api::DagCatalog::default();
        served.replace(shown(&sources(&catalog), &catalog, &ferry_api::Loaded::default()));
        let api_config = if listener.is_some() {
            with_local_token(config)?
        } else {
            config.api.clone()
        };
        // Where the CLI finds the API (`ferry trigger`); removed at stop.
        let address_file = config.engine.data_dir.join(super::client::ADDRESS_FILE);
        let wrote_address = listener.is_some();
        if let Some((_, address)) = &listener {
            std::fs::create_dir_all(&config.engine.data_dir)?;
            std::fs::write(&address_file, format!("http://{address}\n")).with_context(|| {
                format!("cannot write the API's address to {}", address_file.display())
            })?;
        }
        // The API reads and writes through a pool of its own: requests never make the engine
        // wait for a connection.
        let api_store = match &listener {
            Some(_) => Some(open_store(config, &args.engine, OpenMode::Existing).await?),
            None => None,
        };
        let api = match listener.zip(api_store) {
            Some(((listener, address), api_store)) => {
                say!(
                    "ferry: the HTTP API answers on http://{address} ({} token(s))",
                    api_config.tokens.len()
                );
                Some(ferry_api::spawn(
                    listener.into_std()?,
                    ferry_api::router(api_store, &api_config, served.clone(), metrics.clone()),
                    signals.shutdown.requested.clone(),
                    API_GRACE,
                )?)
            }
            None => None,
        };
        let state = Mutex::new((
            fingerprint(config),
            catalog.diagnostics.clone(),
            versions(&catalog),
        ));
        let reload_config = config.clone();
        let served = served.clone();
        let reload = move || {
            let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
            // Parse again only when a file was added, removed or changed.
            let now = fingerprint(&reload_config);
            if now == state.0 {
                return Reload::unchanged();
            }
            state.0 = now;
            let catalog = read(&reload_config);
            report(&catalog, Some(&state.1));
            state.1 = catalog.diagnostics.clone();
            let dags = sources(&catalog);
            served.replace(shown(&dags, &catalog, &served.current()));
            let now: BTreeMap<String, String> = dags
                .iter()
                .map(|(dag, source)| {
                    (
                        dag.id.clone(),
                        ferry_scheduler::engine::content_hash(source),
                    )
                })
                .collect();
            report_changes(&state.2, &now, &catalog);
            state.2 = now;
            Reload {
                dags,
                files: catalog.files,
                unreadable: catalog.unreadable,
                changed: true,
            }
        };
        let every = Duration::from_secs(config.engine.reload_interval_secs.max(1));
        engine
            .drive(
                &signals.shutdown,
                None,
                true,
                Some((Arc::new(reload), every)),
            )
            .await?;
        if let Some(api) = api {
            // Requests under way get API_GRACE to end (a client that never finishes its request
            // does not hold the daemon up).
            if let Ok(Err(error)) = api.await {
                say!("ferry: the HTTP API stopped: {error}");
            }
        }
        if wrote_address {
            let _ = std::fs::remove_file(&address_file);
        }
        drop(engine);
        store.close().await;
        say!("ferry: stopped");
        Ok(ExitCode::SUCCESS)
    })
    .map_err(|error| naming(&shown_url(config, &args.engine), error))
}

/// Every pool and its slots (`default` has `parallelism`).
fn pools(config: &Config) -> Vec<(String, i64)> {
    let slots = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    std::iter::once(("default".to_string(), slots(config.engine.parallelism)))
        .chain(
            config
                .engine
                .pools
                .iter()
                .filter(|(name, _)| name.as_str() != "default")
                .map(|(name, n)| (name.clone(), slots(*n))),
        )
        .collect()
}

/// The API's tokens: those configured; with none, the admin token kept in the data directory
/// (made on the first start), so that the API is usable at once and never open.
fn with_local_token(config: &Config) -> Result<ferry_config::ApiConfig> {
    let mut api = config.api.clone();
    if !api.tokens.is_empty() {
        return Ok(api);
    }
    let (token, path, made) = ferry_api::local_token::local_admin_token(&config.engine.data_dir)
        .with_context(|| {
            format!(
                "no [api.tokens] are configured, and the admin token in {} cannot be kept",
                config.engine.data_dir.display()
            )
        })?;
    say!(
        "ferry: no [api.tokens] configured: {} the admin token `{}` in {} (readable by you only); call the API with `Authorization: Bearer $(cat {})`",
        if made { "made" } else { "using" },
        ferry_api::local_token::LOCAL_ADMIN,
        path.display(),
        path.display()
    );
    api.tokens
        .insert(ferry_api::local_token::LOCAL_ADMIN.to_string(), token);
    Ok(api)
}

/// How long requests under way get to end once a stop is asked for.
const API_GRACE: Duration = Duration::from_secs(5);

/// Takes the store; an operator's intervention holding it for a moment (`ferry tasks clear`
/// stopping an attempt) is waited for, up to 90 s; an engine holding it is an error.
async fn own_or_wait_for_intervention(
    store: &ferry_store::Store,
) -> Result<ferry_store::OwnerLock> {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let mut said = false;
    loop {
        match try_own(store, "ferry serve").await? {
            Ok(lock) => return Ok(lock),
            Err(holder)
                if super::operate::is_intervention(&holder)
                    && std::time::Instant::now() < deadline =>
            {
                if !said {
                    say!("ferry: the store is held by {holder} for a moment; waiting");
                    said = true;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(holder) => bail!(
                "the state database {} is owned by {holder}: only one ferry engine runs on a store; stop it first (`ferry run` and `ferry backfill` hand their runs to it)",
                store.shown()
            ),
        }
    }
}

/// Path, size and modification time of every DAG file, and what could not be read: what
/// decides whether to reload.
type Fingerprint = (
    Vec<(std::path::PathBuf, u64, Option<std::time::SystemTime>)>,
    Vec<std::path::PathBuf>,
);

fn fingerprint(config: &Config) -> Fingerprint {
    let found = ferry_dag::catalog::discover(&config.dags.folders);
    let files = found
        .files
        .into_iter()
        .map(|file| {
            let meta = std::fs::metadata(&file).ok();
            let size = meta.as_ref().map_or(0, std::fs::Metadata::len);
            let modified = meta.and_then(|m| m.modified().ok());
            (file, size, modified)
        })
        .collect();
    (files, found.unreadable)
}

fn read(config: &Config) -> Catalog {
    super::load_catalog(config, &[], &crate::cli::DagSource { now: None })
}

/// Every valid DAG of `catalog` with its file's text.
fn sources(catalog: &Catalog) -> Vec<(ferry_dag::Dag, String)> {
    catalog
        .dags
        .values()
        .filter_map(|dag| {
            std::fs::read_to_string(&dag.file)
                .ok()
                .map(|source| (dag.clone(), source))
        })
        .collect()
}

/// What the API shows after a (re)load: the valid DAGs, and (as the engine does) the last
/// valid version of a DAG whose file has errors now or could not be read.
fn shown(
    dags: &[(ferry_dag::Dag, String)],
    catalog: &Catalog,
    before: &ferry_api::Loaded,
) -> ferry_api::Loaded {
    let mut shown: BTreeMap<String, ferry_api::ServedDag> = dags
        .iter()
        .map(|(dag, source)| {
            (
                dag.id.clone(),
                ferry_api::ServedDag {
                    dag: dag.clone(),
                    source: source.clone(),
                },
            )
        })
        .collect();
    for (id, kept) in &before.dags {
        let broken = catalog
            .diagnostics
            .iter()
            .any(|d| d.is_error() && d.dag.as_deref() == Some(id.as_str()));
        if !shown.contains_key(id) && (broken || !catalog.unreadable.is_empty()) {
            shown.insert(id.clone(), kept.clone());
        }
    }
    ferry_api::Loaded {
        dags: shown,
        diagnostics: catalog.diagnostics.clone(),
    }
}

/// The content hash of every valid DAG's file, by DAG id.
fn versions(catalog: &Catalog) -> BTreeMap<String, String> {
    catalog
        .dags
        .values()
        .filter_map(|dag| {
            let source = std::fs::read_to_string(&dag.file).ok()?;
            Some((
                dag.id.clone(),
                ferry_scheduler::engine::content_hash(&source),
            ))
        })
        .collect()
}

/// Says which DAGs a reload added, changed, broke or removed.
fn report_changes(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
    catalog: &Catalog,
) {
    for (id, hash) in after {
        match before.get(id) {
            None => say!("ferry: DAG {id} added"),
            Some(old) if old != hash => say!(
                "ferry: DAG {id} changed: new runs use the new version; runs under way keep theirs"
            ),
            Some(_) => {}
        }
    }
    for id in before.keys().filter(|id| !after.contains_key(*id)) {
        let broken = catalog
            .diagnostics
            .iter()
            .any(|d| d.is_error() && d.dag.as_deref() == Some(id.as_str()));
        if broken {
            say!(
                "ferry: DAG {id} has errors now: its last valid version goes on being scheduled until they are fixed (see `ferry validate`)"
            );
        } else if !catalog.unreadable.is_empty() {
            say!(
                "ferry: DAG {id} is not loaded now: its file is gone or cannot be read (a DAG in an unreadable file or folder keeps its last valid version)"
            );
        } else {
            say!("ferry: DAG {id} removed: it gets no new runs; its history stays");
        }
    }
}

/// Prints the catalog's errors when they differ from the last ones printed.
fn report(catalog: &Catalog, last: Option<&Vec<ferry_dag::Diagnostic>>) {
    if last.is_some_and(|last| *last == catalog.diagnostics) {
        return;
    }
    for diagnostic in catalog.diagnostics.iter().filter(|d| d.is_error()) {
        say!("ferry: {diagnostic}");
    }
}
