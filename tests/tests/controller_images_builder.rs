//! Builder mode through the real `lifeguard-controller image bake --builder` against the
//! emulator: a builder launched from the template, patched through SSM Run Command, stopped,
//! imaged and terminated; a failed patch; a run killed mid-patch and resumed; a dry run.
//!
//! The patch's Run Command takes 3 s here (AWS: as long as the patch; minutes) so that it spans
//! several of the command's 1 s polls; images stay pending as `lifeguard_e2e::images` says.
//! Stopping takes the emulator's default 5 s.

// Test code: a helper panics with a message on anything unexpected, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use lifeguard_e2e::images::{Bench, PARAMETER, bench, finish};
use serde_json::{Value, json};

const PATCH_SECS: f64 = 3.0;

async fn builder_bench() -> Bench {
    let bench = bench().await;
    bench
        .emulator
        .control_post("config", json!({ "ssm_command_secs": PATCH_SECS }))
        .await;
    bench
}

/// Every instance tagged as a builder: id and state.
async fn builders(bench: &Bench) -> Vec<(String, String)> {
    let found = bench
        .clients
        .ec2
        .describe_instances()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag-key")
                .values("lifeguard:image:builder")
                .build(),
        )
        .send()
        .await
        .unwrap();
    found
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .map(|i| {
            (
                i.instance_id().unwrap().to_string(),
                i.state()
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_string())
                    .unwrap_or_default(),
            )
        })
        .collect()
}

async fn instance(bench: &Bench, id: &str) -> aws_sdk_ec2::types::Instance {
    bench
        .clients
        .ec2
        .describe_instances()
        .instance_ids(id)
        .send()
        .await
        .unwrap()
        .reservations()[0]
        .instances()[0]
        .clone()
}

fn bake_builder(bench: &Bench, extra: &[&str]) -> std::process::Child {
    let mut args = vec![
        "bake",
        "--template",
        "web",
        "--builder",
        "--ssm-parameter",
        PARAMETER,
        "--poll-secs",
        "1",
    ];
    args.extend_from_slice(extra);
    bench.command(&args).spawn().unwrap()
}

/// The sequence number of the only call of `action` matching `pick`.
async fn seq_of(bench: &Bench, service: &str, action: &str, pick: impl Fn(&Value) -> bool) -> u64 {
    let calls: Vec<Value> = bench
        .emulator
        .calls(service, action, None)
        .await
        .into_iter()
        .filter(|c| pick(c))
        .collect();
    assert_eq!(calls.len(), 1, "{service} {action}: {calls:?}");
    calls[0]["seq"].as_u64().unwrap()
}

fn names(call: &Value, id: &str) -> bool {
    call["params"].to_string().contains(id)
}

#[tokio::test]
async fn a_builder_is_launched_patched_stopped_imaged_and_terminated() {
    let bench = builder_bench().await;
    let template_image = instance(&bench, &bench.instance_id)
        .await
        .image_id()
        .unwrap()
        .to_string();
    let output = finish(bake_builder(&bench, &[]), || async {
        // The template stays as it was while the builder works and the image is pending.
        if !builders(&bench).await.is_empty()
            && bench
                .images_of_pipeline()
                .await
                .iter()
                .all(|i| i.state() != Some(&aws_sdk_ec2::types::ImageState::Available))
        {
            assert_eq!(bench.versions().await.len(), 1);
        }
    })
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");

    // One builder, launched from the template's version 1, and terminated: nothing runs.
    let all = builders(&bench).await;
    assert_eq!(all.len(), 1, "{all:?}");
    let (builder, state) = &all[0];
    assert_eq!(state, "terminated", "{stderr}");
    let launched = instance(&bench, builder).await;
    assert_eq!(launched.image_id(), Some(template_image.as_str()));
    assert_eq!(
        launched.instance_type(),
        Some(&aws_sdk_ec2::types::InstanceType::T3Micro)
    );

    // Patched with AWS-RunPatchBaseline, and the invocation succeeded.
    let sends = bench.emulator.calls("ssm", "SendCommand", None).await;
    assert_eq!(sends.len(), 1, "{sends:?}");
    let params = &sends[0]["params"];
    assert_eq!(
        params["DocumentName"],
        json!("AWS-RunPatchBaseline"),
        "{params}"
    );
    assert_eq!(params["InstanceIds"], json!([builder]), "{params}");
    assert_eq!(
        params["Parameters"]["Operation"],
        json!(["Install"]),
        "{params}"
    );

    // In order: launch, patch, stop, image, terminate, and only then the template.
    let run = seq_of(&bench, "ec2", "RunInstances", |c| {
        names(c, "LaunchTemplate")
    })
    .await;
    let send = sends[0]["seq"].as_u64().unwrap();
    let stop = seq_of(&bench, "ec2", "StopInstances", |c| names(c, builder)).await;
    let image = seq_of(&bench, "ec2", "CreateImage", |c| names(c, builder)).await;
    let terminate = seq_of(&bench, "ec2", "TerminateInstances", |c| names(c, builder)).await;
    let version = seq_of(&bench, "ec2", "CreateLaunchTemplateVersion", |_| true).await;
    assert!(
        run < send && send < stop && stop < image && image < terminate && terminate < version,
        "run {run}, send {send}, stop {stop}, image {image}, terminate {terminate}, \
         version {version}"
    );

    // The template's new default names the image, and the parameter holds it.
    let images = bench.images_of_pipeline().await;
    assert_eq!(images.len(), 1, "{images:?}");
    let image_id = images[0].image_id().unwrap();
    assert_eq!(bench.template().await.default_version_number(), Some(2));
    let versions = bench.versions().await;
    let new = versions
        .iter()
        .find(|v| v.version_number() == Some(2))
        .unwrap();
    assert_eq!(
        new.launch_template_data().unwrap().image_id(),
        Some(image_id)
    );
    assert_eq!(bench.parameter().await.as_deref(), Some(image_id));
    for said in [
        "launched from version 1",
        "patch AWS-RunPatchBaseline sent",
        "builder stopped",
    ] {
        assert!(stderr.contains(said), "{said}: {stderr}");
    }
}

#[tokio::test]
async fn a_failed_patch_terminates_the_builder_and_leaves_the_template_untouched() {
    let bench = builder_bench().await;
    bench
        .emulator
        .control_post(
            "ssm/outcomes",
            json!({
                "status": "Failed",
                "response_code": 100,
                "stderr": "E: Unable to fetch some archives, maybe run apt-get update",
            }),
        )
        .await;
    let output = finish(bake_builder(&bench, &[]), || async {}).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("Failed") && stderr.contains("Unable to fetch some archives"),
        "{stderr}"
    );
    let all = builders(&bench).await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].1, "terminated", "{stderr}");
    assert!(
        bench
            .emulator
            .calls("ec2", "CreateImage", None)
            .await
            .is_empty()
    );
    assert_eq!(bench.versions().await.len(), 1);
    assert_eq!(bench.template().await.default_version_number(), Some(1));
    assert_eq!(bench.parameter().await, None);
}

#[tokio::test]
async fn a_run_killed_mid_patch_is_resumed_without_a_second_builder_or_command() {
    let bench = builder_bench().await;
    // Long enough to kill the command while the patch runs.
    bench
        .emulator
        .control_post("config", json!({ "ssm_command_secs": 8.0 }))
        .await;
    let mut child = bake_builder(&bench, &[]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while bench
        .emulator
        .calls("ssm", "SendCommand", None)
        .await
        .is_empty()
    {
        assert!(tokio::time::Instant::now() < deadline, "no SendCommand");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let resumed = bench
        .command(&["resume", "--template", "web", "--poll-secs", "1"])
        .spawn()
        .unwrap();
    let output = finish(resumed, || async {}).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(
        bench.emulator.calls("ssm", "SendCommand", None).await.len(),
        1
    );
    let all = builders(&bench).await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].1, "terminated");
    assert_eq!(bench.template().await.default_version_number(), Some(2));
}

#[tokio::test]
async fn a_dry_run_of_builder_mode_changes_nothing() {
    let bench = builder_bench().await;
    let changes = [
        ("ec2", "RunInstances"),
        ("ssm", "SendCommand"),
        ("ec2", "StopInstances"),
        ("ec2", "CreateImage"),
        ("ec2", "TerminateInstances"),
        ("ec2", "CreateLaunchTemplateVersion"),
        ("ec2", "CreateTags"),
    ];
    let before = bench.emulator.call_counts(&changes).await;
    let output = bench
        .command(&[
            "bake",
            "--template",
            "web",
            "--builder",
            "--dry-run",
            "--poll-secs",
            "1",
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
        "ec2 RunInstances LaunchTemplate.LaunchTemplateId=",
        "ssm SendCommand DocumentName=AWS-RunPatchBaseline",
        "ec2 StopInstances",
        "ec2 CreateImage",
        "ec2 TerminateInstances",
        "ec2 CreateLaunchTemplateVersion",
    ] {
        assert!(stdout.contains(shown), "{shown} missing:\n{stdout}");
    }
    assert_eq!(
        bench.emulator.call_counts(&changes).await,
        before,
        "calls made of {changes:?}"
    );
    assert!(builders(&bench).await.is_empty());
}
