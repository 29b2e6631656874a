use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `tests/fixtures`.
pub(crate) fn fixtures() -> PathBuf {
    repo().join("tests").join("fixtures")
}

/// A fixed "now" so DST look-ahead and upcoming runs are reproducible.
pub(crate) const NOW: &str = "2026-11-25T00:00:00Z";

/// Runs `ferry` with `args` in `dir`, with no FERRY environment variables but `env`.
pub(crate) fn ferry_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferry"));
    command.args(args).current_dir(dir);
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("FERRY")) {
        command.env_remove(name);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("the ferry binary runs")
}

/// Runs `ferry` in `tests/fixtures` (whose ferry.toml is the test configuration).
pub(crate) fn ferry(args: &[&str]) -> Output {
    ferry_in(&fixtures(), args, &[])
}

/// Standard output as text.
pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Standard error as text.
pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts text equality with a line-by-line diff on failure.
pub(crate) fn assert_same(expected: &str, got: &str) {
    if expected == got {
        return;
    }
    let mut diff = String::new();
    let (expected_lines, got_lines): (Vec<_>, Vec<_>) =
        (expected.lines().collect(), got.lines().collect());
    for index in 0..expected_lines.len().max(got_lines.len()) {
        let (e, g) = (expected_lines.get(index), got_lines.get(index));
        if e != g {
            diff.push_str(&format!(
                "line {}:\n  expected: {}\n  got:      {}\n",
                index + 1,
                e.unwrap_or(&"<none>"),
                g.unwrap_or(&"<none>")
            ));
        }
    }
    panic!("output differs from the expectation:\n{diff}\n--- full output ---\n{got}");
}

/// The expected output stored in `tests/fixtures/expected/NAME`.
pub(crate) fn expected(name: &str) -> String {
    std::fs::read_to_string(fixtures().join("expected").join(name))
        .expect("expected-output file exists")
}
