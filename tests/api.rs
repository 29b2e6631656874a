//! Issue 10: the HTTP API of `ferry serve`, through real HTTP.

use std::time::Duration;

use crate::util::{ferry_in, project, spawn_ferry_logged, stderr, wait_until};

/// The token the test calls with (the configuration knows it by its SHA-256 only).
const TOKEN: &str = "oncall-token-7f3a";
/// Another configured token's hash (of a token the test never sends).
const OTHER_SHA256: &str =
    "sha256:6b3d0b1b0a8fae5b2e3f8a9f54bb1bb6a0e3a4e7b2f0a6d8c1e9d3b5a7c2f4e1";

/// One answer: status, content type, body.
struct Answer {
    status: u16,
    content_type: String,
    body: serde_json::Value,
}

fn get(base: &str, path: &str, token: Option<&str>) -> Answer {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let mut request = reqwest::Client::new().get(format!("{base}{path}"));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.expect("the API answers");
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let body = response.json().await.unwrap_or(serde_json::Value::Null);
            Answer {
                status,
                content_type,
                body,
            }
        })
}

#[test]
fn issue10_serve_answers_run_state_to_a_configured_token_only() {
    let dir = project(&[(
        "nightly.yaml",
        "tasks:\n  - {id: extract, type: command, command: 'echo extracted'}\n  - {id: publish, type: noop, depends_on: [extract]}\n",
    )]);
    let hash = {
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
            .write_all(TOKEN.as_bytes())
            .expect("written");
        let out = child.wait_with_output().expect("sha256sum ends");
        format!(
            "sha256:{}",
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .next()
                .expect("a digest")
        )
    };
    let config = dir.path().join("ferry.toml");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str(&format!(
        "[api.tokens.oncall]\nhash = \"{hash}\"\nrole = \"viewer\"\n[api.tokens.other]\nhash = \"{OTHER_SHA256}\"\nrole = \"admin\"\n"
    ));
    std::fs::write(&config, text).expect("config written");
    let ran = ferry_in(dir.path(), &["run", "nightly"], &[]);
    assert!(ran.status.success(), "{}", stderr(&ran));

    let serve = spawn_ferry_logged(dir.path(), &["serve"]);
    let log = dir.path().join("serve.log");
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
            .is_some_and(|d| d.starts_with("`state`"))
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
