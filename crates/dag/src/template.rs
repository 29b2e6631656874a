//! Templated task fields: Jinja syntax (minijinja) with Airflow's variable names.
//!
//! Variables: `ds`, `ds_nodash`, `ts`, `ts_nodash`, `logical_date`, `data_interval_start`,
//! `data_interval_end`, `params`, `run_id`, `dag_id`, `task_id`. Dates are given in the DAG's
//! time zone (Airflow gives them in UTC): a Tokyo DAG's run for 2026-11-24 has `ds` 2026-11-24.
//! Filters besides Jinja's built-ins: `ds_add(days)` and `strftime(format)`.
//!
//! A template is checked when the DAG is validated: it must compile, use only known variables
//! and declared `params`, and render with sample values.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior};
use serde::Serialize;

use crate::diagnostic::suggestion;
use crate::timetable::DataInterval;

/// The variables every template can use.
pub const VARIABLES: [&str; 11] = [
    "ds",
    "ds_nodash",
    "ts",
    "ts_nodash",
    "logical_date",
    "data_interval_start",
    "data_interval_end",
    "params",
    "run_id",
    "dag_id",
    "task_id",
];

/// Why a template cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateProblem {
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub help: Option<String>,
}

/// What a template is rendered with for one task of one run.
#[derive(Clone, Debug)]
pub struct RunContext<'a> {
    /// The DAG's id.
    pub dag_id: &'a str,
    /// The task's id.
    pub task_id: &'a str,
    /// The run's id.
    pub run_id: &'a str,
    /// The run's data interval; its start is the logical date.
    pub data_interval: DataInterval,
    /// The DAG's time zone, in which dates are shown.
    pub timezone: Tz,
    /// The run's parameters (defaults merged with the trigger's overrides).
    pub params: &'a BTreeMap<String, serde_json::Value>,
}

#[derive(Serialize)]
struct Variables<'a> {
    ds: String,
    ds_nodash: String,
    ts: String,
    ts_nodash: String,
    logical_date: String,
    data_interval_start: String,
    data_interval_end: String,
    params: &'a BTreeMap<String, serde_json::Value>,
    run_id: &'a str,
    dag_id: &'a str,
    task_id: &'a str,
}

impl<'a> Variables<'a> {
    fn of(context: &RunContext<'a>) -> Self {
        let start = context.data_interval.start.with_timezone(&context.timezone);
        let end = context.data_interval.end.with_timezone(&context.timezone);
        Self {
            ds: start.format("%Y-%m-%d").to_string(),
            ds_nodash: start.format("%Y%m%d").to_string(),
            ts: start.to_rfc3339(),
            ts_nodash: start.format("%Y%m%dT%H%M%S").to_string(),
            logical_date: start.to_rfc3339(),
            data_interval_start: start.to_rfc3339(),
            data_interval_end: end.to_rfc3339(),
            params: context.params,
            run_id: context.run_id,
            dag_id: context.dag_id,
            task_id: context.task_id,
        }
    }
}

/// Compiles, checks and renders templates.
pub struct Templates {
    environment: Environment<'static>,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl Templates {
    /// An engine with strict undefined variables and ferry's filters.
    pub fn new() -> Self {
        let mut environment = Environment::new();
        environment.set_undefined_behavior(UndefinedBehavior::Strict);
        environment.add_filter("ds_add", ds_add);
        environment.add_filter("strftime", strftime);
        Self { environment }
    }

    /// Renders `text` for one task of one run.
    pub fn render(&self, text: &str, context: &RunContext<'_>) -> Result<String, TemplateProblem> {
        if !text.contains("{{") && !text.contains("{%") {
            return Ok(text.to_string());
        }
        self.environment
            .render_str(
                text,
                minijinja::Value::from(minijinja::value::Serde(Variables::of(context))),
            )
            .map_err(|error| problem(&error))
    }

    /// Checks `text` against the DAG's declared `params`: it must compile, name only known
    /// variables and parameters, and render with sample values.
    pub fn check(
        &self,
        text: &str,
        params: &BTreeMap<String, serde_json::Value>,
    ) -> Result<(), TemplateProblem> {
        if !text.contains("{{") && !text.contains("{%") {
            return Ok(());
        }
        let template = self
            .environment
            .template_from_str(text)
            .map_err(|error| problem(&error))?;
        let globals: HashSet<&str> = self.environment.globals().map(|(name, _)| name).collect();
        let mut used: Vec<String> = template.undeclared_variables(true).into_iter().collect();
        used.sort();
        for name in &used {
            let mut parts = name.split('.');
            let root = parts.next().unwrap_or_default();
            if globals.contains(root) {
                continue;
            }
            if !VARIABLES.contains(&root) {
                return Err(TemplateProblem {
                    message: format!("unknown template variable `{root}`"),
                    help: Some(
                        suggestion(root, VARIABLES).unwrap_or_else(|| {
                            format!("known variables: {}", VARIABLES.join(", "))
                        }),
                    ),
                });
            }
            if root == "params"
                && let Some(param) = parts.next()
                && !params.contains_key(param)
            {
                let declared: Vec<&str> = params.keys().map(String::as_str).collect();
                return Err(TemplateProblem {
                    message: format!("unknown parameter `params.{param}`"),
                    help: Some(
                        suggestion(param, declared.iter().copied()).unwrap_or_else(|| {
                            format!("declare it under `params:` with a default (`{param}: ...`)")
                        }),
                    ),
                });
            }
        }
        let sample_interval = DataInterval {
            start: DateTime::<Utc>::UNIX_EPOCH,
            end: DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::days(1),
        };
        let sample = RunContext {
            dag_id: "dag",
            task_id: "task",
            run_id: "scheduled__1970-01-01T00:00:00+00:00",
            data_interval: sample_interval,
            timezone: Tz::UTC,
            params,
        };
        template
            .render(minijinja::Value::from(minijinja::value::Serde(
                Variables::of(&sample),
            )))
            .map(|_| ())
            .map_err(|error| problem(&error))
    }
}

fn problem(error: &Error) -> TemplateProblem {
    let mut message = match error.kind() {
        ErrorKind::SyntaxError => "template syntax error".to_string(),
        ErrorKind::UnknownFilter => "unknown template filter".to_string(),
        ErrorKind::UnknownFunction => "unknown template function".to_string(),
        ErrorKind::UndefinedError => "undefined value in template".to_string(),
        _ => "template error".to_string(),
    };
    if let Some(detail) = error.detail() {
        message.push_str(": ");
        message.push_str(detail);
    }
    if let Some(line) = error.line().filter(|line| *line > 1) {
        message.push_str(&format!(" (template line {line})"));
    }
    TemplateProblem {
        message,
        help: None,
    }
}

/// `{{ ds | ds_add(-1) }}`: a `YYYY-MM-DD` date moved by whole days.
fn ds_add(ds: &str, days: i64) -> Result<String, Error> {
    let date = NaiveDate::parse_from_str(ds, "%Y-%m-%d").map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("ds_add expects YYYY-MM-DD, got `{ds}`"),
        )
    })?;
    date.checked_add_signed(chrono::Duration::days(days))
        .map(|moved| moved.format("%Y-%m-%d").to_string())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidOperation,
                "ds_add went out of the calendar",
            )
        })
}

/// `{{ logical_date | strftime("%Y/%m/%d") }}`: a date or RFC 3339 time, formatted.
fn strftime(value: &str, format: &str) -> Result<String, Error> {
    let invalid = || {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime expects a date or time, got `{value}`"),
        )
    };
    let rendered = if let Ok(at) = DateTime::parse_from_rfc3339(value) {
        let mut out = String::new();
        std::fmt::write(&mut out, format_args!("{}", at.format(format))).map_err(|_| invalid())?;
        out
    } else {
        let date = NaiveDate::parse_from_str(value, "%Y-%m-%d").map_err(|_| invalid())?;
        let mut out = String::new();
        std::fmt::write(&mut out, format_args!("{}", date.format(format)))
            .map_err(|_| invalid())?;
        out
    };
    Ok(rendered)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> BTreeMap<String, serde_json::Value> {
        BTreeMap::from([("table".to_string(), serde_json::json!("events"))])
    }

    #[test]
    fn accepts_known_variables_and_declared_params() {
        let templates = Templates::new();
        assert_eq!(
            templates.check("load {{ ds }} into {{ params.table }}", &params()),
            Ok(())
        );
        assert_eq!(templates.check("no template here", &params()), Ok(()));
        assert_eq!(
            templates.check(
                "{{ ds | ds_add(-1) }} {{ logical_date | strftime('%Y/%m') }}",
                &params()
            ),
            Ok(())
        );
    }

    #[test]
    fn rejects_unknown_variables_with_a_suggestion() {
        let problem = Templates::new()
            .check("{{ dss }}", &params())
            .expect_err("typo");
        assert_eq!(problem.message, "unknown template variable `dss`");
        assert_eq!(problem.help.as_deref(), Some("did you mean `ds`?"));
    }

    #[test]
    fn rejects_undeclared_params() {
        let problem = Templates::new()
            .check("{{ params.tabel }}", &params())
            .expect_err("typo");
        assert_eq!(problem.message, "unknown parameter `params.tabel`");
        assert_eq!(problem.help.as_deref(), Some("did you mean `table`?"));
    }

    #[test]
    fn rejects_syntax_errors_and_unknown_filters() {
        let templates = Templates::new();
        let syntax = templates.check("{{ ds ", &params()).expect_err("unclosed");
        assert!(
            syntax.message.starts_with("template syntax error"),
            "{}",
            syntax.message
        );
        let filter = templates
            .check("{{ ds | shout }}", &params())
            .expect_err("filter");
        assert!(
            filter.message.starts_with("unknown template filter"),
            "{}",
            filter.message
        );
    }

    #[test]
    fn renders_dates_in_the_dag_time_zone() {
        let tokyo: Tz = "Asia/Tokyo".parse().expect("zone");
        let start = DateTime::parse_from_rfc3339("2026-11-23T17:00:00Z")
            .expect("instant")
            .with_timezone(&Utc);
        let params = params();
        let context = RunContext {
            dag_id: "daily",
            task_id: "load",
            run_id: "scheduled__2026-11-24",
            data_interval: DataInterval {
                start,
                end: start + chrono::Duration::days(1),
            },
            timezone: tokyo,
            params: &params,
        };
        let rendered = Templates::new()
            .render(
                "{{ dag_id }}/{{ ds }}/{{ ds_nodash }}/{{ data_interval_end }}/{{ ds | ds_add(-1) }}/{{ params.table }}",
                &context,
            )
            .expect("renders");
        assert_eq!(
            rendered,
            "daily/2026-11-24/20261124/2026-11-25T02:00:00+09:00/2026-11-23/events"
        );
    }
}
