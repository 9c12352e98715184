//! The agent on spot interruptions, launches, bad configuration and bad IMDS answers.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use lifeguard_common::message::Transition;
use lifeguard_e2e::agent::{AgentProcess, config_for, workspace_binary};
use lifeguard_e2e::drain::{GROUP, stage, unpack};
use lifeguard_e2e::fleet::{self, Hook};
use lifeguard_e2e::{Emulator, eventually};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(40);

fn set_mtime(path: &std::path::Path, stamp: &str) {
    let status = Command::new("touch")
        .arg("-d")
        .arg(stamp)
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_interruption_uploads_newest_logs_first_within_the_deadline() {
    let stage = stage(1, 60).await;
    let victim = stage.instances[0].clone();
    // Five 300 kB logs, oldest first; the cap lets the two newest in.
    let spot_logs = stage.path("spot-logs");
    std::fs::create_dir_all(&spot_logs).unwrap();
    for i in 0..5 {
        let path = spot_logs.join(format!("svc-{i}.log"));
        std::fs::write(&path, format!("service {i} line\n").repeat(300_000 / 16)).unwrap();
        set_mtime(&path, &format!("2026-11-22 09:0{i}:00"));
    }
    let extra = stage
        .archive_config_with("max_total_bytes = 700000\nspot_margin_secs = 5", "")
        .replace(
            &format!("paths = [\"{}\"]", stage.logs.display()),
            &format!("paths = [\"{}\"]", spot_logs.display()),
        );
    let agent = AgentProcess::start(
        stage.dir.path(),
        &config_for(&stage.emulator, &victim, stage.dir.path(), &extra),
    );
    agent.wait_for_log("lifeguard-agent watching", WAIT).await;

    let warned = Instant::now();
    stage
        .emulator
        .control_post(
            &format!("instances/{victim}/spot-interruption"),
            json!({"action": "terminate", "in_secs": 30}),
        )
        .await;
    let prefix = format!("lifeguard/{GROUP}/{victim}/");
    let key = eventually("the spot archive", WAIT, || async {
        stage
            .keys(&prefix)
            .await
            .into_iter()
            .find(|k| k.ends_with("-spot_interruption.tar.gz"))
    })
    .await;
    assert!(
        warned.elapsed() < Duration::from_secs(25),
        "uploaded {:?} after the warning",
        warned.elapsed()
    );

    let unpacked = unpack(&stage.object(&key).await);
    let manifest: Value = serde_json::from_slice(&unpacked.files["MANIFEST.json"]).unwrap();
    let archived: Vec<&str> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        archived,
        vec![
            spot_logs.join("svc-4.log").display().to_string(),
            spot_logs.join("svc-3.log").display().to_string()
        ],
        "the two newest, newest first"
    );
    let skipped: Vec<(&str, &str)> = manifest["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["path"].as_str().unwrap(), s["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(skipped.len(), 3, "{skipped:?}");
    assert!(
        skipped
            .iter()
            .all(|(_, reason)| *reason == "max_total_bytes"),
        "{skipped:?}"
    );
    // No lifecycle action is involved in a spot interruption.
    assert!(
        stage
            .emulator
            .calls("autoscaling", "CompleteLifecycleAction", None)
            .await
            .is_empty()
    );
}

async fn launch_stage(emulator: &Emulator, group: &str) -> String {
    let c = emulator.clients().await;
    let image = fleet::any_image(&c).await;
    let template = fleet::launch_template(&c, group, &image).await;
    fleet::group(
        &c,
        group,
        &template,
        0,
        &[Hook {
            name: "ready",
            transition: Transition::LAUNCHING,
            heartbeat_timeout_secs: 60,
            default_result: "ABANDON",
            target_arn: None,
        }],
    )
    .await;
    c.autoscaling
        .set_desired_capacity()
        .auto_scaling_group_name(group)
        .desired_capacity(1)
        .send()
        .await
        .unwrap();
    // Plain Pending while EC2 starts the instance, then the launch hook holds it.
    let (instance, _) = fleet::instances(&c, group).await.remove(0);
    fleet::wait_for_state(
        &c,
        &instance,
        Duration::from_secs(30),
        "Pending:Wait",
        |s| s == Some("Pending:Wait"),
    )
    .await;
    instance
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_gating_continues_when_ready_and_abandons_at_the_deadline() {
    let emulator = Emulator::start().await;
    let c = emulator.clients().await;
    let ready_instance = launch_stage(&emulator, "ready-group").await;
    let stuck_instance = launch_stage(&emulator, "stuck-group").await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let open_port = listener.local_addr().unwrap().port();
    let closed_port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let dirs = tempfile::tempdir().unwrap();
    let mut agents = Vec::new();
    for (instance, port, deadline) in [
        (&ready_instance, open_port, 30),
        (&stuck_instance, closed_port, 3),
    ] {
        let dir = dirs.path().join(instance);
        std::fs::create_dir_all(&dir).unwrap();
        let extra = format!(
            "[launch]\nenabled = true\ndeadline_secs = {deadline}\ninterval_ms = 200\n\n[[launch.checks]]\nname = \"port\"\ntcp = \"127.0.0.1:{port}\"\ntimeout_secs = 1\n"
        );
        agents.push(AgentProcess::start(
            &dir,
            &config_for(&emulator, instance, &dir, &extra),
        ));
    }
    fleet::wait_for_state(&c, &ready_instance, WAIT, "CONTINUE", |s| {
        s == Some("InService")
    })
    .await;
    eventually("ABANDON to terminate the stuck instance", WAIT, || async {
        (fleet::ec2_state(&c, &stuck_instance).await == "terminated").then_some(())
    })
    .await;
    let result = |instance: String| {
        let emulator = &emulator;
        async move {
            emulator
                .calls("autoscaling", "CompleteLifecycleAction", Some(&instance))
                .await
                .iter()
                .map(|c| {
                    (
                        c["status"].as_u64().unwrap(),
                        c["params"]["LifecycleActionResult"]
                            .as_str()
                            .unwrap()
                            .to_string(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        result(ready_instance.clone()).await,
        vec![(200, "CONTINUE".to_string())]
    );
    assert_eq!(
        result(stuck_instance.clone()).await,
        vec![(200, "ABANDON".to_string())]
    );
    drop(listener);
}

#[test]
fn bad_configuration_is_refused_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(
        &path,
        "[watch]\npoll_interval_ms = 1000\n\n[upload]\nbucket = \"logs\"\nkey_templat = \"x\"\n",
    )
    .unwrap();
    for command in ["validate", "run"] {
        let output = Command::new(workspace_binary("lifeguard-agent"))
            .arg("--config")
            .arg(&path)
            .arg(command)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(78), "{command}: {output:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(&format!(
                "{}:6:1: unknown field `key_templat`",
                path.display()
            )),
            "{stderr}"
        );
        assert!(stderr.contains("(key `upload.key_templat`)"), "{stderr}");
    }
    std::fs::write(&path, "[[drain.steps]]\nname = \"x\"\n").unwrap();
    let output = Command::new(workspace_binary("lifeguard-agent"))
        .arg("--config")
        .arg(&path)
        .arg("validate")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&output.stderr).contains("drain.steps[0] (x): needs one of"));

    let output = Command::new(workspace_binary("lifeguard-agent"))
        .args(["--config", "/nonexistent/agent.toml", "validate"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/agent.toml"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_imds_answers_never_lead_to_a_completion_on_a_guess() {
    let stage = stage(1, 120).await;
    let victim = stage.instances[0].clone();
    stage
        .emulator
        .control_post("config", json!({"imds_timeout_hang_secs": 2}))
        .await;
    let mut agent = AgentProcess::start(
        stage.dir.path(),
        &config_for(
            &stage.emulator,
            &victim,
            stage.dir.path(),
            &stage.archive_config(),
        ),
    );
    agent.wait_for_log("lifeguard-agent watching", WAIT).await;

    // IMDS breaks, then the instance is scaled in: the agent cannot know, and must not guess.
    stage
        .emulator
        .control_post(
            &format!("instances/{victim}/imds-fault"),
            json!({"mode": "garbage", "count": 0}),
        )
        .await;
    stage.terminate(&victim).await;
    for mode in ["garbage", "status500", "timeout"] {
        stage
            .emulator
            .control_post(
                &format!("instances/{victim}/imds-fault"),
                json!({"mode": mode, "count": 0}),
            )
            .await;
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(
            agent.is_running(),
            "the agent survives {mode}:\n{}",
            agent.log()
        );
        assert!(
            stage
                .emulator
                .calls("autoscaling", "CompleteLifecycleAction", None)
                .await
                .is_empty(),
            "no completion while IMDS answers {mode}"
        );
    }
    assert!(
        agent.log().contains("IMDS answer unusable"),
        "{}",
        agent.log()
    );
    assert!(!agent.log().contains("panicked"));

    // IMDS heals: the agent sees the termination and drains as usual.
    stage
        .emulator
        .control_post(
            &format!("instances/{victim}/imds-fault"),
            json!({"mode": "none"}),
        )
        .await;
    stage.wait_terminated(&victim, WAIT).await;
    let completions = stage
        .emulator
        .calls("autoscaling", "CompleteLifecycleAction", Some(&victim))
        .await;
    assert_eq!(completions.len(), 1, "{completions:?}");
}
