//! `lifeguard-controller drill` through the real binaries against the emulator: agents on every
//! simulated instance, the controller service running, and the drill terminating instances
//! through the group's hook, following each drain and checking each archive in S3.
//!
//! The hook keeps AWS's default 3600 s heartbeat timeout: every action is completed by its
//! agent, not by a timeout. The group has no load balancer, so no deregistration delay.

// Test code: a helper panics with a message on anything unexpected, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use lifeguard_e2e::agent::workspace_binary;
use lifeguard_e2e::controller::scene;
use lifeguard_e2e::drain::{BUCKET, GROUP};
use serde_json::Value;

/// The drill command with the controller's configuration, run to its end off the runtime.
async fn drill(config: &std::path::Path, args: &[&str]) -> Output {
    let (config, args): (_, Vec<String>) = (
        config.to_path_buf(),
        args.iter().map(|a| a.to_string()).collect(),
    );
    tokio::task::spawn_blocking(move || {
        Command::new(workspace_binary("lifeguard-controller"))
            .arg("--config")
            .arg(&config)
            .arg("drill")
            .args([
                "--group",
                GROUP,
                "--bucket",
                BUCKET,
                "--poll-secs",
                "1",
                "--timeout",
                "300",
            ])
            .args(&args)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_of_three_reports_every_instance_with_its_archive_verified() {
    let scene = scene(3, 3600, &[]).await;
    let stage = &scene.stage;
    let _agents = scene.start_agents(&[], 1).await;
    let controller = scene.start_controller("a", "");
    controller.wait_ready().await;
    let html = stage.path("drill.html");

    let output = drill(
        &controller.config,
        &["--count", "3", "--report", html.to_str().unwrap()],
    )
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("3 archived") && stdout.contains("nothing lost"),
        "{stdout}"
    );
    let page = std::fs::read_to_string(&html).unwrap();
    // Kept for a look after the run (the README's picture comes from such a run).
    let kept = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("drill-report.html");
    std::fs::write(&kept, &page).unwrap();
    std::fs::write(kept.with_extension("txt"), stdout.as_bytes()).unwrap();
    assert!(
        page.starts_with("<!DOCTYPE html>") && page.contains("<svg"),
        "{page}"
    );
    for instance_id in &stage.instances {
        // A line per instance with its result and who completed it.
        let line = stdout
            .lines()
            .find(|l| l.starts_with(instance_id.as_str()))
            .unwrap_or_else(|| panic!("{instance_id} missing:\n{stdout}"));
        assert!(
            line.contains("CONTINUE") && line.contains("agent"),
            "{line}"
        );
        assert!(
            page.contains(instance_id.as_str()),
            "{instance_id} not in the page"
        );
        // Each through the hook, the desired capacity decremented.
        let calls = stage
            .emulator
            .calls(
                "autoscaling",
                "TerminateInstanceInAutoScalingGroup",
                Some(instance_id),
            )
            .await;
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!(calls[0]["params"]["ShouldDecrementDesiredCapacity"], "true");
    }
    // The steps' times come from the archive's manifest; the wait from the action's mark.
    assert!(stdout.contains("step settle: succeeded"), "{stdout}");
    assert!(!stdout.lines().nth(1).unwrap().contains(" -  "), "{stdout}");
    controller.process.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_whose_upload_fails_reports_the_loss_and_exits_non_zero() {
    let scene = scene(2, 3600, &[]).await;
    let stage = &scene.stage;
    let broken = stage.instances[0].clone();
    let _agents = scene.start_agents(&[&broken], 1).await;
    let controller = scene.start_controller("a", "");
    controller.wait_ready().await;

    let mut args = vec!["--keep-capacity", "--output", "json", "--instances"];
    args.extend(stage.instances.iter().map(String::as_str));
    let output = drill(&controller.config, &args).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["summary"]["lost"], 1, "{report:#}");
    for line in report["instances"].as_array().unwrap() {
        let lost = line["lost"].as_array().unwrap();
        if line["instance_id"] == broken.as_str() {
            assert!(
                lost.iter()
                    .any(|l| l.as_str().unwrap().contains("no archive")),
                "{line:#}"
            );
        } else {
            assert!(lost.is_empty(), "{line:#}");
            assert!(line["archive_bytes"].as_u64().unwrap() > 0, "{line:#}");
        }
    }
    controller.process.terminate();
}

#[tokio::test]
async fn a_dry_run_of_a_drill_terminates_nothing() {
    let scene = scene(2, 3600, &[]).await;
    let stage = &scene.stage;
    let controller_config = stage.path("dry.toml");
    std::fs::write(
        &controller_config,
        scene.controller_config(lifeguard_e2e::controller::free_port(), ""),
    )
    .unwrap();
    let output = drill(&controller_config, &["--count", "2", "--dry-run"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    for instance_id in &stage.instances {
        assert!(stdout.contains(instance_id.as_str()), "{stdout}");
    }
    assert!(
        stage
            .emulator
            .calls("autoscaling", "TerminateInstanceInAutoScalingGroup", None)
            .await
            .is_empty()
    );
    // More instances than the group has in service: refused before anything is called.
    let refused = drill(&controller_config, &["--count", "3", "--dry-run"]).await;
    assert_eq!(refused.status.code(), Some(75));
}
