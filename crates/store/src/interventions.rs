//! An operator's interventions, each one transaction with its events (who and why): clearing
//! tasks to run them again, marking a task's state, pausing a DAG. What they mean for runs and
//! retries is decided by the caller (`ferry_scheduler::operations`); the store makes each one
//! atomic and guarded.

use crate::{
    AttemptRecord, Pool, RunRecord, RunState, Store, StoreError, TaskInstanceRecord, TaskState,
};

/// Who intervenes, why, and when.
#[derive(Clone, Copy, Debug)]
pub struct Intervention<'a> {
    /// The OS user of a CLI command, or an API token's name.
    pub actor: &'a str,
    /// Why, as the operator said.
    pub reason: Option<&'a str>,
    /// When (Unix ms).
    pub at: i64,
}

/// A task to clear, as the caller saw it, and the retries it gets again.
#[derive(Clone, Copy, Debug)]
pub struct TaskToClear<'a> {
    /// The task instance as read (its state guards the change).
    pub task: &'a TaskInstanceRecord,
    /// Its `retries` (in the DAG version the run goes on with): after the tries it has had, it
    /// gets this many retries again, as Airflow does on clear.
    pub retries: i64,
}

/// A run moved to another DAG version by a rerun (`--latest-version`): the version, the tasks
/// it adds (new instances, `pending`) and the instances of tasks it no longer has (`skipped`).
#[derive(Clone, Debug)]
pub struct VersionChange<'a> {
    /// The version id.
    pub id: i64,
    /// Tasks of the version that the run has no instance of.
    pub added: Vec<crate::NewTaskInstance<'a>>,
    /// Instances of tasks the version does not have.
    pub removed: Vec<&'a TaskInstanceRecord>,
}

/// A paused DAG.
#[derive(Clone, Debug, sqlx::FromRow, serde::Serialize)]
pub struct PausedDag {
    /// The DAG.
    pub dag_id: String,
    /// Since when (Unix ms).
    pub paused_at: i64,
    /// Who paused it.
    pub actor: String,
    /// Why.
    pub reason: Option<String>,
}

macro_rules! operator_event {
    ($tx:expr, $who:expr, $run:expr, $task:expr, $try:expr, $from:expr, $to:expr, $detail:expr) => {
        sqlx::query(
            "INSERT INTO events (at, dag_id, run_id, task_id, try_number, from_state, to_state, cause, detail, actor, reason) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'operator', $8, $9, $10)",
        )
        .bind($who.at)
        .bind(&$run.dag_id)
        .bind(&$run.run_id)
        .bind($task)
        .bind($try)
        .bind($from)
        .bind($to)
        .bind($detail)
        .bind($who.actor)
        .bind($who.reason)
        .execute(&mut *$tx)
        .await?
    };
}

/// Inside transaction `$tx`: clears `$tasks` (see [`Store::clear_tasks`]); evaluates to the
/// ids of the tasks cleared.
macro_rules! clear_in {
    ($tx:expr, $run:expr, $tasks:expr, $who:expr) => {{
        let mut cleared: Vec<String> = Vec::new();
        for TaskToClear { task, retries } in $tasks {
            let from = task.state()?;
            let changed = sqlx::query(
                "UPDATE task_instances SET state = $1, ready_at = NULL, queued_at = NULL, started_at = NULL, \
                 ended_at = NULL, exit_code = NULL, lease = lease + 1, \
                 max_tries = try_number + $2 + 1 WHERE id = $3 AND state = $4 AND lease = $5",
            )
            .bind(TaskState::Pending.as_str())
            .bind((*retries).max(0))
            .bind(task.id)
            .bind(from.as_str())
            .bind(task.lease)
            .execute(&mut *$tx)
            .await?
            .rows_affected()
                == 1;
            if !changed {
                continue;
            }
            // A supervised command or a job outside ferry (a Glue run, an execution) still
            // running stays open: the engine stops it and records its end (see
            // `Store::fenced_attempts`).
            sqlx::query(
                "UPDATE attempts SET ended_at = $1, outcome = 'cleared' WHERE task_instance_id = $2 \
                 AND ended_at IS NULL AND ((supervisor IS NULL AND external_job_id IS NULL) OR $3 <> 'running')",
            )
            .bind($who.at)
            .bind(task.id)
            .bind(from.as_str())
            .execute(&mut *$tx)
            .await?;
            let detail = if from == TaskState::Running {
                "cleared; its running attempt is stopped"
            } else {
                "cleared"
            };
            operator_event!(
                $tx, $who, $run, Some(task.task_id.as_str()), Some(task.try_number),
                Some(from.as_str()), TaskState::Pending.as_str(), detail
            );
            cleared.push(task.task_id.clone());
        }
        cleared
    }};
}

/// Inside transaction `$tx`: queues ended run `$run` again (a fresh start time, on version
/// `$version` if some); evaluates to false if the run had moved meanwhile.
macro_rules! reopen_in {
    ($tx:expr, $run:expr, $state:expr, $version:expr, $who:expr, $detail:expr) => {{
        let changed = sqlx::query(
            "UPDATE dag_runs SET state = $1, started_at = NULL, ended_at = NULL, \
             dag_version_id = COALESCE($2, dag_version_id) WHERE id = $3 AND state = $4",
        )
        .bind(RunState::Queued.as_str())
        .bind($version)
        .bind($run.id)
        .bind($state.as_str())
        .execute(&mut *$tx)
        .await?
        .rows_affected()
            == 1;
        if changed {
            let no_task: Option<&str> = None;
            let no_try: Option<i64> = None;
            operator_event!(
                $tx,
                $who,
                $run,
                no_task,
                no_try,
                Some($state.as_str()),
                RunState::Queued.as_str(),
                $detail
            );
        }
        changed
    }};
}

impl Store {
    /// Clears `tasks` of `run` in one transaction: each goes back to `pending` with its try
    /// number kept and `retries` more tries allowed; a running attempt is fenced off (its lease
    /// moves on, so its end is not recorded as the task's) and open attempts are closed as
    /// `cleared`. An ended run is queued again (a fresh start time for `dagrun_timeout`; it
    /// starts within `max_active_runs`), and goes on with DAG version `version` if given.
    /// Returns the ids of the tasks cleared (a task that changed since it was read is left
    /// alone) and whether the run was reopened.
    pub async fn clear_tasks(
        &self,
        run: &RunRecord,
        tasks: &[TaskToClear<'_>],
        change: Option<&VersionChange<'_>>,
        who: Intervention<'_>,
    ) -> Result<(Vec<String>, bool), StoreError> {
        let run_state = run.state()?;
        let version = change.map(|c| c.id);
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let cleared = clear_in!(tx, run, tasks, who);
            if let Some(change) = change.filter(|_| !cleared.is_empty()) {
                for task in &change.added {
                    sqlx::query(
                        "INSERT INTO task_instances (run_pk, task_id, state, max_tries, priority, pool) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(run.id)
                    .bind(task.task_id)
                    .bind(TaskState::Pending.as_str())
                    .bind(task.max_tries)
                    .bind(task.priority)
                    .bind(task.pool)
                    .execute(&mut *tx)
                    .await?;
                    operator_event!(
                        tx, who, run, Some(task.task_id), Some(0_i64), None::<&str>,
                        TaskState::Pending.as_str(), "added by the DAG version the run goes on with"
                    );
                }
                for task in &change.removed {
                    let from = task.state()?;
                    let moved = sqlx::query(
                        "UPDATE task_instances SET state = $1, ended_at = $2, lease = lease + 1 \
                         WHERE id = $3 AND lease = $4 AND state NOT IN ('running')",
                    )
                    .bind(TaskState::Skipped.as_str())
                    .bind(who.at)
                    .bind(task.id)
                    .bind(task.lease)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                        == 1;
                    if moved {
                        operator_event!(
                            tx, who, run, Some(task.task_id.as_str()), Some(task.try_number),
                            Some(from.as_str()), TaskState::Skipped.as_str(),
                            "not in the DAG version the run goes on with"
                        );
                    }
                }
            }
            let reopen = !cleared.is_empty() && run_state.is_terminal();
            if reopen {
                let detail = match version {
                    Some(id) => format!("reopened by clearing tasks; goes on with DAG version {id}"),
                    None => "reopened by clearing tasks".to_string(),
                };
                if !reopen_in!(tx, run, run_state, version, who, detail) {
                    // The run moved meanwhile: nothing of this intervention is kept.
                    tx.rollback().await?;
                    return Err(conflict(run));
                }
            } else if let Some(id) = version.filter(|_| !cleared.is_empty()) {
                sqlx::query("UPDATE dag_runs SET dag_version_id = $1 WHERE id = $2")
                    .bind(id)
                    .bind(run.id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok((cleared, reopen))
        })
    }

    /// Sets a task's state by hand (`success`, `failed` or `skipped`) whatever it was, and
    /// clears `then_clear` (its downstream tasks decided without running, so that they follow
    /// their trigger rules again), in one transaction. A running attempt is fenced off and open
    /// attempts are closed as `marked <state>`; an ended run is queued again so that the engine
    /// decides it anew. `None` if the task changed since it was read; else the tasks cleared.
    pub async fn mark_task(
        &self,
        run: &RunRecord,
        task: &TaskInstanceRecord,
        to: TaskState,
        then_clear: &[TaskToClear<'_>],
        who: Intervention<'_>,
    ) -> Result<Option<Vec<String>>, StoreError> {
        if !matches!(
            to,
            TaskState::Success | TaskState::Failed | TaskState::Skipped
        ) {
            return Err(StoreError::IllegalTransition {
                what: format!("task {} of run {} (by hand)", task.task_id, run.run_id),
                from: task.state.clone(),
                to: to.to_string(),
            });
        }
        let from = task.state()?;
        let run_state = run.state()?;
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let changed = sqlx::query(
                "UPDATE task_instances SET state = $1, ready_at = NULL, ended_at = $2, \
                 lease = lease + 1 WHERE id = $3 AND state = $4 AND lease = $5",
            )
            .bind(to.as_str())
            .bind(who.at)
            .bind(task.id)
            .bind(from.as_str())
            .bind(task.lease)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if !changed {
                return Ok(None);
            }
            sqlx::query(
                "UPDATE attempts SET ended_at = $1, outcome = $2 WHERE task_instance_id = $3 \
                 AND ended_at IS NULL AND (supervisor IS NULL OR $4 <> 'running')",
            )
            .bind(who.at)
            .bind(format!("marked {to}"))
            .bind(task.id)
            .bind(from.as_str())
            .execute(&mut *tx)
            .await?;
            let detail = format!("marked {to} by hand");
            operator_event!(
                tx, who, run, Some(task.task_id.as_str()), Some(task.try_number),
                Some(from.as_str()), to.as_str(), detail
            );
            let cleared = clear_in!(tx, run, then_clear, who);
            if run_state.is_terminal() {
                let no_version: Option<i64> = None;
                if !reopen_in!(tx, run, run_state, no_version, who, "reopened: a task was marked by hand") {
                    tx.rollback().await?;
                    return Err(conflict(run));
                }
            }
            tx.commit().await?;
            Ok(Some(cleared))
        })
    }

    /// Cancels a run that has not ended (Airflow's "mark the run failed"), in one transaction:
    /// tasks that started (queued, running, waiting for a retry, deferred) become `failed`,
    /// those that never started `skipped`; a running attempt is fenced off (the engine that
    /// owns the store stops it) and the run ends `failed`. `None` if the run has ended already;
    /// else each task changed, with its new state.
    pub async fn cancel_run(
        &self,
        run: &RunRecord,
        who: Intervention<'_>,
    ) -> Result<Option<Vec<(String, TaskState)>>, StoreError> {
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let ended = sqlx::query(
                "UPDATE dag_runs SET state = $1, ended_at = $2 WHERE id = $3 AND state IN ($4, $5)",
            )
            .bind(RunState::Failed.as_str())
            .bind(who.at)
            .bind(run.id)
            .bind(RunState::Queued.as_str())
            .bind(RunState::Running.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if !ended {
                return Ok(None);
            }
            let tasks: Vec<TaskInstanceRecord> =
                sqlx::query_as("SELECT * FROM task_instances WHERE run_pk = $1 ORDER BY id")
                    .bind(run.id)
                    .fetch_all(&mut *tx)
                    .await?;
            let mut changed = Vec::new();
            for task in &tasks {
                let from = task.state()?;
                if from.is_terminal() {
                    continue;
                }
                let to = if from == TaskState::Pending {
                    TaskState::Skipped
                } else {
                    TaskState::Failed
                };
                let done = sqlx::query(
                    "UPDATE task_instances SET state = $1, ready_at = NULL, ended_at = $2, \
                     lease = lease + 1 WHERE id = $3 AND state = $4 AND lease = $5",
                )
                .bind(to.as_str())
                .bind(who.at)
                .bind(task.id)
                .bind(from.as_str())
                .bind(task.lease)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if !done {
                    tx.rollback().await?;
                    return Err(conflict(run));
                }
                // A running command's or external job's attempt is closed by the engine once it
                // has stopped it (clear's rule).
                sqlx::query(
                    "UPDATE attempts SET ended_at = $1, outcome = 'cancelled' WHERE task_instance_id = $2 \
                     AND ended_at IS NULL AND ((supervisor IS NULL AND external_job_id IS NULL) OR $3 <> 'running')",
                )
                .bind(who.at)
                .bind(task.id)
                .bind(from.as_str())
                .execute(&mut *tx)
                .await?;
                operator_event!(
                    tx, who, run, Some(task.task_id.as_str()), Some(task.try_number),
                    Some(from.as_str()), to.as_str(), "the run was cancelled"
                );
                changed.push((task.task_id.clone(), to));
            }
            let no_task: Option<&str> = None;
            let no_try: Option<i64> = None;
            operator_event!(
                tx, who, run, no_task, no_try,
                Some(run.state.as_str()), RunState::Failed.as_str(), "cancelled by hand"
            );
            tx.commit().await?;
            Ok(Some(changed))
        })
    }

    /// Attempts still open whose task an operator cleared or marked (the task's lease moved
    /// past the attempt's): their command may still run under its supervisor, and must be
    /// stopped and recorded before the task runs again.
    pub async fn fenced_attempts(
        &self,
    ) -> Result<Vec<(AttemptRecord, TaskInstanceRecord)>, StoreError> {
        let attempts: Vec<AttemptRecord> = with_pool!(self, pool => {
            sqlx::query_as(
                "SELECT a.* FROM attempts a JOIN task_instances t ON t.id = a.task_instance_id \
                 WHERE a.ended_at IS NULL AND a.lease <> t.lease ORDER BY a.id",
            )
            .fetch_all(pool)
            .await?
        });
        let mut found = Vec::new();
        for attempt in attempts {
            let task: Option<TaskInstanceRecord> = with_pool!(self, pool => {
                sqlx::query_as("SELECT * FROM task_instances WHERE id = $1")
                    .bind(attempt.task_instance_id)
                    .fetch_optional(pool)
                    .await?
            });
            if let Some(task) = task {
                found.push((attempt, task));
            }
        }
        Ok(found)
    }

    /// Queues run `run_pk` again if it ended while some of its tasks had not (an operator's
    /// clear racing the run's end): whichever of the two commits last sees the other, so each
    /// calls this after its own change. True if the run was reopened.
    pub async fn reopen_if_unfinished(&self, run_pk: i64, at: i64) -> Result<bool, StoreError> {
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let run: Option<RunRecord> = sqlx::query_as(
                "UPDATE dag_runs SET state = $1, started_at = NULL, ended_at = NULL \
                 WHERE id = $2 AND state IN ('success', 'failed') AND EXISTS \
                 (SELECT 1 FROM task_instances WHERE run_pk = $2 AND state IN \
                 ('pending', 'queued', 'running', 'deferred', 'up_for_retry')) RETURNING *",
            )
            .bind(RunState::Queued.as_str())
            .bind(run_pk)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(run) = &run {
                let no_task: Option<&str> = None;
                let no_try: Option<i64> = None;
                append_event!(
                    tx, at, &run.dag_id, &run.run_id, no_task, no_try, None::<&str>,
                    RunState::Queued.as_str(), "recovery", "reopened: it had ended while tasks were cleared"
                );
            }
            tx.commit().await?;
            Ok(run.is_some())
        })
    }

    /// Pauses (or unpauses) a DAG, and records it as an event of the DAG (with an empty run id).
    /// Returns false if it already was (not) paused.
    pub async fn set_paused(
        &self,
        dag_id: &str,
        paused: bool,
        who: Intervention<'_>,
    ) -> Result<bool, StoreError> {
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let changed = if paused {
                sqlx::query(
                    "INSERT INTO dag_pauses (dag_id, paused_at, actor, reason) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (dag_id) DO NOTHING",
                )
                .bind(dag_id)
                .bind(who.at)
                .bind(who.actor)
                .bind(who.reason)
                .execute(&mut *tx)
                .await?
            } else {
                sqlx::query("DELETE FROM dag_pauses WHERE dag_id = $1")
                    .bind(dag_id)
                    .execute(&mut *tx)
                    .await?
            }
            .rows_affected()
                == 1;
            if changed {
                let (from, to) = if paused { ("active", "paused") } else { ("paused", "active") };
                let dag = DagOnly { dag_id, run_id: "" };
                let no_task: Option<&str> = None;
                let no_try: Option<i64> = None;
                operator_event!(tx, who, dag, no_task, no_try, Some(from), to, if paused { "paused" } else { "unpaused" });
            }
            tx.commit().await?;
            Ok(changed)
        })
    }

    /// The paused DAGs.
    pub async fn paused_dags(&self) -> Result<Vec<PausedDag>, StoreError> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as("SELECT * FROM dag_pauses ORDER BY dag_id").fetch_all(pool).await?)
        })
    }

    /// The run with this id, or the only run whose id starts with it. `Err(Ambiguous)` names
    /// the candidates when several do.
    pub async fn find_run(&self, id_or_prefix: &str) -> Result<Option<RunRecord>, StoreError> {
        if let Some(run) = self.run(id_or_prefix).await? {
            return Ok(Some(run));
        }
        // A plain comparison of the first characters: the same on both backends (LIKE is
        // case-insensitive on SQLite only), and no character of the prefix is special.
        let mut found: Vec<RunRecord> = with_pool!(self, pool => {
            sqlx::query_as(
                "SELECT * FROM dag_runs WHERE substr(run_id, 1, length($1)) = $1 ORDER BY run_id LIMIT 6",
            )
            .bind(id_or_prefix)
            .fetch_all(pool)
            .await?
        });
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            _ => Err(StoreError::Ambiguous {
                prefix: id_or_prefix.to_string(),
                candidates: found.into_iter().map(|run| run.run_id).collect(),
            }),
        }
    }
}

/// The DAG of an event that belongs to no run.
struct DagOnly<'a> {
    dag_id: &'a str,
    run_id: &'a str,
}

fn conflict(run: &RunRecord) -> StoreError {
    StoreError::Conflict(format!(
        "run {} changed during the intervention; nothing was changed, look again",
        run.run_id
    ))
}
