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
use lifeguard_e2e::images::{tag_value, template_named};
use serde_json::json;

/// `image bake --roll` of the golden instance through the real binary, with the scene
/// controller's configuration.
fn bake_and_roll(
    config: &std::path::Path,
    golden: &str,
    min_healthy_percentage: &str,
) -> tokio::task::JoinHandle<std::process::Output> {
    let (config, golden) = (config.to_path_buf(), golden.to_string());
    let min_healthy_percentage = min_healthy_percentage.to_string();
    tokio::task::spawn_blocking(move || {
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
                &min_healthy_percentage,
                "--instance-warmup-secs",
                "0",
                "--poll-secs",
                "1",
            ])
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .output()
            .unwrap()
    })
}

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

    let output = bake_and_roll(&controller.config, &old[0], "50")
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // One refresh, started by the command or by the running service's reconcile pass (both
    // advance the pipeline recorded on the template; whichever comes first starts it).
    let refreshes = stage
        .emulator
        .calls("autoscaling", "StartInstanceRefresh", None)
        .await;
    assert_eq!(refreshes.len(), 1, "{refreshes:?}\n{stderr}");

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
    let image_id = tag_value(
        &template_named(&stage.clients, "web").await,
        "lifeguard:image:image",
    );
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

/// A pinned group's refresh whose replacement is abandoned at launch fails; Auto Scaling rolls
/// the group back (the pipeline asked for auto-rollback, as the group pins a version), and the
/// pipeline ends failed with Auto Scaling's outcome and prunes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_that_fails_rolls_the_pinned_group_back_and_fails_the_pipeline() {
    let scene = scene(1, 3600, &[]).await;
    let stage = &scene.stage;
    let autoscaling = &stage.clients.autoscaling;
    stage
        .emulator
        .control_post("config", json!({ "ami_pending_secs": 3 }))
        .await;
    autoscaling
        .update_auto_scaling_group()
        .auto_scaling_group_name(GROUP)
        .launch_template(
            aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                .launch_template_name("web")
                .version("1")
                .build(),
        )
        .send()
        .await
        .unwrap();
    autoscaling
        .put_lifecycle_hook()
        .auto_scaling_group_name(GROUP)
        .lifecycle_hook_name("ready")
        .lifecycle_transition("autoscaling:EC2_INSTANCE_LAUNCHING")
        .heartbeat_timeout(3600)
        .default_result("ABANDON")
        .send()
        .await
        .unwrap();
    let old = stage.instances[0].clone();
    let dir = stage.path(&old);
    std::fs::create_dir_all(&dir).unwrap();
    let config = config_for(&stage.emulator, &old, &dir, &stage.archive_config());
    let agent = ServiceProcess::start_with_env(&dir, &config, &[]);
    agent
        .wait_for_log("lifeguard-agent watching", Duration::from_secs(60))
        .await;
    let controller = scene.start_controller("a", "");
    controller.wait_ready().await;

    let bake = bake_and_roll(&controller.config, &old, "0");
    // The refresh's replacement is abandoned at launch; the rollback's is let in.
    let mut answered = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !bake.is_finished() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bake did not end"
        );
        let status = autoscaling
            .describe_instance_refreshes()
            .auto_scaling_group_name(GROUP)
            .send()
            .await
            .unwrap()
            .instance_refreshes()
            .first()
            .and_then(|r| r.status().map(|s| s.as_str().to_string()));
        let waiting = autoscaling
            .describe_auto_scaling_instances()
            .send()
            .await
            .unwrap();
        for instance in waiting.auto_scaling_instances() {
            let id = instance.instance_id().unwrap_or_default().to_string();
            if instance.lifecycle_state() != Some("Pending:Wait") || answered.contains(&id) {
                continue;
            }
            let result = match status.as_deref() {
                Some("InProgress") => "ABANDON",
                Some("RollbackInProgress") => "CONTINUE",
                _ => continue,
            };
            autoscaling
                .complete_lifecycle_action()
                .auto_scaling_group_name(GROUP)
                .lifecycle_hook_name("ready")
                .instance_id(&id)
                .lifecycle_action_result(result)
                .send()
                .await
                .unwrap();
            answered.insert(id);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let output = bake.await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Rollback"), "{stderr}");
    // The group is back on version 1; prune did not run.
    let group = autoscaling
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(GROUP)
        .send()
        .await
        .unwrap()
        .auto_scaling_groups()[0]
        .clone();
    assert_eq!(
        group.launch_template().and_then(|t| t.version()),
        Some("1"),
        "{stderr}"
    );
    assert!(
        stage
            .emulator
            .calls("ec2", "DeleteLaunchTemplateVersions", None)
            .await
            .is_empty()
    );
    // The template's default is back at version 1 too: new launches of groups on `$Default`
    // do not take the version that failed.
    let template = template_named(&stage.clients, "web").await;
    assert_eq!(template.default_version_number(), Some(1), "{stderr}");
    // The old instance still left through its agent's drain, logs archived.
    let keys = stage.keys(&format!("lifeguard/{GROUP}/{old}/")).await;
    assert!(
        keys.iter().any(|k| k.ends_with("-scale_in.tar.gz")),
        "{keys:?}"
    );
    drop(agent);
}
