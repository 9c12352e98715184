//! `image promote` and `image roll` through the real binary against the emulator (images stay
//! pending as `lifeguard_e2e::images` says): a version whose image is pending is never made the
//! default, an available one is (and back again), and a roll alone refreshes the template's
//! groups onto the default and prunes nothing.

// Test code: a helper panics with a message on anything unexpected, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use aws_sdk_ec2::types::{ImageState, RequestLaunchTemplateData};
use lifeguard_e2e::images::{Bench, PARAMETER, bench, finish};
use lifeguard_e2e::{eventually, fleet};

/// Version 2 of the template, naming a new image of the golden instance (pending for a while).
async fn version_with_new_image(bench: &Bench) -> String {
    let image_id = bench
        .clients
        .ec2
        .create_image()
        .instance_id(&bench.instance_id)
        .name("release-2")
        .no_reboot(true)
        .send()
        .await
        .unwrap()
        .image_id()
        .unwrap()
        .to_string();
    bench
        .clients
        .ec2
        .create_launch_template_version()
        .launch_template_id(&bench.template_id)
        .source_version("1")
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id(&image_id)
                .build(),
        )
        .send()
        .await
        .unwrap();
    image_id
}

async fn image_available(bench: &Bench, image_id: &str) {
    eventually("the image available", Duration::from_secs(60), || async {
        let images = bench
            .clients
            .ec2
            .describe_images()
            .image_ids(image_id)
            .send()
            .await
            .unwrap();
        (images.images()[0].state() == Some(&ImageState::Available)).then_some(())
    })
    .await;
}

fn run(bench: &Bench, args: &[&str]) -> std::process::Output {
    bench.command(args).output().unwrap()
}

#[tokio::test]
async fn promote_makes_a_version_the_default_only_once_its_image_is_available() {
    let bench = bench().await;
    let image_id = version_with_new_image(&bench).await;

    let pending = run(&bench, &["promote", "--template", "web", "--version", "2"]);
    let stderr = String::from_utf8_lossy(&pending.stderr);
    assert_eq!(pending.status.code(), Some(75), "{stderr}");
    assert!(stderr.contains("pending"), "{stderr}");
    assert_eq!(bench.template().await.default_version_number(), Some(1));

    image_available(&bench, &image_id).await;

    let before = bench
        .emulator
        .calls("ec2", "ModifyLaunchTemplate", None)
        .await
        .len();
    let dry = run(
        &bench,
        &[
            "promote",
            "--template",
            "web",
            "--version",
            "2",
            "--ssm-parameter",
            PARAMETER,
            "--dry-run",
        ],
    );
    let stdout = String::from_utf8_lossy(&dry.stdout);
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert!(stdout.contains("DefaultVersion=2"), "{stdout}");
    assert!(stdout.contains(&format!("Value={image_id}")), "{stdout}");
    assert_eq!(
        bench
            .emulator
            .calls("ec2", "ModifyLaunchTemplate", None)
            .await
            .len(),
        before
    );
    assert_eq!(bench.parameter().await, None);

    let promoted = run(
        &bench,
        &[
            "promote",
            "--template",
            "web",
            "--version",
            "2",
            "--ssm-parameter",
            PARAMETER,
        ],
    );
    assert!(
        promoted.status.success(),
        "{}",
        String::from_utf8_lossy(&promoted.stderr)
    );
    assert_eq!(bench.template().await.default_version_number(), Some(2));
    assert_eq!(bench.parameter().await.as_deref(), Some(image_id.as_str()));

    // The way back.
    let back = run(&bench, &["promote", "--template", "web", "--version", "1"]);
    assert!(
        back.status.success(),
        "{}",
        String::from_utf8_lossy(&back.stderr)
    );
    assert_eq!(bench.template().await.default_version_number(), Some(1));
}

#[tokio::test]
async fn roll_alone_refreshes_the_groups_onto_the_default_and_prunes_nothing() {
    let bench = bench().await;
    fleet::group(&bench.clients, "web-fleet", &bench.template_id, 2, &[]).await;
    let before = eventually(
        "two instances in service",
        Duration::from_secs(60),
        || async {
            let instances = fleet::instances(&bench.clients, "web-fleet").await;
            (instances.len() == 2 && instances.iter().all(|(_, s)| s == "InService"))
                .then_some(instances)
        },
    )
    .await;
    // A new default the running instances do not match (skip-matching replaces only those).
    let image_id = version_with_new_image(&bench).await;
    image_available(&bench, &image_id).await;
    let promoted = run(&bench, &["promote", "--template", "web", "--version", "2"]);
    assert!(promoted.status.success());

    let child = bench
        .command(&[
            "roll",
            "--template",
            "web",
            "--min-healthy-percentage",
            "50",
            "--instance-warmup-secs",
            "0",
            "--poll-secs",
            "1",
        ])
        .spawn()
        .unwrap();
    let output = finish(child, || async {}).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("instance refresh"), "{stderr}");
    assert!(stderr.contains("1 group(s) rolled"), "{stderr}");

    let started = bench
        .emulator
        .calls("autoscaling", "StartInstanceRefresh", None)
        .await;
    assert_eq!(started.len(), 1, "{started:?}");
    let after = fleet::instances(&bench.clients, "web-fleet").await;
    assert_eq!(after.len(), 2, "{after:?}");
    for (id, _) in &after {
        assert!(
            !before.iter().any(|(old, _)| old == id),
            "{id} was not replaced: {stderr}"
        );
        let described = bench
            .clients
            .ec2
            .describe_instances()
            .instance_ids(id)
            .send()
            .await
            .unwrap();
        let instance = &described.reservations()[0].instances()[0];
        assert_eq!(instance.image_id(), Some(image_id.as_str()));
    }
    assert!(
        bench
            .emulator
            .calls("ec2", "DeleteLaunchTemplateVersions", None)
            .await
            .is_empty()
    );
    assert_eq!(bench.versions().await.len(), 2);
}
