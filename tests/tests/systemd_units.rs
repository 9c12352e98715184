//! The agent's units as systemd reads them: `systemd-analyze verify` clean, the agent's
//! `systemd-analyze security` exposure at most 3.0, and the settings the agent and the step
//! runner rely on. Running them needs systemd as PID 1; `agent_confined.rs` runs the agent
//! under the unit's identity and capabilities and its steps through the runner.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use lifeguard_e2e::agent::workspace_binary;
use lifeguard_e2e::repo_root;
use lifeguard_e2e::step_runner::unit_settings;

const UNITS: [&str; 3] = [
    "lifeguard-agent.service",
    "lifeguard-step.socket",
    "lifeguard-step@.service",
];

/// The units copied into `dir` with the installed binary's path pointing at this build's
/// (verify checks that every command exists).
fn units_in(dir: &Path) {
    let binary = workspace_binary("lifeguard-agent");
    for unit in UNITS {
        let text = std::fs::read_to_string(repo_root().join("systemd").join(unit)).unwrap();
        let text = text.replace("/usr/bin/lifeguard-agent", binary.to_str().unwrap());
        std::fs::write(dir.join(unit), text).unwrap();
    }
}

fn analyze(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("systemd-analyze (scripts/system-tools.sh installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn systemd_analyze_verify_is_clean_for_every_unit() {
    let dir = tempfile::tempdir().unwrap();
    units_in(dir.path());
    let paths: Vec<String> = UNITS.iter().map(|u| format!("./{u}")).collect();
    let mut args = vec!["verify"];
    args.extend(paths.iter().map(String::as_str));
    let (ok, output) = analyze(dir.path(), &args);
    assert!(ok && output.trim().is_empty(), "{output}");
}

#[test]
fn the_agents_unit_exposure_is_at_most_3_0() {
    let dir = tempfile::tempdir().unwrap();
    units_in(dir.path());
    // The threshold is in tenths: over 30 fails.
    let (ok, output) = analyze(
        dir.path(),
        &[
            "security",
            "--offline=yes",
            "--threshold=30",
            "./lifeguard-agent.service",
        ],
    );
    let overall = output
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("{output}"));
    let level: f64 = overall
        .split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{overall}"));
    assert!(ok && level <= 3.0, "{output}");
    // The README's figure is this run's.
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("exposure {level:.1}")),
        "README should say `exposure {level:.1}`"
    );
}

#[test]
fn the_agent_is_sandboxed_and_outlives_its_own_graceful_stop() {
    let unit = unit_settings("lifeguard-agent.service");
    let one = |key: &str| -> &str {
        match unit.get(key).map(Vec::as_slice) {
            Some([value]) => value,
            other => panic!("{key}: {other:?}"),
        }
    };
    for (key, value) in [
        ("ProtectSystem", "strict"),
        ("StateDirectory", "lifeguard"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", "CAP_DAC_READ_SEARCH"),
        ("AmbientCapabilities", "CAP_DAC_READ_SEARCH"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("SystemCallArchitectures", "native"),
        ("User", "lifeguard"),
        ("KillMode", "mixed"),
    ] {
        assert_eq!(one(key), value, "{key}");
    }
    assert!(unit["SystemCallFilter"].contains(&"@system-service".to_string()));
    assert!(one("OOMScoreAdjust").parse::<i32>().unwrap() < 0);
    // A stop leaves a running upload its grace, and the agent time to report after it.
    let stop: u64 = one("TimeoutStopSec").parse().unwrap();
    assert!(stop > lifeguard_agent::drain::SHUTDOWN_UPLOAD_GRACE.as_secs() + 10);
    assert_eq!(one("Requires"), "lifeguard-step.socket");
}

#[test]
fn the_step_runner_listens_where_the_example_configuration_looks_for_the_agents_group_only() {
    let socket = unit_settings("lifeguard-step.socket");
    let agent = unit_settings("lifeguard-agent.service");
    assert_eq!(socket["SocketGroup"], agent["Group"]);
    assert_eq!(socket["SocketUser"], ["root"]);
    assert_eq!(socket["SocketMode"], ["0660"]);
    let example: toml::Value = toml::from_str(
        &std::fs::read_to_string(repo_root().join("packaging/examples/agent.toml")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        example["drain"]["step_runner"].as_str(),
        Some(socket["ListenStream"][0].as_str())
    );
    let step = unit_settings("lifeguard-step@.service");
    assert!(step["ExecStart"][0].ends_with(" step-exec"));
    assert_eq!(step["StandardInput"], ["socket"]);
    assert_eq!(step["StandardOutput"], ["socket"]);
}
