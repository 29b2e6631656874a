//! Secret masking for everything ferry shows: logs, attempt records, errors and API answers.
//!
//! Masking goes by value, not only by name: a [`Redactor`] knows every secret value it was
//! given (configured secrets, the values of variables and headers whose names say they are
//! secret, the passwords found in URLs and DSNs) and replaces each wherever it appears. On top
//! of that, [`redact_text`] masks credentials by their shape, so a password ferry was never told
//! about is still hidden when it appears in a URL (`postgres://app:pass@db`), a query parameter
//! (`?password=…`, `&api_key=…`) or a key=value DSN (`host=db password=…`).
//!
//! ```
//! use ferry_secrets::{Redactor, redact_text};
//!
//! assert_eq!(
//!     redact_text("postgres://app:s3cret@db/app?sslmode=require&password=x"),
//!     "postgres://app:********@db/app?sslmode=require&password=********"
//! );
//! let mut redactor = Redactor::new();
//! redactor.add_pair("X-Auth", "tok-123456");
//! assert_eq!(redactor.redact("sent tok-123456 to the API"), "sent ******** to the API");
//! ```

mod stream;

pub use stream::StreamRedactor;

/// What a secret looks like wherever it is shown.
pub const MASK: &str = "********";

/// Values shorter than this are not masked by value (masking `1` or `on` everywhere would make
/// logs unreadable); they are still masked by shape in URLs and key=value pairs.
pub const MIN_SECRET_LEN: usize = 4;

/// Words that make a variable, header or parameter name secret (compared case-insensitively).
const SECRET_WORDS: [&str; 11] = [
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "PWD",
    "KEY",
    "CREDENTIAL",
    "AUTH",
    "COOKIE",
    "SESSION",
    "SIGNATURE",
];

/// True when a name (an environment variable, a header, a query parameter) says its value is a
/// secret: `API_TOKEN`, `Authorization`, `X-Auth`, `password`, `aws_secret_access_key`, ...
pub fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    // `PWD` is the shell's working directory, not a password.
    upper != "PWD" && SECRET_WORDS.iter().any(|word| upper.contains(word))
}

/// The secret parts of a value: a URL's password, a DSN's `password=`, secret query parameters.
pub fn secrets_in(value: &str) -> Vec<String> {
    let mut found = Vec::new();
    for_each_credential(value, |range| found.push(value[range].to_string()));
    found
}

/// Replaces credentials found by their shape: URL passwords, secret query parameters and
/// key=value pairs whose key is secret.
pub fn redact_text(text: &str) -> String {
    let mut ranges = Vec::new();
    for_each_credential(text, |range| ranges.push(range));
    if ranges.is_empty() {
        return text.to_string();
    }
    ranges.sort_by_key(|r| r.start);
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for range in ranges {
        if range.start < at {
            continue;
        }
        out.push_str(&text[at..range.start]);
        out.push_str(MASK);
        at = range.end;
    }
    out.push_str(&text[at..]);
    out
}

/// Calls `found` with the byte range of every credential in `text`.
fn for_each_credential(text: &str, mut found: impl FnMut(std::ops::Range<usize>)) {
    url_passwords(text, &mut found);
    secret_pairs(text, &mut found);
    sql_passwords(text, &mut found);
}

/// SQL that sets a password: `PASSWORD 'x'`, `IDENTIFIED BY 'x'` (any case): the quoted text.
fn sql_passwords(text: &str, found: &mut impl FnMut(std::ops::Range<usize>)) {
    let lower = text.to_ascii_lowercase();
    for keyword in ["password", "identified by"] {
        let mut search = 0;
        while let Some(offset) = lower[search..].find(keyword) {
            let mut at = search + offset + keyword.len();
            search = at;
            let rest = &text[at..];
            let skipped = rest.len()
                - rest
                    .trim_start_matches(|c: char| c.is_whitespace() || c == '=')
                    .len();
            at += skipped;
            let Some(quote) = text[at..]
                .chars()
                .next()
                .filter(|c| matches!(c, '\'' | '"'))
            else {
                continue;
            };
            let start = at + 1;
            if let Some(length) = text[start..].find(quote) {
                if length > 0 {
                    found(start..start + length);
                }
                search = start + length;
            }
        }
    }
}

/// `scheme://user:PASSWORD@host`: the password's range.
fn url_passwords(text: &str, found: &mut impl FnMut(std::ops::Range<usize>)) {
    let bytes = text.as_bytes();
    let mut search = 0;
    while let Some(offset) = text[search..].find("://") {
        let authority_start = search + offset + 3;
        let authority_end = text[authority_start..]
            .find(|c: char| {
                matches!(c, '/' | '?' | '#' | '"' | '\'' | '`' | '<' | '>') || c.is_whitespace()
            })
            .map_or(text.len(), |end| authority_start + end);
        let authority = &text[authority_start..authority_end];
        if let Some(at) = authority.rfind('@')
            && let Some(colon) = authority[..at].find(':')
            && colon + 1 < at
        {
            found(authority_start + colon + 1..authority_start + at);
        }
        search = authority_end.max(authority_start);
        if search >= bytes.len() {
            break;
        }
    }
}

/// `key=VALUE` where `key` is secret, after a start of text, whitespace or one of `?&;,`: query
/// parameters, DSN settings, shell assignments and `--password=…` flags.
fn secret_pairs(text: &str, found: &mut impl FnMut(std::ops::Range<usize>)) {
    let bytes = text.as_bytes();
    let is_key_byte = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'.';
    let mut index = 0;
    while index < bytes.len() {
        let Some(eq) = text[index..].find('=').map(|e| index + e) else {
            break;
        };
        // `password=x` and, as PostgreSQL's key=value strings allow, `password = x`.
        let mut key_end = eq;
        while key_end > 0 && bytes[key_end - 1] == b' ' {
            key_end -= 1;
        }
        let mut key_start = key_end;
        while key_start > 0 && is_key_byte(bytes[key_start - 1]) {
            key_start -= 1;
        }
        let key = &text[key_start..key_end];
        let mut value_start = eq + 1;
        if key_end < eq {
            while value_start < bytes.len() && bytes[value_start] == b' ' {
                value_start += 1;
            }
        }
        index = eq + 1;
        if key.is_empty() || !is_secret_name(key) || value_start >= bytes.len() {
            continue;
        }
        let (start, end) = match bytes[value_start] {
            quote @ (b'\'' | b'"') => {
                let close = text[value_start + 1..]
                    .find(quote as char)
                    .map_or(text.len(), |c| value_start + 1 + c);
                (value_start + 1, close)
            }
            _ => {
                let end = text[value_start..]
                    .find(|c: char| {
                        matches!(c, '&' | ';' | '#' | '"' | '\'' | ',' | ')') || c.is_whitespace()
                    })
                    .map_or(text.len(), |e| value_start + e);
                (value_start, end)
            }
        };
        if start < end && &text[start..end] != MASK {
            found(start..end);
        }
        index = end.max(index);
    }
}

/// Masks secret values wherever they appear, then credentials by their shape.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    /// Longest first, so that a secret containing another is masked whole.
    values: Vec<String>,
}

impl Redactor {
    /// A redactor that knows no value yet (it still masks by shape).
    pub fn new() -> Self {
        Self::default()
    }

    /// Masks `value` (and the credentials inside it) from now on. A value of several lines (a
    /// private key) is masked line by line too, since output is masked a line at a time.
    pub fn add(&mut self, value: &str) {
        let lines = value
            .lines()
            .map(str::trim)
            .filter(|line| line.len() != value.len())
            .map(str::to_string);
        for part in std::iter::once(value.to_string())
            .chain(secrets_in(value))
            .chain(lines)
        {
            if part.len() >= MIN_SECRET_LEN && part != MASK && !self.values.contains(&part) {
                self.values.push(part);
            }
        }
        self.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    }

    /// Learns from a name and its value (an environment variable, a header): the whole value if
    /// the name is secret, else only the credentials found inside the value.
    pub fn add_pair(&mut self, name: &str, value: &str) {
        if is_secret_name(name) {
            self.add(value);
        } else {
            for part in secrets_in(value) {
                self.add(&part);
            }
        }
    }

    /// The values masked, longest first (sent to a supervisor so it can mask output as it comes).
    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// A redactor for exactly these values.
    pub fn from_values(values: impl IntoIterator<Item = String>) -> Self {
        let mut redactor = Self::new();
        for value in values {
            redactor.add(&value);
        }
        redactor
    }

    /// The length of the longest value masked.
    pub fn longest(&self) -> usize {
        self.values.first().map_or(0, String::len)
    }

    /// `text` with every known value and every credential masked.
    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_string();
        for value in &self.values {
            if text.contains(value.as_str()) {
                text = text.replace(value.as_str(), MASK);
            }
        }
        redact_text(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_masked() {
        assert_eq!(
            redact_text("postgres://ferry:s3cret@db:5432/ferry"),
            "postgres://ferry:********@db:5432/ferry"
        );
        assert_eq!(
            redact_text("postgres://ferry@db/ferry"),
            "postgres://ferry@db/ferry"
        );
        assert_eq!(
            redact_text("see http://user:pa:ss@host/x and https://a:b@c"),
            "see http://user:********@host/x and https://a:********@c"
        );
        assert_eq!(
            redact_text("sqlite://data/ferry.db"),
            "sqlite://data/ferry.db"
        );
    }

    #[test]
    fn secret_query_parameters_and_dsn_settings_are_masked() {
        assert_eq!(
            redact_text("postgres://db/ferry?user=app&password=hunter2&sslmode=require"),
            "postgres://db/ferry?user=app&password=********&sslmode=require"
        );
        assert_eq!(
            redact_text("http://user:pass@api.example/v1?api_key=abc123&q=1"),
            "http://user:********@api.example/v1?api_key=********&q=1"
        );
        assert_eq!(
            redact_text("host=db user=app password='a secret' dbname=app"),
            "host=db user=app password='********' dbname=app"
        );
        assert_eq!(
            redact_text("export API_TOKEN=xyz; run --password=pw"),
            "export API_TOKEN=********; run --password=********"
        );
        assert_eq!(redact_text("PWD=/home/app x=1"), "PWD=/home/app x=1");
        assert_eq!(
            redact_text("host=db user=app password = hunter2 dbname=app"),
            "host=db user=app password = ******** dbname=app"
        );
    }

    #[test]
    fn secret_names() {
        for name in [
            "API_TOKEN",
            "Authorization",
            "X-Auth",
            "aws_secret_access_key",
            "DB_PASSWORD",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in ["TABLE", "PATH", "HOME", "PWD"] {
            assert!(!is_secret_name(name), "{name}");
        }
    }

    #[test]
    fn a_value_of_several_lines_is_masked_line_by_line_too() {
        let mut redactor = Redactor::new();
        redactor.add_pair(
            "PEM_KEY",
            "-----BEGIN KEY-----\nMIIEvQIBADANBgkq\n-----END KEY-----",
        );
        assert_eq!(redactor.redact("line: MIIEvQIBADANBgkq"), "line: ********");
    }

    #[test]
    fn values_are_masked_wherever_they_appear() {
        let mut redactor = Redactor::new();
        redactor.add_pair("DATABASE_URL", "postgres://app:pass-123@db/app");
        redactor.add_pair("X-Auth", "tok-123456");
        redactor.add_pair("TABLE", "scores");
        redactor.add("ab");
        let text = "connecting as pass-123 with tok-123456 to scores (ab)";
        assert_eq!(
            redactor.redact(text),
            "connecting as ******** with ******** to scores (ab)"
        );
        // The whole URL is not a secret (its name is not), only its password.
        assert_eq!(
            redactor.redact("url postgres://app:pass-123@db/app"),
            "url postgres://app:********@db/app"
        );
    }

    #[test]
    fn passwords_in_sql_are_masked() {
        assert_eq!(
            redact_text(
                "ALTER ROLE app PASSWORD 's3cret-pw'; CREATE USER x IDENTIFIED BY \"hunter22\""
            ),
            "ALTER ROLE app PASSWORD '********'; CREATE USER x IDENTIFIED BY \"********\""
        );
        assert_eq!(
            redact_text("SELECT password FROM users"),
            "SELECT password FROM users"
        );
    }
}
