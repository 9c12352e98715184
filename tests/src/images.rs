//! A bench for image pipeline scenarios: an emulator whose images stay pending for a while, a
//! launch template whose version 1 sets several fields, a running instance to image, and the
//! `lifeguard-controller image` command pointed at them.
//!
//! Images stay `pending` for 6 s (AWS: minutes). The pipeline's behaviour while it waits is
//! what is tested, not the wait's length; 6 s is several of the command's 1 s polls, so the
//! template is looked at many times while the image is not available.

use std::future::Future;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use aws_sdk_ec2::types::{RequestLaunchTemplateData, ResourceType, Tag, TagSpecification};
use serde_json::{Value, json};

use crate::agent::workspace_binary;
use aws_sdk_autoscaling::types::{
    BlockDeviceMapping, Ebs, InstanceMonitoring, LaunchConfiguration,
};

use crate::{Clients, Emulator, REGION, fleet};

pub const PENDING_SECS: f64 = 6.0;
pub const PARAMETER: &str = "/lifeguard/web/latestAmi";
pub const MUTATING: [(&str, &str); 7] = [
    ("ec2", "CreateImage"),
    ("ec2", "CreateLaunchTemplateVersion"),
    ("ec2", "ModifyLaunchTemplate"),
    ("ec2", "DeleteLaunchTemplateVersions"),
    ("ec2", "CreateTags"),
    ("ec2", "DeregisterImage"),
    ("ssm", "PutParameter"),
];

pub struct Bench {
    pub emulator: Emulator,
    pub clients: Clients,
    pub dir: tempfile::TempDir,
    pub template_id: String,
    pub instance_id: String,
}

/// A template whose version 1 sets several fields besides the image, and a running instance.
pub async fn bench() -> Bench {
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
    pub fn command(&self, args: &[&str]) -> Command {
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

    pub fn bake(&self, extra: &[&str]) -> Child {
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

    pub async fn versions(&self) -> Vec<aws_sdk_ec2::types::LaunchTemplateVersion> {
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

    pub async fn template(&self) -> aws_sdk_ec2::types::LaunchTemplate {
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

    pub async fn images_of_pipeline(&self) -> Vec<aws_sdk_ec2::types::Image> {
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

    pub async fn parameter(&self) -> Option<String> {
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

    pub async fn mutating_calls(&self) -> Vec<Value> {
        let mut all = Vec::new();
        for (service, action) in MUTATING {
            all.extend(self.emulator.calls(service, action, None).await);
        }
        all
    }
}

/// Waits for the process while `watch` runs every 200 ms; its output once it exits.
pub async fn finish<F, Fut>(mut child: Child, mut watch: F) -> Output
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

pub fn data_without_image(
    version: &aws_sdk_ec2::types::LaunchTemplateVersion,
) -> aws_sdk_ec2::types::ResponseLaunchTemplateData {
    let mut data = version.launch_template_data().unwrap().clone();
    data.image_id = None;
    data
}

/// The launch template named `name`, as `DescribeLaunchTemplates` returns it (tags included).
pub async fn template_named(clients: &Clients, name: &str) -> aws_sdk_ec2::types::LaunchTemplate {
    clients
        .ec2
        .describe_launch_templates()
        .launch_template_names(name)
        .send()
        .await
        .unwrap()
        .launch_templates()[0]
        .clone()
}

/// The value of the template's tag `key` (the pipeline's record), empty if it has none.
pub fn tag_value(template: &aws_sdk_ec2::types::LaunchTemplate, key: &str) -> String {
    template
        .tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
        .unwrap_or_default()
        .to_string()
}

/// The launch-configuration group of the configuration path's scenarios, and its configuration.
pub const GROUP: &str = "legacy";
pub const SOURCE: &str = "legacy-v1";

/// The launch configuration of that name, if there is one.
pub async fn configuration(clients: &Clients, name: &str) -> Option<LaunchConfiguration> {
    clients
        .autoscaling
        .describe_launch_configurations()
        .launch_configuration_names(name)
        .send()
        .await
        .unwrap()
        .launch_configurations()
        .first()
        .cloned()
}

/// The launch configuration the legacy group launches from.
pub async fn group_configuration(clients: &Clients) -> String {
    clients
        .autoscaling
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(GROUP)
        .send()
        .await
        .unwrap()
        .auto_scaling_groups()[0]
        .launch_configuration_name()
        .unwrap_or_default()
        .to_string()
}

/// A group of one on a launch configuration that sets most of what a configuration can, with
/// no kernel or ramdisk (Auto Scaling answers those as `""`, and refuses `""` on create).
pub async fn legacy_group(clients: &Clients, image: &str) {
    let security_group = clients
        .ec2
        .create_security_group()
        .group_name("legacy")
        .description("legacy fleet")
        .send()
        .await
        .unwrap()
        .group_id()
        .unwrap()
        .to_string();
    clients
        .autoscaling
        .create_launch_configuration()
        .launch_configuration_name(SOURCE)
        .image_id(image)
        .instance_type("t3.micro")
        .key_name("ops")
        .security_groups(security_group)
        .user_data("IyEvYmluL3NoCmVjaG8gbGVnYWN5Cg==")
        .instance_monitoring(InstanceMonitoring::builder().enabled(false).build())
        .block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name("/dev/xvdb")
                .ebs(Ebs::builder().volume_size(20).volume_type("gp3").build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    clients
        .autoscaling
        .create_auto_scaling_group()
        .auto_scaling_group_name(GROUP)
        .launch_configuration_name(SOURCE)
        .min_size(0)
        .max_size(3)
        .desired_capacity(1)
        .availability_zones(format!("{REGION}a"))
        .tags(
            aws_sdk_autoscaling::types::Tag::builder()
                .key("lifeguard:managed")
                .value("true")
                .propagate_at_launch(true)
                .build(),
        )
        .send()
        .await
        .unwrap();
}
