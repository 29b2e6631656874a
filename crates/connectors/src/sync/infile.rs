//! A first load into MySQL or MariaDB by `LOAD DATA LOCAL INFILE`: the rows stream to the
//! server as tab-separated text, one statement per chunk of rows, with the state's rows after
//! each chunk, in one transaction. The server parses such text several times faster than
//! multi-row `INSERT`s (sqlx cannot send it, so this one statement goes through
//! `mysql_async`). Where the server does not allow it (`local_infile` off, as MySQL 8 ships),
//! the load goes by `INSERT`s instead.
//!
//! With `LOCAL`, the server turns a value it cannot hold and a duplicate key into warnings
//! (it cannot stop the client mid-file): any warning makes the load a refusal, rolled back and
//! done again through the stage, which names the rows.

use bytes::Bytes;
use futures_util::StreamExt as _;
use mysql_async::prelude::Queryable as _;

use super::direct::{CHUNK_ROWS, CHUNK_STATE_BYTES, Checker, Direct, Statements};
use super::statements::Sql;
use super::target::{MYSQL_REFUSED, refused_state};
use crate::query::MYSQL_TRANSIENT;
use crate::transfer::write_sql::copy_text_value;
use crate::transfer::{Batches, Failure, Value};

/// The file name the statement asks for; the handler of the connection answers it.
const FILE: &str = "ferry_rows";

/// What sqlx sets on its MySQL sessions (so that values read as the other paths read them),
/// and a long wait for the client's data (a slow source between two batches).
const SESSION: &str = "SET sql_mode = CONCAT(@@sql_mode, ',PIPES_AS_CONCAT,NO_ENGINE_SUBSTITUTION'), time_zone = '+00:00', NAMES utf8mb4, net_read_timeout = 3600";

/// A connection for `LOAD DATA LOCAL INFILE` to the database at `url`, or why there cannot
/// be one (a URL `mysql_async` does not read, or a server with `local_infile` off): then the
/// load goes by `INSERT`s.
pub(super) async fn connect(url: &str) -> Result<mysql_async::Conn, String> {
    let said = |error: &dyn std::fmt::Display| ferry_secrets::redact_text(&error.to_string());
    let opts = mysql_async::Opts::from_url(url).map_err(|e| said(&e))?;
    let opts = mysql_async::OptsBuilder::from_opts(opts).setup(vec![SESSION.to_string()]);
    let mut conn = mysql_async::Conn::new(opts).await.map_err(|e| said(&e))?;
    let allowed: Option<i64> = conn
        .query_first("SELECT @@local_infile")
        .await
        .map_err(|e| said(&e))?;
    if allowed == Some(1) {
        Ok(conn)
    } else {
        close(conn).await;
        Err("the server has local_infile off".to_string())
    }
}

/// Closes `conn` (a failure to say goodbye changes nothing).
pub(super) async fn close(conn: mysql_async::Conn) {
    let _ = conn.disconnect().await;
}

/// A database error of `mysql_async`: a refused value (a warning turned error, a duplicate)
/// or a failure, transient as sqlx's would be.
fn from_mysql(error: mysql_async::Error) -> Direct {
    if let mysql_async::Error::Server(server) = &error
        && (MYSQL_REFUSED.contains(&server.code) || refused_state(&server.state))
    {
        return Direct::Refused(ferry_secrets::redact_text(
            &server.message.replace('\n', " "),
        ));
    }
    let transient = match &error {
        mysql_async::Error::Server(server) => MYSQL_TRANSIENT.contains(&server.code),
        mysql_async::Error::Io(_) => true,
        _ => false,
    };
    let text = ferry_secrets::redact_text(&format!("loading: {error}"));
    Direct::Failed(if transient {
        Failure::Transient(text)
    } else {
        Failure::Fatal(text)
    })
}

#[async_trait::async_trait]
impl Statements for mysql_async::Conn {
    async fn run(&mut self, sql: &str) -> Result<(), Direct> {
        self.query_drop(sql).await.map_err(from_mysql)
    }

    async fn number(&mut self, sql: &str) -> Result<i64, Direct> {
        let found: Option<i64> = self.query_first(sql).await.map_err(from_mysql)?;
        Ok(found.unwrap_or(0))
    }

    async fn rows(&mut self, sql: &str) -> Result<Vec<Vec<String>>, Direct> {
        let rows: Vec<mysql_async::Row> = self.query(sql).await.map_err(from_mysql)?;
        Ok(rows
            .into_iter()
            .map(|row| {
                row.unwrap()
                    .into_iter()
                    .map(|value| match value {
                        mysql_async::Value::Bytes(bytes) => {
                            String::from_utf8_lossy(&bytes).into_owned()
                        }
                        mysql_async::Value::Int(n) => n.to_string(),
                        mysql_async::Value::UInt(n) => n.to_string(),
                        other => other.as_sql(true),
                    })
                    .collect()
            })
            .collect())
    }
}

/// `LOAD DATA LOCAL INFILE` of `FILE` into `table (columns)`: tab-separated, `\`-escaped,
/// `\N` for NULL (the statement's defaults, as `COPY`'s text form).
fn load_data((table, columns): &(String, String)) -> String {
    format!("LOAD DATA LOCAL INFILE '{FILE}' INTO TABLE {table} CHARACTER SET utf8mb4 ({columns})")
}

/// One value as `LOAD DATA` reads it: `COPY`'s text form, but booleans as 1 and 0.
fn infile_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Bool(b) => out.push(if *b { b'1' } else { b'0' }),
        other => copy_text_value(other, out),
    }
}

/// Sends the rows by chunks of [`CHUNK_ROWS`] (fewer when the state's rows waiting pass
/// [`CHUNK_STATE_BYTES`]), each followed by its state's rows, inside the caller's transaction.
pub(super) async fn load(
    conn: &mut mysql_async::Conn,
    sql: &Sql,
    batches: &mut Batches,
    rows: &mut Checker<'_>,
    keep_state: bool,
) -> Result<(), Direct> {
    let into_target = load_data(&sql.target_columns());
    let into_state = load_data(&sql.state_columns());
    let mut state = Vec::new();
    let mut ended = false;
    while !ended {
        let (sender, receiver) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
        conn.set_infile_handler(async move { Ok(tokio_stream_of(receiver)) });
        let chunk_start = rows.number;
        // The rows are read, checked and sent while the server loads what came before.
        let feed = async {
            let mut problem = None;
            loop {
                let text = match rows
                    .next_text(batches, infile_value, keep_state.then_some(&mut state))
                    .await
                {
                    Ok(Some(text)) => text,
                    Ok(None) => {
                        ended = true;
                        break;
                    }
                    Err(found) => {
                        problem = Some(found);
                        break;
                    }
                };
                if !send(&sender, Bytes::from(text)).await {
                    // The statement ended early: its error says why.
                    break;
                }
                if rows.number - chunk_start >= CHUNK_ROWS || state.len() >= CHUNK_STATE_BYTES {
                    break;
                }
            }
            if problem.is_some() {
                // Ends the file with an error (when the channel is full, the rows sent are
                // rolled back with the transaction all the same).
                let _ = sender.try_send(Err(std::io::Error::other("the load stopped")));
            }
            drop(sender);
            problem
        };
        // An error before the server asks for the file leaves the handler (and the receiver)
        // in the connection: replacing it ends the feed.
        let statement = async {
            let done = conn.query_drop(&into_target).await;
            if done.is_err() {
                conn.set_infile_handler(async { Ok(futures_util::stream::empty().boxed()) });
            }
            done
        };
        let (loaded, problem) = tokio::join!(statement, feed);
        if let Some(problem) = problem {
            return Err(problem);
        }
        loaded.map_err(from_mysql)?;
        refuse_on_warnings(conn, "the rows")?;
        if !state.is_empty() {
            let chunk = Bytes::from(std::mem::take(&mut state));
            conn.set_infile_handler(async move {
                Ok(futures_util::stream::iter(packets(&chunk).into_iter().map(Ok)).boxed())
            });
            conn.query_drop(&into_state).await.map_err(from_mysql)?;
            refuse_on_warnings(conn, "the state's rows")?;
        }
    }
    Ok(())
}

/// A refusal when the last statement left warnings (a value changed to fit, a duplicate key
/// skipped): the stage finds the rows and their reasons.
fn refuse_on_warnings(conn: &mysql_async::Conn, what: &str) -> Result<(), Direct> {
    match conn.get_warnings() {
        0 => Ok(()),
        warnings => Err(Direct::Refused(format!(
            "loading {what} left {warnings} warning(s) (a value the table cannot hold, or a duplicate key)"
        ))),
    }
}

/// The most bytes sent in one piece: a piece is one protocol packet, which the server refuses
/// past its `max_allowed_packet` (16 MiB on MariaDB by default).
const PIECE: usize = 1 << 20;

/// `bytes` in pieces of at most [`PIECE`] bytes.
fn packets(bytes: &Bytes) -> Vec<Bytes> {
    (0..bytes.len())
        .step_by(PIECE)
        .map(|start| bytes.slice(start..(start + PIECE).min(bytes.len())))
        .collect()
}

/// Sends `bytes` in pieces; false when the statement no longer reads them.
async fn send(sender: &tokio::sync::mpsc::Sender<std::io::Result<Bytes>>, bytes: Bytes) -> bool {
    for piece in packets(&bytes) {
        if sender.send(Ok(piece)).await.is_err() {
            return false;
        }
    }
    true
}

/// The chunks `receiver` gets, as the stream a handler answers with.
fn tokio_stream_of(
    receiver: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
) -> mysql_async::InfileData {
    futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_bytes_in_order_and_none_is_too_large() {
        for length in [0, 1, PIECE - 1, PIECE, PIECE + 1, 3 * PIECE + 17] {
            let bytes = Bytes::from((0..length).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
            let pieces = packets(&bytes);
            assert!(
                pieces.iter().all(|p| !p.is_empty() && p.len() <= PIECE),
                "{length}"
            );
            assert_eq!(pieces.concat(), bytes.to_vec(), "{length}");
            assert_eq!(pieces.len(), length.div_ceil(PIECE), "{length}");
        }
    }

    #[test]
    fn booleans_are_written_as_numbers_and_the_rest_as_copy_text() {
        let mut out = Vec::new();
        for value in [
            Value::Bool(true),
            Value::Bool(false),
            Value::Null,
            Value::Text("a\tb\\c\nd".to_string()),
            Value::Text(String::new()),
        ] {
            infile_value(&value, &mut out);
            out.push(b'|');
        }
        assert_eq!(out, b"1|0|\\N|a\\tb\\\\c\\nd||".to_vec());
    }
}
