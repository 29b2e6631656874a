//! The emulators, started once per test binary by the project's `scripts/emulators` (which
//! installs them on first use), or taken from the environment when CI started them already.

use std::process::Command;
use std::sync::OnceLock;

use serde_json::{Value, json};

/// Where the emulators listen.
pub(crate) struct Emulators {
    /// moto: S3, Glue, Step Functions (execute mode).
    pub(crate) moto: String,
    /// bqemulator (project `test-project`).
    pub(crate) bigquery: String,
}

/// The emulators, or `None` (with a note) when they cannot be started and
/// `FERRY_REQUIRE_SERVICES` is not set.
pub(crate) fn emulators() -> Option<&'static Emulators> {
    static STARTED: OnceLock<Option<Emulators>> = OnceLock::new();
    STARTED.get_or_init(start).as_ref()
}

fn start() -> Option<Emulators> {
    if let (Ok(moto), Ok(bigquery)) = (
        std::env::var("FERRY_TEST_MOTO_URL"),
        std::env::var("FERRY_TEST_BIGQUERY_URL"),
    ) {
        return Some(Emulators { moto, bigquery });
    }
    let script = crate::util::repo().join("scripts").join("emulators");
    let output = Command::new(&script)
        .args(["start", "--owner", &std::process::id().to_string()])
        .output();
    let problem = match output {
        Ok(output) if output.status.success() => {
            let text = String::from_utf8_lossy(&output.stdout);
            let value = |name: &str| {
                text.lines()
                    .find_map(|line| line.strip_prefix(&format!("export {name}=")))
                    .map(str::to_string)
            };
            if let (Some(moto), Some(bigquery)) = (
                value("FERRY_TEST_MOTO_URL"),
                value("FERRY_TEST_BIGQUERY_URL"),
            ) {
                return Some(Emulators { moto, bigquery });
            }
            format!("scripts/emulators printed no endpoints: {text}")
        }
        Ok(output) => format!(
            "scripts/emulators failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(error) => format!("scripts/emulators could not run: {error}"),
    };
    assert!(
        std::env::var("FERRY_REQUIRE_SERVICES").as_deref() != Ok("1"),
        "the emulators are required: {problem}"
    );
    eprintln!("SKIPPED the emulator tests: {problem}");
    None
}

/// Credentials for moto (it checks none); the standard chain reads them.
pub(crate) const AWS_ENV: [(&str, &str); 4] = [
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
    ("AWS_CONFIG_FILE", "/nonexistent"),
];

/// Calls an AWS JSON API (`AWSGlue.CreateJob`, `AWSStepFunctions.ListExecutions`) on `base`.
pub(crate) fn aws(base: &str, service: &str, target: &str, body: Value) -> Value {
    aws_in(base, "us-east-1", service, target, body)
}

/// [`aws`] in `region`.
pub(crate) fn aws_in(base: &str, region: &str, service: &str, target: &str, body: Value) -> Value {
    runtime().block_on(async {
        let response = reqwest::Client::new()
            .post(base)
            .header("X-Amz-Target", target)
            .header("Content-Type", "application/x-amz-json-1.1")
            .header(
                "Authorization",
                format!("AWS4-HMAC-SHA256 Credential=test/20261129/{region}/{service}/aws4_request, SignedHeaders=host, Signature=0"),
            )
            .body(body.to_string())
            .send()
            .await
            .expect("the emulator answers");
        let status = response.status();
        let text = response.text().await.expect("a body");
        assert!(status.is_success(), "{target}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    })
}

/// Runs a BigQuery query on the emulator and returns its rows as arrays of strings.
pub(crate) fn bigquery_rows(base: &str, sql: &str) -> Vec<Vec<String>> {
    let answer = bigquery_call(
        base,
        "queries",
        json!({"query": sql, "useLegacySql": false}),
    );
    assert!(answer.get("errors").is_none(), "{sql}: {answer}");
    answer["rows"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|row| {
            row["f"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|cell| cell["v"].as_str().unwrap_or("NULL").to_string())
                .collect()
        })
        .collect()
}

/// POSTs `body` to `projects/test-project/<path>` of the BigQuery emulator.
pub(crate) fn bigquery_call(base: &str, path: &str, body: Value) -> Value {
    runtime().block_on(async {
        let response = reqwest::Client::new()
            .post(format!("{base}/bigquery/v2/projects/test-project/{path}"))
            .json(&body)
            .send()
            .await
            .expect("the emulator answers");
        response.json().await.expect("JSON")
    })
}

/// GETs `projects/test-project/<path>` of the BigQuery emulator.
pub(crate) fn bigquery_get(base: &str, path: &str) -> Value {
    runtime().block_on(async {
        reqwest::get(format!("{base}/bigquery/v2/projects/test-project/{path}"))
            .await
            .expect("the emulator answers")
            .json()
            .await
            .expect("JSON")
    })
}

/// Makes a dataset (one per test, so tests do not meet).
pub(crate) fn bigquery_dataset(base: &str, dataset: &str) {
    bigquery_call(
        base,
        "datasets",
        json!({"datasetReference": {"projectId": "test-project", "datasetId": dataset}}),
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A name unique to this test process: `<name>_<pid>`.
pub(crate) fn unique(name: &str) -> String {
    format!("{name}_{}", std::process::id())
}

/// A project whose `ferry.toml` points the `aws` connection at `aws` and the `warehouse`
/// connection at `bigquery`.
pub(crate) fn cloud_project(aws: &str, bigquery: &str, dags: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = crate::util::project(dags);
    let engine = std::fs::read_to_string(dir.path().join("ferry.toml")).expect("config");
    std::fs::write(
        dir.path().join("ferry.toml"),
        engine + &format!(
            "[environments.dev.connections.aws]\nkind = \"aws\"\nregion = \"us-east-1\"\nendpoint = \"{aws}\"\n\n\
             [environments.dev.connections.warehouse]\nkind = \"bigquery\"\nproject = \"test-project\"\ncredentials = \"none\"\nendpoint = \"{bigquery}\"\n"
        ),
    )
    .expect("config");
    dir
}

/// `ferry runs show --format json` of the newest run.
pub(crate) fn shown(dir: &std::path::Path, run: &str) -> Value {
    let output = crate::util::ferry_in(dir, &["runs", "show", run, "--format", "json"], &[]);
    serde_json::from_str(&crate::util::stdout(&output)).expect("JSON")
}

/// The task `id` of a shown run.
pub(crate) fn task<'a>(shown: &'a Value, id: &str) -> &'a Value {
    shown["tasks"]
        .as_array()
        .and_then(|tasks| tasks.iter().find(|t| t["task_id"] == id))
        .unwrap_or_else(|| panic!("no task {id} in {shown}"))
}

/// Puts an object into a moto S3 bucket (made if needed).
pub(crate) fn put_object(moto: &str, bucket: &str, key: &str, body: impl Into<reqwest::Body>) {
    runtime().block_on(async {
        let client = reqwest::Client::new();
        let _ = client.put(format!("{moto}/{bucket}")).send().await;
        let put = client
            .put(format!("{moto}/{bucket}/{key}"))
            .body(body)
            .send()
            .await
            .expect("moto answers");
        assert!(put.status().is_success());
    });
}
