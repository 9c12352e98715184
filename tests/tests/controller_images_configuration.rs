//! The image pipeline for a group that launches from a launch configuration, through the real
//! `lifeguard-controller image bake --group` against the emulator (`lifeguard_e2e::images` says
//! how long images stay pending and why): the group ends on a copy of its configuration with
//! the new image and every other setting, and instances it launches afterwards use the image.

// Test code: a helper panics with a message on anything unexpected, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use aws_sdk_autoscaling::types::LaunchConfiguration;
use lifeguard_e2e::images::{
    GROUP, PARAMETER, SOURCE, bench, configuration, finish, group_configuration, legacy_group,
};
use lifeguard_e2e::{eventually, fleet};

/// Everything a configuration sets but its name, ARN, time and image.
fn settings(configuration: &LaunchConfiguration) -> LaunchConfiguration {
    let mut settings = configuration.clone();
    settings.launch_configuration_name = None;
    settings.launch_configuration_arn = None;
    settings.created_time = None;
    settings.image_id = None;
    settings
}

#[tokio::test]
async fn a_launch_configuration_group_ends_on_a_copy_with_the_new_image() {
    let bench = bench().await;
    let clients = &bench.clients;
    let old_image = fleet::any_image(clients).await;
    legacy_group(clients, &old_image).await;
    let source = configuration(clients, SOURCE).await.unwrap();
    assert_eq!(
        source.kernel_id(),
        Some(""),
        "the emulator answers as AWS does"
    );

    let bake = |extra: &[&str]| {
        let mut args = vec![
            "bake",
            "--group",
            GROUP,
            "--instance",
            &bench.instance_id,
            "--ssm-parameter",
            PARAMETER,
            "--delete-old-configuration",
            "--poll-secs",
            "1",
        ];
        args.extend_from_slice(extra);
        bench.command(&args).spawn().unwrap()
    };
    let output = finish(bake(&[]), || async {
        // While the image is pending, the group stays where it was.
        let pending = bench
            .images_of_pipeline()
            .await
            .iter()
            .any(|i| i.state() == Some(&aws_sdk_ec2::types::ImageState::Pending));
        if pending {
            assert_eq!(group_configuration(clients).await, SOURCE);
        }
    })
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");

    let images = bench.images_of_pipeline().await;
    assert_eq!(images.len(), 1, "{images:?}");
    let image_id = images[0].image_id().unwrap().to_string();
    let copy_name = group_configuration(clients).await;
    assert!(
        copy_name.starts_with("legacy-v1-lifeguard-"),
        "{copy_name}: {stderr}"
    );
    let copy = configuration(clients, &copy_name).await.unwrap();
    assert_eq!(copy.image_id(), Some(image_id.as_str()));
    assert_eq!(settings(&copy), settings(&source));
    assert_eq!(bench.parameter().await.as_deref(), Some(image_id.as_str()));
    // The operator's own configuration is kept; lifeguard deletes only its copies.
    assert!(configuration(clients, SOURCE).await.is_some());
    assert!(
        stderr.contains("lifeguard deletes only its own copies"),
        "{stderr}"
    );
    // No launch template was touched.
    assert!(
        bench
            .emulator
            .calls("ec2", "CreateLaunchTemplateVersion", None)
            .await
            .is_empty()
    );

    // The group launches from the new image.
    clients
        .autoscaling
        .set_desired_capacity()
        .auto_scaling_group_name(GROUP)
        .desired_capacity(2)
        .send()
        .await
        .unwrap();
    eventually(
        "an instance of the group on the new image",
        std::time::Duration::from_secs(30),
        || async {
            let found = clients
                .ec2
                .describe_instances()
                .filters(
                    aws_sdk_ec2::types::Filter::builder()
                        .name("image-id")
                        .values(&image_id)
                        .build(),
                )
                .send()
                .await
                .unwrap();
            found
                .reservations()
                .iter()
                .flat_map(|r| r.instances())
                .any(|i| i.instance_id() != Some(bench.instance_id.as_str()))
                .then_some(())
        },
    )
    .await;

    // A second pipeline copies the copy, still named after the original, and deletes the copy
    // the group leaves.
    let output = finish(bake(&[]), || async {}).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let second = group_configuration(clients).await;
    assert!(
        second.starts_with("legacy-v1-lifeguard-") && second != copy_name,
        "{second}"
    );
    assert!(
        configuration(clients, &copy_name).await.is_none(),
        "{stderr}"
    );
    assert!(configuration(clients, SOURCE).await.is_some());
}

#[tokio::test]
async fn a_dry_run_of_the_launch_configuration_path_changes_nothing() {
    let bench = bench().await;
    let clients = &bench.clients;
    let image = fleet::any_image(clients).await;
    legacy_group(clients, &image).await;
    let changes = [
        ("autoscaling", "CreateOrUpdateTags"),
        ("autoscaling", "CreateLaunchConfiguration"),
        ("autoscaling", "UpdateAutoScalingGroup"),
        ("autoscaling", "DeleteLaunchConfiguration"),
        ("ec2", "CreateImage"),
    ];
    let before = bench.emulator.call_counts(&changes).await;
    let output = bench
        .command(&[
            "bake",
            "--group",
            GROUP,
            "--instance",
            &bench.instance_id,
            "--poll-secs",
            "1",
            "--dry-run",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for shown in [
        "autoscaling CreateOrUpdateTags legacy",
        "ec2 CreateImage",
        "autoscaling CreateLaunchConfiguration",
        "autoscaling UpdateAutoScalingGroup AutoScalingGroupName=legacy",
    ] {
        assert!(stdout.contains(shown), "{shown} missing:\n{stdout}");
    }
    assert_eq!(
        bench.emulator.call_counts(&changes).await,
        before,
        "calls made of {changes:?}"
    );
    assert_eq!(group_configuration(clients).await, SOURCE);
}
