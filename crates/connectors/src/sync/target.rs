//! One connection to a sync's target database, whatever its kind: statements, counts, text
//! answers, and rows staged (PostgreSQL by COPY, the others by multi-row INSERTs).

use ferry_config::Connection;
use futures_util::StreamExt as _;
use sqlx::{Connection as _, Row as _};

use crate::transfer::Batch;
use crate::transfer::write_sql::{copy_text, insert_mysql, insert_sqlite};
use crate::write::Dialect;

/// A connection to the target.
pub(crate) enum TargetDb {
    /// SQLite (with the connection's schemas attached).
    Sqlite(sqlx::SqliteConnection),
    /// PostgreSQL.
    Postgres(sqlx::PgConnection),
    /// MySQL or MariaDB.
    Mysql(sqlx::MySqlConnection),
}

/// Runs `$body` with `$db` bound to the concrete connection.
macro_rules! on {
    ($self:expr, $db:ident => $body:expr) => {
        match $self {
            TargetDb::Sqlite($db) => $body,
            TargetDb::Postgres($db) => $body,
            TargetDb::Mysql($db) => $body,
        }
    };
}

impl TargetDb {
    /// Connects to `connection`, or `None` when it is not a SQL database.
    pub(crate) async fn connect(connection: &Connection) -> Option<Result<Self, sqlx::Error>> {
        Some(match connection {
            Connection::Sqlite { path, schemas, .. } => crate::sqlite::open(path, schemas, false)
                .await
                .map(TargetDb::Sqlite),
            Connection::Postgres { url } => {
                match sqlx::PgConnection::connect(url.expose()).await {
                    Ok(mut db) => {
                        // A connection whose client died notices within a second and rolls
                        // its transaction back. The planner's default takes a random read for
                        // four sequential ones, and so joins ten thousand staged rows to a
                        // million-row table by hashing the whole table (0.2 s) rather than
                        // through its index (0.02 s): 1.1 is the usual figure for SSDs.
                        let _ = sqlx::Executor::execute(
                            &mut db,
                            "SET client_connection_check_interval = 1000",
                        )
                        .await;
                        let _ =
                            sqlx::Executor::execute(&mut db, "SET random_page_cost = 1.1").await;
                        Ok(TargetDb::Postgres(db))
                    }
                    Err(error) => Err(error),
                }
            }
            Connection::Mysql { url } => sqlx::MySqlConnection::connect(url.expose())
                .await
                .map(TargetDb::Mysql),
            Connection::Bigquery { .. } | Connection::Aws { .. } => return None,
        })
    }

    /// The dialect spoken.
    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            TargetDb::Sqlite(_) => Dialect::Sqlite,
            TargetDb::Postgres(_) => Dialect::Postgres,
            TargetDb::Mysql(_) => Dialect::Mysql,
        }
    }

    /// Runs one statement; the rows it changed.
    pub(crate) async fn execute(&mut self, sql: &str) -> Result<u64, sqlx::Error> {
        on!(self, db => sqlx::Executor::execute(&mut *db, sql).await.map(|done| done.rows_affected()))
    }

    /// The first column of the first row, as an integer.
    pub(crate) async fn count(&mut self, sql: &str) -> Result<i64, sqlx::Error> {
        on!(self, db => {
            let row = sqlx::query(sql).fetch_one(&mut *db).await?;
            row.try_get::<i64, _>(0)
        })
    }

    /// Gives `each` the first column of every row of `sql`, a query of one BIGINT column
    /// without NULLs (PostgreSQL sends them by a binary `COPY`, several times faster for a
    /// million rows).
    pub(crate) async fn hashes(
        &mut self,
        sql: &str,
        mut each: impl FnMut(i64),
    ) -> Result<(), sqlx::Error> {
        match self {
            TargetDb::Postgres(db) => {
                let mut copy = db
                    .copy_out_raw(&format!("COPY ({sql}) TO STDOUT (FORMAT binary)"))
                    .await?;
                let mut reader = BinaryBigints::default();
                while let Some(chunk) = copy.next().await {
                    reader.read(&chunk?, &mut each)?;
                }
                reader.finish()
            }
            TargetDb::Sqlite(db) => {
                let mut rows = sqlx::query_scalar::<_, i64>(sql).fetch(&mut *db);
                while let Some(hash) = rows.next().await {
                    each(hash?);
                }
                Ok(())
            }
            TargetDb::Mysql(db) => {
                let mut rows = sqlx::query_scalar::<_, i64>(sql).fetch(&mut *db);
                while let Some(hash) = rows.next().await {
                    each(hash?);
                }
                Ok(())
            }
        }
    }

    /// Every row's columns read as text (the statement casts what is not).
    pub(crate) async fn texts(&mut self, sql: &str) -> Result<Vec<Vec<String>>, sqlx::Error> {
        on!(self, db => {
            let rows = sqlx::query(sql).fetch_all(&mut *db).await?;
            rows.iter()
                .map(|row| {
                    (0..row.len())
                        .map(|i| {
                            row.try_get::<String, _>(i)
                                .or_else(|_| row.try_get::<i64, _>(i).map(|n| n.to_string()))
                        })
                        .collect()
                })
                .collect()
        })
    }

    /// Adds `batch` to the stage `table` (`columns` listed, quoted).
    pub(crate) async fn stage(
        &mut self,
        table: &str,
        columns: &str,
        copy: &str,
        batch: &Batch,
    ) -> Result<(), sqlx::Error> {
        match self {
            TargetDb::Postgres(db) => {
                let mut buffer = Vec::new();
                copy_text(batch, &mut buffer);
                let mut copying = db.copy_in_raw(copy).await?;
                copying.send(buffer.as_slice()).await?;
                copying.finish().await.map(|_| ())
            }
            TargetDb::Sqlite(db) => {
                let width = batch.first().map_or(1, Vec::len);
                insert_sqlite(db, table, columns, width, batch).await
            }
            TargetDb::Mysql(db) => {
                let width = batch.first().map_or(1, Vec::len);
                insert_mysql(db, table, columns, width, batch).await
            }
        }
    }
}

/// Reads PostgreSQL's binary `COPY` of rows of one BIGINT column: a header, then per row a
/// field count (2 bytes, -1 at the end), the field's length (4 bytes) and its 8 bytes.
#[derive(Default)]
struct BinaryBigints {
    /// Bytes not read yet (a row can span two chunks).
    pending: Vec<u8>,
    header_read: bool,
    ended: bool,
}

/// The binary `COPY` header: a signature, 4 bytes of flags and a header extension length
/// (0).
const COPY_SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

impl BinaryBigints {
    fn read(&mut self, chunk: &[u8], each: &mut impl FnMut(i64)) -> Result<(), sqlx::Error> {
        self.pending.extend_from_slice(chunk);
        let mut at = 0;
        let bytes = &self.pending;
        if !self.header_read {
            let header = COPY_SIGNATURE.len() + 8;
            if bytes.len() < header {
                return Ok(());
            }
            if &bytes[..COPY_SIGNATURE.len()] != COPY_SIGNATURE {
                return Err(protocol("not a binary COPY"));
            }
            let extension =
                u32::from_be_bytes(bytes[header - 4..header].try_into().unwrap_or_default());
            at = header + extension as usize;
            if bytes.len() < at {
                return Ok(());
            }
            self.header_read = true;
        }
        while !self.ended && bytes.len() >= at + 2 {
            let fields = i16::from_be_bytes([bytes[at], bytes[at + 1]]);
            if fields == -1 {
                self.ended = true;
                at += 2;
                break;
            }
            if fields != 1 {
                return Err(protocol("a row of more than one column"));
            }
            if bytes.len() < at + 14 {
                break;
            }
            let length = i32::from_be_bytes(bytes[at + 2..at + 6].try_into().unwrap_or_default());
            if length != 8 {
                return Err(protocol("a value that is not a BIGINT"));
            }
            let value = i64::from_be_bytes(bytes[at + 6..at + 14].try_into().unwrap_or_default());
            each(value);
            at += 14;
        }
        self.pending.drain(..at);
        Ok(())
    }

    fn finish(self) -> Result<(), sqlx::Error> {
        if self.ended {
            Ok(())
        } else {
            Err(protocol("the COPY ended early"))
        }
    }
}

fn protocol(what: &str) -> sqlx::Error {
    sqlx::Error::Protocol(format!("reading the synced state: {what}"))
}

/// Whether the database refused a row's values (a constraint, a type, a value out of range),
/// as opposed to the statement itself or the connection failing.
pub(crate) fn is_rejection(error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = error else {
        return false;
    };
    let code = db.code().unwrap_or_default();
    // SQLite first: its codes are numbers (SQLITE_CONSTRAINT 19 and SQLITE_MISMATCH 20 with
    // their extended codes; an I/O error is not a refused row).
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        let number: i64 = code.parse().unwrap_or(0);
        return matches!(number & 0xff, 19 | 20);
    }
    if let Some(mysql) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
        && MYSQL_REFUSED.contains(&mysql.number())
    {
        return true;
    }
    if !matches!(db.kind(), sqlx::error::ErrorKind::Other) {
        return true;
    }
    refused_state(&code)
}

/// MySQL's codes of refused values that come without a data SQLSTATE: a bad integer (1366), a
/// truncated value (1265), a bad date (1292), out of range (1264), too long (1406), NULL
/// (1048), a duplicate (1062), a foreign key (1451, 1452), a CHECK (3819, MariaDB 4025), a
/// missing value (1364).
pub(crate) const MYSQL_REFUSED: [u16; 12] = [
    1366, 1265, 1292, 1264, 1406, 1048, 1062, 1451, 1452, 3819, 4025, 1364,
];

/// Whether a SQLSTATE says the values were refused: classes 22 (data exception) and 23
/// (integrity constraint).
pub(crate) fn refused_state(code: &str) -> bool {
    code.starts_with("22") || code.starts_with("23")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_copy_of_bigints_is_read_across_any_chunking() {
        let values = [0_i64, -1, i64::MAX, i64::MIN, 42];
        let mut stream = COPY_SIGNATURE.to_vec();
        stream.extend_from_slice(&0_u32.to_be_bytes());
        // A header extension of 3 bytes, skipped.
        stream.extend_from_slice(&3_u32.to_be_bytes());
        stream.extend_from_slice(b"ext");
        for value in values {
            stream.extend_from_slice(&1_i16.to_be_bytes());
            stream.extend_from_slice(&8_i32.to_be_bytes());
            stream.extend_from_slice(&value.to_be_bytes());
        }
        stream.extend_from_slice(&(-1_i16).to_be_bytes());
        for size in [1, 3, 7, 14, stream.len()] {
            let mut reader = BinaryBigints::default();
            let mut read = Vec::new();
            for chunk in stream.chunks(size) {
                reader
                    .read(chunk, &mut |v| read.push(v))
                    .expect("a valid stream");
            }
            reader.finish().expect("ended");
            assert_eq!(read, values, "chunks of {size}");
        }
        let mut cut = BinaryBigints::default();
        cut.read(&stream[..stream.len() - 2], &mut |_| {})
            .expect("valid so far");
        assert!(cut.finish().is_err(), "a stream without its end is refused");
    }
}
