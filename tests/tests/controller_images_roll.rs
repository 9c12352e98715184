//! The image pipeline's roll: after promote, an instance refresh replaces every old instance of
//! the group, each leaving through the terminate hook with its agent draining and archiving,
//! while the controller watches the drains. Real binaries against the emulator.
//!
//! Images stay pending 3 s and the refresh warms instances up for 0 s (AWS: minutes each):
//! the order of events is what is tested, not their length. The hook keeps AWS's default
//! 3600 s heartbeat timeout, so every action is completed by the agent, not by a timeout.

// Test code: a helper panics with a message on anything unexpected, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use lifeguard_e2e::agent::{ServiceProcess, config_for, workspace_binary};
use lifeguard_e2e::controller::scene;
use lifeguard_e2e::drain::GROUP;
use lifeguard_e2e::eventually;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roll_replaces_every_old_instance_through_a_drain_with_its_logs_archived() {
    let scene = scene(2, 3600, &[]).await;
    let stage = &scene.stage;
    stage
        .emulator
        .control_post("config", json!({ "ami_pending_secs": 3 }))
        .await;
    let old = stage.instances.clone();
    let mut agents = Vec::new();
    for instance_id in &old {
        let dir = stage.path(instance_id);
        std::fs::create_dir_all(&dir).unwrap();
        let config = config_for(&stage.emulator, instance_id, &dir, &stage.archive_config());
        let agent = ServiceProcess::start_with_env(&dir, &config, &[]);
        agent
            .wait_for_log("lifeguard-agent watching", Duration::from_secs(60))
            .await;
        agents.push(agent);
    }
    let controller = scene.start_controller("a", "");
    controller.wait_ready().await;

    let output = tokio::task::spawn_blocking({
        let config = controller.config.clone();
        let golden = old[0].clone();
        move || {
            Command::new(workspace_binary("lifeguard-controller"))
                .arg("--config")
                .arg(&config)
                .args([
                    "image",
                    "bake",
                    "--template",
                    "web",
                    "--instance",
                    &golden,
                    "--no-reboot",
                    "--roll",
                    "--min-healthy-percentage",
                    "50",
                    "--instance-warmup-secs",
                    "0",
                    "--poll-secs",
                    "1",
                ])
                .env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("instance refresh"), "{stderr}");

    // Every old instance left through a drain: archived by its agent, completed with CONTINUE.
    for instance_id in &old {
        let keys = stage
            .keys(&format!("lifeguard/{GROUP}/{instance_id}/"))
            .await;
        assert!(
            keys.iter().any(|k| k.ends_with("-scale_in.tar.gz")),
            "{instance_id}: {keys:?}\n{stderr}"
        );
        let completions = stage
            .emulator
            .calls("autoscaling", "CompleteLifecycleAction", Some(instance_id))
            .await;
        assert_eq!(completions.len(), 1, "{instance_id}: {completions:?}");
        assert_eq!(
            completions[0]["params"]["LifecycleActionResult"],
            "CONTINUE"
        );
    }
    // The group now runs only new instances, launched from the new version's image.
    let group = eventually(
        "only new instances in service",
        Duration::from_secs(30),
        || async {
            let groups = stage
                .clients
                .autoscaling
                .describe_auto_scaling_groups()
                .auto_scaling_group_names(GROUP)
                .send()
                .await
                .unwrap();
            let group = groups.auto_scaling_groups()[0].clone();
            let all_new = group.instances().len() == 2
                && group
                    .instances()
                    .iter()
                    .all(|i| !old.iter().any(|o| Some(o.as_str()) == i.instance_id()));
            all_new.then_some(group)
        },
    )
    .await;
    let template = stage
        .clients
        .ec2
        .describe_launch_templates()
        .launch_template_names("web")
        .send()
        .await
        .unwrap()
        .launch_templates()[0]
        .clone();
    let image_id = template
        .tags()
        .iter()
        .find(|t| t.key() == Some("lifeguard:image:image"))
        .and_then(|t| t.value())
        .unwrap()
        .to_string();
    for instance in group.instances() {
        let described = stage
            .clients
            .ec2
            .describe_instances()
            .instance_ids(instance.instance_id().unwrap())
            .send()
            .await
            .unwrap();
        let image = described.reservations()[0].instances()[0].image_id();
        assert_eq!(image, Some(image_id.as_str()));
    }
    drop(agents);
}
