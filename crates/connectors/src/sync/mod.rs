//! `reverse_sync`: a query's rows written into an application table by key.
//!
//! The rows are read in batches and staged in a temporary table of the target database (in
//! the target's own column types, so a value the target cannot hold is found here), each with
//! a hash of its values. Then one transaction publishes them: it checks the fence (a newer
//! attempt of the same run makes this one's publish fail), deletes what a mirror deletes
//! (guarded), updates the rows whose hash differs from the state ferry keeps per key, inserts
//! the new keys, and updates the state. A row the target refuses is set aside by halving the
//! failing range until it is alone, recorded with its key and reason, and counted against
//! `max_rejected`. A kill at any moment rolls the transaction back: the target is as before.

mod direct;
mod infile;
mod mark;
mod rows;
mod skip;
mod statements;
mod target;

use std::collections::BTreeMap;

use ferry_config::Connection;
use ferry_executor::Outcome;
use ferry_executor::connector::{AttemptScope, RowSource, SyncMode, SyncWork};
use sha2::{Digest as _, Sha256};

use crate::transfer::{Failure, Value, is_column_name};
use crate::write::{Dialect, is_table_name};
use rows::Shape;
pub(crate) use rows::shown;
use statements::{Fence, REJECTS, RejectFields, Sql, create_rejects};
use target::{TargetDb, is_rejection};

/// How many rejects are kept with their key and reason (all are counted).
const KEEP_REJECTS: usize = 1_000;
/// How many are named in the log and in a failure.
const NAME_REJECTS: usize = 5;

/// What a sync did (or, planned, would do).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Rows the source returned.
    pub read: i64,
    /// Rows inserted into the target.
    pub inserted: i64,
    /// Rows updated.
    pub updated: i64,
    /// Rows deleted (a mirror's rows that left the source).
    pub deleted: i64,
    /// Source rows not written: the same as last synced (or, `insert`, already there).
    pub unchanged: i64,
    /// Source rows the target refused.
    pub rejected: i64,
}

/// Runs a sync (or its plan) and records its counts on the attempt.
pub(crate) async fn run(
    work: &SyncWork,
    source: &Connection,
    target: &Connection,
    scope: &AttemptScope<'_>,
) -> Outcome {
    match sync(work, source, target, scope).await {
        Ok(counts) => {
            let said = if work.plan_only {
                format!(
                    "{} row(s) read; it would insert {}, update {}, delete {}, leave {} unchanged and reject {}",
                    counts.read,
                    counts.inserted,
                    counts.updated,
                    counts.deleted,
                    counts.unchanged,
                    counts.rejected
                )
            } else {
                format!(
                    "{} row(s) read; {} inserted, {} updated, {} deleted, {} unchanged, {} rejected",
                    counts.read,
                    counts.inserted,
                    counts.updated,
                    counts.deleted,
                    counts.unchanged,
                    counts.rejected
                )
            };
            scope.log.note(&said);
            let figures = BTreeMap::from([
                ("rows_read".to_string(), counts.read),
                ("rows_inserted".to_string(), counts.inserted),
                ("rows_updated".to_string(), counts.updated),
                ("rows_deleted".to_string(), counts.deleted),
                ("rows_unchanged".to_string(), counts.unchanged),
                ("rows_rejected".to_string(), counts.rejected),
            ]);
            scope.recorder.metrics(&figures).await;
            Outcome::Succeeded { code: None }
        }
        Err(failure) => {
            let text = match &failure {
                Failure::Fatal(text) | Failure::Transient(text) => text,
            };
            scope.log.note(&ferry_secrets::redact_text(text));
            failure.into_outcome()
        }
    }
}

/// A database error while doing `what`: transient (the network, a deadlock) or not.
fn failed(what: &str) -> impl Fn(sqlx::Error) -> Failure + '_ {
    move |error| {
        let text = format!("{what}: {error}");
        if crate::query::is_transient(&error) {
            Failure::Transient(text)
        } else {
            Failure::Fatal(text)
        }
    }
}

/// The first 16 hex digits of the SHA-256 of `parts`.
fn short_hash(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hasher
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Rejected rows: every one counted, the first kept with key and reason.
#[derive(Default)]
struct Rejects {
    count: i64,
    kept: Vec<(String, String)>,
}

impl Rejects {
    fn add(&mut self, key: String, reason: String) {
        self.count += 1;
        if self.kept.len() < KEEP_REJECTS {
            self.kept.push((key, reason));
        }
    }

    /// The first few, for people.
    fn named(&self) -> String {
        self.kept
            .iter()
            .take(NAME_REJECTS)
            .map(|(key, reason)| format!("{key}: {reason}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Why the database refused a row, secrets masked, on one line.
fn reason(error: &sqlx::Error) -> String {
    let text = match error {
        sqlx::Error::Database(db) => db.message().to_string(),
        other => other.to_string(),
    };
    ferry_secrets::redact_text(&text.replace('\n', " "))
}

async fn sync(
    work: &SyncWork,
    source: &Connection,
    target: &Connection,
    scope: &AttemptScope<'_>,
) -> Result<Counts, Failure> {
    if !is_table_name(&work.table) {
        return Err(Failure::Fatal(format!(
            "`{}` is not a table name (letters, digits, `_` and `-`, dotted parts)",
            work.table
        )));
    }
    let Some(connected) = TargetDb::connect(target).await else {
        return Err(Failure::Fatal(format!(
            "connection `{}` is a {} connection; a reverse_sync writes into a sqlite, postgres or mysql one",
            work.target,
            target.kind()
        )));
    };
    let mut db = connected.map_err(failed(&format!("connecting to `{}`", work.target)))?;
    let dialect = db.dialect();
    let mode = work.mode;
    // The sync's identity: its state and fences follow it (a new key or mode starts afresh).
    let sync_id = short_hash(&[
        &scope.key.dag,
        &scope.key.task,
        &work.table,
        &format!("{mode:?}"),
        &work.key.join(","),
    ]);
    let fence_id = short_hash(&[&sync_id, &scope.key.run_id]);
    let fence = Fence {
        dialect,
        id: &fence_id,
    };
    let fields = RejectFields {
        sync_id: sync_id.clone(),
        run_id: scope.key.run_id.clone(),
        lease: scope.key.lease,
        at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    };
    let rejects_table = if work.plan_only {
        "ferry_plan_rejects"
    } else {
        REJECTS
    };
    let creating = failed("creating ferry's sync tables");
    if work.plan_only {
        db.execute(&create_rejects(dialect, rejects_table, true))
            .await
            .map_err(&creating)?;
    } else {
        db.execute(&fence.create_table()).await.map_err(&creating)?;
        db.execute(&create_rejects(dialect, rejects_table, false))
            .await
            .map_err(&creating)?;
        // Taking the fence before reading: from now on an older attempt of this run cannot
        // publish.
        let claim = failed("taking the sync's fence");
        db.execute(&fence.add(&fields)).await.map_err(&claim)?;
        db.execute(&fence.raise(fields.lease))
            .await
            .map_err(&claim)?;
        let held = db.count(&fence.lease()).await.map_err(&claim)?;
        if held > fields.lease {
            return Err(Failure::Fatal(stale(fields.lease, held)));
        }
    }
    // `incremental`: only the rows at or past the highest value read last time by this
    // query (a mark per rendered query: another day's run has its own).
    let mut query = work.sql.clone();
    let mark_id = short_hash(&[
        &sync_id,
        &work.sql,
        work.incremental.as_deref().unwrap_or_default(),
    ]);
    if let Some(column) = &work.incremental {
        if !work.plan_only {
            db.execute(&mark::create_table()).await.map_err(&creating)?;
        }
        // A target with no rows in scope (new, or emptied by hand) is loaded whole.
        let bare = Sql::new(
            dialect,
            &work.table,
            "ferry_unused",
            rejects_table,
            &[],
            &work.key,
            &work.scope,
        );
        let nothing_there = db
            .count(&bare.any_in_scope())
            .await
            .map_err(failed(&format!("the target table {}", work.table)))?
            == 0;
        match db.texts(&mark::read(dialect, &mark_id, column)).await {
            Ok(_) if nothing_there => scope.log.note(&format!(
                "incremental: {} has no rows in scope, so every row is read",
                work.table
            )),
            Ok(rows) => {
                if let Some([kind, text]) = rows.first().map(Vec::as_slice) {
                    match mark::narrow(source, &work.sql, column, (kind, text)) {
                        Some(narrowed) => {
                            query = narrowed;
                            scope.log.note(&format!(
                                "incremental: reading the rows whose {column} is at or past {text} (mark {mark_id} in {})",
                                mark::MARKS
                            ));
                        }
                        None => scope.log.note(&format!(
                            "incremental: the mark `{text}` cannot be read back as a {kind}; reading every row"
                        )),
                    }
                }
            }
            // A plan before the first sync: no table of marks yet.
            Err(_) if work.plan_only => {}
            Err(error) => return Err(failed("reading the sync's mark")(error)),
        }
    }
    let rows_source = RowSource::Sql {
        connection: work.source.clone(),
        sql: query,
    };
    let opened_at = std::time::Instant::now();
    let mut opened =
        crate::transfer::open(&rows_source, source, work.batch_size.max(1), &[]).await?;
    let incremental_at = match &work.incremental {
        None => None,
        Some(column) => Some(
            opened
                .0
                .schema
                .iter()
                .position(|(name, _)| name == column)
                .ok_or_else(|| {
                    Failure::Fatal(format!(
                        "incremental column `{column}` is not among the query's columns ({})",
                        opened
                            .0
                            .schema
                            .iter()
                            .map(|(name, _)| name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?,
        ),
    };
    // The incremental column is ferry's cursor: it is not written (nor hashed, so a row whose
    // values did not change is not written again) unless `columns` maps it.
    let drop_mark_column = work
        .incremental
        .as_ref()
        .is_some_and(|column| !work.columns.iter().any(|(_, source)| source == column));
    let written: Vec<(String, ferry_executor::connector::ColumnType)> = opened
        .0
        .schema
        .iter()
        .enumerate()
        .filter(|(i, _)| !(drop_mark_column && Some(*i) == incremental_at))
        .map(|(_, column)| column.clone())
        .collect();
    let new_mark = |at: Option<usize>| {
        at.zip(work.incremental.as_deref())
            .map(|(at, column)| mark::Mark::new(&mark_id, column, at, drop_mark_column))
    };
    let shape =
        Shape::new(&written, &work.columns, &work.key, &work.scope).map_err(Failure::Fatal)?;
    if let Some(bad) = shape.columns.iter().find(|c| !is_column_name(c)) {
        return Err(Failure::Fatal(format!(
            "column `{bad}` cannot be written into SQL as it is: alias it in the query"
        )));
    }
    let state_table = format!("ferry_state_{sync_id}");
    let mut sql = Sql::new(
        dialect,
        &work.table,
        &state_table,
        rejects_table,
        &shape.columns,
        &work.key,
        &work.scope,
    );
    let table = work.table.as_str();
    db.execute(&sql.probe_target())
        .await
        .map_err(failed(&format!("the target table {table}")))?;
    db.execute(&sql.create_stage())
        .await
        .map_err(failed("creating the stage"))?;
    let diffed = matches!(mode, SyncMode::Upsert | SyncMode::Update | SyncMode::Mirror);
    if diffed {
        if !prepare_state(&mut db, &sql, work.plan_only).await? {
            sql.state_without_unique_key();
        }
        scope
            .log
            .note(&format!("the synced state is kept in {state_table}"));
    }
    // A first load into an empty table (in scope) goes straight in, in one transaction: no
    // stage, nothing to compare. A row the target refuses sends it back through the stage.
    // Not on SQLite, where writing while reading would hold the application's writes back.
    let reading = failed("looking at the target");
    let empty = !work.plan_only
        && dialect != Dialect::Sqlite
        && matches!(mode, SyncMode::Upsert | SyncMode::Mirror)
        && db.count(&sql.any_in_scope()).await.map_err(&reading)? == 0;
    // The state of keys no longer in the target (a table emptied by hand) is forgotten
    // first. (A rerun reads only the state of keys still in the target, and forgets the
    // others when there are any.)
    if empty && diffed {
        forget_deleted(&mut db, &sql).await?;
    }
    let direct = mode == SyncMode::Append && !work.plan_only && dialect != Dialect::Sqlite
        || empty && db.count(&sql.count_state()).await.map_err(&reading)? == 0;
    if direct {
        let mysql_url = match target {
            Connection::Mysql { url } => Some(url.expose()),
            _ => None,
        };
        let loaded = direct::load(
            (&mut db, mysql_url),
            &sql,
            &shape,
            &mut opened.0,
            (&fields, &fence),
            diffed,
            new_mark(incremental_at),
        )
        .await;
        match loaded {
            Ok((read, how)) => {
                scope.log.note(&format!(
                    "{read} row(s) loaded straight into {table} {how} (it had no rows in scope) in {:.2} s",
                    opened_at.elapsed().as_secs_f64()
                ));
                return Ok(Counts {
                    read,
                    inserted: read,
                    ..Counts::default()
                });
            }
            Err(direct::Direct::Failed(failure)) => return Err(failure),
            Err(direct::Direct::Refused(why)) => {
                scope.log.note(&format!(
                    "the target refused a row of the first load ({why}); loading again through the stage to set it aside"
                ));
                opened = crate::transfer::open(&rows_source, source, work.batch_size.max(1), &[])
                    .await?;
            }
        }
    }
    let batches = &mut opened.0;
    // A mirror needs every key staged (to find those that left); the others leave unchanged
    // rows out.
    // MySQL compares text by its collation (`abc` = `ABC`), which the filter's exact keys
    // would not: with a text key there, every row is staged.
    let text_key = shape
        .key
        .iter()
        .any(|&i| written[i].1 == ferry_executor::connector::ColumnType::String);
    // A plan cannot tidy the state (it writes nothing), so it compares every row in SQL.
    // Every keyed sync tracks the keys it reads, so that a key seen twice is caught even when
    // one of its rows is left out or refused.
    let mut skipper = match mode {
        // An incremental sync reads few rows: they are compared in the database rather than
        // by loading every synced hash.
        _ if work.incremental.is_some() => (!work.key.is_empty()).then(|| skip::Skipper::new(None)),
        SyncMode::Upsert | SyncMode::Update
            if !(work.plan_only || (dialect == Dialect::Mysql && text_key)) =>
        {
            let reading = failed("reading the synced state");
            let known = db.count(&sql.count_state()).await.map_err(&reading)?;
            let mut skipper = skip::Skipper::new(Some(usize::try_from(known).unwrap_or(0)));
            let mut still_there: i64 = 0;
            db.hashes(&sql.state_hashes(), |hash| {
                still_there += 1;
                skipper.add_synced(hash);
            })
            .await
            .map_err(&reading)?;
            // Keys deleted from the target by hand: their state is forgotten, so that it
            // cannot pass a row for unchanged once its key is back (recreated by hand, say,
            // after `update` rejected it as missing).
            if still_there < known {
                forget_deleted(&mut db, &sql).await?;
            }
            Some(skipper)
        }
        SyncMode::Upsert | SyncMode::Update if !work.plan_only => {
            forget_deleted(&mut db, &sql).await?;
            (!work.key.is_empty()).then(|| skip::Skipper::new(None))
        }
        _ => (!work.key.is_empty()).then(|| skip::Skipper::new(None)),
    };
    let mut unchanged: i64 = 0;
    let mut mark = new_mark(incremental_at);

    // Stage every row, setting aside the ones the target's types refuse.
    let started = std::time::Instant::now();
    let mut rejects = Rejects::default();
    let (stage_table, stage_columns) = sql.stage_columns();
    let copy = sql.copy_stage();
    let mut number: i64 = 0;
    let mut bytes = Vec::new();
    while let Some(mut batch) = batches.next().await? {
        if let Some(mark) = mark.as_mut() {
            mark.take(&mut batch);
        }
        let first = number + 1;
        let mut rows = Vec::with_capacity(batch.len());
        for mut row in batch {
            number += 1;
            if let Some(problem) = shape.problem(&row) {
                return Err(Failure::Fatal(format!(
                    "source row {number} ({}): {problem}; nothing was written",
                    shape.key_text(&row)
                )));
            }
            let hash = shape.hash(&row, &mut bytes);
            if let Some(skipper) = skipper.as_mut() {
                match skipper.judge(&row, &shape.key, hash) {
                    skip::Verdict::Stage => {}
                    skip::Verdict::Unchanged => {
                        unchanged += 1;
                        continue;
                    }
                    skip::Verdict::Duplicate => {
                        return Err(Failure::Fatal(format!(
                            "the source has duplicate keys, e.g. {} (again at row {number}); nothing was written",
                            shape.key_text(&row)
                        )));
                    }
                }
            }
            row.push(Value::Int(hash));
            row.push(Value::Int(number));
            rows.push(row);
        }
        if rows.is_empty() {
            continue;
        }
        let staged = db.stage(&stage_table, &stage_columns, &copy, &rows).await;
        match staged {
            Ok(()) => {}
            Err(error) if is_rejection(&error) => {
                // Part of the batch may be in (MySQL and SQLite stage in several statements):
                // it is taken out, then the rows go in one by one.
                db.execute(&sql.unstage_where(&Sql::rows_between(first, number + 1)))
                    .await
                    .map_err(failed("staging rows"))?;
                for row in rows {
                    let one = vec![row];
                    match db.stage(&stage_table, &stage_columns, &copy, &one).await {
                        Ok(()) => {}
                        Err(error) if is_rejection(&error) => {
                            rejects.add(shape.key_text(&one[0]), reason(&error));
                        }
                        Err(error) => return Err(failed("staging rows")(error)),
                    }
                }
            }
            Err(error) => return Err(failed("staging rows")(error)),
        }
    }
    let read = batches.rows_read;
    scope.log.note(&format!(
        "{read} row(s) read, {} staged ({unchanged} left out as unchanged) in {:.2} s",
        read - unchanged,
        started.elapsed().as_secs_f64()
    ));
    for statement in sql.index_stage(read - unchanged) {
        match db.execute(&statement).await {
            Ok(_) => {}
            // MySQL cannot index a TEXT key without a length: the joins go without.
            Err(sqlx::Error::Database(e))
                if e.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                    .is_some_and(|m| m.number() == 1170) => {}
            Err(error) => return Err(failed("indexing the stage")(error)),
        }
    }
    if !work.key.is_empty() {
        let duplicates = db
            .texts(&sql.duplicates())
            .await
            .map_err(failed("looking for duplicate keys"))?;
        if !duplicates.is_empty() {
            return Err(duplicate_keys(&duplicates));
        }
    }
    // Publish.
    db.execute("BEGIN").await.map_err(failed("publishing"))?;
    let publishing = std::time::Instant::now();
    let published = publish(
        &mut db,
        &sql,
        work,
        (&fields, &fence),
        read,
        rejects,
        scope.log,
    )
    .await;
    // The mark moves in the same transaction as the rows.
    let published = match (published, mark.and_then(|m| m.keep(dialect))) {
        (Ok(counts), Some(keep)) if !work.plan_only => db
            .execute(&keep)
            .await
            .map(|_| counts)
            .map_err(failed("keeping the sync's mark")),
        (published, _) => published,
    };
    scope.log.note(&format!(
        "published in {:.2} s",
        publishing.elapsed().as_secs_f64()
    ));
    let end = match (&published, work.plan_only) {
        (Ok(_), false) => "COMMIT",
        _ => "ROLLBACK",
    };
    let ended = db.execute(end).await;
    let counts = published?;
    ended.map_err(failed("publishing"))?;
    Ok(counts)
}

/// The failure for keys found twice, from rows of (key, count).
fn duplicate_keys(found: &[Vec<String>]) -> Failure {
    let named = found
        .iter()
        .map(|row| format!("{} ({} rows)", row[0], row[1]))
        .collect::<Vec<_>>()
        .join("; ");
    Failure::Fatal(format!(
        "the source has duplicate keys, e.g. {named}; nothing was written"
    ))
}

/// Forgets the state of keys no longer in the target (deleted by hand, a table emptied), so
/// that those rows are written again (or, `update`, rejected as missing).
async fn forget_deleted(db: &mut TargetDb, sql: &Sql) -> Result<(), Failure> {
    db.execute(&sql.forget_deleted())
        .await
        .map(|_| ())
        .map_err(failed("tidying the synced state"))
}

/// Why an attempt that lost its lease writes nothing.
fn stale(mine: i64, held: i64) -> String {
    format!(
        "this attempt's fencing number is {mine} but a newer attempt of the same run holds {held}: it lost its lease and publishes nothing"
    )
}

/// Makes sure the sync's state table is there (a plan uses an empty temporary one when the
/// sync has none yet, and creates nothing). Whether it has its unique index on the key.
async fn prepare_state(db: &mut TargetDb, sql: &Sql, plan_only: bool) -> Result<bool, Failure> {
    if plan_only {
        if db.execute(&sql.probe_state()).await.is_err() {
            db.execute(&sql.create_plan_state())
                .await
                .map_err(failed("preparing the plan"))?;
            return Ok(false);
        }
        return Ok(true);
    }
    let [create, index] = sql
        .create_state()
        .try_into()
        .map_err(|_| Failure::Fatal("the state's statements are not two".to_string()))?;
    db.execute(&create)
        .await
        .map_err(failed("creating the sync's state table"))?;
    let mysql_error = |e: &sqlx::Error| match e {
        sqlx::Error::Database(e) => e
            .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
            .map(|m| m.number()),
        _ => None,
    };
    match db.execute(&index).await {
        Ok(_) => Ok(true),
        // MySQL has no `IF NOT EXISTS` for indexes: an index already there is fine, and a
        // TEXT key cannot be indexed without a length (the state is then kept without one).
        Err(e) if mysql_error(&e) == Some(1061) => Ok(true),
        Err(e) if mysql_error(&e) == Some(1170) => Ok(false),
        Err(error) => Err(failed("indexing the sync's state table")(error)),
    }
}

/// The publishing transaction's work (begun by the caller, who commits or rolls back).
async fn publish(
    db: &mut TargetDb,
    sql: &Sql,
    work: &SyncWork,
    (fields, fence): (&RejectFields, &Fence<'_>),
    read: i64,
    mut rejects: Rejects,
    log: &ferry_executor::LogBuffer,
) -> Result<Counts, Failure> {
    let publishing = failed("publishing");
    if !work.plan_only {
        db.execute(&fence.mark(fields.lease, &fields.at))
            .await
            .map_err(&publishing)?;
        let held = db.count(&fence.lease()).await.map_err(&publishing)?;
        if held != fields.lease {
            return Err(Failure::Fatal(format!(
                "publish refused: {}",
                stale(fields.lease, held)
            )));
        }
    }
    // The rows refused while staging are kept with those refused from here on.
    for (key, why) in &rejects.kept {
        db.execute(&sql.reject_value(fields, key, why))
            .await
            .map_err(&publishing)?;
    }
    let mut counts = Counts {
        read,
        ..Counts::default()
    };
    let mode = work.mode;
    if mode == SyncMode::Mirror && rejects.count > 0 {
        // A row refused while staging is not in the stage: its key cannot be told from one
        // that left the source, so nothing is deleted this time.
        log.note(&format!(
            "{} row(s) were refused while staging, so the mirror deletes nothing this time",
            rejects.count
        ));
    } else if mode == SyncMode::Mirror {
        let in_scope = db.count(&sql.count_in_scope()).await.map_err(&publishing)?;
        let deleted = db.execute(&sql.delete_gone()).await.map_err(&publishing)?;
        let allowed = work
            .max_delete
            .allowed(u64::try_from(in_scope).unwrap_or(0));
        if deleted > allowed {
            return Err(Failure::Fatal(format!(
                "the mirror would delete {deleted} of the {in_scope} row(s) in scope, more than max_delete ({}); nothing was written",
                work.max_delete
            )));
        }
        counts.deleted = i64::try_from(deleted).unwrap_or(i64::MAX);
        db.execute(&sql.forget_deleted())
            .await
            .map_err(&publishing)?;
    }
    let diffed = matches!(mode, SyncMode::Upsert | SyncMode::Update | SyncMode::Mirror);
    if mode == SyncMode::Update {
        let missing = sql.missing_condition();
        let examples = db
            .texts(&sql.keys_staged(&missing, KEEP_REJECTS))
            .await
            .map_err(&publishing)?;
        let count = db
            .count(&sql.count_staged(&missing))
            .await
            .map_err(&publishing)?;
        if count > 0 {
            let why = "no row with this key in the target (mode: update inserts none)";
            db.execute(&sql.reject_where(&missing, why, fields))
                .await
                .map_err(&publishing)?;
            // A key deleted by hand: its state goes too, so that a row the application makes
            // again later is compared with nothing (not passed for unchanged).
            db.execute(&sql.forget_where(&missing))
                .await
                .map_err(&publishing)?;
            db.execute(&sql.unstage_where(&missing))
                .await
                .map_err(&publishing)?;
            for example in &examples {
                rejects.add(example.join(", "), why.to_string());
            }
            // Counted once each, whether kept or not.
            rejects.count += count - examples.len() as i64;
        }
    }
    let last = db.count(&sql.last_row()).await.map_err(&publishing)?;
    // PostgreSQL remembers the hashes in the statement that updates (a plan's state is
    // thrown away, so a plan compares only).
    let only_present = mode == SyncMode::Update;
    let remembering = !work.plan_only && sql.update_remembering("1 = 1", only_present).is_some();
    if diffed && sql.update_changed("1 = 1").is_some() {
        counts.updated = sieve(db, (sql, diffed), fields, last, &mut rejects, |range| {
            if remembering {
                sql.update_remembering(range, only_present)
            } else {
                sql.update_changed(range)
            }
            .unwrap_or_default()
        })
        .await?;
        let staged = db
            .count(&sql.count_staged("1 = 1"))
            .await
            .map_err(&publishing)?;
        if counts.updated > staged {
            return Err(Failure::Fatal(format!(
                "{} target row(s) were updated from {staged} staged row(s): the target holds more than one row for some keys; give it a primary key or unique index on ({}); nothing was written",
                counts.updated,
                work.key.join(", ")
            )));
        }
    }
    if mode != SyncMode::Update {
        counts.inserted = sieve(db, (sql, diffed), fields, last, &mut rejects, |range| {
            sql.insert_new(range)
        })
        .await?;
    }
    // A plan's state is thrown away (and MySQL cannot read and write a temporary one in one
    // statement).
    // Remembered now, unless the update remembered every staged row's hash (a row refused
    // since has had its hash forgotten).
    if diffed && !work.plan_only && !remembering {
        for statement in sql.remember(only_present) {
            db.execute(&statement).await.map_err(&publishing)?;
        }
    }
    counts.rejected = rejects.count;
    let allowed = work.max_rejected.allowed(u64::try_from(read).unwrap_or(0));
    if u64::try_from(rejects.count).unwrap_or(0) > allowed {
        return Err(Failure::Fatal(format!(
            "{} row(s) rejected, more than max_rejected ({}): {}; nothing was written",
            rejects.count,
            work.max_rejected,
            rejects.named()
        )));
    }
    counts.unchanged = read - counts.inserted - counts.updated - counts.rejected;
    Ok(counts)
}

/// Runs `statement` over the staged rows `1..=last`; when the target refuses a row, halves the
/// range until the refused rows are alone, records each as rejected and takes it out of the
/// stage. The rows written.
async fn sieve(
    db: &mut TargetDb,
    (sql, keeps_state): (&Sql, bool),
    fields: &RejectFields,
    last: i64,
    rejects: &mut Rejects,
    statement: impl Fn(&str) -> String,
) -> Result<i64, Failure> {
    let publishing = failed("publishing");
    let mut written: u64 = 0;
    let mut pending = vec![(1, last + 1)];
    while let Some((low, high)) = pending.pop() {
        if low >= high {
            continue;
        }
        db.execute("SAVEPOINT ferry_sieve")
            .await
            .map_err(&publishing)?;
        match db.execute(&statement(&Sql::rows_between(low, high))).await {
            Ok(rows) => {
                written += rows;
                db.execute("RELEASE SAVEPOINT ferry_sieve")
                    .await
                    .map_err(&publishing)?;
            }
            Err(error) if is_rejection(&error) => {
                db.execute("ROLLBACK TO SAVEPOINT ferry_sieve")
                    .await
                    .map_err(&publishing)?;
                db.execute("RELEASE SAVEPOINT ferry_sieve")
                    .await
                    .map_err(&publishing)?;
                if high - low == 1 {
                    let row = Sql::rows_between(low, high);
                    let why = reason(&error);
                    let key = db
                        .texts(&sql.keys_staged(&row, 1))
                        .await
                        .map_err(&publishing)?
                        .first()
                        .map(|r| r.join(", "))
                        .unwrap_or_else(|| format!("row {low}"));
                    db.execute(&sql.reject_where(&row, &why, fields))
                        .await
                        .map_err(&publishing)?;
                    if keeps_state {
                        db.execute(&sql.forget_where(&row))
                            .await
                            .map_err(&publishing)?;
                    }
                    db.execute(&sql.unstage_where(&row))
                        .await
                        .map_err(&publishing)?;
                    rejects.add(key, why);
                } else {
                    let middle = low + (high - low) / 2;
                    pending.push((middle, high));
                    pending.push((low, middle));
                }
            }
            Err(error) => return Err(publishing(error)),
        }
    }
    Ok(i64::try_from(written).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests;
