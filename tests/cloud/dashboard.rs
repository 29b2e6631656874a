//! Issue 9: the dashboard pipeline end to end, with the repository's own DAG file, against the
//! BigQuery emulator (the warehouse), the local MariaDB and PostgreSQL (the application's
//! database), moto (the application's AWS: the state machine told that the day is ready) and a
//! PostgreSQL store; the application's dashboard table is checked row by row against the
//! aggregates computed here, independently.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::emulators::{AWS_ENV, aws_in, bigquery_dataset, emulators, task};
use crate::util::{
    ferry_in, fresh_mysql, fresh_postgres, project, sql_column, sql_execute as execute, stderr,
    stdout,
};

/// The application's data: students and the day's (and neighbouring days') events.
struct App {
    /// (id, school, grade, class).
    students: Vec<(i64, i64, i64, i64)>,
    /// (id, student, minutes, started_at).
    usage: Vec<(i64, i64, i64, String)>,
    /// (id, student, points, answered_at).
    scores: Vec<(i64, i64, i64, String)>,
}

/// 10 schools × 6 grades × 2 classes × 4 students, and events from 2026-11-27 to 2026-11-29
/// (Tokyo), so that some fall outside the interval of 2026-11-28.
fn app() -> App {
    let mut rng = fastrand::Rng::with_seed(2026);
    let mut students = Vec::new();
    for school in 1..=10 {
        for grade in 1..=6 {
            for section in 0..2 {
                let class = school * 100 + grade * 10 + section;
                for _ in 0..4 {
                    students.push((students.len() as i64 + 1, school, grade, class));
                }
            }
        }
    }
    let at = |rng: &mut fastrand::Rng| {
        // Minutes from 2026-11-27 12:00 to 2026-11-29 12:00 Tokyo.
        let minute = rng.i64(0..2 * 24 * 60);
        let day = 27 + (12 * 60 + minute) / (24 * 60);
        let of_day = (12 * 60 + minute) % (24 * 60);
        format!(
            "2026-11-{day:02}T{:02}:{:02}:{:02}+09:00",
            of_day / 60,
            of_day % 60,
            rng.i64(0..60)
        )
    };
    let active = |rng: &mut fastrand::Rng| {
        // Two thirds of the students are active.
        loop {
            let student = rng.i64(1..=students.len() as i64);
            if student % 3 != 0 {
                return student;
            }
        }
    };
    let usage = (1..=1500)
        .map(|id| (id, active(&mut rng), rng.i64(1..60), at(&mut rng)))
        .collect();
    let scores = (1..=3000)
        .map(|id| (id, active(&mut rng), rng.i64(0..11), at(&mut rng)))
        .collect();
    App {
        students,
        usage,
        scores,
    }
}

/// The dashboard rows of 2026-11-28 (interval [02:00 on the 28th, 02:00 on the 29th) Tokyo),
/// computed here: `school|grade|class|day|active|sessions|minutes|answers|points`.
fn expected(app: &App) -> Vec<String> {
    let inside = |at: &str| {
        ("2026-11-28T02:00:00+09:00"..).contains(&at) && at < "2026-11-29T02:00:00+09:00"
    };
    let mut per_student: BTreeMap<i64, [i64; 4]> = BTreeMap::new();
    for (_, student, minutes, at) in &app.usage {
        if inside(at) {
            let entry = per_student.entry(*student).or_default();
            entry[0] += 1;
            entry[1] += minutes;
        }
    }
    for (_, student, points, at) in &app.scores {
        if inside(at) {
            let entry = per_student.entry(*student).or_default();
            entry[2] += 1;
            entry[3] += points;
        }
    }
    let mut classes: BTreeMap<(i64, i64, i64), [i64; 5]> = BTreeMap::new();
    for (id, school, grade, class) in &app.students {
        let row = classes.entry((*school, *grade, *class)).or_default();
        if let Some([sessions, minutes, answers, points]) = per_student.get(id) {
            row[0] += i64::from(*sessions > 0);
            row[1] += sessions;
            row[2] += minutes;
            row[3] += answers;
            row[4] += points;
        }
    }
    classes
        .iter()
        .map(|((school, grade, class), [active, sessions, minutes, answers, points])| {
            format!("{school}|{grade}|{class}|2026-11-28|{active}|{sessions}|{minutes}|{answers}|{points}")
        })
        .collect()
}

/// The application's tables, filled with `app`.
fn load(url: &str, app: &App) {
    execute(
        url,
        "CREATE TABLE students (id INTEGER PRIMARY KEY, school_id INTEGER NOT NULL, grade INTEGER NOT NULL, class_id INTEGER NOT NULL);
             CREATE TABLE usage_events (id INTEGER PRIMARY KEY, student_id INTEGER NOT NULL, minutes INTEGER NOT NULL, started_at VARCHAR(32) NOT NULL);
             CREATE TABLE score_events (id INTEGER PRIMARY KEY, student_id INTEGER NOT NULL, points INTEGER NOT NULL, answered_at VARCHAR(32) NOT NULL);
             CREATE TABLE dashboard_class_daily (school_id INTEGER NOT NULL, grade INTEGER NOT NULL, class_id INTEGER NOT NULL, day DATE NOT NULL,
               active_students INTEGER NOT NULL, sessions INTEGER NOT NULL, minutes INTEGER NOT NULL, answers INTEGER NOT NULL, points INTEGER NOT NULL,
               PRIMARY KEY (school_id, grade, class_id, day));",
    );
    let students: Vec<String> = app
        .students
        .iter()
        .map(|(id, s, g, c)| format!("({id}, {s}, {g}, {c})"))
        .collect();
    execute(
        url,
        &format!("INSERT INTO students VALUES {}", students.join(", ")),
    );
    for (table, rows) in [("usage_events", &app.usage), ("score_events", &app.scores)] {
        let values: Vec<String> = rows
            .iter()
            .map(|(id, student, n, at)| format!("({id}, {student}, {n}, '{at}')"))
            .collect();
        execute(
            url,
            &format!("INSERT INTO {table} VALUES {}", values.join(", ")),
        );
    }
}

/// The application's state machine that the DAG names (in moto's account), made once.
const READY_MACHINE: &str =
    "arn:aws:states:ap-northeast-1:123456789012:stateMachine:dashboard-ready";

/// Makes the DAG's state machine on moto unless it is there; its executions so far.
fn ready_machine(moto: &str) -> Vec<Value> {
    let call = |target: &str, body: Value| aws_in(moto, "ap-northeast-1", "states", target, body);
    let machines = call("AWSStepFunctions.ListStateMachines", json!({}));
    let there = machines["stateMachines"]
        .as_array()
        .is_some_and(|all| all.iter().any(|m| m["stateMachineArn"] == READY_MACHINE));
    if !there {
        let made = call(
            "AWSStepFunctions.CreateStateMachine",
            json!({
                "name": "dashboard-ready",
                "roleArn": "arn:aws:iam::123456789012:role/sfn",
                "definition": json!({"StartAt": "Refresh", "States": {"Refresh": {"Type": "Pass", "End": true}}}).to_string()
            }),
        );
        assert_eq!(made["stateMachineArn"], READY_MACHINE, "{made}");
    }
    call(
        "AWSStepFunctions.ListExecutions",
        json!({"stateMachineArn": READY_MACHINE}),
    )["executions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn issue9_the_dashboard_pipeline_runs_end_to_end_against_bigquery_moto_mariadb_and_postgres() {
    let Some(emulators) = emulators() else {
        return;
    };
    bigquery_dataset(&emulators.bigquery, "raw");
    bigquery_dataset(&emulators.bigquery, "analytics");
    let dag =
        std::fs::read_to_string(crate::util::repo().join("dags/user-facing/dashboard_daily.yaml"))
            .expect("the repository's DAG file");
    let app = app();
    let expected = expected(&app);
    assert_eq!(expected.len(), 120, "a row per class, active or not");
    let mut apps = Vec::new();
    if let Some(url) = fresh_mysql("dashboard") {
        apps.push(("mysql", url));
    }
    if let Some(url) = fresh_postgres("dashboard_app") {
        apps.push(("postgres", url));
    }
    for (kind, url) in apps {
        let Some(store) = fresh_postgres(&format!("dbstore_{kind}")) else {
            return;
        };
        let dir = project(&[]);
        std::fs::create_dir_all(dir.path().join("dags/user-facing")).expect("folder");
        std::fs::write(
            dir.path().join("dags/user-facing/dashboard_daily.yaml"),
            &dag,
        )
        .expect("DAG");
        std::fs::write(
            dir.path().join("ferry.toml"),
            format!(
                "[engine]\ndatabase_url = \"{store}\"\n\n\
                 [environments.prod.connections.app_db]\nkind = \"{kind}\"\nurl = \"{url}\"\n\n\
                 [environments.prod.connections.warehouse]\nkind = \"bigquery\"\nproject = \"test-project\"\ncredentials = \"none\"\nendpoint = \"{}\"\n\n\
                 [environments.prod.connections.aws]\nkind = \"aws\"\nregion = \"ap-northeast-1\"\nendpoint = \"{}\"\n\n\
                 [alerts.channels.data-oncall]\nkind = \"log\"\n\n[alerts.channels.dashboard-owners]\nkind = \"log\"\n",
                emulators.bigquery, emulators.moto
            ),
        )
        .expect("config");
        load(&url, &app);
        let executions_before = ready_machine(&emulators.moto).len();
        let env: Vec<(&str, &str)> = AWS_ENV
            .iter()
            .copied()
            .chain([("FERRY_ENV", "prod")])
            .collect();
        let run = ferry_in(
            dir.path(),
            &["run", "dashboard_daily", "--date", "2026-11-28"],
            &env,
        );
        assert!(
            run.status.success(),
            "{kind}: {}{}",
            stdout(&run),
            stderr(&run)
        );
        let rows = sql_column(
            &url,
            "SELECT CONCAT(school_id, '|', grade, '|', class_id, '|', day, '|', active_students, '|', sessions, '|', minutes, '|', answers, '|', points) FROM dashboard_class_daily ORDER BY school_id, grade, class_id",
        );
        assert_eq!(rows, expected, "{kind}: the application's rows, one by one");
        // The application was told once, after the publish, about that day.
        let executions = ready_machine(&emulators.moto);
        assert_eq!(
            executions.len(),
            executions_before + 1,
            "{kind}: {executions:?}"
        );
        let shown: Value = serde_json::from_str(&stdout(&ferry_in(
            dir.path(),
            &["runs", "show", "dashboard_daily__", "--format", "json"],
            &env,
        )))
        .expect("JSON");
        let notified = task(&shown, "notify_app");
        assert_eq!(notified["state"], "success", "{kind}: {notified}");
        let execution = executions
            .iter()
            .find(|e| e["executionArn"] == notified["external_job_id"])
            .unwrap_or_else(|| panic!("{kind}: the recorded execution in {executions:?}"));
        assert_eq!(execution["status"], "SUCCEEDED", "{kind}: {execution}");
        let described = aws_in(
            &emulators.moto,
            "ap-northeast-1",
            "states",
            "AWSStepFunctions.DescribeExecution",
            json!({"executionArn": execution["executionArn"]}),
        );
        let input: Value =
            serde_json::from_str(described["input"].as_str().expect("input")).expect("JSON");
        assert_eq!(
            input,
            json!({"day": "2026-11-28", "table": "dashboard_class_daily"}),
            "{kind}"
        );
        // A plan of the same day finds nothing to change: the diff holds across runs.
        let plan = ferry_in(
            dir.path(),
            &[
                "sync",
                "plan",
                "dashboard_daily",
                "publish",
                "--date",
                "2026-11-28",
            ],
            &env,
        );
        assert!(
            stdout(&plan).contains(
                "120 row(s) read; it would insert 0, update 0, delete 0, leave 120 unchanged and reject 0"
            ),
            "{kind}: {}{}",
            stdout(&plan),
            stderr(&plan)
        );
        // The store is PostgreSQL: the run is there for on-call.
        let runs = stdout(&ferry_in(
            dir.path(),
            &["runs", "list", "--format", "json"],
            &env,
        ));
        assert!(
            runs.contains("\"state\": \"success\"") || runs.contains("\"state\":\"success\""),
            "{runs}"
        );
    }
}
