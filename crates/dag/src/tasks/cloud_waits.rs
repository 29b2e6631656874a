//! The waits on cloud state: `s3_object`, `bigquery_partition` and `glue_run`. Like
//! `wait_for_dag` they hold no execution slot while they wait: ferry looks every
//! `poll_interval` and gives up after the task's `timeout` (default 24h).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{FieldProblem, TaskType, is_valid_id};
use crate::duration::Duration;

/// Waits until an S3 object exists (or, when `key` ends with `/`, any object under that
/// prefix), optionally one written after the data interval ended.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3ObjectWait {
    /// The `aws` connection.
    pub connection: String,
    /// The bucket (templated).
    pub bucket: String,
    /// The key, or a prefix ending with `/` (templated).
    pub key: String,
    /// Only an object written after the data interval's end counts. Default false.
    #[serde(default)]
    pub newer_than_interval_end: bool,
    /// How often to look. Default 1m.
    #[serde(default)]
    pub poll_interval: Option<Duration>,
}

/// Waits until a BigQuery table has rows for the data interval's partition: a row whose
/// `partition_column` equals `partition_value`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BigqueryPartitionWait {
    /// The `bigquery` connection.
    pub connection: String,
    /// The table: `dataset.table` or `project.dataset.table` (templated).
    pub table: String,
    /// The column that holds the partition (a date, usually).
    pub partition_column: String,
    /// The partition's value (templated). Default `{{ ds }}`.
    #[serde(default)]
    pub partition_value: Option<String>,
    /// How often to look. Default 5m.
    #[serde(default)]
    pub poll_interval: Option<Duration>,
}

/// Waits until the newest run of a Glue job started after the data interval's end (a run
/// ferry did not start: a Glue trigger or schedule's) reaches `state`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GlueRunWait {
    /// The `aws` connection.
    pub connection: String,
    /// The Glue job (templated).
    pub job_name: String,
    /// The state to wait for. Default `SUCCEEDED`.
    #[serde(default)]
    pub state: GlueRunState,
    /// How often to look. Default 1m.
    #[serde(default)]
    pub poll_interval: Option<Duration>,
}

/// A Glue run state a `glue_run` waits for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum GlueRunState {
    /// Ended well (the default).
    #[default]
    Succeeded,
    /// Running.
    Running,
    /// Ended in any way.
    Ended,
}

fn connection_problem(connection: &str) -> Option<FieldProblem> {
    (!is_valid_id(connection)).then(|| {
        FieldProblem::invalid(
            "connection",
            format!("`{connection}` is not a valid connection name"),
        )
    })
}

impl TaskType for S3ObjectWait {
    fn problems(&self) -> Vec<FieldProblem> {
        let mut problems: Vec<FieldProblem> =
            connection_problem(&self.connection).into_iter().collect();
        if self.bucket.trim().is_empty() {
            problems.push(FieldProblem::invalid("bucket", "the bucket is empty"));
        }
        if self.key.trim().is_empty() {
            problems.push(
                FieldProblem::invalid("key", "the key is empty")
                    .with_help("a key, or a prefix ending with `/`"),
            );
        }
        problems
    }

    fn templates(&self) -> Vec<(String, &str)> {
        vec![
            ("bucket".to_string(), self.bucket.as_str()),
            ("key".to_string(), self.key.as_str()),
        ]
    }
}

impl TaskType for BigqueryPartitionWait {
    fn problems(&self) -> Vec<FieldProblem> {
        let mut problems: Vec<FieldProblem> =
            connection_problem(&self.connection).into_iter().collect();
        let templated = self.table.contains("{{");
        let qualified = super::is_valid_table_name(&self.table) && self.table.contains('.');
        if !templated && !qualified {
            problems.push(
                FieldProblem::invalid("table", format!("`{}` is not a BigQuery table", self.table))
                    .with_help("`dataset.table` or `project.dataset.table`"),
            );
        }
        if !super::is_valid_table_name(&self.partition_column)
            || self.partition_column.contains('.')
        {
            problems.push(FieldProblem::invalid(
                "partition_column",
                format!("`{}` is not a column name", self.partition_column),
            ));
        }
        problems
    }

    fn templates(&self) -> Vec<(String, &str)> {
        let mut templates = vec![("table".to_string(), self.table.as_str())];
        if let Some(value) = &self.partition_value {
            templates.push(("partition_value".to_string(), value.as_str()));
        }
        templates
    }
}

impl TaskType for GlueRunWait {
    fn problems(&self) -> Vec<FieldProblem> {
        let mut problems: Vec<FieldProblem> =
            connection_problem(&self.connection).into_iter().collect();
        if self.job_name.trim().is_empty() {
            problems.push(FieldProblem::invalid("job_name", "the job name is empty"));
        }
        problems
    }

    fn templates(&self) -> Vec<(String, &str)> {
        vec![("job_name".to_string(), self.job_name.as_str())]
    }
}
