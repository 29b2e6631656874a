//! The same cases against every backend: a temporary SQLite file always, and the machine's
//! PostgreSQL (a fresh database per test) when `FERRY_TEST_POSTGRES_URL` or the default
//! `postgres://postgres@127.0.0.1:5432/test` answers. With `FERRY_REQUIRE_SERVICES=1` an
//! unreachable PostgreSQL fails the tests instead of skipping them.

use super::*;

const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A store on each backend that is reachable, each in its own empty database.
async fn stores() -> Vec<(Store, tempfile::TempDir)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = Store::open(&format!(
        "sqlite://{}",
        dir.path().join("ferry.db").display()
    ))
    .await
    .expect("SQLite opens");
    let mut stores = vec![(sqlite, dir)];
    if let Some(postgres) = fresh_postgres().await {
        stores.push((postgres, tempfile::tempdir().expect("temp dir")));
    }
    stores
}

async fn fresh_postgres() -> Option<Store> {
    let admin_url =
        std::env::var("FERRY_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES.to_string());
    let required = std::env::var("FERRY_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
    let admin = match PgPoolOptions::new()
        .max_connections(1)
        .connect(&admin_url)
        .await
    {
        Ok(pool) => pool,
        Err(error) if required => panic!(
            "PostgreSQL at {} is required but unreachable: {error}",
            redact(&admin_url)
        ),
        Err(error) => {
            eprintln!(
                "SKIPPED the PostgreSQL half of this test: {} unreachable ({error})",
                redact(&admin_url)
            );
            return None;
        }
    };
    // Databases left by earlier test processes (this process's are still in use).
    let leftovers: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'ferry_test_%'")
            .fetch_all(&admin)
            .await
            .unwrap_or_default();
    let mine = format!("ferry_test_{}_", std::process::id());
    for old in leftovers.iter().filter(|name| !name.starts_with(&mine)) {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {old} WITH (FORCE)"))
            .execute(&admin)
            .await;
    }
    let name = format!(
        "ferry_test_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    );
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .expect("create test database");
    let base = admin_url
        .rsplit_once('/')
        .map_or(admin_url.as_str(), |(base, _)| base);
    Some(
        Store::open(&format!("{base}/{name}"))
            .await
            .expect("PostgreSQL opens"),
    )
}

fn new_run<'a>(run_id: &'a str, start: i64) -> NewRun<'a> {
    NewRun {
        dag_id: "d",
        run_id,
        interval_start: start,
        interval_end: start + 1000,
        run_type: "scheduled",
        conf: "{}",
        dag_version_id: 0,
        at: 5,
    }
}

async fn run_with_tasks(store: &Store, run_id: &str, start: i64) -> RunRecord {
    let version = store
        .record_dag_version("d", "hash", "d.yaml", "tasks: []", 1)
        .await
        .expect("version");
    let run = NewRun {
        dag_version_id: version,
        ..new_run(run_id, start)
    };
    let tasks = [
        NewTaskInstance {
            task_id: "a",
            max_tries: 2,
            priority: 1,
            pool: "default",
        },
        NewTaskInstance {
            task_id: "b",
            max_tries: 1,
            priority: 5,
            pool: "default",
        },
    ];
    store
        .create_run(&run, &tasks, "scheduler")
        .await
        .expect("create")
        .expect("new run")
}

/// A run `r1` whose task `a` is queued.
async fn queued_task(store: &Store) -> (RunRecord, TaskInstanceRecord) {
    let run = run_with_tasks(store, "r1", 100).await;
    let a = store.task_instances(run.id).await.expect("tasks")[0].clone();
    let queue = change(&a, TaskState::Pending, TaskState::Queued, "scheduler");
    store
        .transition_task(&run, &a, &queue)
        .await
        .expect("queue");
    (run, a)
}

fn change<'a>(
    task: &TaskInstanceRecord,
    from: TaskState,
    to: TaskState,
    cause: &'a str,
) -> TaskChange<'a> {
    TaskChange {
        id: task.id,
        from,
        to,
        lease: None,
        ready_at: None,
        exit_code: None,
        at: 10,
        cause,
        detail: "",
    }
}

#[tokio::test]
async fn a_run_is_created_once_per_logical_date() {
    for (store, _dir) in stores().await {
        let run = run_with_tasks(&store, "r1", 100).await;
        assert_eq!(run.state, "queued");
        let version = run.dag_version_id;
        let again = store
            .create_run(
                &NewRun {
                    dag_version_id: version,
                    ..new_run("r2", 100)
                },
                &[],
                "scheduler",
            )
            .await
            .expect("no error");
        assert_eq!(again, None, "{:?}", store.backend());
        assert_eq!(store.task_instances(run.id).await.expect("tasks").len(), 2);
        let latest = store.latest_logical_dates().await.expect("latest");
        assert_eq!(latest.get("d"), Some(&100));
        assert_eq!(
            store
                .run_for_interval("d", 100)
                .await
                .expect("by interval")
                .map(|r| r.id),
            Some(run.id)
        );
    }
}

#[tokio::test]
async fn dag_versions_are_keyed_by_content() {
    for (store, _dir) in stores().await {
        let first = store
            .record_dag_version("d", "h1", "d.yaml", "a", 1)
            .await
            .expect("v1");
        let same = store
            .record_dag_version("d", "h1", "d.yaml", "a", 2)
            .await
            .expect("v1 again");
        let second = store
            .record_dag_version("d", "h2", "d.yaml", "b", 3)
            .await
            .expect("v2");
        assert_eq!(first, same);
        assert_ne!(first, second);
    }
}

#[tokio::test]
async fn transitions_are_guarded_and_logged() {
    for (store, _dir) in stores().await {
        let run = run_with_tasks(&store, "r1", 100).await;
        assert!(
            store
                .transition_run(&run, RunState::Queued, RunState::Running, 6, "scheduler")
                .await
                .expect("start")
        );
        assert!(
            !store
                .transition_run(&run, RunState::Queued, RunState::Running, 6, "scheduler")
                .await
                .expect("again")
        );
        let illegal = store
            .transition_run(&run, RunState::Success, RunState::Queued, 7, "x")
            .await;
        assert!(matches!(illegal, Err(StoreError::IllegalTransition { .. })));
        let tasks = store.task_instances(run.id).await.expect("tasks");
        let a = &tasks[0];
        assert!(
            store
                .transition_task(
                    &run,
                    a,
                    &change(a, TaskState::Pending, TaskState::Queued, "scheduler")
                )
                .await
                .expect("queue")
        );
        assert!(
            !store
                .transition_task(
                    &run,
                    a,
                    &change(a, TaskState::Pending, TaskState::Queued, "scheduler")
                )
                .await
                .expect("twice")
        );
        let events = store.events("r1").await.expect("events");
        let steps: Vec<(Option<&str>, &str, &str)> = events
            .iter()
            .map(|e| (e.task_id.as_deref(), e.to_state.as_str(), e.cause.as_str()))
            .collect();
        assert_eq!(
            steps,
            [
                (None, "queued", "scheduler"),
                (None, "running", "scheduler"),
                (Some("a"), "queued", "scheduler")
            ]
        );
    }
}

#[tokio::test]
async fn a_claim_fences_out_older_leases() {
    for (store, _dir) in stores().await {
        let (run, a) = queued_task(&store).await;
        let (claimed, attempt) = store
            .claim(&run, &a, "node-1", "echo hi", 20)
            .await
            .expect("claim")
            .expect("won");
        assert_eq!(
            (claimed.try_number, claimed.lease, claimed.state.as_str()),
            (1, 1, "running")
        );
        assert_eq!(
            store
                .claim(&run, &a, "node-2", "echo hi", 21)
                .await
                .expect("claim"),
            None
        );
        // A write that carries a stale lease is refused.
        let stale = TaskChange {
            lease: Some(0),
            ..change(&claimed, TaskState::Running, TaskState::Success, "executor")
        };
        assert!(
            !store
                .transition_task(&run, &claimed, &stale)
                .await
                .expect("stale")
        );
        let current = TaskChange {
            lease: Some(1),
            exit_code: Some(0),
            ..change(&claimed, TaskState::Running, TaskState::Success, "executor")
        };
        assert!(
            store
                .transition_task(&run, &claimed, &current)
                .await
                .expect("current")
        );
        store
            .finish_attempt(attempt, "success", Some(0), "hi\n", 30)
            .await
            .expect("finish");
        let record = store
            .attempt("r1", "a", None)
            .await
            .expect("attempt")
            .expect("exists");
        assert_eq!(
            (
                record.log.as_str(),
                record.outcome.as_deref(),
                record.rendered.as_str()
            ),
            ("hi\n", Some("success"), "echo hi")
        );
    }
}

#[tokio::test]
async fn silent_workers_are_found_by_heartbeat() {
    for (store, _dir) in stores().await {
        let (run, a) = queued_task(&store).await;
        store
            .claim(&run, &a, "node-1", "sleep", 20)
            .await
            .expect("claim")
            .expect("won");
        assert_eq!(store.heartbeat("node-1", 50).await.expect("beat"), 1);
        assert!(store.stale_running(40).await.expect("stale").is_empty());
        let stale = store.stale_running(60).await.expect("stale");
        assert_eq!(
            stale.iter().map(|t| t.task_id.as_str()).collect::<Vec<_>>(),
            ["a"]
        );
        assert_eq!(store.run_of(&stale[0]).await.expect("run").run_id, "r1");
    }
}

#[tokio::test]
async fn runs_are_listed_by_dag_and_state() {
    for (store, _dir) in stores().await {
        let first = run_with_tasks(&store, "r1", 100).await;
        run_with_tasks(&store, "r2", 200).await;
        store
            .transition_run(&first, RunState::Queued, RunState::Running, 6, "scheduler")
            .await
            .expect("start");
        let all = store.runs(&RunFilter::default()).await.expect("all");
        assert_eq!(
            all.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(),
            ["r2", "r1"]
        );
        let running = store
            .runs(&RunFilter {
                states: vec![RunState::Running],
                ..RunFilter::default()
            })
            .await
            .expect("running");
        assert_eq!(
            running
                .iter()
                .map(|r| r.run_id.as_str())
                .collect::<Vec<_>>(),
            ["r1"]
        );
        let other = store
            .runs(&RunFilter {
                dag_id: Some("other".into()),
                ..RunFilter::default()
            })
            .await
            .expect("other");
        assert!(other.is_empty());
    }
}

#[tokio::test]
async fn a_damaged_file_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ferry.db");
    std::fs::write(
        &path,
        b"this is not a database, just text that is long enough to be read as a header....",
    )
    .expect("write");
    let error = Store::open(&format!("sqlite://{}", path.display()))
        .await
        .expect_err("damaged");
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
}

#[test]
fn passwords_are_masked() {
    assert_eq!(
        redact("postgres://ferry:s3cret@db:5432/ferry"),
        "postgres://ferry:********@db:5432/ferry"
    );
    assert_eq!(
        redact("postgres://ferry@db/ferry"),
        "postgres://ferry@db/ferry"
    );
    assert_eq!(redact("sqlite://data/ferry.db"), "sqlite://data/ferry.db");
}

#[tokio::test]
async fn concurrent_claims_have_one_winner() {
    for (store, _dir) in stores().await {
        let (run, a) = queued_task(&store).await;
        let attempts = (0..8).map(|n| {
            let (store, run, a) = (store.clone(), run.clone(), a.clone());
            tokio::spawn(async move { store.claim(&run, &a, &format!("node-{n}"), "x", 20).await })
        });
        let mut winners = 0;
        for attempt in attempts {
            if attempt.await.expect("joined").expect("no error").is_some() {
                winners += 1;
            }
        }
        assert_eq!(winners, 1, "{:?}", store.backend());
    }
}
