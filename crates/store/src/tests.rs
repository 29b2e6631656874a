//! The same cases against every backend: a temporary SQLite file always, and the machine's
//! PostgreSQL (a fresh database per test) when `FERRY_TEST_POSTGRES_URL` or the default
//! `postgres://postgres@127.0.0.1:5432/test` answers. With `FERRY_REQUIRE_SERVICES=1` an
//! unreachable PostgreSQL fails the tests instead of skipping them.

use sqlx::postgres::PgPoolOptions;

use super::*;

fn redact(url: &str) -> String {
    ferry_secrets::redact_text(url)
}

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
    // A counter, not the clock: two tests on two threads can read the same nanosecond.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let name = format!(
        "ferry_test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
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
        grant_try: false,
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
        let latest = store.latest_scheduled_dates().await.expect("latest");
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
            .transition_run(&run, RunState::Success, RunState::Running, 7, "x")
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
            .claim(&run, &a, "node-1", "echo hi", None, 20)
            .await
            .expect("claim")
            .expect("won");
        assert_eq!(
            (claimed.try_number, claimed.lease, claimed.state.as_str()),
            (1, 1, "running")
        );
        assert_eq!(
            store
                .claim(&run, &a, "node-2", "echo hi", None, 21)
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
            .claim(&run, &a, "node-1", "sleep", None, 20)
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
async fn runs_are_paged_by_cursor_and_dated() {
    for (store, _dir) in stores().await {
        for (i, start) in [100, 200, 300, 400, 500].iter().enumerate() {
            run_with_tasks(&store, &format!("r{i}"), *start).await;
        }
        let page = |after: Option<(i64, i64)>| RunFilter {
            limit: Some(2),
            after,
            ..RunFilter::default()
        };
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let runs = store.runs(&page(after)).await.expect("page");
            seen.extend(runs.iter().map(|r| r.logical_date));
            match runs.last() {
                Some(last) if runs.len() == 2 => after = Some((last.logical_date, last.id)),
                _ => break,
            }
        }
        assert_eq!(seen, [500, 400, 300, 200, 100], "{:?}", store.backend());
        let oldest = store
            .runs(&RunFilter {
                oldest_first: true,
                after: Some((200, 0)),
                limit: Some(2),
                ..RunFilter::default()
            })
            .await
            .expect("oldest first");
        assert_eq!(
            oldest.iter().map(|r| r.logical_date).collect::<Vec<_>>(),
            [200, 300]
        );
        let skipped = store
            .runs(&RunFilter {
                offset: Some(3),
                ..RunFilter::default()
            })
            .await
            .expect("offset");
        assert_eq!(
            skipped.iter().map(|r| r.logical_date).collect::<Vec<_>>(),
            [200, 100]
        );
        let counted = store
            .count_runs(&RunFilter {
                logical_date_from: Some(200),
                limit: Some(1),
                offset: Some(1),
                ..RunFilter::default()
            })
            .await
            .expect("count");
        assert_eq!(counted, 4);
        let dated = store
            .runs(&RunFilter {
                logical_date_from: Some(200),
                logical_date_before: Some(400),
                ..RunFilter::default()
            })
            .await
            .expect("dated");
        assert_eq!(
            dated.iter().map(|r| r.logical_date).collect::<Vec<_>>(),
            [300, 200]
        );
        let none = store
            .runs(&RunFilter {
                dag_ids: Some(vec!["other".to_string()]),
                ..RunFilter::default()
            })
            .await
            .expect("scoped");
        assert!(none.is_empty());
        let latest = store.latest_runs().await.expect("latest");
        assert_eq!(latest.get("d").map(|r| r.logical_date), Some(500));
    }
}

#[tokio::test]
async fn an_idempotency_key_names_one_run_even_when_two_calls_race() {
    for (store, _dir) in stores().await {
        let version = store
            .record_dag_version("d", "hash", "d.yaml", "tasks: []", 1)
            .await
            .expect("version");
        let request = |key| ManualRequest {
            actor: "api token ops",
            reason: Some("late data"),
            key: Some((key, "fp")),
        };
        // Two calls with one key but different logical dates (a DAG without a schedule runs
        // at "now"): one run is made; the other call finds the key taken.
        let one = NewRun {
            run_type: "manual",
            dag_version_id: version,
            ..new_run("m1", 100)
        };
        let other = NewRun {
            run_id: "m2",
            interval_start: 200,
            ..one.clone()
        };
        let (asked_one, asked_other) = (request("k1"), request("k1"));
        let (first, second) = tokio::join!(
            store.create_manual_run(&one, &[], &asked_one),
            store.create_manual_run(&other, &[], &asked_other)
        );
        let outcomes = [first.expect("first"), second.expect("second")];
        let made: Vec<&RunRecord> = outcomes
            .iter()
            .filter_map(|o| match o {
                ManualRun::Created(run) => Some(run),
                _ => None,
            })
            .collect();
        assert_eq!(made.len(), 1, "{outcomes:?}");
        assert!(
            outcomes.iter().any(|o| matches!(o, ManualRun::Taken)),
            "{outcomes:?}"
        );
        let (run, fingerprint) = store
            .run_of_idempotency_key("d", "k1")
            .await
            .expect("lookup")
            .expect("the key names a run");
        assert_eq!(run.run_id, made[0].run_id);
        assert_eq!(fingerprint, "fp");
        assert_eq!(
            store.runs(&RunFilter::default()).await.expect("runs").len(),
            1
        );
        let events = store.events(&run.run_id).await.expect("events");
        assert_eq!(events[0].actor.as_deref(), Some("api token ops"));
        assert_eq!(events[0].reason.as_deref(), Some("late data"));
        // A date that has a run already: nothing is made, the run is named.
        let taken = store
            .create_manual_run(
                &NewRun {
                    run_type: "manual",
                    dag_version_id: version,
                    ..new_run("m3", run.logical_date)
                },
                &[],
                &request("k2"),
            )
            .await
            .expect("taken");
        assert!(
            matches!(taken, ManualRun::DateTaken(ref r) if r.run_id == run.run_id),
            "{taken:?}"
        );
        assert!(
            store
                .run_of_idempotency_key("d", "k2")
                .await
                .expect("k2")
                .is_none()
        );
        // Keys are per DAG.
        assert!(
            store
                .run_of_idempotency_key("other", "k1")
                .await
                .expect("other DAG")
                .is_none()
        );
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

#[tokio::test]
async fn passwords_are_masked_in_errors_whatever_their_form() {
    for url in [
        "postgres://ferry:s3cret-pw@127.0.0.1:1/ferry",
        "postgres://ferry@127.0.0.1:1/ferry?password=s3cret-pw",
        "host=127.0.0.1 port=1 user=ferry password=s3cret-pw dbname=ferry",
    ] {
        let error = Store::open(url)
            .await
            .expect_err("nothing listens on port 1");
        let text = error.to_string();
        assert!(text.contains("cannot open the database"), "{text}");
        assert!(!text.contains("s3cret-pw"), "{text}");
        assert!(error.is_transient(), "a refused connection passes: {text}");
    }
}

#[tokio::test]
async fn read_only_commands_never_create_a_database() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("state").join("ferry.db");
    let error = Store::open_with(&format!("sqlite://{}", path.display()), OpenMode::Existing)
        .await
        .expect_err("missing");
    assert!(
        error
            .to_string()
            .starts_with(&format!("no state database at {}", path.display())),
        "{error}"
    );
    assert!(!path.exists() && !path.parent().expect("parent").exists());
    Store::open(&format!("sqlite://{}", path.display()))
        .await
        .expect("the engine creates it");
    Store::open_with(&format!("sqlite://{}", path.display()), OpenMode::Existing)
        .await
        .expect("now it exists");
}

#[tokio::test]
async fn read_only_commands_never_change_the_schema() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("ferry.db").display());
    let store = Store::open(&url).await.expect("opens");
    // As if an older ferry had made it: its last migration is not there.
    with_pool!(store, pool => {
        sqlx::query("DELETE FROM _sqlx_migrations WHERE version = (SELECT MAX(version) FROM _sqlx_migrations)")
            .execute(pool)
            .await
            .expect("older");
    });
    store.close().await;
    let error = Store::open_with(&url, OpenMode::Existing)
        .await
        .expect_err("older schema");
    assert!(matches!(error, StoreError::Outdated { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains("start this ferry's `ferry serve`"),
        "{error}"
    );
}

#[tokio::test]
async fn a_deleted_or_replaced_file_is_noticed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ferry.db");
    let store = Store::open(&format!("sqlite://{}", path.display()))
        .await
        .expect("opens");
    store.check_file().expect("still there");
    std::fs::rename(&path, dir.path().join("moved.db")).expect("move");
    let error = store.check_file().expect_err("gone");
    assert!(matches!(error, StoreError::Replaced { .. }), "{error}");
    std::fs::write(&path, b"").expect("another file");
    assert!(
        store.check_file().is_err(),
        "a new file is not the same file"
    );
}

#[tokio::test]
async fn a_database_that_vanished_is_not_silently_replaced_by_an_empty_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ferry.db");
    let url = format!("sqlite://{}", path.display());
    let store = Store::open(&url).await.expect("opens");
    drop(store.acquire_owner("ferry serve", 1).await.expect("owner"));
    store.close().await;
    std::fs::remove_file(&path).expect("deleted");
    let error = Store::open(&url).await.expect_err("refused");
    assert!(matches!(error, StoreError::Vanished { .. }), "{error}");
    assert!(error.to_string().contains("ferry.db.lock"), "{error}");
    assert!(!path.exists());
    std::fs::remove_file(dir.path().join("ferry.db.lock")).expect("operator's choice");
    Store::open(&url).await.expect("a new, empty state");
}

#[tokio::test]
async fn a_symbolic_link_to_the_database_meets_the_same_owner() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ferry.db");
    let store = Store::open(&format!("sqlite://{}", path.display()))
        .await
        .expect("opens");
    let _owner = store
        .acquire_owner("ferry serve pid 1", 1)
        .await
        .expect("free");
    let elsewhere = tempfile::tempdir().expect("temp dir");
    let symbolic = elsewhere.path().join("symbolic.db");
    std::os::unix::fs::symlink(&path, &symbolic).expect("symlink");
    let linked = Store::open(&format!("sqlite://{}", symbolic.display()))
        .await
        .expect("opens");
    let refused = linked
        .acquire_owner("ferry serve pid 2", 2)
        .await
        .expect_err("the same database");
    assert!(matches!(refused, StoreError::Owned { .. }), "{refused}");
}

#[tokio::test]
async fn read_only_commands_never_create_ferrys_tables_in_postgresql() {
    let Some(store) = fresh_postgres().await else {
        return;
    };
    let url = store.pg_options.as_ref().map(|o| {
        format!(
            "postgres://{}@{}:{}/{}",
            o.get_username(),
            o.get_host(),
            o.get_port(),
            o.get_database().unwrap_or_default()
        )
    });
    store.close().await;
    let url = url.expect("a PostgreSQL store");
    let empty = format!("{url}_empty");
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .expect("admin");
    let name = empty.rsplit_once('/').expect("name").1.to_string();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .expect("create");
    let error = Store::open_with(&empty, OpenMode::Existing)
        .await
        .expect_err("no state there");
    assert!(matches!(error, StoreError::Empty { .. }), "{error}");
    let tables: i64 = {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&empty)
            .await
            .expect("connect");
        let count = sqlx::query_scalar(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
        )
        .fetch_one(&pool)
        .await
        .expect("count");
        pool.close().await;
        count
    };
    assert_eq!(tables, 0);
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&admin)
        .await;
}

#[tokio::test]
async fn one_owner_at_a_time() {
    for (store, _dir) in stores().await {
        let first = store
            .acquire_owner("ferry serve pid 1 on host-a", 5)
            .await
            .expect("free");
        let refused = store
            .acquire_owner("ferry serve pid 2 on host-a", 6)
            .await
            .expect_err("held");
        let text = refused.to_string();
        assert!(
            matches!(refused, StoreError::Owned { .. })
                && text.contains("ferry serve pid 1 on host-a"),
            "{:?}: {text}",
            store.backend()
        );
        first.verify(&store, 6).await.expect("still the owner");
        assert_eq!(store.owner_seen_at().await.expect("seen"), Some(6));
        drop(first);
        let mut second = None;
        // PostgreSQL releases a dropped connection's lock when it notices the close.
        for _ in 0..50 {
            match store.acquire_owner("ferry run pid 3 on host-a", 7).await {
                Ok(lock) => {
                    second = Some(lock);
                    break;
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
        assert!(second.is_some(), "released when dropped");
        assert_eq!(
            store.owner().await.expect("owner").as_deref(),
            Some("ferry run pid 3 on host-a")
        );
    }
}

#[tokio::test]
async fn wake_ups_are_counted() {
    for (store, _dir) in stores().await {
        let before = store.wake_count().await.expect("count");
        store.wake().await.expect("wake");
        store.wake().await.expect("wake");
        assert_eq!(store.wake_count().await.expect("count"), before + 2);
    }
}

#[tokio::test]
async fn a_wave_of_tasks_moves_in_one_transaction() {
    for (store, _dir) in stores().await {
        let run = run_with_tasks(&store, "wave", 100).await;
        let tasks = store.task_instances(run.id).await.expect("tasks");
        let first = &tasks[0];
        store
            .transition_task(
                &run,
                first,
                &change(first, TaskState::Pending, TaskState::Queued, "scheduler"),
            )
            .await
            .expect("queue one");
        let all: Vec<&TaskInstanceRecord> = tasks.iter().collect();
        let moved = store
            .transition_tasks(
                &run,
                &all,
                &WaveChange {
                    from: TaskState::Pending,
                    to: TaskState::Queued,
                    at: 11,
                    cause: "scheduler",
                    detail: "upstream done",
                },
            )
            .await
            .expect("wave");
        let expected: Vec<i64> = tasks[1..].iter().map(|t| t.id).collect();
        assert_eq!(
            moved, expected,
            "the task already queued is not moved again"
        );
        let events = store.events("wave").await.expect("events");
        assert_eq!(
            events
                .iter()
                .filter(|e| e.task_id.is_some() && e.to_state == "queued")
                .count(),
            tasks.len()
        );
    }
}

#[tokio::test]
async fn an_interrupted_attempt_gets_its_try_back_and_a_reattached_one_changes_worker() {
    for (store, _dir) in stores().await {
        let (run, a) = queued_task(&store).await;
        let (claimed, attempt) = store
            .claim(&run, &a, "node-1", "sleep", Some("{\"pid\":1}"), 20)
            .await
            .expect("claim")
            .expect("claimed");
        assert_eq!(
            store
                .latest_attempt(a.id)
                .await
                .expect("attempt")
                .map(|a| (a.id, a.supervisor)),
            Some((attempt, Some("{\"pid\":1}".to_string())))
        );
        assert!(
            store
                .take_over(&run, &claimed, "node-2", 30, "reattached")
                .await
                .expect("take over")
        );
        let mut interrupted = change(
            &claimed,
            TaskState::Running,
            TaskState::UpForRetry,
            "shutdown",
        );
        interrupted.lease = Some(claimed.lease);
        interrupted.grant_try = true;
        assert!(
            store
                .transition_task(&run, &claimed, &interrupted)
                .await
                .expect("interrupt")
        );
        let now = store.task_instances(run.id).await.expect("tasks");
        let task = now.iter().find(|t| t.id == a.id).expect("task");
        assert_eq!(
            (task.worker.as_deref(), task.max_tries),
            (Some("node-2"), a.max_tries + 1)
        );
    }
}

#[tokio::test]
async fn concurrent_claims_have_one_winner() {
    for (store, _dir) in stores().await {
        let (run, a) = queued_task(&store).await;
        let attempts = (0..8).map(|n| {
            let (store, run, a) = (store.clone(), run.clone(), a.clone());
            tokio::spawn(async move {
                store
                    .claim(&run, &a, &format!("node-{n}"), "x", None, 20)
                    .await
            })
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

#[tokio::test]
async fn interventions_are_guarded_atomic_and_recorded_with_who_and_why() {
    for (store, _dir) in stores().await {
        let run = run_with_tasks(&store, "r1", 100).await;
        let tasks = store.task_instances(run.id).await.expect("tasks");
        let a = &tasks[0];
        // The run ends with `a` failed after its two tries.
        sqlx_exec(&store, "UPDATE task_instances SET state = 'failed', try_number = 2, ended_at = 9 WHERE task_id = 'a'").await;
        sqlx_exec(
            &store,
            "UPDATE dag_runs SET state = 'failed', started_at = 7, ended_at = 9",
        )
        .await;
        let run = store.run("r1").await.expect("run").expect("there");
        let a = store
            .task_instances(run.id)
            .await
            .expect("tasks")
            .into_iter()
            .find(|t| t.task_id == a.task_id)
            .expect("a");
        let who = Intervention {
            actor: "alice",
            reason: Some("source fixed"),
            at: 50,
        };
        let (cleared, reopened) = store
            .clear_tasks(
                &run,
                &[TaskToClear {
                    task: &a,
                    retries: 3,
                }],
                None,
                who,
            )
            .await
            .expect("cleared");
        assert_eq!((cleared, reopened), (vec!["a".to_string()], true));
        let after = store.run("r1").await.expect("run").expect("there");
        assert_eq!((after.state.as_str(), after.started_at), ("queued", None));
        let a2 = store.task_instances(run.id).await.expect("tasks")[0].clone();
        // Tries so far are kept; a first try and three retries more are allowed; the lease moved
        // on (fencing).
        assert_eq!(
            (a2.state.as_str(), a2.try_number, a2.max_tries),
            ("pending", 2, 6)
        );
        assert_eq!(a2.lease, a.lease + 1);
        // The same stale record again changes nothing.
        let (again, _) = store
            .clear_tasks(
                &run,
                &[TaskToClear {
                    task: &a,
                    retries: 3,
                }],
                None,
                who,
            )
            .await
            .expect("no error");
        assert!(again.is_empty());
        let events = store.events("r1").await.expect("events");
        let by_alice: Vec<&EventRecord> = events
            .iter()
            .filter(|e| e.actor.as_deref() == Some("alice"))
            .collect();
        assert_eq!(by_alice.len(), 2, "{events:?}");
        assert!(
            by_alice
                .iter()
                .all(|e| e.reason.as_deref() == Some("source fixed"))
        );
        // Marking: the stale record is refused; the fresh one is taken.
        assert_eq!(
            store
                .mark_task(&after, &a, TaskState::Success, &[], who)
                .await
                .expect("no error"),
            None
        );
        assert_eq!(
            store
                .mark_task(&after, &a2, TaskState::Success, &[], who)
                .await
                .expect("marked"),
            Some(Vec::new())
        );
        assert!(
            store
                .mark_task(&after, &a2, TaskState::Running, &[], who)
                .await
                .is_err()
        );
        // Pausing, and run ids by prefix.
        assert!(store.set_paused("d", true, who).await.expect("paused"));
        assert!(!store.set_paused("d", true, who).await.expect("already"));
        assert_eq!(store.paused_dags().await.expect("list")[0].actor, "alice");
        assert!(store.set_paused("d", false, who).await.expect("unpaused"));
        run_with_tasks(&store, "r2", 200).await;
        assert_eq!(
            store.find_run("r1").await.expect("found").map(|r| r.run_id),
            Some("r1".to_string())
        );
        assert!(matches!(
            store.find_run("r").await,
            Err(StoreError::Ambiguous { .. })
        ));
        assert_eq!(store.find_run("x").await.expect("none"), None);
        // `_` and `%` in a prefix are literal.
        assert_eq!(store.find_run("r_").await.expect("none"), None);
    }
}

async fn sqlx_exec(store: &Store, sql: &str) {
    with_pool!(store, pool => {
        sqlx::query(sql).execute(pool).await.expect("statement");
    });
}

#[tokio::test]
async fn a_run_that_ended_with_unfinished_tasks_is_reopened_and_fenced_attempts_are_found() {
    for (store, _dir) in stores().await {
        let run = run_with_tasks(&store, "r1", 100).await;
        sqlx_exec(
            &store,
            "UPDATE dag_runs SET state = 'success', started_at = 7, ended_at = 9",
        )
        .await;
        sqlx_exec(&store, "UPDATE task_instances SET state = 'success'").await;
        assert!(
            !store
                .reopen_if_unfinished(run.id, 10)
                .await
                .expect("looked")
        );
        // A clear committed just as the run ended: a task is pending again.
        sqlx_exec(
            &store,
            "UPDATE task_instances SET state = 'pending' WHERE task_id = 'a'",
        )
        .await;
        assert!(
            store
                .reopen_if_unfinished(run.id, 10)
                .await
                .expect("reopened")
        );
        let after = store.run("r1").await.expect("run").expect("there");
        assert_eq!((after.state.as_str(), after.started_at), ("queued", None));
        // An open attempt whose task's lease moved on is fenced.
        let tasks = store.task_instances(run.id).await.expect("tasks");
        sqlx_exec(&store, &format!(
            "INSERT INTO attempts (task_instance_id, try_number, lease, worker, rendered, started_at, supervisor) VALUES ({}, 1, {}, 'w', 'x', 1, NULL)",
            tasks[0].id, tasks[0].lease
        ))
        .await;
        assert!(store.fenced_attempts().await.expect("none").is_empty());
        sqlx_exec(
            &store,
            &format!(
                "UPDATE task_instances SET lease = lease + 1 WHERE id = {}",
                tasks[0].id
            ),
        )
        .await;
        let fenced = store.fenced_attempts().await.expect("fenced");
        assert_eq!(fenced.len(), 1);
        assert_eq!(fenced[0].1.id, tasks[0].id);
    }
}
