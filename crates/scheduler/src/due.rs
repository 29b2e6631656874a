//! Which data intervals of a scheduled DAG are due: Airflow's catch-up semantics.

use chrono::{DateTime, Utc};
use ferry_dag::Dag;
use ferry_dag::timetable::DataInterval;

/// At most this many runs are created for one DAG in one pass (a long catch-up continues in the
/// next pass).
pub const MAX_NEW_RUNS_PER_PASS: usize = 500;

/// The intervals to create runs for, oldest first: those that ended by `now`, start after
/// `latest` (the logical date of the DAG's newest run) and within the DAG's dates. Without
/// `catchup`, only the newest of them.
pub fn due_intervals(
    dag: &Dag,
    latest: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Vec<DataInterval> {
    let (Some(schedule), Some(start_date)) = (&dag.schedule, dag.start_date) else {
        return Vec::new();
    };
    let Some(first) = schedule.at_or_after(start_date) else {
        return Vec::new();
    };
    let within = |interval: &DataInterval| {
        interval.end <= now && dag.end_date.is_none_or(|end| interval.start <= end)
    };
    if !dag.catchup {
        // The newest interval that has ended, if it is newer than the latest run.
        let Some(end) = schedule.previous_before(now + chrono::Duration::nanoseconds(1)) else {
            return Vec::new();
        };
        let Some(start) = schedule.previous_before(end) else {
            return Vec::new();
        };
        let newest = DataInterval { start, end };
        let fresh = latest.is_none_or(|latest| newest.start > latest) && newest.start >= first;
        return if fresh && within(&newest) {
            vec![newest]
        } else {
            Vec::new()
        };
    }
    let from = match latest {
        Some(latest) => schedule.next_after(latest),
        None => Some(first),
    };
    std::iter::successors(
        from.and_then(|start| schedule.interval_from(start)),
        |interval| schedule.interval_from(interval.end),
    )
    .take_while(within)
    .take(MAX_NEW_RUNS_PER_PASS)
    .collect()
}

/// When the next interval after `latest` becomes due (to sleep until then).
pub fn next_due(dag: &Dag, latest: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    let schedule = dag.schedule.as_ref()?;
    let start_date = dag.start_date?;
    let start = match latest {
        Some(latest) => schedule.next_after(latest)?,
        None => schedule.at_or_after(start_date)?,
    };
    if dag.end_date.is_some_and(|end| start > end) {
        return None;
    }
    schedule.next_after(start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_dag::{Templates, parse_dag};
    use std::path::Path;

    fn dag(catchup: bool) -> Dag {
        let text = format!(
            "schedule: '0 2 * * *'\ntimezone: Asia/Tokyo\nstart_date: 2026-11-20\ncatchup: {catchup}\ntasks:\n  - {{id: a, type: noop}}\n"
        );
        parse_dag(Path::new("d.yaml"), &text, &Templates::new())
            .dag
            .expect("valid")
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("instant")
            .with_timezone(&Utc)
    }

    #[test]
    fn catchup_creates_every_missed_interval() {
        let due = due_intervals(&dag(true), None, at("2026-11-23T03:00:00+09:00"));
        let starts: Vec<DateTime<Utc>> = due.iter().map(|i| i.start).collect();
        assert_eq!(
            starts,
            [
                at("2026-11-20T02:00:00+09:00"),
                at("2026-11-21T02:00:00+09:00"),
                at("2026-11-22T02:00:00+09:00")
            ]
        );
        let after = due_intervals(
            &dag(true),
            Some(at("2026-11-21T02:00:00+09:00")),
            at("2026-11-23T03:00:00+09:00"),
        );
        assert_eq!(after.len(), 1);
    }

    #[test]
    fn without_catchup_only_the_latest() {
        let due = due_intervals(&dag(false), None, at("2026-11-23T03:00:00+09:00"));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].start, at("2026-11-22T02:00:00+09:00"));
        assert!(
            due_intervals(
                &dag(false),
                Some(at("2026-11-22T02:00:00+09:00")),
                at("2026-11-23T03:00:00+09:00")
            )
            .is_empty()
        );
    }

    #[test]
    fn the_next_due_time_is_the_end_of_the_next_interval() {
        let next = next_due(&dag(false), Some(at("2026-11-22T02:00:00+09:00")));
        assert_eq!(next, Some(at("2026-11-24T02:00:00+09:00")));
        assert_eq!(
            next_due(&dag(false), None),
            Some(at("2026-11-21T02:00:00+09:00"))
        );
    }
}
