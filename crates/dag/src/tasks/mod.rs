//! The task types: a closed, documented set. Each type is one module with its typed fields,
//! their checks and the fields that hold templates; the executor adds each type's runner.

mod cloud_waits;
mod command;
mod glue_job;
mod http;
mod noop;
mod query;
mod reverse_sync;
mod sql_check;
mod stepfunctions;
mod transfer;
mod wait_for_dag;

use schemars::JsonSchema;
use serde::Deserialize;

pub use cloud_waits::{BigqueryPartitionWait, GlueRunState, GlueRunWait, S3ObjectWait};
pub use command::CommandTask;
pub use glue_job::{ATTEMPT_ARGUMENT, GlueJobTask};
pub use http::{HttpMethod, HttpTask};
pub use noop::NoopTask;
pub use query::{Destination, QueryTask, WriteMode, is_valid_table_name};
pub use reverse_sync::{
    DEFAULT_MAX_DELETE, Limit, ReverseSyncTask, SyncMode, SyncSource, SyncTarget, Threshold,
};
pub use sql_check::{Check, SqlCheckTask};
pub use stepfunctions::StepFunctionsTask;
pub use transfer::{Column, ColumnType, ObjectFormat, TransferSource, TransferTask};
pub use wait_for_dag::{DEFAULT_WAIT_TIMEOUT, OnFailed, WaitForDagTask};

use crate::diagnostic::Code;

/// A task's `type` and the fields of that type.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TaskKind {
    /// Waits for a BigQuery table's partition of the data interval.
    BigqueryPartition(BigqueryPartitionWait),
    /// Runs a program or shell command; its exit code decides.
    Command(CommandTask),
    /// Starts an AWS Glue job run and waits until it ends.
    GlueJob(GlueJobTask),
    /// Waits for a run of a Glue job started outside ferry to reach a state.
    GlueRun(GlueRunWait),
    /// Sends one HTTP request; the response status decides.
    Http(HttpTask),
    /// Does nothing and succeeds: a join point or placeholder.
    Noop(NoopTask),
    /// Runs SQL on a named connection.
    Query(QueryTask),
    /// Writes a query's rows into an application table by key: diffed, staged, published at once.
    ReverseSync(ReverseSyncTask),
    /// Waits for an S3 object or prefix.
    S3Object(S3ObjectWait),
    /// Fails unless queries answer as declared: a data-quality gate.
    SqlCheck(SqlCheckTask),
    /// Starts an AWS Step Functions execution and waits until it ends.
    Stepfunctions(StepFunctionsTask),
    /// Moves rows from a query or S3 objects into a table on another connection.
    Transfer(TransferTask),
    /// Waits for another DAG's run of the same data interval to succeed.
    WaitForDag(WaitForDagTask),
}

/// Every task type's name, as written in `type:`.
pub const TASK_TYPES: [&str; 13] = [
    "bigquery_partition",
    "command",
    "glue_job",
    "glue_run",
    "http",
    "noop",
    "query",
    "reverse_sync",
    "s3_object",
    "sql_check",
    "stepfunctions",
    "transfer",
    "wait_for_dag",
];

/// The connection kinds SQL runs on.
pub const SQL_KINDS: &[&str] = &["sqlite", "postgres", "mysql"];
/// The connection kinds a `query` runs on.
pub const QUERY_KINDS: &[&str] = &["sqlite", "postgres", "mysql", "bigquery"];
/// The connection kinds of BigQuery waits.
pub const BIGQUERY_KINDS: &[&str] = &["bigquery"];
/// The connection kinds of AWS tasks.
pub const AWS_KINDS: &[&str] = &["aws"];

/// A problem in a task's type-specific fields that the types alone do not catch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldProblem {
    /// Dotted path of the field in the task (`argv`, `env.HOME`).
    pub field: String,
    /// The kind of problem.
    pub code: Code,
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub help: Option<String>,
}

impl FieldProblem {
    /// An invalid value in `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            code: Code::InvalidValue,
            message: message.into(),
            help: None,
        }
    }

    /// Adds advice.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// What every task type provides to the validator.
pub trait TaskType {
    /// Checks of the type's fields beyond their types.
    fn problems(&self) -> Vec<FieldProblem>;

    /// The fields rendered as templates for each run: (dotted field path, template text).
    fn templates(&self) -> Vec<(String, &str)>;
}

impl TaskKind {
    /// The name written in `type:`.
    pub fn type_name(&self) -> &'static str {
        match self {
            TaskKind::BigqueryPartition(_) => "bigquery_partition",
            TaskKind::Command(_) => "command",
            TaskKind::GlueJob(_) => "glue_job",
            TaskKind::GlueRun(_) => "glue_run",
            TaskKind::Http(_) => "http",
            TaskKind::Noop(_) => "noop",
            TaskKind::Query(_) => "query",
            TaskKind::ReverseSync(_) => "reverse_sync",
            TaskKind::S3Object(_) => "s3_object",
            TaskKind::SqlCheck(_) => "sql_check",
            TaskKind::Stepfunctions(_) => "stepfunctions",
            TaskKind::Transfer(_) => "transfer",
            TaskKind::WaitForDag(_) => "wait_for_dag",
        }
    }

    fn as_task_type(&self) -> &dyn TaskType {
        match self {
            TaskKind::BigqueryPartition(task) => task,
            TaskKind::Command(task) => task,
            TaskKind::GlueJob(task) => task,
            TaskKind::GlueRun(task) => task,
            TaskKind::Http(task) => task,
            TaskKind::Noop(task) => task,
            TaskKind::Query(task) => task,
            TaskKind::ReverseSync(task) => task,
            TaskKind::S3Object(task) => task,
            TaskKind::SqlCheck(task) => task,
            TaskKind::Stepfunctions(task) => task,
            TaskKind::Transfer(task) => task,
            TaskKind::WaitForDag(task) => task,
        }
    }

    /// Checks of the type's fields beyond their types.
    pub fn problems(&self) -> Vec<FieldProblem> {
        self.as_task_type().problems()
    }

    /// The fields rendered as templates.
    pub fn templates(&self) -> Vec<(String, &str)> {
        self.as_task_type().templates()
    }

    /// The connections this task uses: (field, connection name, the kinds it accepts).
    pub fn connections(&self) -> Vec<(&'static str, &str, &'static [&'static str])> {
        match self {
            TaskKind::Query(task) => vec![("connection", &task.connection, QUERY_KINDS)],
            TaskKind::SqlCheck(task) => vec![("connection", &task.connection, QUERY_KINDS)],
            TaskKind::GlueJob(task) => vec![("connection", &task.connection, AWS_KINDS)],
            TaskKind::Stepfunctions(task) => vec![("connection", &task.connection, AWS_KINDS)],
            TaskKind::S3Object(task) => vec![("connection", &task.connection, AWS_KINDS)],
            TaskKind::GlueRun(task) => vec![("connection", &task.connection, AWS_KINDS)],
            TaskKind::BigqueryPartition(task) => {
                vec![("connection", &task.connection, BIGQUERY_KINDS)]
            }
            TaskKind::Transfer(task) => {
                let mut used = vec![(
                    "source.connection",
                    task.source.connection.as_str(),
                    task.source_kinds(),
                )];
                if let Some(destination) = &task.destination.connection {
                    used.push(("destination.connection", destination.as_str(), QUERY_KINDS));
                }
                used
            }
            TaskKind::ReverseSync(task) => vec![
                (
                    "source.connection",
                    &task.source.connection,
                    task.source_kinds(),
                ),
                (
                    "target.connection",
                    &task.target.connection,
                    task.target_kinds(),
                ),
            ],
            TaskKind::Command(_)
            | TaskKind::Http(_)
            | TaskKind::Noop(_)
            | TaskKind::WaitForDag(_) => Vec::new(),
        }
    }

    /// The DAG this task waits for, if it is a `wait_for_dag` task.
    pub fn waits_for(&self) -> Option<&WaitForDagTask> {
        match self {
            TaskKind::WaitForDag(task) => Some(task),
            _ => None,
        }
    }
}

/// True for names made of ASCII letters, digits, `_`, `-` and `.`, starting with a letter or
/// digit: the ids of DAGs and tasks.
pub fn is_valid_id(id: &str) -> bool {
    id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}
