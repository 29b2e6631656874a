//! `GET /metrics` (no token, OpenMetrics text for Prometheus): runs and task instances by
//! state, slots in use per pool and the queue, the scheduler loop's lag, task durations per
//! DAG, API request latency by route and status, and DAG load errors.
//!
//! Counts by state are read from the store at each scrape (so they are right after a
//! restart); durations and latencies are counted by this process since it started, as
//! Prometheus expects of histograms.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use ferry_scheduler::{LoopGauges, Progress};
use ferry_store::{RunState, TaskState};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::State;
use crate::problem::Problem;

/// Labels of a series: (name, value) pairs.
type Labels = Vec<(&'static str, String)>;

/// ferry's metrics, shared by the engine's observer, the API's middleware and the scrape.
pub struct Metrics {
    registry: Registry,
    runs: Family<Labels, Gauge>,
    task_instances: Family<Labels, Gauge>,
    slots_in_use: Family<Labels, Gauge>,
    slots: Family<Labels, Gauge>,
    queue_depth: Gauge,
    loop_lag: Gauge<f64, AtomicU64>,
    load_errors: Gauge,
    requests: Family<Labels, Histogram>,
    task_durations: Family<Labels, Histogram>,
    /// When each running attempt began, as the engine reported it: (run, task, try).
    started: Mutex<HashMap<(String, String, i64), DateTime<Utc>>>,
    /// Pools and their slots, as configured.
    pools: Vec<(String, i64)>,
    /// The engine's loop figures, once the engine runs.
    engine: Mutex<Option<Arc<LoopGauges>>>,
}

impl Metrics {
    /// Metrics for an engine with `pools` (name, slots; `default` included).
    pub fn new(pools: Vec<(String, i64)>) -> Arc<Self> {
        let mut registry = Registry::with_prefix("ferry");
        let runs = Family::<Labels, Gauge>::default();
        registry.register("dag_runs", "DAG runs by state", runs.clone());
        let task_instances = Family::<Labels, Gauge>::default();
        registry.register(
            "task_instances",
            "Task instances by state",
            task_instances.clone(),
        );
        let slots_in_use = Family::<Labels, Gauge>::default();
        registry.register(
            "pool_slots_in_use",
            "Attempts running in each pool",
            slots_in_use.clone(),
        );
        let slots = Family::<Labels, Gauge>::default();
        registry.register("pool_slots", "Slots of each pool", slots.clone());
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Task instances queued for a slot",
            queue_depth.clone(),
        );
        let loop_lag = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "scheduler_loop_lag_seconds",
            "How late the scheduler loop last woke for work it had planned",
            loop_lag.clone(),
        );
        let load_errors = Gauge::default();
        registry.register(
            "dag_load_errors",
            "Errors in the DAG files now",
            load_errors.clone(),
        );
        let requests = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 14))
        });
        registry.register(
            "api_request_duration_seconds",
            "API requests by route, method and status",
            requests.clone(),
        );
        let task_durations = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.5, 2.0, 16))
        });
        registry.register(
            "task_duration_seconds",
            "Attempts that ended, by DAG and outcome",
            task_durations.clone(),
        );
        Arc::new(Self {
            registry,
            runs,
            task_instances,
            slots_in_use,
            slots,
            queue_depth,
            loop_lag,
            load_errors,
            requests,
            task_durations,
            started: Mutex::new(HashMap::new()),
            pools,
            engine: Mutex::new(None),
        })
    }

    /// Reads the loop's figures from `gauges` from now on.
    pub fn watch_engine(&self, gauges: Arc<LoopGauges>) {
        *self.engine.lock().unwrap_or_else(PoisonError::into_inner) = Some(gauges);
    }

    /// Hears of a state change from the engine: an attempt's start and end give its duration.
    pub fn observe(&self, progress: &Progress) {
        let Some(task) = &progress.task_id else {
            return;
        };
        let key = (progress.run_id.clone(), task.clone(), progress.try_number);
        let mut started = self.started.lock().unwrap_or_else(PoisonError::into_inner);
        if progress.state == TaskState::Running.as_str() {
            started.insert(key, progress.at);
        } else if let Some(began) = started.remove(&key) {
            let seconds = (progress.at - began).num_milliseconds().max(0) as f64 / 1000.0;
            self.task_durations
                .get_or_create(&vec![
                    ("dag_id", progress.dag_id.clone()),
                    ("outcome", progress.state.clone()),
                ])
                .observe(seconds);
        }
    }

    /// Counts an API request.
    fn request(&self, route: &str, method: &str, status: StatusCode, took: f64) {
        self.requests
            .get_or_create(&vec![
                ("route", route.to_string()),
                ("method", method.to_string()),
                ("status", status.as_u16().to_string()),
            ])
            .observe(took);
    }
}

/// Times every request by the route that answered it (not by its path: ids would make a series
/// per run).
pub(crate) async fn timed(
    axum::extract::State(shared): State,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().to_string();
    let began = Instant::now();
    let response = next.run(request).await;
    shared.metrics.request(
        &route,
        &method,
        response.status(),
        began.elapsed().as_secs_f64(),
    );
    response
}

/// The metrics, in the OpenMetrics text format Prometheus reads.
#[utoipa::path(
    get,
    path = "/metrics",
    responses(
        (status = 200, description = "The metrics (OpenMetrics text)", content_type = "application/openmetrics-text"),
        (status = 503, description = "The state database did not answer", content_type = "application/problem+json"),
    )
)]
pub(crate) async fn metrics(axum::extract::State(shared): State) -> Result<Response, Problem> {
    let metrics = &shared.metrics;
    let counts = shared
        .store
        .state_counts()
        .await
        .map_err(|e| Problem::store(&e))?;
    // Every state is set, so that one no run is in any more reads 0.
    for state in RunState::ALL {
        let n = count(&counts.runs, state.as_str());
        metrics
            .runs
            .get_or_create(&vec![("state", state.as_str().to_string())])
            .set(n);
    }
    for state in TaskState::ALL {
        let n = count(&counts.task_instances, state.as_str());
        metrics
            .task_instances
            .get_or_create(&vec![("state", state.as_str().to_string())])
            .set(n);
    }
    metrics
        .queue_depth
        .set(count(&counts.task_instances, TaskState::Queued.as_str()));
    for (pool, slots) in &metrics.pools {
        metrics
            .slots
            .get_or_create(&vec![("pool", pool.clone())])
            .set(*slots);
        metrics
            .slots_in_use
            .get_or_create(&vec![("pool", pool.clone())])
            .set(count(&counts.running_by_pool, pool));
    }
    if let Some(engine) = metrics
        .engine
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
    {
        metrics
            .loop_lag
            .set(engine.lag_micros.load(Ordering::Relaxed) as f64 / 1e6);
    }
    let errors = shared
        .dags
        .current()
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .count();
    metrics
        .load_errors
        .set(i64::try_from(errors).unwrap_or(i64::MAX));
    let mut text = String::new();
    encode(&mut text, &metrics.registry).map_err(|error| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the metrics could not be written: {error}"),
        )
    })?;
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    Ok(response)
}

fn count(counts: &[(String, i64)], key: &str) -> i64 {
    counts.iter().find(|(k, _)| k == key).map_or(0, |(_, n)| *n)
}
