//! A task of a run made ready to execute: templates rendered with the run's context, the
//! command's whole environment, the secrets to mask, and a text of what will run (secrets
//! masked) to keep with the attempt.

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_secrets::Redactor;

use ferry_dag::dag::{Dag, Task};
use ferry_dag::tasks::TaskKind;
use ferry_dag::template::{RunContext, TemplateProblem, Templates};
use ferry_dag::timetable::DataInterval;
use ferry_executor::command::{CommandSpec, Program};
use ferry_executor::connector::{
    CloudWait, ColumnType, ConnectorWork, DataCheck, Expectation, ObjectFormat, RowLimit,
    RowSource, SyncMode, SyncWork, TableWrite, WriteMode,
};
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
    /// Work on a named connection.
    Connector(ConnectorWork),
    /// Wait for another DAG's run of the same interval.
    WaitForDag {
        /// The DAG.
        dag: String,
        /// Or one of its tasks.
        task: Option<String>,
        /// How often to look again.
        poll: Duration,
        /// Fail at once when what it waits for has failed.
        fail_fast: bool,
    },
}

/// A rendered attempt.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// What to do.
    pub work: Work,
    /// What will run, secrets masked, for the attempt record and the log.
    pub shown: String,
    /// Every secret this attempt may show: the engine's, and those found in its environment,
    /// headers and URL.
    pub redactor: Redactor,
}

/// What an attempt gets beyond its DAG: its try number, the daemon's variables it may inherit,
/// and the secrets ferry knows.
#[derive(Clone, Copy, Debug)]
pub struct AttemptContext<'a> {
    /// The try this attempt will be (1 for the first).
    pub try_number: i64,
    /// The daemon's environment variables that tasks inherit (`engine.task_env`).
    pub inherited_env: &'a [(String, String)],
    /// The secrets of the configuration.
    pub secrets: &'a Redactor,
    /// The data interval of the DAG's latest successful run before this one (for
    /// `prev_data_interval_start_success`).
    pub previous_success: Option<DataInterval>,
    /// The environment ferry runs in (`env`).
    pub environment: &'a str,
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

/// Renders `text` for `task` of `run`: the templates' variables of that run.
fn render_for(
    dag: &Dag,
    task: &Task,
    run: &RunRecord,
    templates: &Templates,
    attempt: &AttemptContext<'_>,
    text: &str,
) -> Result<String, TemplateProblem> {
    let params = run_params(dag, run);
    let conf: serde_json::Value =
        serde_json::from_str(&run.conf).unwrap_or_else(|_| serde_json::json!({}));
    let data_interval = DataInterval {
        start: from_millis(run.interval_start),
        end: from_millis(run.interval_end),
    };
    // By the schedule: the interval before starts before this one's start; the next one
    // starts at this one's end.
    let neighbours = dag.schedule.as_ref().map_or((None, None), |schedule| {
        (
            schedule.previous_before(data_interval.start),
            Some(data_interval.end),
        )
    });
    let context = RunContext {
        dag_id: &dag.id,
        task_id: &task.id,
        run_id: &run.run_id,
        run_type: &run.run_type,
        data_interval,
        neighbours,
        previous_success: attempt.previous_success,
        timezone: dag.timezone,
        params: &params,
        conf: &conf,
        environment: attempt.environment,
    };
    templates.render(text, &context)
}

/// Whether `task` of `run` is to run by its `run_if` (true without one): `Ok(Err(why))`
/// when it is to be skipped, `Err` when the condition cannot be rendered or is neither true
/// nor false.
pub fn run_if(
    dag: &Dag,
    task: &Task,
    run: &RunRecord,
    templates: &Templates,
    attempt: &AttemptContext<'_>,
) -> Result<Result<(), String>, TemplateProblem> {
    let Some(condition) = &task.run_if else {
        return Ok(Ok(()));
    };
    let rendered = render_for(dag, task, run, templates, attempt, condition)?;
    match ferry_dag::template::truth(&rendered) {
        Some(true) => Ok(Ok(())),
        Some(false) => Ok(Err(format!(
            "run_if is false: `{}` rendered `{}`",
            condition.trim(),
            rendered.trim()
        ))),
        None => Err(TemplateProblem {
            message: format!(
                "run_if `{}` rendered `{}`, which is neither true nor false",
                condition.trim(),
                rendered.trim()
            ),
            help: Some("write a comparison, as `{{ env == 'prod' }}`".to_string()),
        }),
    }
}

/// Renders `task` of `run`.
pub fn prepare(
    dag: &Dag,
    task: &Task,
    run: &RunRecord,
    templates: &Templates,
    attempt: &AttemptContext<'_>,
) -> Result<Prepared, TemplateProblem> {
    let mut redactor = attempt.secrets.clone();
    let render = |text: &str| render_for(dag, task, run, templates, attempt, text);
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
            let dag_env = render_pairs(&command.env, &render)?;
            let mut env: BTreeMap<String, String> = attempt.inherited_env.iter().cloned().collect();
            env.extend(dag_env.iter().cloned());
            env.extend(ferry_variables(dag, task, run, attempt.try_number));
            for (name, value) in &env {
                redactor.add_pair(name, value);
            }
            let working_dir = match &command.working_dir {
                Some(dir) => Some(render(dir)?.into()),
                None => dag
                    .file
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .map(|p| p.to_path_buf()),
            };
            // Masked before quoting: quoting escapes characters a secret may contain.
            let mut shown = match &program {
                Program::Shell(line) => format!("sh -c {:?}", redactor.redact(line)),
                Program::Argv(argv) => format!(
                    "{:?}",
                    argv.iter()
                        .map(|arg| redactor.redact(arg))
                        .collect::<Vec<_>>()
                ),
            };
            shown.push_str(&shown_pairs(&dag_env, "="));
            Prepared {
                work: Work::Command(CommandSpec {
                    program,
                    env: env.into_iter().collect(),
                    working_dir,
                    timeout,
                    grace: STOP_GRACE,
                }),
                shown: redactor.redact(&shown),
                redactor,
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
            for (name, value) in &headers {
                redactor.add_pair(name, value);
            }
            redactor.add_pair("url", &url);
            let mut shown = format!("{method} {url}");
            shown.push_str(&shown_pairs(&headers, ": "));
            let shown = redactor.redact(&shown);
            Prepared {
                redactor,
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
            redactor,
        },
        TaskKind::Query(query) => {
            let sql = render(&query.sql)?;
            let destination = query
                .destination
                .as_ref()
                .map(|d| table_write(d, &render))
                .transpose()?;
            let labels = render_pairs(&query.labels, &render)?;
            let mut shown = format!("query on {}: {sql}", query.connection);
            if let Some(write) = &destination {
                shown.push_str(&format!("\ninto {} ({:?})", write.table, write.mode));
            }
            Prepared {
                work: Work::Connector(ConnectorWork::Query {
                    connection: query.connection.clone(),
                    sql,
                    destination,
                    labels,
                    timeout,
                }),
                shown: redactor.redact(&shown),
                redactor,
            }
        }
        TaskKind::Transfer(transfer) => {
            use ferry_dag::tasks::{ColumnType as Declared, ObjectFormat as Format};
            let source = match (&transfer.source.sql, &transfer.source.bucket) {
                (Some(sql), _) => RowSource::Sql {
                    connection: transfer.source.connection.clone(),
                    sql: render(sql)?,
                },
                (None, bucket) => RowSource::S3 {
                    connection: transfer.source.connection.clone(),
                    bucket: render(bucket.as_deref().unwrap_or_default())?,
                    prefix: render(transfer.source.prefix.as_deref().unwrap_or_default())?,
                    format: match transfer.source.format {
                        Some(Format::Ndjson) => ObjectFormat::Ndjson,
                        Some(Format::Parquet) => ObjectFormat::Parquet,
                        Some(Format::Csv) | None => ObjectFormat::Csv,
                    },
                },
            };
            let write = table_write(&transfer.destination, &render)?;
            let destination = transfer.destination.connection.clone().unwrap_or_default();
            let shown = match &source {
                RowSource::Sql { connection, sql } => format!("transfer from {connection}: {sql}"),
                RowSource::S3 {
                    connection,
                    bucket,
                    prefix,
                    format,
                } => format!("transfer from {connection}: s3://{bucket}/{prefix}* ({format:?})"),
            } + &format!("\ninto {} on {destination} ({:?})", write.table, write.mode);
            let schema = transfer
                .schema
                .iter()
                .map(|column| {
                    let kind = match column.kind {
                        Declared::String => ColumnType::String,
                        Declared::Int64 => ColumnType::Int64,
                        Declared::Float64 => ColumnType::Float64,
                        Declared::Bool => ColumnType::Bool,
                    };
                    (column.name.clone(), kind)
                })
                .collect();
            Prepared {
                work: Work::Connector(ConnectorWork::Transfer {
                    source,
                    destination,
                    write,
                    batch_size: transfer.batch_size.map_or(10_000, |b| b as usize),
                    schema,
                    timeout,
                }),
                shown: redactor.redact(&shown),
                redactor,
            }
        }
        TaskKind::ReverseSync(sync) => {
            let work = sync_work(sync, timeout, &render)?;
            let shown = format!(
                "reverse_sync from {}: {}\ninto {} on {} ({} by {})",
                work.source,
                work.sql,
                work.table,
                work.target,
                sync.mode.as_str(),
                if work.key.is_empty() {
                    "no key".to_string()
                } else {
                    work.key.join(", ")
                }
            );
            Prepared {
                work: Work::Connector(ConnectorWork::ReverseSync(Box::new(work))),
                shown: redactor.redact(&shown),
                redactor,
            }
        }
        TaskKind::SqlCheck(check) => {
            let mut checks = Vec::new();
            for (index, declared) in check.checks.iter().enumerate() {
                let expect = if declared.no_rows {
                    Expectation::NoRows
                } else if let Some(other) = &declared.equals_sql {
                    Expectation::Equals {
                        sql: render(other)?,
                        tolerance: declared.tolerance.unwrap_or(0.0),
                    }
                } else {
                    Expectation::Between {
                        min: declared.min,
                        max: declared.max,
                    }
                };
                checks.push(DataCheck {
                    name: declared
                        .name
                        .clone()
                        .unwrap_or_else(|| format!("check {}", index + 1)),
                    sql: render(&declared.sql)?,
                    expect,
                });
            }
            let shown = format!(
                "sql_check on {}: {}",
                check.connection,
                checks
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Prepared {
                work: Work::Connector(ConnectorWork::Check {
                    connection: check.connection.clone(),
                    checks,
                    timeout,
                }),
                shown: redactor.redact(&shown),
                redactor,
            }
        }
        TaskKind::S3Object(wait) => {
            let bucket = render(&wait.bucket)?;
            let key = render(&wait.key)?;
            let newer_than = wait
                .newer_than_interval_end
                .then(|| std::time::SystemTime::from(from_millis(run.interval_end)));
            let shown = format!("wait on {} for s3://{bucket}/{key}", wait.connection);
            Prepared {
                work: Work::Connector(ConnectorWork::Wait {
                    connection: wait.connection.clone(),
                    wait: CloudWait::S3Object {
                        bucket,
                        key,
                        newer_than,
                    },
                    poll: wait.poll_interval.map_or(Duration::from_secs(60), |p| p.0),
                    timeout: timeout.unwrap_or(ferry_dag::tasks::DEFAULT_WAIT_TIMEOUT),
                }),
                shown: redactor.redact(&shown),
                redactor,
            }
        }
        TaskKind::BigqueryPartition(wait) => {
            let table = render(&wait.table)?;
            let value = render(wait.partition_value.as_deref().unwrap_or("{{ ds }}"))?;
            let shown = format!(
                "wait on {} for rows of {table} where {} = '{value}'",
                wait.connection, wait.partition_column
            );
            Prepared {
                work: Work::Connector(ConnectorWork::Wait {
                    connection: wait.connection.clone(),
                    wait: CloudWait::BigqueryPartition {
                        table,
                        column: wait.partition_column.clone(),
                        value,
                    },
                    poll: wait.poll_interval.map_or(Duration::from_secs(300), |p| p.0),
                    timeout: timeout.unwrap_or(ferry_dag::tasks::DEFAULT_WAIT_TIMEOUT),
                }),
                shown: redactor.redact(&shown),
                redactor,
            }
        }
        TaskKind::GlueRun(wait) => {
            let job_name = render(&wait.job_name)?;
            let state = serde_json::to_value(wait.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| "SUCCEEDED".to_string());
            let shown = format!(
                "wait on {} for a run of Glue job {job_name} started after the interval: {state}",
                wait.connection
            );
            Prepared {
                work: Work::Connector(ConnectorWork::Wait {
                    connection: wait.connection.clone(),
                    wait: CloudWait::GlueRun {
                        job_name,
                        state,
                        started_after: std::time::SystemTime::from(from_millis(run.interval_end)),
                    },
                    poll: wait.poll_interval.map_or(Duration::from_secs(60), |p| p.0),
                    timeout: timeout.unwrap_or(ferry_dag::tasks::DEFAULT_WAIT_TIMEOUT),
                }),
                shown: redactor.redact(&shown),
                redactor,
            }
        }
        TaskKind::GlueJob(glue) => {
            let job_name = render(&glue.job_name)?;
            let arguments = render_pairs(&glue.arguments, &render)?;
            let mut shown = format!("Glue job {job_name} on {}", glue.connection);
            shown.push_str(&shown_pairs(&arguments, " "));
            Prepared {
                work: Work::Connector(ConnectorWork::GlueJob {
                    connection: glue.connection.clone(),
                    job_name,
                    arguments,
                    poll: glue.poll_interval.map_or(Duration::from_secs(30), |p| p.0),
                    timeout,
                }),
                shown: redactor.redact(&shown),
                redactor,
            }
        }
        TaskKind::Stepfunctions(sfn) => {
            let state_machine_arn = render(&sfn.state_machine_arn)?;
            let input = sfn
                .input
                .as_deref()
                .map(render)
                .transpose()?
                .unwrap_or_else(|| "{}".to_string());
            if let Err(error) = serde_json::from_str::<serde_json::Value>(&input) {
                return Err(TemplateProblem {
                    message: format!("the rendered `input` is not JSON: {error}"),
                    help: Some("check the values the template puts into the JSON (quote strings with `| tojson`)".to_string()),
                });
            }
            let shown = format!(
                "Step Functions {state_machine_arn} on {}\ninput: {input}",
                sfn.connection
            );
            Prepared {
                work: Work::Connector(ConnectorWork::StepFunctions {
                    connection: sfn.connection.clone(),
                    state_machine_arn,
                    input,
                    poll: sfn.poll_interval.map_or(Duration::from_secs(10), |p| p.0),
                    timeout,
                }),
                shown: redactor.redact(&shown),
                redactor,
            }
        }
        TaskKind::WaitForDag(wait) => Prepared {
            work: Work::WaitForDag {
                dag: wait.dag.clone(),
                task: wait.task.clone(),
                poll: wait.poll_interval.map_or(Duration::from_secs(60), |p| p.0),
                fail_fast: wait.on_failed.unwrap_or_default() == ferry_dag::tasks::OnFailed::Fail,
            },
            shown: format!(
                "wait for DAG {}{}",
                wait.dag,
                wait.task
                    .as_deref()
                    .map(|t| format!(" task {t}"))
                    .unwrap_or_default()
            ),
            redactor,
        },
    };
    Ok(prepared)
}

/// A destination rendered: its table and partition value.
fn table_write(
    destination: &ferry_dag::tasks::Destination,
    render: &impl Fn(&str) -> Result<String, TemplateProblem>,
) -> Result<TableWrite, TemplateProblem> {
    use ferry_dag::tasks::WriteMode as Declared;
    let mode = match destination.write {
        Declared::Append => WriteMode::Append,
        Declared::Replace => WriteMode::Replace,
        Declared::ReplacePartition => WriteMode::ReplacePartition {
            column: destination.partition_column.clone().unwrap_or_default(),
            value: render(destination.partition_value.as_deref().unwrap_or("{{ ds }}"))?,
        },
        Declared::Merge => WriteMode::Merge {
            key: destination.key.clone(),
        },
    };
    Ok(TableWrite {
        table: render(&destination.table)?,
        mode,
    })
}

/// A `reverse_sync` task's work, rendered.
fn sync_work(
    sync: &ferry_dag::tasks::ReverseSyncTask,
    timeout: Option<Duration>,
    render: &impl Fn(&str) -> Result<String, TemplateProblem>,
) -> Result<SyncWork, TemplateProblem> {
    use ferry_dag::tasks::{DEFAULT_MAX_DELETE, SyncMode as Declared, Threshold};
    let limit = |declared: &Option<ferry_dag::tasks::Limit>, default: Threshold| {
        // The validator refuses a limit it cannot read, so none reaches here.
        match declared
            .as_ref()
            .and_then(|l| l.threshold().ok())
            .unwrap_or(default)
        {
            Threshold::Count(count) => RowLimit::Count(count),
            Threshold::Percent(percent) => RowLimit::Percent(percent),
        }
    };
    Ok(SyncWork {
        source: sync.source.connection.clone(),
        sql: render(&sync.source.sql)?,
        target: sync.target.connection.clone(),
        table: render(&sync.target.table)?,
        key: sync.key.clone(),
        mode: match sync.mode {
            Declared::Upsert => SyncMode::Upsert,
            Declared::Update => SyncMode::Update,
            Declared::Insert => SyncMode::Insert,
            Declared::Append => SyncMode::Append,
            Declared::Mirror => SyncMode::Mirror,
        },
        columns: sync
            .columns
            .iter()
            .map(|(target, source)| (target.clone(), source.clone()))
            .collect(),
        scope: render_pairs(&sync.scope, render)?,
        max_delete: limit(&sync.max_delete, DEFAULT_MAX_DELETE),
        max_rejected: limit(&sync.max_rejected, Threshold::Count(0)),
        batch_size: sync.batch_size.map_or(10_000, |b| b as usize),
        timeout,
        plan_only: false,
        incremental: sync.incremental.clone(),
    })
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
    if ferry_secrets::is_secret_name(name) {
        ferry_secrets::MASK.to_string()
    } else {
        value.to_string()
    }
}

/// The variables ferry gives every command: which DAG, run, task and try, and the data
/// interval (RFC 3339, UTC) with its date in the DAG's time zone.
fn ferry_variables(
    dag: &Dag,
    task: &Task,
    run: &RunRecord,
    try_number: i64,
) -> Vec<(String, String)> {
    let start = from_millis(run.interval_start);
    let end = from_millis(run.interval_end);
    [
        ("FERRY_DAG_ID", dag.id.clone()),
        ("FERRY_TASK_ID", task.id.clone()),
        ("FERRY_RUN_ID", run.run_id.clone()),
        ("FERRY_TRY_NUMBER", try_number.to_string()),
        (
            "FERRY_DS",
            start
                .with_timezone(&dag.timezone)
                .format("%Y-%m-%d")
                .to_string(),
        ),
        ("FERRY_DATA_INTERVAL_START", start.to_rfc3339()),
        ("FERRY_DATA_INTERVAL_END", end.to_rfc3339()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_string(), value))
    .collect()
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

    #[test]
    fn a_command_gets_an_explicit_environment_and_its_secrets_are_masked_by_value() {
        let yaml = "timezone: Asia/Tokyo\ntasks:\n  - id: load\n    type: command\n    command: 'psql $DATABASE_URL'\n    env: {DATABASE_URL: 'postgres://app:pa55word@db/app', TABLE: scores}\n";
        let templates = Templates::new();
        let dag = ferry_dag::parse_dag(std::path::Path::new("d.yaml"), yaml, &templates)
            .dag
            .expect("valid");
        let run = RunRecord {
            id: 1,
            dag_id: "d".into(),
            run_id: "d__manual__x".into(),
            logical_date: 1_764_000_000_000,
            interval_start: 1_764_000_000_000,
            interval_end: 1_764_086_400_000,
            run_type: "manual".into(),
            conf: "{}".into(),
            state: "running".into(),
            dag_version_id: 1,
            queued_at: 0,
            started_at: None,
            ended_at: None,
        };
        let inherited = vec![("PATH".to_string(), "/usr/bin".to_string())];
        let mut secrets = Redactor::new();
        secrets.add("configured-secret");
        let context = AttemptContext {
            try_number: 2,
            inherited_env: &inherited,
            secrets: &secrets,
            previous_success: None,
            environment: "dev",
        };
        let prepared = prepare(&dag, &dag.tasks[0], &run, &templates, &context).expect("renders");
        let Work::Command(spec) = &prepared.work else {
            panic!("a command");
        };
        let env: BTreeMap<&str, &str> = spec
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(env.get("PATH"), Some(&"/usr/bin"));
        assert_eq!(env.get("TABLE"), Some(&"scores"));
        assert_eq!(env.get("FERRY_TRY_NUMBER"), Some(&"2"));
        assert_eq!(env.get("FERRY_DS"), Some(&"2025-11-25"));
        assert!(env.keys().all(|k| !k.starts_with("FERRY__")), "{env:?}");
        assert!(!prepared.shown.contains("pa55word"), "{}", prepared.shown);
        assert_eq!(
            prepared
                .redactor
                .redact("pa55word configured-secret scores"),
            "******** ******** scores"
        );
    }
}
