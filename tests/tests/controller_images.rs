//! The image pipeline from an operator's command, through the real `lifeguard-controller`
//! binary against the emulator: bake from an instance, a failed image, a dry run.
//!
//! Images stay `pending` for 6 s here (AWS: minutes). The pipeline's behaviour while it waits
//! is what is tested, not the wait's length; 6 s is several of the command's 1 s polls, so the
//! template is looked at many times while the image is not available.

// Test code: a helper panics with a message on anything unexpected, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use aws_sdk_ec2::types::{RequestLaunchTemplateData, ResourceType, Tag, TagSpecification};
use lifeguard_e2e::agent::workspace_binary;
use lifeguard_e2e::{Clients, Emulator, REGION, eventually, fleet};
use serde_json::{Value, json};

const PENDING_SECS: f64 = 6.0;
const PARAMETER: &str = "/lifeguard/web/latestAmi";
const MUTATING: [(&str, &str); 7] = [
    ("ec2", "CreateImage"),
    ("ec2", "CreateLaunchTemplateVersion"),
    ("ec2", "ModifyLaunchTemplate"),
    ("ec2", "DeleteLaunchTemplateVersions"),
    ("ec2", "CreateTags"),
    ("ec2", "DeregisterImage"),
    ("ssm", "PutParameter"),
];

struct Bench {
    emulator: Emulator,
    clients: Clients,
    dir: tempfile::TempDir,
    template_id: String,
    instance_id: String,
}

/// A template whose version 1 sets several fields besides the image, and a running instance.
async fn bench() -> Bench {
    let emulator = Emulator::start().await;
    emulator
        .control_post("config", json!({ "ami_pending_secs": PENDING_SECS }))
        .await;
    let clients = emulator.clients().await;
    let image = fleet::any_image(&clients).await;
    let created = clients
        .ec2
        .create_launch_template()
        .launch_template_name("web")
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id(&image)
                .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                .key_name("ops")
                .user_data("IyEvYmluL3NoCmVjaG8gaGVsbG8K")
                .tag_specifications(
                    aws_sdk_ec2::types::LaunchTemplateTagSpecificationRequest::builder()
                        .resource_type(ResourceType::Instance)
                        .tags(Tag::builder().key("team").value("web").build())
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let template_id = created
        .launch_template()
        .and_then(|t| t.launch_template_id())
        .unwrap()
        .to_string();
    let run = clients
        .ec2
        .run_instances()
        .image_id(&image)
        .min_count(1)
        .max_count(1)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Instance)
                .tags(Tag::builder().key("Name").value("golden").build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    let instance_id = run.instances()[0].instance_id().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("controller.toml"),
        format!(
            "[aws]\nregion = \"{REGION}\"\nendpoint_url = \"{}\"\nmax_attempts = 3\n",
            emulator.endpoint()
        ),
    )
    .unwrap();
    Bench {
        emulator,
        clients,
        dir,
        template_id,
        instance_id,
    }
}

impl Bench {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(workspace_binary("lifeguard-controller"));
        command
            .arg("--config")
            .arg(self.dir.path().join("controller.toml"))
            .arg("image")
            .args(args)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    fn bake(&self, extra: &[&str]) -> Child {
        let mut args = vec![
            "bake",
            "--template",
            "web",
            "--instance",
            &self.instance_id,
            "--ssm-parameter",
            PARAMETER,
            "--poll-secs",
            "1",
        ];
        args.extend_from_slice(extra);
        self.command(&args).spawn().unwrap()
    }

    async fn versions(&self) -> Vec<aws_sdk_ec2::types::LaunchTemplateVersion> {
        self.clients
            .ec2
            .describe_launch_template_versions()
            .launch_template_id(&self.template_id)
            .send()
            .await
            .unwrap()
            .launch_template_versions()
            .to_vec()
    }

    async fn template(&self) -> aws_sdk_ec2::types::LaunchTemplate {
        self.clients
            .ec2
            .describe_launch_templates()
            .launch_template_ids(&self.template_id)
            .send()
            .await
            .unwrap()
            .launch_templates()[0]
            .clone()
    }

    async fn images_of_pipeline(&self) -> Vec<aws_sdk_ec2::types::Image> {
        self.clients
            .ec2
            .describe_images()
            .owners("self")
            .send()
            .await
            .unwrap()
            .images()
            .iter()
            .filter(|i| i.name().is_some_and(|n| n.starts_with("lifeguard-")))
            .cloned()
            .collect()
    }

    async fn parameter(&self) -> Option<String> {
        let got = self
            .clients
            .ssm
            .get_parameter()
            .name(PARAMETER)
            .send()
            .await
            .ok()?;
        got.parameter()?.value().map(str::to_string)
    }

    async fn mutating_calls(&self) -> Vec<Value> {
        let mut all = Vec::new();
        for (service, action) in MUTATING {
            all.extend(self.emulator.calls(service, action, None).await);
        }
        all
    }
}

/// Waits for the process while `watch` runs every 200 ms; its output once it exits.
async fn finish<F, Fut>(mut child: Child, mut watch: F) -> Output
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the command did not end"
        );
        watch().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn data_without_image(
    version: &aws_sdk_ec2::types::LaunchTemplateVersion,
) -> aws_sdk_ec2::types::ResponseLaunchTemplateData {
    let mut data = version.launch_template_data().unwrap().clone();
    data.image_id = None;
    data
}

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
