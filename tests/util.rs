use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

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

/// Tests run daemons side by side: each one's HTTP API takes a free port.
pub(crate) const ANY_PORT: (&str, &str) = ("FERRY__API__LISTEN", "127.0.0.1:0");

/// Runs `ferry` with `args` in `dir`, with no FERRY environment variables but `env` (and
/// [`ANY_PORT`]).
pub(crate) fn ferry_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferry"));
    command.args(args).current_dir(dir);
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("FERRY")) {
        command.env_remove(name);
    }
    command.env(ANY_PORT.0, ANY_PORT.1);
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

/// A folder with a ferry.toml, `dags/` holding `files`, and the state in `.ferry/`.
pub(crate) fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("dags/internal")).expect("dags folder");
    std::fs::write(dir.path().join("ferry.toml"), "[engine]\nheartbeat_interval_secs = 1\nheartbeat_timeout_secs = 3\nshutdown_grace_secs = 10\nreload_interval_secs = 1\n").expect("config");
    for (name, text) in files {
        std::fs::write(dir.path().join("dags/internal").join(name), text).expect("DAG file");
    }
    dir
}

pub(crate) fn spawn_ferry(dir: &Path, args: &[&str]) -> Spawned {
    spawn_ferry_with(dir, args, &[])
}

/// A ferry process a test started: killed if the test ends without waiting for it (a failed
/// assertion), so that no daemon outlives its test.
pub(crate) struct Spawned(Option<Child>);

impl From<Child> for Spawned {
    fn from(child: Child) -> Self {
        Self(Some(child))
    }
}

impl std::ops::Deref for Spawned {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().expect("not waited for yet")
    }
}

impl std::ops::DerefMut for Spawned {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("not waited for yet")
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut()
            && matches!(child.try_wait(), Ok(None))
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Spawned {
    /// Waits for the process and collects its output.
    pub(crate) fn wait_with_output(mut self) -> std::io::Result<Output> {
        self.0
            .take()
            .expect("not waited for yet")
            .wait_with_output()
    }
}

/// The same, its output going into `serve.log` in `dir` (for a daemon that talks more than a
/// pipe holds while nobody reads it).
pub(crate) fn spawn_ferry_logged(dir: &Path, args: &[&str]) -> Spawned {
    let log = std::fs::File::create(dir.join("serve.log")).expect("a log file");
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferry"));
    command
        .args(args)
        .current_dir(dir)
        .stdout(log.try_clone().expect("the log file"))
        .stderr(log);
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("FERRY")) {
        command.env_remove(name);
    }
    command.env(ANY_PORT.0, ANY_PORT.1);
    Spawned::from(command.spawn().expect("ferry starts"))
}

/// The same, with these environment variables too.
pub(crate) fn spawn_ferry_with(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Spawned {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferry"));
    command
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("FERRY")) {
        command.env_remove(name);
    }
    command.env(ANY_PORT.0, ANY_PORT.1);
    for (name, value) in env {
        command.env(name, value);
    }
    Spawned::from(command.spawn().expect("ferry starts"))
}

/// Polls `ferry runs list` until `check` holds for the JSON list, or fails after `limit`.
pub(crate) fn wait_for_runs(
    dir: &Path,
    limit: Duration,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    wait_for_runs_of(dir, limit, None, check)
}

/// The same, failing at once (with its output) if `daemon` exits meanwhile.
pub(crate) fn wait_for_runs_of(
    dir: &Path,
    limit: Duration,
    mut daemon: Option<&mut Spawned>,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        let output = ferry_in(dir, &["runs", "list", "--format", "json"], &[]);
        if let Ok(runs) = serde_json::from_str::<serde_json::Value>(&stdout(&output)) {
            if check(&runs) {
                return runs;
            }
            assert!(Instant::now() < deadline, "timed out; runs: {runs}");
        }
        assert!(Instant::now() < deadline, "timed out: {}", stderr(&output));
        if let Some(child) = daemon.as_deref_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            let mut errors = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                use std::io::Read as _;
                let _ = pipe.read_to_string(&mut errors);
            }
            panic!("the daemon exited ({status}): {errors}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub(crate) fn nix_kill(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// Runs `ferry serve` in `dir` until the newest run has succeeded, then stops it (SIGTERM);
/// returns the runs.
pub(crate) fn serve_until_success(dir: &Path) -> serde_json::Value {
    let mut serve = spawn_ferry(dir, &["serve"]);
    let runs = wait_for_runs_of(dir, Duration::from_secs(30), Some(&mut serve), |runs| {
        runs[0]["state"] == "success"
    });
    nix_kill(&serve, "TERM");
    serve.wait().expect("serve exits");
    runs
}

/// Polls `check` every 50 ms until it holds, or fails after `limit`.
pub(crate) fn wait_until(limit: Duration, check: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A fresh PostgreSQL database for one test, made with `psql`, or `None` (with a note) when the
/// server is not there and `FERRY_REQUIRE_SERVICES` is not set.
pub(crate) fn fresh_postgres(name: &str) -> Option<String> {
    let base = std::env::var("FERRY_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    let database = format!("ferry_it_{name}_{}", std::process::id());
    // Databases left by earlier runs of this test (one test uses this prefix, so none is in use).
    let leftovers = Command::new("psql")
        .args([
            base.as_str(),
            "-Atc",
            &format!("SELECT datname FROM pg_database WHERE datname LIKE 'ferry_it_{name}_%'"),
        ])
        .output();
    if let Ok(listed) = leftovers {
        for old in String::from_utf8_lossy(&listed.stdout)
            .lines()
            .filter(|l| !l.is_empty())
        {
            let _ = Command::new("psql")
                .args([
                    base.as_str(),
                    "-qc",
                    &format!("DROP DATABASE IF EXISTS {old}"),
                ])
                .output();
        }
    }
    let created = Command::new("psql")
        .args([
            base.as_str(),
            "-qc",
            &format!("DROP DATABASE IF EXISTS {database}"),
            "-c",
            &format!("CREATE DATABASE {database}"),
        ])
        .output();
    match created {
        Ok(output) if output.status.success() => {
            let root = base
                .rsplit_once('/')
                .map_or(base.as_str(), |(root, _)| root);
            Some(format!("{root}/{database}"))
        }
        other => {
            let required = std::env::var("FERRY_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "PostgreSQL is required but unreachable: {other:?}"
            );
            eprintln!("SKIPPED: PostgreSQL unreachable ({other:?})");
            None
        }
    }
}

/// Runs `sql` (several statements) on the database at `url` (`sqlite:`, `postgres:` or
/// `mysql:`; a SQLite file is made if missing).
pub(crate) fn sql_execute(url: &str, sql: &str) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            use sqlx::Connection as _;
            if url.starts_with("sqlite:") {
                let options: sqlx::sqlite::SqliteConnectOptions = url.parse().expect("a URL");
                let mut db = sqlx::SqliteConnection::connect_with(&options.create_if_missing(true))
                    .await
                    .expect("connects");
                sqlx::raw_sql(sql).execute(&mut db).await.expect("runs");
            } else if url.starts_with("postgres:") {
                let mut db = sqlx::PgConnection::connect(url).await.expect("connects");
                sqlx::raw_sql(sql).execute(&mut db).await.expect("runs");
            } else {
                let mut db = sqlx::MySqlConnection::connect(url).await.expect("connects");
                sqlx::raw_sql(sql).execute(&mut db).await.expect("runs");
            }
        });
}

/// The first column of the first row of `sql` on the database at `url`, as trimmed text.
pub(crate) fn sql_scalar(url: &str, sql: &str) -> String {
    sql_column(url, sql)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no row from {sql}"))
        .trim()
        .to_string()
}

/// Whether a TCP server answers on `port` of this machine; when it does not, the test fails
/// with `FERRY_REQUIRE_SERVICES=1` and says that it skipped otherwise.
pub(crate) fn service(name: &str, port: u16) -> bool {
    let up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
    if !up {
        assert!(
            std::env::var("FERRY_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "{name} on 127.0.0.1:{port} is required but unreachable"
        );
        eprintln!("SKIPPED the {name} part of this test: 127.0.0.1:{port} unreachable");
    }
    up
}

/// After `ferry run DAG` was killed in `dir`: runs the DAG again when the kill came before its
/// run was made (and returns `None`), else lets `ferry serve` work until the newest run has
/// ended and returns the runs.
pub(crate) fn finish_after_kill(
    dir: &Path,
    dag: &str,
    env: &[(&str, &str)],
) -> Option<serde_json::Value> {
    let listed = stdout(&ferry_in(dir, &["runs", "list", "--format", "json"], &[]));
    let made = serde_json::from_str::<serde_json::Value>(&listed)
        .ok()
        .and_then(|runs| runs.as_array().map(Vec::len))
        .unwrap_or(0);
    if made == 0 {
        let again = ferry_in(dir, &["run", dag], env);
        assert!(
            again.status.success(),
            "{}{}",
            stdout(&again),
            stderr(&again)
        );
        return None;
    }
    let mut serve = spawn_ferry_with(dir, &["serve"], env);
    let runs = wait_for_runs_of(dir, Duration::from_secs(60), Some(&mut serve), |runs| {
        runs[0]["state"] == "success" || runs[0]["state"] == "failed"
    });
    nix_kill(&serve, "TERM");
    let _ = serve.wait();
    Some(runs)
}

/// A fresh MariaDB/MySQL database for one test, or `None` (with a note) when the server is not
/// there and `FERRY_REQUIRE_SERVICES` is not set.
pub(crate) fn fresh_mysql(name: &str) -> Option<String> {
    if !service("MariaDB", 3306) {
        return None;
    }
    let base = "mysql://root@127.0.0.1:3306/test";
    let database = format!("ferry_it_{name}_{}", std::process::id());
    sql_execute(
        base,
        &format!("DROP DATABASE IF EXISTS {database}; CREATE DATABASE {database}"),
    );
    Some(format!("mysql://root@127.0.0.1:3306/{database}"))
}

/// The first column of every row of `sql` on the database at `url`, as text.
pub(crate) fn sql_column(url: &str, sql: &str) -> Vec<String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            use sqlx::Connection as _;
            if url.starts_with("sqlite:") {
                let mut db = sqlx::SqliteConnection::connect(url)
                    .await
                    .expect("connects");
                sqlx::query_scalar::<_, String>(sql)
                    .fetch_all(&mut db)
                    .await
                    .expect("query")
            } else if url.starts_with("postgres:") {
                let mut db = sqlx::PgConnection::connect(url).await.expect("connects");
                sqlx::query_scalar::<_, String>(sql)
                    .fetch_all(&mut db)
                    .await
                    .expect("query")
            } else {
                let mut db = sqlx::MySqlConnection::connect(url).await.expect("connects");
                sqlx::query_scalar::<_, String>(sql)
                    .fetch_all(&mut db)
                    .await
                    .expect("query")
            }
        })
}
