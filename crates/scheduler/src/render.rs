//! A task of a run made ready to execute: templates rendered with the run's context, and a
//! text of what will run (secrets masked) to keep with the attempt.

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_dag::dag::{Dag, Task};
use ferry_dag::tasks::TaskKind;
use ferry_dag::template::{RunContext, TemplateProblem, Templates};
use ferry_dag::timetable::DataInterval;
use ferry_executor::command::{CommandSpec, Program};
use ferry_executor::http::HttpSpec;
use ferry_store::RunRecord;

use crate::clock::from_millis;

/// What an attempt does.
#[derive(Clone, Debug)]
pub enum Work {
    /// Run a process.
    Command(CommandSpec),
    /// Send a request.
    Http(HttpSpec),
    /// Nothing.
    Noop,
    /// Wait for another DAG's run of the same interval.
    WaitForDag {
        /// The DAG.
        dag: String,
        /// Or one of its tasks.
        task: Option<String>,
        /// How often to look again.
        poll: Duration,
    },
}

/// A rendered attempt.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// What to do.
    pub work: Work,
    /// What will run, secrets masked, for the attempt record and the log.
    pub shown: String,
}

/// Grace between SIGTERM and SIGKILL when a command is stopped.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// The parameters of a run: the DAG's defaults overridden by the run's `conf`.
pub fn run_params(dag: &Dag, run: &RunRecord) -> BTreeMap<String, serde_json::Value> {
    let mut params = dag.params.clone();
    if let Ok(serde_json::Value::Object(conf)) =
        serde_json::from_str::<serde_json::Value>(&run.conf)
    {
        params.extend(conf);
    }
    params
}

/// Renders `task` of `run`.
pub fn prepare(
    dag: &Dag,
    task: &Task,
    run: &RunRecord,
    templates: &Templates,
) -> Result<Prepared, TemplateProblem> {
    let params = run_params(dag, run);
    let context = RunContext {
        dag_id: &dag.id,
        task_id: &task.id,
        run_id: &run.run_id,
        data_interval: DataInterval {
            start: from_millis(run.interval_start),
            end: from_millis(run.interval_end),
        },
        timezone: dag.timezone,
        params: &params,
    };
    let render = |text: &str| templates.render(text, &context);
    let timeout = task.timeout.map(|t| t.0);
    let prepared = match &task.kind {
        TaskKind::Command(command) => {
            let program = match (&command.command, &command.argv) {
                (Some(line), _) => Program::Shell(render(line)?),
                (None, Some(argv)) => Program::Argv(
                    argv.iter()
                        .map(|arg| render(arg))
                        .collect::<Result<_, _>>()?,
                ),
                (None, None) => Program::Argv(Vec::new()),
            };
            let env = render_pairs(&command.env, &render)?;
            let working_dir = match &command.working_dir {
                Some(dir) => Some(render(dir)?.into()),
                None => dag
                    .file
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .map(|p| p.to_path_buf()),
            };
            let mut shown = match &program {
                Program::Shell(line) => format!("sh -c {line:?}"),
                Program::Argv(argv) => format!("{argv:?}"),
            };
            shown.push_str(&shown_pairs(&env, "="));
            Prepared {
                work: Work::Command(CommandSpec {
                    program,
                    env,
                    working_dir,
                    timeout,
                    grace: STOP_GRACE,
                }),
                shown,
            }
        }
        TaskKind::Http(http) => {
            let url = render(&http.url)?;
            let headers = render_pairs(&http.headers, &render)?;
            let body = http.body.as_deref().map(render).transpose()?;
            let method = serde_json::to_value(http.method)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| "GET".to_string());
            let mut shown = format!("{method} {url}");
            shown.push_str(&shown_pairs(&headers, ": "));
            Prepared {
                work: Work::Http(HttpSpec {
                    method,
                    url,
                    headers,
                    body,
                    expected_status: http.expected_status.clone(),
                    timeout,
                }),
                shown,
            }
        }
        TaskKind::Noop(_) => Prepared {
            work: Work::Noop,
            shown: "noop".to_string(),
        },
        TaskKind::WaitForDag(wait) => Prepared {
            work: Work::WaitForDag {
                dag: wait.dag.clone(),
                task: wait.task.clone(),
                poll: wait.poll_interval.map_or(Duration::from_secs(60), |p| p.0),
            },
            shown: format!(
                "wait for DAG {}{}",
                wait.dag,
                wait.task
                    .as_deref()
                    .map(|t| format!(" task {t}"))
                    .unwrap_or_default()
            ),
        },
    };
    Ok(prepared)
}

/// Renders the values of a name → template map (environment variables, headers).
fn render_pairs(
    pairs: &BTreeMap<String, String>,
    render: &impl Fn(&str) -> Result<String, TemplateProblem>,
) -> Result<Vec<(String, String)>, TemplateProblem> {
    pairs
        .iter()
        .map(|(name, value)| Ok((name.clone(), render(value)?)))
        .collect()
}

/// One `name<separator>value` line per pair, secrets masked, each after a newline.
fn shown_pairs(pairs: &[(String, String)], separator: &str) -> String {
    pairs
        .iter()
        .map(|(name, value)| format!("\n{name}{separator}{}", mask(name, value)))
        .collect()
}

/// Values of variables and headers whose names say they are secret are shown as `********`.
fn mask(name: &str, value: &str) -> String {
    let upper = name.to_ascii_uppercase();
    let secret = [
        "TOKEN",
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "KEY",
        "CREDENTIAL",
        "AUTHORIZATION",
        "COOKIE",
    ]
    .iter()
    .any(|word| upper.contains(word));
    if secret {
        "********".to_string()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_by_name() {
        assert_eq!(mask("API_TOKEN", "abc"), "********");
        assert_eq!(mask("Authorization", "Bearer x"), "********");
        assert_eq!(mask("TABLE", "scores"), "scores");
    }
}
