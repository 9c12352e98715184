//! What ships beside the binary stays true to it: the example configurations load and
//! validate, and the systemd unit runs the commands the binary has, on its default paths.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use lifeguard_agent::config::{AgentConfig, DEFAULT_PATH, SseKind, StateConfig};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn every_example_configuration_loads_and_validates() {
    let dir = repo().join("packaging/examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("agent") && name.ends_with(".toml") {
            AgentConfig::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            checked += 1;
        }
    }
    assert!(checked >= 2, "examples found: {checked}");

    let full = AgentConfig::load(&dir.join("agent.toml")).unwrap();
    assert_eq!(full.drain.steps.len(), 4);
    for step in &full.drain.steps {
        step.action().unwrap();
    }
    assert_eq!(full.upload.as_ref().unwrap().sse, SseKind::Kms);
    assert!(full.launch.enabled && full.launch.checks.len() == 2);
}

#[test]
fn the_systemd_unit_matches_the_binary() {
    let unit = std::fs::read_to_string(repo().join("systemd/lifeguard-agent.service")).unwrap();
    let value = |key: &str| -> String {
        unit.lines()
            .find_map(|line| line.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key}= missing"))
            .to_string()
    };
    assert_eq!(value("Type"), "notify");
    assert_eq!(
        value("ExecStartPre"),
        format!("/usr/bin/lifeguard-agent --config {DEFAULT_PATH} validate")
    );
    assert_eq!(
        value("ExecStart"),
        format!("/usr/bin/lifeguard-agent --config {DEFAULT_PATH} run")
    );
    assert!(value("ExecReload").contains("-HUP"));
    // The agent feeds the watchdog every second and gives an upload 30 s after SIGTERM.
    let seconds = |key: &str| value(key).parse::<u64>().unwrap();
    assert!(seconds("WatchdogSec") >= 5);
    assert!(
        seconds("TimeoutStopSec") > lifeguard_agent::drain::SHUTDOWN_UPLOAD_GRACE.as_secs() + 10
    );
    assert_eq!(value("StateDirectory"), "lifeguard");
    // StateDirectory= creates the directory of the default state file.
    assert_eq!(
        StateConfig::default().path.parent(),
        Some(Path::new("/var/lib/lifeguard"))
    );
}
