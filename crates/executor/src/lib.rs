//! ferry's task runners. Each runs one attempt of a task, already rendered, and reports a typed
//! [`Outcome`]; only the scheduler decides about retries, from that outcome.
//!
//! - [`command`] tasks run under a [`supervisor`] process that outlives the engine: a program or
//!   shell line in its own process group, with an explicit environment, output written as it
//!   comes (secrets masked), the timeout enforced by the supervisor, leftovers stopped.
//! - [`http`]: one request; the status decides.
//!
//! `noop` needs no runner and `wait_for_dag` is decided by the scheduler, which can see other
//! DAGs' runs.

pub mod command;
pub mod connector;
pub mod http;
mod log;
pub mod supervisor;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use log::{LogBuffer, LogFile};

/// What can go wrong while supervising an attempt.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// A file or process of the attempt could not be used.
    #[error("cannot {action} {path}: {cause}")]
    Io {
        /// What was tried.
        action: &'static str,
        /// The path or program.
        path: String,
        /// Why.
        cause: std::io::Error,
    },
    /// The engine and the supervisor do not understand each other.
    #[error("supervisor protocol: {0}")]
    Protocol(String),
}

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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

    /// A failure that no retry mends (a missing program, a template error, a refused
    /// go-ahead).
    pub fn fatal(reason: impl Into<String>) -> Self {
        Outcome::Failed {
            retryable: false,
            retry_after: None,
            code: None,
            reason: reason.into(),
        }
    }

    /// The same outcome with its reason masked by `redactor` (a request's error quotes its URL).
    pub fn redacted(self, redactor: &ferry_secrets::Redactor) -> Self {
        match self {
            Outcome::Failed {
                retryable,
                retry_after,
                code,
                reason,
            } => Outcome::Failed {
                retryable,
                retry_after,
                code,
                reason: redactor.redact(&reason),
            },
            Outcome::Deferred {
                recheck_after,
                reason,
            } => Outcome::Deferred {
                recheck_after,
                reason: redactor.redact(&reason),
            },
            succeeded => succeeded,
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
