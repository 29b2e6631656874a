//! Templated task fields: Jinja syntax (minijinja) with Airflow's variable names.
//!
//! Variables: `ds`, `ds_nodash`, `ts`, `ts_nodash`, `logical_date`, `data_interval_start`,
//! `data_interval_end`, `prev_ds`, `next_ds`, `prev_data_interval_start_success`,
//! `prev_data_interval_end_success`, `params`, `dag_run` (`dag_run.conf`, `dag_run.run_id`,
//! `dag_run.run_type`), `run_id`, `dag_id`, `task_id`; and `macros.ds_add(ds, days)`,
//! `macros.ds_format(ds, input, output)`. Dates are given in the DAG's time zone (Airflow gives
//! them in UTC): a Tokyo DAG's run for 2026-11-24 has `ds` 2026-11-24. Filters besides Jinja's
//! built-ins: `ds_add(days)` and `strftime(format)`.
//!
//! A template is checked when the DAG is validated: it must compile, use only known variables,
//! filters and declared `params`, and render with sample values; every problem is reported.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior};
use serde::Serialize;

use crate::diagnostic::{did_you_mean, suggestion};
use crate::timetable::DataInterval;

/// The variables every template can use.
pub const VARIABLES: [&str; 19] = [
    "ds",
    "ds_nodash",
    "ts",
    "ts_nodash",
    "logical_date",
    "data_interval_start",
    "data_interval_end",
    "prev_ds",
    "next_ds",
    "prev_data_interval_start_success",
    "prev_data_interval_end_success",
    "params",
    "dag_run",
    "run_id",
    "dag_id",
    "env",
    "task_id",
    "macros",
    "conf",
];

/// ferry's own filters, besides Jinja's.
pub const FILTERS: [&str; 2] = ["ds_add", "strftime"];

/// Why a template cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateProblem {
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub help: Option<String>,
}

/// The variables of a sample run (a scheduled run of 1970-01-01 in `dev`), to check
/// templates with.
fn sample_values(params: &BTreeMap<String, serde_json::Value>) -> minijinja::Value {
    let sample_interval = DataInterval {
        start: DateTime::<Utc>::UNIX_EPOCH,
        end: DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::days(1),
    };
    // A run's conf holds only what it was triggered with: nothing, for a scheduled run.
    let conf = serde_json::Value::Object(serde_json::Map::new());
    let sample = RunContext {
        dag_id: "dag",
        task_id: "task",
        run_id: "scheduled__1970-01-01T00:00:00+00:00",
        run_type: "scheduled",
        data_interval: sample_interval,
        neighbours: (
            Some(sample_interval.start - chrono::Duration::days(1)),
            Some(sample_interval.end),
        ),
        previous_success: Some(sample_interval),
        timezone: Tz::UTC,
        params,
        conf: &conf,
        environment: "dev",
    };
    minijinja::Value::from(minijinja::value::Serde(Variables::of(&sample)))
}

/// What a condition (`run_if`) rendered says: true (`true`, `1`, `yes`), false (`false`, `0`,
/// `no`, nothing), any case, or neither.
pub fn truth(rendered: &str) -> Option<bool> {
    match rendered.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" | "" => Some(false),
        _ => None,
    }
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
    /// `scheduled`, `manual` or `backfill`.
    pub run_type: &'a str,
    /// The run's data interval; its start is the logical date.
    pub data_interval: DataInterval,
    /// The start of the interval before and after this one by the schedule (none without one).
    pub neighbours: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
    /// The data interval of the latest successful run before this one, if any.
    pub previous_success: Option<DataInterval>,
    /// The DAG's time zone, in which dates are shown.
    pub timezone: Tz,
    /// The run's parameters (defaults merged with the trigger's overrides).
    pub params: &'a BTreeMap<String, serde_json::Value>,
    /// The run's `conf` as given when it was triggered.
    pub conf: &'a serde_json::Value,
    /// The environment ferry runs in (`--env`: `dev`, `prod`).
    pub environment: &'a str,
}

#[derive(Serialize)]
struct DagRun<'a> {
    run_id: &'a str,
    run_type: &'a str,
    logical_date: String,
    conf: &'a serde_json::Value,
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
    prev_ds: Option<String>,
    next_ds: Option<String>,
    prev_data_interval_start_success: Option<String>,
    prev_data_interval_end_success: Option<String>,
    params: &'a BTreeMap<String, serde_json::Value>,
    dag_run: DagRun<'a>,
    conf: &'a serde_json::Value,
    run_id: &'a str,
    dag_id: &'a str,
    task_id: &'a str,
    env: &'a str,
}

impl<'a> Variables<'a> {
    fn of(context: &RunContext<'a>) -> Self {
        let tz = context.timezone;
        let start = context.data_interval.start.with_timezone(&tz);
        let end = context.data_interval.end.with_timezone(&tz);
        let day = |at: DateTime<Utc>| at.with_timezone(&tz).format("%Y-%m-%d").to_string();
        let (before, after) = context.neighbours;
        Self {
            ds: start.format("%Y-%m-%d").to_string(),
            ds_nodash: start.format("%Y%m%d").to_string(),
            ts: start.to_rfc3339(),
            ts_nodash: start.format("%Y%m%dT%H%M%S").to_string(),
            logical_date: start.to_rfc3339(),
            data_interval_start: start.to_rfc3339(),
            data_interval_end: end.to_rfc3339(),
            prev_ds: before.map(day),
            next_ds: after.map(day),
            prev_data_interval_start_success: context
                .previous_success
                .map(|i| i.start.with_timezone(&tz).to_rfc3339()),
            prev_data_interval_end_success: context
                .previous_success
                .map(|i| i.end.with_timezone(&tz).to_rfc3339()),
            params: context.params,
            dag_run: DagRun {
                run_id: context.run_id,
                run_type: context.run_type,
                logical_date: start.to_rfc3339(),
                conf: context.conf,
            },
            conf: context.conf,
            run_id: context.run_id,
            dag_id: context.dag_id,
            task_id: context.task_id,
            env: context.environment,
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
        let macros: BTreeMap<&str, minijinja::Value> = BTreeMap::from([
            ("ds_add", minijinja::Value::from_function(ds_add)),
            ("ds_format", minijinja::Value::from_function(ds_format)),
        ]);
        environment.add_global("macros", minijinja::Value::from(macros));
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

    /// Checks a condition (`run_if`) as [`Templates::check`] does, and that it renders true
    /// or false for a sample run.
    pub fn check_condition(
        &self,
        text: &str,
        params: &BTreeMap<String, serde_json::Value>,
    ) -> Vec<TemplateProblem> {
        let problems = self.check(text, params);
        if !problems.is_empty() {
            return problems;
        }
        let rendered = self
            .environment
            .render_str(text, sample_values(params))
            .unwrap_or_default();
        match truth(&rendered) {
            Some(_) => Vec::new(),
            None => vec![TemplateProblem {
                message: format!(
                    "the condition renders `{}` for a sample run, which is neither true nor false",
                    rendered.trim()
                ),
                help: Some("write a comparison, as `{{ env == 'prod' }}`".to_string()),
            }],
        }
    }

    /// Checks `text` against the DAG's declared `params`: it must compile, name only known
    /// variables, filters and parameters, and render with sample values. Returns every problem
    /// found (empty: the template is fine).
    pub fn check(
        &self,
        text: &str,
        params: &BTreeMap<String, serde_json::Value>,
    ) -> Vec<TemplateProblem> {
        if !text.contains("{{") && !text.contains("{%") {
            return Vec::new();
        }
        let template = match self.environment.template_from_str(text) {
            Ok(template) => template,
            Err(error) => return vec![problem(&error)],
        };
        let mut problems = Vec::new();
        let globals: HashSet<&str> = self.environment.globals().map(|(name, _)| name).collect();
        let mut used: Vec<String> = template.undeclared_variables(true).into_iter().collect();
        used.sort();
        let mut unknown_roots = HashSet::new();
        let mut stand_in_params = params.clone();
        for name in &used {
            let mut parts = name.split('.');
            let root = parts.next().unwrap_or_default();
            if globals.contains(root) {
                continue;
            }
            if !VARIABLES.contains(&root) {
                if unknown_roots.insert(root.to_string()) {
                    problems.push(unknown_variable(root));
                }
                continue;
            }
            if root == "params"
                && let Some(param) = parts.next()
                && !params.contains_key(param)
            {
                stand_in_params.insert(param.to_string(), serde_json::Value::String(String::new()));
                let declared: Vec<&str> = params.keys().map(String::as_str).collect();
                problems.push(TemplateProblem {
                    message: format!("unknown parameter `params.{param}`"),
                    help: Some(
                        suggestion(param, declared.iter().copied()).unwrap_or_else(|| {
                            format!("declare it under `params:` with a default (`{param}: ...`)")
                        }),
                    ),
                });
            }
        }
        let rendering = self.check_by_rendering(&template, text, &stand_in_params, &unknown_roots);
        if problems.is_empty() {
            return rendering;
        }
        // With unknown names stood in for, only unknown filters are still worth saying.
        problems.extend(
            rendering
                .into_iter()
                .filter(|p| p.message.starts_with("unknown template filter")),
        );
        problems
    }

    /// Renders `text` with sample values; an unknown filter is reported, stood in for, and the
    /// rendering tried again, so that every unknown filter is named.
    fn check_by_rendering(
        &self,
        template: &minijinja::Template<'_, '_>,
        text: &str,
        params: &BTreeMap<String, serde_json::Value>,
        unknown: &HashSet<String>,
    ) -> Vec<TemplateProblem> {
        let values = sample_values(params);
        // The common case, a template without problems, needs no copy of the environment.
        if unknown.is_empty() && template.render(values.clone()).is_ok() {
            return Vec::new();
        }
        let mut environment = self.environment.clone();
        for name in unknown {
            environment.add_global(
                name.clone(),
                minijinja::Value::from_function(|_: minijinja::value::Rest<minijinja::Value>| {
                    String::new()
                }),
            );
        }
        let mut problems = Vec::new();
        let mut stand_ins: Vec<String> = Vec::new();
        for _ in 0..16 {
            let Err(error) = environment.render_str(text, values.clone()) else {
                break;
            };
            let unknown_filter = (error.kind() == ErrorKind::UnknownFilter)
                .then(|| error.detail().and_then(filter_name))
                .flatten()
                .filter(|name| !stand_ins.contains(name));
            let Some(name) = unknown_filter else {
                let mut found = problem(&error);
                if found.message.contains("dag_run.conf") || found.message.contains("`conf") {
                    found.help = Some("a run's conf holds only what it was triggered with (`--param`): write `{{ dag_run.conf.name | default(...) }}`, or use `params.name`, which has the declared default".to_string());
                }
                problems.push(found);
                break;
            };
            problems.push(unknown_filter_problem(&name));
            environment.add_filter(
                name.clone(),
                |value: minijinja::Value, _: minijinja::value::Rest<minijinja::Value>| value,
            );
            stand_ins.push(name);
        }
        problems
    }
}

/// An unknown variable, with the closest variable or filter (`ds_addd` → `ds_add`).
fn unknown_variable(root: &str) -> TemplateProblem {
    let help = match did_you_mean(root, VARIABLES.iter().copied().chain(FILTERS)) {
        Some(filter) if FILTERS.contains(&filter) => {
            format!("did you mean the filter `{filter}`? (`{{{{ ds | {filter}(...) }}}}`)")
        }
        Some(variable) => format!("did you mean `{variable}`?"),
        None => format!("known variables: {}", VARIABLES.join(", ")),
    };
    TemplateProblem {
        message: format!("unknown template variable `{root}`"),
        help: Some(help),
    }
}

/// An unknown filter, with the closest of ferry's and Jinja's.
fn unknown_filter_problem(name: &str) -> TemplateProblem {
    let known = FILTERS.iter().copied().chain(JINJA_FILTERS);
    TemplateProblem {
        message: format!("unknown template filter `{name}`"),
        help: Some(suggestion(name, known).unwrap_or_else(|| {
            format!(
                "ferry's filters: {}; and Jinja's built-in filters",
                FILTERS.join(", ")
            )
        })),
    }
}

/// The filter's name in minijinja's "filter x is unknown" detail.
fn filter_name(detail: &str) -> Option<String> {
    detail
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|word| !word.is_empty())
        .find(|word| !matches!(*word, "filter" | "unknown" | "is"))
        .map(str::to_string)
}

/// Jinja's built-in filters, for suggestions.
const JINJA_FILTERS: [&str; 30] = [
    "abs",
    "attr",
    "batch",
    "bool",
    "capitalize",
    "default",
    "dictsort",
    "escape",
    "first",
    "float",
    "indent",
    "int",
    "items",
    "join",
    "last",
    "length",
    "list",
    "lower",
    "map",
    "max",
    "min",
    "replace",
    "reverse",
    "round",
    "safe",
    "select",
    "sort",
    "title",
    "trim",
    "upper",
];

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

/// `{{ macros.ds_format(ds, "%Y-%m-%d", "%d/%m/%Y") }}`: a date read in one format and written
/// in another (Airflow's macro).
fn ds_format(ds: &str, input: &str, output: &str) -> Result<String, Error> {
    let date = NaiveDate::parse_from_str(ds, input).map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("ds_format cannot read `{ds}` as `{input}`"),
        )
    })?;
    let mut out = String::new();
    std::fmt::write(&mut out, format_args!("{}", date.format(output))).map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("ds_format cannot write the format `{output}`"),
        )
    })?;
    Ok(out)
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

    fn messages(problems: &[TemplateProblem]) -> Vec<(String, Option<String>)> {
        problems
            .iter()
            .map(|p| (p.message.clone(), p.help.clone()))
            .collect()
    }

    #[test]
    fn accepts_known_variables_macros_and_declared_params() {
        let templates = Templates::new();
        for text in [
            "load {{ ds }} into {{ params.table }}",
            "no template here",
            "{{ ds | ds_add(-1) }} {{ logical_date | strftime('%Y/%m') }}",
            "{{ prev_ds }} {{ next_ds }} {{ prev_data_interval_start_success }} {{ ts_nodash }}",
            "{{ macros.ds_add(ds, 3) }} {{ macros.ds_format(ds, '%Y-%m-%d', '%d/%m') }}",
            "{{ dag_run.conf.table | default('x') }} {{ dag_run.run_id }}",
        ] {
            assert_eq!(templates.check(text, &params()), Vec::new(), "{text}");
        }
    }

    #[test]
    fn reports_every_unknown_variable_with_a_suggestion() {
        let problems = Templates::new().check(
            "{{ dss }} {{ ds_addd(ds, 1) }} {{ params.tabel }} {{ ds | uper }}",
            &params(),
        );
        assert_eq!(
            messages(&problems),
            [
                (
                    "unknown template variable `ds_addd`".to_string(),
                    Some(
                        "did you mean the filter `ds_add`? (`{{ ds | ds_add(...) }}`)".to_string()
                    )
                ),
                (
                    "unknown template variable `dss`".to_string(),
                    Some("did you mean `ds`?".to_string())
                ),
                (
                    "unknown parameter `params.tabel`".to_string(),
                    Some("did you mean `table`?".to_string())
                ),
                (
                    "unknown template filter `uper`".to_string(),
                    Some("did you mean `upper`?".to_string())
                ),
            ]
        );
    }

    #[test]
    fn reports_every_unknown_filter_and_syntax_errors() {
        let templates = Templates::new();
        let syntax = templates.check("{{ ds ", &params());
        assert_eq!(syntax.len(), 1);
        assert!(
            syntax[0].message.starts_with("template syntax error"),
            "{syntax:?}"
        );
        let filters = templates.check("{{ ds | ds_addd(1) }} {{ ds | uper }}", &params());
        assert_eq!(
            messages(&filters),
            [
                (
                    "unknown template filter `ds_addd`".to_string(),
                    Some("did you mean `ds_add`?".to_string())
                ),
                (
                    "unknown template filter `uper`".to_string(),
                    Some("did you mean `upper`?".to_string())
                ),
            ]
        );
    }

    #[test]
    fn conditions_are_true_false_or_neither() {
        for yes in ["true", "True", " 1 ", "yes"] {
            assert_eq!(truth(yes), Some(true), "{yes}");
        }
        for no in ["false", "False", "0", "no", "", " \n"] {
            assert_eq!(truth(no), Some(false), "{no:?}");
        }
        assert_eq!(truth("2026-11-01"), None);
        let templates = Templates::new();
        assert!(
            templates
                .check_condition("{{ env == 'prod' }}", &params())
                .is_empty()
        );
        let problems = templates.check_condition("{{ ds }}", &params());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].message.contains("`1970-01-01`"), "{problems:?}");
    }

    #[test]
    fn renders_dates_in_the_dag_time_zone() {
        let tokyo: Tz = "Asia/Tokyo".parse().expect("zone");
        let start = DateTime::parse_from_rfc3339("2026-11-23T17:00:00Z")
            .expect("instant")
            .with_timezone(&Utc);
        let params = params();
        let day = chrono::Duration::days(1);
        let conf = serde_json::json!({"table": "users"});
        let context = RunContext {
            dag_id: "daily",
            task_id: "load",
            run_id: "scheduled__2026-11-24",
            run_type: "scheduled",
            data_interval: DataInterval {
                start,
                end: start + day,
            },
            neighbours: (Some(start - day), Some(start + day)),
            previous_success: Some(DataInterval {
                start: start - day * 3,
                end: start - day * 2,
            }),
            timezone: tokyo,
            params: &params,
            conf: &conf,
            environment: "prod",
        };
        let rendered = Templates::new()
            .render(
                "{{ env }}/{{ dag_id }}/{{ ds }}/{{ ds_nodash }}/{{ data_interval_end }}/{{ ds | ds_add(-1) }}/{{ params.table }}",
                &context,
            )
            .expect("renders");
        assert_eq!(
            rendered,
            "prod/daily/2026-11-24/20261124/2026-11-25T02:00:00+09:00/2026-11-23/events"
        );
        let airflow = Templates::new()
            .render(
                "{{ prev_ds }} {{ next_ds }} {{ prev_data_interval_start_success }} {{ ts_nodash }} {{ macros.ds_add(ds, 7) }} {{ macros.ds_format(ds, '%Y-%m-%d', '%d/%m/%Y') }} {{ dag_run.conf.table }}",
                &context,
            )
            .expect("renders");
        assert_eq!(
            airflow,
            "2026-11-23 2026-11-25 2026-11-21T02:00:00+09:00 20261124T020000 2026-12-01 24/11/2026 users"
        );
    }
}
