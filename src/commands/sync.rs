//! `ferry sync plan DAG TASK`: what a `reverse_sync` task would change in its target, worked
//! out by the sync itself inside a transaction that is rolled back (so the counts are exact and
//! nothing is written, not even ferry's own tables).

use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use chrono::{DateTime, Utc};
use ferry_config::Config;
use ferry_executor::Outcome;
use ferry_executor::connector::{AttemptKey, ConnectorWork};
use ferry_scheduler::render::{Prepared, Work};

use crate::cli::DagSource;

/// Prints the plan of `task` of `dag` for the interval of `date` (default: the latest).
pub(crate) fn plan(
    config: &Config,
    dag_id: &str,
    task_id: &str,
    date: Option<&str>,
    now: Option<DateTime<Utc>>,
) -> Result<ExitCode> {
    let catalog = super::load_catalog(config, &[], &DagSource { now });
    let dag = super::find_dag(&catalog, dag_id)?;
    let Some(task) = dag.tasks.iter().find(|t| t.id == task_id) else {
        bail!("DAG `{dag_id}` has no task `{task_id}`");
    };
    if !matches!(task.kind, ferry_dag::tasks::TaskKind::ReverseSync(_)) {
        bail!(
            "task `{task_id}` of DAG `{dag_id}` is a `{}` task; `ferry sync plan` plans `reverse_sync` tasks",
            task.kind.type_name()
        );
    }
    let now = now.unwrap_or_else(Utc::now);
    let interval = ferry_scheduler::manual::interval_for(dag, date, now)?;
    let secrets = config.secrets();
    let prepared = super::prepare_preview(
        dag,
        task,
        interval,
        now,
        "sync__plan",
        (&secrets, &config.environment),
    )
    .map_err(|problem| anyhow::anyhow!("the task does not render: {}", problem.message))?;
    let Prepared {
        work: Work::Connector(ConnectorWork::ReverseSync(mut work)),
        shown,
        ..
    } = prepared
    else {
        bail!("task `{task_id}` did not render as a reverse sync");
    };
    work.plan_only = true;
    let work = ConnectorWork::ReverseSync(work);
    let key = AttemptKey {
        dag: dag.id.clone(),
        task: task.id.clone(),
        run_id: "sync__plan".to_string(),
        run_queued_at: 0,
        try_number: 0,
        lease: 0,
    };
    let connectors = ferry_connectors::LiveConnectors::new(config.connections().clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let done = runtime.block_on(super::outside::attempt(&connectors, &work, &key));
    out!(
        "plan of {dag_id}.{task_id} for the interval {} .. {} ({}); nothing is written",
        interval.start.with_timezone(&dag.timezone).to_rfc3339(),
        interval.end.with_timezone(&dag.timezone).to_rfc3339(),
        dag.timezone
    );
    out!("{}", secrets.redact(&shown));
    for line in done.log.lines() {
        out!("{}", secrets.redact(line.trim_start_matches("[ferry] ")));
    }
    if let Outcome::Succeeded { .. } = done.outcome {
        for figure in [
            "rows_read",
            "rows_inserted",
            "rows_updated",
            "rows_deleted",
            "rows_unchanged",
            "rows_rejected",
        ] {
            out!(
                "{:<16}{}",
                figure.trim_start_matches("rows_"),
                done.figures.get(figure).copied().unwrap_or(0)
            );
        }
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(1))
    }
}
