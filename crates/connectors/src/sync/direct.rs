//! A first load into an empty target: every row goes straight into the table (and its hash
//! into the state), in one transaction that checks the fence last. No stage, nothing to
//! compare. On PostgreSQL the rows stream through one `COPY` per chunk of rows (on MySQL
//! through one `LOAD DATA LOCAL INFILE`, see `infile`), so the server writes while ferry reads
//! and checks the next rows; the state's rows follow each chunk.

use sqlx::postgres::PgConnection;

use super::mark::Mark;
use super::rows::Shape;
use super::skip::{Skipper, TRACKED, Verdict};
use super::statements::{Fence, RejectFields, Sql};
use super::target::{TargetDb, is_rejection};
use super::{duplicate_keys, failed, reason, stale};
use crate::transfer::write_sql::copy_text_value;
use crate::transfer::{Batch, Batches, Failure, Value};

/// The most rows one PostgreSQL `COPY` (or MySQL `LOAD DATA`) takes before the state's rows follow them: a refused
/// row is found within this many, and the state's rows waiting in memory stay few.
pub(super) const CHUNK_ROWS: i64 = 250_000;
/// The most bytes of state rows waiting in memory before they are written.
pub(super) const CHUNK_STATE_BYTES: usize = 32 << 20;

/// Why a direct load did not end.
pub(super) enum Direct {
    /// The target refused a row: load through the stage instead.
    Refused(String),
    /// Anything else.
    Failed(Failure),
}

impl Direct {
    /// A database error: a refused row, or a failure.
    fn from_sql(error: sqlx::Error) -> Self {
        if is_rejection(&error) {
            Direct::Refused(reason(&error))
        } else {
            Direct::Failed(failed("loading")(error))
        }
    }
}

/// A connection that can run the end of a direct load: statements, counts and rows of text.
#[async_trait::async_trait]
pub(super) trait Statements: Send {
    /// Runs one statement.
    async fn run(&mut self, sql: &str) -> Result<(), Direct>;
    /// The first column of the first row, a number.
    async fn number(&mut self, sql: &str) -> Result<i64, Direct>;
    /// Every row, its columns as text.
    async fn rows(&mut self, sql: &str) -> Result<Vec<Vec<String>>, Direct>;
}

#[async_trait::async_trait]
impl Statements for TargetDb {
    async fn run(&mut self, sql: &str) -> Result<(), Direct> {
        self.execute(sql)
            .await
            .map(|_| ())
            .map_err(Direct::from_sql)
    }

    async fn number(&mut self, sql: &str) -> Result<i64, Direct> {
        self.count(sql).await.map_err(Direct::from_sql)
    }

    async fn rows(&mut self, sql: &str) -> Result<Vec<Vec<String>>, Direct> {
        self.texts(sql).await.map_err(Direct::from_sql)
    }
}

/// Loads every row straight into the (empty) target, and its hash into the state when
/// `keep_state`, in one transaction that checks the fence last. The rows read, and how they
/// went in. Into MySQL (`mysql_url`) the rows go by `LOAD DATA LOCAL INFILE` where the server
/// allows it.
pub(super) async fn load(
    (db, mysql_url): (&mut TargetDb, Option<&str>),
    sql: &Sql,
    shape: &Shape,
    batches: &mut Batches,
    (fields, fence): (&RejectFields, &Fence<'_>),
    keep_state: bool,
    mark: Option<Mark>,
) -> Result<(i64, String), Direct> {
    let mut rows = Checker {
        shape,
        keys: (!shape.key.is_empty()).then(|| Skipper::new(None)),
        number: 0,
        bytes: Vec::new(),
        mark,
    };
    let mut no_infile = None;
    let infile = match mysql_url {
        Some(url) => super::infile::connect(url)
            .await
            .map_err(|why| no_infile = Some(why))
            .ok(),
        None => None,
    };
    if let Some(mut conn) = infile {
        conn.run("BEGIN").await?;
        let loaded = async {
            super::infile::load(&mut conn, sql, batches, &mut rows, keep_state).await?;
            end_checks(&mut conn, sql, &rows, (fields, fence)).await
        }
        .await;
        let ended = end_transaction(&mut conn, loaded).await;
        super::infile::close(conn).await;
        return ended.map(|read| (read, "by LOAD DATA LOCAL INFILE".to_string()));
    }
    db.run("BEGIN").await?;
    let loaded: Result<i64, Direct> = async {
        // The state is empty: its index is built once at the end.
        let reindex = keep_state
            .then(|| sql.drop_state_index())
            .flatten()
            .zip(sql.create_state().pop());
        if let Some((drop, _)) = &reindex {
            db.run(drop).await?;
        }
        match db {
            TargetDb::Postgres(pg) => copy(pg, sql, batches, &mut rows, keep_state).await?,
            _ => insert(db, sql, batches, &mut rows, keep_state).await?,
        }
        // After the checks, which name keys read twice (past the keys held in memory) rather
        // than let the index refuse them; the fence's row stays locked until the commit.
        let read = end_checks(db, sql, &rows, (fields, fence)).await?;
        if let Some((_, create)) = &reindex {
            db.run(create).await?;
        }
        Ok(read)
    }
    .await;
    let ended = end_transaction(db, loaded).await;
    // Statistics for the joins of the next sync.
    if ended.is_ok()
        && keep_state
        && let Some(analyze) = sql.analyze_state()
    {
        let _ = db.execute(&analyze).await;
    }
    let how = match (db, no_infile) {
        (TargetDb::Postgres(_), _) => "by COPY".to_string(),
        (_, Some(why)) => format!("by INSERTs (not by LOAD DATA LOCAL INFILE: {why})"),
        _ => "by INSERTs".to_string(),
    };
    ended.map(|read| (read, how))
}

/// Commits the load's transaction when it went well, else rolls it back.
async fn end_transaction(
    db: &mut impl Statements,
    loaded: Result<i64, Direct>,
) -> Result<i64, Direct> {
    match loaded {
        Ok(read) => {
            if let Err(problem) = db.run("COMMIT").await {
                let _ = db.run("ROLLBACK").await;
                return Err(problem);
            }
            Ok(read)
        }
        Err(problem) => {
            let _ = db.run("ROLLBACK").await;
            Err(problem)
        }
    }
}

/// The end of a load, in its transaction: the rows in scope are the rows loaded, no key was
/// read twice, the mark is kept, and the fence (checked last, under its row lock until the
/// commit) is still this attempt's. The rows read.
async fn end_checks(
    db: &mut impl Statements,
    sql: &Sql,
    rows: &Checker<'_>,
    (fields, fence): (&RejectFields, &Fence<'_>),
) -> Result<i64, Direct> {
    let number = rows.number;
    // Someone else wrote into the scope since it was found empty: go through the stage.
    let in_scope = db.number(&sql.count_in_scope()).await?;
    if in_scope != number && sql.has_key() {
        return Err(Direct::Refused(format!(
            "{in_scope} row(s) in scope after loading {number}: another writer"
        )));
    }
    // Past the keys held in memory, a key read twice is looked for in the table.
    if sql.has_key() && usize::try_from(number).unwrap_or(usize::MAX) > TRACKED {
        let duplicates = db.rows(&sql.duplicates_in_target()).await?;
        if !duplicates.is_empty() {
            return Err(Direct::Failed(duplicate_keys(&duplicates)));
        }
    }
    if let Some(keep) = rows.mark.as_ref().and_then(|m| m.keep(sql.dialect)) {
        db.run(&keep).await?;
    }
    db.run(&fence.mark(fields.lease, &fields.at)).await?;
    let held = db.number(&fence.lease()).await?;
    if held != fields.lease {
        return Err(Direct::Failed(Failure::Fatal(format!(
            "publish refused: {}",
            stale(fields.lease, held)
        ))));
    }
    Ok(number)
}

/// Checks rows on their way in: no NULL key, inside the scope, no key twice.
pub(super) struct Checker<'a> {
    pub(super) shape: &'a Shape,
    /// The keys read so far (none without a key).
    keys: Option<Skipper>,
    /// Rows checked so far.
    pub(super) number: i64,
    /// A buffer for hashing.
    bytes: Vec<u8>,
    /// The highest value of the `incremental` column.
    pub(super) mark: Option<Mark>,
}

impl Checker<'_> {
    /// The next batch of `batches` as text (each value by `write`, tab-separated, a line per
    /// row), its mark taken and every row checked, and each row's state line added to `state`
    /// when there is one; `None` at the end of the rows.
    pub(super) async fn next_text(
        &mut self,
        batches: &mut Batches,
        write: fn(&Value, &mut Vec<u8>),
        mut state: Option<&mut Vec<u8>>,
    ) -> Result<Option<Vec<u8>>, Direct> {
        let Some(mut batch) = batches.next().await.map_err(Direct::Failed)? else {
            return Ok(None);
        };
        if let Some(mark) = self.mark.as_mut() {
            mark.take(&mut batch);
        }
        let mut text = Vec::with_capacity(64 * batch.len());
        for row in &batch {
            let hash = self.check(row)?;
            if let Some(state) = state.as_deref_mut() {
                state_line(&self.shape.key, row, hash, state, write);
            }
            for (index, value) in row.iter().enumerate() {
                if index > 0 {
                    text.push(b'\t');
                }
                write(value, &mut text);
            }
            text.push(b'\n');
        }
        Ok(Some(text))
    }

    /// Checks `row`; its hash.
    fn check(&mut self, row: &[Value]) -> Result<i64, Direct> {
        self.number += 1;
        let number = self.number;
        let shape = self.shape;
        if let Some(problem) = shape.problem(row) {
            return Err(Direct::Failed(Failure::Fatal(format!(
                "source row {number} ({}): {problem}; nothing was written",
                shape.key_text(row)
            ))));
        }
        let hash = shape.hash(row, &mut self.bytes);
        if let Some(keys) = self.keys.as_mut()
            && keys.judge(row, &shape.key, hash) == Verdict::Duplicate
        {
            return Err(Direct::Failed(Failure::Fatal(format!(
                "the source has duplicate keys, e.g. {} (again at row {number}); nothing was written",
                shape.key_text(row)
            ))));
        }
        Ok(hash)
    }
}

/// PostgreSQL: the rows through one `COPY` per chunk, the state's rows after each chunk.
/// Only a refusal reported by `finish` (the protocol back in step) may let the caller go on
/// with the connection (through the stage); every other error here is a failure, after which
/// the connection is dropped.
async fn copy(
    pg: &mut PgConnection,
    sql: &Sql,
    batches: &mut Batches,
    rows: &mut Checker<'_>,
    keep_state: bool,
) -> Result<(), Direct> {
    let copy_target = Sql::copy_into(&sql.target_columns());
    let copy_state = Sql::copy_into(&sql.state_columns());
    let mut state = Vec::new();
    let mut ended = false;
    while !ended {
        let chunk_start = rows.number;
        let mut copying = pg
            .copy_in_raw(&copy_target)
            .await
            .map_err(Direct::from_sql)?;
        loop {
            let text = match rows
                .next_text(batches, copy_text_value, keep_state.then_some(&mut state))
                .await
            {
                Ok(Some(text)) => text,
                Ok(None) => {
                    ended = true;
                    break;
                }
                Err(problem) => {
                    let _ = copying.abort("the load stopped").await;
                    return Err(problem);
                }
            };
            copying.send(text).await.map_err(Direct::from_sql)?;
            if rows.number - chunk_start >= CHUNK_ROWS || state.len() >= CHUNK_STATE_BYTES {
                break;
            }
        }
        copying.finish().await.map_err(Direct::from_sql)?;
        if !state.is_empty() {
            let mut copying = pg
                .copy_in_raw(&copy_state)
                .await
                .map_err(Direct::from_sql)?;
            copying
                .send(std::mem::take(&mut state))
                .await
                .map_err(Direct::from_sql)?;
            copying.finish().await.map_err(Direct::from_sql)?;
        }
    }
    Ok(())
}

/// A state row (the key's values, each written by `write`, and the hash) in `COPY`'s text
/// form.
fn state_line(
    key: &[usize],
    row: &[Value],
    hash: i64,
    out: &mut Vec<u8>,
    write: fn(&Value, &mut Vec<u8>),
) {
    for &i in key {
        write(&row[i], out);
        out.push(b'\t');
    }
    out.extend_from_slice(itoa::Buffer::new().format(hash).as_bytes());
    out.push(b'\n');
}

/// MySQL (and SQLite): each batch by multi-row INSERTs, then its state rows.
async fn insert(
    db: &mut TargetDb,
    sql: &Sql,
    batches: &mut Batches,
    rows: &mut Checker<'_>,
    keep_state: bool,
) -> Result<(), Direct> {
    let target = sql.target_columns();
    let state = sql.state_columns();
    let (copy_target, copy_state) = (Sql::copy_into(&target), Sql::copy_into(&state));
    while let Some(mut batch) = batches.next().await.map_err(Direct::Failed)? {
        if let Some(mark) = rows.mark.as_mut() {
            mark.take(&mut batch);
        }
        let mut hashes: Batch = Vec::with_capacity(if keep_state { batch.len() } else { 0 });
        for row in &batch {
            let hash = rows.check(row)?;
            if keep_state {
                let mut entry: Vec<Value> =
                    rows.shape.key.iter().map(|&i| row[i].clone()).collect();
                entry.push(Value::Int(hash));
                hashes.push(entry);
            }
        }
        db.stage(&target.0, &target.1, &copy_target, &batch)
            .await
            .map_err(Direct::from_sql)?;
        if keep_state {
            db.stage(&state.0, &state.1, &copy_state, &hashes)
                .await
                .map_err(Direct::from_sql)?;
        }
    }
    Ok(())
}
