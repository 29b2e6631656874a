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

mod records;
pub mod state;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use records::{
    AttemptRecord, EventRecord, NewDagVersion, NewRun, NewTaskInstance, RunRecord,
    TaskInstanceRecord,
};
pub use state::{RunState, TaskState};

/// What can go wrong with the store. Backend-neutral: callers map these to exit codes or HTTP.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or opened.
    #[error("cannot open the database {url}: {source}")]
    Unavailable {
        /// The URL, password masked.
        url: String,
        /// Why.
        source: sqlx::Error,
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
    #[error("cannot migrate the database {url}: {source}")]
    Migration {
        /// The URL, password masked.
        url: String,
        /// Why.
        source: sqlx::migrate::MigrateError,
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
    /// A stored value ferry cannot read.
    #[error("unreadable value in the database: {0}")]
    Unreadable(String),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
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

/// Which runs to list.
#[derive(Clone, Debug, Default)]
pub struct RunFilter {
    /// Only this DAG's runs.
    pub dag_id: Option<String>,
    /// Only runs in these states (all when empty).
    pub states: Vec<RunState>,
    /// At most this many, newest logical date first (default 100).
    pub limit: Option<i64>,
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
    /// When.
    pub at: i64,
    /// Why: `scheduler`, `retry`, `timeout`, `operator`, `heartbeat lost`, ...
    pub cause: &'a str,
    /// Details for people.
    pub detail: &'a str,
}

impl Store {
    /// Opens (creating if needed) the database at `url` and brings its schema up to date.
    /// `postgres://` and `postgresql://` URLs use PostgreSQL; anything else is a SQLite file
    /// (`sqlite://path` or a plain path), opened in WAL mode.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let shown = redact(url);
        let store = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await
                .map_err(|source| StoreError::Unavailable {
                    url: shown.clone(),
                    source,
                })?;
            sqlx::migrate!("./migrations/postgres")
                .run(&pool)
                .await
                .map_err(|source| StoreError::Migration {
                    url: shown.clone(),
                    source,
                })?;
            Self {
                pool: Pool::Postgres(pool),
            }
        } else {
            let path = url.strip_prefix("sqlite://").unwrap_or(url);
            let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
                .map_err(|source| StoreError::Unavailable {
                    url: shown.clone(),
                    source,
                })?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true);
            let pool = connect_sqlite(options, &shown).await?;
            migrate_sqlite(&pool, &shown).await?;
            Self {
                pool: Pool::Sqlite(pool),
            }
        };
        Ok(store)
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
                    sqlx::QueryBuilder::new("INSERT INTO events (at, dag_id, run_id, to_state, cause, detail) ");
                insert.push_values(chunk, |mut row, run| {
                    row.push_bind(run.at)
                        .push_bind(run.dag_id)
                        .push_bind(run.run_id)
                        .push_bind(RunState::Queued.as_str())
                        .push_bind(cause)
                        .push_bind(run.run_type);
                });
                insert.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok::<(), StoreError>(())
        })?;
        Ok(runs
            .iter()
            .map(|(run, _)| created.remove(&(run.dag_id.to_string(), run.interval_start)))
            .collect())
    }

    /// Runs matching `filter`, newest logical date first.
    pub async fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        let states: Vec<&str> = filter.states.iter().map(|s| s.as_str()).collect();
        let states_json = serde_json::to_string(&states).unwrap_or_else(|_| "[]".to_string());
        let limit = filter.limit.unwrap_or(100);
        with_pool!(self, pool => {
            // The state list travels as one JSON text so the same SQL works on both backends.
            let runs: Vec<RunRecord> = sqlx::query_as(
                "SELECT * FROM dag_runs WHERE ($1 IS NULL OR dag_id = $1) \
                 AND ($2 = '[]' OR $2 LIKE '%\"' || state || '\"%') \
                 ORDER BY logical_date DESC, id DESC LIMIT $3",
            )
            .bind(filter.dag_id.as_deref())
            .bind(&states_json)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            Ok(runs)
        })
    }

    /// The run with this id.
    pub async fn run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as("SELECT * FROM dag_runs WHERE run_id = $1").bind(run_id).fetch_optional(pool).await?)
        })
    }

    /// The latest logical date of every DAG that has runs.
    pub async fn latest_logical_dates(
        &self,
    ) -> Result<std::collections::HashMap<String, i64>, StoreError> {
        with_pool!(self, pool => {
            let rows: Vec<(String, i64)> =
                sqlx::query_as("SELECT dag_id, MAX(logical_date) FROM dag_runs GROUP BY dag_id").fetch_all(pool).await?;
            Ok(rows.into_iter().collect())
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
                 ended_at = $4, exit_code = COALESCE($5, exit_code) \
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
    /// go up by one, and an attempt row is opened with the rendered command. Returns the
    /// updated instance and the attempt id, or `None` if another worker claimed it first.
    pub async fn claim(
        &self,
        run: &RunRecord,
        task: &TaskInstanceRecord,
        worker: &str,
        rendered: &str,
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
                "INSERT INTO attempts (task_instance_id, try_number, lease, worker, rendered, started_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind(claimed.id)
            .bind(claimed.try_number)
            .bind(claimed.lease)
            .bind(worker)
            .bind(rendered)
            .bind(at)
            .fetch_one(&mut *tx)
            .await?;
            append_event!(
                tx, at, &run.dag_id, &run.run_id, Some(claimed.task_id.as_str()), Some(claimed.try_number),
                Some(TaskState::Queued.as_str()), TaskState::Running.as_str(), "executor", worker
            );
            tx.commit().await?;
            Ok(Some((claimed, attempt_id)))
        })
    }

    /// Records the process group of a running attempt (`pgid:1234`), so that a ferry restarted
    /// after a crash can stop what the dead one left running. Ignored if the lease moved on.
    pub async fn record_external_job(
        &self,
        task_id: i64,
        lease: i64,
        job: &str,
    ) -> Result<(), StoreError> {
        with_pool!(self, pool => {
            sqlx::query("UPDATE task_instances SET external_job_id = $1 WHERE id = $2 AND lease = $3")
                .bind(job)
                .bind(task_id)
                .bind(lease)
                .execute(pool)
                .await?;
            Ok(())
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
     worker = $2, started_at = $3, heartbeat_at = $3, ready_at = NULL, ended_at = NULL, exit_code = NULL \
     WHERE id = $4 AND state = $5 RETURNING *";

/// The same claim on PostgreSQL, skipping a row that another node has locked.
const CLAIM_POSTGRES: &str = "UPDATE task_instances SET state = $1, try_number = try_number + 1, lease = lease + 1, \
     worker = $2, started_at = $3, heartbeat_at = $3, ready_at = NULL, ended_at = NULL, exit_code = NULL \
     WHERE id = (SELECT id FROM task_instances WHERE id = $4 AND state = $5 FOR UPDATE SKIP LOCKED) RETURNING *";

/// A database URL with its password replaced by `********`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((credentials, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:********@{host}"),
        None => url.to_string(),
    }
}

/// Opens a SQLite pool. Switching a new file to WAL takes a lock that another process creating
/// the same database may hold for a moment, so a busy database is tried again.
async fn connect_sqlite(
    options: SqliteConnectOptions,
    url: &str,
) -> Result<SqlitePool, StoreError> {
    let mut attempt = 0;
    loop {
        match SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await
        {
            Ok(pool) => return Ok(pool),
            Err(error) if !is_corruption(&error) && attempt < 10 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
            Err(error) => return Err(classify_open_error(url, error)),
        }
    }
}

/// Brings a SQLite schema up to date. SQLite has no advisory lock, so two processes opening a
/// new database at once may race: the loser retries and finds the work done.
async fn migrate_sqlite(pool: &SqlitePool, url: &str) -> Result<(), StoreError> {
    let mut attempt = 0;
    loop {
        match sqlx::migrate!("./migrations/sqlite").run(pool).await {
            Ok(()) => return Ok(()),
            Err(sqlx::migrate::MigrateError::Execute(error)) if is_corruption(&error) => {
                return Err(classify_open_error(url, error));
            }
            Err(_) if attempt < 10 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
            Err(source) => {
                return Err(StoreError::Migration {
                    url: url.to_string(),
                    source,
                });
            }
        }
    }
}

fn is_corruption(error: &sqlx::Error) -> bool {
    let text = error.to_string();
    text.contains("file is not a database")
        || text.contains("malformed")
        || text.contains("corrupt")
}

/// Opening errors that mean "this is not a usable database" become [`StoreError::Corrupt`].
fn classify_open_error(url: &str, error: sqlx::Error) -> StoreError {
    let text = error.to_string();
    if text.contains("file is not a database")
        || text.contains("malformed")
        || text.contains("corrupt")
    {
        StoreError::Corrupt {
            url: url.to_string(),
            reason: text,
        }
    } else {
        StoreError::Unavailable {
            url: url.to_string(),
            source: error,
        }
    }
}

#[cfg(test)]
mod tests;
