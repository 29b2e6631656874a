//! BigQuery: a client per connection, and query jobs run to their end. A job gets the
//! attempt's token as its id (recorded as the task's external job), ferry's labels, and its
//! bytes processed are recorded on the attempt.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use ferry_config::BigqueryCredentials;
use ferry_executor::Outcome;
use ferry_executor::connector::AttemptScope;
use gcp_bigquery_client::Client;
use gcp_bigquery_client::error::BQError;
use gcp_bigquery_client::model::job::Job;
use gcp_bigquery_client::model::job_configuration::JobConfiguration;
use gcp_bigquery_client::model::job_configuration_query::JobConfigurationQuery;
use gcp_bigquery_client::model::job_reference::JobReference;

use crate::jobs::{Stop, deadline, pause, retrying};

/// A BigQuery connection's settings.
pub(crate) struct Target<'a> {
    /// The project jobs run in.
    pub project: &'a str,
    /// Where they run.
    pub location: Option<&'a str>,
    /// How to authenticate.
    pub credentials: &'a BigqueryCredentials,
    /// An emulator's address.
    pub endpoint: Option<&'a str>,
}

/// A token for an emulator, which checks none.
#[derive(Clone)]
struct NoToken;

#[async_trait::async_trait]
impl gcp_bigquery_client::auth::Authenticator for NoToken {
    async fn access_token(&self) -> Result<String, BQError> {
        Ok("emulator".to_string())
    }
}

/// A client for `target`.
pub(crate) async fn client(target: &Target<'_>) -> Result<Client, String> {
    let mut builder = gcp_bigquery_client::client_builder::ClientBuilder::new();
    if let Some(endpoint) = target.endpoint {
        builder.with_v2_base_url(format!("{}/bigquery/v2", endpoint.trim_end_matches('/')));
    }
    let built = match target.credentials {
        BigqueryCredentials::None => builder.build_from_authenticator(Arc::new(NoToken)).await,
        BigqueryCredentials::KeyFile(path) => {
            builder
                .build_from_service_account_key_file(&path.to_string_lossy())
                .await
        }
        BigqueryCredentials::Default => builder.build_from_application_default_credentials().await,
    };
    built.map_err(|e| describe(&e))
}

/// What a BigQuery error says, for people.
pub(crate) fn describe(error: &BQError) -> String {
    match error {
        BQError::ResponseError { error } => format!(
            "{} ({}{})",
            error.error.message,
            error.error.code,
            if error.error.status.is_empty() {
                String::new()
            } else {
                format!(" {}", error.error.status)
            }
        ),
        other => other.to_string(),
    }
}

/// Whether another try may pass: throttling, a server error, the network.
pub(crate) fn is_transient(error: &BQError) -> bool {
    match error {
        BQError::ResponseError { error } => {
            let code = error.error.code;
            code == 429
                || code >= 500
                || error.error.errors.iter().any(|e| {
                    e.get("reason").is_some_and(|r| {
                        matches!(
                            r.as_str(),
                            "rateLimitExceeded"
                                | "backendError"
                                | "internalError"
                                | "jobRateLimitExceeded"
                        )
                    })
                })
        }
        BQError::RequestError(error) => {
            error.is_timeout() || error.is_connect() || error.is_request()
        }
        _ => false,
    }
}

/// A query job to run.
pub(crate) struct QueryJob<'a> {
    /// The SQL (GoogleSQL; a script when it holds several statements).
    pub sql: &'a str,
    /// Labels besides ferry's.
    pub labels: &'a [(String, String)],
    /// The task's timeout.
    pub timeout: Option<Duration>,
    /// Only check it (`ferry validate --connect`).
    pub dry_run: bool,
}

/// Runs `job` on `client` and waits for its end: the job id is the attempt's token, or the
/// id recorded by an earlier life of the attempt (a job of that id that exists already is
/// waited on, not run again).
pub(crate) async fn run_query(
    client: &Client,
    target: &Target<'_>,
    job: &QueryJob<'_>,
    scope: &AttemptScope<'_>,
) -> Outcome {
    let job_id = scope
        .resumed_job
        .map_or_else(|| scope.key.token(), str::to_string);
    let mut labels: HashMap<String, String> = job
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), label_value(v)))
        .collect();
    labels.insert("ferry_dag".to_string(), label_value(&scope.key.dag));
    labels.insert("ferry_task".to_string(), label_value(&scope.key.task));
    labels.insert("ferry_run".to_string(), label_value(&scope.key.run_id));
    let request = Job {
        job_reference: Some(JobReference {
            job_id: Some(job_id.clone()),
            location: target.location.map(str::to_string),
            project_id: Some(target.project.to_string()),
        }),
        configuration: Some(JobConfiguration {
            dry_run: Some(job.dry_run),
            labels: Some(labels),
            query: Some(JobConfigurationQuery {
                query: job.sql.to_string(),
                use_legacy_sql: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let deadline = deadline(job.timeout, scope);
    // A job of this id exists when an earlier life of the attempt submitted it.
    let existing = if scope.resuming {
        client
            .job()
            .get_job(target.project, &job_id, target.location)
            .await
            .ok()
    } else {
        None
    };
    let mut current = match existing {
        Some(found) => {
            scope
                .log
                .note(&format!("waiting again on BigQuery job {job_id}"));
            found
        }
        // Taken over only to stop what it started (an operator cleared the task): submit
        // nothing.
        None if scope.cancel.is_cancelled() => {
            return Outcome::failed(None, "stopped before the BigQuery job was submitted");
        }
        None => {
            let inserted = retrying(
                "submitting the BigQuery job",
                scope,
                is_transient,
                describe,
                || client.job().insert(target.project, request.clone()),
            )
            .await;
            match inserted {
                None => {
                    // The submission may have reached BigQuery: the job of this id is
                    // cancelled (a shutdown leaves it to the next start, which waits on it).
                    if !scope.shutting_down.is_cancelled() {
                        let _ = client
                            .job()
                            .cancel_job(target.project, &job_id, target.location)
                            .await;
                    }
                    return Outcome::failed(None, "stopped before the BigQuery job was submitted");
                }
                // BigQuery answers a second submission of the same id with 409: that job is
                // this attempt's.
                Some(Err(BQError::ResponseError { error })) if error.error.code == 409 => {
                    match client
                        .job()
                        .get_job(target.project, &job_id, target.location)
                        .await
                    {
                        Ok(found) => found,
                        Err(e) => {
                            return failed(&e, &format!("could not read BigQuery job {job_id}"));
                        }
                    }
                }
                Some(Err(error)) => return failed(&error, "BigQuery refused the job"),
                Some(Ok(inserted)) => inserted,
            }
        }
    };
    if !job.dry_run {
        scope.recorder.external_job(&job_id).await;
        scope.log.note(&format!("BigQuery job {job_id}"));
    }
    loop {
        let status = current.status.clone().unwrap_or_default();
        if let Some(error) = status.error_result {
            let mut reason = format!(
                "BigQuery job {job_id} failed: {}",
                error.message.unwrap_or_default()
            );
            if let Some(why) = error.reason {
                reason.push_str(&format!(" ({why})"));
            }
            scope.log.note(&reason);
            return match error_is_transient(status.errors.as_deref()) {
                true => Outcome::failed(None, reason),
                false => Outcome::fatal(reason),
            };
        }
        if job.dry_run || status.state.as_deref() == Some("DONE") {
            let bytes = current
                .statistics
                .as_ref()
                .and_then(|s| s.total_bytes_processed.as_deref())
                .and_then(|b| b.parse::<i64>().ok())
                .unwrap_or(0);
            let figure = if job.dry_run {
                "bytes_estimated"
            } else {
                "bytes_processed"
            };
            scope.log.note(&format!("{figure}: {bytes}"));
            scope
                .recorder
                .metrics(&BTreeMap::from([(figure.to_string(), bytes)]))
                .await;
            return Outcome::Succeeded { code: None };
        }
        if let Some(stop) = pause(Duration::from_secs(1), deadline, scope).await {
            if stop == Stop::Detached {
                return Outcome::failed(None, "ferry shut down while the BigQuery job went on");
            }
            let cancelled = client
                .job()
                .cancel_job(target.project, &job_id, target.location)
                .await;
            let how = match cancelled {
                Ok(_) => format!("BigQuery job {job_id} was cancelled"),
                Err(error) => format!(
                    "could not cancel BigQuery job {job_id}: {}",
                    describe(&error)
                ),
            };
            let reason = match stop {
                Stop::Timeout => format!("timed out; {how}"),
                _ => format!("stopped; {how}"),
            };
            scope.log.note(&reason);
            return Outcome::failed(None, reason);
        }
        let looked = retrying(
            "looking at the BigQuery job",
            scope,
            is_transient,
            describe,
            || {
                client
                    .job()
                    .get_job(target.project, &job_id, target.location)
            },
        )
        .await;
        current = match looked {
            None => continue,
            Some(Err(error)) => {
                return failed(&error, &format!("could not read BigQuery job {job_id}"));
            }
            Some(Ok(job)) => job,
        };
    }
}

/// Whether a failed job's errors are BigQuery's own trouble rather than the query's.
fn error_is_transient(
    errors: Option<&[gcp_bigquery_client::model::error_proto::ErrorProto]>,
) -> bool {
    errors.unwrap_or_default().iter().all(|e| {
        e.reason
            .as_deref()
            .is_some_and(|r| matches!(r, "backendError" | "internalError" | "rateLimitExceeded"))
    }) && errors.is_some_and(|e| !e.is_empty())
}

/// A failed call.
fn failed(error: &BQError, what: &str) -> Outcome {
    let reason = ferry_secrets::redact_text(&format!("{what}: {}", describe(error)));
    if is_transient(error) {
        Outcome::failed(None, reason)
    } else {
        Outcome::fatal(reason)
    }
}

/// A label value: lowercase letters, digits, `_` and `-`, at most 63 characters.
fn label_value(text: &str) -> String {
    text.chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn label_values_are_what_bigquery_accepts() {
        assert_eq!(
            super::label_value("scheduled__2026-11-28T00:00:00+09:00"),
            "scheduled__2026-11-28t00_00_00_09_00"
        );
    }
}
