//! Issue 8: connections per environment, tested by a real round trip to the machine's
//! PostgreSQL and MariaDB.

use crate::util::{ferry_in, project, stderr, stdout};

/// Whether a TCP server answers on `port` of this machine; when it does not, the test fails
/// with `FERRY_REQUIRE_SERVICES=1` and says that it skipped otherwise.
fn service(name: &str, port: u16) -> bool {
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
            "testing bigquery connections comes with the bigquery task types",
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
