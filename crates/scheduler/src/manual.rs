//! Runs made by hand (`ferry run`, `ferry trigger`, `POST /api/v1/dags/{dag}/runs`): which data
//! interval a date means, when a run for it is refused, and making the run, at most once per
//! `Idempotency-Key`.

use chrono::{DateTime, Duration, SubsecRound as _, Utc};
use ferry_dag::Dag;
use ferry_dag::timetable::{DataInterval, parse_instant};
use ferry_store::{ManualRequest, ManualRun, RunRecord, Store, StoreError};

use crate::engine::{content_hash, new_instances, run_id};

/// Why a run was not made.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The date given is not one.
    #[error("`{0}` is not a date (write 2026-11-24)")]
    BadDate(String),
    /// The schedule has no interval at the date given.
    #[error("the schedule of DAG `{0}` has no interval there")]
    NoInterval(String),
    /// The interval has not ended, so its data is not complete.
    #[error(
        "the interval {start} .. {end} of DAG `{dag}` has not ended yet, so its data is not complete (force it: `--force`, or \"force\": true over HTTP)"
    )]
    NotEnded {
        /// The DAG.
        dag: String,
        /// The interval's start, in the DAG's timezone.
        start: String,
        /// Its end.
        end: String,
    },
    /// The interval begins before the DAG's `start_date`.
    #[error(
        "the interval starting {start} is before the start_date {start_date} of DAG `{dag}` (force it: `--force`, or \"force\": true over HTTP)"
    )]
    BeforeStartDate {
        /// The DAG.
        dag: String,
        /// The interval's start, in the DAG's timezone.
        start: String,
        /// The DAG's start date.
        start_date: String,
    },
    /// The parameters do not fit their declarations.
    #[error("{0}")]
    Params(String),
    /// The DAG already has a run for that logical date.
    #[error(
        "DAG `{dag}` already has a run for logical date {logical}: {run_id} ({state}); see it with `ferry runs show RUN`, or run it again with `ferry runs rerun RUN` or `ferry tasks clear RUN`"
    )]
    Exists {
        /// The DAG.
        dag: String,
        /// The logical date, in the DAG's timezone.
        logical: String,
        /// The run that has it.
        run_id: String,
        /// Its state.
        state: String,
    },
    /// The run id asked for is another run's.
    #[error("a run has the id `{run_id}` already; run ids are unique")]
    IdTaken {
        /// The id.
        run_id: String,
    },
    /// The idempotency key was given with another request before.
    #[error(
        "the Idempotency-Key `{key}` was used for another request (run {run_id}); a key names one request: use a new key for a different one"
    )]
    KeyReused {
        /// The key.
        key: String,
        /// The run made for the key's first request.
        run_id: String,
    },
}

/// The data interval a manual run of `dag` for `date` covers (the latest complete interval
/// without a date); for a DAG without a schedule, the instant itself.
pub fn interval_for(
    dag: &Dag,
    date: Option<&str>,
    now: DateTime<Utc>,
) -> Result<DataInterval, TriggerError> {
    let at = match date {
        Some(text) => Some(
            parse_instant(text, dag.timezone)
                .ok_or_else(|| TriggerError::BadDate(text.to_string()))?,
        ),
        None => None,
    };
    let Some(schedule) = &dag.schedule else {
        // Run ids and logical dates carry microseconds, as Airflow's do.
        let at = at.unwrap_or(now).trunc_subsecs(6);
        return Ok(DataInterval { start: at, end: at });
    };
    let start = match at {
        Some(at) => schedule.at_or_after(at),
        None => schedule
            .previous_before(now + Duration::nanoseconds(1))
            .and_then(|end| schedule.previous_before(end)),
    };
    start
        .and_then(|s| schedule.interval_from(s))
        .ok_or_else(|| TriggerError::NoInterval(dag.id.clone()))
}

/// A run for `interval` is refused (unless forced) when the interval has not ended yet (its
/// data is not complete) or begins before the DAG's `start_date`.
pub fn check_interval(
    dag: &Dag,
    interval: DataInterval,
    now: DateTime<Utc>,
) -> Result<(), TriggerError> {
    let tz = dag.timezone;
    if interval.end > now {
        return Err(TriggerError::NotEnded {
            dag: dag.id.clone(),
            start: interval.start.with_timezone(&tz).to_rfc3339(),
            end: interval.end.with_timezone(&tz).to_rfc3339(),
        });
    }
    if let Some(start) = dag.start_date.filter(|start| interval.start < *start) {
        return Err(TriggerError::BeforeStartDate {
            dag: dag.id.clone(),
            start: interval.start.with_timezone(&tz).to_rfc3339(),
            start_date: start.with_timezone(&tz).to_rfc3339(),
        });
    }
    Ok(())
}

/// A manual run to make.
pub struct Trigger<'a> {
    /// The DAG, as loaded now.
    pub dag: &'a Dag,
    /// Its recorded version.
    pub version_id: i64,
    /// The date asked for, as given (none: the latest complete interval).
    pub date: Option<&'a str>,
    /// Run it even if its interval has not ended or is before the `start_date`.
    pub force: bool,
    /// The parameters, checked already.
    pub conf: &'a serde_json::Map<String, serde_json::Value>,
    /// Who asks (`api token NAME`, an OS user), for the event log.
    pub actor: &'a str,
    /// Why.
    pub reason: Option<&'a str>,
    /// The client's key for this request: the same key gives the same run.
    pub idempotency_key: Option<&'a str>,
    /// The run's id (Airflow's `dag_run_id`); default `DAG__manual__LOGICAL-DATE`.
    pub run_id: Option<&'a str>,
}

/// A run made by [`trigger`].
#[derive(Debug)]
pub struct Triggered {
    /// The run.
    pub run: RunRecord,
    /// True when the idempotency key had made it before (nothing new was made).
    pub replayed: bool,
}

/// Makes a manual run of `request.dag` (queued, for the engine that owns the store to start),
/// at most once per idempotency key: a request repeated with its key gets the run its first
/// call made, even when both calls race.
pub async fn trigger(
    store: &Store,
    request: &Trigger<'_>,
    now: DateTime<Utc>,
) -> Result<Triggered, TriggerError> {
    let dag = request.dag;
    let fingerprint = content_hash(
        &serde_json::json!([request.date, request.force, request.conf, request.run_id]).to_string(),
    );
    let key = request
        .idempotency_key
        .map(|key| (key, fingerprint.as_str()));
    if let Some((key, fingerprint)) = key
        && let Some(run) = replay(store, &dag.id, key, fingerprint).await?
    {
        return Ok(run);
    }
    let interval = interval_for(dag, request.date, now)?;
    if !request.force && request.date.is_some() {
        check_interval(dag, interval, now)?;
    }
    let id = match request.run_id {
        Some(id) => {
            if store.run(id).await?.is_some() {
                return Err(TriggerError::IdTaken {
                    run_id: id.to_string(),
                });
            }
            id.to_string()
        }
        None => run_id(&dag.id, "manual", interval),
    };
    let conf = serde_json::Value::Object(request.conf.clone()).to_string();
    let tasks = new_instances(dag);
    let run = ferry_store::NewRun {
        dag_id: &dag.id,
        run_id: &id,
        interval_start: interval.start.timestamp_millis(),
        interval_end: interval.end.timestamp_millis(),
        run_type: "manual",
        conf: &conf,
        dag_version_id: request.version_id,
        at: now.timestamp_millis(),
    };
    let asked = ManualRequest {
        actor: request.actor,
        reason: request.reason,
        key,
    };
    match store.create_manual_run(&run, &tasks, &asked).await? {
        ManualRun::Created(run) => {
            store.wake().await?;
            Ok(Triggered {
                run,
                replayed: false,
            })
        }
        ManualRun::Taken => {
            if let Some((key, fingerprint)) = key
                && let Some(run) = replay(store, &dag.id, key, fingerprint).await?
            {
                return Ok(run);
            }
            Err(TriggerError::IdTaken { run_id: id })
        }
        ManualRun::DateTaken(existing) => {
            // A call racing ours with the same key made the run first.
            if let Some((key, fingerprint)) = key
                && let Some(run) = replay(store, &dag.id, key, fingerprint).await?
            {
                return Ok(run);
            }
            Err(TriggerError::Exists {
                dag: dag.id.clone(),
                logical: interval.start.with_timezone(&dag.timezone).to_rfc3339(),
                run_id: existing.run_id,
                state: existing.state,
            })
        }
    }
}

/// The run an idempotency key made before, if any; the key given with another request is an
/// error.
async fn replay(
    store: &Store,
    dag_id: &str,
    key: &str,
    fingerprint: &str,
) -> Result<Option<Triggered>, TriggerError> {
    let Some((run, their_fingerprint)) = store.run_of_idempotency_key(dag_id, key).await? else {
        return Ok(None);
    };
    if their_fingerprint != fingerprint {
        return Err(TriggerError::KeyReused {
            key: key.to_string(),
            run_id: run.run_id,
        });
    }
    Ok(Some(Triggered {
        run,
        replayed: true,
    }))
}
