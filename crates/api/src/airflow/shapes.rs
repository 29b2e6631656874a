//! ferry's records in Airflow's shapes: a DAG run, a task instance, a DAG, with the fields each
//! flavour's clients require (Airflow 3's clients refuse an answer that lacks one).

use ferry_dag::Dag;
use ferry_store::{RunRecord, TaskInstanceRecord};
use serde_json::{Value, json};

use super::Flavour;

/// Unix ms as Airflow writes instants (`2026-11-24T23:00:00+00:00`).
pub(super) fn iso(ms: i64) -> Value {
    chrono::DateTime::from_timestamp_millis(ms).map_or(Value::Null, |t| {
        Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false))
    })
}

fn iso_opt(ms: Option<i64>) -> Value {
    ms.map_or(Value::Null, iso)
}

/// Seconds between two instants, when both are known.
fn duration(start: Option<i64>, end: Option<i64>) -> Value {
    match (start, end) {
        (Some(start), Some(end)) => json!((end - start) as f64 / 1000.0),
        _ => Value::Null,
    }
}

/// A DAG run.
pub(super) fn dag_run(flavour: Flavour, run: &RunRecord) -> Value {
    let mut shape = json!({
        "dag_run_id": run.run_id,
        "dag_id": run.dag_id,
        "logical_date": iso(run.logical_date),
        "data_interval_start": iso(run.interval_start),
        "data_interval_end": iso(run.interval_end),
        "start_date": iso_opt(run.started_at),
        "end_date": iso_opt(run.ended_at),
        "last_scheduling_decision": Value::Null,
        "run_type": run.run_type,
        "state": run.state,
        "conf": serde_json::from_str::<Value>(&run.conf).unwrap_or_else(|_| json!({})),
        "note": Value::Null,
        "queued_at": iso(run.queued_at),
    });
    let extra = match flavour {
        Flavour::Airflow2 => json!({
            "execution_date": iso(run.logical_date),
            "external_trigger": run.run_type != "scheduled",
        }),
        Flavour::Airflow3 => json!({
            "dag_display_name": run.dag_id,
            "dag_versions": [],
            "run_after": iso(run.interval_end.max(run.logical_date)),
            "duration": duration(run.started_at, run.ended_at),
            "triggered_by": match run.run_type.as_str() {
                "scheduled" => "timetable",
                "backfill" => "backfill",
                _ => "rest_api",
            },
            "bundle_version": Value::Null,
        }),
    };
    merge(&mut shape, extra);
    shape
}

/// Airflow's name of a task state: a task not decided yet has none.
pub(super) fn task_state(state: &str) -> Value {
    if state == "pending" {
        Value::Null
    } else {
        Value::String(state.to_string())
    }
}

/// A task instance of `run` (`dag`: the run's version, for the task's type).
pub(super) fn task_instance(
    flavour: Flavour,
    run: &RunRecord,
    task: &TaskInstanceRecord,
    dag: Option<&Dag>,
) -> Value {
    let host = task
        .worker
        .as_deref()
        .and_then(|w| w.split(':').next())
        .unwrap_or_default();
    let operator = dag
        .and_then(|d| d.task(&task.task_id))
        .map_or(Value::Null, |t| {
            Value::String(t.kind.type_name().to_string())
        });
    let mut shape = json!({
        "task_id": task.task_id,
        "task_display_name": task.task_id,
        "dag_id": run.dag_id,
        "dag_run_id": run.run_id,
        "start_date": iso_opt(task.started_at),
        "end_date": iso_opt(task.ended_at),
        "duration": duration(task.started_at, task.ended_at),
        "state": task_state(&task.state),
        "try_number": task.try_number,
        "max_tries": task.max_tries,
        "map_index": -1,
        "hostname": host,
        "unixname": "ferry",
        "pool": task.pool,
        "pool_slots": 1,
        "queue": "default",
        "priority_weight": task.priority,
        "operator": operator,
        "queued_when": iso_opt(task.queued_at),
        "pid": Value::Null,
        "executor": Value::Null,
        "executor_config": "{}",
        "note": Value::Null,
        "rendered_fields": {},
        "rendered_map_index": Value::Null,
        "trigger": Value::Null,
        "triggerer_job": Value::Null,
    });
    let extra = match flavour {
        Flavour::Airflow2 => json!({
            "execution_date": iso(run.logical_date),
            "sla_miss": Value::Null,
        }),
        Flavour::Airflow3 => json!({
            "id": uuid_of(task.id),
            "dag_display_name": run.dag_id,
            "logical_date": iso(run.logical_date),
            "run_after": iso(run.interval_end.max(run.logical_date)),
            "dag_version": Value::Null,
            "operator_name": operator,
            "scheduled_when": Value::Null,
        }),
    };
    merge(&mut shape, extra);
    shape
}

/// What Airflow 2 answers for a task instance a change touched.
pub(super) fn task_reference(run: &RunRecord, task_id: &str) -> Value {
    json!({
        "task_id": task_id,
        "dag_id": run.dag_id,
        "dag_run_id": run.run_id,
        "execution_date": iso(run.logical_date),
    })
}

/// A DAG.
pub(super) fn dag(flavour: Flavour, dag: &Dag, is_paused: bool, has_errors: bool) -> Value {
    let owners: Vec<&str> = dag.owner.as_deref().into_iter().collect();
    let schedule = dag.schedule.as_ref().map(|s| s.expression().to_string());
    let mut shape = json!({
        "dag_id": dag.id,
        "dag_display_name": dag.id,
        "description": dag.description,
        "is_paused": is_paused,
        "fileloc": dag.file.display().to_string(),
        "file_token": "",
        "owners": owners,
        "max_active_runs": dag.max_active_runs,
        "max_active_tasks": dag.max_active_tasks,
        "has_task_concurrency_limits": false,
        "has_import_errors": has_errors,
        "last_parsed_time": Value::Null,
        "last_expired": Value::Null,
        "timetable_description": schedule,
    });
    let extra = match flavour {
        Flavour::Airflow2 => json!({
            "is_active": true,
            "is_subdag": false,
            "root_dag_id": Value::Null,
            "last_pickled": Value::Null,
            "scheduler_lock": Value::Null,
            "pickle_id": Value::Null,
            "default_view": "grid",
            "schedule_interval": Value::Null,
            "tags": dag.tags.iter().map(|t| json!({"name": t})).collect::<Vec<_>>(),
        }),
        Flavour::Airflow3 => json!({
            "is_stale": false,
            "is_backfillable": dag.schedule.is_some(),
            "max_consecutive_failed_dag_runs": 0,
            "timetable_partitioned": false,
            "timetable_periodic": dag.schedule.is_some(),
            "timetable_summary": schedule,
            "tags": dag
                .tags
                .iter()
                .map(|t| json!({"name": t, "dag_id": dag.id, "dag_display_name": dag.id}))
                .collect::<Vec<_>>(),
        }),
    };
    merge(&mut shape, extra);
    shape
}

/// A UUID-shaped id for a task instance row (Airflow 3's task instances have UUIDs).
fn uuid_of(id: i64) -> String {
    format!("00000000-0000-4000-8000-{:012x}", id & 0xffff_ffff_ffff)
}

fn merge(into: &mut Value, extra: Value) {
    if let (Some(into), Value::Object(extra)) = (into.as_object_mut(), extra) {
        into.extend(extra);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_and_states_are_airflows() {
        assert_eq!(iso(1_764_025_200_000), json!("2025-11-24T23:00:00+00:00"));
        assert_eq!(task_state("pending"), Value::Null);
        assert_eq!(task_state("up_for_retry"), json!("up_for_retry"));
        assert_eq!(uuid_of(255), "00000000-0000-4000-8000-0000000000ff");
    }
}
