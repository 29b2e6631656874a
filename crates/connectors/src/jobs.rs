//! What the tasks that submit an external job share: waiting between looks at the job while
//! watching for the task's timeout, a cancel and a shutdown, and retrying transient errors
//! with backoff.

use std::future::Future;
use std::time::Duration;

use ferry_executor::connector::AttemptScope;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

/// Why waiting on a job ended early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The task's timeout passed: stop the job and fail.
    Timeout,
    /// ferry asked the task to stop (a run timeout, an operator's clear): stop the job.
    Cancelled,
    /// ferry shuts down: leave the job running; the next ferry waits on it again.
    Detached,
}

/// Sleeps `poll`, or less if a stop comes first.
pub(crate) async fn pause(
    poll: Duration,
    deadline: Option<Instant>,
    scope: &AttemptScope<'_>,
) -> Option<Stop> {
    let until = deadline.map_or(Instant::now() + poll, |d| d.min(Instant::now() + poll));
    tokio::select! {
        () = scope.shutting_down.cancelled() => Some(Stop::Detached),
        () = scope.cancel.cancelled() => Some(Stop::Cancelled),
        () = tokio::time::sleep_until(until) => {
            deadline.filter(|d| Instant::now() >= *d).map(|_| Stop::Timeout)
        }
    }
}

/// How many times a call that met a transient error is tried in all.
const TRIES: u32 = 6;

/// Runs `call` until it succeeds, fails for good, or failed [`TRIES`] times with transient
/// errors (waiting 1, 2, 4, 8, 16 s between, noted in the log). `None` if a stop came first.
pub(crate) async fn retrying<T, E, F, Fut>(
    what: &str,
    scope: &AttemptScope<'_>,
    is_transient: impl Fn(&E) -> bool,
    describe: impl Fn(&E) -> String,
    mut call: F,
) -> Option<Result<T, E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut delay = Duration::from_secs(1);
    let mut attempt = 1;
    loop {
        let result = tokio::select! {
            result = call() => result,
            () = scope.cancel.cancelled() => return None,
            () = scope.shutting_down.cancelled() => return None,
        };
        match result {
            Err(error) if attempt < TRIES && is_transient(&error) => {
                scope.log.note(&format!(
                    "{what}: {} (transient; trying again in {} s)",
                    ferry_secrets::redact_text(&describe(&error)),
                    delay.as_secs()
                ));
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = scope.cancel.cancelled() => return None,
                    () = scope.shutting_down.cancelled() => return None,
                }
                delay *= 2;
                attempt += 1;
            }
            other => return Some(other),
        }
    }
}

/// When the task's timeout passes, counted from when the attempt began (before a restart of
/// ferry, for an attempt it resumes).
pub(crate) fn deadline(timeout: Option<Duration>, scope: &AttemptScope<'_>) -> Option<Instant> {
    timeout.map(|t| Instant::now() + t.saturating_sub(scope.elapsed))
}

/// Why the work was stopped, when [`retrying`] gave up because of a stop.
pub(crate) fn stop_reason(scope: &AttemptScope<'_>) -> Stop {
    if scope.shutting_down.is_cancelled() {
        Stop::Detached
    } else {
        Stop::Cancelled
    }
}

/// A token that fires when the attempt is stopped (a cancel, a shutdown) or its timeout
/// passes; its watcher ends with it (the guard fires it when the work is done).
pub(crate) struct Stopper {
    /// Fires on a stop or the timeout.
    pub token: CancellationToken,
    /// Set when the timeout fired it.
    pub timed_out: std::sync::Arc<std::sync::atomic::AtomicBool>,
    _done: DropGuard,
}

/// The [`Stopper`] of `scope` with `timeout`.
pub(crate) fn stopper(scope: &AttemptScope<'_>, timeout: Option<Duration>) -> Stopper {
    let token = scope.cancel.child_token();
    let timed_out = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (watched, shutdown, flag) = (
        token.clone(),
        scope.shutting_down.clone(),
        timed_out.clone(),
    );
    tokio::spawn(async move {
        let limit = async {
            match timeout {
                Some(limit) => tokio::time::sleep(limit).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => watched.cancel(),
            () = limit => {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                watched.cancel();
            }
            () = watched.cancelled() => {}
        }
    });
    Stopper {
        _done: token.clone().drop_guard(),
        token,
        timed_out,
    }
}
