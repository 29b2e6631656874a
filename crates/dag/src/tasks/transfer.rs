//! `type: transfer`: moves rows from a source (a SQL query on a connection, or objects in S3)
//! into a table on another connection, in batches.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{AWS_KINDS, Destination, FieldProblem, QUERY_KINDS, TaskType, is_valid_id};

/// Moves rows from `source` into `destination.table` on `destination.connection`, streamed in
/// batches (memory stays flat however many rows there are), by the destination's write mode.
/// The rows read and written are recorded on the attempt.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferTask {
    /// Where the rows come from.
    pub source: TransferSource,
    /// Where they go: a `connection` (`sqlite`, `postgres`, `mysql`, `bigquery`), a `table`,
    /// and the write mode.
    pub destination: Destination,
    /// Rows per batch. Default 10,000 (500 per request into BigQuery).
    #[serde(default)]
    pub batch_size: Option<u32>,
    /// The columns and their types, in order. Default: inferred from the source (a SQL
    /// query's column types; CSV: every column `string`; newline JSON: the JSON types).
    #[serde(default)]
    pub schema: Vec<Column>,
}

/// A source of rows.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferSource {
    /// The connection read from: a SQL or BigQuery one for `sql`, an `aws` one for `bucket`.
    pub connection: String,
    /// A SELECT (templated).
    #[serde(default)]
    pub sql: Option<String>,
    /// An S3 bucket (templated).
    #[serde(default)]
    pub bucket: Option<String>,
    /// The objects: every object whose key starts with this (templated), read in key order.
    #[serde(default)]
    pub prefix: Option<String>,
    /// How the objects are written. Required with `bucket`.
    #[serde(default)]
    pub format: Option<ObjectFormat>,
}

/// How S3 objects hold rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ObjectFormat {
    /// CSV with a header row.
    Csv,
    /// One JSON object per line.
    Ndjson,
    /// Parquet (read from a temporary file: the object is not held in memory).
    Parquet,
}

/// A column of a declared schema.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: ColumnType,
}

/// The type of a column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
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

impl TaskType for TransferTask {
    fn problems(&self) -> Vec<FieldProblem> {
        let mut problems = Vec::new();
        let source = &self.source;
        if !is_valid_id(&source.connection) {
            problems.push(FieldProblem::invalid(
                "source.connection",
                format!("`{}` is not a valid connection name", source.connection),
            ));
        }
        match (&source.sql, &source.bucket) {
            (Some(_), Some(_)) => problems.push(FieldProblem::invalid(
                "source.bucket",
                "a source is either `sql` or `bucket`, not both",
            )),
            (None, None) => problems.push(
                FieldProblem::invalid("source", "a source needs `sql` or `bucket`").with_help(
                    "`sql: SELECT ...` on a database, or `bucket:`, `prefix:` and `format:` on S3",
                ),
            ),
            (Some(sql), None) => {
                if sql.trim().is_empty() {
                    problems.push(FieldProblem::invalid("source.sql", "the SQL is empty"));
                }
                if source.prefix.is_some() || source.format.is_some() {
                    problems.push(FieldProblem::invalid(
                        "source.prefix",
                        "`prefix` and `format` belong to an S3 source (`bucket`)",
                    ));
                }
            }
            (None, Some(_)) => {
                if source.format.is_none() {
                    problems.push(
                        FieldProblem::invalid("source.format", "an S3 source needs a `format`")
                            .with_help("`format: csv`, `format: ndjson` or `format: parquet`"),
                    );
                }
            }
        }
        let destination = &self.destination;
        match &destination.connection {
            None => problems.push(
                FieldProblem::invalid(
                    "destination.connection",
                    "a transfer's destination needs a `connection`",
                )
                .with_help("name the connection the table is on"),
            ),
            Some(name) if !is_valid_id(name) => problems.push(FieldProblem::invalid(
                "destination.connection",
                format!("`{name}` is not a valid connection name"),
            )),
            Some(_) => {}
        }
        problems.extend(destination.problems("destination"));
        if self.batch_size == Some(0) {
            problems.push(FieldProblem::invalid(
                "batch_size",
                "a batch holds at least one row",
            ));
        }
        for (index, column) in self.schema.iter().enumerate() {
            if !super::is_valid_table_name(&column.name) || column.name.contains('.') {
                problems.push(FieldProblem::invalid(
                    format!("schema.{index}.name"),
                    format!("`{}` is not a column name", column.name),
                ));
            }
        }
        problems
    }

    fn templates(&self) -> Vec<(String, &str)> {
        let mut templates = Vec::new();
        for (field, value) in [
            ("source.sql", &self.source.sql),
            ("source.bucket", &self.source.bucket),
            ("source.prefix", &self.source.prefix),
        ] {
            if let Some(value) = value {
                templates.push((field.to_string(), value.as_str()));
            }
        }
        templates.extend(self.destination.templates("destination"));
        templates
    }
}

impl TransferTask {
    /// The kinds the source connection may be.
    pub fn source_kinds(&self) -> &'static [&'static str] {
        if self.source.bucket.is_some() {
            AWS_KINDS
        } else {
            QUERY_KINDS
        }
    }
}
