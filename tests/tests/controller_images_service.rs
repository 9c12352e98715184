//! The image pipeline in the running controller: a `Refresh Image` command on the queue starts
//! it; the controller is killed while the image is pending and started again beside a second
//! replica; the pipeline finishes once, driven by the `EC2 AMI State Change` event and the
//! reconcile pass, never by an in-memory wait.
//!
//! The image stays pending 8 s (AWS: minutes), longer than the 2 s reconcile interval of the
//! scene's controllers, so the kill lands mid-wait and several passes look at a pending image.

// Test code: a helper panics with a message on anything unexpected, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use lifeguard_e2e::controller::scene;
use lifeguard_e2e::images::{self, tag_value, template_named};
use lifeguard_e2e::{eventually, fleet};
use serde_json::json;

const PARAMETER: &str = "/lifeguard/web/latestAmi";

#[tokio::test]
async fn a_refresh_command_survives_a_killed_controller_and_two_replicas_finish_it_once() {
    let scene = scene(1, 3600, &[]).await;
    let stage = &scene.stage;
    let clients = &stage.clients;
    stage
        .emulator
        .control_post("config", json!({ "ami_pending_secs": 8 }))
        .await;
    fleet::rule_to_queue(
        clients,
        "ami-state-to-lifeguard",
        json!({ "source": ["aws.ec2"], "detail-type": ["EC2 AMI State Change"] }),
        &stage.queue,
    )
    .await;
    let golden = stage.instances[0].clone();
    let mut first = scene.start_controller("a", "");
    first.wait_ready().await;

    scene
        .send(
            &json!({
                "source": "lifeguard.command",
                "detail-type": "Refresh Image",
                "detail": {
                    "template": "web",
                    "instance_ids": [golden],
                    "ssm_parameter": PARAMETER,
                }
            })
            .to_string(),
        )
        .await;
    eventually(
        "the pipeline waiting for its image",
        Duration::from_secs(30),
        || async {
            let template = template_named(clients, "web").await;
            (tag_value(&template, "lifeguard:image:stage") == "await-available").then_some(())
        },
    )
    .await;
    first.process.kill9();

    // Started again, with a second replica beside it.
    let again = scene.start_controller("a2", "");
    let second = scene.start_controller("b", "");
    again.wait_ready().await;
    second.wait_ready().await;
    let template = eventually("the pipeline done", Duration::from_secs(60), || async {
        let template = template_named(clients, "web").await;
        (tag_value(&template, "lifeguard:image:stage") == "done").then_some(template)
    })
    .await;

    let image_id = tag_value(&template, "lifeguard:image:image");
    assert!(image_id.starts_with("ami-"), "{image_id}");
    assert_eq!(
        stage.emulator.calls("ec2", "CreateImage", None).await.len(),
        1
    );
    let versions = clients
        .ec2
        .describe_launch_template_versions()
        .launch_template_name("web")
        .send()
        .await
        .unwrap();
    assert_eq!(versions.launch_template_versions().len(), 2);
    assert_eq!(template.default_version_number(), Some(2));
    let parameter = clients
        .ssm
        .get_parameter()
        .name(PARAMETER)
        .send()
        .await
        .unwrap();
    assert_eq!(
        parameter.parameter().and_then(|p| p.value()),
        Some(image_id.as_str())
    );
    // Each replica said what it did in its log; neither made a second version.
    let logs = format!("{}{}", again.process.log(), second.process.log());
    assert!(logs.contains(&image_id), "{logs}");
    again.process.terminate();
    second.process.terminate();
}

/// A `Refresh Image` command naming a group on a launch configuration: the running controller
/// bakes, waits through its reconcile passes (the image pending longer than one), copies the
/// configuration and switches the group, with the record in the group's tags.
#[tokio::test]
async fn a_refresh_command_for_a_launch_configuration_group_ends_on_the_copy() {
    let scene = scene(1, 3600, &[]).await;
    let stage = &scene.stage;
    let clients = &stage.clients;
    stage
        .emulator
        .control_post("config", json!({ "ami_pending_secs": 5 }))
        .await;
    let image = fleet::any_image(clients).await;
    images::legacy_group(clients, &image).await;
    let golden = stage.instances[0].clone();
    let controller = scene.start_controller("a", "");
    controller.wait_ready().await;
    scene
        .send(
            &json!({
                "source": "lifeguard.command",
                "detail-type": "Refresh Image",
                "detail": {
                    "group": images::GROUP,
                    "instance_ids": [golden],
                    "ssm_parameter": PARAMETER,
                }
            })
            .to_string(),
        )
        .await;
    let done = |group: &aws_sdk_autoscaling::types::AutoScalingGroup| {
        group
            .tags()
            .iter()
            .any(|t| t.key() == Some("lifeguard:image:stage") && t.value() == Some("done"))
    };
    eventually("the pipeline done", Duration::from_secs(60), || async {
        let groups = clients
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(images::GROUP)
            .send()
            .await
            .unwrap();
        done(&groups.auto_scaling_groups()[0]).then_some(())
    })
    .await;
    let copy = images::group_configuration(clients).await;
    assert!(copy.contains("-lifeguard-"), "{copy}");
    let copied = images::configuration(clients, &copy).await.unwrap();
    let made = stage.emulator.calls("ec2", "CreateImage", None).await;
    assert_eq!(made.len(), 1, "{made:?}");
    let image_id = copied.image_id().unwrap();
    assert_ne!(image_id, image);
    let group = clients
        .autoscaling
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(images::GROUP)
        .send()
        .await
        .unwrap()
        .auto_scaling_groups()[0]
        .clone();
    let record = |key: &str| {
        group.tags().iter().find(|t| t.key() == Some(key)).map(|t| {
            (
                t.value().unwrap_or_default().to_string(),
                t.propagate_at_launch(),
            )
        })
    };
    assert_eq!(
        record("lifeguard:image:stage"),
        Some(("done".to_string(), Some(false)))
    );
    assert_eq!(
        record("lifeguard:image:image").map(|(v, _)| v).as_deref(),
        Some(image_id)
    );
    controller.process.terminate();
}
