use crate::util::{NOW, assert_same, expected, ferry, ferry_in, repo, stdout};

#[test]
fn invalid_corpus_reports_every_error_of_every_file() {
    let output = ferry(&["validate", "invalid", "--now", NOW]);
    assert_eq!(output.status.code(), Some(1));
    assert_same(&expected("invalid.txt"), &stdout(&output));
}

#[test]
fn one_broken_file_never_hides_the_others() {
    let text = stdout(&ferry(&["validate", "invalid", "--now", NOW]));
    for entry in std::fs::read_dir(crate::util::fixtures().join("invalid")).expect("fixture folder")
    {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        assert!(
            text.contains(&format!("invalid/{name}:")),
            "no diagnostic for {name}:\n{text}"
        );
    }
    // The same file checked alone gives the same diagnostics as in the corpus run.
    let alone = stdout(&ferry(&[
        "validate",
        "invalid/templates.yaml",
        "--now",
        NOW,
    ]));
    for line in alone.lines().filter(|l| l.starts_with("invalid/")) {
        assert!(text.contains(line), "{line} missing from the corpus run");
    }
}

#[test]
fn valid_fixtures_pass_with_a_dst_warning() {
    let output = ferry(&["validate", "valid", "--now", NOW]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    assert_same(&expected("valid.txt"), &stdout(&output));
}

#[test]
fn deny_warnings_fails_on_the_dst_warning() {
    let output = ferry(&["validate", "valid", "--deny-warnings", "--now", NOW]);
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn user_facing_rules_are_enforced() {
    let output = ferry(&["validate", "policy", "--now", NOW]);
    assert_eq!(output.status.code(), Some(1));
    assert_same(&expected("policy.txt"), &stdout(&output));
}

#[test]
fn json_output_is_machine_readable() {
    let output = ferry(&[
        "validate",
        "invalid/unknown_fields.yaml",
        "--format",
        "json",
        "--now",
        NOW,
    ]);
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("JSON report");
    assert_eq!(report["files"], 1);
    assert_eq!(report["errors"], 3);
    assert_eq!(report["warnings"], 0);
    let first = &report["diagnostics"][1];
    assert_eq!(first["severity"], "error");
    assert_eq!(first["code"], "unknown-field");
    assert_eq!(first["file"], "invalid/unknown_fields.yaml");
    assert_eq!(
        (first["line"].as_u64(), first["column"].as_u64()),
        (Some(6), Some(5))
    );
    assert_eq!(first["dag"], "unknown_fields");
    assert_eq!(first["task"], "extract");
    assert_eq!(first["field"], "comand");
    assert_eq!(first["help"], "did you mean `command`?");
}

#[test]
fn a_missing_path_is_reported_not_fatal() {
    let output = ferry(&[
        "validate",
        "no-such-folder",
        "valid/internal/app_export.yaml",
        "--now",
        NOW,
    ]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert!(
        text.contains("no-such-folder:0:0: error[io]: cannot read `no-such-folder`"),
        "{text}"
    );
    assert!(text.contains("1 DAG(s) valid"), "{text}");
}

#[test]
fn the_example_dags_are_valid() {
    let output = ferry_in(&repo(), &["validate", "--deny-warnings"], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    assert!(
        stdout(&output).contains("5 DAG(s) valid, 0 file(s) with errors"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn dst_report_lists_every_encounter_when_asked() {
    let output = ferry(&["validate", "valid", "--dst", "--now", NOW]);
    assert_eq!(output.status.code(), Some(0));
    let text = stdout(&output);
    assert!(text.contains("dst: app_export: `0 2 * * *` in Asia/Tokyo meets no daylight-saving change in the next year"), "{text}");
    assert!(
        text.contains("dst: new_york_stated: 02:30 on 2027-03-14 does not exist (02:00–03:00 is skipped); it does not run"),
        "{text}"
    );
    assert!(
        text.contains("dst: new_york_nightly: 02:30 on 2027-03-14 does not exist (02:00–03:00 is skipped); it runs at 03:00"),
        "{text}"
    );
}
