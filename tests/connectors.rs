//! Issue 8: connections per environment, tested by a real round trip to the machine's
//! PostgreSQL and MariaDB.

use crate::util::{ferry_in, project, service, sql_scalar as scalar, stderr, stdout};

const CONFIG: &str = r#"
[environments.dev.connections.app]
kind = "sqlite"
path = "app.db"

[environments.dev.connections.warehouse]
kind = "postgres"
url = "postgres://postgres@127.0.0.1:5432/test"

[environments.dev.connections.app_mysql]
kind = "mysql"
url = "mysql://root@127.0.0.1:3306/test"

[environments.dev.connections.wrong]
kind = "postgres"
url = "postgres://nobody:hunter2-secret@127.0.0.1:5432/test"

[environments.dev.connections.bq]
kind = "bigquery"
project = "test-project"
credentials = "none"
endpoint = "http://127.0.0.1:9050"

[environments.dev.connections.aws]
kind = "aws"
region = "ap-northeast-1"

[environments.prod.connections.warehouse]
kind = "postgres"
url = "${WAREHOUSE_URL}"
"#;

#[test]
fn issue8_connections_are_listed_per_environment_and_tested_for_real() {
    let dir = project(&[]);
    std::fs::write(dir.path().join("ferry.toml"), CONFIG).expect("config");
    std::fs::write(dir.path().join("app.db"), "").expect("an empty SQLite database");
    let listed = stdout(&ferry_in(dir.path(), &["connections", "list"], &[]));
    for expected in [
        "environment dev",
        "app        sqlite    app.db",
        "bq         bigquery  project test-project, at http://127.0.0.1:9050",
        "aws        aws       region ap-northeast-1",
    ] {
        assert!(
            listed.contains(expected),
            "missing {expected} in:\n{listed}"
        );
    }
    assert!(!listed.contains("hunter2"), "{listed}");
    let said = stdout(&ferry_in(dir.path(), &["connections", "test", "app"], &[]));
    assert!(
        said.starts_with("connection app (sqlite): ok, SQLite 3."),
        "{said}"
    );
    if service("PostgreSQL", 5432) {
        let said = stdout(&ferry_in(
            dir.path(),
            &["connections", "test", "warehouse"],
            &[],
        ));
        assert!(
            said.starts_with("connection warehouse (postgres): ok, PostgreSQL "),
            "{said}"
        );
        let wrong = ferry_in(dir.path(), &["connections", "test", "wrong"], &[]);
        assert_eq!(wrong.status.code(), Some(2));
        let text = stderr(&wrong);
        assert!(
            text.contains("connection `wrong` (postgres, postgres://nobody:")
                && text.contains("check the host, port, database, user and password")
                && !text.contains("hunter2"),
            "{text}"
        );
    }
    if service("MariaDB", 3306) {
        let said = stdout(&ferry_in(
            dir.path(),
            &["connections", "test", "app_mysql"],
            &[],
        ));
        assert!(
            said.starts_with("connection app_mysql (mysql): ok, MySQL/MariaDB 1"),
            "{said}"
        );
    }
    for (args, expected) in [
        (
            vec!["--env", "prod", "connections", "test", "warehouse"],
            "refers to the environment variable WAREHOUSE_URL, which is not set",
        ),
        (
            vec!["--env", "prd", "connections", "list"],
            "the environment `prd` (--env or FERRY_ENV) is not defined (did you mean `prod`?)",
        ),
        (
            vec!["connections", "test", "warehose"],
            "no connection `warehose` in the environment `dev`; did you mean `warehouse`?",
        ),
        (
            vec!["connections", "test", "bq"],
            "connection `bq` (bigquery, project test-project, at http://127.0.0.1:9050): query: ",
        ),
    ] {
        let output = ferry_in(dir.path(), &args, &[]);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&output).contains(expected),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    let prod = stdout(&ferry_in(
        dir.path(),
        &["connections", "list"],
        &[("FERRY_ENV", "prod")],
    ));
    assert!(
        prod.contains("warehouse  postgres  <unset: ${WAREHOUSE_URL}>"),
        "{prod}"
    );
}

#[test]
fn issue8_query_tasks_run_sql_on_their_connection_in_one_transaction() {
    let dir = project(&[
        (
            "load.yaml",
            "tasks:\n  - {id: create, type: query, connection: app, sql: 'CREATE TABLE IF NOT EXISTS scores (day TEXT, points INTEGER)'}\n  - {id: load, type: query, connection: app, sql: \"DELETE FROM scores WHERE day = '{{ ds }}'; INSERT INTO scores VALUES ('{{ ds }}', 10), ('{{ ds }}', 32)\", depends_on: [create]}\n",
        ),
        (
            "broken.yaml",
            "tasks:\n  - {id: half, type: query, connection: app, sql: \"INSERT INTO scores VALUES ('half', 1); INSERT INTO no_such_table VALUES (1)\", retries: 3}\n",
        ),
        (
            "wrong.yaml",
            "tasks:\n  - {id: a, type: query, connection: ap, sql: 'SELECT 1'}\n  - {id: b, type: query, connection: aws, sql: 'SELECT 1'}\n",
        ),
    ]);
    std::fs::write(dir.path().join("ferry.toml"), CONFIG).expect("config");
    std::fs::write(dir.path().join("app.db"), "").expect("an empty SQLite database");
    // Validation: the connection must exist in the environment and be a SQL one.
    let output = ferry_in(dir.path(), &["validate"], &[]);
    let said = stdout(&output);
    assert!(
        said.contains("error[unknown-connection]: dag `wrong`, task `a`, field `connection`: connection `ap` is not defined in the environment `dev`\n  help: did you mean `app`?")
            && said.contains("task `b`, field `connection`: connection `aws` is an aws connection; a `query` task runs on sqlite, postgres, mysql, bigquery"),
        "{said}"
    );
    std::fs::remove_file(dir.path().join("dags/internal/wrong.yaml")).expect("remove");
    let run = ferry_in(dir.path(), &["run", "load"], &[]);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}{}",
        stdout(&run),
        stderr(&run)
    );
    let app = format!("sqlite://{}", dir.path().join("app.db").display());
    assert_eq!(
        scalar(&app, "SELECT COUNT(*) || '|' || SUM(points) FROM scores"),
        "2|42"
    );
    let log = stdout(&ferry_in(dir.path(), &["logs", "load__", "load"], &[]));
    assert!(
        log.contains("[ferry] 3 row(s) changed on app") || log.contains("row(s) changed on app"),
        "{log}"
    );
    // A SQL error fails at once (no retries) with the database's message, and nothing of the
    // transaction is kept.
    let broken = ferry_in(dir.path(), &["run", "broken"], &[]);
    assert_eq!(broken.status.code(), Some(1));
    let shown: serde_json::Value = serde_json::from_str(&stdout(&ferry_in(
        dir.path(),
        &["runs", "show", "broken__", "--format", "json"],
        &[],
    )))
    .expect("JSON");
    assert_eq!(shown["tasks"][0]["try_number"], 1, "{shown:#}");
    let log = stdout(&ferry_in(dir.path(), &["logs", "broken__", "half"], &[]));
    assert!(log.contains("no such table: no_such_table"), "{log}");
    assert_eq!(
        scalar(
            &app,
            "SELECT CAST(COUNT(*) AS TEXT) FROM scores WHERE day = 'half'"
        ),
        "0"
    );
}

#[test]
fn issue8_query_tasks_run_on_postgresql_and_mariadb() {
    let table = format!("ferry_it_query_{}", std::process::id());
    let mut dags = Vec::new();
    if service("PostgreSQL", 5432) {
        dags.push((
            "on_pg.yaml",
            format!(
                "tasks:\n  - {{id: load, type: query, connection: warehouse, sql: \"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (day TEXT, points INTEGER); INSERT INTO {table} VALUES ('{{{{ ds }}}}', 40), ('{{{{ ds }}}}', 2)\"}}\n"
            ),
            "postgres://postgres@127.0.0.1:5432/test",
            "TEXT",
        ));
    }
    if service("MariaDB", 3306) {
        dags.push((
            "on_mysql.yaml",
            format!(
                "tasks:\n  - {{id: load, type: query, connection: app_mysql, sql: \"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (day TEXT, points INTEGER); INSERT INTO {table} VALUES ('{{{{ ds }}}}', 40), ('{{{{ ds }}}}', 2)\"}}\n"
            ),
            "mysql://root@127.0.0.1:3306/test",
            "CHAR",
        ));
    }
    for (file, dag, url, text) in dags {
        let dir = project(&[(file, &dag)]);
        std::fs::write(dir.path().join("ferry.toml"), CONFIG).expect("config");
        let dag_id = file.trim_end_matches(".yaml");
        let run = ferry_in(dir.path(), &["run", dag_id], &[]);
        assert_eq!(
            run.status.code(),
            Some(0),
            "{}{}",
            stdout(&run),
            stderr(&run)
        );
        assert_eq!(
            scalar(
                url,
                &format!("SELECT CAST(SUM(points) AS {text}) FROM {table}")
            ),
            "42"
        );
        let drop = format!("DROP TABLE {table}");
        let _ = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async {
                use sqlx::Connection as _;
                if url.starts_with("postgres:") {
                    let mut db = sqlx::PgConnection::connect(url).await?;
                    sqlx::Executor::execute(&mut db, drop.as_str())
                        .await
                        .map(drop_result)
                } else {
                    let mut db = sqlx::MySqlConnection::connect(url).await?;
                    sqlx::Executor::execute(&mut db, drop.as_str())
                        .await
                        .map(drop_result)
                }
            });
    }
}

fn drop_result<T>(_: T) {}

#[test]
fn issue8_a_query_that_times_out_is_stopped_on_the_server() {
    let marker = format!("ferry_timeout_{}", std::process::id());
    let mut cases = Vec::new();
    if service("PostgreSQL", 5432) {
        cases.push((
            "warehouse",
            format!("SELECT pg_sleep(60), '{marker}'"),
            "postgres://postgres@127.0.0.1:5432/test",
            format!("SELECT CAST(COUNT(*) AS TEXT) FROM pg_stat_activity WHERE query LIKE '%{marker}%' AND pid <> pg_backend_pid()"),
        ));
    }
    if service("MariaDB", 3306) {
        cases.push((
            "app_mysql",
            format!("SELECT SLEEP(60), '{marker}'"),
            "mysql://root@127.0.0.1:3306/test",
            format!("SELECT CAST(COUNT(*) AS CHAR) FROM information_schema.processlist WHERE info LIKE '%{marker}%' AND id <> CONNECTION_ID()"),
        ));
    }
    for (connection, sql, url, running) in cases {
        let dag = format!(
            "tasks:\n  - {{id: slow, type: query, connection: {connection}, sql: \"{sql}\", timeout: 2s}}\n"
        );
        let dir = project(&[("slow.yaml", &dag)]);
        std::fs::write(dir.path().join("ferry.toml"), CONFIG).expect("config");
        let began = std::time::Instant::now();
        let run = ferry_in(dir.path(), &["run", "slow"], &[]);
        assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
        assert!(began.elapsed() < std::time::Duration::from_secs(20));
        let log = stdout(&ferry_in(dir.path(), &["logs", "slow__", "slow"], &[]));
        assert!(
            log.contains("timed out after 2.0s; rolled back") || log.contains("failed"),
            "{log}"
        );
        // The statement is gone from the server within a few seconds, not after its 60.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if scalar(url, &running) == "0" {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{connection}: the statement still runs"
            );
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
    }
}

#[test]
fn issue8_runs_are_not_handed_to_a_daemon_of_another_environment() {
    let dir = project(&[("noop.yaml", "tasks:\n  - {id: a, type: noop}\n")]);
    std::fs::write(dir.path().join("ferry.toml"), CONFIG).expect("config");
    let mut serve = crate::util::spawn_ferry_with(dir.path(), &["serve"], &[("FERRY_ENV", "prod")]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let output = ferry_in(dir.path(), &["run", "noop"], &[]);
    crate::util::nix_kill(&serve, "TERM");
    serve.wait().expect("serve ends");
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("which runs tasks with the connections of the environment `prod`, not `dev`: run this with --env prod"),
        "{}",
        stderr(&output)
    );
    let runs = stdout(&ferry_in(dir.path(), &["runs", "list"], &[]));
    assert!(!runs.contains("noop__manual"), "a run was made: {runs}");
}

/// A DAG that writes into `users`, `daily` and `tags` (suffixed) by every write mode.
fn write_modes_dag(connection: &str, suffix: &str) -> String {
    format!(
        r#"tasks:
  - id: seed
    type: query
    connection: {connection}
    sql: "DROP TABLE IF EXISTS users_{suffix}; DROP TABLE IF EXISTS daily_{suffix}; DROP TABLE IF EXISTS tags_{suffix}; CREATE TABLE users_{suffix} (id INTEGER, name VARCHAR(20)); INSERT INTO users_{suffix} VALUES (1, 'old'), (2, 'kept'); CREATE TABLE daily_{suffix} (day VARCHAR(10), points INTEGER); INSERT INTO daily_{suffix} VALUES ('{{{{ ds }}}}', 1), ('1999-01-01', 7)"
  - id: merge
    type: query
    connection: {connection}
    sql: "SELECT 1 AS id, 'new' AS name UNION ALL SELECT 3 AS id, 'added' AS name"
    destination: {{table: users_{suffix}, write: merge, key: [id]}}
    depends_on: [seed]
  - id: partition
    type: query
    connection: {connection}
    sql: "SELECT '{{{{ ds }}}}' AS day, 42 AS points"
    destination: {{table: daily_{suffix}, write: replace_partition, partition_column: day}}
    depends_on: [seed]
  - id: append
    type: query
    connection: {connection}
    sql: "SELECT 'a' AS tag"
    destination: {{table: tags_{suffix}}}
    depends_on: [seed]
  - id: replace
    type: query
    connection: {connection}
    sql: "SELECT 'b' AS tag UNION ALL SELECT 'c' AS tag"
    destination: {{table: tags_{suffix}, write: replace}}
    depends_on: [append]
  - id: broken
    type: query
    connection: {connection}
    sql: "SELECT 'd' AS tag, missing_column FROM users_{suffix}"
    destination: {{table: tags_{suffix}, write: replace}}
    depends_on: [replace]
"#
    )
}

#[test]
fn issue8_query_results_are_written_by_mode_on_every_sql_kind() {
    let suffix = std::process::id().to_string();
    let mut targets = vec![("app", "sqlite:app.db".to_string())];
    if service("PostgreSQL", 5432) {
        targets.push((
            "warehouse",
            "postgres://postgres@127.0.0.1:5432/test".to_string(),
        ));
    }
    if service("MariaDB", 3306) {
        targets.push(("app_mysql", "mysql://root@127.0.0.1:3306/test".to_string()));
    }
    for (connection, url) in targets {
        let dir = project(&[("modes.yaml", &write_modes_dag(connection, &suffix))]);
        std::fs::write(dir.path().join("ferry.toml"), CONFIG).expect("config");
        std::fs::write(dir.path().join("app.db"), "").expect("an empty SQLite database");
        let url = url.replace(
            "sqlite:app.db",
            &format!("sqlite:{}", dir.path().join("app.db").display()),
        );
        let run = ferry_in(dir.path(), &["run", "modes"], &[]);
        assert!(!run.status.success(), "`broken` fails the run");
        let shown: serde_json::Value = serde_json::from_str(&stdout(&ferry_in(
            dir.path(),
            &["runs", "show", "modes__", "--format", "json"],
            &[],
        )))
        .expect("JSON");
        let state = |id: &str| {
            shown["tasks"]
                .as_array()
                .and_then(|tasks| tasks.iter().find(|t| t["task_id"] == id))
                .map(|t| (t["state"].clone(), t["metrics"].clone()))
                .expect("task")
        };
        for id in ["seed", "merge", "partition", "append", "replace"] {
            assert_eq!(state(id).0, "success", "{connection}: {id}: {shown}");
        }
        assert_eq!(state("broken").0, "failed", "{connection}");
        assert_eq!(state("merge").1["rows_written"], 2, "{connection}: {shown}");
        assert_eq!(
            state("merge").1["rows_replaced"],
            1,
            "{connection}: {shown}"
        );
        let text = |sql: &str| scalar(&url, sql).trim().to_string();
        let users = text(&format!(
            "SELECT CAST(COUNT(*) AS CHAR(10)) FROM users_{suffix} WHERE (id = 1 AND name = 'new') OR (id = 2 AND name = 'kept') OR (id = 3 AND name = 'added')"
        ));
        assert_eq!(users, "3", "{connection}: merge");
        let total = text(&format!(
            "SELECT CAST(COUNT(*) AS CHAR(10)) FROM users_{suffix}"
        ));
        assert_eq!(total, "3", "{connection}: merge replaced row 1");
        let daily = text(&format!(
            "SELECT CAST(SUM(points) AS CHAR(10)) FROM daily_{suffix}"
        ));
        assert_eq!(
            daily, "49",
            "{connection}: this day replaced (42), the other kept (7)"
        );
        let tags = text(&format!(
            "SELECT CAST(COUNT(*) AS CHAR(10)) FROM tags_{suffix} WHERE tag IN ('b', 'c')"
        ));
        let all_tags = text(&format!(
            "SELECT CAST(COUNT(*) AS CHAR(10)) FROM tags_{suffix}"
        ));
        assert_eq!(
            (tags.as_str(), all_tags.as_str()),
            ("2", "2"),
            "{connection}: replace, and the broken write left the table as it was"
        );
    }
}
