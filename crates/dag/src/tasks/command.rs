//! `type: command`: runs a program (`argv`) or a shell command line (`command`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::{FieldProblem, TaskType};

/// Runs a program or a shell command line; exit code 0 is success. Standard output and error
/// go to the attempt's log.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandTask {
    /// A command line run by `sh -c` (pipes, redirections and `&&` work). Templated.
    pub command: Option<String>,
    /// Or: the program and its arguments, run without a shell. Each item templated.
    pub argv: Option<Vec<String>>,
    /// Extra environment variables. Values templated.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Directory to run in (default: the directory of the DAG file). Templated.
    pub working_dir: Option<String>,
}

impl TaskType for CommandTask {
    fn problems(&self) -> Vec<FieldProblem> {
        let mut problems = Vec::new();
        match (&self.command, &self.argv) {
            (None, None) => problems.push(
                FieldProblem::invalid("command", "a command task needs `command` or `argv`")
                    .with_help(
                        "write `command: \"echo hello\"` (run by sh -c) or `argv: [echo, hello]`",
                    ),
            ),
            (Some(_), Some(_)) => problems.push(
                FieldProblem::invalid("argv", "`command` and `argv` cannot both be set").with_help(
                    "keep `command` for a shell line, or `argv` for a program without a shell",
                ),
            ),
            (Some(line), None) if line.trim().is_empty() => {
                problems.push(FieldProblem::invalid("command", "`command` is empty"));
            }
            (None, Some(argv)) if argv.is_empty() => {
                problems.push(FieldProblem::invalid(
                    "argv",
                    "`argv` is empty: name at least the program",
                ));
            }
            _ => {}
        }
        for name in self.env.keys() {
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                problems.push(FieldProblem::invalid(
                    format!("env.{name}"),
                    format!("`{name}` is not a valid environment variable name (letters, digits and `_`)"),
                ));
            }
        }
        problems
    }

    fn templates(&self) -> Vec<(String, &str)> {
        let mut templates = Vec::new();
        if let Some(line) = &self.command {
            templates.push(("command".to_string(), line.as_str()));
        }
        for (index, arg) in self.argv.iter().flatten().enumerate() {
            templates.push((format!("argv.{index}"), arg.as_str()));
        }
        for (name, value) in &self.env {
            templates.push((format!("env.{name}"), value.as_str()));
        }
        if let Some(dir) = &self.working_dir {
            templates.push(("working_dir".to_string(), dir.as_str()));
        }
        templates
    }
}
