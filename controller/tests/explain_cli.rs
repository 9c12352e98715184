//! `lifeguard-controller explain` as a process: every fixture is explained with exit 0, and
//! malformed input gives a one-line error and a non-zero exit.

// A failed unwrap in a test is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_lifeguard-controller")
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../common/tests/fixtures/aws-events")
}

fn explain_stdin(input: &[u8], extra: &[&str]) -> Output {
    let mut child = Command::new(binary())
        .arg("explain")
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // The child may exit before reading everything (oversized input); a broken pipe is fine.
    let _ = stdin.write_all(input);
    drop(stdin);
    child.wait_with_output().unwrap()
}

#[test]
fn every_fixture_is_explained() {
    let mut count = 0;
    for entry in std::fs::read_dir(fixture_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|name| name == "README.md") {
            continue;
        }
        let output = Command::new(binary())
            .arg("explain")
            .arg(&path)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}: {:?}", path.display(), output);
        let stdout = String::from_utf8(output.stdout).unwrap();
        assert_eq!(
            stdout.lines().count(),
            1,
            "one JSON object per line: {stdout}"
        );
        let explanation: Value = serde_json::from_str(&stdout).unwrap();
        let kind = explanation["kind"].as_str().unwrap();
        let format = explanation["format"].as_str().unwrap();
        assert!(!kind.is_empty() && !format.is_empty());
        if kind == "ignored" {
            assert!(
                explanation["reason"].is_string(),
                "ignored needs a reason: {stdout}"
            );
        }
        count += 1;
    }
    assert_eq!(count, 35);
}

#[test]
fn reads_standard_input_and_pretty_prints() {
    let body =
        std::fs::read(fixture_dir().join("sqs-direct-terminating.ecs-instance-drainer.json"))
            .unwrap();
    let output = explain_stdin(&body, &["-", "--pretty"]);
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.lines().count() > 3, "pretty output spans lines");
    let explanation: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(explanation["kind"], "lifecycle_terminate");
    assert_eq!(explanation["format"], "direct");
    assert_eq!(explanation["instance_id"], "i-0194708ef7e24dcc7");
}

#[test]
fn malformed_input_is_a_one_line_error() {
    let cases: &[(&[u8], &str)] = &[
        (b"", "message is empty"),
        (b"{not json", "not valid JSON"),
        (b"{\"hello\": \"world\"}", "unrecognised message"),
        (
            b"{\"source\":\"aws.autoscaling\",\"detail-type\":\"EC2 Instance-terminate Lifecycle Action\",\"detail\":{}}",
            "detail.LifecycleTransition: missing",
        ),
        (b"\x00\x01\x02\xff", "not UTF-8"),
    ];
    for (input, expected) in cases {
        let output = explain_stdin(input, &[]);
        assert_eq!(
            output.status.code(),
            Some(65),
            "{:?}",
            String::from_utf8_lossy(input)
        );
        assert!(output.stdout.is_empty());
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("lifeguard-controller: explain: standard input: "),
            "{stderr}"
        );
        assert!(stderr.contains(expected), "{stderr}");
    }
}

#[test]
fn oversized_and_missing_input() {
    let big = vec![b' '; 2 * 1024 * 1024];
    let output = explain_stdin(&big, &[]);
    assert_eq!(output.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&output.stderr).contains("larger than"));

    let output = Command::new(binary())
        .args(["explain", "/nonexistent/message.json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(66));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/message.json"));
}

#[test]
fn imds_only_mode_refuses_queue_messages() {
    let body = std::fs::read(fixture_dir().join("asg-terminate-lifecycle-action.json")).unwrap();
    let output = explain_stdin(&body, &["--from", "imds"]);
    assert_eq!(output.status.code(), Some(65));
    let output = explain_stdin(b"Terminated", &["--from", "imds"]);
    assert!(output.status.success());
}
