//! The ferry DAG language: one DAG per YAML file, read into a checked [`Dag`].
//!
//! A DAG file names its schedule (cron in an IANA time zone, with Airflow's data intervals),
//! its parameters, its deadline and alerts, and its tasks. Every problem is reported as a
//! [`Diagnostic`] with file, line, column, DAG, task and field, and advice:
//!
//! ```
//! use std::path::Path;
//! use ferry_dag::{parse_dag, Templates};
//!
//! let text = "schedule: '30 2 * * *'\ntimezone: Asia/Tokyo\nstart_date: 2026-11-01\n\
//!             tasks:\n  - id: hello\n    type: command\n    comand: echo {{ ds }}\n";
//! let parsed = parse_dag(Path::new("dags/internal/hello.yaml"), text, &Templates::new());
//! let first = &parsed.diagnostics[0];
//! assert_eq!((first.line, first.column), (7, 5));
//! assert_eq!(first.message, "unknown field `comand`");
//! assert_eq!(first.help.as_deref(), Some("did you mean `command`?"));
//! ```
//!
//! [`catalog::load`] reads whole folders and adds the checks that span files. The modules:
//! [`spec`] (the file format), [`tasks`] (one module per task type), [`timetable`] (all calendar
//! arithmetic), [`template`], [`graph`], [`dag`] (one file), [`catalog`] (many files).

pub mod catalog;
pub mod dag;
pub mod diagnostic;
pub mod duration;
pub mod graph;
pub mod node;
pub mod params;
pub mod spec;
pub mod tasks;
pub mod template;
pub mod timetable;

pub use catalog::{Catalog, CatalogOptions};
pub use dag::{Dag, ParsedFile, Task, Tree, parse_dag};
pub use diagnostic::{Code, Diagnostic, Severity};
pub use template::Templates;

/// The JSON Schema of a DAG file, for editors (the YAML language server) and CI.
pub fn json_schema() -> serde_json::Value {
    let mut schema = schemars::schema_for!(spec::DagSpec<spec::TaskSpec>).to_value();
    // A task's fields come from three flattened parts, so "no other field" must be said with
    // `unevaluatedProperties` (the fields of the matching `type` count as evaluated).
    if let Some(task) = schema
        .pointer_mut("/$defs/TaskSpec")
        .and_then(serde_json::Value::as_object_mut)
    {
        task.insert(
            "unevaluatedProperties".to_string(),
            serde_json::Value::Bool(false),
        );
    }
    schema
}
