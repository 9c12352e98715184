//! The image pipeline's CloudTrail triggers in the running controller, with the emulator
//! sending "AWS API Call via CloudTrail" events for its successful calls: an image someone makes
//! with the marker is taken through the whole pipeline; one without it, AppStream's and failed
//! calls change nothing; a new group pinned to a template version is moved to `$Latest`.
//!
//! Images stay pending 5 s (AWS: minutes): longer than the scene's 2 s reconcile interval, so
//! the pipeline is seen waiting, short enough for a test.

// Test code: a helper panics with a message on anything unexpected, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
use lifeguard_e2e::controller::{Scene, scene};
use lifeguard_e2e::images::{tag_value, template_named};
use lifeguard_e2e::{eventually, fleet};
use serde_json::json;

async fn triggered_scene() -> Scene {
    let scene = scene(1, 3600, &[]).await;
    let stage = &scene.stage;
    stage
        .emulator
        .control_post(
            "config",
            json!({ "ami_pending_secs": 5, "cloudtrail_events": true }),
        )
        .await;
    fleet::rule_to_queue(
        &stage.clients,
        "images-to-lifeguard",
        json!({
            "source": ["aws.ec2", "aws.autoscaling"],
            "detail-type": ["AWS API Call via CloudTrail", "EC2 AMI State Change"]
        }),
        &stage.queue,
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
        .launch_template_id()
        .unwrap()
        .to_string();
    stage
        .clients
        .ec2
        .create_tags()
        .resources(template)
        .tags(
            Tag::builder()
                .key("lifeguard:managed")
                .value("true")
                .build(),
        )
        .send()
        .await
        .unwrap();
    scene
}

const ERROR_CODE: &str = include_str!(
    "../../common/tests/fixtures/aws-events/eventbridge-cloudtrail-createautoscalinggroup-errorcode.json"
);
const APPSTREAM: &str = include_str!(
    "../../common/tests/fixtures/aws-events/cloudtrail-record-createimage-appstream-NEGATIVE.json"
);

#[tokio::test]
async fn an_image_made_with_the_marker_goes_through_the_pipeline_and_others_do_nothing() {
    let scene = triggered_scene().await;
    let controller = scene.start_controller("a", "");
    controller.wait_ready().await;
    let clients = &scene.stage.clients;
    let golden = scene.stage.instances[0].clone();
    let create = |name: &str, tags: Vec<Tag>| {
        let mut call = clients.ec2.create_image().instance_id(&golden).name(name);
        if !tags.is_empty() {
            call = call.tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Image)
                    .set_tags(Some(tags))
                    .build(),
            );
        }
        call.send()
    };
    // Without the marker, and a failed CreateAutoScalingGroup and AppStream's CreateImage from
    // the fixtures: nothing.
    create(
        "nightly",
        vec![Tag::builder().key("team").value("web").build()],
    )
    .await
    .unwrap();
    scene.send(ERROR_CODE).await;
    let appstream = json!({
        "version": "0", "id": "7f1c3b5e-0000-4000-8000-000000000001",
        "detail-type": "AWS API Call via CloudTrail", "source": "aws.appstream",
        "account": "123456789012", "time": "2026-12-03T10:00:00Z", "region": "us-east-1",
        "resources": [],
        "detail": serde_json::from_str::<serde_json::Value>(APPSTREAM).unwrap(),
    });
    scene.send(&appstream.to_string()).await;
    // With the marker: the whole pipeline, from await-available.
    let marked = create(
        "release-42",
        vec![Tag::builder().key("lifeguard:release").value("web").build()],
    )
    .await
    .unwrap()
    .image_id()
    .unwrap()
    .to_string();
    let template = eventually(
        "the marked image promoted",
        Duration::from_secs(60),
        || async {
            let template = template_named(&scene.stage.clients, "web").await;
            (template.default_version_number() == Some(2)).then_some(template)
        },
    )
    .await;
    let versions = clients
        .ec2
        .describe_launch_template_versions()
        .launch_template_name("web")
        .send()
        .await
        .unwrap();
    let new = versions
        .launch_template_versions()
        .iter()
        .find(|v| v.version_number() == Some(2))
        .unwrap();
    assert_eq!(
        new.launch_template_data().and_then(|d| d.image_id()),
        Some(marked.as_str())
    );
    assert_eq!(versions.launch_template_versions().len(), 2);
    eventually("the pipeline done", Duration::from_secs(30), || async {
        let template = template_named(&scene.stage.clients, "web").await;
        (tag_value(&template, "lifeguard:image:stage") == "done").then_some(())
    })
    .await;
    assert_eq!(tag_value(&template, "lifeguard:image:image"), marked);
    // The pipeline made no image of its own: the two above are the only ones.
    assert_eq!(
        scene
            .stage
            .emulator
            .calls("ec2", "CreateImage", None)
            .await
            .len(),
        2
    );
    assert!(
        scene
            .stage
            .emulator
            .calls("autoscaling", "UpdateAutoScalingGroup", None)
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn a_new_managed_group_pinned_to_a_version_is_moved_to_latest() {
    let scene = triggered_scene().await;
    let controller = scene.start_controller("a", "");
    controller.wait_ready().await;
    let autoscaling = &scene.stage.clients.autoscaling;
    for (name, managed) in [("pinned", true), ("unmanaged", false)] {
        let mut call = autoscaling
            .create_auto_scaling_group()
            .auto_scaling_group_name(name)
            .launch_template(
                aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                    .launch_template_name("web")
                    .version("1")
                    .build(),
            )
            .min_size(0)
            .max_size(1)
            .desired_capacity(0)
            .availability_zones("us-east-1a");
        if managed {
            call = call.tags(
                aws_sdk_autoscaling::types::Tag::builder()
                    .key("lifeguard:managed")
                    .value("true")
                    .build(),
            );
        }
        call.send().await.unwrap();
    }
    let version_of = |name: &'static str| async move {
        autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .unwrap()
            .auto_scaling_groups()[0]
            .launch_template()
            .and_then(|t| t.version())
            .map(str::to_string)
    };
    eventually(
        "the pinned group on $Latest",
        Duration::from_secs(30),
        || async { (version_of("pinned").await.as_deref() == Some("$Latest")).then_some(()) },
    )
    .await;
    assert_eq!(version_of("unmanaged").await.as_deref(), Some("1"));
    let updates = scene
        .stage
        .emulator
        .calls("autoscaling", "UpdateAutoScalingGroup", None)
        .await;
    assert_eq!(updates.len(), 1, "{updates:?}");
}
