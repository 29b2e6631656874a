//! Masking output as it comes: a task's output arrives in chunks that may split a secret or a
//! URL in two, so whole lines are masked, and a line too long to hold is cut only where no
//! known secret can straddle the cut.

use crate::Redactor;

/// The longest line held back whole before it is masked and written in parts.
const MAX_LINE: usize = 64 * 1024;

/// Masks a byte stream line by line with a [`Redactor`].
#[derive(Debug)]
pub struct StreamRedactor {
    redactor: Redactor,
    pending: Vec<u8>,
}

impl StreamRedactor {
    /// Masks with `redactor`.
    pub fn new(redactor: Redactor) -> Self {
        Self {
            redactor,
            pending: Vec::new(),
        }
    }

    /// Takes a chunk of output; returns what can be written now, masked.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.pending.extend_from_slice(chunk);
        let mut out = Vec::new();
        if let Some(last_newline) = self.pending.iter().rposition(|b| *b == b'\n') {
            let rest = self.pending.split_off(last_newline + 1);
            let lines = std::mem::replace(&mut self.pending, rest);
            out.extend(self.mask(&lines));
        }
        if self.pending.len() > MAX_LINE {
            // Keep back enough for the longest secret to be seen whole next time.
            let keep = self.redactor.longest().max(256).min(self.pending.len());
            let cut = self.pending.len() - keep;
            let rest = self.pending.split_off(cut);
            let head = std::mem::replace(&mut self.pending, rest);
            out.extend(self.mask(&head));
        }
        out
    }

    /// The rest of the output, masked.
    pub fn finish(&mut self) -> Vec<u8> {
        let rest = std::mem::take(&mut self.pending);
        self.mask(&rest)
    }

    fn mask(&self, bytes: &[u8]) -> Vec<u8> {
        self.redactor
            .redact(&String::from_utf8_lossy(bytes))
            .into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_split_across_chunks_is_still_masked() {
        let mut redactor = Redactor::new();
        redactor.add("hunter2-secret");
        let mut stream = StreamRedactor::new(redactor);
        let mut out = stream.push(b"one\ntwo hunter2");
        out.extend(stream.push(b"-secret three\npostgres://a:"));
        out.extend(stream.push(b"pw@db/x"));
        out.extend(stream.finish());
        assert_eq!(
            String::from_utf8_lossy(&out),
            "one\ntwo ******** three\npostgres://a:********@db/x"
        );
    }

    #[test]
    fn very_long_lines_are_written_in_parts_without_leaking() {
        let mut redactor = Redactor::new();
        redactor.add("needle-secret");
        let mut stream = StreamRedactor::new(redactor);
        let mut out = Vec::new();
        let filler = vec![b'x'; MAX_LINE];
        out.extend(stream.push(&filler));
        out.extend(stream.push(b"needle-"));
        out.extend(stream.push(&filler));
        out.extend(stream.push(b"secret"));
        let before_finish = out.len();
        out.extend(stream.finish());
        assert!(before_finish > 0, "long lines must not be held back whole");
        let text = String::from_utf8_lossy(&out);
        assert!(!text.contains("needle-secret"));
    }
}
