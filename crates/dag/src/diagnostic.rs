//! Diagnostics: what is wrong, where (file, line, column, DAG, task, field) and what to do.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::node::Position;

/// How serious a diagnostic is. Errors make `ferry validate` fail; warnings do not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The DAG cannot be loaded or scheduled as written.
    Error,
    /// The DAG works, but probably not as its author meant.
    Warning,
}

/// What kind of problem a diagnostic reports; stable identifiers for CI and documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Code {
    /// The file cannot be read.
    Io,
    /// The file is not valid YAML (including duplicate keys).
    YamlSyntax,
    /// A field the language does not have.
    UnknownField,
    /// A required field is missing.
    MissingField,
    /// A field has the wrong type or an invalid value.
    InvalidValue,
    /// Two DAGs share an id, or two tasks of one DAG share an id.
    DuplicateId,
    /// A dependency names a task or DAG that does not exist.
    UnknownDependency,
    /// The tasks' dependencies form a cycle.
    Cycle,
    /// The `schedule` is not a valid cron expression.
    InvalidCron,
    /// The `timezone` is not an IANA time zone.
    UnknownTimezone,
    /// A task `type` that does not exist.
    UnknownTaskType,
    /// A duration such as `retry_delay` cannot be read.
    InvalidDuration,
    /// A templated field does not compile or uses an unknown variable.
    Template,
    /// An alert names a channel the configuration does not define.
    UnknownChannel,
    /// A task names a pool the configuration does not define.
    UnknownPool,
    /// A task names a connection the environment does not define.
    UnknownConnection,
    /// A rule of the DAG's tree (`dags/user-facing/`) is broken.
    Policy,
    /// The schedule meets a daylight-saving transition without a stated policy.
    Dst,
    /// Two DAGs that wait on each other do not share a data interval.
    IntervalMismatch,
}

impl Code {
    /// The code as written in diagnostics (`unknown-field`).
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Io => "io",
            Code::YamlSyntax => "yaml-syntax",
            Code::UnknownField => "unknown-field",
            Code::MissingField => "missing-field",
            Code::InvalidValue => "invalid-value",
            Code::DuplicateId => "duplicate-id",
            Code::UnknownDependency => "unknown-dependency",
            Code::Cycle => "cycle",
            Code::InvalidCron => "invalid-cron",
            Code::UnknownTimezone => "unknown-timezone",
            Code::UnknownTaskType => "unknown-task-type",
            Code::InvalidDuration => "invalid-duration",
            Code::Template => "template",
            Code::UnknownChannel => "unknown-channel",
            Code::UnknownPool => "unknown-pool",
            Code::UnknownConnection => "unknown-connection",
            Code::Policy => "policy",
            Code::Dst => "dst",
            Code::IntervalMismatch => "interval-mismatch",
        }
    }
}

/// One problem found in one DAG file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// What kind of problem.
    pub code: Code,
    /// The DAG file.
    pub file: PathBuf,
    /// Line, from 1 (0 when the whole file is meant).
    pub line: u32,
    /// Column, from 1 (0 when the whole file is meant).
    pub column: u32,
    /// The DAG's id, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dag: Option<String>,
    /// The task's id, when the problem is in a task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// The field at fault (`schedule`, `tasks[2].retry_delay`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

impl Diagnostic {
    /// An error at `position` of `file`.
    pub fn error(code: Code, file: &Path, position: Position, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            code,
            file: file.to_path_buf(),
            line: position.line,
            column: position.column,
            dag: None,
            task: None,
            field: None,
            message: message.into(),
            help: None,
        }
    }

    /// A warning at `position` of `file`.
    pub fn warning(
        code: Code,
        file: &Path,
        position: Position,
        message: impl Into<String>,
    ) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(code, file, position, message)
        }
    }

    /// Names the DAG.
    pub fn in_dag(mut self, dag: impl Into<String>) -> Self {
        self.dag = Some(dag.into());
        self
    }

    /// Names the task.
    pub fn in_task(mut self, task: impl Into<String>) -> Self {
        self.task = Some(task.into());
        self
    }

    /// Names the field.
    pub fn in_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Adds advice.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Adds advice when there is some.
    pub fn with_help_opt(mut self, help: Option<String>) -> Self {
        self.help = help.or(self.help);
        self
    }

    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// One line per diagnostic, then the advice:
/// `dags/x.yaml:12:5: error[unknown-field]: dag `x`, task `load`, field `comand`: unknown field`.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}:{}:{}: {severity}[{}]: ",
            self.file.display(),
            self.line,
            self.column,
            self.code.as_str()
        )?;
        let mut context = Vec::new();
        if let Some(dag) = &self.dag {
            context.push(format!("dag `{dag}`"));
        }
        if let Some(task) = &self.task {
            context.push(format!("task `{task}`"));
        }
        if let Some(field) = &self.field {
            context.push(format!("field `{field}`"));
        }
        if !context.is_empty() {
            write!(f, "{}: ", context.join(", "))?;
        }
        f.write_str(&self.message)?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// Names Airflow users write, and ferry's name for the same thing.
const AIRFLOW_NAMES: [(&str, &str); 14] = [
    ("retry", "retries"),
    ("dag_id", "id"),
    ("task_id", "id"),
    ("schedule_interval", "schedule"),
    ("upstream", "depends_on"),
    ("dependencies", "depends_on"),
    ("bash_command", "command"),
    ("execution_timeout", "timeout"),
    ("concurrency", "max_active_tasks"),
    ("tz", "timezone"),
    ("env_vars", "env"),
    ("cwd", "working_dir"),
    ("endpoint", "url"),
    ("on_failure_callback", "alerts"),
];

/// The closest candidate to `word`, if one is close enough to be a likely typo (or is ferry's
/// name for an Airflow name). Among close candidates, one of a similar length wins (`retry` is
/// `retries`, not `retry_delay`).
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let candidates: Vec<&'a str> = candidates.into_iter().collect();
    if let Some(&(_, ours)) = AIRFLOW_NAMES.iter().find(|(theirs, _)| *theirs == word)
        && let Some(found) = candidates.iter().find(|c| **c == ours)
    {
        return Some(found);
    }
    candidates
        .into_iter()
        .map(|candidate| {
            // One edit away (a swapped pair included) counts as close, which Jaro-Winkler
            // misses in short words (`dya` is `day`).
            let one_edit = word.chars().count() >= 3 && strsim::osa_distance(word, candidate) == 1;
            let similarity =
                strsim::jaro_winkler(word, candidate).max(if one_edit { 0.9 } else { 0.0 });
            let length_gap = word.chars().count().abs_diff(candidate.chars().count());
            (similarity, similarity - 0.02 * length_gap as f64, candidate)
        })
        .filter(|(similarity, ..)| *similarity > 0.84)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(.., candidate)| candidate)
}

/// "did you mean `x`?" for the closest candidate, if any.
pub fn suggestion<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    did_you_mean(word, candidates).map(|best| format!("did you mean `{best}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_ferrys_name_for_airflows_and_the_closest_length() {
        let fields = [
            "retries",
            "retry_delay",
            "retry_exponential_backoff",
            "id",
            "schedule",
        ];
        assert_eq!(did_you_mean("retry", fields), Some("retries"));
        assert_eq!(did_you_mean("retry_dely", fields), Some("retry_delay"));
        assert_eq!(did_you_mean("dag_id", fields), Some("id"));
        assert_eq!(did_you_mean("schedule_interval", fields), Some("schedule"));
        assert_eq!(did_you_mean("dya", ["day", "days", "mode"]), Some("day"));
        assert_eq!(did_you_mean("shout", ["sort", "upper"]), None);
    }

    #[test]
    fn suggests_close_names_only() {
        let fields = ["command", "argv", "env", "working_dir"];
        assert_eq!(did_you_mean("comand", fields), Some("command"));
        assert_eq!(did_you_mean("workdir", fields), Some("working_dir"));
        assert_eq!(did_you_mean("zzz", fields), None);
    }

    #[test]
    fn displays_location_context_and_help() {
        let diagnostic = Diagnostic::error(
            Code::UnknownField,
            Path::new("d.yaml"),
            Position { line: 3, column: 5 },
            "unknown field `comand`",
        )
        .in_dag("d")
        .in_task("t")
        .with_help("did you mean `command`?");
        assert_eq!(
            diagnostic.to_string(),
            "d.yaml:3:5: error[unknown-field]: dag `d`, task `t`: unknown field `comand`\n  help: did you mean `command`?"
        );
    }
}
