//! `glue_job` tasks: start an AWS Glue job run, record its id, wait until it ends; stop it on
//! a timeout or a cancel. A resumed attempt finds its run by id, or by the attempt token ferry
//! passes as the `--ferry_attempt` argument, instead of starting a second one.

use std::time::Duration;

use aws_sdk_glue::Client;
use aws_sdk_glue::types::JobRunState;
use ferry_executor::Outcome;
use ferry_executor::connector::AttemptScope;

use crate::aws::{describe, failure, is_transient};
use crate::jobs::{Stop, deadline, pause, retrying, stop_reason};

/// A Glue job run to start and wait on.
pub(crate) struct GlueRun<'a> {
    /// The job.
    pub job_name: &'a str,
    /// Its arguments.
    pub arguments: &'a [(String, String)],
    /// How often to look.
    pub poll: Duration,
    /// The task's timeout.
    pub timeout: Option<Duration>,
}

/// Runs `run` on `client`.
pub(crate) async fn run(client: &Client, run: &GlueRun<'_>, scope: &AttemptScope<'_>) -> Outcome {
    let token = scope.key.token();
    let job = run.job_name;
    let deadline = deadline(run.timeout, scope);
    let run_id = match scope.resumed_job {
        Some(id) => {
            scope
                .log
                .note(&format!("waiting again on Glue run {id} of job {job}"));
            id.to_string()
        }
        None => {
            let found = match scope.resuming {
                true => find_run(client, job, &token, scope).await,
                false => Ok(None),
            };
            match found {
                Ok(Some(id)) => {
                    scope.log.note(&format!("found Glue run {id} of job {job}, started by this attempt before ferry restarted"));
                    id
                }
                Ok(None) => match start(client, run, &token, scope).await {
                    Ok(id) => id,
                    Err(outcome) => return outcome,
                },
                Err(outcome) => return outcome,
            }
        }
    };
    scope.recorder.external_job(&run_id).await;
    let mut last_state: Option<JobRunState> = None;
    loop {
        let looked = retrying(
            "looking at the Glue run",
            scope,
            is_transient,
            describe,
            || client.get_job_run().job_name(job).run_id(&run_id).send(),
        )
        .await;
        let job_run = match looked {
            None => return stopped(client, job, &run_id, stop_reason(scope), scope).await,
            Some(Err(error)) => {
                return failure(
                    &error,
                    &format!("could not look at Glue run {run_id} of job {job}"),
                );
            }
            Some(Ok(output)) => output.job_run,
        };
        let Some(job_run) = job_run else {
            return Outcome::fatal(format!("Glue has no run {run_id} of job {job}"));
        };
        let state = job_run.job_run_state.clone();
        if state != last_state {
            if let Some(state) = &state {
                scope
                    .log
                    .note(&format!("Glue run {run_id}: {}", state.as_str()));
            }
            last_state = state.clone();
        }
        match state {
            Some(JobRunState::Succeeded) => return Outcome::Succeeded { code: None },
            Some(
                ended @ (JobRunState::Failed
                | JobRunState::Error
                | JobRunState::Timeout
                | JobRunState::Stopped
                | JobRunState::Expired),
            ) => {
                let message = job_run
                    .error_message
                    .unwrap_or_else(|| "Glue gave no error message".to_string());
                let reason = format!(
                    "Glue run {run_id} of job {job} ended {}: {message}",
                    ended.as_str()
                );
                scope.log.note(&reason);
                // A run Glue timed out may pass on another try; one that failed usually does
                // not, but Glue's errors are often the data's or the cluster's of the moment:
                // the task's retry policy decides.
                return Outcome::failed(None, reason);
            }
            _ => {}
        }
        if let Some(stop) = pause(run.poll, deadline, scope).await {
            return stopped(client, job, &run_id, stop, scope).await;
        }
    }
}

/// Starts the run, with the attempt token as an argument; its id, or the failure. Glue has no
/// idempotency token: before trying again after an error that may have hidden a start (a
/// timeout, a lost connection, a 5xx), ferry looks for a run carrying its token and takes it.
/// A stop during the start stops a run that started anyway.
async fn start(
    client: &Client,
    run: &GlueRun<'_>,
    token: &str,
    scope: &AttemptScope<'_>,
) -> Result<String, Outcome> {
    let mut request = client.start_job_run().job_name(run.job_name);
    for (name, value) in run.arguments {
        request = request.arguments(name, value);
    }
    request = request.arguments(ATTEMPT_ARGUMENT, token);
    if scope.cancel.is_cancelled() {
        // Taken over only to be stopped (an operator cleared the task): start nothing.
        return Err(Outcome::failed(None, "stopped before the Glue run started"));
    }
    let mut delay = std::time::Duration::from_secs(1);
    for attempt in 1..=6 {
        let started = tokio::select! {
            started = request.clone().send() => Some(started),
            () = scope.cancel.cancelled() => None,
            () = scope.shutting_down.cancelled() => None,
        };
        let error = match started {
            Some(Ok(output)) => {
                return match output.job_run_id {
                    Some(id) => {
                        scope
                            .log
                            .note(&format!("started Glue run {id} of job {}", run.job_name));
                        Ok(id)
                    }
                    None => Err(Outcome::failed(None, "Glue started a run but gave no id")),
                };
            }
            Some(Err(error)) => error,
            None => {
                // The request may have reached Glue: a run of this attempt is stopped (a
                // shutdown leaves it to the next start, which finds it by its token).
                if !scope.shutting_down.is_cancelled()
                    && let Ok(Some(id)) = find_run(client, run.job_name, token, scope).await
                {
                    let _ = client
                        .batch_stop_job_run()
                        .job_name(run.job_name)
                        .job_run_ids(&id)
                        .send()
                        .await;
                    scope
                        .log
                        .note(&format!("stopped Glue run {id}, started as ferry stopped"));
                }
                return Err(Outcome::failed(None, "stopped before the Glue run started"));
            }
        };
        if attempt == 6 || !is_transient(&error) {
            return Err(failure(
                &error,
                &format!("could not start a run of Glue job {}", run.job_name),
            ));
        }
        scope.log.note(&format!(
            "starting the Glue run: {} (transient; trying again in {} s)",
            describe(&error),
            delay.as_secs()
        ));
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = scope.cancel.cancelled() => return Err(Outcome::failed(None, "stopped before the Glue run started")),
            () = scope.shutting_down.cancelled() => return Err(Outcome::failed(None, "stopped before the Glue run started")),
        }
        delay *= 2;
        // A start whose answer was lost may have made the run.
        if let Ok(Some(id)) = find_run(client, run.job_name, token, scope).await {
            scope.log.note(&format!(
                "found Glue run {id} of job {}, started by the try whose answer was lost",
                run.job_name
            ));
            return Ok(id);
        }
    }
    Err(Outcome::failed(None, "could not start the Glue run"))
}

/// The argument that carries the attempt token (the DAG checker keeps it out of a task's
/// arguments).
const ATTEMPT_ARGUMENT: &str = "--ferry_attempt";

/// The run of `job` this attempt started before a restart, found by its token among the
/// job's recent runs.
async fn find_run(
    client: &Client,
    job: &str,
    token: &str,
    scope: &AttemptScope<'_>,
) -> Result<Option<String>, Outcome> {
    // The run is among the job's newest: up to five pages of 200.
    let mut next: Option<String> = None;
    for _ in 0..5 {
        let request = || {
            client
                .get_job_runs()
                .job_name(job)
                .max_results(200)
                .set_next_token(next.clone())
                .send()
        };
        // Once stopped, one plain look (to stop a run that started as ferry stopped).
        let listed = if scope.cancel.is_cancelled() {
            Some(request().await)
        } else {
            retrying(
                "looking for this attempt's Glue run",
                scope,
                is_transient,
                describe,
                request,
            )
            .await
        };
        let page = match listed {
            None => return Err(Outcome::failed(None, "stopped")),
            Some(Err(error)) => {
                return Err(failure(
                    &error,
                    &format!("could not list the runs of Glue job {job}"),
                ));
            }
            Some(Ok(page)) => page,
        };
        let found = page.job_runs.unwrap_or_default().into_iter().find_map(|r| {
            let ours = r
                .arguments
                .as_ref()
                .and_then(|a| a.get(ATTEMPT_ARGUMENT))
                .is_some_and(|t| t == token);
            ours.then_some(r.id).flatten()
        });
        if found.is_some() {
            return Ok(found);
        }
        next = page.next_token;
        if next.is_none() {
            break;
        }
    }
    Ok(None)
}

/// Ends the wait: stops the run unless ferry shuts down (then it is left for the next ferry).
async fn stopped(
    client: &Client,
    job: &str,
    run_id: &str,
    stop: Stop,
    scope: &AttemptScope<'_>,
) -> Outcome {
    if stop == Stop::Detached {
        scope.log.note(&format!(
            "ferry shuts down: Glue run {run_id} goes on; the next ferry waits on it"
        ));
        return Outcome::failed(None, "ferry shut down while the Glue run went on");
    }
    let stopped = client
        .batch_stop_job_run()
        .job_name(job)
        .job_run_ids(run_id)
        .send()
        .await;
    let how = match stopped {
        Ok(output) => match output.errors.unwrap_or_default().first() {
            Some(error) => format!(
                "Glue refused to stop run {run_id}: {}",
                error
                    .error_detail
                    .as_ref()
                    .and_then(|d| d.error_message.clone())
                    .unwrap_or_default()
            ),
            None => format!("Glue run {run_id} was stopped"),
        },
        Err(error) => format!("could not stop Glue run {run_id}: {}", describe(&error)),
    };
    let reason = match stop {
        Stop::Timeout => format!("timed out; {how}"),
        _ => format!("stopped; {how}"),
    };
    scope.log.note(&reason);
    Outcome::failed(None, reason)
}
