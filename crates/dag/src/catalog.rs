//! All DAG files of some folders, read and checked together: the checks that span files
//! (duplicate ids, `wait_for_dag` targets, the rules of `dags/user-facing/`, alert channels) and
//! the daylight-saving warnings.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};

use crate::dag::{Dag, ParsedFile, Tree, parse_dag};
use crate::diagnostic::{Code, Diagnostic, Severity, suggestion};
use crate::node::Position;
use crate::template::Templates;
use crate::timetable::{DstEncounter, DstKind, GapPolicy, OverlapPolicy};

/// What the checks need from outside the DAG files.
#[derive(Clone, Debug)]
pub struct CatalogOptions {
    /// The alert channels defined in the configuration; every channel a DAG names must be one.
    pub channels: BTreeSet<String>,
    /// The pools defined in the configuration (`default` always exists); every pool a task
    /// names must be one.
    pub pools: BTreeSet<String>,
    /// The connections of the environment in effect, with their kinds (`sqlite`, `postgres`,
    /// ...); every connection a task names must be one, of a kind its type can use.
    pub connections: BTreeMap<String, String>,
    /// The environment in effect, for messages.
    pub environment: String,
    /// "Now", for the daylight-saving look-ahead.
    pub now: DateTime<Utc>,
}

/// The DAGs of some folders and everything found wrong with them.
#[derive(Debug, Default)]
pub struct Catalog {
    /// DAGs without errors, by id.
    pub dags: BTreeMap<String, Dag>,
    /// Every file read, in path order.
    pub files: Vec<PathBuf>,
    /// Folders and files that could not be read: the DAGs already loaded from there keep
    /// their last valid version.
    pub unreadable: Vec<PathBuf>,
    /// Every error and warning, by file and line.
    pub diagnostics: Vec<Diagnostic>,
}

impl Catalog {
    /// True if any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// Diagnostics of the given severity.
    pub fn count(&self, severity: Severity) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == severity)
            .count()
    }
}

/// The largest DAG file ferry reads.
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// The DAG files under some paths, and what could not be read there.
#[derive(Debug, Default)]
pub struct Discovery {
    /// DAG files, in path order; a file reached through several links appears once.
    pub files: Vec<PathBuf>,
    /// Folders and files that could not be read (each also has a diagnostic).
    pub unreadable: Vec<PathBuf>,
    /// What went wrong, each with its own path.
    pub diagnostics: Vec<Diagnostic>,
}

/// The DAG files under `paths`: `.yaml` and `.yml` files in each folder (recursively, in path
/// order, following symbolic links with loop detection) and each file named directly. Every
/// entry that cannot be read gives a diagnostic naming it, and the walk goes on.
pub fn discover(paths: &[PathBuf]) -> Discovery {
    let mut found = BTreeSet::new();
    let mut seen_real = BTreeSet::new();
    let mut discovery = Discovery::default();
    for path in paths {
        for entry in walkdir::WalkDir::new(path)
            .follow_links(true)
            .sort_by_file_name()
        {
            match entry {
                Ok(entry) => {
                    let file = entry.path();
                    let is_dag = entry.file_type().is_file()
                        && file
                            .extension()
                            .is_some_and(|ext| ext == "yaml" || ext == "yml");
                    // A file reached through several links is read once.
                    let identity = entry.metadata().ok().map(|meta| {
                        use std::os::unix::fs::MetadataExt as _;
                        (meta.dev(), meta.ino())
                    });
                    if (is_dag || entry.depth() == 0 && entry.file_type().is_file())
                        && identity.is_none_or(|identity| seen_real.insert(identity))
                    {
                        found.insert(file.to_path_buf());
                    }
                }
                Err(error) => {
                    let at = error.path().unwrap_or(path).to_path_buf();
                    if let Some(ancestor) = error.loop_ancestor() {
                        discovery.diagnostics.push(Diagnostic::warning(
                            Code::Io,
                            &at,
                            Position::default(),
                            format!(
                                "`{}` is a symbolic link back to `{}` (a loop); not followed",
                                at.display(),
                                ancestor.display()
                            ),
                        ));
                        continue;
                    }
                    let why = error
                        .io_error()
                        .map_or_else(|| error.to_string(), ToString::to_string);
                    discovery.diagnostics.push(Diagnostic::error(
                        Code::Io,
                        &at,
                        Position::default(),
                        format!("cannot read `{}`: {why}", at.display()),
                    ).with_help("the DAGs elsewhere are still loaded; a DAG already loaded from here keeps its last valid version"));
                    discovery.unreadable.push(at);
                }
            }
        }
    }
    discovery.files = found.into_iter().collect();
    discovery
}

/// Reads and checks every DAG file under `paths`.
pub fn load(paths: &[PathBuf], options: &CatalogOptions) -> Catalog {
    let Discovery {
        files,
        unreadable,
        mut diagnostics,
    } = discover(paths);
    let parsed = read_all(&files);
    let mut catalog = check_together(parsed, options);
    diagnostics.append(&mut catalog.diagnostics);
    diagnostics.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    catalog.diagnostics = diagnostics;
    catalog.files = files;
    catalog.unreadable = unreadable;
    catalog
}

/// Reads and parses `files` on every core; the result keeps the order of `files`.
fn read_all(files: &[PathBuf]) -> Vec<ParsedFile> {
    let templates = Templates::new();
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let chunk = files.len().div_ceil(workers).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                scope.spawn(|| {
                    part.iter()
                        .map(|file| read_one(file, &templates))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

fn read_one(file: &Path, templates: &Templates) -> ParsedFile {
    let unreadable = |message: String, help: Option<&str>| {
        let mut diagnostic = Diagnostic::error(Code::Io, file, Position::default(), message);
        if let Some(help) = help {
            diagnostic = diagnostic.with_help(help);
        }
        ParsedFile {
            file: file.to_path_buf(),
            dag_id: None,
            dag: None,
            diagnostics: vec![diagnostic],
        }
    };
    if let Ok(meta) = std::fs::metadata(file)
        && meta.len() > MAX_FILE_BYTES
    {
        return unreadable(
            format!(
                "the file is {:.1} MiB; ferry reads DAG files of at most {} MiB",
                meta.len() as f64 / 1_048_576.0,
                MAX_FILE_BYTES / 1_048_576
            ),
            Some(
                "split the DAG into several DAG files (one DAG each) and join them with `wait_for_dag` tasks",
            ),
        );
    }
    match std::fs::read_to_string(file) {
        Ok(text) => parse_dag(file, &text, templates),
        Err(error) => unreadable(
            format!("cannot read `{}`: {error}", file.display()),
            Some("a DAG already loaded from this file keeps its last valid version"),
        ),
    }
}

/// The checks that span files, over files already read one by one.
pub fn check_together(parsed: Vec<ParsedFile>, options: &CatalogOptions) -> Catalog {
    let mut diagnostics = Vec::new();
    let mut first_file_of: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut candidates = Vec::new();
    for file in parsed {
        diagnostics.extend(file.diagnostics);
        let Some(id) = file.dag_id else { continue };
        if let Some(first) = first_file_of.get(&id) {
            diagnostics.push(
                Diagnostic::error(
                    Code::DuplicateId,
                    &file.file,
                    Position { line: 1, column: 1 },
                    format!("DAG id `{id}` is already used by {}", first.display()),
                )
                .in_dag(&id)
                .with_help("give each DAG its own `id` (it defaults to the file name)"),
            );
            continue;
        }
        first_file_of.insert(id, file.file.clone());
        candidates.extend(file.dag);
    }
    let known_ids: Vec<&str> = first_file_of.keys().map(String::as_str).collect();
    let by_id: BTreeMap<&str, &Dag> = candidates
        .iter()
        .map(|dag| (dag.id.as_str(), dag))
        .collect();
    let mut rejected = BTreeSet::new();
    for dag in &candidates {
        let mut found = Vec::new();
        check_channels(dag, &options.channels, &mut found);
        check_pools(dag, &options.pools, &mut found);
        check_connections(dag, options, &mut found);
        check_policy(dag, &mut found);
        check_waits(dag, &by_id, &known_ids, &mut found);
        check_dst(dag, options.now, &mut found);
        if found.iter().any(Diagnostic::is_error) {
            rejected.insert(dag.id.clone());
        }
        diagnostics.extend(found);
    }
    let dags = candidates
        .into_iter()
        .filter(|dag| !rejected.contains(&dag.id))
        .map(|dag| (dag.id.clone(), dag))
        .collect();
    Catalog {
        dags,
        files: Vec::new(),
        unreadable: Vec::new(),
        diagnostics,
    }
}

fn check_channels(dag: &Dag, channels: &BTreeSet<String>, found: &mut Vec<Diagnostic>) {
    for (event, names) in dag.alerts.events() {
        for (index, name) in names.iter().enumerate() {
            if !channels.contains(name) {
                let help =
                    suggestion(name, channels.iter().map(String::as_str)).unwrap_or_else(|| {
                        format!(
                            "define it under [alerts.channels.{name}] in ferry.toml (defined: {})",
                            channels
                                .iter()
                                .map(String::as_str)
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    });
                found.push(
                    dag.diagnostic(
                        Code::UnknownChannel,
                        &format!("alerts.{event}.{index}"),
                        format!("alert channel `{name}` is not defined in the configuration"),
                    )
                    .in_field(format!("alerts.{event}"))
                    .with_help(help),
                );
            }
        }
    }
}

/// Every task's pool is `default` or one defined under `[engine.pools]`.
fn check_pools(dag: &Dag, pools: &BTreeSet<String>, found: &mut Vec<Diagnostic>) {
    let known: Vec<&str> = std::iter::once(DEFAULT_POOL)
        .chain(pools.iter().map(String::as_str))
        .collect();
    for (index, task) in dag.tasks.iter().enumerate() {
        if known.contains(&task.pool.as_str()) {
            continue;
        }
        let help = suggestion(&task.pool, known.iter().copied()).unwrap_or_else(|| {
            format!(
                "define it under [engine.pools] in ferry.toml (`{} = 4`); defined: {}",
                task.pool,
                known.join(", ")
            )
        });
        // Set on the task, or inherited from the DAG's `defaults:`.
        let path = if dag.position_of(&format!("tasks.{index}.pool"))
            == dag.position_of(&format!("tasks.{index}"))
        {
            "defaults.pool".to_string()
        } else {
            format!("tasks.{index}.pool")
        };
        found.push(
            dag.diagnostic(
                Code::UnknownPool,
                &path,
                format!("pool `{}` is not defined in the configuration", task.pool),
            )
            .in_task(task.id.clone())
            .in_field("pool")
            .with_help(help),
        );
    }
}

/// Every connection a task names exists in the environment in effect and has a kind the
/// task's type can use.
fn check_connections(dag: &Dag, options: &CatalogOptions, found: &mut Vec<Diagnostic>) {
    for (index, task) in dag.tasks.iter().enumerate() {
        for (field, name, kinds) in task.kind.connections() {
            let path = format!("tasks.{index}.{field}");
            match options.connections.get(name) {
                None => {
                    let known: Vec<&str> = options.connections.keys().map(String::as_str).collect();
                    let help = suggestion(name, known.iter().copied()).unwrap_or_else(|| {
                    format!(
                        "define it under [environments.{}.connections.{name}] in ferry.toml (defined: {})",
                        options.environment,
                        if known.is_empty() { "none".to_string() } else { known.join(", ") }
                    )
                });
                    found.push(
                        dag.diagnostic(
                            Code::UnknownConnection,
                            &path,
                            format!(
                                "connection `{name}` is not defined in the environment `{}`",
                                options.environment
                            ),
                        )
                        .in_task(task.id.clone())
                        .in_field(field)
                        .with_help(help),
                    );
                }
                Some(kind) if !kinds.contains(&kind.as_str()) => {
                    found.push(
                    dag.diagnostic(
                        Code::InvalidValue,
                        &path,
                        format!(
                            "connection `{name}` is {} {kind} connection; a `{}` task runs on {}",
                            if kind.starts_with('a') { "an" } else { "a" },
                            task.kind.type_name(),
                            kinds.join(", ")
                        ),
                    )
                    .in_task(task.id.clone())
                    .in_field(field),
                );
                }
                Some(_) => {}
            }
        }
    }
}

/// The pool of tasks that name none.
pub const DEFAULT_POOL: &str = "default";

/// `dags/user-facing/` rules: an owner, an SLA, failure and SLA-miss alerts.
fn check_policy(dag: &Dag, found: &mut Vec<Diagnostic>) {
    if dag.tree != Tree::UserFacing {
        return;
    }
    let mut rule = |missing: bool, field: &str, message: &str, help: &str| {
        if missing {
            found.push(
                dag.diagnostic(
                    Code::Policy,
                    "id",
                    format!("user-facing DAGs must {message}"),
                )
                .in_field(field)
                .with_help(help),
            );
        }
    };
    rule(
        dag.owner.is_none(),
        "owner",
        "declare an `owner`",
        "add `owner: <team>` so alerts reach someone",
    );
    rule(
        dag.sla.is_none(),
        "sla",
        "declare an `sla`",
        "add `sla: {deadline: \"08:00\"}` (or `within: 4h`)",
    );
    rule(
        dag.alerts.on_failure.is_empty(),
        "alerts.on_failure",
        "alert `on_failure`",
        "add `alerts: {on_failure: [<channel>]}`",
    );
    rule(
        dag.alerts.on_sla_miss.is_empty(),
        "alerts.on_sla_miss",
        "alert `on_sla_miss`",
        "add `alerts: {on_sla_miss: [<channel>]}`",
    );
}

fn check_waits(
    dag: &Dag,
    by_id: &BTreeMap<&str, &Dag>,
    known_ids: &[&str],
    found: &mut Vec<Diagnostic>,
) {
    for (index, task) in dag.tasks.iter().enumerate() {
        let Some(wait) = task.kind.waits_for() else {
            continue;
        };
        let field = format!("tasks.{index}.dag");
        let at = |code: Code, message: String| {
            dag.diagnostic(code, &field, message)
                .in_task(&task.id)
                .in_field("dag")
        };
        if !known_ids.contains(&wait.dag.as_str()) {
            found.push(
                at(
                    Code::UnknownDependency,
                    format!("waits for DAG `{}`, which does not exist", wait.dag),
                )
                .with_help_opt(suggestion(&wait.dag, known_ids.iter().copied())),
            );
            continue;
        }
        // A target whose file has errors is reported in its own file.
        let Some(target) = by_id.get(wait.dag.as_str()) else {
            continue;
        };
        if let Some(task_id) = &wait.task
            && target.task(task_id).is_none()
        {
            found.push(
                at(
                    Code::UnknownDependency,
                    format!("DAG `{}` has no task `{task_id}`", wait.dag),
                )
                .in_field("task")
                .with_help_opt(suggestion(
                    task_id,
                    target.tasks.iter().map(|t| t.id.as_str()),
                )),
            );
        }
        if dag.tree == Tree::UserFacing && target.tree != Tree::UserFacing {
            found.push(
                at(
                    Code::Policy,
                    format!(
                        "user-facing DAGs may only wait for user-facing DAGs, and `{}` is internal",
                        wait.dag
                    ),
                )
                .with_help(format!(
                    "move `{}` to dags/user-facing/ (and meet its rules)",
                    wait.dag
                )),
            );
        }
        let interval = |d: &Dag| {
            d.schedule
                .as_ref()
                .map(|s| (s.expression().to_string(), s.timezone()))
        };
        if interval(dag) != interval(target) {
            let mut warning = at(
                Code::IntervalMismatch,
                format!(
                    "DAG `{}` has another schedule or time zone, so it may have no run for this DAG's data intervals",
                    wait.dag
                ),
            )
            .with_help("give both DAGs the same `schedule` and `timezone`");
            warning.severity = Severity::Warning;
            found.push(warning);
        }
    }
}

/// How far ahead daylight-saving encounters are looked for.
pub const DST_HORIZON: Duration = Duration::days(366);

/// Warns when the schedule meets a daylight-saving gap or overlap within a year and the DAG
/// does not state its `dst` policy.
fn check_dst(dag: &Dag, now: DateTime<Utc>, found: &mut Vec<Diagnostic>) {
    let Some(schedule) = &dag.schedule else {
        return;
    };
    if dag.dst_stated {
        return;
    }
    let encounters = schedule.dst_encounters(now, now + DST_HORIZON);
    let Some(first) = encounters.first() else {
        return;
    };
    let mut warning = dag
        .diagnostic(
            Code::Dst,
            "schedule",
            format!(
                "schedule `{}` meets daylight saving in {} {} time(s) in the next year; first: {}",
                schedule.expression(),
                schedule.timezone(),
                encounters.len(),
                describe_encounter(first, dag),
            ),
        )
        .in_field("schedule")
        .with_help("state the policy to silence this: `dst: {gap: shift, overlap: first}` (or `skip` / `last`)");
    warning.severity = Severity::Warning;
    found.push(warning);
}

/// One line on what happens to `dag` at a daylight-saving encounter, under its policy.
pub fn describe_encounter(encounter: &DstEncounter, dag: &Dag) -> String {
    let day = encounter.scheduled.format("%Y-%m-%d");
    let time = encounter.scheduled.format("%H:%M");
    let (from, to) = (
        encounter.window_start.format("%H:%M"),
        encounter.window_end.format("%H:%M"),
    );
    let dst = dag.schedule.as_ref().map(|s| s.dst()).unwrap_or_default();
    match encounter.kind {
        DstKind::Gap => match (dst.gap, encounter.runs_at) {
            (GapPolicy::Shift, Some(at)) => format!(
                "{time} on {day} does not exist ({from}–{to} is skipped); it runs at {}",
                at.with_timezone(&dag.timezone).format("%H:%M")
            ),
            _ => {
                format!("{time} on {day} does not exist ({from}–{to} is skipped); it does not run")
            }
        },
        DstKind::Overlap => {
            let which = match dst.overlap {
                OverlapPolicy::First => "first",
                OverlapPolicy::Last => "last",
            };
            format!(
                "{time} on {day} happens twice ({from}–{to} repeats); it runs once, at the {which}"
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_loops_are_reported_once_and_linked_files_read_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let dags = dir.path().join("dags");
        std::fs::create_dir_all(dags.join("team")).expect("folders");
        std::fs::write(dags.join("team/a.yaml"), "tasks: []\n").expect("file");
        std::os::unix::fs::symlink(&dags, dags.join("team/loop")).expect("loop");
        std::os::unix::fs::symlink(dags.join("team/a.yaml"), dags.join("alias.yaml"))
            .expect("alias");
        let found = discover(std::slice::from_ref(&dags));
        assert_eq!(
            found.files,
            [dags.join("alias.yaml")],
            "one file, read once"
        );
        assert!(found.unreadable.is_empty());
        assert_eq!(found.diagnostics.len(), 1, "{:?}", found.diagnostics);
        let loop_warning = &found.diagnostics[0];
        assert!(!loop_warning.is_error());
        assert!(
            loop_warning.message.contains("team/loop"),
            "{}",
            loop_warning.message
        );
    }

    #[test]
    fn a_missing_folder_is_named_and_the_others_are_still_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let good = dir.path().join("good");
        std::fs::create_dir_all(&good).expect("folder");
        std::fs::write(good.join("a.yaml"), "tasks: []\n").expect("file");
        let missing = dir.path().join("missing");
        let found = discover(&[missing.clone(), good.clone()]);
        assert_eq!(found.files, [good.join("a.yaml")]);
        assert_eq!(found.unreadable, std::slice::from_ref(&missing));
        assert!(
            found.diagnostics[0]
                .message
                .contains(&missing.display().to_string())
        );
    }

    #[test]
    fn a_file_over_the_parsers_node_limit_says_how_to_split_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("many.yaml");
        let items = vec!["1"; 300_000].join(",");
        std::fs::write(
            &file,
            format!("tasks:\n  - {{id: a, type: noop}}\nparams:\n  big: [{items}]\n"),
        )
        .expect("file");
        let parsed = read_one(&file, &Templates::new());
        let problem = &parsed.diagnostics[0];
        assert!(
            problem
                .message
                .contains("too large for ferry's YAML parser"),
            "{}",
            problem.message
        );
        assert!(
            problem
                .help
                .as_deref()
                .is_some_and(|h| h.contains("wait_for_dag")),
            "{problem:?}"
        );
    }

    #[test]
    fn a_file_over_the_size_limit_says_how_to_split_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("huge.yaml");
        let file_handle = std::fs::File::create(&file).expect("file");
        file_handle.set_len(MAX_FILE_BYTES + 1).expect("size");
        let parsed = read_one(&file, &Templates::new());
        let problem = &parsed.diagnostics[0];
        assert!(
            problem.message.contains("at most 8 MiB"),
            "{}",
            problem.message
        );
        assert!(
            problem
                .help
                .as_deref()
                .is_some_and(|h| h.contains("wait_for_dag")),
            "{problem:?}"
        );
    }
}
