//! A bounded attempt log: keeps the start and the end of very long output.

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

#[cfg(test)]
mod tests {
    use super::*;

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
