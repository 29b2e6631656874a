//! `ferry dags list` and `ferry dags show`.

use std::process::ExitCode;

use anyhow::Result;
use ferry_config::Config;
use ferry_dag::dag::Deadline;
use ferry_dag::{Dag, graph};
use serde_json::json;

use crate::cli::{DagSource, Format, GraphFormat};
use crate::output;

pub(crate) fn list(config: &Config, format: Format, source: &DagSource) -> Result<ExitCode> {
    let catalog = super::load_catalog(config, &[], source);
    let broken = catalog.count(ferry_dag::Severity::Error);
    match format {
        Format::Json => output::json(&json!(
            catalog.dags.values().map(summary).collect::<Vec<_>>()
        )),
        Format::Text => {
            let rows: Vec<Vec<String>> = catalog
                .dags
                .values()
                .map(|dag| {
                    vec![
                        dag.id.clone(),
                        dag.tree.as_str().to_string(),
                        dag.schedule
                            .as_ref()
                            .map_or("(manual)".to_string(), |s| s.expression().to_string()),
                        dag.timezone.to_string(),
                        dag.owner.clone().unwrap_or_else(|| "-".to_string()),
                        dag.tasks.len().to_string(),
                        dag.file.display().to_string(),
                    ]
                })
                .collect();
            output::table(
                &[
                    "ID", "TREE", "SCHEDULE", "TIMEZONE", "OWNER", "TASKS", "FILE",
                ],
                &rows,
            );
        }
    }
    if broken > 0 {
        say!(
            "ferry: {broken} error(s) in DAG files; those DAGs are not listed (run `ferry validate`)"
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn summary(dag: &Dag) -> serde_json::Value {
    json!({
        "id": dag.id,
        "tree": dag.tree,
        "description": dag.description,
        "owner": dag.owner,
        "tags": dag.tags,
        "schedule": dag.schedule.as_ref().map(|s| s.expression()),
        "timezone": dag.timezone.name(),
        "tasks": dag.tasks.len(),
        "file": dag.file,
    })
}

pub(crate) fn show(
    config: &Config,
    id: &str,
    graph_format: Option<GraphFormat>,
    format: Format,
    source: &DagSource,
) -> Result<ExitCode> {
    let catalog = super::load_catalog(config, &[], source);
    let dag = super::find_dag(&catalog, id)?;
    let labels: Vec<(&str, &str)> = dag
        .tasks
        .iter()
        .map(|t| (t.id.as_str(), t.kind.type_name()))
        .collect();
    match graph_format {
        Some(GraphFormat::Mermaid) => put!("{}", graph::mermaid(&labels, &dag.graph)),
        Some(GraphFormat::Dot) => put!("{}", graph::dot(&dag.id, &labels, &dag.graph)),
        None if format == Format::Json => output::json(&details(dag)),
        None => print_details(dag),
    }
    Ok(ExitCode::SUCCESS)
}

fn edges(dag: &Dag) -> Vec<(&str, &str)> {
    dag.graph
        .edges()
        .into_iter()
        .map(|(up, down)| (dag.tasks[up].id.as_str(), dag.tasks[down].id.as_str()))
        .collect()
}

fn details(dag: &Dag) -> serde_json::Value {
    let mut value = summary(dag);
    value["start_date"] = json!(dag.start_date);
    value["end_date"] = json!(dag.end_date);
    value["catchup"] = json!(dag.catchup);
    value["max_active_runs"] = json!(dag.max_active_runs);
    value["max_active_tasks"] = json!(dag.max_active_tasks);
    value["params"] = json!(dag.params);
    value["sla"] = json!(dag.sla);
    value["alerts"] = json!(dag.alerts);
    value["tasks"] = json!(
        dag.tasks
            .iter()
            .map(|task| json!({
                "id": task.id,
                "type": task.kind.type_name(),
                "depends_on": task.depends_on,
                "trigger_rule": task.trigger_rule,
                "retry": task.retry,
                "timeout": task.timeout,
                "pool": task.pool,
                "priority": task.priority,
            }))
            .collect::<Vec<_>>()
    );
    value["edges"] = json!(edges(dag));
    value
}

fn print_details(dag: &Dag) {
    out!(
        "DAG {} ({}, {})",
        dag.id,
        dag.tree.as_str(),
        dag.file.display()
    );
    if let Some(description) = &dag.description {
        out!("  {description}");
    }
    let schedule = dag
        .schedule
        .as_ref()
        .map_or("manual only".to_string(), |s| s.expression().to_string());
    out!("  schedule:   {schedule} ({})", dag.timezone);
    if let Some(start) = dag.start_date {
        out!(
            "  start_date: {}",
            start.with_timezone(&dag.timezone).to_rfc3339()
        );
    }
    out!("  owner:      {}", dag.owner.as_deref().unwrap_or("-"));
    if let Some(sla) = &dag.sla {
        let deadline = match sla.deadline {
            Deadline::TimeOfDay(at) => format!("by {} ({})", at.format("%H:%M"), dag.timezone),
            Deadline::Within(within) => format!("within {within} of being due"),
        };
        out!("  sla:        {deadline}");
    }
    for (event, channels) in dag.alerts.events() {
        if !channels.is_empty() {
            out!("  {event:<11} {}", channels.join(", "));
        }
    }
    out!();
    let rows: Vec<Vec<String>> = dag
        .tasks
        .iter()
        .map(|task| {
            vec![
                task.id.clone(),
                task.kind.type_name().to_string(),
                if task.depends_on.is_empty() {
                    "-".to_string()
                } else {
                    task.depends_on.join(",")
                },
                serde_json::to_value(task.trigger_rule)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                task.retry.retries.to_string(),
                task.timeout.map_or("-".to_string(), |t| t.to_string()),
            ]
        })
        .collect();
    output::table(
        &[
            "TASK",
            "TYPE",
            "DEPENDS_ON",
            "TRIGGER_RULE",
            "RETRIES",
            "TIMEOUT",
        ],
        &rows,
    );
    out!();
    out!("edges:");
    for (up, down) in edges(dag) {
        out!("  {up} -> {down}");
    }
}
