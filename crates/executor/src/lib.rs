//! ferry's task runners. Each runs one attempt of a task, already rendered, and reports a typed
//! [`Outcome`]; only the scheduler decides about retries, from that outcome.
//!
//! - [`command`]: a program or shell line in its own process group; output captured; a timeout
//!   or shutdown stops the whole group (SIGTERM, then SIGKILL after a grace period).
//! - [`http`]: one request; the status decides.
//!
//! `noop` needs no runner and `wait_for_dag` is decided by the scheduler, which can see other
//! DAGs' runs.

pub mod command;
pub mod http;
mod log;

use std::time::Duration;

use serde::Serialize;

pub use log::LogBuffer;

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The task did its work.
    Succeeded {
        /// Exit code or HTTP status.
        code: Option<i64>,
    },
    /// The attempt failed.
    Failed {
        /// Whether another attempt may succeed (a timeout or crash may; a bad request may not).
        retryable: bool,
        /// Retry no sooner than this (an HTTP 429's Retry-After).
        retry_after: Option<Duration>,
        /// Exit code or HTTP status, when there is one.
        code: Option<i64>,
        /// Why, for people.
        reason: String,
    },
    /// Not done yet, and waiting needs no slot: look again after `recheck_after` (a sensor
    /// such as `wait_for_dag`, or a job started outside ferry).
    Deferred {
        /// When to look again.
        recheck_after: Duration,
        /// What it waits for.
        reason: String,
    },
}

impl Outcome {
    /// A retryable failure.
    pub fn failed(code: Option<i64>, reason: impl Into<String>) -> Self {
        Outcome::Failed {
            retryable: true,
            retry_after: None,
            code,
            reason: reason.into(),
        }
    }

    /// The short name stored with the attempt.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Succeeded { .. } => "success",
            Outcome::Failed { .. } => "failed",
            Outcome::Deferred { .. } => "deferred",
        }
    }

    /// Exit code or HTTP status.
    pub fn code(&self) -> Option<i64> {
        match self {
            Outcome::Succeeded { code } | Outcome::Failed { code, .. } => *code,
            Outcome::Deferred { .. } => None,
        }
    }
}
