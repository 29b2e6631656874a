//! Time is injected: the engine asks a [`Clock`], so tests and `ferry run --now` control it.

use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Duration, Utc};

/// Where the engine gets "now".
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock, optionally shifted: `ferry run --now 2026-11-25T07:30:00+09:00` runs "as
/// if it were" then, with time still passing normally from there.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock {
    shift: Duration,
}

impl SystemClock {
    /// The real time.
    pub fn real() -> Self {
        Self::default()
    }

    /// Real time moved so that "now" is `as_if` at the moment of the call.
    pub fn as_if(as_if: DateTime<Utc>) -> Self {
        Self {
            shift: as_if - Utc::now(),
        }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.shift
    }
}

/// A clock that only moves when told: for tests of schedules, retries and deadlines.
#[derive(Clone, Debug)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl ManualClock {
    /// Starts at `now`.
    pub fn new(now: DateTime<Utc>) -> Self {
        Self {
            now: Arc::new(Mutex::new(now)),
        }
    }

    /// Moves time forward.
    pub fn advance(&self, by: Duration) {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Unix milliseconds, as the store keeps time.
pub fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

/// The instant of Unix milliseconds.
pub fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}
