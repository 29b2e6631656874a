//! Masking output as it comes: a task's output arrives in chunks that may split a secret or a
//! URL in two, so whole lines are masked, and a line too long to hold is cut only where no
//! known secret can straddle the cut.

use crate::Redactor;

/// The longest line held back whole before it is masked and written in parts.
const MAX_LINE: usize = 64 * 1024;

/// What is kept back at a cut at least, so that a URL or key=value credential is seen whole.
const KEEP_FOR_SHAPES: usize = 4096;

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
            let cut = self.safe_cut();
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

    /// Where a long line may be cut: before the last stretch that could begin a known secret
    /// (or a URL or key=value credential), moved back to the start of any known secret that
    /// would straddle it, and to the last blank before it when there is one nearby.
    fn safe_cut(&self) -> usize {
        let keep = self
            .redactor
            .longest()
            .max(KEEP_FOR_SHAPES)
            .min(self.pending.len());
        let mut cut = self.pending.len() - keep;
        if let Some(blank) = self.pending[cut.saturating_sub(KEEP_FOR_SHAPES)..cut]
            .iter()
            .rposition(u8::is_ascii_whitespace)
        {
            cut = cut.saturating_sub(KEEP_FOR_SHAPES) + blank + 1;
        }
        loop {
            let straddling = self
                .redactor
                .values()
                .iter()
                .filter_map(|secret| {
                    let secret = secret.as_bytes();
                    let from = cut.saturating_sub(secret.len() - 1);
                    let window = &self.pending[from..(cut + secret.len()).min(self.pending.len())];
                    window
                        .windows(secret.len())
                        .position(|w| w == secret)
                        .map(|at| from + at)
                        .filter(|start| *start < cut)
                })
                .min();
            match straddling {
                Some(start) => cut = start,
                None => break,
            }
        }
        // Never inside a character of several bytes.
        while cut > 0 && cut < self.pending.len() && self.pending[cut] & 0xC0 == 0x80 {
            cut -= 1;
        }
        if cut == 0 && self.pending.len() > 4 * MAX_LINE {
            // A "secret" longer than a long line: bound the memory all the same.
            return self.pending.len() - keep;
        }
        cut
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
    fn a_secret_is_never_cut_in_two_whatever_the_line_length() {
        let secret = "tok-ABCDEFGHIJ";
        let mut redactor = Redactor::new();
        redactor.add(secret);
        for filler in [1, 5, 13, 4095, 4097] {
            let mut stream = StreamRedactor::new(redactor.clone());
            let mut out = Vec::new();
            let line = format!(
                "{}{}",
                "x".repeat(filler),
                format!("{secret}xxxxxx").repeat(30_000)
            );
            for chunk in line.as_bytes().chunks(8192) {
                out.extend(stream.push(chunk));
            }
            out.extend(stream.finish());
            let text = String::from_utf8_lossy(&out);
            assert!(!text.contains(secret), "filler {filler}: leaked");
            assert_eq!(text.matches("********").count(), 30_000, "filler {filler}");
        }
    }

    #[test]
    fn a_long_line_is_never_cut_inside_a_character() {
        let mut stream = StreamRedactor::new(Redactor::new());
        let line = "é".repeat(MAX_LINE);
        let mut out = Vec::new();
        for chunk in line.as_bytes().chunks(1000) {
            out.extend(stream.push(chunk));
        }
        out.extend(stream.finish());
        assert_eq!(String::from_utf8(out).expect("whole characters"), line);
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
