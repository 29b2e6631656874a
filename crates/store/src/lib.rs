//! ferry's durable run state on SQLite (the embedded default) or PostgreSQL (several nodes).
//!
//! Everything the engine decides is written here before it is acted on: DAG versions (the
//! content hash of each file as loaded), DAG runs, task instances, attempts with their logs, and
//! an append-only event log of every state change with its cause. Every state change is a
//! guarded update (`... WHERE state = <expected>`) inside a transaction that also appends the
//! event, so two processes can never both move the same task, and a crash leaves either the old
//! state or the new one with its event.
//!
//! Both backends run the same SQL (numbered `$1` parameters work on both) except for the
//! migrations, kept per backend in `migrations/`; the same test suite runs against both.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ferry_store::StoreError> {
//! let store = ferry_store::Store::open("sqlite://ferry.db").await?;
//! let failed = store.runs(&ferry_store::RunFilter::default()).await?;
//! # Ok(()) }
//! ```

mod open;
mod records;
pub mod state;

use std::sync::Arc;

use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::sqlite::SqlitePool;

pub use interventions::{Intervention, PausedDag, TaskToClear, VersionChange};
pub use manual::{ManualRequest, ManualRun};
pub use open::OpenMode;
pub use owner::OwnerLock;
pub use records::{
    AttemptRecord, EventRecord, NewDagVersion, NewRun, NewTaskInstance, RunRecord,
    TaskInstanceRecord,
};
pub use state::{RunState, TaskState};

use open::{FileIdentity, Location};

/// What can go wrong with the store. Backend-neutral: callers map these to exit codes or HTTP.
/// Every variant that concerns the database names it (passwords masked).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or opened.
    #[error("cannot open the database {url}: {}", ferry_secrets::redact_text(&cause.to_string()))]
    Unavailable {
        /// The URL, password masked.
        url: String,
        /// Why (in the message, not a separate cause, so that it is said once).
        cause: sqlx::Error,
    },
    /// The URL or connection string cannot be understood.
    #[error("cannot use the database {url}: {reason}")]
    InvalidUrl {
        /// The URL, password masked.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A command that only reads state found no database (it never creates one).
    #[error(
        "no state database at {path}: start `ferry serve` first (or name the database with --database-url)"
    )]
    Missing {
        /// The SQLite file.
        path: String,
    },
    /// A command that only reads state found a PostgreSQL database without ferry's tables (it
    /// never creates them).
    #[error("no ferry state in the database {url}: start `ferry serve` on it first")]
    Empty {
        /// The URL, password masked.
        url: String,
    },
    /// A command that only reads found a database of an older ferry (it never changes the
    /// schema under a running engine).
    #[error(
        "the state database {url} has an older schema than this ferry: start this ferry's `ferry serve` to bring it up to date"
    )]
    Outdated {
        /// The URL, password masked.
        url: String,
    },
    /// The SQLite file is gone, but an engine used it (its lock file is still there).
    #[error(
        "the state database {path} is missing, but ferry has used it before ({lock} is there): restore the file from a backup; to begin again with an empty state instead (every catch-up DAG then runs its past intervals again), remove {lock}"
    )]
    Vanished {
        /// The SQLite file.
        path: String,
        /// Its lock file.
        lock: String,
    },
    /// A file or folder of the store cannot be used.
    #[error("cannot {action} {path}: {cause}")]
    Io {
        /// What ferry tried to do.
        action: &'static str,
        /// The path.
        path: String,
        /// Why.
        cause: std::io::Error,
    },
    /// The database cannot be written.
    #[error(
        "the state database {url} is read-only: ferry must be able to write it and its folder (check their owner and permissions)"
    )]
    ReadOnly {
        /// The URL or path.
        url: String,
    },
    /// The file is not a ferry database (or is damaged).
    #[error("the database {url} is damaged or not a ferry database: {reason}")]
    Corrupt {
        /// The URL, password masked.
        url: String,
        /// What SQLite or PostgreSQL said.
        reason: String,
    },
    /// The schema could not be brought up to date.
    #[error("cannot migrate the database {url}: {cause}")]
    Migration {
        /// The URL, password masked.
        url: String,
        /// Why.
        cause: sqlx::migrate::MigrateError,
    },
    /// Another process owns the store.
    #[error(
        "the state database {url} is owned by {holder}: only one ferry engine runs on a store at a time (stop it first; `ferry run` and `ferry backfill` hand their runs to it)"
    )]
    Owned {
        /// The URL, password masked.
        url: String,
        /// Who holds it.
        holder: String,
    },
    /// This process lost the store to another while the database was unreachable.
    #[error("lost ownership of the state database {url} to {holder} while it was unreachable")]
    OwnershipLost {
        /// The URL, password masked.
        url: String,
        /// Who holds it now.
        holder: String,
    },
    /// The SQLite file was deleted or replaced while ferry had it open.
    #[error(
        "the state database {path} was deleted or replaced while ferry was running: ferry stops rather than write where no one reads (restore the file, or start ferry again to begin a new one)"
    )]
    Replaced {
        /// The SQLite file.
        path: String,
    },
    /// A state change that the lifecycle does not allow.
    #[error("illegal transition of {what} from {from} to {to}")]
    IllegalTransition {
        /// The run or task.
        what: String,
        /// Current state.
        from: String,
        /// Requested state.
        to: String,
    },
    /// Another process changed what an intervention was about to change.
    #[error("{0}")]
    Conflict(String),
    /// A run id prefix that more than one run has.
    #[error("more than one run id starts with `{prefix}`: {}; give more of it", .candidates.join(", "))]
    Ambiguous {
        /// What was given.
        prefix: String,
        /// Some of the runs it matches.
        candidates: Vec<String>,
    },
    /// A stored value ferry cannot read.
    #[error("unreadable value in the database: {0}")]
    Unreadable(String),
    /// Any other database error.
    #[error("database error: {}", ferry_secrets::redact_text(&.0.to_string()))]
    Database(sqlx::Error),
}

impl StoreError {
    /// True when the database refused a write because it is read-only.
    pub fn is_read_only(&self) -> bool {
        match self {
            StoreError::ReadOnly { .. } => true,
            StoreError::Database(error) => open::is_read_only(error),
            _ => false,
        }
    }

    /// True for faults that pass (a database restart, a network cut, a busy file): the engine
    /// waits and tries again instead of stopping.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Unavailable { cause, .. } | StoreError::Database(cause) => {
                is_transient_sqlx(cause)
            }
            StoreError::Io { cause, .. } => !matches!(
                cause.kind(),
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::NotFound
            ),
            _ => false,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        StoreError::Database(error)
    }
}

fn is_transient_sqlx(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            if let Ok(sqlite) = code.parse::<i64>() {
                // SQLITE_BUSY, SQLITE_LOCKED, SQLITE_IOERR, SQLITE_FULL, SQLITE_PROTOCOL.
                return matches!(sqlite & 0xff, 5 | 6 | 10 | 13 | 15);
            }
            // PostgreSQL: connection exceptions, shutdowns, too many connections, conflicts.
            code.starts_with("08")
                || matches!(
                    code.as_str(),
                    "57P01" | "57P02" | "57P03" | "53300" | "40001" | "40P01"
                )
        }
        _ => false,
    }
}

/// Which database holds the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// One file, one writer: the embedded default.
    Sqlite,
    /// A server shared by several ferry processes.
    Postgres,
}

/// A connection pool to the state database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
    /// The URL as shown to people (password masked).
    shown: Arc<str>,
    /// The SQLite file as opened (to notice its deletion or replacement).
    file: Option<Arc<FileIdentity>>,
    /// PostgreSQL's connection settings (for the owner's own connection).
    pg_options: Option<Box<PgConnectOptions>>,
}

#[derive(Clone, Debug)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to whichever backend the store uses; the body is compiled
/// once per backend, so it may use backend-specific types.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            Pool::Sqlite($pool) => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

/// Appends one event inside the transaction `$tx`.
macro_rules! append_event {
    ($tx:expr, $at:expr, $dag:expr, $run:expr, $task:expr, $try:expr, $from:expr, $to:expr, $cause:expr, $detail:expr) => {
        sqlx::query(
            "INSERT INTO events (at, dag_id, run_id, task_id, try_number, from_state, to_state, cause, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind($at)
        .bind($dag)
        .bind($run)
        .bind($task)
        .bind($try)
        .bind($from)
        .bind($to)
        .bind($cause)
        .bind($detail)
        .execute(&mut *$tx)
        .await?
    };
}

mod interventions;
mod manual;
mod owner;

/// Counts by state (see [`Store::state_counts`]).
#[derive(Clone, Debug, Default)]
pub struct StateCounts {
    /// Runs by state.
    pub runs: Vec<(String, i64)>,
    /// Task instances by state.
    pub task_instances: Vec<(String, i64)>,
    /// Running task instances by pool.
    pub running_by_pool: Vec<(String, i64)>,
}

/// Appends ` AND dag_id IN (…)` for `dag_ids` when given (none: no row).
fn push_dag_ids<'a, DB>(query: &mut sqlx::QueryBuilder<'a, DB>, dag_ids: Option<&'a [String]>)
where
    DB: sqlx::Database,
    &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let Some(dags) = dag_ids else {
        return;
    };
    if dags.is_empty() {
        query.push(" AND 1 = 0");
        return;
    }
    query.push(" AND dag_id IN (");
    let mut list = query.separated(", ");
    for dag in dags {
        list.push_bind(dag.as_str());
    }
    query.push(")");
}

/// Appends to the query builder `$query` the conditions of the [`RunFilter`] `$filter` (only
/// those it sets, so that the planner can use the indexes), each value bound.
macro_rules! push_run_filter {
    ($query:expr, $filter:expr) => {{
        let query = &mut $query;
        let filter: &RunFilter = $filter;
        query.push(" WHERE 1 = 1");
        if let Some(dag) = &filter.dag_id {
            query.push(" AND dag_id = ").push_bind(dag.as_str());
        }
        if !filter.states.is_empty() {
            query.push(" AND state IN (");
            let mut list = query.separated(", ");
            for state in &filter.states {
                list.push_bind(state.as_str());
            }
            query.push(")");
        }
        push_dag_ids(query, filter.dag_ids.as_deref());
        if let Some(from) = filter.logical_date_from {
            query.push(" AND logical_date >= ").push_bind(from);
        }
        if let Some(before) = filter.logical_date_before {
            query.push(" AND logical_date < ").push_bind(before);
        }
        if let Some((date, id)) = filter.after {
            let beyond = if filter.oldest_first { " > " } else { " < " };
            query
                .push(" AND (logical_date")
                .push(beyond)
                .push_bind(date)
                .push(" OR (logical_date = ")
                .push_bind(date)
                .push(" AND id")
                .push(beyond)
                .push_bind(id)
                .push("))");
        }
    }};
}

/// Which runs to list.
#[derive(Clone, Debug, Default)]
pub struct RunFilter {
    /// Only this DAG's runs.
    pub dag_id: Option<String>,
    /// Only runs in these states (all when empty).
    pub states: Vec<RunState>,
    /// At most this many, newest logical date first (default 100).
    pub limit: Option<i64>,
    /// Only runs whose logical date (Unix ms) is at or after this.
    pub logical_date_from: Option<i64>,
    /// Only runs whose logical date is before this.
    pub logical_date_before: Option<i64>,
    /// Only runs after this one in the order listed (its logical date and row id): the next
    /// page.
    pub after: Option<(i64, i64)>,
    /// Only these DAGs' runs (all when `None`).
    pub dag_ids: Option<Vec<String>>,
    /// Skip this many first (Airflow's `offset`).
    pub offset: Option<i64>,
    /// Oldest logical date first (and `after` then means "after it in that order").
    pub oldest_first: bool,
}

/// The same change for many tasks of a run (see [`Store::transition_tasks`]).
#[derive(Clone, Copy, Debug)]
pub struct WaveChange<'a> {
    /// The state they must be in.
    pub from: TaskState,
    /// The new state.
    pub to: TaskState,
    /// When.
    pub at: i64,
    /// Why.
    pub cause: &'a str,
    /// Details for people.
    pub detail: &'a str,
}

/// A task state change, applied only if the task is still in `from` (and, when given, still
/// holds `lease`).
#[derive(Clone, Debug)]
pub struct TaskChange<'a> {
    /// The task instance.
    pub id: i64,
    /// The state it must be in.
    pub from: TaskState,
    /// The new state.
    pub to: TaskState,
    /// The fencing number the caller holds, for changes made by an attempt's worker.
    pub lease: Option<i64>,
    /// Not before this time (retry delay, deferral poll); `None` clears it.
    pub ready_at: Option<i64>,
    /// The attempt's exit code, when it has one.
    pub exit_code: Option<i64>,
    /// Allow one more try: the attempt that ends here does not count (it was interrupted by a
    /// shutdown, not failed).
    pub grant_try: bool,
    /// When.
    pub at: i64,
    /// Why: `scheduler`, `retry`, `timeout`, `operator`, `lost`, `interrupted`, `recovery`, ...
    pub cause: &'a str,
    /// Details for people.
    pub detail: &'a str,
}

impl Store {
    /// Opens (creating if needed) the database at `url` and brings its schema up to date.
    /// `postgres://` and `postgresql://` URLs and PostgreSQL key=value strings
    /// (`host=db user=ferry dbname=ferry`) use PostgreSQL; anything else is a SQLite file
    /// (`sqlite://path` or a plain path), opened in WAL mode.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, OpenMode::Create).await
    }

    /// Opens the database at `url`; with [`OpenMode::Existing`] a missing SQLite file is an
    /// error ([`StoreError::Missing`]) instead of a new, empty database.
    pub async fn open_with(url: &str, mode: OpenMode) -> Result<Self, StoreError> {
        let shown: Arc<str> = ferry_secrets::redact_text(url).into();
        match open::parse_location(url, &shown)? {
            Location::Postgres(options) => {
                let pool = open::open_postgres(&options, mode, &shown).await?;
                Ok(Self {
                    pool: Pool::Postgres(pool),
                    shown,
                    file: None,
                    pg_options: Some(options),
                })
            }
            Location::Sqlite(path) => {
                let (pool, identity) = open::open_sqlite(&path, mode, &shown).await?;
                Ok(Self {
                    pool: Pool::Sqlite(pool),
                    shown,
                    file: Some(Arc::new(identity)),
                    pg_options: None,
                })
            }
        }
    }

    /// The database as shown to people: its URL or path, password masked.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// What names this database whatever path or URL reached it: the real path of a SQLite
    /// file (symbolic links resolved), the URL of a PostgreSQL database (password masked).
    pub fn identity(&self) -> String {
        match &self.file {
            Some(file) => std::fs::canonicalize(&file.path)
                .unwrap_or_else(|_| file.path.clone())
                .display()
                .to_string(),
            None => self.shown.to_string(),
        }
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        with_pool!(self, pool => {
            sqlx::query("SELECT 1").execute(pool).await?;
            Ok(())
        })
    }

    /// Fails with [`StoreError::Replaced`] when the SQLite file was deleted or replaced since it
    /// was opened (writes would go to a file no one reads). Always fine on PostgreSQL.
    pub fn check_file(&self) -> Result<(), StoreError> {
        match &self.file {
            Some(file) if !file.still_there() => Err(StoreError::Replaced {
                path: file.path.display().to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        with_pool!(self, pool => pool.close().await)
    }

    /// Records a DAG file's content as loaded and returns its version id (the same content gives
    /// the same id).
    pub async fn record_dag_version(
        &self,
        dag_id: &str,
        content_hash: &str,
        file: &str,
        source: &str,
        at: i64,
    ) -> Result<i64, StoreError> {
        let version = NewDagVersion {
            dag_id,
            content_hash,
            file,
            source,
        };
        let ids = self.record_dag_versions(&[version], at).await?;
        ids.first()
            .copied()
            .ok_or_else(|| StoreError::Unreadable("no version id returned".to_string()))
    }

    /// Records many DAG files' contents at once; returns their version ids in the same order.
    pub async fn record_dag_versions(
        &self,
        versions: &[NewDagVersion<'_>],
        at: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let mut ids = std::collections::HashMap::new();
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for chunk in versions.chunks(1000) {
                let mut insert =
                    sqlx::QueryBuilder::new("INSERT INTO dag_versions (dag_id, content_hash, file, source, loaded_at) ");
                insert.push_values(chunk, |mut row, version| {
                    row.push_bind(version.dag_id)
                        .push_bind(version.content_hash)
                        .push_bind(version.file)
                        .push_bind(version.source)
                        .push_bind(at);
                });
                // The no-op update makes RETURNING give the ids of rows that already existed too.
                insert.push(" ON CONFLICT (dag_id, content_hash) DO UPDATE SET dag_id = EXCLUDED.dag_id RETURNING id, dag_id, content_hash");
                let rows: Vec<(i64, String, String)> = insert.build_query_as().fetch_all(&mut *tx).await?;
                ids.extend(rows.into_iter().map(|(id, dag, hash)| ((dag, hash), id)));
            }
            tx.commit().await?;
            Ok::<(), StoreError>(())
        })?;
        versions
            .iter()
            .map(|v| {
                ids.get(&(v.dag_id.to_string(), v.content_hash.to_string()))
                    .copied()
                    .ok_or_else(|| {
                        StoreError::Unreadable(format!("no version id for DAG {}", v.dag_id))
                    })
            })
            .collect()
    }

    /// The file path and text of a recorded DAG version.
    pub async fn dag_version(&self, id: i64) -> Result<Option<(String, String)>, StoreError> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as("SELECT file, source FROM dag_versions WHERE id = $1").bind(id).fetch_optional(pool).await?)
        })
    }

    /// The id of a DAG's version with this content hash, if it was recorded.
    pub async fn dag_version_id(
        &self,
        dag_id: &str,
        content_hash: &str,
    ) -> Result<Option<i64>, StoreError> {
        with_pool!(self, pool => {
            Ok(sqlx::query_scalar("SELECT id FROM dag_versions WHERE dag_id = $1 AND content_hash = $2")
                .bind(dag_id)
                .bind(content_hash)
                .fetch_optional(pool)
                .await?)
        })
    }

    /// The latest recorded version of every DAG: (version id, when it was loaded), by DAG id.
    pub async fn latest_dag_versions(
        &self,
    ) -> Result<std::collections::HashMap<String, (i64, i64)>, StoreError> {
        with_pool!(self, pool => {
            let rows: Vec<(String, i64, i64)> = sqlx::query_as(
                "SELECT v.dag_id, v.id, v.loaded_at FROM dag_versions v \
                 WHERE v.id = (SELECT MAX(w.id) FROM dag_versions w WHERE w.dag_id = v.dag_id)",
            )
            .fetch_all(pool)
            .await?;
            Ok(rows.into_iter().map(|(dag, id, at)| (dag, (id, at))).collect())
        })
    }

    /// Creates a run and its task instances in one transaction. Returns `None`, creating
    /// nothing, when the DAG already has a run for that logical date.
    pub async fn create_run(
        &self,
        run: &NewRun<'_>,
        tasks: &[NewTaskInstance<'_>],
        cause: &str,
    ) -> Result<Option<RunRecord>, StoreError> {
        Ok(self
            .create_runs(&[(run.clone(), tasks)], cause)
            .await?
            .pop()
            .flatten())
    }

    /// Creates several runs with their task instances in one transaction (a scheduler pass over
    /// many DAGs), with a few statements however many runs. Each result is `None` when that DAG
    /// already had a run for that logical date.
    pub async fn create_runs(
        &self,
        runs: &[(NewRun<'_>, &[NewTaskInstance<'_>])],
        cause: &str,
    ) -> Result<Vec<Option<RunRecord>>, StoreError> {
        self.insert_runs(runs, cause, None).await
    }

    /// [`Store::create_runs`], for runs asked for by `manual` when given: its actor and reason go
    /// into the event log and its idempotency key (when it has one) is written in the same
    /// transaction, naming the run.
    async fn insert_runs(
        &self,
        runs: &[(NewRun<'_>, &[NewTaskInstance<'_>])],
        cause: &str,
        manual: Option<&ManualRequest<'_>>,
    ) -> Result<Vec<Option<RunRecord>>, StoreError> {
        let mut created: std::collections::HashMap<(String, i64), RunRecord> =
            std::collections::HashMap::new();
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for chunk in runs.chunks(1000) {
                let mut insert = sqlx::QueryBuilder::new(
                    "INSERT INTO dag_runs (dag_id, run_id, logical_date, interval_start, interval_end, run_type, conf, \
                     state, dag_version_id, queued_at) ",
                );
                insert.push_values(chunk, |mut row, (run, _)| {
                    row.push_bind(run.dag_id)
                        .push_bind(run.run_id)
                        .push_bind(run.interval_start)
                        .push_bind(run.interval_start)
                        .push_bind(run.interval_end)
                        .push_bind(run.run_type)
                        .push_bind(run.conf)
                        .push_bind(RunState::Queued.as_str())
                        .push_bind(run.dag_version_id)
                        .push_bind(run.at);
                });
                insert.push(" ON CONFLICT (dag_id, logical_date) DO NOTHING RETURNING *");
                let rows: Vec<RunRecord> = insert.build_query_as().fetch_all(&mut *tx).await?;
                created.extend(rows.into_iter().map(|run| ((run.dag_id.clone(), run.logical_date), run)));
            }
            // Task instances of every new run, many rows per statement (under SQLite's limit on
            // bound parameters).
            let instances: Vec<(i64, &NewTaskInstance<'_>)> = runs
                .iter()
                .filter_map(|(run, tasks)| created.get(&(run.dag_id.to_string(), run.interval_start)).map(|c| (c.id, *tasks)))
                .flat_map(|(pk, tasks)| tasks.iter().map(move |task| (pk, task)))
                .collect();
            for chunk in instances.chunks(1000) {
                let mut insert =
                    sqlx::QueryBuilder::new("INSERT INTO task_instances (run_pk, task_id, state, max_tries, priority, pool) ");
                insert.push_values(chunk, |mut row, (pk, task)| {
                    row.push_bind(*pk)
                        .push_bind(task.task_id)
                        .push_bind(TaskState::Pending.as_str())
                        .push_bind(task.max_tries)
                        .push_bind(task.priority)
                        .push_bind(task.pool);
                });
                insert.build().execute(&mut *tx).await?;
            }
            let new_runs: Vec<&NewRun<'_>> = runs
                .iter()
                .map(|(run, _)| run)
                .filter(|run| created.contains_key(&(run.dag_id.to_string(), run.interval_start)))
                .collect();
            for chunk in new_runs.chunks(1000) {
                let mut insert =
                    sqlx::QueryBuilder::new("INSERT INTO events (at, dag_id, run_id, to_state, cause, detail, actor, reason) ");
                insert.push_values(chunk, |mut row, run| {
                    row.push_bind(run.at)
                        .push_bind(run.dag_id)
                        .push_bind(run.run_id)
                        .push_bind(RunState::Queued.as_str())
                        .push_bind(cause)
                        .push_bind(run.run_type)
                        .push_bind(manual.map(|m| m.actor))
                        .push_bind(manual.and_then(|m| m.reason));
                });
                insert.build().execute(&mut *tx).await?;
            }
            if let Some((key, fingerprint)) = manual.and_then(|m| m.key)
                && let Some(run) = new_runs.first()
            {
                sqlx::query(
                    "INSERT INTO idempotency_keys (dag_id, idempotency_key, fingerprint, run_id, created_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(run.dag_id)
                .bind(key)
                .bind(fingerprint)
                .bind(run.run_id)
                .bind(run.at)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok::<(), StoreError>(())
        })?;
        Ok(runs
            .iter()
            .map(|(run, _)| created.remove(&(run.dag_id.to_string(), run.interval_start)))
            .collect())
    }

    /// Runs matching `filter`, newest logical date first (or oldest first).
    pub async fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        let order = if filter.oldest_first { "ASC" } else { "DESC" };
        with_pool!(self, pool => {
            let mut query = sqlx::QueryBuilder::new("SELECT * FROM dag_runs");
            push_run_filter!(query, filter);
            query
                .push(format!(" ORDER BY logical_date {order}, id {order} LIMIT "))
                .push_bind(filter.limit.unwrap_or(100))
                .push(" OFFSET ")
                .push_bind(filter.offset.unwrap_or(0));
            Ok(query.build_query_as().fetch_all(pool).await?)
        })
    }

    /// How many runs match `filter`, whatever its limit, offset and position.
    pub async fn count_runs(&self, filter: &RunFilter) -> Result<i64, StoreError> {
        let whole = RunFilter {
            after: None,
            ..filter.clone()
        };
        with_pool!(self, pool => {
            let mut query = sqlx::QueryBuilder::new("SELECT COUNT(*) FROM dag_runs");
            push_run_filter!(query, &whole);
            Ok(query.build_query_scalar().fetch_one(pool).await?)
        })
    }

    /// The latest run (by logical date) of every DAG that has one, by DAG id.
    pub async fn latest_runs(
        &self,
    ) -> Result<std::collections::HashMap<String, RunRecord>, StoreError> {
        with_pool!(self, pool => {
            let runs: Vec<RunRecord> = sqlx::query_as(
                "SELECT r.* FROM dag_runs r WHERE r.logical_date = \
                 (SELECT MAX(l.logical_date) FROM dag_runs l WHERE l.dag_id = r.dag_id)",
            )
            .fetch_all(pool)
            .await?;
            Ok(runs.into_iter().map(|run| (run.dag_id.clone(), run)).collect())
        })
    }

    /// The recorded versions of a DAG, newest first: (version id, content hash, first loaded at).
    pub async fn dag_versions_of(
        &self,
        dag_id: &str,
    ) -> Result<Vec<(i64, String, i64)>, StoreError> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(
                "SELECT id, content_hash, loaded_at FROM dag_versions WHERE dag_id = $1 ORDER BY id DESC",
            )
            .bind(dag_id)
            .fetch_all(pool)
            .await?)
        })
    }

    /// The run with this id.
    pub async fn run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as("SELECT * FROM dag_runs WHERE run_id = $1").bind(run_id).fetch_optional(pool).await?)
        })
    }

    /// The latest logical date of every DAG's scheduled runs: the catch-up cursor. Manual and
    /// backfill runs do not move it (a manual run for a later date must not make the scheduler
    /// skip the intervals before it).
    pub async fn latest_scheduled_dates(
        &self,
    ) -> Result<std::collections::HashMap<String, i64>, StoreError> {
        with_pool!(self, pool => {
            let rows: Vec<(String, i64)> = sqlx::query_as(
                "SELECT dag_id, MAX(logical_date) FROM dag_runs WHERE run_type = 'scheduled' GROUP BY dag_id",
            )
            .fetch_all(pool)
            .await?;
            Ok(rows.into_iter().collect())
        })
    }

    /// The latest successful run of `dag_id` before `logical_date`.
    pub async fn previous_success(
        &self,
        dag_id: &str,
        logical_date: i64,
    ) -> Result<Option<RunRecord>, StoreError> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(
                "SELECT * FROM dag_runs WHERE dag_id = $1 AND logical_date < $2 AND state = 'success' \
                 ORDER BY logical_date DESC LIMIT 1",
            )
            .bind(dag_id)
            .bind(logical_date)
            .fetch_optional(pool)
            .await?)
        })
    }

    /// The logical dates of `dag_id`'s runs from `first` to `last` (both included).
    pub async fn logical_dates_between(
        &self,
        dag_id: &str,
        first: i64,
        last: i64,
    ) -> Result<std::collections::HashSet<i64>, StoreError> {
        with_pool!(self, pool => {
            let dates: Vec<i64> = sqlx::query_scalar(
                "SELECT logical_date FROM dag_runs WHERE dag_id = $1 AND logical_date >= $2 AND logical_date <= $3",
            )
            .bind(dag_id)
            .bind(first)
            .bind(last)
            .fetch_all(pool)
            .await?;
            Ok(dates.into_iter().collect())
        })
    }

    /// The run of `dag_id` for the data interval starting at `logical_date`.
    pub async fn run_for_interval(
        &self,
        dag_id: &str,
        logical_date: i64,
    ) -> Result<Option<RunRecord>, StoreError> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as("SELECT * FROM dag_runs WHERE dag_id = $1 AND logical_date = $2")
                .bind(dag_id)
                .bind(logical_date)
                .fetch_optional(pool)
                .await?)
        })
    }

    /// Moves a run from `from` to `to` if it is still in `from`; records the event. Returns
    /// false when the run was no longer in `from`.
    pub async fn transition_run(
        &self,
        run: &RunRecord,
        from: RunState,
        to: RunState,
        at: i64,
        cause: &str,
    ) -> Result<bool, StoreError> {
        if !from.can_become(to) {
            return Err(StoreError::IllegalTransition {
                what: format!("run {}", run.run_id),
                from: from.to_string(),
                to: to.to_string(),
            });
        }
        let ended_at = to.is_terminal().then_some(at);
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let changed = sqlx::query(
                "UPDATE dag_runs SET state = $1, started_at = COALESCE(started_at, $2), ended_at = $3 \
                 WHERE id = $4 AND state = $5",
            )
            .bind(to.as_str())
            .bind(at)
            .bind(ended_at)
            .bind(run.id)
            .bind(from.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if changed {
                let no_task: Option<&str> = None;
                let no_try: Option<i64> = None;
                append_event!(tx, at, &run.dag_id, &run.run_id, no_task, no_try, Some(from.as_str()), to.as_str(), cause, "");
            }
            tx.commit().await?;
            Ok(changed)
        })
    }

    /// The task instances of a run.
    pub async fn task_instances(&self, run_pk: i64) -> Result<Vec<TaskInstanceRecord>, StoreError> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as("SELECT * FROM task_instances WHERE run_pk = $1 ORDER BY id")
                .bind(run_pk)
                .fetch_all(pool)
                .await?)
        })
    }

    /// Applies a guarded task state change and records the event. Returns false when the task
    /// was no longer in `change.from` or no longer held `change.lease`.
    pub async fn transition_task(
        &self,
        run: &RunRecord,
        task: &TaskInstanceRecord,
        change: &TaskChange<'_>,
    ) -> Result<bool, StoreError> {
        if !change.from.can_become(change.to) {
            return Err(StoreError::IllegalTransition {
                what: format!("task {} of run {}", task.task_id, run.run_id),
                from: change.from.to_string(),
                to: change.to.to_string(),
            });
        }
        let queued_at = (change.to == TaskState::Queued).then_some(change.at);
        let ended_at = change.to.is_terminal().then_some(change.at);
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let changed = sqlx::query(
                "UPDATE task_instances SET state = $1, ready_at = $2, queued_at = COALESCE($3, queued_at), \
                 ended_at = $4, exit_code = COALESCE($5, exit_code), max_tries = max_tries + $9, free_tries = free_tries + $9 \
                 WHERE id = $6 AND state = $7 AND ($8 IS NULL OR lease = $8)",
            )
            .bind(change.to.as_str())
            .bind(change.ready_at)
            .bind(queued_at)
            .bind(ended_at)
            .bind(change.exit_code)
            .bind(change.id)
            .bind(change.from.as_str())
            .bind(change.lease)
            .bind(i64::from(change.grant_try))
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if changed {
                append_event!(
                    tx, change.at, &run.dag_id, &run.run_id, Some(task.task_id.as_str()), Some(task.try_number),
                    Some(change.from.as_str()), change.to.as_str(), change.cause, change.detail
                );
            }
            tx.commit().await?;
            Ok(changed)
        })
    }

    /// Claims a queued task for `worker`: it becomes running, its try number and fencing lease
    /// go up by one, and an attempt row is opened with the rendered command and, for a
    /// supervised command, its supervisor's identity (recorded in the same transaction, before
    /// the command may start). Returns the updated instance and the attempt id, or `None` if
    /// another worker claimed it first.
    pub async fn claim(
        &self,
        run: &RunRecord,
        task: &TaskInstanceRecord,
        worker: &str,
        rendered: &str,
        supervisor: Option<&str>,
        at: i64,
    ) -> Result<Option<(TaskInstanceRecord, i64)>, StoreError> {
        // On PostgreSQL a row another node is claiming is skipped instead of waited for; SQLite
        // has a single writer, so the guarded update alone decides.
        let claim_sql = match self.backend() {
            Backend::Postgres => CLAIM_POSTGRES,
            Backend::Sqlite => CLAIM_SQLITE,
        };
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let claimed: Option<TaskInstanceRecord> = sqlx::query_as(claim_sql)
            .bind(TaskState::Running.as_str())
            .bind(worker)
            .bind(at)
            .bind(task.id)
            .bind(TaskState::Queued.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            let Some(claimed) = claimed else {
                return Ok(None);
            };
            let attempt_id: i64 = sqlx::query_scalar(
                "INSERT INTO attempts (task_instance_id, try_number, lease, worker, rendered, started_at, supervisor) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            )
            .bind(claimed.id)
            .bind(claimed.try_number)
            .bind(claimed.lease)
            .bind(worker)
            .bind(rendered)
            .bind(at)
            .bind(supervisor)
            .fetch_one(&mut *tx)
            .await?;
            append_event!(
                tx, at, &run.dag_id, &run.run_id, Some(claimed.task_id.as_str()), Some(claimed.try_number),
                Some(TaskState::Queued.as_str()), TaskState::Running.as_str(), "executor",
                rendered.lines().next().unwrap_or_default()
            );
            tx.commit().await?;
            Ok(Some((claimed, attempt_id)))
        })
    }

    /// Makes `worker` the owner of a running attempt it reattached to (its supervisor survived
    /// the previous worker); the lease stays, since the attempt is the same. Records the event.
    /// False if the task moved on.
    pub async fn take_over(
        &self,
        run: &RunRecord,
        task: &TaskInstanceRecord,
        worker: &str,
        at: i64,
        detail: &str,
    ) -> Result<bool, StoreError> {
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let changed = sqlx::query(
                "UPDATE task_instances SET worker = $1, heartbeat_at = $2 WHERE id = $3 AND lease = $4 AND state = $5",
            )
            .bind(worker)
            .bind(at)
            .bind(task.id)
            .bind(task.lease)
            .bind(TaskState::Running.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if changed {
                let running = TaskState::Running.as_str();
                append_event!(
                    tx, at, &run.dag_id, &run.run_id, Some(task.task_id.as_str()), Some(task.try_number),
                    Some(running), running, "recovery", detail
                );
            }
            tx.commit().await?;
            Ok(changed)
        })
    }

    /// Moves many tasks of one run from `from` to `to` in one transaction (the scheduler
    /// deciding a wave of tasks), each guarded like [`Store::transition_task`]. Returns the ids
    /// of the tasks that moved.
    pub async fn transition_tasks(
        &self,
        run: &RunRecord,
        tasks: &[&TaskInstanceRecord],
        change: &WaveChange<'_>,
    ) -> Result<Vec<i64>, StoreError> {
        let WaveChange {
            from,
            to,
            at,
            cause,
            detail,
        } = *change;
        if !from.can_become(to) {
            return Err(StoreError::IllegalTransition {
                what: format!("tasks of run {}", run.run_id),
                from: from.to_string(),
                to: to.to_string(),
            });
        }
        let queued_at = (to == TaskState::Queued).then_some(at);
        let ended_at = to.is_terminal().then_some(at);
        let mut moved = Vec::new();
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            // Chunks stay under SQLite's limit on bound parameters.
            for chunk in tasks.chunks(500) {
                let mut update = sqlx::QueryBuilder::new("UPDATE task_instances SET state = ");
                update
                    .push_bind(to.as_str())
                    .push(", ready_at = NULL, queued_at = COALESCE(")
                    .push_bind(queued_at)
                    .push(", queued_at), ended_at = ")
                    .push_bind(ended_at)
                    .push(" WHERE state = ")
                    .push_bind(from.as_str())
                    .push(" AND id IN (");
                let mut ids = update.separated(", ");
                for task in chunk {
                    ids.push_bind(task.id);
                }
                update.push(") RETURNING id");
                let changed: Vec<i64> = update.build_query_scalar().fetch_all(&mut *tx).await?;
                let events: Vec<&&TaskInstanceRecord> =
                    chunk.iter().filter(|t| changed.contains(&t.id)).collect();
                if !events.is_empty() {
                    let mut insert = sqlx::QueryBuilder::new(
                        "INSERT INTO events (at, dag_id, run_id, task_id, try_number, from_state, to_state, cause, detail) ",
                    );
                    insert.push_values(events, |mut row, task| {
                        row.push_bind(at)
                            .push_bind(&run.dag_id)
                            .push_bind(&run.run_id)
                            .push_bind(&task.task_id)
                            .push_bind(task.try_number)
                            .push_bind(from.as_str())
                            .push_bind(to.as_str())
                            .push_bind(cause)
                            .push_bind(detail);
                    });
                    insert.build().execute(&mut *tx).await?;
                }
                moved.extend(changed);
            }
            tx.commit().await?;
            Ok::<(), StoreError>(())
        })?;
        Ok(moved)
    }

    /// Wakes the process that owns the store: it looks at runs and tasks again at once (a run
    /// handed over by `ferry run`, tasks cleared by an operator).
    pub async fn wake(&self) -> Result<(), StoreError> {
        with_pool!(self, pool => {
            sqlx::query("UPDATE store_signals SET counter = counter + 1 WHERE name = 'wake'")
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// How often the owner was woken so far (it compares this with what it saw last).
    pub async fn wake_count(&self) -> Result<i64, StoreError> {
        with_pool!(self, pool => {
            Ok(sqlx::query_scalar("SELECT counter FROM store_signals WHERE name = 'wake'")
                .fetch_one(pool)
                .await?)
        })
    }

    /// Closes an attempt with its outcome, exit code and captured log.
    pub async fn finish_attempt(
        &self,
        attempt_id: i64,
        outcome: &str,
        exit_code: Option<i64>,
        log: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        with_pool!(self, pool => {
            sqlx::query("UPDATE attempts SET ended_at = $1, outcome = $2, exit_code = $3, log = $4 WHERE id = $5")
                .bind(at)
                .bind(outcome)
                .bind(exit_code)
                .bind(log)
                .bind(attempt_id)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// Records the external job a running attempt started, on the attempt and its task
    /// instance, unless the task moved on (its lease changed). True if recorded.
    pub async fn record_external_job(
        &self,
        task_instance_id: i64,
        lease: i64,
        attempt_id: i64,
        job: &str,
    ) -> Result<bool, StoreError> {
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let changed = sqlx::query(
                "UPDATE task_instances SET external_job_id = $1 WHERE id = $2 AND lease = $3",
            )
            .bind(job)
            .bind(task_instance_id)
            .bind(lease)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if changed {
                sqlx::query("UPDATE attempts SET external_job_id = $1 WHERE id = $2")
                    .bind(job)
                    .bind(attempt_id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(changed)
        })
    }

    /// Records an attempt's figures (a JSON object), replacing those it had.
    pub async fn record_attempt_metrics(
        &self,
        attempt_id: i64,
        metrics: &str,
    ) -> Result<(), StoreError> {
        with_pool!(self, pool => {
            sqlx::query("UPDATE attempts SET metrics = $1 WHERE id = $2")
                .bind(metrics)
                .bind(attempt_id)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// Marks every running task of `worker` as alive at `at`.
    pub async fn heartbeat(&self, worker: &str, at: i64) -> Result<u64, StoreError> {
        with_pool!(self, pool => {
            Ok(sqlx::query("UPDATE task_instances SET heartbeat_at = $1 WHERE worker = $2 AND state = $3")
                .bind(at)
                .bind(worker)
                .bind(TaskState::Running.as_str())
                .execute(pool)
                .await?
                .rows_affected())
        })
    }

    /// Running tasks whose worker has not sent a heartbeat since `before`: their process is
    /// gone (the worker was killed) and they must be retried or failed.
    pub async fn stale_running(&self, before: i64) -> Result<Vec<TaskInstanceRecord>, StoreError> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as("SELECT * FROM task_instances WHERE state = $1 AND heartbeat_at < $2 ORDER BY id")
                .bind(TaskState::Running.as_str())
                .bind(before)
                .fetch_all(pool)
                .await?)
        })
    }

    /// The run with this primary key.
    pub async fn run_by_pk(&self, pk: i64) -> Result<Option<RunRecord>, StoreError> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as("SELECT * FROM dag_runs WHERE id = $1").bind(pk).fetch_optional(pool).await?)
        })
    }

    /// The run that a task instance belongs to.
    pub async fn run_of(&self, task: &TaskInstanceRecord) -> Result<RunRecord, StoreError> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as("SELECT * FROM dag_runs WHERE id = $1").bind(task.run_pk).fetch_one(pool).await?)
        })
    }

    /// The event log of a run, oldest first.
    pub async fn events(&self, run_id: &str) -> Result<Vec<EventRecord>, StoreError> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as("SELECT * FROM events WHERE run_id = $1 ORDER BY id").bind(run_id).fetch_all(pool).await?)
        })
    }

    /// The latest attempt of a task instance.
    pub async fn latest_attempt(
        &self,
        task_instance_id: i64,
    ) -> Result<Option<AttemptRecord>, StoreError> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(
                "SELECT * FROM attempts WHERE task_instance_id = $1 ORDER BY try_number DESC LIMIT 1",
            )
            .bind(task_instance_id)
            .fetch_optional(pool)
            .await?)
        })
    }

    /// The events of a run after event `after` (0 for all), oldest first: what `ferry run`
    /// shows while it follows a run that the daemon executes.
    pub async fn events_after(
        &self,
        run_id: &str,
        after: i64,
    ) -> Result<Vec<EventRecord>, StoreError> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as("SELECT * FROM events WHERE run_id = $1 AND id > $2 ORDER BY id")
                .bind(run_id)
                .bind(after)
                .fetch_all(pool)
                .await?)
        })
    }

    /// Every event after event `after` (0 for all), oldest first, at most `limit`; only of
    /// `dag_ids` when given: the system's event log, a page at a time.
    pub async fn events_since(
        &self,
        after: i64,
        limit: i64,
        dag_ids: Option<&[String]>,
    ) -> Result<Vec<EventRecord>, StoreError> {
        with_pool!(self, pool => {
            let mut query = sqlx::QueryBuilder::new("SELECT * FROM events WHERE id > ");
            query.push_bind(after);
            push_dag_ids(&mut query, dag_ids);
            query.push(" ORDER BY id LIMIT ").push_bind(limit);
            Ok(query.build_query_as().fetch_all(pool).await?)
        })
    }

    /// The events with these ids (of `dag_ids` when given), oldest first: those a reader found
    /// missing from a page (on PostgreSQL, a transaction can commit an event after a later one).
    pub async fn events_with_ids(
        &self,
        ids: &[i64],
        dag_ids: Option<&[String]>,
    ) -> Result<Vec<EventRecord>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        with_pool!(self, pool => {
            let mut query = sqlx::QueryBuilder::new("SELECT * FROM events WHERE id IN (");
            let mut list = query.separated(", ");
            for id in ids {
                list.push_bind(*id);
            }
            query.push(")");
            push_dag_ids(&mut query, dag_ids);
            query.push(" ORDER BY id");
            Ok(query.build_query_as().fetch_all(pool).await?)
        })
    }

    /// How many runs and task instances are in each state, and how many attempts run in each
    /// pool: what a metrics scrape shows.
    pub async fn state_counts(&self) -> Result<StateCounts, StoreError> {
        with_pool!(self, pool => {
            let runs: Vec<(String, i64)> = sqlx::query_as("SELECT state, COUNT(*) FROM dag_runs GROUP BY state")
                .fetch_all(pool)
                .await?;
            let task_instances: Vec<(String, i64)> =
                sqlx::query_as("SELECT state, COUNT(*) FROM task_instances GROUP BY state")
                    .fetch_all(pool)
                    .await?;
            let running_by_pool: Vec<(String, i64)> = sqlx::query_as(
                "SELECT pool, COUNT(*) FROM task_instances WHERE state = $1 GROUP BY pool",
            )
            .bind(TaskState::Running.as_str())
            .fetch_all(pool)
            .await?;
            Ok(StateCounts {
                runs,
                task_instances,
                running_by_pool,
            })
        })
    }

    /// The number of the latest event (0 without any).
    pub async fn latest_event_id(&self) -> Result<i64, StoreError> {
        with_pool!(self, pool => {
            let latest: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM events").fetch_one(pool).await?;
            Ok(latest.unwrap_or(0))
        })
    }

    /// Every attempt of a task instance, first try first.
    pub async fn attempts(&self, task_instance_id: i64) -> Result<Vec<AttemptRecord>, StoreError> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as("SELECT * FROM attempts WHERE task_instance_id = $1 ORDER BY try_number")
                .bind(task_instance_id)
                .fetch_all(pool)
                .await?)
        })
    }

    /// An attempt of a task of a run: the given try, or the latest.
    pub async fn attempt(
        &self,
        run_id: &str,
        task_id: &str,
        try_number: Option<i64>,
    ) -> Result<Option<AttemptRecord>, StoreError> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(
                "SELECT a.* FROM attempts a JOIN task_instances t ON t.id = a.task_instance_id \
                 JOIN dag_runs r ON r.id = t.run_pk \
                 WHERE r.run_id = $1 AND t.task_id = $2 AND ($3 IS NULL OR a.try_number = $3) \
                 ORDER BY a.try_number DESC LIMIT 1",
            )
            .bind(run_id)
            .bind(task_id)
            .bind(try_number)
            .fetch_optional(pool)
            .await?)
        })
    }
}

/// Claims a queued task: running, try and fencing lease up by one.
const CLAIM_SQLITE: &str = "UPDATE task_instances SET state = $1, try_number = try_number + 1, lease = lease + 1, \
     worker = $2, started_at = $3, heartbeat_at = $3, ready_at = NULL, ended_at = NULL, exit_code = NULL, external_job_id = NULL \
     WHERE id = $4 AND state = $5 RETURNING *";

/// The same claim on PostgreSQL, skipping a row that another node has locked.
const CLAIM_POSTGRES: &str = "UPDATE task_instances SET state = $1, try_number = try_number + 1, lease = lease + 1, \
     worker = $2, started_at = $3, heartbeat_at = $3, ready_at = NULL, ended_at = NULL, exit_code = NULL, external_job_id = NULL \
     WHERE id = (SELECT id FROM task_instances WHERE id = $4 AND state = $5 FOR UPDATE SKIP LOCKED) RETURNING *";

#[cfg(test)]
mod tests;
