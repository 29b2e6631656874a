//! Issue 10: the HTTP API of `ferry serve`, through real HTTP.

use std::time::Duration;

use crate::util::{ferry_in, project, spawn_ferry_logged, stderr, wait_until};

/// The token the test calls with (the configuration knows it by its SHA-256 only).
const TOKEN: &str = "oncall-token-7f3a";
/// Another configured token's hash (of a token the test never sends).
const OTHER_SHA256: &str =
    "sha256:6b3d0b1b0a8fae5b2e3f8a9f54bb1bb6a0e3a4e7b2f0a6d8c1e9d3b5a7c2f4e1";

/// One answer: status, content type, body and headers.
struct Answer {
    status: u16,
    content_type: String,
    body: serde_json::Value,
    headers: reqwest::header::HeaderMap,
}

fn get(base: &str, path: &str, token: Option<&str>) -> Answer {
    call("GET", base, path, token, None)
}

/// `method` on `path` with `token` and, if given, a JSON `body`.
fn call(method: &str, base: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Answer {
    call_with(method, base, path, token, body, &[])
}

/// [`call`] with extra request headers.
fn call_with(
    method: &str,
    base: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> Answer {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
            let mut request = reqwest::Client::new().request(method, format!("{base}{path}"));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            if let Some(body) = body {
                request = request
                    .header("content-type", "application/json")
                    .body(body.to_string());
            }
            let response = request.send().await.expect("the API answers");
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let headers = response.headers().clone();
            let body = response.json().await.unwrap_or(serde_json::Value::Null);
            Answer {
                status,
                content_type,
                body,
                headers,
            }
        })
}

/// `sha256:` and the SHA-256 of `token` in hex, by the system's `sha256sum` (as the docs
/// tell users to make it).
fn sha256(token: &str) -> String {
    use std::io::Write as _;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(token.as_bytes())
        .expect("written");
    let out = child.wait_with_output().expect("sha256sum ends");
    format!(
        "sha256:{}",
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .expect("a digest")
    )
}

/// `ferry serve` in `dir` (its output in `serve.log`), and the API's base URL it printed.
fn serve(dir: &std::path::Path) -> (crate::util::Spawned, String) {
    let serve = spawn_ferry_logged(dir, &["serve"]);
    let log = dir.join("serve.log");
    let address = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.split("the HTTP API answers on ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_string)
    };
    wait_until(Duration::from_secs(20), || address().is_some());
    let base = address().expect("the address is printed");
    (serve, base)
}

#[test]
fn issue10_serve_answers_run_state_to_a_configured_token_only() {
    let dir = project(&[(
        "nightly.yaml",
        "tasks:\n  - {id: extract, type: command, command: 'echo extracted'}\n  - {id: publish, type: noop, depends_on: [extract]}\n",
    )]);
    let hash = sha256(TOKEN);
    let config = dir.path().join("ferry.toml");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str(&format!(
        "[api.tokens.oncall]\nhash = \"{hash}\"\nrole = \"viewer\"\n[api.tokens.other]\nhash = \"{OTHER_SHA256}\"\nrole = \"admin\"\n"
    ));
    std::fs::write(&config, text).expect("config written");
    let ran = ferry_in(dir.path(), &["run", "nightly"], &[]);
    assert!(ran.status.success(), "{}", stderr(&ran));

    let (serve, base) = serve(dir.path());
    let log = dir.path().join("serve.log");
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");

    // No token needed for the health check and the document.
    let health = get(&base, "/health", None);
    assert_eq!(
        (health.status, health.body["status"].as_str()),
        (200, Some("ok"))
    );
    let document = get(&base, "/api/v1/openapi.json", None);
    assert_eq!(document.status, 200);
    for path in [
        "/health",
        "/api/v1/runs",
        "/api/v1/runs/{run_id}",
        "/api/v1/openapi.json",
    ] {
        assert!(
            document.body["paths"].get(path).is_some(),
            "{path} missing from the document"
        );
    }

    // Without a token, with a wrong one, or with the hash itself: 401 as problem+json.
    for token in [
        None,
        Some("wrong"),
        Some(hash.as_str()),
        Some(&hash["sha256:".len()..]),
    ] {
        let answer = get(&base, "/api/v1/runs", token);
        assert_eq!(answer.status, 401, "{token:?}: {}", answer.body);
        assert_eq!(answer.content_type, "application/problem+json");
        assert_eq!(answer.body["status"], 401);
        assert!(
            answer.body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("[api.tokens]")),
            "{}",
            answer.body
        );
    }

    // The run, with its tasks.
    let runs = get(&base, "/api/v1/runs?dag_id=nightly", Some(TOKEN));
    assert_eq!(runs.status, 200, "{}", runs.body);
    let listed = runs.body["runs"].as_array().expect("a list");
    assert_eq!(listed.len(), 1, "{}", runs.body);
    assert_eq!(listed[0]["state"], "success");
    let run_id = listed[0]["run_id"].as_str().expect("a run id");
    let detail = get(&base, &format!("/api/v1/runs/{run_id}"), Some(TOKEN));
    assert_eq!(detail.status, 200, "{}", detail.body);
    assert_eq!(detail.body["dag_id"], "nightly");
    let tasks: Vec<(&str, &str)> = detail.body["task_instances"]
        .as_array()
        .expect("task instances")
        .iter()
        .map(|t| {
            (
                t["task_id"].as_str().unwrap_or_default(),
                t["state"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(tasks, [("extract", "success"), ("publish", "success")]);
    let none = get(&base, "/api/v1/runs?dag_id=other", Some(TOKEN));
    assert_eq!(none.body["runs"].as_array().map(Vec::len), Some(0));

    // Unknown ids are 404, bad parameters 422 naming the field, unknown routes 404.
    let missing = get(&base, "/api/v1/runs/manual__nope", Some(TOKEN));
    assert_eq!(missing.status, 404);
    assert_eq!(missing.content_type, "application/problem+json");
    let bad_state = get(&base, "/api/v1/runs?state=broken", Some(TOKEN));
    assert_eq!(bad_state.status, 422);
    assert!(
        bad_state.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("state: unknown variant `broken`")),
        "{}",
        bad_state.body
    );
    let bad_limit = get(&base, "/api/v1/runs?limit=0", Some(TOKEN));
    assert_eq!(bad_limit.status, 422);
    assert!(
        bad_limit.body["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("`limit`"))
    );
    let not_a_number = get(&base, "/api/v1/runs?limit=ten", Some(TOKEN));
    assert_eq!(not_a_number.status, 422, "{}", not_a_number.body);
    assert!(
        not_a_number.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("limit"))
    );
    assert_eq!(get(&base, "/api/v2/nothing", Some(TOKEN)).status, 404);

    // The token never appears in what the daemon printed.
    crate::util::nix_kill(&serve, "TERM");
    let output = serve.wait_with_output().expect("serve exits");
    assert!(output.status.success(), "{output:?}");
    let printed = std::fs::read_to_string(&log).expect("log");
    assert!(!printed.contains(TOKEN), "{printed}");
    assert!(printed.contains("ferry: stopped"), "{printed}");
}

#[test]
fn issue10_an_operator_token_reruns_marks_and_pauses_a_viewer_token_cannot() {
    let flag = tempfile::tempdir().expect("flag dir");
    let ready = flag.path().join("ready");
    let dag = format!(
        "tasks:\n  - {{id: load, type: command, command: 'test -f {ready}'}}\n  - {{id: publish, type: noop, depends_on: [load]}}\n  - {{id: audit, type: noop}}\n",
        ready = ready.display()
    );
    let dir = project(&[("nightly.yaml", &dag)]);
    let config = dir.path().join("ferry.toml");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str(&format!(
        "[api.tokens.dashboards]\nhash = \"{}\"\nrole = \"viewer\"\n[api.tokens.oncall]\nhash = \"{}\"\nrole = \"operator\"\n",
        sha256("viewer-token"),
        sha256("operator-token")
    ));
    std::fs::write(&config, text).expect("config written");
    let ran = ferry_in(dir.path(), &["run", "nightly"], &[]);
    assert!(!ran.status.success(), "the load fails: {}", stderr(&ran));
    let (serve, base) = serve(dir.path());
    let runs = get(
        &base,
        "/api/v1/runs?dag_id=nightly&state=failed",
        Some("viewer-token"),
    );
    let run_id = runs.body["runs"][0]["run_id"]
        .as_str()
        .expect("the failed run")
        .to_string();
    let rerun = format!("/api/v1/runs/{run_id}/rerun-failed");

    // Reading is not enough to act; no token at all is not either.
    let refused = call("POST", &base, &rerun, Some("viewer-token"), None);
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        refused.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("`dashboards` has the role viewer")),
        "{}",
        refused.body
    );
    assert_eq!(call("POST", &base, &rerun, None, None).status, 401);

    // A bare clear is a dry run of the failed tasks: it lists them and changes nothing.
    let clear = format!("/api/v1/runs/{run_id}/clear");
    let dry = call("POST", &base, &clear, Some("operator-token"), None);
    assert_eq!(dry.status, 200, "{}", dry.body);
    assert_eq!(dry.body["dry_run"], true);
    let planned: Vec<&str> = dry.body["plan"]["tasks"]
        .as_array()
        .expect("planned tasks")
        .iter()
        .filter_map(|t| t["task_id"].as_str())
        .collect();
    assert_eq!(planned, ["load", "publish"], "{}", dry.body);
    let still = get(
        &base,
        &format!("/api/v1/runs/{run_id}"),
        Some("viewer-token"),
    );
    assert_eq!(still.body["state"], "failed");
    let bad = call(
        "POST",
        &base,
        &clear,
        Some("operator-token"),
        Some(r#"{"dry_run": "no"}"#),
    );
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert!(
        bad.body["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("`dry_run`: invalid type")),
        "{}",
        bad.body
    );
    let wrong_method = call("GET", &base, &clear, Some("operator-token"), None);
    assert_eq!(
        (wrong_method.status, wrong_method.content_type.as_str()),
        (405, "application/problem+json")
    );
    let huge = format!("{{\"reason\": \"{}\"}}", "x".repeat(3 << 20));
    let too_big = call("POST", &base, &clear, Some("operator-token"), Some(&huge));
    assert_eq!(
        (too_big.status, too_big.content_type.as_str()),
        (413, "application/problem+json")
    );
    let unknown_field = call(
        "POST",
        &base,
        &clear,
        Some("operator-token"),
        Some(r#"{"tasks": ["load"]}"#),
    );
    assert_eq!(unknown_field.status, 422);
    assert!(
        unknown_field.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("`tasks`")),
        "{}",
        unknown_field.body
    );

    // One call reruns every failed task and what depends on them; the run then succeeds.
    std::fs::write(&ready, "").expect("the load's input arrives");
    let done = call(
        "POST",
        &base,
        &rerun,
        Some("operator-token"),
        Some(r#"{"reason": "input arrived"}"#),
    );
    assert_eq!(done.status, 200, "{}", done.body);
    let mut cleared: Vec<&str> = done.body["report"]["cleared"]
        .as_array()
        .expect("cleared tasks")
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    cleared.sort_unstable();
    assert_eq!(cleared, ["load", "publish"], "{}", done.body);
    wait_until(Duration::from_secs(30), || {
        get(
            &base,
            &format!("/api/v1/runs/{run_id}"),
            Some("viewer-token"),
        )
        .body["state"]
            == "success"
    });
    let again = call("POST", &base, &rerun, Some("operator-token"), None);
    assert_eq!(again.status, 200);
    assert_eq!(
        again.body["cleared"].as_array().map(Vec::len),
        Some(0),
        "{}",
        again.body
    );

    // Marking: a bad state is 422, an unknown task or run 404, a good one is done.
    let mark = |task: &str, body: &str| {
        call(
            "POST",
            &base,
            &format!("/api/v1/runs/{run_id}/tasks/{task}/mark"),
            Some("operator-token"),
            Some(body),
        )
    };
    assert_eq!(mark("audit", r#"{"state": "bogus"}"#).status, 422);
    assert_eq!(mark("nope", r#"{"state": "failed"}"#).status, 404);
    assert_eq!(mark("audit", r#"{}"#).status, 422);
    let marked = mark(
        "audit",
        r#"{"state": "failed", "reason": "audit found a gap"}"#,
    );
    assert_eq!(marked.status, 200, "{}", marked.body);
    let missing_run = call(
        "POST",
        &base,
        "/api/v1/runs/manual__nope/rerun-failed",
        Some("operator-token"),
        None,
    );
    assert_eq!(missing_run.status, 404);

    // Pausing.
    let pause = |body: &str| {
        call(
            "PATCH",
            &base,
            "/api/v1/dags/nightly",
            Some("operator-token"),
            Some(body),
        )
    };
    let paused = pause(r#"{"is_paused": true, "reason": "maintenance"}"#);
    assert_eq!(
        (paused.status, &paused.body["changed"]),
        (200, &serde_json::json!(true)),
        "{}",
        paused.body
    );
    assert_eq!(pause(r#"{"is_paused": true}"#).body["changed"], false);
    let bad_pause = pause(r#"{"is_paused": "yes"}"#);
    assert_eq!(bad_pause.status, 422);
    let unknown = call(
        "PATCH",
        &base,
        "/api/v1/dags/other",
        Some("operator-token"),
        Some(r#"{"is_paused": true}"#),
    );
    assert_eq!(unknown.status, 404);
    assert_eq!(
        call(
            "PATCH",
            &base,
            "/api/v1/dags/nightly",
            Some("viewer-token"),
            Some(r#"{"is_paused": false}"#)
        )
        .status,
        403
    );

    crate::util::nix_kill(&serve, "TERM");
    let output = serve.wait_with_output().expect("serve exits");
    assert!(output.status.success(), "{output:?}");
    // Every write is in the event log with the token's name and the reason.
    let shown = ferry_in(dir.path(), &["runs", "show", &run_id], &[]);
    let shown = crate::util::stdout(&shown);
    assert!(shown.contains("api token oncall"), "{shown}");
    assert!(
        shown.contains("input arrived") && shown.contains("audit found a gap"),
        "{shown}"
    );
    let listed = crate::util::stdout(&ferry_in(dir.path(), &["dags", "list"], &[]));
    assert!(listed.contains("paused"), "{listed}");
}

#[test]
fn issue10_a_trigger_with_an_idempotency_key_makes_one_run_and_tokens_keep_to_their_trees() {
    let dir = project(&[(
        "nightly.yaml",
        "params:\n  days: {type: integer, default: 7}\ntasks:\n  - {id: build, type: command, command: 'echo built {{ params.days }} days'}\n",
    )]);
    let user_facing = dir.path().join("dags/user-facing");
    std::fs::create_dir_all(&user_facing).expect("user-facing folder");
    std::fs::write(
        user_facing.join("dashboard.yaml"),
        "owner: data-platform\ntags: [dashboard]\nsla: {within: 4h}\nalerts: {on_failure: [log], on_sla_miss: [log]}\ntasks:\n  - {id: publish, type: noop}\n",
    )
    .expect("user-facing DAG");
    std::fs::write(
        dir.path().join("dags/internal/broken.yaml"),
        "tasks:\n  - {id: a, type: comand}\n",
    )
    .expect("broken DAG");
    let config = dir.path().join("ferry.toml");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str(&format!(
        "[api.tokens.ops]\nhash = \"{}\"\nrole = \"operator\"\n[api.tokens.internal-ops]\nhash = \"{}\"\nrole = \"operator\"\ntrees = [\"internal\"]\n",
        sha256("ops-token"),
        sha256("internal-token")
    ));
    std::fs::write(&config, text).expect("config written");
    let (serve, base) = serve(dir.path());
    let ops = Some("ops-token");
    let internal = Some("internal-token");

    // The DAGs loaded, with their trees; the broken file is reported, not lost.
    let dags = get(&base, "/api/v1/dags", ops);
    assert_eq!(dags.status, 200, "{}", dags.body);
    let listed: Vec<(&str, &str)> = dags.body["dags"]
        .as_array()
        .expect("DAGs")
        .iter()
        .map(|d| {
            (
                d["dag_id"].as_str().unwrap_or(""),
                d["tree"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [("dashboard", "user-facing"), ("nightly", "internal")]
    );
    let errors = dags.body["load_errors"].as_array().expect("load errors");
    assert!(
        errors.iter().any(|e| e["file"]
            .as_str()
            .is_some_and(|f| f.ends_with("broken.yaml"))
            && e["line"] == 2),
        "{}",
        dags.body
    );
    let scoped = get(&base, "/api/v1/dags", internal);
    assert_eq!(
        scoped.body["dags"].as_array().map(|d| d.len()),
        Some(1),
        "{}",
        scoped.body
    );
    let detail = get(&base, "/api/v1/dags/nightly", ops);
    assert_eq!(detail.status, 200, "{}", detail.body);
    assert_eq!(detail.body["tasks"][0]["task_type"], "command");
    assert_eq!(detail.body["params"]["days"]["default"], 7);
    assert_eq!(get(&base, "/api/v1/dags/dashboard", internal).status, 403);
    assert_eq!(get(&base, "/api/v1/dags/nope", ops).status, 404);

    // A trigger with a key makes one run; the same request again returns it.
    let trigger = |token: Option<&str>, dag: &str, body: &str, key: Option<&str>| {
        let headers: Vec<(&str, &str)> = key.map(|k| ("Idempotency-Key", k)).into_iter().collect();
        call_with(
            "POST",
            &base,
            &format!("/api/v1/dags/{dag}/runs"),
            token,
            Some(body),
            &headers,
        )
    };
    let body = r#"{"logical_date": "2026-11-24", "conf": {"days": 3}, "reason": "late data"}"#;
    let first = trigger(ops, "nightly", body, Some("k-1"));
    assert_eq!(first.status, 201, "{}", first.body);
    let run_id = first.body["run_id"].as_str().expect("run id").to_string();
    assert_eq!(run_id, "nightly__manual__2026-11-24T00:00:00+00:00");
    assert_eq!(first.body["conf"]["days"], 3);
    let again = trigger(ops, "nightly", body, Some("k-1"));
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["run_id"], run_id.as_str());
    assert_eq!(
        again
            .headers
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let reused = trigger(
        ops,
        "nightly",
        r#"{"logical_date": "2026-11-25"}"#,
        Some("k-1"),
    );
    assert_eq!(reused.status, 409, "{}", reused.body);
    let twice = trigger(ops, "nightly", body, None);
    assert_eq!(twice.status, 409, "{}", twice.body);
    assert!(
        twice.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&run_id)),
        "{}",
        twice.body
    );
    let bad = trigger(ops, "nightly", r#"{"conf": {"days": "three"}}"#, None);
    assert_eq!(bad.status, 422);
    assert!(
        bad.body["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("`conf`: parameter `days`")),
        "{}",
        bad.body
    );
    assert_eq!(trigger(ops, "nope", "{}", None).status, 404);
    assert_eq!(trigger(internal, "dashboard", "{}", None).status, 403);

    // Eight clients race with one key: one run, and every client gets it.
    let raced: Vec<Answer> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| trigger(ops, "nightly", "{}", Some("k-race"))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a client"))
            .collect()
    });
    let ids: std::collections::BTreeSet<&str> = raced
        .iter()
        .filter_map(|a| a.body["run_id"].as_str())
        .collect();
    assert_eq!(
        ids.len(),
        1,
        "{:?}",
        raced.iter().map(|a| &a.body).collect::<Vec<_>>()
    );
    assert_eq!(raced.iter().filter(|a| a.status == 201).count(), 1);
    assert!(raced.iter().all(|a| a.status == 201 || a.status == 200));

    // The engine runs what was triggered, with its parameters.
    wait_until(Duration::from_secs(30), || {
        get(&base, &format!("/api/v1/runs/{run_id}"), ops).body["state"] == "success"
    });
    let shown = ferry_in(dir.path(), &["runs", "show", &run_id], &[]);
    let shown_text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown_text.contains("api token ops"), "{shown_text}");
    let logs = ferry_in(dir.path(), &["logs", &run_id, "build"], &[]);
    assert!(String::from_utf8_lossy(&logs.stdout).contains("built 3 days"));

    // Pages of runs, newest first, by cursor and by date.
    for day in ["2026-11-20", "2026-11-21", "2026-11-22"] {
        let made = trigger(
            ops,
            "nightly",
            &format!(r#"{{"logical_date": "{day}"}}"#),
            None,
        );
        assert_eq!(made.status, 201, "{}", made.body);
    }
    let dashboard = trigger(ops, "dashboard", "{}", None);
    assert_eq!(dashboard.status, 201, "{}", dashboard.body);
    let mut seen = Vec::new();
    let mut path = "/api/v1/runs?dag_id=nightly&limit=2".to_string();
    loop {
        let page = get(&base, &path, ops);
        assert_eq!(page.status, 200, "{}", page.body);
        seen.extend(
            page.body["runs"]
                .as_array()
                .expect("runs")
                .iter()
                .map(|r| r["logical_date"].as_str().unwrap_or("").to_string()),
        );
        match page.body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/runs?dag_id=nightly&limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0] > w[1]), "{seen:?}");
    let dated = get(
        &base,
        "/api/v1/runs?dag_id=nightly&logical_date_gte=2026-11-21&logical_date_lt=2026-11-24",
        ops,
    );
    let dates: Vec<&str> = dated.body["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .filter_map(|r| r["logical_date"].as_str())
        .collect();
    assert_eq!(
        dates,
        ["2026-11-22T00:00:00.000Z", "2026-11-21T00:00:00.000Z"]
    );
    assert_eq!(get(&base, "/api/v1/runs?cursor=zzz", ops).status, 422);
    assert_eq!(
        get(&base, "/api/v1/runs?logical_date_gte=yesterday", ops).status,
        422
    );

    // A token limited to internal DAGs sees only their runs, and not the others' runs.
    let all = get(&base, "/api/v1/runs?limit=1000", ops);
    let scoped = get(&base, "/api/v1/runs?limit=1000", internal);
    let count = |a: &Answer| a.body["runs"].as_array().map_or(0, Vec::len);
    assert_eq!(count(&all), count(&scoped) + 1);
    let dashboard_run = dashboard.body["run_id"].as_str().expect("dashboard run");
    assert_eq!(
        get(&base, &format!("/api/v1/runs/{dashboard_run}"), internal).status,
        403
    );
    assert_eq!(
        call(
            "POST",
            &base,
            &format!("/api/v1/runs/{dashboard_run}/rerun-failed"),
            internal,
            None
        )
        .status,
        403
    );
    drop(serve);
}

/// Reads `path` as a stream until `done` says the text read so far is enough (or 30 s pass).
fn read_stream(
    base: &str,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
    done: impl Fn(&str) -> bool,
) -> String {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let mut request = reqwest::Client::new()
                .get(format!("{base}{path}"))
                .bearer_auth(token);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let mut response = request.send().await.expect("the API answers");
            assert_eq!(response.status().as_u16(), 200, "{path}");
            let mut text = String::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while !done(&text) {
                match tokio::time::timeout_at(deadline, response.chunk()).await {
                    Ok(Ok(Some(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
                    Ok(Ok(None)) => break,
                    Ok(Err(error)) => panic!("{path}: {error}"),
                    Err(_) => panic!("{path}: still waiting after 30 s; read: {text}"),
                }
            }
            text
        })
}

#[test]
fn issue10_a_running_tasks_log_is_followed_and_events_stream_as_they_happen() {
    let flag = tempfile::tempdir().expect("flag dir");
    let go = flag.path().join("go");
    let dag = format!(
        "tasks:\n  - {{id: load, type: command, command: 'echo first; while test ! -f {go}; do sleep 0.1; done; echo second; echo third'}}\n  - {{id: publish, type: noop, depends_on: [load]}}\n",
        go = go.display()
    );
    let dir = project(&[("nightly.yaml", &dag)]);
    let config = dir.path().join("ferry.toml");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str(&format!(
        "[api.tokens.ops]\nhash = \"{}\"\nrole = \"operator\"\n",
        sha256("ops-token")
    ));
    std::fs::write(&config, text).expect("config written");
    let (serve, base) = serve(dir.path());
    let ops = Some("ops-token");

    // The stream starts now: it sends what happens from here on.
    let stream_base = base.clone();
    let events = std::thread::spawn(move || {
        read_stream(
            &stream_base,
            "/api/v1/events/stream",
            "ops-token",
            &[],
            |text| {
                // The run's own success ends the story.
                text.lines().any(|l| {
                    l.starts_with("data:")
                        && l.contains("\"task_id\":null")
                        && l.contains("\"to_state\":\"success\"")
                })
            },
        )
    });
    std::thread::sleep(Duration::from_millis(700));
    let made = call("POST", &base, "/api/v1/dags/nightly/runs", ops, None);
    assert_eq!(made.status, 201, "{}", made.body);
    let run_id = made.body["run_id"].as_str().expect("run id").to_string();
    let logs = format!("/api/v1/runs/{run_id}/tasks/load/logs");
    wait_until(Duration::from_secs(20), || {
        call("GET", &base, &logs, ops, None).status == 200
    });
    let running = get(&base, &format!("/api/v1/runs/{run_id}/tasks/load"), ops);
    assert_eq!(running.body["state"], "running", "{}", running.body);
    assert_eq!(
        running.body["attempts"][0]["ended_at"],
        serde_json::Value::Null
    );

    // Followed while it runs: what it wrote, then what comes, then its end.
    let follow_base = base.clone();
    let follow_path = format!("{logs}?follow=true");
    let followed = std::thread::spawn(move || {
        read_stream(&follow_base, &follow_path, "ops-token", &[], |text| {
            text.contains("# ended:")
        })
    });
    std::thread::sleep(Duration::from_millis(600));
    std::fs::write(&go, "").expect("the task may go on");
    let followed = followed.join().expect("followed");
    assert!(
        followed.starts_with("first\n") && followed.contains("second\nthird\n"),
        "{followed}"
    );
    assert!(followed.ends_with("# ended: success\n"), "{followed}");

    // Ended: the tail, a range from an offset, and the attempt in the task's detail.
    wait_until(Duration::from_secs(20), || {
        get(&base, &format!("/api/v1/runs/{run_id}"), ops).body["state"] == "success"
    });
    let raw = |path: &str| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async {
                let response = reqwest::Client::new()
                    .get(format!("{base}{path}"))
                    .bearer_auth("ops-token")
                    .send()
                    .await
                    .expect("answer");
                let offset = response
                    .headers()
                    .get("x-ferry-log-offset")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                (response.text().await.expect("text"), offset)
            })
    };
    assert_eq!(raw(&format!("{logs}?tail=2")).0, "second\nthird\n");
    let (all, offset) = raw(&logs);
    assert_eq!(all, "first\nsecond\nthird\n");
    assert_eq!(offset.as_deref(), Some("19"));
    assert_eq!(raw(&format!("{logs}?offset=6")).0, "second\nthird\n");
    assert_eq!(raw(&format!("{logs}?offset=19")).0, "");
    assert_eq!(raw(&format!("{logs}?offset=6&tail=1")).0, "third\n");
    assert_eq!(
        call("GET", &base, &format!("{logs}?tail=-1"), ops, None).status,
        422
    );
    assert_eq!(
        call("GET", &base, &format!("{logs}?try_number=2"), ops, None).status,
        404
    );
    let detail = get(&base, &format!("/api/v1/runs/{run_id}/tasks/load"), ops);
    assert_eq!(
        detail.body["attempts"][0]["outcome"], "success",
        "{}",
        detail.body
    );
    assert_eq!(
        get(&base, &format!("/api/v1/runs/{run_id}/tasks/lod"), ops).status,
        404
    );

    // The run's event log, the system's, and the stream all tell the same story.
    let of_run = get(&base, &format!("/api/v1/runs/{run_id}/events"), ops);
    let states: Vec<(Option<&str>, &str)> = of_run.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| (e["task_id"].as_str(), e["to_state"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(states.first(), Some(&(None, "queued")));
    assert_eq!(states.last(), Some(&(None, "success")));
    assert!(states.contains(&(Some("load"), "running")), "{states:?}");
    assert_eq!(of_run.body["events"][0]["actor"], "api token ops");
    let page = get(&base, "/api/v1/events?limit=2", ops);
    assert_eq!(page.body["events"].as_array().map(Vec::len), Some(2));
    let next = page.body["next_after"].as_i64().expect("next_after");
    let rest = get(
        &base,
        &format!("/api/v1/events?after={next}&limit=1000"),
        ops,
    );
    assert_eq!(
        2 + rest.body["events"].as_array().map_or(0, Vec::len),
        states.len()
    );
    let streamed = events.join().expect("stream");
    let ids: Vec<i64> = streamed
        .lines()
        .filter_map(|l| l.strip_prefix("id:"))
        .filter_map(|id| id.trim().parse().ok())
        .collect();
    assert_eq!(ids.len(), states.len(), "{streamed}");
    assert!(
        streamed.contains("event: task") || streamed.contains("event:task"),
        "{streamed}"
    );
    // Resumed after the third event: the rest, and only the rest.
    let third = ids[2].to_string();
    let resumed = read_stream(
        &base,
        "/api/v1/events/stream",
        "ops-token",
        &[("Last-Event-ID", &third)],
        |text| text.lines().filter(|l| l.starts_with("id:")).count() >= ids.len() - 3,
    );
    let resumed_ids: Vec<i64> = resumed
        .lines()
        .filter_map(|l| l.strip_prefix("id:"))
        .filter_map(|id| id.trim().parse().ok())
        .collect();
    assert_eq!(resumed_ids, ids[3..]);

    // Prometheus metrics, without a token.
    let metrics = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            reqwest::get(format!("{base}/metrics"))
                .await
                .expect("answer")
                .text()
                .await
                .expect("text")
        });
    for line in [
        "ferry_dag_runs{state=\"success\"} 1",
        "ferry_dag_runs{state=\"failed\"} 0",
        "ferry_task_instances{state=\"success\"} 2",
        "ferry_queue_depth 0",
        "ferry_pool_slots{pool=\"default\"} 16",
        "ferry_pool_slots_in_use{pool=\"default\"} 0",
        "ferry_dag_load_errors 0",
        "ferry_task_duration_seconds_count{dag_id=\"nightly\",outcome=\"success\"} 2",
        "ferry_api_request_duration_seconds_count{route=\"/api/v1/dags/{dag_id}/runs\",method=\"POST\",status=\"201\"} 1",
        "# TYPE ferry_scheduler_loop_lag_seconds gauge",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "`{line}` is not in:\n{metrics}"
        );
    }
    drop(serve);
}

#[test]
fn issue10_a_fresh_data_directory_gets_an_admin_token_that_only_its_owner_reads() {
    let dir = project(&[("nightly.yaml", "tasks:\n  - {id: build, type: noop}\n")]);
    let (serve_first, base) = serve(dir.path());
    let log = dir.path().join("serve.log");
    let token_file = dir.path().join(".ferry/api-token");
    let token = std::fs::read_to_string(&token_file).expect("the token is kept");
    let token = token.trim();
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&token_file)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // `ferry trigger` finds the daemon and its token by itself, and waits for the run.
    let waited = ferry_in(
        dir.path(),
        &["trigger", "nightly", "--date", "2026-11-20", "--wait"],
        &[],
    );
    assert!(waited.status.success(), "{}", stderr(&waited));
    let printed = String::from_utf8_lossy(&waited.stdout);
    assert!(
        printed.contains("build")
            && printed
                .trim_end()
                .ends_with("nightly__manual__2026-11-20T00:00:00+00:00 success"),
        "{printed}"
    );
    let keyed = |key: &str| {
        let out = ferry_in(
            dir.path(),
            &[
                "trigger",
                "nightly",
                "--idempotency-key",
                key,
                "--format",
                "json",
            ],
            &[],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("JSON")["run_id"].clone()
    };
    assert_eq!(keyed("once"), keyed("once"));
    let unknown = ferry_in(
        dir.path(),
        &["trigger", "nightly", "--param", "dayz=1"],
        &[],
    );
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("has no parameter `dayz`")
            && stderr(&unknown).contains("HTTP 422"),
        "{}",
        stderr(&unknown)
    );
    let wrong = ferry_in(
        dir.path(),
        &["trigger", "nightly"],
        &[("FERRY_TOKEN", "wrong")],
    );
    assert!(stderr(&wrong).contains("HTTP 401"), "{}", stderr(&wrong));

    // Never open: no token is still 401; the kept one is an admin's.
    assert_eq!(get(&base, "/api/v1/dags", None).status, 401);
    let made = call(
        "POST",
        &base,
        "/api/v1/dags/nightly/runs",
        Some(token),
        None,
    );
    assert_eq!(made.status, 201, "{}", made.body);
    crate::util::nix_kill(&serve_first, "TERM");
    let first = serve_first.wait_with_output().expect("serve exits");
    assert!(first.status.success(), "{first:?}");
    let printed = std::fs::read_to_string(&log).expect("log");
    assert!(
        printed.contains("made the admin token `local-admin`"),
        "{printed}"
    );
    assert!(
        !printed.contains(token),
        "the token itself is never printed: {printed}"
    );

    let stopped = ferry_in(dir.path(), &["trigger", "nightly"], &[]);
    assert!(
        stderr(&stopped).contains("no daemon serves"),
        "{}",
        stderr(&stopped)
    );

    // The next start uses the same token.
    let (serve_again, base) = serve(dir.path());
    assert_eq!(get(&base, "/api/v1/dags", Some(token)).status, 200);
    let printed = std::fs::read_to_string(&log).expect("log");
    assert!(
        printed.contains("using the admin token `local-admin`"),
        "{printed}"
    );
    let shown = ferry_in(
        dir.path(),
        &[
            "runs",
            "show",
            made.body["run_id"].as_str().expect("run id"),
        ],
        &[],
    );
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains("api token local-admin"),
        "{}",
        String::from_utf8_lossy(&shown.stdout)
    );
    drop(serve_again);
}

#[test]
fn issue10_cancel_stops_a_running_run_and_ends_it_failed() {
    let flag = tempfile::tempdir().expect("flag dir");
    let pid = flag.path().join("pid");
    let dag = format!(
        "tasks:\n  - {{id: load, type: command, command: 'echo $$ > {pid}; exec sleep 300'}}\n  - {{id: publish, type: noop, depends_on: [load]}}\n",
        pid = pid.display()
    );
    let dir = project(&[("nightly.yaml", &dag)]);
    let config = dir.path().join("ferry.toml");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str(&format!(
        "[api.tokens.ops]\nhash = \"{}\"\nrole = \"operator\"\n",
        sha256("ops-token")
    ));
    std::fs::write(&config, text).expect("config written");
    let (serve, base) = serve(dir.path());
    let ops = Some("ops-token");
    let made = call("POST", &base, "/api/v1/dags/nightly/runs", ops, None);
    assert_eq!(made.status, 201, "{}", made.body);
    let run_id = made.body["run_id"].as_str().expect("run id").to_string();
    wait_until(Duration::from_secs(20), || {
        std::fs::read_to_string(&pid).is_ok_and(|p| p.ends_with('\n'))
    });
    let sleeping: u32 = std::fs::read_to_string(&pid)
        .expect("pid")
        .trim()
        .parse()
        .expect("a pid");
    let cancel = format!("/api/v1/runs/{run_id}/cancel");
    let cancelled = call(
        "POST",
        &base,
        &cancel,
        ops,
        Some(r#"{"reason": "wrong input"}"#),
    );
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    assert_eq!(
        cancelled.body["tasks"],
        serde_json::json!({"load": "failed", "publish": "skipped"})
    );
    let run = get(&base, &format!("/api/v1/runs/{run_id}"), ops);
    assert_eq!(run.body["state"], "failed", "{}", run.body);
    // The command itself is stopped, and the attempt closed.
    wait_until(Duration::from_secs(30), || {
        !std::path::Path::new(&format!("/proc/{sleeping}")).exists()
    });
    wait_until(Duration::from_secs(30), || {
        get(&base, &format!("/api/v1/runs/{run_id}/tasks/load"), ops).body["attempts"][0]
            ["ended_at"]
            .is_string()
    });
    let again = call("POST", &base, &cancel, ops, None);
    assert_eq!(again.status, 409, "{}", again.body);
    let events = get(&base, &format!("/api/v1/runs/{run_id}/events"), ops);
    assert!(
        events.body["events"]
            .as_array()
            .expect("events")
            .iter()
            .any(|e| {
                e["task_id"].is_null()
                    && e["to_state"] == "failed"
                    && e["actor"] == "api token ops"
                    && e["reason"] == "wrong input"
            }),
        "{}",
        events.body
    );
    // It stays failed: the engine does not take the run up again.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        get(&base, &format!("/api/v1/runs/{run_id}"), ops).body["state"],
        "failed"
    );
    drop(serve);
}

/// The API's test clients from the project's `scripts/api-clients` (which installs them on
/// first use): the pythons with apache-airflow-client 2.x and 3.x, and schemathesis; `None`
/// (with a note) when they cannot be installed and `FERRY_REQUIRE_SERVICES` is not set.
struct Clients {
    airflow2: String,
    airflow3: String,
    schemathesis: String,
}

fn api_clients() -> Option<&'static Clients> {
    static INSTALLED: std::sync::OnceLock<Option<Clients>> = std::sync::OnceLock::new();
    INSTALLED.get_or_init(install_clients).as_ref()
}

fn install_clients() -> Option<Clients> {
    let from_env = |name: &str| std::env::var(name).ok();
    if let (Some(airflow2), Some(airflow3), Some(schemathesis)) = (
        from_env("FERRY_TEST_AIRFLOW2_PYTHON"),
        from_env("FERRY_TEST_AIRFLOW3_PYTHON"),
        from_env("FERRY_TEST_SCHEMATHESIS"),
    ) {
        return Some(Clients {
            airflow2,
            airflow3,
            schemathesis,
        });
    }
    let script = crate::util::repo().join("scripts").join("api-clients");
    let output = std::process::Command::new(&script).arg("install").output();
    let problem = match output {
        Ok(output) if output.status.success() => {
            let text = String::from_utf8_lossy(&output.stdout);
            let value = |name: &str| {
                text.lines()
                    .find_map(|line| line.strip_prefix(&format!("export {name}=")))
                    .map(str::to_string)
            };
            if let (Some(airflow2), Some(airflow3), Some(schemathesis)) = (
                value("FERRY_TEST_AIRFLOW2_PYTHON"),
                value("FERRY_TEST_AIRFLOW3_PYTHON"),
                value("FERRY_TEST_SCHEMATHESIS"),
            ) {
                return Some(Clients {
                    airflow2,
                    airflow3,
                    schemathesis,
                });
            }
            format!("scripts/api-clients printed no clients: {text}")
        }
        Ok(output) => format!(
            "scripts/api-clients failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(error) => format!("scripts/api-clients could not run: {error}"),
    };
    assert!(
        std::env::var("FERRY_REQUIRE_SERVICES").as_deref() != Ok("1"),
        "the API's test clients are required: {problem}"
    );
    eprintln!("SKIPPED a test of the API's clients: {problem}");
    None
}

#[test]
fn issue10_scripts_written_for_airflow_2_and_3_work_with_their_official_clients() {
    let Some(clients) = api_clients() else {
        return;
    };
    let flag_dir = tempfile::tempdir().expect("flag dir");
    let flag = flag_dir.path().join("ready");
    let dag = format!(
        "params:\n  days: {{type: integer, default: 7}}\ntasks:\n  - {{id: load, type: command, command: 'test -f {flag}'}}\n  - {{id: publish, type: noop, depends_on: [load]}}\n",
        flag = flag.display()
    );
    let dir = project(&[
        ("nightly.yaml", &dag),
        ("tiny.yaml", "tasks:\n  - {id: only, type: noop}\n"),
    ]);
    let config = dir.path().join("ferry.toml");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str(&format!(
        "[api.tokens.oncall]\nhash = \"{}\"\nrole = \"operator\"\n",
        sha256("airflow-token")
    ));
    std::fs::write(&config, text).expect("config written");
    let (serve, base) = serve(dir.path());
    for (python, script) in [
        (&clients.airflow2, "airflow2_client.py"),
        (&clients.airflow3, "airflow3_client.py"),
    ] {
        let _ = std::fs::remove_file(&flag);
        let out = std::process::Command::new(python)
            .arg(crate::util::repo().join("tests/airflow").join(script))
            .env("FERRY_URL", &base)
            .env("FERRY_TOKEN_NAME", "oncall")
            .env("FERRY_TOKEN", "airflow-token")
            .env("FERRY_FLAG", &flag)
            .output()
            .expect("python runs");
        assert!(
            out.status.success(),
            "{script}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Each flavour's default page: 100 runs in Airflow 2, 50 in Airflow 3.
    let first = chrono::NaiveDate::from_ymd_opt(2026, 9, 1).expect("a date");
    for day in 0..55 {
        let date = first + chrono::Days::new(day);
        let made = call(
            "POST",
            &base,
            "/airflow/api/v1/dags/tiny/dagRuns",
            Some("airflow-token"),
            Some(&format!(r#"{{"logical_date": "{date}T00:00:00+00:00"}}"#)),
        );
        assert_eq!(made.status, 200, "{}", made.body);
    }
    let two = get(
        &base,
        "/airflow/api/v1/dags/tiny/dagRuns",
        Some("airflow-token"),
    );
    let three = get(
        &base,
        "/airflow/api/v2/dags/tiny/dagRuns",
        Some("airflow-token"),
    );
    assert_eq!(two.body["total_entries"], 55, "{}", two.body);
    assert_eq!(two.body["dag_runs"].as_array().map(Vec::len), Some(55));
    assert_eq!(three.body["total_entries"], 55, "{}", three.body);
    assert_eq!(three.body["dag_runs"].as_array().map(Vec::len), Some(50));
    assert_eq!(
        three.body["dag_runs"][0]["logical_date"], "2026-09-01T00:00:00+00:00",
        "oldest first, as Airflow"
    );
    let newest = get(
        &base,
        "/airflow/api/v2/dags/tiny/dagRuns?order_by=-logical_date&limit=1",
        Some("airflow-token"),
    );
    assert_eq!(
        newest.body["dag_runs"][0]["logical_date"],
        "2026-10-25T00:00:00+00:00"
    );
    let missing = get(
        &base,
        "/airflow/api/v2/dags/tiny/dagRuns/nope",
        Some("airflow-token"),
    );
    assert_eq!(
        (missing.status, missing.content_type.as_str()),
        (404, "application/json")
    );
    assert!(missing.body["detail"].is_string(), "{}", missing.body);
    drop(serve);
}

/// The status of `method` on `path` (the body is not read: an event stream never ends).
fn status_of(method: &str, base: &str, path: &str, token: Option<&str>, body: Option<&str>) -> u16 {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
            let mut request = reqwest::Client::new().request(method, format!("{base}{path}"));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            if let Some(body) = body {
                request = request
                    .header("content-type", "application/json")
                    .body(body.to_string());
            }
            request
                .send()
                .await
                .expect("the API answers")
                .status()
                .as_u16()
        })
}

#[test]
fn issue10_every_route_refuses_no_token_the_wrong_role_and_the_wrong_tree() {
    let dir = project(&[("nightly.yaml", "tasks:\n  - {id: publish, type: noop}\n")]);
    let user_facing = dir.path().join("dags/user-facing");
    std::fs::create_dir_all(&user_facing).expect("user-facing folder");
    std::fs::write(
        user_facing.join("dashboard.yaml"),
        "owner: data-platform\ntags: [dashboard]\nsla: {within: 4h}\nalerts: {on_failure: [log], on_sla_miss: [log]}\ntasks:\n  - {id: publish, type: noop}\n",
    )
    .expect("user-facing DAG");
    let config = dir.path().join("ferry.toml");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str(&format!(
        "[api.tokens.viewer]\nhash = \"{}\"\nrole = \"viewer\"\n[api.tokens.internal-ops]\nhash = \"{}\"\nrole = \"operator\"\ntrees = [\"internal\"]\n[api.tokens.ops]\nhash = \"{}\"\nrole = \"operator\"\n",
        sha256("viewer-token"),
        sha256("internal-token"),
        sha256("ops-token")
    ));
    std::fs::write(&config, text).expect("config written");
    let (serve, base) = serve(dir.path());
    let made = call(
        "POST",
        &base,
        "/api/v1/dags/dashboard/runs",
        Some("ops-token"),
        Some(r#"{"logical_date": "2026-01-01"}"#),
    );
    assert_eq!(made.status, 201, "{}", made.body);
    let run = made.body["run_id"].as_str().expect("run id").to_string();
    wait_until(Duration::from_secs(20), || {
        get(&base, &format!("/api/v1/runs/{run}"), Some("ops-token")).body["state"] == "success"
    });

    /// How a route is guarded.
    #[derive(Clone, Copy, PartialEq)]
    enum Guard {
        /// No token needed.
        Open,
        /// Any token; lists what the token may see.
        Read,
        /// Any token that may see the DAG.
        ReadDag,
        /// An operator's token that may touch the DAG.
        Write,
    }
    use Guard::{Open, Read, ReadDag, Write};
    let mut routes: Vec<(Guard, &str, String, Option<String>, u16)> = vec![
        (Open, "GET", "/health".into(), None, 200),
        (Open, "GET", "/metrics".into(), None, 200),
        (Open, "GET", "/api/v1/openapi.json".into(), None, 200),
        (Read, "GET", "/api/v1/dags".into(), None, 200),
        (ReadDag, "GET", "/api/v1/dags/dashboard".into(), None, 200),
        (
            Write,
            "PATCH",
            "/api/v1/dags/dashboard".into(),
            Some(r#"{"is_paused": false}"#.into()),
            200,
        ),
        (
            Write,
            "POST",
            "/api/v1/dags/dashboard/runs".into(),
            Some(r#"{"logical_date": "2026-01-02"}"#.into()),
            201,
        ),
        (Read, "GET", "/api/v1/runs".into(), None, 200),
        (ReadDag, "GET", format!("/api/v1/runs/{run}"), None, 200),
        (
            ReadDag,
            "GET",
            format!("/api/v1/runs/{run}/events"),
            None,
            200,
        ),
        (
            ReadDag,
            "GET",
            format!("/api/v1/runs/{run}/tasks/publish"),
            None,
            200,
        ),
        (
            ReadDag,
            "GET",
            format!("/api/v1/runs/{run}/tasks/publish/logs"),
            None,
            200,
        ),
        (
            Write,
            "POST",
            format!("/api/v1/runs/{run}/clear"),
            None,
            200,
        ),
        (
            Write,
            "POST",
            format!("/api/v1/runs/{run}/rerun-failed"),
            None,
            200,
        ),
        // The run has ended: nothing to cancel (before the mark below reopens it).
        (
            Write,
            "POST",
            format!("/api/v1/runs/{run}/cancel"),
            None,
            409,
        ),
        (
            Write,
            "POST",
            format!("/api/v1/runs/{run}/tasks/publish/mark"),
            Some(r#"{"state": "success"}"#.into()),
            200,
        ),
        (Read, "GET", "/api/v1/events".into(), None, 200),
        (Read, "GET", "/api/v1/events/stream".into(), None, 200),
    ];
    for (version, date) in [("v1", "2026-01-03"), ("v2", "2026-01-04")] {
        let at = format!("/airflow/api/{version}/dags/dashboard");
        routes.extend([
            (ReadDag, "GET", at.clone(), None, 200),
            (
                Write,
                "PATCH",
                at.clone(),
                Some(r#"{"is_paused": false}"#.into()),
                200,
            ),
            (ReadDag, "GET", format!("{at}/dagRuns"), None, 200),
            (
                Write,
                "POST",
                format!("{at}/dagRuns"),
                Some(format!(r#"{{"logical_date": "{date}T00:00:00+00:00"}}"#)),
                200,
            ),
            (ReadDag, "GET", format!("{at}/dagRuns/{run}"), None, 200),
            (
                Write,
                "POST",
                format!("{at}/dagRuns/{run}/clear"),
                Some("{}".into()),
                200,
            ),
            (
                ReadDag,
                "GET",
                format!("{at}/dagRuns/{run}/taskInstances"),
                None,
                200,
            ),
            (
                ReadDag,
                "GET",
                format!("{at}/dagRuns/{run}/taskInstances/publish"),
                None,
                200,
            ),
            (
                Write,
                "PATCH",
                format!("{at}/dagRuns/{run}/taskInstances/publish"),
                Some(r#"{"new_state": "success"}"#.into()),
                200,
            ),
            (
                Write,
                "POST",
                format!("{at}/clearTaskInstances"),
                Some(format!(r#"{{"dag_run_id": "{run}"}}"#)),
                200,
            ),
        ]);
    }
    let mut wrong = Vec::new();
    for (guard, method, path, body, ok) in &routes {
        let body = body.as_deref();
        let expected = [
            (None, if *guard == Open { *ok } else { 401 }),
            (
                Some("viewer-token"),
                if *guard == Write { 403 } else { *ok },
            ),
            (
                Some("internal-token"),
                if matches!(guard, ReadDag | Write) {
                    403
                } else {
                    *ok
                },
            ),
            (Some("ops-token"), *ok),
        ];
        for (token, want) in expected {
            let got = status_of(method, &base, path, token, body);
            if got != want {
                wrong.push(format!(
                    "{method} {path} with {token:?}: {got}, expected {want}"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Every route of the OpenAPI document is in the matrix.
    let document = get(&base, "/api/v1/openapi.json", None);
    for (path, operations) in document.body["paths"].as_object().expect("paths") {
        for method in operations.as_object().expect("operations").keys() {
            let covered = routes.iter().any(|(_, m, p, _, _)| {
                m.eq_ignore_ascii_case(method)
                    && path
                        .split('/')
                        .zip(p.split('?').next().unwrap_or_default().split('/'))
                        .all(|(template, real)| template.starts_with('{') || template == real)
                    && path.split('/').count() == p.split('/').count()
            });
            assert!(covered, "{method} {path} is not in the matrix");
        }
    }
    drop(serve);
}

#[test]
fn issue10_schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    let Some(clients) = api_clients() else {
        return;
    };
    let dir = project(&[(
        "nightly.yaml",
        "params:\n  days: {type: integer, default: 7}\ntasks:\n  - {id: build, type: command, command: 'echo built'}\n",
    )]);
    let config = dir.path().join("ferry.toml");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str(&format!(
        "[api.tokens.admin]\nhash = \"{}\"\nrole = \"admin\"\n",
        sha256("admin-token")
    ));
    std::fs::write(&config, text).expect("config written");
    let (serve, base) = serve(dir.path());
    let made = call(
        "POST",
        &base,
        "/api/v1/dags/nightly/runs",
        Some("admin-token"),
        None,
    );
    assert_eq!(made.status, 201, "{}", made.body);
    // Every route of the document, with the generated data and with data outside it; the
    // event stream never ends, so it is left out.
    let out = std::process::Command::new(&clients.schemathesis)
        .args(["--config-file"])
        .arg(crate::util::repo().join("tests/schemathesis.toml"))
        .args([
            "run",
            &format!("{base}/api/v1/openapi.json"),
            "--header",
            "Authorization: Bearer admin-token",
            "--exclude-path",
            "/api/v1/events/stream",
            "--max-examples",
            "30",
            "--generation-deterministic",
        ])
        .current_dir(dir.path())
        .output()
        .expect("schemathesis runs");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.contains("passed"), "{printed}");
    drop(serve);
}

#[test]
fn issue10_a_rerun_may_go_on_with_the_dag_version_loaded_now() {
    let flag = tempfile::tempdir().expect("flag dir");
    let ready = flag.path().join("ready");
    let first = format!(
        "tasks:\n  - {{id: load, type: command, command: 'test -f {ready}'}}\n  - {{id: publish, type: noop, depends_on: [load]}}\n",
        ready = ready.display()
    );
    let dir = project(&[("nightly.yaml", &first)]);
    let config = dir.path().join("ferry.toml");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str(&format!(
        "[api.tokens.ops]\nhash = \"{}\"\nrole = \"operator\"\n",
        sha256("ops-token")
    ));
    std::fs::write(&config, text).expect("config written");
    let (serve, base) = serve(dir.path());
    let ops = Some("ops-token");
    let made = call("POST", &base, "/api/v1/dags/nightly/runs", ops, None);
    assert_eq!(made.status, 201, "{}", made.body);
    let run = made.body["run_id"].as_str().expect("run id").to_string();
    wait_until(Duration::from_secs(20), || {
        get(&base, &format!("/api/v1/runs/{run}"), ops).body["state"] == "failed"
    });
    // A new version of the DAG adds a task after publish.
    std::fs::write(
        dir.path().join("dags/internal/nightly.yaml"),
        format!("{first}  - {{id: extra, type: noop, depends_on: [publish]}}\n"),
    )
    .expect("new version");
    wait_until(Duration::from_secs(20), || {
        get(&base, "/api/v1/dags/nightly", ops).body["tasks"]
            .as_array()
            .is_some_and(|t| t.len() == 3)
    });
    let dry = call(
        "POST",
        &base,
        &format!("/api/v1/runs/{run}/clear"),
        ops,
        Some(r#"{"latest_version": true}"#),
    );
    assert_eq!(dry.status, 200, "{}", dry.body);
    assert_eq!(
        dry.body["plan"]["added"],
        serde_json::json!(["extra"]),
        "{}",
        dry.body
    );
    std::fs::write(&ready, "").expect("the input arrives");
    let rerun = call(
        "POST",
        &base,
        &format!("/api/v1/runs/{run}/rerun-failed"),
        ops,
        Some(r#"{"latest_version": true, "reason": "fixed DAG"}"#),
    );
    assert_eq!(rerun.status, 200, "{}", rerun.body);
    assert_eq!(
        rerun.body["report"]["added"],
        serde_json::json!(["extra"]),
        "{}",
        rerun.body
    );
    wait_until(Duration::from_secs(30), || {
        get(&base, &format!("/api/v1/runs/{run}"), ops).body["state"] == "success"
    });
    let tasks = get(&base, &format!("/api/v1/runs/{run}"), ops).body["task_instances"].clone();
    assert!(
        tasks
            .as_array()
            .expect("tasks")
            .iter()
            .any(|t| t["task_id"] == "extra" && t["state"] == "success"),
        "{tasks}"
    );
    drop(serve);
}
