//! `ferry schedule ID -n 5`: the next runs, their data intervals and when each is due.

use std::process::ExitCode;

use anyhow::Result;
use chrono::Utc;
use ferry_config::Config;
use ferry_dag::dag::Deadline;
use ferry_dag::timetable::next_time_of_day;
use serde_json::json;

use crate::cli::{Format, ScheduleArgs};
use crate::output;

pub(crate) fn run(config: &Config, args: &ScheduleArgs) -> Result<ExitCode> {
    let catalog = super::load_catalog(config, &[], &args.source);
    let dag = super::find_dag(&catalog, &args.id)?;
    let Some(schedule) = &dag.schedule else {
        out!(
            "DAG `{}` has no schedule: it runs only when triggered",
            dag.id
        );
        return Ok(ExitCode::SUCCESS);
    };
    let now = args.source.now.unwrap_or_else(Utc::now);
    let Some(start_date) = dag.start_date else {
        anyhow::bail!("DAG `{}` has a schedule but no start_date", dag.id);
    };
    let runs = schedule.upcoming(start_date, dag.end_date, now, args.count);
    let tz = dag.timezone;
    let deadline_of = |due: chrono::DateTime<Utc>| {
        dag.sla.and_then(|sla| match sla.deadline {
            Deadline::TimeOfDay(at) => next_time_of_day(due, at, tz),
            Deadline::Within(within) => Some(due + within.to_chrono()),
        })
    };
    match args.format {
        Format::Json => output::json(&json!({
            "dag": dag.id,
            "schedule": schedule.expression(),
            "timezone": tz.name(),
            "runs": runs.iter().map(|run| json!({
                "logical_date": run.start.with_timezone(&tz).to_rfc3339(),
                "data_interval_start": run.start.with_timezone(&tz).to_rfc3339(),
                "data_interval_end": run.end.with_timezone(&tz).to_rfc3339(),
                "due_at": run.end.to_rfc3339(),
                "deadline": deadline_of(run.end).map(|d| d.with_timezone(&tz).to_rfc3339()),
            })).collect::<Vec<_>>(),
        })),
        Format::Text => {
            out!("DAG {}: `{}` in {tz}", dag.id, schedule.expression());
            let rows: Vec<Vec<String>> = runs
                .iter()
                .map(|run| {
                    vec![
                        run.start
                            .with_timezone(&tz)
                            .format("%Y-%m-%d %H:%M %Z")
                            .to_string(),
                        format!(
                            "{} → {}",
                            run.start.with_timezone(&tz).format("%Y-%m-%d %H:%M"),
                            run.end.with_timezone(&tz).format("%Y-%m-%d %H:%M")
                        ),
                        run.end
                            .with_timezone(&tz)
                            .format("%Y-%m-%d %H:%M %Z")
                            .to_string(),
                        run.end.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                        deadline_of(run.end).map_or("-".to_string(), |d| {
                            d.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string()
                        }),
                    ]
                })
                .collect();
            output::table(
                &[
                    "LOGICAL DATE",
                    "DATA INTERVAL",
                    "DUE AT",
                    "DUE AT (UTC)",
                    "DEADLINE",
                ],
                &rows,
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
