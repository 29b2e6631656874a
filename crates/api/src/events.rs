//! The event log: every run and task state change with who made it and why, for one run, for
//! the whole system a page at a time, or as a stream of server-sent events that a UI or a chat
//! bot follows.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use ferry_store::EventRecord;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::problem::{NeedsToken, Problem};
use crate::runs::{run_for, time};
use crate::{Shared, State};

/// The most events one page holds.
const MOST: i64 = 1000;
/// How often the stream looks for new events.
const STREAM_EVERY: Duration = Duration::from_millis(500);

/// One state change.
#[derive(Serialize, ToSchema)]
pub(crate) struct Event {
    /// Its number: events are numbered in the order they happened.
    id: i64,
    /// When (RFC 3339, UTC).
    at: String,
    /// The DAG.
    dag_id: String,
    /// The run.
    run_id: String,
    /// The task, for a task's change; none for the run's.
    task_id: Option<String>,
    /// The attempt, for a task's change.
    try_number: Option<i64>,
    /// The state before.
    from_state: Option<String>,
    /// The state after.
    to_state: String,
    /// What made the change: `scheduler`, `executor`, `retry`, `timeout`, `operator`, ...
    cause: String,
    /// Details for people.
    detail: String,
    /// Who, for an operator's change (an OS user, `api token NAME`).
    actor: Option<String>,
    /// Why, as the operator said.
    reason: Option<String>,
}

/// Events, oldest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct EventList {
    /// The events.
    events: Vec<Event>,
    /// Pass it as `after` for the next page (the last event's id); none when no event came.
    next_after: Option<i64>,
}

/// Which events.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsQuery {
    /// Only events after this one (its `id`; default 0: from the first).
    #[param(minimum = 0)]
    after: Option<i64>,
    /// At most this many (1–1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// The event log of a run, oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/runs/{run_id}/events",
    params(("run_id" = String, Path, description = "The run's id")),
    security(("bearer" = [])),
    responses(
        NeedsToken,
        (status = 200, description = "The run's events", body = EventList),
        (status = 404, description = "No run has this id", content_type = "application/problem+json"),
    )
)]
pub(crate) async fn of_run(
    caller: Caller,
    axum::extract::State(shared): State,
    Path(run_id): Path<String>,
) -> Result<Json<EventList>, Problem> {
    let run = run_for(&shared, &caller, &run_id).await?;
    let events = shared
        .store
        .events(&run.run_id)
        .await
        .map_err(|e| Problem::store(&e))?;
    Ok(Json(list(&events)))
}

/// The system's event log, oldest first, a page at a time (the DAGs the token may see).
#[utoipa::path(
    get,
    path = "/api/v1/events",
    params(EventsQuery),
    security(("bearer" = [])),
    responses(
        NeedsToken,
        (status = 200, description = "Events", body = EventList),
        (status = 422, description = "A parameter is not as described", content_type = "application/problem+json"),
    )
)]
pub(crate) async fn all(
    caller: Caller,
    axum::extract::State(shared): State,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<EventList>, Problem> {
    let Query(query) =
        query.map_err(|e| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, e.body_text()))?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=MOST).contains(&limit) {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("`limit`: {limit} is not between 1 and {MOST}"),
        ));
    }
    if let Some(after) = query.after.filter(|a| *a < 0) {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("`after`: {after} is not an event's id (0 or more)"),
        ));
    }
    let scope = shared.dags_in_scope(&caller);
    let events = shared
        .store
        .events_since(query.after.unwrap_or(0), limit, scope.as_deref())
        .await
        .map_err(|e| Problem::store(&e))?;
    Ok(Json(list(&events)))
}

/// Run and task state changes as server-sent events, from the one after `Last-Event-ID` (or
/// `after`; without either, from now on). Each event's `id` is the event's number, its
/// `event` is `run` or `task`, its data the event as `GET /api/v1/events` gives it.
#[utoipa::path(
    get,
    path = "/api/v1/events/stream",
    params(
        EventsQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "The last event received: the stream goes on after it"),
    ),
    security(("bearer" = [])),
    responses(
        NeedsToken,
        (status = 200, description = "A stream of events", content_type = "text/event-stream"),
        (status = 422, description = "A parameter is not as described", content_type = "application/problem+json"),
    )
)]
pub(crate) async fn stream(
    caller: Caller,
    axum::extract::State(shared): State,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>>, Problem> {
    let Query(query) =
        query.map_err(|e| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, e.body_text()))?;
    let resumed = match headers.get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .ok_or_else(|| {
                    Problem::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "`Last-Event-ID`: expected the id of an event this stream sent",
                    )
                })?,
        ),
    };
    let after = match resumed.or(query.after) {
        Some(after) => after,
        None => latest_id(&shared).await?,
    };
    let follower = Follower {
        shared,
        caller,
        after,
        waiting: std::collections::VecDeque::new(),
        missing: std::collections::BTreeMap::new(),
    };
    let stream = futures_util::stream::unfold(follower, |mut follower| async move {
        let event = follower.next().await;
        let kind = if event.task_id.is_some() {
            "task"
        } else {
            "run"
        };
        let sent = SseEvent::default()
            .id(event.id.to_string())
            .event(kind)
            .json_data(shown(&event))
            .unwrap_or_default();
        Some((Ok(sent), follower))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// How long an event id skipped over is looked for: on PostgreSQL a transaction can commit its
/// event after a later one's (an id never committed, rolled back, is given up after this).
const MISSING_FOR: Duration = Duration::from_secs(10);
/// The most skipped ids looked for at once.
const MOST_MISSING: usize = 10_000;

/// Reads the event log as it grows, for one stream.
struct Follower {
    shared: Arc<Shared>,
    caller: Caller,
    /// The highest id read.
    after: i64,
    /// Events read, not sent yet.
    waiting: std::collections::VecDeque<EventRecord>,
    /// Ids below `after` not read yet, and since when they are missing.
    missing: std::collections::BTreeMap<i64, std::time::Instant>,
}

impl Follower {
    /// The next event the caller may see, waiting for it.
    async fn next(&mut self) -> EventRecord {
        loop {
            if let Some(event) = self.waiting.pop_front() {
                return event;
            }
            tokio::time::sleep(STREAM_EVERY).await;
            // A store that does not answer for a moment: try again at the next tick.
            let _ = self.read().await;
        }
    }

    /// Reads what was written since the last read, and what was missing then and is there now.
    async fn read(&mut self) -> Result<(), ferry_store::StoreError> {
        // Every event is read (ids of other DAGs' events are not gaps), then kept to the scope.
        let fresh = self
            .shared
            .store
            .events_since(self.after, MOST, None)
            .await?;
        let now = std::time::Instant::now();
        let mut expected = self.after + 1;
        for event in &fresh {
            for id in expected..event.id {
                if self.missing.len() < MOST_MISSING {
                    self.missing.insert(id, now);
                }
            }
            expected = event.id + 1;
        }
        self.missing
            .retain(|_, since| now.duration_since(*since) < MISSING_FOR);
        let wanted: Vec<i64> = self.missing.keys().copied().collect();
        let late = self.shared.store.events_with_ids(&wanted, None).await?;
        for event in &late {
            self.missing.remove(&event.id);
        }
        if let Some(last) = fresh.last() {
            self.after = last.id;
        }
        let scope = self.shared.dags_in_scope(&self.caller);
        self.waiting.extend(
            late.into_iter()
                .chain(fresh)
                .filter(|e| scope.as_ref().is_none_or(|dags| dags.contains(&e.dag_id))),
        );
        Ok(())
    }
}

/// The number of the latest event (0 without any).
async fn latest_id(shared: &Arc<Shared>) -> Result<i64, Problem> {
    shared
        .store
        .latest_event_id()
        .await
        .map_err(|e| Problem::store(&e))
}

fn list(events: &[EventRecord]) -> EventList {
    EventList {
        events: events.iter().map(shown).collect(),
        next_after: events.last().map(|e| e.id),
    }
}

fn shown(record: &EventRecord) -> Event {
    Event {
        id: record.id,
        at: time(record.at),
        dag_id: record.dag_id.clone(),
        run_id: record.run_id.clone(),
        task_id: record.task_id.clone(),
        try_number: record.try_number,
        from_state: record.from_state.clone(),
        to_state: record.to_state.clone(),
        cause: record.cause.clone(),
        detail: record.detail.clone(),
        actor: record.actor.clone(),
        reason: record.reason.clone(),
    }
}
