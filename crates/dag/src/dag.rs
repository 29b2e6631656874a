//! One DAG file read into a checked [`Dag`], with every problem of the file as a diagnostic.
//!
//! The header (every field but `tasks`) and each task are converted on their own, so one bad
//! task does not hide the problems of the others.

use std::any::TypeId;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use chrono::{DateTime, NaiveTime, Utc};
use chrono_tz::Tz;
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::{DeserializeOwned, IgnoredAny};

use crate::diagnostic::{Code, Diagnostic, suggestion};
use crate::duration::Duration;
use crate::graph::TaskGraph;
use crate::node::{self, Node, Position, Value};
use crate::params::Param;
use crate::spec::{AlertsSpec, DagSpec, SlaSpec, TaskBase, TaskSettings, TriggerRule};
use crate::tasks::{TASK_TYPES, TaskKind, is_valid_id};
use crate::template::Templates;
use crate::timetable::{self, Schedule, ScheduleError};

/// Which tree a DAG file lives in; user-facing DAGs follow stricter rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tree {
    /// `dags/internal/` or anywhere else.
    Internal,
    /// `dags/user-facing/`: feeds the product.
    UserFacing,
}

impl Tree {
    /// The tree of a file: user-facing when a folder on its path is named `user-facing`.
    pub fn of(path: &Path) -> Self {
        let user_facing = path
            .parent()
            .into_iter()
            .flat_map(Path::components)
            .any(|component| component.as_os_str() == "user-facing");
        if user_facing {
            Tree::UserFacing
        } else {
            Tree::Internal
        }
    }

    /// `internal` or `user-facing`.
    pub fn as_str(self) -> &'static str {
        match self {
            Tree::Internal => "internal",
            Tree::UserFacing => "user-facing",
        }
    }
}

/// When a run's data must be ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Deadline {
    /// By the first such wall-clock time after the run is due.
    TimeOfDay(NaiveTime),
    /// Within this long of the run being due.
    Within(Duration),
}

/// A DAG's service-level agreement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Sla {
    /// The deadline.
    pub deadline: Deadline,
    /// Warn this long before the deadline.
    pub warn_before: Option<Duration>,
}

/// How a task is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub retries: u32,
    /// Wait before the first retry.
    pub delay: Duration,
    /// Double the wait after each failure.
    pub exponential_backoff: bool,
    /// Longest wait.
    pub max_delay: Duration,
}

/// A checked task.
#[derive(Clone, Debug)]
pub struct Task {
    /// Unique within the DAG.
    pub id: String,
    /// For people.
    pub description: Option<String>,
    /// The type and its fields.
    pub kind: TaskKind,
    /// Ids of upstream tasks.
    pub depends_on: Vec<String>,
    /// When it runs given its upstream tasks' states.
    pub trigger_rule: TriggerRule,
    /// Retries.
    pub retry: RetryPolicy,
    /// Longest an attempt may run.
    pub timeout: Option<Duration>,
    /// Pool whose slots it takes.
    pub pool: String,
    /// Higher first.
    pub priority: i32,
    /// Run only when this renders true (templated); otherwise skipped.
    pub run_if: Option<String>,
    /// Where the task starts in the file.
    pub position: Position,
}

/// A checked DAG, ready to be scheduled.
#[derive(Clone, Debug)]
pub struct Dag {
    /// Unique among all DAGs.
    pub id: String,
    /// The file it was read from.
    pub file: PathBuf,
    /// Internal or user-facing.
    pub tree: Tree,
    /// For people.
    pub description: Option<String>,
    /// Who answers for it.
    pub owner: Option<String>,
    /// Labels.
    pub tags: Vec<String>,
    /// The time zone of its schedule, dates and deadline.
    pub timezone: Tz,
    /// `None` for a DAG that only runs when triggered.
    pub schedule: Option<Schedule>,
    /// Whether the file states a `dst:` policy.
    pub dst_stated: bool,
    /// First data interval.
    pub start_date: Option<DateTime<Utc>>,
    /// No run starts after it.
    pub end_date: Option<DateTime<Utc>>,
    /// Run missed intervals.
    pub catchup: bool,
    /// Concurrent runs.
    pub max_active_runs: u32,
    /// Concurrent tasks per run.
    pub max_active_tasks: u32,
    /// A run still going this long after it started fails.
    pub dagrun_timeout: Option<Duration>,
    /// The parameters that have a default, with it: what a run gets unless triggered with
    /// other values.
    pub params: BTreeMap<String, serde_json::Value>,
    /// Every declared parameter with its type and default (those without a default must be
    /// given when a run is triggered).
    pub param_types: BTreeMap<String, Param>,
    /// Deadline.
    pub sla: Option<Sla>,
    /// Alert channels per event.
    pub alerts: AlertsSpec,
    /// Tasks in file order.
    pub tasks: Vec<Task>,
    /// Dependencies between tasks (indexes into `tasks`).
    pub graph: TaskGraph,
    source: Node,
}

impl Dag {
    /// The task with this id.
    pub fn task(&self, id: &str) -> Option<&Task> {
        self.tasks.iter().find(|task| task.id == id)
    }

    /// Where a dotted field path (`alerts.on_failure.0`, `tasks.2.dag`) is in the file; the
    /// deepest part of it that exists.
    pub fn position_of(&self, path: &str) -> Position {
        self.source.descend(path.split('.')).position
    }

    /// A diagnostic for this DAG at a dotted field path.
    pub fn diagnostic(&self, code: Code, path: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic::error(code, &self.file, self.position_of(path), message).in_dag(&self.id)
    }
}

/// What reading one file gave: the DAG if it has no errors, and every diagnostic.
#[derive(Debug)]
pub struct ParsedFile {
    /// The file.
    pub file: PathBuf,
    /// The DAG's id, when it could be determined.
    pub dag_id: Option<String>,
    /// The checked DAG, when the file has no errors.
    pub dag: Option<Dag>,
    /// Errors and warnings.
    pub diagnostics: Vec<Diagnostic>,
}

/// Reads one DAG file's text.
pub fn parse_dag(file: &Path, text: &str, templates: &Templates) -> ParsedFile {
    let mut reader = Reader {
        file,
        dag_id: None,
        diagnostics: Vec::new(),
    };
    let dag = reader.read(text, templates);
    ParsedFile {
        file: file.to_path_buf(),
        dag_id: reader.dag_id,
        dag: dag.filter(|_| !reader.diagnostics.iter().any(Diagnostic::is_error)),
        diagnostics: reader.diagnostics,
    }
}

struct Reader<'a> {
    file: &'a Path,
    dag_id: Option<String>,
    diagnostics: Vec<Diagnostic>,
}

impl Reader<'_> {
    fn error(
        &mut self,
        code: Code,
        position: Position,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        let mut diagnostic = Diagnostic::error(code, self.file, position, message);
        diagnostic.dag.clone_from(&self.dag_id);
        self.diagnostics.push(diagnostic);
        let last = self.diagnostics.len() - 1;
        &mut self.diagnostics[last]
    }

    fn read(&mut self, text: &str, templates: &Templates) -> Option<Dag> {
        let root = match node::parse(text) {
            Ok(root) => root,
            Err(error) => {
                match error.message.strip_prefix("budget breached: ") {
                    Some(limit) => {
                        self.error(
                            Code::YamlSyntax,
                            error.position,
                            format!("the file is too large for ferry's YAML parser (limit reached: {limit}; at most 250,000 YAML nodes per file)"),
                        )
                        .help = Some("split the DAG into several DAG files (one DAG each) and join them with `wait_for_dag` tasks".to_string());
                    }
                    None => {
                        // The parser reports a tab at the end of the token before it: point at
                        // the tab itself.
                        let (position, help) =
                            place_yaml_error(text, &error.message, error.position);
                        self.error(
                            Code::YamlSyntax,
                            position,
                            format!("invalid YAML: {}", error.message),
                        )
                        .help = help;
                    }
                }
                return None;
            }
        };
        let stem = self
            .file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if root.entries().is_none() {
            let message = if root.value == Value::Null {
                "the file is empty"
            } else {
                "a DAG file must be a mapping of fields (id, schedule, tasks, ...)"
            };
            self.error(Code::InvalidValue, root.position, message)
                .set_help(Some(
                    "start from an example in dags/ or see docs/dags.md".to_string(),
                ));
            return None;
        }
        let declared_id = root.get("id").and_then(Node::as_str).map(str::to_string);
        self.dag_id = Some(declared_id.unwrap_or(stem));
        let header: Option<DagSpec<IgnoredAny>> = self.convert(&root, None, &[]);
        let header = header.map(|spec| self.check_header(&root, spec));
        // Templates are checked with each parameter's default, or a sample of its type.
        let params: BTreeMap<String, serde_json::Value> = header
            .as_ref()
            .map(|h| {
                h.params
                    .iter()
                    .map(|(name, param)| (name.clone(), param.sample()))
                    .collect()
            })
            .unwrap_or_default();
        let defaults = header
            .as_ref()
            .map(|h| h.defaults.clone())
            .unwrap_or_default();
        let tasks = self.read_tasks(&root, &defaults, &params, templates);
        let graph = self.check_graph(&root, &tasks);
        let header = header?;
        Some(Dag {
            id: self.dag_id.clone().unwrap_or_default(),
            file: self.file.to_path_buf(),
            tree: Tree::of(self.file),
            description: header.description,
            owner: header.owner,
            tags: header.tags,
            timezone: header.timezone,
            schedule: header.schedule,
            dst_stated: header.dst_stated,
            start_date: header.start_date,
            end_date: header.end_date,
            catchup: header.catchup,
            max_active_runs: header.max_active_runs,
            max_active_tasks: header.max_active_tasks,
            dagrun_timeout: header.dagrun_timeout,
            params: header
                .params
                .iter()
                .filter_map(|(name, param)| Some((name.clone(), param.default.clone()?)))
                .collect(),
            param_types: header.params,
            sla: header.sla,
            alerts: header.alerts,
            tasks,
            graph,
            source: root,
        })
    }

    /// Converts `node` into `T`, reporting each failure as a diagnostic at the exact field.
    fn convert<T: DeserializeOwned>(
        &mut self,
        node: &Node,
        task: Option<&str>,
        extra_fields: &[&str],
    ) -> Option<T> {
        self.convert_json(node, node.to_json(), task, extra_fields)
    }

    /// Converts `json` (taken from `node`) into `T`. serde stops at the first error, so after
    /// each one the offending top-level field is dropped and the conversion tried again: every
    /// bad field of the part is reported, not only the first.
    fn convert_json<T: DeserializeOwned>(
        &mut self,
        node: &Node,
        mut json: serde_json::Value,
        task: Option<&str>,
        extra_fields: &[&str],
    ) -> Option<T> {
        let mut dropped: Vec<String> = Vec::new();
        for _ in 0..MAX_ERRORS_PER_PART {
            let error = match serde_path_to_error::deserialize::<_, T>(json.clone()) {
                // With fields dropped the value is incomplete, but its other checks still run;
                // the errors already reported keep it from being used.
                Ok(value) => return Some(value),
                Err(error) => error,
            };
            let mut segments: Vec<String> = error
                .path()
                .iter()
                .filter_map(|segment| match segment {
                    serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                    serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                    _ => None,
                })
                .collect();
            let message = error.inner().to_string();
            let message = message
                .split(" at line ")
                .next()
                .unwrap_or(&message)
                .replace("expected u32", "expected a whole number, 0 or more")
                .replace("expected u16", "expected a whole number, 0 or more")
                .replace("expected i32", "expected a whole number");
            let quoted = backticked(&message);
            let first_quoted = quoted.first().copied().unwrap_or_default();
            let unknown_field = message.starts_with("unknown field");
            if unknown_field && segments.last().map(String::as_str) == Some(first_quoted) {
                segments.pop();
            }
            let missing = message.starts_with("missing field");
            if missing && dropped.iter().any(|name| name == first_quoted) {
                // A consequence of dropping a bad required field: already reported.
                return None;
            }
            let at = node.descend(segments.iter().map(String::as_str));
            let mut field = segments.join(".");
            let (code, position, text, help) = if unknown_field {
                let position = at.key(first_quoted).map_or(at.position, |key| key.position);
                let candidates: Vec<&str> = quoted
                    .iter()
                    .skip(1)
                    .copied()
                    .chain(extra_fields.iter().copied())
                    .collect();
                field = join_path(&field, first_quoted);
                let help = suggestion(first_quoted, candidates.iter().copied()).or_else(|| {
                    (!candidates.is_empty())
                        .then(|| format!("known fields here: {}", candidates.join(", ")))
                });
                (
                    Code::UnknownField,
                    position,
                    format!("unknown field `{first_quoted}`"),
                    help,
                )
            } else if missing {
                field = join_path(&field, first_quoted);
                if first_quoted == "type" && task.is_some() {
                    let help = format!("set `type:` to one of: {}", TASK_TYPES.join(", "));
                    (
                        Code::MissingField,
                        at.position,
                        "the task has no `type`".to_string(),
                        Some(help),
                    )
                } else {
                    (
                        Code::MissingField,
                        at.position,
                        format!("missing field `{first_quoted}`"),
                        None,
                    )
                }
            } else if message.starts_with("unknown variant") && task.is_some() && field == "type" {
                let help = suggestion(first_quoted, TASK_TYPES)
                    .unwrap_or_else(|| format!("known task types: {}", TASK_TYPES.join(", ")));
                (
                    Code::UnknownTaskType,
                    at.position,
                    format!("unknown task type `{first_quoted}`"),
                    Some(help),
                )
            } else if message.starts_with("unknown variant") {
                let known: Vec<&str> = quoted.iter().skip(1).copied().collect();
                let help = suggestion(first_quoted, known.iter().copied())
                    .unwrap_or_else(|| format!("use one of: {}", known.join(", ")));
                (
                    Code::InvalidValue,
                    at.position,
                    format!("invalid value `{first_quoted}`"),
                    Some(help),
                )
            } else if message.starts_with("invalid duration") {
                (Code::InvalidDuration, at.position, message.clone(), None)
            } else {
                (Code::InvalidValue, at.position, message.clone(), None)
            };
            let diagnostic = self.error(code, position, text).set_help(help);
            if !field.is_empty() {
                diagnostic.set_field(field.clone());
            }
            if let Some(task) = task {
                diagnostic.task = Some(task.to_string());
            }
            // Drop the offending top-level field and try again, to find the next problem.
            let top = field.split('.').next().unwrap_or_default().to_string();
            match json.as_object_mut().and_then(|object| object.remove(&top)) {
                Some(_) if !missing => dropped.push(top),
                _ => return None,
            }
        }
        None
    }

    fn check_header(&mut self, root: &Node, spec: DagSpec<IgnoredAny>) -> Header {
        let position = |path: &str| root.descend(path.split('.')).position;
        let id = self.dag_id.clone().unwrap_or_default();
        if !is_valid_id(&id) {
            let where_ = if spec.id.is_some() { "id" } else { "" };
            self.error(
                Code::InvalidValue,
                position(where_),
                format!("`{id}` is not a valid DAG id"),
            )
            .set_help(Some(
                "use letters, digits, `_`, `-` and `.`, starting with a letter or digit".into(),
            ));
        }
        let timezone_name = spec.timezone.as_deref().unwrap_or("UTC");
        let timezone = match timetable::parse_timezone(timezone_name) {
            Ok(tz) => tz,
            Err(error) => {
                let help =
                    suggestion(timezone_name, timetable::timezone_names()).unwrap_or_else(|| {
                        "use an IANA name such as `Asia/Tokyo` or `UTC`".to_string()
                    });
                self.error(
                    Code::UnknownTimezone,
                    position("timezone"),
                    error.to_string(),
                )
                .set_help(Some(help))
                .set_field("timezone");
                Tz::UTC
            }
        };
        let dst_stated = spec.dst.is_some();
        let schedule = spec.schedule.as_deref().and_then(|expression| {
            match Schedule::new(expression, timezone, spec.dst.unwrap_or_default()) {
                Ok(schedule) => Some(schedule),
                Err(error) => {
                    let help = match error {
                        ScheduleError::NeverFires { .. } => "check the day-of-month and month fields",
                        _ => "five fields: minute hour day-of-month month day-of-week (`30 2 * * *`), or @hourly, @daily, @weekly, @monthly, @yearly",
                    };
                    self.error(Code::InvalidCron, position("schedule"), error.to_string())
                        .set_help(Some(help.to_string()))
                        .set_field("schedule");
                    None
                }
            }
        });
        let mut date = |field: &str, text: Option<&str>| {
            let text = text?;
            let parsed = timetable::parse_instant(text, timezone);
            if parsed.is_none() {
                self.error(
                    Code::InvalidValue,
                    position(field),
                    format!("`{text}` is not a date"),
                )
                .set_help(Some(
                    "write `2026-01-01` or `2026-01-01T06:00` (in the DAG's time zone)".into(),
                ))
                .set_field(field);
            }
            parsed
        };
        let start_date = date("start_date", spec.start_date.as_deref());
        let end_date = date("end_date", spec.end_date.as_deref());
        if spec.schedule.is_some() && spec.start_date.is_none() {
            self.error(
                Code::MissingField,
                position("schedule"),
                "a scheduled DAG needs a `start_date`",
            )
            .set_help(Some(
                "add `start_date: 2026-01-01`: the first data interval to run".into(),
            ))
            .set_field("start_date");
        }
        if let (Some(start), Some(end)) = (start_date, end_date)
            && end < start
        {
            self.error(
                Code::InvalidValue,
                position("end_date"),
                "`end_date` is before `start_date`",
            )
            .set_field("end_date");
        }
        for (field, value) in [
            ("max_active_runs", spec.max_active_runs),
            ("max_active_tasks", spec.max_active_tasks),
        ] {
            if value == Some(0) {
                self.error(
                    Code::InvalidValue,
                    position(field),
                    format!("`{field}` must be at least 1"),
                )
                .set_field(field);
            }
        }
        let sla = spec.sla.as_ref().and_then(|sla| self.check_sla(root, sla));
        let mut declared = BTreeMap::new();
        for (name, written) in &spec.params {
            match Param::read(written) {
                Ok(param) => {
                    if param.default.is_none() && spec.schedule.is_some() {
                        self.error(
                            Code::InvalidValue,
                            position(&format!("params.{name}")),
                            format!("parameter `{name}` has no default, but scheduled runs are given no parameters"),
                        )
                        .set_help(Some("give it a `default:`".into()))
                        .set_field(format!("params.{name}"));
                    }
                    declared.insert(name.clone(), param);
                }
                Err(why) => {
                    self.error(
                        Code::InvalidValue,
                        position(&format!("params.{name}")),
                        format!("parameter `{name}`: {why}"),
                    )
                    .set_field(format!("params.{name}"));
                }
            }
        }
        for name in spec.params.keys() {
            if !is_valid_identifier(name) {
                self.error(
                    Code::InvalidValue,
                    position(&format!("params.{name}")),
                    format!("`{name}` is not a valid parameter name"),
                )
                .set_help(Some(
                    "use letters, digits and `_`, so templates can write `{{ params.name }}`"
                        .into(),
                ))
                .set_field(format!("params.{name}"));
            }
        }
        Header {
            description: spec.description,
            owner: spec.owner,
            tags: spec.tags,
            timezone,
            schedule,
            dst_stated,
            start_date,
            end_date,
            catchup: spec.catchup,
            max_active_runs: spec.max_active_runs.unwrap_or(1),
            max_active_tasks: spec.max_active_tasks.unwrap_or(16),
            dagrun_timeout: spec.dagrun_timeout,
            params: declared,
            defaults: spec.defaults,
            sla,
            alerts: spec.alerts,
        }
    }

    fn check_sla(&mut self, root: &Node, sla: &SlaSpec) -> Option<Sla> {
        let position = |path: &str| root.descend(path.split('.')).position;
        let deadline = match (&sla.deadline, sla.within) {
            (Some(_), Some(_)) => {
                self.error(
                    Code::InvalidValue,
                    position("sla"),
                    "`sla` takes `deadline` or `within`, not both",
                )
                .set_field("sla");
                return None;
            }
            (None, None) => {
                self.error(
                    Code::MissingField,
                    position("sla"),
                    "`sla` needs `deadline` (\"08:00\") or `within` (4h)",
                )
                .set_field("sla");
                return None;
            }
            (None, Some(within)) => Deadline::Within(within),
            (Some(text), None) => match timetable::parse_time_of_day(text) {
                Some(at) => Deadline::TimeOfDay(at),
                None => {
                    self.error(
                        Code::InvalidValue,
                        position("sla.deadline"),
                        format!("`{text}` is not a time of day"),
                    )
                    .set_help(Some(
                        "write 24-hour `HH:MM` in quotes, e.g. \"08:00\"".into(),
                    ))
                    .set_field("sla.deadline");
                    return None;
                }
            },
        };
        if let (Deadline::Within(within), Some(warn)) = (deadline, sla.warn_before)
            && warn >= within
        {
            self.error(
                Code::InvalidValue,
                position("sla.warn_before"),
                "`warn_before` must be shorter than `within`",
            )
            .set_field("sla.warn_before");
        }
        Some(Sla {
            deadline,
            warn_before: sla.warn_before,
        })
    }

    fn read_tasks(
        &mut self,
        root: &Node,
        defaults: &TaskSettings,
        params: &BTreeMap<String, serde_json::Value>,
        templates: &Templates,
    ) -> Vec<Task> {
        let Some(items) = root.get("tasks").and_then(Node::items) else {
            return Vec::new();
        };
        let base_fields = property_names::<TaskBase>();
        let settings_fields = property_names::<TaskSettings>();
        let common_fields: Vec<&str> = base_fields.iter().chain(settings_fields).copied().collect();
        let mut tasks = Vec::new();
        let mut first_seen: HashMap<String, Position> = HashMap::new();
        for (index, node) in items.iter().enumerate() {
            let Some(entries) = node.entries() else {
                self.error(
                    Code::InvalidValue,
                    node.position,
                    "a task must be a mapping (id, type, ...)",
                )
                .set_field(format!("tasks.{index}"));
                continue;
            };
            let task_id = node.get("id").and_then(Node::as_str).map(str::to_string);
            let label = task_id.clone().unwrap_or_else(|| format!("#{}", index + 1));
            let mut parts = [
                serde_json::Map::new(),
                serde_json::Map::new(),
                serde_json::Map::new(),
            ];
            for (key, value) in entries {
                let part = if base_fields.contains(&key.name.as_str()) {
                    0
                } else if settings_fields.contains(&key.name.as_str()) {
                    1
                } else {
                    2
                };
                parts[part].insert(key.name.clone(), value.to_json());
            }
            let [base, settings, kind] = parts.map(serde_json::Value::Object);
            let reported_before = self.diagnostics.len();
            let base: Option<TaskBase> = self.convert_json(node, base, Some(&label), &[]);
            let settings: Option<TaskSettings> =
                self.convert_json(node, settings, Some(&label), &[]);
            let raw_kind = kind.clone();
            let kind: Option<TaskKind> =
                self.convert_json(node, kind, Some(&label), &common_fields);
            if kind.is_none() {
                // A bad `type` (or a bad field of it) must not hide the templates' problems.
                self.check_raw_templates(node, &raw_kind, &label, params, templates);
            }
            let (Some(common), Some(settings), Some(kind)) = (base, settings, kind) else {
                continue;
            };
            let position = node.position;
            let task_diagnostic = |code: Code, path: &str, message: String| {
                let at = node.descend(path.split('.')).position;
                Diagnostic::error(code, self.file, at, message)
                    .in_task(&common.id)
                    .in_field(path)
            };
            let mut found = Vec::new();
            if !is_valid_id(&common.id) {
                found.push(
                    task_diagnostic(
                        Code::InvalidValue,
                        "id",
                        format!("`{}` is not a valid task id", common.id),
                    )
                    .with_help(
                        "use letters, digits, `_`, `-` and `.`, starting with a letter or digit",
                    ),
                );
            }
            if let Some(first) = first_seen.get(&common.id) {
                found.push(task_diagnostic(
                    Code::DuplicateId,
                    "id",
                    format!(
                        "task id `{}` is already used by the task at line {}",
                        common.id, first.line
                    ),
                ));
            } else {
                first_seen.insert(common.id.clone(), position);
            }
            // The type's own checks would only echo a field already reported as malformed.
            let converted_cleanly = self.diagnostics.len() == reported_before;
            for problem in kind.problems().into_iter().filter(|_| converted_cleanly) {
                found.push(
                    task_diagnostic(problem.code, &problem.field, problem.message)
                        .with_help_opt(problem.help),
                );
            }
            for (field, text) in kind.templates() {
                for problem in templates.check(text, params) {
                    found.push(
                        task_diagnostic(Code::Template, &field, problem.message)
                            .with_help_opt(problem.help),
                    );
                }
            }
            if let Some(condition) = &common.run_if {
                for problem in templates.check_condition(condition, params) {
                    found.push(
                        task_diagnostic(Code::Template, "run_if", problem.message)
                            .with_help_opt(problem.help),
                    );
                }
            }
            for mut diagnostic in found {
                diagnostic.dag.clone_from(&self.dag_id);
                self.diagnostics.push(diagnostic);
            }
            tasks.push(resolve_task(common, settings, kind, defaults, position));
        }
        tasks
    }

    /// Checks every templated text among the fields of a task whose type could not be read.
    fn check_raw_templates(
        &mut self,
        node: &Node,
        fields: &serde_json::Value,
        label: &str,
        params: &BTreeMap<String, serde_json::Value>,
        templates: &Templates,
    ) {
        let mut texts = Vec::new();
        collect_texts(fields, String::new(), &mut texts);
        for (path, text) in texts {
            for problem in templates.check(text, params) {
                let at = node.descend(path.split('.')).position;
                let mut diagnostic =
                    Diagnostic::error(Code::Template, self.file, at, problem.message)
                        .in_task(label)
                        .in_field(path.clone())
                        .with_help_opt(problem.help);
                diagnostic.dag.clone_from(&self.dag_id);
                self.diagnostics.push(diagnostic);
            }
        }
    }

    fn check_graph(&mut self, root: &Node, tasks: &[Task]) -> TaskGraph {
        let index_of: HashMap<&str, usize> = tasks
            .iter()
            .enumerate()
            .rev()
            .map(|(i, task)| (task.id.as_str(), i))
            .collect();
        let task_nodes = root.get("tasks").and_then(Node::items).unwrap_or_default();
        let mut edges = Vec::new();
        for (downstream, task) in tasks.iter().enumerate() {
            let node = task_nodes.iter().find(|n| n.position == task.position);
            for (position_in_list, upstream) in task.depends_on.iter().enumerate() {
                let at = node.map_or(task.position, |n| {
                    n.descend(["depends_on", &position_in_list.to_string()])
                        .position
                });
                match index_of.get(upstream.as_str()) {
                    Some(&upstream_index) => edges.push((upstream_index, downstream)),
                    None => {
                        let help = suggestion(upstream, tasks.iter().map(|t| t.id.as_str()));
                        let diagnostic = self
                            .error(
                                Code::UnknownDependency,
                                at,
                                format!("depends on `{upstream}`, which is not a task of this DAG"),
                            )
                            .set_help(help);
                        diagnostic.task = Some(task.id.clone());
                        diagnostic.field = Some("depends_on".into());
                    }
                }
            }
        }
        let graph = TaskGraph::new(tasks.len(), edges);
        for cycle in graph.cycles() {
            let names: Vec<&str> = cycle.iter().map(|&i| tasks[i].id.as_str()).collect();
            let first = &tasks[cycle[0]];
            let diagnostic = self
                .error(
                    Code::Cycle,
                    first.position,
                    format!("dependency cycle: {} → {}", names.join(" → "), names[0]),
                )
                .set_help(Some("remove one of these `depends_on` entries".into()));
            diagnostic.task = Some(first.id.clone());
        }
        graph
    }
}

/// Where a YAML error really is, and what to do. The parser reports a tab at the end of the
/// token before it, and a badly indented key at its colon: point at the tab, or at the start of
/// the badly indented line.
fn place_yaml_error(text: &str, message: &str, at: Position) -> (Position, Option<String>) {
    if message.contains("tab")
        && let Some(tab) = first_tab_from(text, at)
    {
        return (
            tab,
            Some("YAML indents with spaces only: replace this tab with spaces".to_string()),
        );
    }
    if message.contains("mapping values are not allowed") {
        let line = usize::try_from(at.line.max(1)).unwrap_or(1) - 1;
        if let Some(content) = text.lines().nth(line) {
            let indent = content.chars().take_while(|c| *c == ' ').count();
            return (
                Position {
                    line: at.line,
                    column: u32::try_from(indent + 1).unwrap_or(1),
                },
                Some("this line's indentation does not line up with the lines above it (or a value with `: ` in it needs quotes)".to_string()),
            );
        }
    }
    (at, None)
}

/// The first tab in `text` at or after `from`.
fn first_tab_from(text: &str, from: Position) -> Option<Position> {
    let first_line = usize::try_from(from.line.max(1)).ok()? - 1;
    text.lines()
        .enumerate()
        .skip(first_line)
        .find_map(|(index, line)| {
            let skip = if index == first_line {
                usize::try_from(from.column.max(1)).ok()? - 1
            } else {
                0
            };
            line.chars()
                .enumerate()
                .skip(skip)
                .find(|(_, c)| *c == '\t')
                .map(|(column, _)| Position {
                    line: u32::try_from(index + 1).unwrap_or(u32::MAX),
                    column: u32::try_from(column + 1).unwrap_or(u32::MAX),
                })
        })
}

/// Every string in `value` with its dotted path (`env.TABLE`, `argv.1`).
fn collect_texts<'a>(value: &'a serde_json::Value, path: String, out: &mut Vec<(String, &'a str)>) {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        serde_json::Value::String(text) => out.push((path, text)),
        serde_json::Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                collect_texts(item, join(&index.to_string()), out);
            }
        }
        serde_json::Value::Object(fields) => {
            for (key, item) in fields {
                if key != "type" {
                    collect_texts(item, join(key), out);
                }
            }
        }
        _ => {}
    }
}

/// The most problems reported for the header or for one task.
const MAX_ERRORS_PER_PART: usize = 32;

/// In-place amendments of a diagnostic already reported.
trait Amend {
    fn set_help(&mut self, help: Option<String>) -> &mut Self;
    fn set_field(&mut self, field: impl Into<String>) -> &mut Self;
}

impl Amend for Diagnostic {
    fn set_help(&mut self, help: Option<String>) -> &mut Self {
        if help.is_some() {
            self.help = help;
        }
        self
    }

    fn set_field(&mut self, field: impl Into<String>) -> &mut Self {
        self.field = Some(field.into());
        self
    }
}

struct Header {
    description: Option<String>,
    owner: Option<String>,
    tags: Vec<String>,
    timezone: Tz,
    schedule: Option<Schedule>,
    dst_stated: bool,
    start_date: Option<DateTime<Utc>>,
    end_date: Option<DateTime<Utc>>,
    catchup: bool,
    max_active_runs: u32,
    max_active_tasks: u32,
    dagrun_timeout: Option<Duration>,
    params: BTreeMap<String, Param>,
    defaults: TaskSettings,
    sla: Option<Sla>,
    alerts: AlertsSpec,
}

fn resolve_task(
    common: TaskBase,
    own: TaskSettings,
    kind: TaskKind,
    defaults: &TaskSettings,
    position: Position,
) -> Task {
    Task {
        id: common.id,
        description: common.description,
        kind,
        depends_on: common.depends_on,
        trigger_rule: own
            .trigger_rule
            .or(defaults.trigger_rule)
            .unwrap_or_default(),
        retry: RetryPolicy {
            retries: own.retries.or(defaults.retries).unwrap_or(0),
            delay: own
                .retry_delay
                .or(defaults.retry_delay)
                .unwrap_or(Duration::from_secs(300)),
            exponential_backoff: own
                .retry_exponential_backoff
                .or(defaults.retry_exponential_backoff)
                .unwrap_or(false),
            max_delay: own
                .max_retry_delay
                .or(defaults.max_retry_delay)
                .unwrap_or(Duration::from_secs(3600)),
        },
        timeout: own.timeout.or(defaults.timeout),
        pool: own
            .pool
            .or_else(|| defaults.pool.clone())
            .unwrap_or_else(|| "default".to_string()),
        priority: own.priority.or(defaults.priority).unwrap_or(1),
        run_if: common.run_if,
        position,
    }
}

/// The names of the top-level fields of a struct, from its JSON Schema (computed once per type).
fn property_names<T: JsonSchema + 'static>() -> &'static [&'static str] {
    static NAMES: OnceLock<Mutex<HashMap<TypeId, &'static [&'static str]>>> = OnceLock::new();
    let mut cache = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    cache.entry(TypeId::of::<T>()).or_insert_with(|| {
        let schema = schemars::schema_for!(T);
        let names: Vec<&'static str> = schema
            .get("properties")
            .and_then(serde_json::Value::as_object)
            .map(|properties| {
                properties
                    .keys()
                    .map(|k| &*Box::leak(k.clone().into_boxed_str()))
                    .collect()
            })
            .unwrap_or_default();
        Box::leak(names.into_boxed_slice())
    })
}

fn is_valid_identifier(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn join_path(prefix: &str, field: &str) -> String {
    match (prefix.is_empty(), field.is_empty()) {
        (true, _) => field.to_string(),
        (_, true) => prefix.to_string(),
        _ => format!("{prefix}.{field}"),
    }
}

/// The words between backticks in a serde message, in order.
fn backticked(message: &str) -> Vec<&str> {
    message.split('`').skip(1).step_by(2).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ParsedFile {
        parse_dag(
            Path::new("dags/internal/sample.yaml"),
            text,
            &Templates::new(),
        )
    }

    fn messages(parsed: &ParsedFile) -> Vec<String> {
        parsed
            .diagnostics
            .iter()
            .map(|d| format!("{}:{} {}", d.line, d.column, d.message))
            .collect()
    }

    #[test]
    fn reads_a_complete_dag() {
        let parsed = parse(concat!(
            "description: demo\nschedule: '0 2 * * *'\ntimezone: Asia/Tokyo\nstart_date: 2026-11-01\n",
            "defaults: {retries: 2}\nparams: {table: events}\ntasks:\n",
            "  - id: a\n    type: command\n    command: echo {{ ds }} {{ params.table }}\n",
            "  - id: b\n    type: noop\n    depends_on: [a]\n    retries: 0\n",
        ));
        assert_eq!(messages(&parsed), Vec::<String>::new());
        let dag = parsed.dag.expect("valid");
        assert_eq!(dag.id, "sample");
        assert_eq!(dag.tasks[0].retry.retries, 2);
        assert_eq!(dag.tasks[1].retry.retries, 0);
        assert_eq!(dag.graph.edges(), [(0, 1)]);
        assert_eq!(dag.max_active_runs, 1);
    }

    #[test]
    fn reports_problems_of_every_task() {
        let parsed = parse(
            "tasks:\n  - id: a\n    type: command\n    comand: x\n  - id: b\n    type: bash\n  - id: c\n    type: noop\n    retry_delay: 5 minuts\n",
        );
        assert_eq!(
            messages(&parsed),
            [
                "4:5 unknown field `comand`",
                "6:11 unknown task type `bash`",
                "9:18 invalid duration `5 minuts`: unknown time unit \"minuts\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations) (write e.g. `30s`, `5m`, `1h30m`, `2d`)"
            ]
        );
        assert_eq!(
            parsed.diagnostics[0].help.as_deref(),
            Some("did you mean `command`?")
        );
        assert_eq!(
            parsed.diagnostics[1].help.as_deref(),
            Some(
                "known task types: bigquery_partition, command, glue_job, glue_run, http, noop, query, reverse_sync, s3_object, sql_check, stepfunctions, transfer, wait_for_dag"
            )
        );
        assert!(parsed.dag.is_none());
    }

    #[test]
    fn reports_unknown_dependencies_and_cycles() {
        let parsed = parse(
            "tasks:\n  - {id: a, type: noop, depends_on: [c]}\n  - {id: b, type: noop, depends_on: [a, extrat]}\n  - {id: c, type: noop, depends_on: [b]}\n  - {id: extract, type: noop}\n",
        );
        assert_eq!(
            messages(&parsed),
            [
                "3:41 depends on `extrat`, which is not a task of this DAG",
                "2:5 dependency cycle: a → b → c → a"
            ]
        );
        assert_eq!(
            parsed.diagnostics[0].help.as_deref(),
            Some("did you mean `extract`?")
        );
    }

    #[test]
    fn checks_header_fields() {
        let parsed = parse(
            "schedule: '0 25 * * *'\ntimezone: Asia/Tokio\nschedual: x\nsla: {deadline: '8am'}\ntasks: []\n",
        );
        let codes: Vec<_> = parsed.diagnostics.iter().map(|d| d.code).collect();
        assert_eq!(
            codes,
            [
                Code::UnknownField,
                Code::UnknownTimezone,
                Code::InvalidCron,
                Code::MissingField,
                Code::InvalidValue
            ]
        );
        assert_eq!(
            parsed.diagnostics[0].help.as_deref(),
            Some("did you mean `schedule`?")
        );
        assert_eq!(
            parsed.diagnostics[1].help.as_deref(),
            Some("did you mean `Asia/Tokyo`?")
        );
    }

    #[test]
    fn reports_duplicate_task_ids_and_template_errors() {
        let parsed = parse(
            "tasks:\n  - {id: a, type: noop}\n  - id: a\n    type: command\n    command: echo {{ params.missing }}\n",
        );
        assert_eq!(
            messages(&parsed),
            [
                "3:9 task id `a` is already used by the task at line 2",
                "5:14 unknown parameter `params.missing`"
            ]
        );
    }

    #[test]
    fn tree_follows_the_folder() {
        assert_eq!(
            Tree::of(Path::new("dags/user-facing/a.yaml")),
            Tree::UserFacing
        );
        assert_eq!(Tree::of(Path::new("dags/internal/a.yaml")), Tree::Internal);
        assert_eq!(Tree::of(Path::new("elsewhere/a.yaml")), Tree::Internal);
    }
}
