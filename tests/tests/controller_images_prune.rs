//! The image pipeline's prune and resume through the real `lifeguard-controller` binary against
//! the emulator (`lifeguard_e2e::images` says how long images stay pending and why).

// Test code: a helper panics with a message on anything unexpected, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use aws_sdk_autoscaling::types::LaunchTemplateSpecification;
use aws_sdk_ec2::types::{RequestLaunchTemplateData, ResourceType, Tag, TagSpecification};
use lifeguard_e2e::eventually;
use lifeguard_e2e::images::{Bench, bench, finish};

/// An image as the pipeline makes them (tagged for the template); pending for a while.
async fn baked_image(bench: &Bench, name: &str) -> String {
    let tags = Tag::builder()
        .key("lifeguard:image:template")
        .value(&bench.template_id)
        .build();
    bench
        .clients
        .ec2
        .create_image()
        .instance_id(&bench.instance_id)
        .name(name)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Image)
                .tags(tags.clone())
                .build(),
        )
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Snapshot)
                .tags(tags)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .image_id()
        .unwrap()
        .to_string()
}

/// Waits until the image is available; its snapshots.
async fn available(bench: &Bench, image_id: String) -> (String, Vec<String>) {
    let snapshots = eventually("the image available", Duration::from_secs(60), || {
        let (ec2, id) = (bench.clients.ec2.clone(), image_id.clone());
        async move {
            let image = ec2.describe_images().image_ids(&id).send().await.ok()?;
            let image = image.images().first()?.clone();
            (image.state() == Some(&aws_sdk_ec2::types::ImageState::Available)).then(|| {
                image
                    .block_device_mappings()
                    .iter()
                    .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()))
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
        }
    })
    .await;
    (image_id, snapshots)
}

async fn add_version(bench: &Bench, image_id: &str) -> i64 {
    bench
        .clients
        .ec2
        .create_launch_template_version()
        .launch_template_id(&bench.template_id)
        .source_version("1")
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id(image_id)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .launch_template_version()
        .and_then(|v| v.version_number())
        .unwrap()
}

#[tokio::test]
async fn prune_keeps_the_newest_the_default_the_latest_and_pinned_and_only_unused_images_go() {
    let bench = bench().await;
    let ec2 = &bench.clients.ec2;
    // Versions 2–7, each on an image the pipeline made (all requested first: one pending wait).
    let mut pending = Vec::new();
    for n in 2..=7 {
        pending.push(baked_image(&bench, &format!("lifeguard-test-{n}")).await);
    }
    let mut images = Vec::new();
    for image_id in pending {
        images.push(available(&bench, image_id).await);
    }
    for (image_id, _) in &images {
        add_version(&bench, image_id).await;
    }
    // Default 3; a group pins 4; a launch configuration uses version 5's image.
    ec2.modify_launch_template()
        .launch_template_id(&bench.template_id)
        .default_version("3")
        .send()
        .await
        .unwrap();
    bench
        .clients
        .autoscaling
        .create_auto_scaling_group()
        .auto_scaling_group_name("pinned")
        .launch_template(
            LaunchTemplateSpecification::builder()
                .launch_template_id(&bench.template_id)
                .version("4")
                .build(),
        )
        .min_size(0)
        .max_size(1)
        .desired_capacity(0)
        .availability_zones("us-east-1a")
        .send()
        .await
        .unwrap();
    bench
        .clients
        .autoscaling
        .create_launch_configuration()
        .launch_configuration_name("legacy")
        .image_id(&images[3].0)
        .instance_type("t3.micro")
        .send()
        .await
        .unwrap();

    let output = bench
        .command(&["prune", "--template", "web", "--keep", "2", "--deregister"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Kept: 7 and 6 (newest two), 3 (default), 4 (pinned). Deleted: 1, 2, 5.
    let mut left: Vec<i64> = bench
        .versions()
        .await
        .iter()
        .filter_map(|v| v.version_number())
        .collect();
    left.sort_unstable();
    assert_eq!(left, vec![3, 4, 6, 7], "{stdout}");
    // Version 2's image was the pipeline's and nothing uses it now: gone with its snapshots.
    // Version 5's image is a launch configuration's; version 1's is not the pipeline's.
    let (gone, gone_snapshots) = &images[0];
    let described = ec2.describe_images().image_ids(gone).send().await;
    let still_there = described
        .ok()
        .map(|d| {
            d.images()
                .iter()
                .any(|i| i.state() == Some(&aws_sdk_ec2::types::ImageState::Available))
        })
        .unwrap_or(false);
    assert!(!still_there, "{gone} should be deregistered: {stdout}");
    let snapshots = ec2
        .describe_snapshots()
        .owner_ids("self")
        .send()
        .await
        .unwrap();
    let remaining: Vec<&str> = snapshots
        .snapshots()
        .iter()
        .filter_map(|s| s.snapshot_id())
        .collect();
    assert!(!gone_snapshots.is_empty());
    for snapshot in gone_snapshots {
        assert!(!remaining.contains(&snapshot.as_str()), "{snapshot} left");
    }
    let deregistered = bench.emulator.calls("ec2", "DeregisterImage", None).await;
    assert_eq!(deregistered.len(), 1, "{deregistered:?}");
    for kept in [&images[3].0, &images[1].0] {
        let image = ec2.describe_images().image_ids(kept).send().await.unwrap();
        assert_eq!(image.images().len(), 1, "{kept} must stay");
    }
}

#[tokio::test]
async fn a_killed_bake_is_resumed_and_finishes_once_even_resumed_twice_at_once() {
    let bench = bench().await;
    let mut first = bench.bake(&[]);
    eventually("the pipeline's image", Duration::from_secs(30), || {
        let images = bench.images_of_pipeline();
        async move { (!images.await.is_empty()).then_some(()) }
    })
    .await;
    first.kill().unwrap();
    first.wait().unwrap();
    let status = bench
        .command(&["status", "--template", "web"])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["pipeline"]["stage"], "await-available");

    // Two operators resume at once: one image, one new version, whatever the interleaving.
    let resume = || {
        bench
            .command(&["resume", "--template", "web", "--poll-secs", "1"])
            .spawn()
            .unwrap()
    };
    let (a, b) = (resume(), resume());
    let a = finish(a, || async {}).await;
    let b = finish(b, || async {}).await;
    for output in [&a, &b] {
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert_eq!(
        bench.emulator.calls("ec2", "CreateImage", None).await.len(),
        1
    );
    assert_eq!(bench.versions().await.len(), 2);
    assert_eq!(bench.template().await.default_version_number(), Some(2));
    let image = &bench.images_of_pipeline().await[0];
    assert_eq!(
        bench.parameter().await.as_deref(),
        image.image_id(),
        "the parameter names the one image"
    );
}
