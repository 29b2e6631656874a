//! [`LiveConnectors`]: the engine's way to the connections of the environment in effect. It
//! picks the system by the connection's kind and the work's type.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use ferry_config::Connection;
use ferry_executor::Outcome;
use ferry_executor::connector::{AttemptScope, ConnectorWork, Connectors, RowSource, TableWrite};

use crate::write::{Dialect, statements};
use crate::{aws, bigquery, glue, query, sfn};

/// The connections of the environment in effect, for the engine.
pub struct LiveConnectors {
    connections: BTreeMap<String, Connection>,
}

impl LiveConnectors {
    /// Connectors over `connections` (the environment's).
    pub fn new(connections: BTreeMap<String, Connection>) -> Self {
        Self { connections }
    }
}

impl LiveConnectors {
    /// The connection a task reads from, or the failure of an attempt that needs it.
    fn source(&self, name: &str) -> Result<&Connection, Outcome> {
        let Some(connection) = self.connections.get(name) else {
            return Err(Outcome::fatal(format!(
                "no connection `{name}` in this environment"
            )));
        };
        match unset(name, connection) {
            Some(problem) => Err(problem),
            None => Ok(connection),
        }
    }
}

impl Connectors for LiveConnectors {
    fn resumable(&self, work: &ConnectorWork) -> bool {
        match work {
            // A BigQuery query is a job named after the attempt: a restarted ferry waits on it
            // again instead of running it a second time.
            ConnectorWork::Query { connection, .. } => matches!(
                self.connections.get(connection),
                Some(Connection::Bigquery { .. })
            ),
            other => other.is_resumable(),
        }
    }

    fn run<'a>(
        &'a self,
        work: &'a ConnectorWork,
        scope: AttemptScope<'a>,
    ) -> Pin<Box<dyn Future<Output = Outcome> + Send + 'a>> {
        Box::pin(async move {
            let name = match work {
                ConnectorWork::Query { connection, .. }
                | ConnectorWork::GlueJob { connection, .. }
                | ConnectorWork::StepFunctions { connection, .. }
                | ConnectorWork::Wait { connection, .. }
                | ConnectorWork::Check { connection, .. } => connection,
                ConnectorWork::Transfer { destination, .. } => destination,
                ConnectorWork::ReverseSync(sync) => &sync.target,
            };
            let Some(target) = self.connections.get(name) else {
                return Outcome::fatal(format!("no connection `{name}` in this environment"));
            };
            if let Some(problem) = unset(name, target) {
                return problem;
            }
            match (work, target) {
                (
                    ConnectorWork::Wait {
                        wait,
                        poll,
                        timeout,
                        ..
                    },
                    target,
                ) => crate::waits::look(target, wait, *poll, *timeout, &scope).await,
                (
                    ConnectorWork::Transfer {
                        source,
                        write,
                        batch_size,
                        schema,
                        timeout,
                        ..
                    },
                    destination,
                ) => {
                    let source_name = match source {
                        RowSource::Sql { connection, .. } | RowSource::S3 { connection, .. } => {
                            connection
                        }
                    };
                    let source_connection = match self.source(source_name) {
                        Ok(connection) => connection,
                        Err(problem) => return problem,
                    };
                    // A stop (or the timeout) drops a transfer into a SQL database, which rolls
                    // its transaction back; a transfer into BigQuery watches it itself, to
                    // cancel its write job.
                    let stopper = crate::jobs::stopper(&scope, *timeout);
                    let watched = AttemptScope {
                        cancel: &stopper.token,
                        ..scope
                    };
                    let transfer = crate::transfer::run(
                        source,
                        source_connection,
                        name,
                        destination,
                        write,
                        (*batch_size).max(1),
                        schema,
                        &watched,
                    );
                    let outcome = if matches!(destination, Connection::Bigquery { .. }) {
                        transfer.await
                    } else {
                        tokio::select! {
                            outcome = transfer => outcome,
                            () = stopper.token.cancelled() => Outcome::failed(None, "stopped; nothing was written"),
                        }
                    };
                    if stopper.timed_out.load(std::sync::atomic::Ordering::SeqCst)
                        && !matches!(outcome, Outcome::Succeeded { .. })
                    {
                        let reason = format!(
                            "timed out after {}s; nothing was written",
                            timeout.unwrap_or_default().as_secs()
                        );
                        watched.log.note(&reason);
                        Outcome::failed(None, reason)
                    } else {
                        outcome
                    }
                }
                (
                    ConnectorWork::Check {
                        checks, timeout, ..
                    },
                    target,
                ) => {
                    let stopper = crate::jobs::stopper(&scope, *timeout);
                    tokio::select! {
                        outcome = crate::check::run(checks, target, &scope) => outcome,
                        () = stopper.token.cancelled() => Outcome::failed(None, "stopped (or timed out) before the checks ended"),
                    }
                }
                (ConnectorWork::ReverseSync(sync), target) => {
                    let source = match self.source(&sync.source) {
                        Ok(connection) => connection,
                        Err(problem) => return problem,
                    };
                    // A stop (or the timeout) drops the sync, which rolls its transaction back.
                    let stopper = crate::jobs::stopper(&scope, sync.timeout);
                    let outcome = tokio::select! {
                        outcome = crate::sync::run(sync, source, target, &scope) => outcome,
                        () = stopper.token.cancelled() => Outcome::failed(None, "stopped; nothing was written"),
                    };
                    if stopper.timed_out.load(std::sync::atomic::Ordering::SeqCst)
                        && !matches!(outcome, Outcome::Succeeded { .. })
                    {
                        let reason = format!(
                            "timed out after {}s; nothing was written",
                            sync.timeout.unwrap_or_default().as_secs()
                        );
                        scope.log.note(&reason);
                        Outcome::failed(None, reason)
                    } else {
                        outcome
                    }
                }
                (
                    ConnectorWork::Query {
                        sql,
                        destination,
                        labels,
                        timeout,
                        ..
                    },
                    Connection::Bigquery {
                        project,
                        location,
                        credentials,
                        endpoint,
                    },
                ) => {
                    let target = bigquery::Target {
                        project,
                        location: location.as_deref(),
                        credentials,
                        endpoint: endpoint.as_deref(),
                    };
                    let sql = match destination {
                        None => sql.clone(),
                        Some(write) => {
                            match bigquery_script(sql, write, &scope.key.short_token()) {
                                Ok(script) => script,
                                Err(problem) => return Outcome::fatal(problem),
                            }
                        }
                    };
                    let client = match bigquery::client(&target).await {
                        Ok(client) => client,
                        Err(problem) => {
                            return Outcome::failed(
                                None,
                                format!("connection `{name}`: could not authenticate: {problem}"),
                            );
                        }
                    };
                    let job = bigquery::QueryJob {
                        sql: &sql,
                        labels,
                        timeout: *timeout,
                        dry_run: false,
                    };
                    bigquery::run_query(&client, &target, &job, &scope).await
                }
                (
                    ConnectorWork::Query {
                        sql,
                        destination,
                        timeout,
                        ..
                    },
                    Connection::Sqlite { .. }
                    | Connection::Postgres { .. }
                    | Connection::Mysql { .. },
                ) => {
                    let plan = match destination {
                        None => query::Plan {
                            transaction: vec![sql.clone()],
                            ..query::Plan::default()
                        },
                        Some(write) => {
                            let dialect = match target {
                                Connection::Sqlite { .. } => Dialect::Sqlite,
                                Connection::Postgres { .. } => Dialect::Postgres,
                                _ => Dialect::Mysql,
                            };
                            match statements(dialect, sql, write, &scope.key.short_token()) {
                                Ok(sql) => query::Plan {
                                    prepare: sql.prepare,
                                    transaction: sql.transaction,
                                    cleanup: sql.cleanup,
                                    writes: true,
                                },
                                Err(problem) => return Outcome::fatal(problem),
                            }
                        }
                    };
                    query::run(name, target, plan, *timeout, &scope).await
                }
                (
                    ConnectorWork::GlueJob {
                        job_name,
                        arguments,
                        poll,
                        timeout,
                        ..
                    },
                    Connection::Aws {
                        region,
                        role_arn,
                        endpoint,
                    },
                ) => {
                    let config =
                        aws::sdk_config(region, role_arn.as_deref(), endpoint.as_deref()).await;
                    // No retries inside the SDK: ferry's own find a run whose start answer was
                    // lost before trying again (Glue has no idempotency token).
                    let glue_config = aws_sdk_glue::config::Builder::from(&config)
                        .retry_config(aws_sdk_glue::config::retry::RetryConfig::disabled())
                        .build();
                    let client = aws_sdk_glue::Client::from_conf(glue_config);
                    let run = glue::GlueRun {
                        job_name,
                        arguments,
                        poll: *poll,
                        timeout: *timeout,
                    };
                    glue::run(&client, &run, &scope).await
                }
                (
                    ConnectorWork::StepFunctions {
                        state_machine_arn,
                        input,
                        poll,
                        timeout,
                        ..
                    },
                    Connection::Aws {
                        region,
                        role_arn,
                        endpoint,
                    },
                ) => {
                    let config =
                        aws::sdk_config(region, role_arn.as_deref(), endpoint.as_deref()).await;
                    let client = aws_sdk_sfn::Client::new(&config);
                    let execution = sfn::Execution {
                        state_machine_arn,
                        input,
                        poll: *poll,
                        timeout: *timeout,
                    };
                    sfn::run(&client, &execution, &scope).await
                }
                (work, target) => Outcome::fatal(format!(
                    "connection `{name}` is a {} connection, which a {} task cannot use",
                    target.kind(),
                    match work {
                        ConnectorWork::Query { .. } => "query",
                        ConnectorWork::GlueJob { .. } => "glue_job",
                        ConnectorWork::StepFunctions { .. } => "stepfunctions",
                        ConnectorWork::Transfer { .. } => "transfer",
                        ConnectorWork::Wait { .. } => "wait",
                        ConnectorWork::ReverseSync(_) => "reverse_sync",
                        ConnectorWork::Check { .. } => "sql_check",
                    }
                )),
            }
        })
    }
}

/// The failure of a connection whose URL refers to a variable that is not set (or a file
/// that cannot be read) where ferry runs.
fn unset(name: &str, connection: &Connection) -> Option<Outcome> {
    let (Connection::Postgres { url } | Connection::Mysql { url }) = connection else {
        return None;
    };
    url.missing().map(|missing| {
        Outcome::fatal(format!(
            "connection `{name}`'s URL refers to {missing} where ferry runs"
        ))
    })
}

/// The BigQuery script that writes the rows of `select` by `write`: the rows into a
/// temporary table, the table created if missing, then the write in one transaction.
fn bigquery_script(select: &str, write: &TableWrite, suffix: &str) -> Result<String, String> {
    let sql = statements(Dialect::Bigquery, select, write, suffix)?;
    let mut script = sql.prepare;
    script.push("BEGIN TRANSACTION".to_string());
    script.extend(sql.transaction);
    script.push("COMMIT TRANSACTION".to_string());
    script.extend(sql.cleanup);
    Ok(script.join(";\n") + ";")
}
