//! Runs asked for by hand, at most once per idempotency key.

use crate::{NewRun, NewTaskInstance, Pool, RunRecord, Store, StoreError};

/// Who asked for a manual run, and the key that makes asking twice harmless.
#[derive(Clone, Copy, Debug)]
pub struct ManualRequest<'a> {
    /// Who (`api token NAME`, an OS user), for the event log.
    pub actor: &'a str,
    /// Why.
    pub reason: Option<&'a str>,
    /// The client's idempotency key and a fingerprint of its request.
    pub key: Option<(&'a str, &'a str)>,
}

/// What [`Store::create_manual_run`] did.
#[derive(Debug)]
pub enum ManualRun {
    /// The run was made.
    Created(RunRecord),
    /// The DAG has a run for that logical date already (this one); nothing was made.
    DateTaken(RunRecord),
    /// A call racing this one took the idempotency key (or the run id asked for) first;
    /// nothing was made.
    Taken,
}

impl Store {
    /// Makes a manual run and its task instances, and records its idempotency key (if any)
    /// in the same transaction, so that a key names at most one run.
    pub async fn create_manual_run(
        &self,
        run: &NewRun<'_>,
        tasks: &[NewTaskInstance<'_>],
        request: &ManualRequest<'_>,
    ) -> Result<ManualRun, StoreError> {
        let created = self
            .insert_runs(&[(run.clone(), tasks)], "operator", Some(request))
            .await;
        match created {
            Ok(mut created) => match created.pop().flatten() {
                Some(run) => Ok(ManualRun::Created(run)),
                None => self
                    .run_for_interval(run.dag_id, run.interval_start)
                    .await?
                    .map(ManualRun::DateTaken)
                    .ok_or_else(|| {
                        StoreError::Unreadable(format!(
                            "run {} was neither made nor found",
                            run.run_id
                        ))
                    }),
            },
            // The key, or (a run id asked for) the id, taken by a call racing this one.
            Err(StoreError::Database(sqlx::Error::Database(error)))
                if error.is_unique_violation() =>
            {
                Ok(ManualRun::Taken)
            }
            Err(error) => Err(error),
        }
    }

    /// The run an idempotency key of a DAG made, and the fingerprint of the request that made
    /// it.
    pub async fn run_of_idempotency_key(
        &self,
        dag_id: &str,
        key: &str,
    ) -> Result<Option<(RunRecord, String)>, StoreError> {
        let found: Option<(String, String)> = with_pool!(self, pool => {
            sqlx::query_as("SELECT run_id, fingerprint FROM idempotency_keys WHERE dag_id = $1 AND idempotency_key = $2")
                .bind(dag_id)
                .bind(key)
                .fetch_optional(pool)
                .await?
        });
        let Some((run_id, fingerprint)) = found else {
            return Ok(None);
        };
        Ok(self.run(&run_id).await?.map(|run| (run, fingerprint)))
    }
}
