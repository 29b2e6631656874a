//! `ferry dags list` and `ferry dags show`.

use std::process::ExitCode;

use anyhow::Result;
use ferry_config::Config;
use ferry_dag::dag::Deadline;
use ferry_dag::{Dag, graph};
use serde_json::json;

use crate::cli::{DagSource, Format, GraphFormat};
use crate::output;

/// What the store knows of the DAGs: paused ones, and the latest version of each.
#[derive(Default)]
struct Known {
    paused: std::collections::HashMap<String, ferry_store::PausedDag>,
    versions: std::collections::HashMap<String, (i64, i64)>,
}

/// Reads what the store knows, if there is a store (the list works without one).
fn known(config: &Config) -> Known {
    let engine = crate::cli::EngineArgs { database_url: None };
    super::engine::block_on(async {
        let Ok(store) =
            super::engine::open_store(config, &engine, ferry_store::OpenMode::Existing).await
        else {
            return Ok(Known::default());
        };
        let known = Known {
            paused: store
                .paused_dags()
                .await
                .map(|paused| paused.into_iter().map(|p| (p.dag_id.clone(), p)).collect())
                .unwrap_or_default(),
            versions: store.latest_dag_versions().await.unwrap_or_default(),
        };
        store.close().await;
        Ok(known)
    })
    .unwrap_or_default()
}

/// Who paused a DAG, when and why.
fn paused_json(paused: &ferry_store::PausedDag) -> serde_json::Value {
    json!({
        "by": paused.actor,
        "at": output::rfc3339(Some(paused.paused_at)),
        "reason": paused.reason,
    })
}

/// A DAG file with errors: its DAG id (or the file's name) and its first error.
struct Broken {
    id: String,
    file: std::path::PathBuf,
    error: String,
}

fn broken(catalog: &ferry_dag::Catalog) -> Vec<Broken> {
    let mut found: Vec<Broken> = Vec::new();
    for diagnostic in catalog.diagnostics.iter().filter(|d| d.is_error()) {
        let id = diagnostic.dag.clone().unwrap_or_else(|| {
            diagnostic
                .file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        if catalog.dags.contains_key(&id) || found.iter().any(|b| b.file == diagnostic.file) {
            continue;
        }
        found.push(Broken {
            id,
            file: diagnostic.file.clone(),
            error: format!(
                "{}:{}: {}",
                diagnostic.line, diagnostic.column, diagnostic.message
            ),
        });
    }
    found
}

pub(crate) fn list(config: &Config, format: Format, source: &DagSource) -> Result<ExitCode> {
    let catalog = super::load_catalog(config, &[], source);
    let known = known(config);
    let broken = broken(&catalog);
    let state = |id: &str| {
        if known.paused.contains_key(id) {
            "paused"
        } else {
            "active"
        }
    };
    let last_valid = |id: &str| {
        known.versions.get(id).map(
            |(version, at)| json!({"version": version, "loaded_at": output::rfc3339(Some(*at))}),
        )
    };
    match format {
        Format::Json => {
            let mut entries: Vec<serde_json::Value> = catalog
                .dags
                .values()
                .map(|dag| {
                    let mut entry = summary(dag);
                    entry["state"] = json!(state(&dag.id));
                    entry["paused"] = json!(known.paused.get(&dag.id).map(paused_json));
                    entry
                })
                .collect();
            entries.extend(broken.iter().map(|b| {
                json!({
                    "id": b.id,
                    "file": b.file,
                    "state": "broken",
                    "paused": known.paused.get(&b.id).map(paused_json),
                    "error": b.error,
                    "last_valid_version": last_valid(&b.id),
                })
            }));
            output::json(&json!(entries));
        }
        Format::Text => {
            let mut rows: Vec<Vec<String>> = catalog
                .dags
                .values()
                .map(|dag| {
                    vec![
                        dag.id.clone(),
                        state(&dag.id).to_string(),
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
            rows.extend(broken.iter().map(|b| {
                let mut row = vec!["-".to_string(); 8];
                row[0].clone_from(&b.id);
                row[1] = "broken".to_string();
                row[7] = b.file.display().to_string();
                row
            }));
            output::table(
                &[
                    "ID", "STATE", "TREE", "SCHEDULE", "TIMEZONE", "OWNER", "TASKS", "FILE",
                ],
                &rows,
            );
            for b in &broken {
                let runs = match known.versions.get(&b.id) {
                    Some((version, at)) => format!(
                        "ferry serve keeps scheduling its last valid version ({version}, loaded {})",
                        output::rfc3339(Some(*at)).unwrap_or_default()
                    ),
                    None => "it has never loaded, so it does not run".to_string(),
                };
                out!("");
                out!("{} is broken: {}: {}", b.id, b.file.display(), b.error);
                out!("  {runs}; `ferry validate` lists every error");
            }
        }
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
