//! Fencing against the real databases: two attempts of the same run race, the older one
//! (lower fencing number) reading slowly; whatever the interleaving, the older one never
//! publishes over the newer one's rows.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use ferry_config::{Connection, Secret};
use ferry_executor::connector::{
    AttemptKey, AttemptRecorder, AttemptScope, RowLimit, SyncMode, SyncWork,
};
use ferry_executor::{LogBuffer, Outcome};
use sqlx::Connection as _;
use tokio_util::sync::CancellationToken;

struct Nothing;

impl AttemptRecorder for Nothing {
    fn external_job<'a>(&'a self, _: &'a str) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async {})
    }

    fn metrics<'a>(
        &'a self,
        _: &'a BTreeMap<String, i64>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async {})
    }
}

/// The targets this machine has (PostgreSQL and MariaDB required under
/// `FERRY_REQUIRE_SERVICES=1`).
fn targets(dir: &std::path::Path) -> Vec<Connection> {
    std::fs::write(dir.join("app.db"), "").expect("an empty SQLite database");
    let mut targets = vec![Connection::Sqlite {
        path: dir.join("app.db"),
        seed: None,
        schemas: Vec::new(),
    }];
    for (name, port, url) in [
        (
            "PostgreSQL",
            5432,
            "postgres://postgres@127.0.0.1:5432/test",
        ),
        ("MariaDB", 3306, "mysql://root@127.0.0.1:3306/test"),
    ] {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            let url = Secret::new(url);
            targets.push(if port == 5432 {
                Connection::Postgres { url }
            } else {
                Connection::Mysql { url }
            });
        } else {
            assert!(
                std::env::var("FERRY_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "{name} is required but unreachable"
            );
            eprintln!("SKIPPED the {name} part: 127.0.0.1:{port} unreachable");
        }
    }
    targets
}

async fn execute(connection: &Connection, sql: &str) {
    let mut db = super::target::TargetDb::connect(connection)
        .await
        .expect("a SQL target")
        .expect("connects");
    db.execute(sql).await.expect("runs");
}

async fn column(connection: &Connection, sql: &str) -> Vec<Vec<String>> {
    let mut db = super::target::TargetDb::connect(connection)
        .await
        .expect("a SQL target")
        .expect("connects");
    db.texts(sql).await.expect("runs")
}

/// A sync of `sql` as attempt `lease` of one run.
async fn attempt(
    work: &SyncWork,
    source: &Connection,
    target: &Connection,
    lease: i64,
) -> (Outcome, String) {
    let key = AttemptKey {
        dag: "fenced".to_string(),
        task: "sync".to_string(),
        run_id: "scheduled__2026-11-28".to_string(),
        run_queued_at: 0,
        try_number: lease,
        lease,
    };
    let log = LogBuffer::new(64 * 1024);
    let (cancel, shutting_down) = (CancellationToken::new(), CancellationToken::new());
    let scope = AttemptScope {
        key: &key,
        resuming: false,
        resumed_job: None,
        elapsed: Duration::ZERO,
        recorder: &Nothing,
        log: &log,
        cancel: &cancel,
        shutting_down: &shutting_down,
    };
    let outcome = super::run(work, source, target, &scope).await;
    (outcome, log.text())
}

#[test]
fn a_stale_attempt_never_publishes_over_a_newer_one() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let source = Connection::Sqlite {
        path: dir.path().join("warehouse.db"),
        seed: None,
        schemas: Vec::new(),
    };
    runtime.block_on(async {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.path().join("warehouse.db"))
            .create_if_missing(true);
        let mut db = sqlx::SqliteConnection::connect_with(&options)
            .await
            .expect("warehouse");
        sqlx::raw_sql("CREATE TABLE agg (id INTEGER, version INTEGER); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500) INSERT INTO agg SELECT i, 0 FROM n")
            .execute(&mut db)
            .await
            .expect("rows");
    });
    let table = format!("fenced_{}", std::process::id());
    for target in targets(dir.path()) {
        let kind = target.kind();
        runtime.block_on(async {
            execute(&target, &format!("DROP TABLE IF EXISTS {table}")).await;
            execute(
                &target,
                &format!("CREATE TABLE {table} (id INTEGER PRIMARY KEY, version INTEGER)"),
            )
            .await;
        });
        let work = |sql: String| SyncWork {
            source: "warehouse".to_string(),
            sql,
            target: "app".to_string(),
            table: table.clone(),
            key: vec!["id".to_string()],
            mode: SyncMode::Upsert,
            columns: Vec::new(),
            scope: Vec::new(),
            max_delete: RowLimit::Percent(10.0),
            max_rejected: RowLimit::Count(0),
            batch_size: 100,
            timeout: None,
            plan_only: false,
            incremental: None,
        };
        // The older attempt's query takes a while (a long count before the first row); the
        // newer one's answers at once, with other values.
        let slow = work(
            "SELECT id, 1 AS version FROM agg WHERE (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4000000) SELECT COUNT(*) FROM n) > 0".to_string(),
        );
        let fast = work("SELECT id, 2 AS version FROM agg".to_string());
        let ((old, old_log), (new, new_log)) = runtime.block_on(async {
            let old = attempt(&slow, &source, &target, 1);
            let new = async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                attempt(&fast, &source, &target, 2).await
            };
            tokio::join!(old, new)
        });
        assert!(
            matches!(new, Outcome::Succeeded { .. }),
            "{kind}: {new:?}\n{new_log}"
        );
        assert!(
            !matches!(old, Outcome::Succeeded { .. })
                && old_log.contains(
                    "this attempt's fencing number is 1 but a newer attempt of the same run holds 2"
                ),
            "{kind}: {old:?}\n{old_log}"
        );
        let versions = runtime.block_on(column(
            &target,
            &format!("SELECT CONCAT(COUNT(*), '/', MIN(version), '/', MAX(version)) FROM {table}")
                .replace(
                    "CONCAT(COUNT(*), '/', MIN(version), '/', MAX(version))",
                    if kind == "sqlite" {
                        "COUNT(*) || '/' || MIN(version) || '/' || MAX(version)"
                    } else {
                        "CONCAT(COUNT(*), '/', MIN(version), '/', MAX(version))"
                    },
                ),
        ));
        assert_eq!(versions[0][0], "500/2/2", "{kind}: the newer rows stay");
        // Late, the older attempt is refused as soon as it takes the fence.
        let (late, late_log) = runtime.block_on(attempt(&fast, &source, &target, 1));
        assert!(
            !matches!(late, Outcome::Succeeded { .. }) && late_log.contains("lost its lease"),
            "{kind}: {late_log}"
        );
        runtime.block_on(execute(&target, &format!("DROP TABLE {table}")));
    }
}

/// The check a first load too long to track every key in memory runs before it commits: the
/// keys found twice in the target's scope, named with their counts, on every database.
#[test]
fn keys_twice_in_the_targets_scope_are_found() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("a temporary directory");
    for target in targets(dir.path()) {
        runtime.block_on(async {
            let dialect = match target {
                Connection::Sqlite { .. } => crate::write::Dialect::Sqlite,
                Connection::Postgres { .. } => crate::write::Dialect::Postgres,
                _ => crate::write::Dialect::Mysql,
            };
            let table = "ferry_test_twice";
            execute(&target, &format!("DROP TABLE IF EXISTS {table}")).await;
            execute(
                &target,
                &format!("CREATE TABLE {table} (school_id INTEGER, class_id VARCHAR(20), points INTEGER)"),
            )
            .await;
            execute(
                &target,
                &format!(
                    "INSERT INTO {table} VALUES (7, '3-A', 1), (7, '3-A', 2), (7, '3-B', 3), (8, '3-B', 4), (8, '3-B', 5)"
                ),
            )
            .await;
            let columns = ["school_id", "class_id", "points"].map(String::from);
            let key = ["school_id", "class_id"].map(String::from);
            let sql = super::statements::Sql::new(
                dialect,
                table,
                "ferry_state_unused",
                super::statements::REJECTS,
                &columns,
                &key,
                &[("school_id".to_string(), "7".to_string())],
            );
            let found = column(&target, &sql.duplicates_in_target()).await;
            execute(&target, &format!("DROP TABLE {table}")).await;
            assert_eq!(
                found,
                vec![vec!["school_id=7, class_id=3-A".to_string(), "2".to_string()]],
                "{}: only the key twice inside the scope (school 8 is another scope's)",
                target.kind()
            );
        });
    }
}
