use crate::util::{assert_same, ferry, ferry_in, fixtures, repo, stderr, stdout};

#[test]
fn dags_list_shows_valid_dags_with_their_tree() {
    let output = ferry(&["dags", "list", "--now", crate::util::NOW]);
    assert_eq!(output.status.code(), Some(0));
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("ID"), "{text}");
    assert!(
        lines.iter().any(|l| l.starts_with("scores_report")
            && l.contains("user-facing")
            && l.contains("Asia/Tokyo")),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("app_export") && l.contains("internal")),
        "{text}"
    );
}

#[test]
fn dags_show_renders_dot_and_mermaid() {
    let dot = stdout(&ferry(&["dags", "show", "scores_report", "--graph", "dot"]));
    assert_same(
        "digraph \"scores_report\" {\n    rankdir=LR;\n    node [shape=box];\n    \"aggregate\" [label=\"aggregate\\n(command)\"];\n    \"refresh_cache\" [label=\"refresh_cache\\n(http)\"];\n    \"aggregate\" -> \"refresh_cache\";\n}\n",
        &dot,
    );
    let mermaid = stdout(&ferry(&[
        "dags",
        "show",
        "scores_report",
        "--graph",
        "mermaid",
    ]));
    assert!(
        mermaid.starts_with("flowchart LR\n") && mermaid.contains("t0 --> t1"),
        "{mermaid}"
    );
}

#[test]
fn dags_show_json_has_tasks_and_edges() {
    let output = ferry(&["dags", "show", "scores_report", "--format", "json"]);
    let dag: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("JSON");
    assert_eq!(dag["tree"], "user-facing");
    assert_eq!(dag["tasks"][0]["retry"]["retries"], 3);
    assert_eq!(dag["tasks"][1]["type"], "http");
    assert_eq!(
        dag["edges"],
        serde_json::json!([["aggregate", "refresh_cache"]])
    );
    assert_eq!(dag["sla"]["deadline"]["time_of_day"], "08:00:00");
}

#[test]
fn unknown_dag_gets_a_suggestion() {
    let output = ferry(&["dags", "show", "score_report"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("no DAG `score_report`; did you mean `scores_report`?"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn schedule_lists_data_intervals_in_tokyo() {
    let output = ferry(&[
        "schedule",
        "scores_report",
        "-n",
        "2",
        "--format",
        "json",
        "--now",
        "2026-11-25T00:00:00Z",
    ]);
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("JSON");
    let runs = report["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["data_interval_start"], "2026-11-25T02:00:00+09:00");
    assert_eq!(runs[0]["data_interval_end"], "2026-11-26T02:00:00+09:00");
    assert_eq!(runs[0]["due_at"], "2026-11-25T17:00:00+00:00");
    assert_eq!(runs[0]["deadline"], "2026-11-26T08:00:00+09:00");
    assert_eq!(runs[1]["logical_date"], "2026-11-26T02:00:00+09:00");
}

#[test]
fn schedule_is_dst_correct_in_new_york() {
    // 2027-03-14 has no 02:30 in New York: the default policy runs at 03:00 EDT.
    let output = ferry(&[
        "schedule",
        "new_york_nightly",
        "-n",
        "3",
        "--format",
        "json",
        "--now",
        "2027-03-13T12:00:00Z",
    ]);
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("JSON");
    let starts: Vec<&str> = report["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["logical_date"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        starts,
        [
            "2027-03-13T02:30:00-05:00",
            "2027-03-14T03:00:00-04:00",
            "2027-03-15T02:30:00-04:00"
        ]
    );
    // With `dst.gap: skip` the 14th has no run.
    let output = ferry(&[
        "schedule",
        "new_york_stated",
        "-n",
        "2",
        "--format",
        "json",
        "--now",
        "2027-03-13T12:00:00Z",
    ]);
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("JSON");
    assert_eq!(
        report["runs"][1]["logical_date"],
        "2027-03-15T02:30:00-04:00"
    );
}

#[test]
fn schedule_prints_a_table_for_people() {
    let text = stdout(&ferry(&[
        "schedule",
        "scores_report",
        "-n",
        "1",
        "--now",
        "2026-11-25T00:00:00Z",
    ]));
    assert_same(
        "DAG scores_report: `0 2 * * *` in Asia/Tokyo\nLOGICAL DATE          DATA INTERVAL                        DUE AT                DUE AT (UTC)          DEADLINE\n2026-11-25 02:00 JST  2026-11-25 02:00 → 2026-11-26 02:00  2026-11-26 02:00 JST  2026-11-25T17:00:00Z  2026-11-26 08:00 JST\n",
        &text,
    );
}

#[test]
fn committed_schema_matches_the_code() {
    let generated = stdout(&ferry(&["schema"]));
    let committed = std::fs::read_to_string(repo().join("docs").join("dag.schema.json"))
        .expect("docs/dag.schema.json");
    assert_same(&committed, &generated);
    let schema: serde_json::Value = serde_json::from_str(&generated).expect("JSON");
    assert_eq!(schema["$defs"]["TaskSpec"]["unevaluatedProperties"], false);
}

#[test]
fn config_show_masks_secrets() {
    let output = ferry(&["config", "show"]);
    assert_eq!(output.status.code(), Some(0));
    let text = stdout(&output);
    assert!(!text.contains("SECRET-TOKEN"), "{text}");
    assert!(text.contains("webhook_url = \"********\""), "{text}");
    assert!(text.contains("folders = [\"valid\"]"), "{text}");
}

#[test]
fn environment_overrides_the_file_and_errors_come_all_at_once() {
    let output = ferry_in(
        &fixtures(),
        &["config", "show"],
        &[("FERRY__DAGS__FOLDERS", "[\"policy\"]")],
    );
    assert!(
        stdout(&output).contains("folders = [\"policy\"]"),
        "{}",
        stdout(&output)
    );
    let output = ferry_in(
        &fixtures(),
        &["validate"],
        &[
            ("FERRY__DAGS__FOLDERS", "7"),
            ("FERRY__ALERTS__CHANNELS__X__KIND", "pager"),
            ("FERRY__DAG__FOLDERS", "x"),
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(text.contains("invalid configuration:"), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("  - ")).count(),
        3,
        "{text}"
    );
    assert!(!text.contains("SECRET-TOKEN"), "{text}");
}

#[test]
fn the_repository_dev_profile_loads() {
    let output = ferry_in(&repo(), &["config", "show"], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).contains("[alerts.channels.data-oncall]"));
}
