//! Opening the state database: what a URL or DSN names, creating or refusing to create a
//! SQLite file, migrations, and noticing a SQLite file that was deleted or replaced.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::time::Duration;

use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::StoreError;

/// Where the state lives.
#[derive(Clone, Debug)]
pub(crate) enum Location {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database.
    Postgres(Box<PgConnectOptions>),
}

/// Whether opening may create a new database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Create the SQLite file (and its folder) if missing: the engine's commands.
    Create,
    /// Refuse a missing SQLite file: commands that only read or change existing state.
    Existing,
}

/// The settings PostgreSQL's key=value connection strings may carry.
const DSN_KEYS: [&str; 11] = [
    "host",
    "hostaddr",
    "port",
    "user",
    "password",
    "dbname",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "application_name",
];

/// What `url` names: `postgres://…` / `postgresql://…` URLs and PostgreSQL key=value strings
/// (`host=db user=ferry dbname=ferry`) are PostgreSQL; `sqlite://path` and plain paths are SQLite.
pub(crate) fn parse_location(url: &str, shown: &str) -> Result<Location, StoreError> {
    let invalid = |reason: String| StoreError::InvalidUrl {
        url: shown.to_string(),
        reason,
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let options = PgConnectOptions::from_str(url)
            .map_err(|error| invalid(ferry_secrets::redact_text(&error.to_string())))?;
        return Ok(Location::Postgres(Box::new(options)));
    }
    if let Some(path) = url.strip_prefix("sqlite://") {
        return Ok(Location::Sqlite(PathBuf::from(path)));
    }
    if url.contains("://") {
        return Err(invalid(
            "unknown scheme: use postgres://…, a PostgreSQL key=value string, or a SQLite path"
                .to_string(),
        ));
    }
    let looks_like_dsn = url
        .split_whitespace()
        .next()
        .and_then(|first| first.split_once('='))
        .is_some_and(|(key, _)| {
            !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        });
    if looks_like_dsn {
        let pairs = dsn_pairs(url).map_err(invalid)?;
        let query: Vec<String> = pairs
            .iter()
            .map(|(key, value)| format!("{key}={}", percent_encode(value)))
            .collect();
        let as_url = format!("postgres:///?{}", query.join("&"));
        let options = PgConnectOptions::from_str(&as_url)
            .map_err(|error| invalid(ferry_secrets::redact_text(&error.to_string())))?;
        return Ok(Location::Postgres(Box::new(options)));
    }
    Ok(Location::Sqlite(PathBuf::from(url)))
}

/// The settings of a key=value connection string, quoted values (`password='a b'`) included.
fn dsn_pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = text.trim().chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && !c.is_whitespace())).collect();
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(format!("`{key}` has no value: write key=value pairs"));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(format!("the value of `{key}` has no closing quote")),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        if !DSN_KEYS.contains(&key.as_str()) {
            return Err(format!(
                "unknown setting `{key}` (ferry understands {})",
                DSN_KEYS.join(", ")
            ));
        }
        pairs.push((key, value));
    }
}

fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `<database>.lock` beside a SQLite file, symbolic links resolved: the owner's lock, and the
/// sign that an engine used the database.
pub(crate) fn lock_path(database: &Path) -> PathBuf {
    let real = std::fs::canonicalize(database).unwrap_or_else(|_| {
        // A file that does not exist (yet): its folder's real path.
        match (database.parent(), database.file_name()) {
            (Some(parent), Some(name)) => std::fs::canonicalize(if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            })
            .map_or_else(|_| database.to_path_buf(), |parent| parent.join(name)),
            _ => database.to_path_buf(),
        }
    });
    let mut name = real
        .file_name()
        .map(std::ffi::OsStr::to_os_string)
        .unwrap_or_default();
    name.push(".lock");
    real.with_file_name(name)
}

/// The identity of a SQLite file when it was opened: a file deleted or replaced behind ferry's
/// back has another (or none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FileIdentity {
    pub(crate) path: PathBuf,
    device: u64,
    inode: u64,
}

impl FileIdentity {
    fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        Some(Self {
            path: path.to_path_buf(),
            device: meta.dev(),
            inode: meta.ino(),
        })
    }

    /// Whether the path still names the same file.
    pub(crate) fn still_there(&self) -> bool {
        Self::of(&self.path).is_some_and(|now| now == *self)
    }
}

/// Opens a PostgreSQL pool and migrates it; with [`OpenMode::Existing`], only a database that
/// already holds ferry's state.
pub(crate) async fn open_postgres(
    options: &PgConnectOptions,
    mode: OpenMode,
    shown: &str,
) -> Result<PgPool, StoreError> {
    // One connection first: a refused or failed connection is reported at once, where the pool
    // would retry it until its acquire timeout.
    let probe =
        PgConnection::connect_with(options)
            .await
            .map_err(|cause| StoreError::Unavailable {
                url: shown.to_string(),
                cause,
            })?;
    let _ = probe.close().await;
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options.clone())
        .await
        .map_err(|cause| StoreError::Unavailable {
            url: shown.to_string(),
            cause,
        })?;
    if mode == OpenMode::Existing {
        let has_state: bool = sqlx::query_scalar("SELECT to_regclass('dag_runs') IS NOT NULL")
            .fetch_one(&pool)
            .await
            .map_err(|cause| StoreError::Unavailable {
                url: shown.to_string(),
                cause,
            })?;
        if !has_state {
            return Err(StoreError::Empty {
                url: shown.to_string(),
            });
        }
    }
    let migrator = sqlx::migrate!("./migrations/postgres");
    if mode == OpenMode::Existing {
        let applied: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(&pool)
                .await
                .map_err(|cause| StoreError::Unavailable {
                    url: shown.to_string(),
                    cause,
                })?;
        check_schema(applied, &migrator, shown)?;
        return Ok(pool);
    }
    migrator
        .run(&pool)
        .await
        .map_err(|cause| StoreError::Migration {
            url: shown.to_string(),
            cause,
        })?;
    Ok(pool)
}

/// A command that only reads never changes the schema: a database older than this ferry is
/// brought up to date by this ferry's engine, not by `ferry runs list` under an older daemon.
fn check_schema(
    applied: Option<i64>,
    migrator: &sqlx::migrate::Migrator,
    shown: &str,
) -> Result<(), StoreError> {
    let known = migrator.iter().map(|m| m.version).max();
    if applied < known {
        return Err(StoreError::Outdated {
            url: shown.to_string(),
        });
    }
    Ok(())
}

/// Opens a SQLite pool (creating the file and its folder only in [`OpenMode::Create`]) and
/// migrates it; returns the file's identity too.
pub(crate) async fn open_sqlite(
    path: &Path,
    mode: OpenMode,
    shown: &str,
) -> Result<(SqlitePool, FileIdentity), StoreError> {
    if !path.exists() {
        if mode == OpenMode::Existing {
            return Err(StoreError::Missing {
                path: path.display().to_string(),
            });
        }
        let lock = lock_path(path);
        if lock.exists() {
            // An engine owned a database here before: a new, empty one would run every past
            // interval of every catch-up DAG again.
            return Err(StoreError::Vanished {
                path: path.display().to_string(),
                lock: lock.display().to_string(),
            });
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|cause| StoreError::Io {
                action: "create the data folder",
                path: parent.display().to_string(),
                cause,
            })?;
        }
    }
    if mode == OpenMode::Create && path.exists() && !writable_with_folder(path) {
        // The engine writes the database, its journal and its lock file beside it: say so
        // before any of them fails in a way that names something else.
        return Err(StoreError::ReadOnly {
            url: shown.to_string(),
        });
    }
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(mode == OpenMode::Create)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true);
    let pool = connect_sqlite(options, shown)
        .await
        .map_err(|error| read_only_if_unwritable(error, path, shown))?;
    if mode == OpenMode::Existing {
        let applied: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(&pool)
                .await
                .map_err(|error| classify_open_error(shown, error))?;
        check_schema(applied, &sqlx::migrate!("./migrations/sqlite"), shown)?;
    } else {
        migrate_sqlite(&pool, shown).await?;
    }
    let identity = FileIdentity::of(path).ok_or_else(|| StoreError::Missing {
        path: path.display().to_string(),
    })?;
    Ok((pool, identity))
}

/// Opens a SQLite pool. Switching a new file to WAL takes a lock that another process creating
/// the same database may hold for a moment, so a busy database is tried again.
async fn connect_sqlite(
    options: SqliteConnectOptions,
    url: &str,
) -> Result<SqlitePool, StoreError> {
    let mut attempt = 0;
    loop {
        match SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await
        {
            Ok(pool) => return Ok(pool),
            Err(error) if is_busy(&error) && attempt < 10 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
            Err(error) => return Err(classify_open_error(url, error)),
        }
    }
}

/// Brings a SQLite schema up to date. SQLite has no advisory lock, so two processes opening a
/// new database at once may race: the loser retries and finds the work done.
async fn migrate_sqlite(pool: &SqlitePool, url: &str) -> Result<(), StoreError> {
    let mut attempt = 0;
    loop {
        match sqlx::migrate!("./migrations/sqlite").run(pool).await {
            Ok(()) => return Ok(()),
            Err(sqlx::migrate::MigrateError::Execute(error))
                if is_corruption(&error) || is_read_only(&error) =>
            {
                return Err(classify_open_error(url, error));
            }
            Err(_) if attempt < 10 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
            Err(cause) => {
                return Err(StoreError::Migration {
                    url: url.to_string(),
                    cause,
                });
            }
        }
    }
}

fn is_busy(error: &sqlx::Error) -> bool {
    sqlite_code(error).is_some_and(|code| code & 0xff == 5 || code & 0xff == 6)
}

fn is_corruption(error: &sqlx::Error) -> bool {
    let text = error.to_string();
    text.contains("file is not a database")
        || text.contains("malformed")
        || text.contains("corrupt")
}

pub(crate) fn is_read_only(error: &sqlx::Error) -> bool {
    sqlite_code(error).is_some_and(|code| code & 0xff == 8)
        || error.to_string().contains("readonly database")
}

/// SQLite's (extended) result code of a database error.
pub(crate) fn sqlite_code(error: &sqlx::Error) -> Option<i64> {
    match error {
        sqlx::Error::Database(db) => db.code().and_then(|code| code.parse().ok()),
        _ => None,
    }
}

/// Opening errors that mean "this is not a usable database" get their own variants.
/// SQLite says "unable to open database file" when it cannot make its journal beside a
/// database it cannot write: say what is wrong.
fn read_only_if_unwritable(error: StoreError, path: &Path, shown: &str) -> StoreError {
    match error {
        StoreError::Unavailable { .. } if path.exists() && !writable_with_folder(path) => {
            StoreError::ReadOnly {
                url: shown.to_string(),
            }
        }
        other => other,
    }
}

/// Whether this process may write `path` and make files in its folder (SQLite's journal and
/// ferry's lock file live beside the database).
fn writable_with_folder(path: &Path) -> bool {
    let writable = |path: &Path| nix::unistd::access(path, nix::unistd::AccessFlags::W_OK).is_ok();
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    writable(path) && writable(folder)
}

fn classify_open_error(url: &str, error: sqlx::Error) -> StoreError {
    if is_corruption(&error) {
        StoreError::Corrupt {
            url: url.to_string(),
            reason: error.to_string(),
        }
    } else if is_read_only(&error) {
        StoreError::ReadOnly {
            url: url.to_string(),
        }
    } else {
        StoreError::Unavailable {
            url: url.to_string(),
            cause: error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_dsns_and_paths() {
        assert!(matches!(
            parse_location("postgres://a:b@db/x", "-"),
            Ok(Location::Postgres(_))
        ));
        assert!(matches!(
            parse_location("sqlite://data/ferry.db", "-"),
            Ok(Location::Sqlite(p)) if p == Path::new("data/ferry.db")
        ));
        assert!(matches!(
            parse_location(".ferry/ferry.db", "-"),
            Ok(Location::Sqlite(p)) if p == Path::new(".ferry/ferry.db")
        ));
        let Ok(Location::Postgres(options)) = parse_location(
            "host=127.0.0.1 port=5433 user=app password='a b' dbname=state",
            "-",
        ) else {
            panic!("a key=value string is PostgreSQL");
        };
        assert_eq!(options.get_host(), "127.0.0.1");
        assert_eq!(options.get_port(), 5433);
        assert_eq!(options.get_username(), "app");
        assert_eq!(options.get_database(), Some("state"));
    }

    #[test]
    fn a_bad_dsn_is_refused_without_showing_it() {
        let error = parse_location("host=db pasword=hunter2", "host=db pasword=********")
            .expect_err("unknown key");
        let text = error.to_string();
        assert!(text.contains("unknown setting `pasword`"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        let error = parse_location("mysql://x", "mysql://x").expect_err("unknown scheme");
        assert!(error.to_string().contains("unknown scheme"), "{error}");
    }
}
