//! The image pipeline from an operator's command, through the real `lifeguard-controller`
//! binary against the emulator (`lifeguard_e2e::images` says how long images stay pending and
//! why): bake from an instance, a failed image, a dry run, a second pipeline refused.

// Test code: a helper panics with a message on anything unexpected, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use lifeguard_e2e::eventually;
use lifeguard_e2e::images::{PARAMETER, bench, data_without_image, finish};
use serde_json::{Value, json};

#[tokio::test]
async fn bake_moves_the_template_onto_the_image_only_once_it_is_available() {
    let bench = bench().await;
    let child = bench.bake(&[]);
    let looks_while_pending = std::cell::Cell::new(0);
    let output = finish(child, || async {
        let images = bench.images_of_pipeline().await;
        let pending = images.iter().any(|i| {
            i.state()
                .is_some_and(|s| *s == aws_sdk_ec2::types::ImageState::Pending)
        });
        if pending {
            looks_while_pending.set(looks_while_pending.get() + 1);
            assert_eq!(
                bench.versions().await.len(),
                1,
                "a version appeared while the image was pending"
            );
            assert_eq!(bench.template().await.default_version_number(), Some(1));
        }
    })
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let looks = looks_while_pending.get();
    assert!(looks >= 3, "{looks} looks while pending: {stderr}");
    // The live display said what it waited for, snapshots included.
    assert!(stderr.contains("waiting"), "{stderr}");
    assert!(stderr.contains("snap-"), "{stderr}");

    let images = bench.images_of_pipeline().await;
    assert_eq!(images.len(), 1, "{images:?}");
    let image = &images[0];
    let image_id = image.image_id().unwrap();
    assert_eq!(
        image.state(),
        Some(&aws_sdk_ec2::types::ImageState::Available)
    );
    assert!(image.tags().iter().any(|t| {
        t.key() == Some("lifeguard:image:template") && t.value() == Some(&bench.template_id)
    }));

    // Version 2: version 1's every field but the image.
    let mut versions = bench.versions().await;
    versions.sort_by_key(|v| v.version_number());
    assert_eq!(versions.len(), 2);
    let new = &versions[1];
    assert_eq!(new.version_number(), Some(2));
    assert_eq!(
        new.launch_template_data().unwrap().image_id(),
        Some(image_id)
    );
    assert_eq!(data_without_image(new), data_without_image(&versions[0]));
    assert_eq!(bench.template().await.default_version_number(), Some(2));
    assert_eq!(bench.parameter().await.as_deref(), Some(image_id));

    // One image, one version: no retry made a second.
    assert_eq!(
        bench.emulator.calls("ec2", "CreateImage", None).await.len(),
        1
    );
    let created = bench
        .emulator
        .calls("ec2", "CreateLaunchTemplateVersion", None)
        .await;
    assert_eq!(created.len(), 1, "{created:?}");

    // The record on the template says it is done; `image status` reads it back.
    let status = bench
        .command(&["status", "--template", "web"])
        .output()
        .unwrap();
    assert!(status.status.success());
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["pipeline"]["stage"], "done");
    assert_eq!(status["pipeline"]["image_id"], image_id);
    assert_eq!(status["default_version"], 2);
}

#[tokio::test]
async fn a_failed_image_stops_the_pipeline_and_leaves_the_template_untouched() {
    let bench = bench().await;
    let child = bench.bake(&[]);
    // Failed as soon as it exists, well before its pending time is over.
    let image = eventually("the pipeline's image", Duration::from_secs(30), || {
        let images = bench.images_of_pipeline();
        async move {
            images
                .await
                .first()
                .and_then(|i| i.image_id().map(str::to_string))
        }
    })
    .await;
    bench
        .emulator
        .control_post(
            &format!("images/{image}/fail"),
            json!({ "message": "snapshot copy failed", "when": "now" }),
        )
        .await;
    let output = finish(child, || async {}).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("failed"), "{stderr}");
    assert!(stderr.contains("snapshot copy failed"), "{stderr}");

    assert_eq!(bench.versions().await.len(), 1);
    assert_eq!(bench.template().await.default_version_number(), Some(1));
    assert_eq!(bench.parameter().await, None);
    for action in ["CreateLaunchTemplateVersion", "ModifyLaunchTemplate"] {
        assert!(bench.emulator.calls("ec2", action, None).await.is_empty());
    }
    let tags = bench.template().await.tags().to_vec();
    let tag = |key: &str| {
        tags.iter()
            .find(|t| t.key() == Some(key))
            .and_then(|t| t.value())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(tag("lifeguard:image:stage"), "failed");
    assert!(tag("lifeguard:image:reason").contains("snapshot copy failed"));

    // A failed pipeline no longer holds the template: a new one may start (dry run here).
    let again = bench.bake(&["--dry-run"]).wait_with_output().unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

#[tokio::test]
async fn a_dry_run_prints_the_calls_and_makes_none() {
    let bench = bench().await;
    let output = bench.bake(&["--dry-run"]).wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for call in [
        format!("ec2 CreateImage InstanceId={}", bench.instance_id),
        format!(
            "ec2 CreateLaunchTemplateVersion LaunchTemplateId={} SourceVersion=1",
            bench.template_id
        ),
        format!(
            "ec2 ModifyLaunchTemplate LaunchTemplateId={} DefaultVersion=2",
            bench.template_id
        ),
        format!("ssm PutParameter Name={PARAMETER}"),
    ] {
        assert!(stdout.contains(&call), "{call} missing from:\n{stdout}");
    }
    assert!(
        bench.mutating_calls().await.is_empty(),
        "{:?}",
        bench.mutating_calls().await
    );
    assert_eq!(bench.versions().await.len(), 1);
    assert!(bench.images_of_pipeline().await.is_empty());
}

#[tokio::test]
async fn a_second_pipeline_is_refused_while_one_runs() {
    let bench = bench().await;
    let first = bench.bake(&[]);
    eventually(
        "the first pipeline's image",
        Duration::from_secs(30),
        || {
            let fut = bench.images_of_pipeline();
            async move { (!fut.await.is_empty()).then_some(()) }
        },
    )
    .await;
    let second = bench.bake(&[]).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(75), "{stderr}");
    assert!(stderr.contains("resume it with"), "{stderr}");
    let output = finish(first, || async {}).await;
    assert!(output.status.success());
    assert_eq!(
        bench.emulator.calls("ec2", "CreateImage", None).await.len(),
        1
    );
}
