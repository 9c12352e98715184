//! `lifeguard-controller validate` as a process, on the example configuration, a broken one,
//! and a container's environment with no file at all.

// A failed unwrap in a test is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

fn validate(config: &Path, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lifeguard-controller"));
    command
        .arg("--config")
        .arg(config)
        .arg("validate")
        .env_remove("LIFEGUARD_QUEUE_URL")
        .env_remove("LIFEGUARD_REGION")
        .env_remove("LIFEGUARD_ENDPOINT_URL");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().unwrap()
}

#[test]
fn the_example_configuration_is_valid() {
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/examples/controller.toml");
    let output = validate(&example, &[]);
    assert!(output.status.success(), "{output:?}");
}

#[test]
fn a_broken_file_names_the_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("controller.toml");
    std::fs::write(&path, "[queue]\nurl = \"q\"\nworker = 3\n").unwrap();
    let output = validate(&path, &[]);
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("{}:3:1", path.display())),
        "{stderr}"
    );
    assert!(stderr.contains("queue.worker"), "{stderr}");
}

#[test]
fn the_queue_can_come_from_the_environment_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("controller.toml");
    std::fs::write(&path, "").unwrap();
    let output = validate(&path, &[]);
    assert_eq!(output.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&output.stderr).contains("LIFEGUARD_QUEUE_URL"));
    let output = validate(
        &path,
        &[(
            "LIFEGUARD_QUEUE_URL",
            "http://127.0.0.1:4566/000000000000/q",
        )],
    );
    assert!(output.status.success(), "{output:?}");
}
