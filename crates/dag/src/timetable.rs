//! Calendar arithmetic: cron schedules in an IANA time zone, daylight-saving policies and
//! Airflow's data intervals. All of ferry's date and time arithmetic lives in this module.
//!
//! A cron expression is matched against the wall clock of the DAG's time zone. Each matching
//! wall-clock time is then turned into an instant:
//! - a time that does not exist (it falls in a spring-forward gap) runs at the first valid instant
//!   after the gap (`dst.gap: shift`, the default, as Vixie cron does) or not at all (`skip`);
//! - a time that occurs twice (fall-back overlap) runs once, at its first occurrence
//!   (`dst.overlap: first`, the default) or its last (`last`).
//!
//! Runs follow Airflow's data-interval semantics: consecutive fire times `s` and `e` make the
//! interval `[s, e)`, whose run has logical date `s` and is due at `e`.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Mutex, OnceLock, PoisonError};

use chrono::{
    DateTime, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone,
    Timelike as _, Utc,
};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What to do with a scheduled wall-clock time that a spring-forward transition skips.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GapPolicy {
    /// Run at the first valid instant after the gap (Vixie cron's behaviour).
    #[default]
    Shift,
    /// Do not run for that time.
    Skip,
}

/// What to do with a scheduled wall-clock time that a fall-back transition repeats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OverlapPolicy {
    /// Run once, at the first occurrence (Vixie cron's behaviour).
    #[default]
    First,
    /// Run once, at the last occurrence.
    Last,
}

#[derive(Clone)]
enum CronProblem {
    Invalid(String),
    NeverFires,
}

/// How many parsed expressions are kept.
const CRON_CACHE_LIMIT: usize = 4096;

/// Parses and checks a cron expression. Parsing costs far more than matching and thousands of
/// DAGs share a few expressions, so results are kept per expression.
fn parse_cron(expression: &str) -> Result<Cron, CronProblem> {
    static PARSED: OnceLock<Mutex<HashMap<String, Result<Cron, CronProblem>>>> = OnceLock::new();
    let cache = PARSED.get_or_init(Default::default);
    if let Some(known) = cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(expression)
    {
        return known.clone();
    }
    let parsed = CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(expression)
        .map_err(|error| {
            CronProblem::Invalid(out_of_range(expression).unwrap_or_else(|| error.to_string()))
        })
        .and_then(|cron| {
            let probe = NaiveDate::from_ymd_opt(2000, 1, 1).map(|d| d.and_time(NaiveTime::MIN));
            match probe.map(|start| cron.find_next_occurrence(&start, false)) {
                Some(Ok(_)) => Ok(cron),
                _ => Err(CronProblem::NeverFires),
            }
        });
    let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
    if cache.len() >= CRON_CACHE_LIMIT {
        // Real deployments have a few dozen distinct expressions; never grow without bound.
        cache.clear();
    }
    cache.insert(expression.to_string(), parsed.clone());
    parsed
}

/// The five cron fields with their ranges.
const CRON_FIELDS: [(&str, u32, u32); 5] = [
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
];

/// A plain reason for a number outside its field's range (`hour 25 is out of range 0-23`).
fn out_of_range(expression: &str) -> Option<String> {
    for (text, (name, low, high)) in expression.split_whitespace().zip(CRON_FIELDS) {
        for part in text.split(',') {
            let range = part.split('/').next().unwrap_or(part);
            for number in range.split('-').filter_map(|n| n.parse::<u32>().ok()) {
                if number < low || number > high {
                    return Some(format!("{name} {number} is out of range {low}-{high}"));
                }
            }
        }
    }
    None
}

/// A DAG's daylight-saving policy (`dst:` in the DAG file).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DstPolicy {
    /// A scheduled time inside a spring-forward gap: `shift` (default) or `skip`.
    #[serde(default)]
    pub gap: GapPolicy,
    /// A scheduled time inside a fall-back overlap: `first` (default) or `last`.
    #[serde(default)]
    pub overlap: OverlapPolicy,
}

/// Why a schedule cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The cron expression does not parse.
    #[error("invalid cron expression `{expression}`: {reason}")]
    InvalidCron {
        /// The expression as written.
        expression: String,
        /// The parser's reason.
        reason: String,
    },
    /// The cron expression parses but no date ever matches it.
    #[error("cron expression `{expression}` never fires (no date matches it)")]
    NeverFires {
        /// The expression as written.
        expression: String,
    },
    /// The time zone is not in the IANA database.
    #[error("unknown time zone `{0}`")]
    UnknownTimezone(String),
}

/// Parses an IANA time zone name (`Asia/Tokyo`, `UTC`).
pub fn parse_timezone(name: &str) -> Result<Tz, ScheduleError> {
    Tz::from_str(name).map_err(|_| ScheduleError::UnknownTimezone(name.to_string()))
}

/// Every IANA time zone name, for suggestions.
pub fn timezone_names() -> impl Iterator<Item = &'static str> {
    chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name())
}

/// The data interval `[start, end)` of one DAG run. The run's logical date is `start`; it is
/// due at `end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct DataInterval {
    /// Start of the interval (inclusive), the run's logical date.
    pub start: DateTime<Utc>,
    /// End of the interval (exclusive), when the run becomes due.
    pub end: DateTime<Utc>,
}

/// A cron schedule in a time zone with its daylight-saving policy.
#[derive(Clone, Debug)]
pub struct Schedule {
    expression: String,
    cron: Cron,
    timezone: Tz,
    dst: DstPolicy,
}

/// How far back (and forward) of an instant's wall-clock time to look for fire times: a
/// fall-back overlap repeats up to this much wall-clock time (the longest in the IANA
/// database since 1970 is two hours).
const OVERLAP_MARGIN: Duration = Duration::hours(3);

/// The cron nicknames ferry accepts besides five-field expressions.
pub const CRON_NICKNAMES: [&str; 6] = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@hourly",
];

impl Schedule {
    /// Parses a five-field cron expression (or a nickname such as `@daily`) for a time zone.
    pub fn new(expression: &str, timezone: Tz, dst: DstPolicy) -> Result<Self, ScheduleError> {
        let invalid = |reason: String| ScheduleError::InvalidCron {
            expression: expression.to_string(),
            reason,
        };
        let trimmed = expression.trim();
        if let Some(nickname) = trimmed.strip_prefix('@') {
            if !CRON_NICKNAMES.contains(&trimmed.to_lowercase().as_str()) {
                return Err(invalid(format!(
                    "unknown nickname `@{nickname}` (known: {})",
                    CRON_NICKNAMES.join(", ")
                )));
            }
        } else {
            let fields = trimmed.split_whitespace().count();
            if fields != 5 {
                return Err(invalid(format!(
                    "expected 5 fields (minute hour day-of-month month day-of-week), found {fields}"
                )));
            }
        }
        let cron = parse_cron(trimmed).map_err(|error| match error {
            CronProblem::Invalid(reason) => invalid(reason),
            CronProblem::NeverFires => ScheduleError::NeverFires {
                expression: expression.to_string(),
            },
        })?;
        Ok(Self {
            expression: expression.to_string(),
            cron,
            timezone,
            dst,
        })
    }

    /// The expression as written.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The schedule's time zone.
    pub fn timezone(&self) -> Tz {
        self.timezone
    }

    /// The daylight-saving policy.
    pub fn dst(&self) -> DstPolicy {
        self.dst
    }

    /// The instant a matching wall-clock time stands for, under the DST policy; `None` when the
    /// policy skips it.
    fn resolve(&self, local: NaiveDateTime) -> Option<DateTime<Utc>> {
        resolve_local(self.timezone, self.dst, local)
    }

    /// The first fire time strictly after `instant`.
    pub fn next_after(&self, instant: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = instant.with_timezone(&self.timezone).naive_local();
        let mut cursor = local.checked_sub_signed(OVERLAP_MARGIN)?;
        loop {
            let candidate = self.cron.find_next_occurrence(&cursor, false).ok()?;
            if let Some(at) = self.resolve(candidate)
                && at > instant
            {
                return Some(at);
            }
            cursor = candidate;
        }
    }

    /// The last fire time strictly before `instant`.
    pub fn previous_before(&self, instant: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = instant.with_timezone(&self.timezone).naive_local();
        let mut cursor = local.checked_add_signed(OVERLAP_MARGIN)?;
        loop {
            let candidate = self.cron.find_previous_occurrence(&cursor, false).ok()?;
            if let Some(at) = self.resolve(candidate)
                && at < instant
            {
                return Some(at);
            }
            cursor = candidate;
        }
    }

    /// The first fire time at or after `instant`.
    pub fn at_or_after(&self, instant: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.next_after(instant - Duration::nanoseconds(1))
    }

    /// The data interval that starts at the fire time `start`.
    pub fn interval_from(&self, start: DateTime<Utc>) -> Option<DataInterval> {
        Some(DataInterval {
            start,
            end: self.next_after(start)?,
        })
    }

    /// The next `count` runs not yet due at `now`: the interval in progress at `now` and those
    /// after it, never starting before `start_date` nor after `end_date`.
    pub fn upcoming(
        &self,
        start_date: DateTime<Utc>,
        end_date: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        count: usize,
    ) -> Vec<DataInterval> {
        let Some(first) = self.at_or_after(start_date) else {
            return Vec::new();
        };
        let in_progress = self
            .previous_before(now + Duration::nanoseconds(1))
            .filter(|start| *start >= first)
            .unwrap_or(first);
        std::iter::successors(self.interval_from(in_progress), |interval| {
            self.interval_from(interval.end)
        })
        .take_while(|interval| end_date.is_none_or(|end| interval.start <= end))
        .take(count)
        .collect()
    }

    /// Every time in `[from, to)` that the schedule meets a daylight-saving transition: a fire
    /// time in a spring-forward gap or a fall-back overlap.
    pub fn dst_encounters(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DstEncounter> {
        transitions(self.timezone, from, to)
            .into_iter()
            .filter_map(|transition| self.encounter(transition))
            .collect()
    }

    fn encounter(&self, transition: Transition) -> Option<DstEncounter> {
        let utc_naive = transition.at.naive_utc();
        let before = utc_naive + Duration::seconds(i64::from(transition.offset_before));
        let after = utc_naive + Duration::seconds(i64::from(transition.offset_after));
        let (kind, window_start, window_end) = if after > before {
            (DstKind::Gap, before, after)
        } else {
            (DstKind::Overlap, after, before)
        };
        let fire = self.cron.find_next_occurrence(&window_start, true).ok()?;
        (fire < window_end).then(|| DstEncounter {
            kind,
            window_start,
            window_end,
            scheduled: fire,
            runs_at: self.resolve(fire),
        })
    }
}

/// The instant a wall-clock time in `timezone` stands for under `dst`; `None` when it is skipped.
fn resolve_local(timezone: Tz, dst: DstPolicy, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match timezone.from_local_datetime(&local) {
        LocalResult::Single(at) => Some(at.with_timezone(&Utc)),
        LocalResult::Ambiguous(first, last) => Some(match dst.overlap {
            OverlapPolicy::First => first.with_timezone(&Utc),
            OverlapPolicy::Last => last.with_timezone(&Utc),
        }),
        LocalResult::None => match dst.gap {
            GapPolicy::Shift => end_of_gap(timezone, local),
            GapPolicy::Skip => None,
        },
    }
}

/// The first valid instant after the gap that swallows `local`.
fn end_of_gap(timezone: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    // Gaps last minutes to hours (a day at most, Samoa 2011); transitions fall on whole minutes.
    let mut probe = local.with_second(0)?;
    for _ in 0..=(26 * 60) {
        probe += Duration::minutes(1);
        if let Some(at) = timezone.from_local_datetime(&probe).earliest() {
            return Some(at.with_timezone(&Utc));
        }
    }
    None
}

/// Whether a schedule meets a gap or an overlap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DstKind {
    /// Spring forward: wall-clock times in the window do not exist.
    Gap,
    /// Fall back: wall-clock times in the window occur twice.
    Overlap,
}

/// A fire time of a schedule that meets a daylight-saving transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct DstEncounter {
    /// Gap or overlap.
    pub kind: DstKind,
    /// First wall-clock time of the gap or overlap.
    pub window_start: NaiveDateTime,
    /// First wall-clock time after it.
    pub window_end: NaiveDateTime,
    /// The wall-clock time the schedule asks for.
    pub scheduled: NaiveDateTime,
    /// When it runs under the DAG's policy (`None`: skipped).
    pub runs_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Copy, Debug)]
struct Transition {
    at: DateTime<Utc>,
    offset_before: i32,
    offset_after: i32,
}

fn offset_at(timezone: Tz, instant: DateTime<Utc>) -> i32 {
    timezone
        .offset_from_utc_datetime(&instant.naive_utc())
        .fix()
        .local_minus_utc()
}

/// The UTC-offset changes of `timezone` in `[from, to)`, found day by day and then narrowed to
/// the second (zones change their offset at most once a day).
fn transitions(timezone: Tz, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Transition> {
    let mut found = Vec::new();
    let mut day_start = from;
    let mut offset = offset_at(timezone, day_start);
    while day_start < to {
        let day_end = (day_start + Duration::days(1)).min(to);
        let offset_end = offset_at(timezone, day_end);
        if offset_end != offset {
            let (mut low, mut high) = (day_start, day_end);
            while high - low > Duration::seconds(1) {
                let middle = low + (high - low) / 2;
                if offset_at(timezone, middle) == offset {
                    low = middle;
                } else {
                    high = middle;
                }
            }
            found.push(Transition {
                at: high,
                offset_before: offset,
                offset_after: offset_end,
            });
        }
        offset = offset_end;
        day_start = day_end;
    }
    found
}

/// A local date or date-time (`2026-01-01`, `2026-01-01T06:00`) in `timezone`, or an RFC 3339
/// instant with its own offset (`2026-01-01T06:00:00+09:00`), as an instant. A local time in a
/// gap moves to the gap's end; one in an overlap takes its first occurrence.
pub fn parse_instant(text: &str, timezone: Tz) -> Option<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at.with_timezone(&Utc));
    }
    let local = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(|date| date.and_time(NaiveTime::MIN))
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S"))
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M"))
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S"))
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M"))
        .ok()?;
    resolve_local(timezone, DstPolicy::default(), local)
}

/// Parses a wall-clock time of day `HH:MM` (as in `sla.deadline`).
pub fn parse_time_of_day(text: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(text, "%H:%M").ok()
}

/// The first `deadline` wall-clock time in `timezone` strictly after `after` (the SLA deadline of
/// a run due at `after`).
pub fn next_time_of_day(
    after: DateTime<Utc>,
    deadline: NaiveTime,
    timezone: Tz,
) -> Option<DateTime<Utc>> {
    let local_date = after.with_timezone(&timezone).date_naive();
    (0..3).find_map(|days| {
        let date = local_date.checked_add_signed(Duration::days(days))?;
        let at = timezone
            .from_local_datetime(&date.and_time(deadline))
            .earliest()?;
        let at = at.with_timezone(&Utc);
        (at > after).then_some(at)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("valid instant")
            .with_timezone(&Utc)
    }

    fn schedule(expression: &str, zone: &str, dst: DstPolicy) -> Schedule {
        Schedule::new(expression, parse_timezone(zone).expect("zone"), dst).expect("schedule")
    }

    fn fires(schedule: &Schedule, from: &str, count: usize) -> Vec<String> {
        std::iter::successors(schedule.next_after(utc(from)), |at| {
            schedule.next_after(*at)
        })
        .take(count)
        .map(|at| at.with_timezone(&schedule.timezone()).to_rfc3339())
        .collect()
    }

    #[test]
    fn rejects_malformed_expressions_with_reason() {
        let tz = parse_timezone("UTC").expect("zone");
        let six = Schedule::new("0 0 6 * * *", tz, DstPolicy::default()).expect_err("six fields");
        assert!(six.to_string().contains("expected 5 fields"), "{six}");
        let range = Schedule::new("61 * * * *", tz, DstPolicy::default()).expect_err("minute 61");
        assert_eq!(
            range.to_string(),
            "invalid cron expression `61 * * * *`: minute 61 is out of range 0-59"
        );
        let never = Schedule::new("0 0 30 2 *", tz, DstPolicy::default()).expect_err("Feb 30");
        assert!(matches!(never, ScheduleError::NeverFires { .. }), "{never}");
        assert!(Schedule::new("@fortnightly", tz, DstPolicy::default()).is_err());
        assert!(Schedule::new("@daily", tz, DstPolicy::default()).is_ok());
    }

    #[test]
    fn tokyo_daily_has_no_surprises() {
        let daily = schedule("0 6 * * *", "Asia/Tokyo", DstPolicy::default());
        assert_eq!(
            fires(&daily, "2026-12-31T00:00:00Z", 3),
            [
                "2027-01-01T06:00:00+09:00",
                "2027-01-02T06:00:00+09:00",
                "2027-01-03T06:00:00+09:00"
            ]
        );
        let year = daily.dst_encounters(utc("2026-01-01T00:00:00Z"), utc("2027-01-01T00:00:00Z"));
        assert!(year.is_empty());
    }

    #[test]
    fn new_york_spring_forward_gap_shifts_or_skips() {
        // 2027-03-14: 02:00 EST jumps to 03:00 EDT.
        let shift = schedule("30 2 * * *", "America/New_York", DstPolicy::default());
        assert_eq!(
            fires(&shift, "2027-03-13T00:00:00Z", 3),
            [
                "2027-03-13T02:30:00-05:00",
                "2027-03-14T03:00:00-04:00",
                "2027-03-15T02:30:00-04:00"
            ]
        );
        let skip = schedule(
            "30 2 * * *",
            "America/New_York",
            DstPolicy {
                gap: GapPolicy::Skip,
                ..DstPolicy::default()
            },
        );
        assert_eq!(
            fires(&skip, "2027-03-13T00:00:00Z", 2),
            ["2027-03-13T02:30:00-05:00", "2027-03-15T02:30:00-04:00"]
        );
    }

    #[test]
    fn quarter_hours_in_a_gap_collapse_into_one_run() {
        let every_quarter = schedule("*/15 2-3 14 3 *", "America/New_York", DstPolicy::default());
        assert_eq!(
            fires(&every_quarter, "2027-03-14T00:00:00Z", 4),
            [
                "2027-03-14T03:00:00-04:00",
                "2027-03-14T03:15:00-04:00",
                "2027-03-14T03:30:00-04:00",
                "2027-03-14T03:45:00-04:00"
            ]
        );
    }

    #[test]
    fn new_york_fall_back_overlap_runs_once() {
        // 2027-11-07: 02:00 EDT falls back to 01:00 EST; 01:30 happens twice.
        let first = schedule("30 1 * * *", "America/New_York", DstPolicy::default());
        assert_eq!(
            fires(&first, "2027-11-06T12:00:00Z", 3),
            [
                "2027-11-07T01:30:00-04:00",
                "2027-11-08T01:30:00-05:00",
                "2027-11-09T01:30:00-05:00"
            ]
        );
        let last = schedule(
            "30 1 * * *",
            "America/New_York",
            DstPolicy {
                overlap: OverlapPolicy::Last,
                ..DstPolicy::default()
            },
        );
        assert_eq!(
            fires(&last, "2027-11-06T12:00:00Z", 1),
            ["2027-11-07T01:30:00-05:00"]
        );
    }

    #[test]
    fn hourly_in_london_has_one_run_per_distinct_instant() {
        // 2027-10-31: 02:00 BST falls back to 01:00 GMT.
        let hourly = schedule("0 * * * *", "Europe/London", DstPolicy::default());
        assert_eq!(
            fires(&hourly, "2027-10-30T23:30:00Z", 4),
            [
                "2027-10-31T01:00:00+01:00",
                "2027-10-31T02:00:00+00:00",
                "2027-10-31T03:00:00+00:00",
                "2027-10-31T04:00:00+00:00"
            ]
        );
        // 2027-03-28: 01:00 GMT jumps to 02:00 BST.
        assert_eq!(
            fires(&hourly, "2027-03-27T23:30:00Z", 3),
            [
                "2027-03-28T00:00:00+00:00",
                "2027-03-28T02:00:00+01:00",
                "2027-03-28T03:00:00+01:00"
            ]
        );
    }

    #[test]
    fn southern_hemisphere_transitions_are_found() {
        // Sydney: clocks go back on 2027-04-04 (03:00 -> 02:00) and forward on 2027-10-03 (02:00 -> 03:00).
        let at_230 = schedule("30 2 * * *", "Australia/Sydney", DstPolicy::default());
        let year = at_230.dst_encounters(utc("2027-01-01T00:00:00Z"), utc("2028-01-01T00:00:00Z"));
        let kinds: Vec<_> = year
            .iter()
            .map(|e| (e.kind, e.scheduled.date().to_string()))
            .collect();
        assert_eq!(
            kinds,
            [
                (DstKind::Overlap, "2027-04-04".to_string()),
                (DstKind::Gap, "2027-10-03".to_string())
            ]
        );
        assert_eq!(
            fires(&at_230, "2027-10-02T00:00:00Z", 2),
            ["2027-10-03T03:00:00+11:00", "2027-10-04T02:30:00+11:00"]
        );
    }

    #[test]
    fn schedules_that_avoid_transitions_meet_none() {
        let at_six = schedule("0 6 * * *", "America/New_York", DstPolicy::default());
        assert!(
            at_six
                .dst_encounters(utc("2027-01-01T00:00:00Z"), utc("2028-01-01T00:00:00Z"))
                .is_empty()
        );
    }

    #[test]
    fn upcoming_follows_data_intervals() {
        let daily = schedule("0 2 * * *", "Asia/Tokyo", DstPolicy::default());
        let start = parse_instant("2026-11-01", daily.timezone()).expect("date");
        let runs = daily.upcoming(start, None, utc("2026-11-25T00:00:00Z"), 2);
        let shown: Vec<_> = runs
            .iter()
            .map(|i| {
                (
                    i.start.with_timezone(&daily.timezone()).to_rfc3339(),
                    i.end.with_timezone(&daily.timezone()).to_rfc3339(),
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                (
                    "2026-11-25T02:00:00+09:00".to_string(),
                    "2026-11-26T02:00:00+09:00".to_string()
                ),
                (
                    "2026-11-26T02:00:00+09:00".to_string(),
                    "2026-11-27T02:00:00+09:00".to_string()
                )
            ]
        );
        let before_start = daily.upcoming(
            utc("2027-01-10T00:00:00Z"),
            None,
            utc("2026-11-25T00:00:00Z"),
            1,
        );
        assert_eq!(before_start[0].start, utc("2027-01-10T17:00:00Z"));
        let ended = daily.upcoming(
            start,
            Some(utc("2026-11-20T00:00:00Z")),
            utc("2026-11-25T00:00:00Z"),
            2,
        );
        assert!(ended.is_empty());
    }

    #[test]
    fn deadlines_are_the_next_wall_clock_time() {
        let tokyo = parse_timezone("Asia/Tokyo").expect("zone");
        let eight = parse_time_of_day("08:00").expect("time");
        // A run due at 02:00 JST must finish by 08:00 JST the same morning.
        let due = utc("2026-11-25T17:00:00Z");
        assert_eq!(
            next_time_of_day(due, eight, tokyo),
            Some(utc("2026-11-25T23:00:00Z"))
        );
        assert!(parse_time_of_day("8am").is_none());
    }

    #[test]
    fn parses_dates_in_the_dag_time_zone() {
        let tokyo = parse_timezone("Asia/Tokyo").expect("zone");
        assert_eq!(
            parse_instant("2026-01-01", tokyo),
            Some(utc("2025-12-31T15:00:00Z"))
        );
        assert_eq!(
            parse_instant("2026-01-01T06:30", tokyo),
            Some(utc("2025-12-31T21:30:00Z"))
        );
        assert_eq!(
            parse_instant("2026-01-01T00:00:00Z", tokyo),
            Some(utc("2026-01-01T00:00:00Z"))
        );
        assert_eq!(parse_instant("yesterday", tokyo), None);
    }
}
