//! Bounded attempt logs: the start and the end of very long output are kept, the middle is
//! dropped with a marker that says how much. [`LogBuffer`] keeps a log in memory (requests run
//! in the engine); [`LogFile`] writes one to a file as it comes (supervised commands).

use std::io::Write as _;
use std::sync::{Arc, Mutex, PoisonError};

/// Captured output of an attempt, shared between the readers of stdout and stderr. Past
/// `limit` bytes, the middle is dropped and a marker says how much.
#[derive(Clone, Debug)]
pub struct LogBuffer {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    head: Vec<u8>,
    tail: Vec<u8>,
    dropped: usize,
    limit: usize,
}

impl LogBuffer {
    /// A buffer keeping about `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                head: Vec::new(),
                tail: Vec::new(),
                dropped: 0,
                limit: limit.max(2),
            })),
        }
    }

    /// Appends output.
    pub fn push(&self, bytes: &[u8]) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let half = inner.limit / 2;
        let room = half.saturating_sub(inner.head.len());
        let (to_head, rest) = bytes.split_at(room.min(bytes.len()));
        inner.head.extend_from_slice(to_head);
        inner.tail.extend_from_slice(rest);
        if inner.tail.len() > half {
            let excess = inner.tail.len() - half;
            inner.tail.drain(..excess);
            inner.dropped += excess;
        }
    }

    /// Appends a line written by ferry itself (timeouts, signals).
    pub fn note(&self, line: &str) {
        self.push(format!("[ferry] {line}\n").as_bytes());
    }

    /// The log as text.
    pub fn text(&self) -> String {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut text = String::from_utf8_lossy(&inner.head).into_owned();
        if inner.dropped > 0 {
            text.push_str(&format!(
                "\n[ferry] ... {} bytes of output dropped ...\n",
                inner.dropped
            ));
        }
        text.push_str(&String::from_utf8_lossy(&inner.tail));
        text
    }
}

/// A log written to a file as output comes: the first half of `limit` bytes goes to the file at
/// once; past that, the latest half is kept in memory and written by [`LogFile::finish`] after
/// the marker. If the supervisor dies, the file still holds the start of the output.
#[derive(Debug)]
pub struct LogFile {
    file: std::fs::File,
    written: usize,
    tail: std::collections::VecDeque<u8>,
    dropped: usize,
    limit: usize,
}

impl LogFile {
    /// Appends to `file`, keeping about `limit` bytes.
    pub fn new(file: std::fs::File, limit: usize) -> Self {
        Self {
            file,
            written: 0,
            tail: std::collections::VecDeque::new(),
            dropped: 0,
            limit: limit.max(2),
        }
    }

    /// Appends output.
    pub fn push(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let half = self.limit / 2;
        let room = half.saturating_sub(self.written);
        let (to_file, rest) = bytes.split_at(room.min(bytes.len()));
        if !to_file.is_empty() {
            self.file.write_all(to_file)?;
            self.written += to_file.len();
        }
        self.tail.extend(rest);
        if self.tail.len() > half {
            let excess = self.tail.len() - half;
            self.tail.drain(..excess);
            self.dropped += excess;
        }
        Ok(())
    }

    /// Appends a line written by ferry itself (timeouts, signals).
    pub fn note(&mut self, line: &str) -> std::io::Result<()> {
        self.push(format!("[ferry] {line}\n").as_bytes())
    }

    /// Writes the kept end of the output.
    pub fn finish(&mut self) -> std::io::Result<()> {
        if self.dropped > 0 {
            self.file.write_all(
                format!(
                    "\n[ferry] ... {} bytes of output dropped ...\n",
                    self.dropped
                )
                .as_bytes(),
            )?;
        }
        let (front, back) = self.tail.as_slices();
        self.file.write_all(front)?;
        self.file.write_all(back)?;
        self.tail.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_file_keeps_head_and_tail() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("log");
        let mut log = LogFile::new(std::fs::File::create(&path).expect("file"), 10);
        log.push(b"01234567").expect("push");
        assert_eq!(
            std::fs::read(&path).expect("read"),
            b"01234",
            "the head is written at once"
        );
        log.push(b"89abcdefghij").expect("push");
        log.finish().expect("finish");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "01234\n[ferry] ... 10 bytes of output dropped ...\nfghij"
        );
    }

    #[test]
    fn keeps_head_and_tail_of_long_output() {
        let log = LogBuffer::new(10);
        log.push(b"0123456789abcdefghij");
        assert_eq!(
            log.text(),
            "01234\n[ferry] ... 10 bytes of output dropped ...\nfghij"
        );
    }

    #[test]
    fn short_output_is_kept_whole() {
        let log = LogBuffer::new(100);
        log.push(b"hello ");
        log.push(b"world");
        assert_eq!(log.text(), "hello world");
    }
}
