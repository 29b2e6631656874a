//! Work on a named connection (`query`, `glue_job`, `stepfunctions`): the engine hands it to a
//! [`Connectors`] implementation that the binary provides, so that the engine does not compile
//! database drivers or cloud SDKs.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{LogBuffer, Outcome};

/// What a task asks of a connection, rendered.
#[derive(Clone, Debug, PartialEq)]
pub enum ConnectorWork {
    /// Run SQL in one transaction (one job on BigQuery), optionally writing a SELECT's rows
    /// into a table.
    Query {
        /// The connection's name.
        connection: String,
        /// The SQL, rendered.
        sql: String,
        /// Where the rows go, if the SQL is a SELECT to write.
        destination: Option<TableWrite>,
        /// BigQuery job labels (ferry's own are added by the connector).
        labels: Vec<(String, String)>,
        /// The task's `timeout`.
        timeout: Option<Duration>,
    },
    /// Move rows from a source into a table on another connection.
    Transfer {
        /// Where the rows come from.
        source: RowSource,
        /// The connection written to.
        destination: String,
        /// The table and write mode.
        write: TableWrite,
        /// Rows per batch.
        batch_size: usize,
        /// The declared columns (empty: inferred).
        schema: Vec<(String, ColumnType)>,
        /// The task's `timeout`.
        timeout: Option<Duration>,
    },
    /// Write a query's rows into an application table by key: diffed against the last synced
    /// state, staged, and published in one transaction.
    ReverseSync(Box<SyncWork>),
    /// Run data-quality checks on a connection; fail unless every one holds.
    Check {
        /// The connection.
        connection: String,
        /// The checks, rendered.
        checks: Vec<DataCheck>,
        /// The task's `timeout`.
        timeout: Option<Duration>,
    },
    /// Look once whether something outside ferry is there yet (a deferred wait: between
    /// looks it holds no slot).
    Wait {
        /// The connection.
        connection: String,
        /// What is waited for.
        wait: CloudWait,
        /// How often to look.
        poll: Duration,
        /// When to give up, counted from the first look.
        timeout: Duration,
    },
    /// Start an AWS Glue job run and wait until it ends.
    GlueJob {
        /// The `aws` connection.
        connection: String,
        /// The job.
        job_name: String,
        /// Its arguments, rendered.
        arguments: Vec<(String, String)>,
        /// How often to look.
        poll: Duration,
        /// The task's `timeout`.
        timeout: Option<Duration>,
    },
    /// Start an AWS Step Functions execution and wait until it ends.
    StepFunctions {
        /// The `aws` connection.
        connection: String,
        /// The state machine.
        state_machine_arn: String,
        /// The input, JSON text.
        input: String,
        /// How often to look.
        poll: Duration,
        /// The task's `timeout`.
        timeout: Option<Duration>,
    },
}

/// A reverse sync, rendered.
#[derive(Clone, Debug, PartialEq)]
pub struct SyncWork {
    /// The connection read from (SQL or BigQuery).
    pub source: String,
    /// The SELECT, rendered.
    pub sql: String,
    /// The connection written to (SQL).
    pub target: String,
    /// The table, rendered.
    pub table: String,
    /// The key columns (target names).
    pub key: Vec<String>,
    /// How rows are written.
    pub mode: SyncMode,
    /// Target column → source column where they differ.
    pub columns: Vec<(String, String)>,
    /// Column → value of the target rows a mirror compares (rendered).
    pub scope: Vec<(String, String)>,
    /// The most rows a mirror may delete.
    pub max_delete: RowLimit,
    /// The most rows the target may reject.
    pub max_rejected: RowLimit,
    /// Rows per batch.
    pub batch_size: usize,
    /// The task's `timeout`.
    pub timeout: Option<Duration>,
    /// Only work out what would change, and write nothing (`ferry sync plan`).
    pub plan_only: bool,
    /// The source column whose highest value read bounds the next sync's read.
    pub incremental: Option<String>,
}

/// A data-quality check, rendered.
#[derive(Clone, Debug, PartialEq)]
pub struct DataCheck {
    /// Its name, for the log.
    pub name: String,
    /// The query.
    pub sql: String,
    /// What its answer must be.
    pub expect: Expectation,
}

/// What a check's query must answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Expectation {
    /// The first value of the first row within these bounds.
    Between {
        /// At least.
        min: Option<f64>,
        /// At most.
        max: Option<f64>,
    },
    /// No row at all.
    NoRows,
    /// The first value of the first row equal (within `tolerance`) to that of another query.
    Equals {
        /// The other query.
        sql: String,
        /// The largest difference counted as equal.
        tolerance: f64,
    },
}

/// How a reverse sync writes rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// Insert new keys, update changed ones.
    Upsert,
    /// Update changed rows only.
    Update,
    /// Insert new keys only.
    Insert,
    /// Insert every row.
    Append,
    /// Upsert, and delete rows in scope that left the source.
    Mirror,
}

/// A limit on rows: a count, or a percentage of a total.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RowLimit {
    /// At most this many.
    Count(u64),
    /// At most this percentage.
    Percent(f64),
}

impl RowLimit {
    /// The most rows allowed out of `total`.
    pub fn allowed(self, total: u64) -> u64 {
        match self {
            RowLimit::Count(count) => count,
            RowLimit::Percent(percent) => (total as f64 * percent / 100.0).floor() as u64,
        }
    }
}

impl std::fmt::Display for RowLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RowLimit::Count(count) => write!(f, "{count} row(s)"),
            RowLimit::Percent(percent) => write!(f, "{percent}%"),
        }
    }
}

/// Where a transfer reads rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RowSource {
    /// A SELECT on a SQL connection.
    Sql {
        /// The connection.
        connection: String,
        /// The SELECT, rendered.
        sql: String,
    },
    /// Objects in S3 under a prefix, in key order.
    S3 {
        /// The `aws` connection.
        connection: String,
        /// The bucket.
        bucket: String,
        /// The key prefix.
        prefix: String,
        /// How the objects hold rows.
        format: ObjectFormat,
    },
}

/// Something outside ferry a wait looks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloudWait {
    /// An S3 object, or any object under a prefix (a key ending with `/`).
    S3Object {
        /// The bucket.
        bucket: String,
        /// The key or prefix.
        key: String,
        /// Only objects written after this count.
        newer_than: Option<std::time::SystemTime>,
    },
    /// Rows of a BigQuery table whose `column` equals `value`.
    BigqueryPartition {
        /// `dataset.table` or `project.dataset.table`.
        table: String,
        /// The partition column.
        column: String,
        /// The partition's value.
        value: String,
    },
    /// The newest run of a Glue job started after `started_after` reaching a state.
    GlueRun {
        /// The job.
        job_name: String,
        /// The state: `SUCCEEDED`, `RUNNING` or `ENDED` (any end).
        state: String,
        /// Runs started before this do not count.
        started_after: std::time::SystemTime,
    },
}

/// How S3 objects hold rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectFormat {
    /// CSV with a header row.
    Csv,
    /// One JSON object per line.
    Ndjson,
    /// Parquet.
    Parquet,
}

/// The type of a transferred column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    /// Text.
    String,
    /// A 64-bit integer.
    Int64,
    /// A 64-bit float.
    Float64,
    /// True or false.
    Bool,
}

impl ConnectorWork {
    /// Whether a restarted ferry takes the work over in the same attempt: it waits on a job
    /// outside ferry (which it must not start twice), or it only looks (a wait). A shutdown
    /// leaves such work to the next start instead of failing it.
    pub fn is_resumable(&self) -> bool {
        match self {
            ConnectorWork::GlueJob { .. }
            | ConnectorWork::StepFunctions { .. }
            | ConnectorWork::Wait { .. } => true,
            ConnectorWork::Query { .. }
            | ConnectorWork::Transfer { .. }
            | ConnectorWork::ReverseSync(_)
            | ConnectorWork::Check { .. } => false,
        }
    }
}

/// A destination table and its write mode, rendered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableWrite {
    /// The table.
    pub table: String,
    /// How rows are written.
    pub mode: WriteMode,
}

/// How rows are written into a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// Add them.
    Append,
    /// Replace every row.
    Replace,
    /// Replace the rows whose `column` equals `value`.
    ReplacePartition {
        /// The column.
        column: String,
        /// The value.
        value: String,
    },
    /// Replace rows with the same key, add the others.
    Merge {
        /// The key's columns.
        key: Vec<String>,
    },
}

/// Which attempt the work belongs to: labels, and the idempotency token of what it submits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptKey {
    /// The DAG.
    pub dag: String,
    /// The task.
    pub task: String,
    /// The run.
    pub run_id: String,
    /// When the run was queued in its store (ms since the epoch): a run of the same id in
    /// another store (staging and prod on one AWS account) gets other tokens.
    pub run_queued_at: i64,
    /// The try.
    pub try_number: i64,
    /// The task instance's fencing number when this attempt was claimed: a later attempt
    /// (a retry, a clear, a takeover) holds a higher one.
    pub lease: i64,
}

impl AttemptKey {
    /// A name unique to this attempt and the same every time it is asked for (after a restart
    /// too): `ferry-<dag>-<task>-<hash>-<try>`, at most 80 characters of letters, digits, `-`
    /// and `_` (what Step Functions execution names and BigQuery job ids accept). The hash
    /// covers the run's id and when it was queued, so two stores never share a token.
    pub fn token(&self) -> String {
        let hash = self.run_hash();
        let clean = |text: &str, limit: usize| -> String {
            text.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        c
                    } else {
                        '-'
                    }
                })
                .take(limit)
                .collect()
        };
        format!(
            "ferry-{}-{}-{hash:016x}-{}",
            clean(&self.dag, 24),
            clean(&self.task, 24),
            self.try_number
        )
    }
}

impl AttemptKey {
    /// The hash of the task's identity in its run and store.
    fn run_hash(&self) -> u64 {
        fnv1a(
            format!(
                "{}\n{}\n{}\n{}",
                self.dag, self.task, self.run_id, self.run_queued_at
            )
            .as_bytes(),
        )
    }

    /// A short name unique to this attempt, for things with tight name limits (temporary
    /// tables): `<hash>_<try>`.
    pub fn short_token(&self) -> String {
        let hash = self.run_hash();
        format!("{hash:016x}_{}", self.try_number)
    }
}

/// FNV-1a, 64 bits: a stable hash (the standard library's is not stable across releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Where connector work records what an operator needs to see while it runs: the external
/// job's id (before waiting on it) and figures (rows, bytes).
pub trait AttemptRecorder: Send + Sync {
    /// Records the id of the job the attempt started (a Glue run id, an execution ARN, a
    /// BigQuery job id).
    fn external_job<'a>(&'a self, id: &'a str) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

    /// Records figures of the attempt (`rows_written`, `bytes_processed`).
    fn metrics<'a>(
        &'a self,
        figures: &'a BTreeMap<String, i64>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
}

/// What connector work gets besides the work itself.
pub struct AttemptScope<'a> {
    /// Which attempt.
    pub key: &'a AttemptKey,
    /// Whether an earlier life of this attempt (a ferry that died or shut down) may have
    /// started the job already.
    pub resuming: bool,
    /// The external job recorded by an earlier life of this attempt (a ferry that died while
    /// waiting on it).
    pub resumed_job: Option<&'a str>,
    /// How long ago the attempt began (more than zero when a restarted ferry resumes it).
    pub elapsed: Duration,
    /// Where to record.
    pub recorder: &'a dyn AttemptRecorder,
    /// The attempt's log.
    pub log: &'a LogBuffer,
    /// Asks the work to stop (a shutdown, a run timeout, an operator's clear). A shutdown
    /// leaves an external job running (the next ferry waits on it); the others stop it.
    pub cancel: &'a CancellationToken,
    /// Set when the stop is a shutdown of ferry.
    pub shutting_down: &'a CancellationToken,
}

/// Runs connector work.
pub trait Connectors: Send + Sync {
    /// Does `work`, writing what it did to the scope's log.
    fn run<'a>(
        &'a self,
        work: &'a ConnectorWork,
        scope: AttemptScope<'a>,
    ) -> Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

    /// Whether a restarted ferry takes `work` over in the same attempt (see
    /// [`ConnectorWork::is_resumable`]); an implementation may know more of its connections
    /// (a query on BigQuery is a job it can wait on again).
    fn resumable(&self, work: &ConnectorWork) -> bool {
        work.is_resumable()
    }
}

/// A [`Connectors`] shared by the engine and its attempts.
#[derive(Clone)]
pub struct SharedConnectors(pub std::sync::Arc<dyn Connectors>);

impl std::fmt::Debug for SharedConnectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedConnectors")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stable_short_and_clean() {
        let key = AttemptKey {
            dag: "forward events".to_string(),
            task: "load.events".to_string(),
            run_id: "scheduled__2026-11-28T00:00:00+09:00".to_string(),
            run_queued_at: 1_795_000_000_000,
            try_number: 2,
            lease: 2,
        };
        let token = key.token();
        assert_eq!(token, key.clone().token());
        assert!(token.starts_with("ferry-forward-events-load-events-"));
        assert!(token.ends_with("-2"));
        assert!(token.len() <= 80);
        assert!(
            token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        let other = AttemptKey {
            run_id: "manual__1".to_string(),
            ..key.clone()
        };
        assert_ne!(other.token(), token);
        let other_store = AttemptKey {
            run_queued_at: key.run_queued_at + 1,
            ..key
        };
        assert_ne!(other_store.token(), token);
    }
}
