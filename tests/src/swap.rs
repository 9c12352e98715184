//! Helpers for swap scenarios: instances outside any group to attach, a target group with
//! AWS's fastest health check, the group's state to compare before and after, and the swap
//! command itself.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use aws_sdk_elasticloadbalancingv2::types::{ProtocolEnum, TargetTypeEnum};

use serde_json::{Value, json};

use crate::Clients;
use crate::agent::ServiceProcess;
use crate::agent::workspace_binary;
use crate::controller::{Controller, Scene, scene};
use crate::drain::GROUP;

/// `count` running instances in no group, from `template_id`.
pub async fn standalone_instances(clients: &Clients, template_id: &str, count: i32) -> Vec<String> {
    let launched = clients
        .ec2
        .run_instances()
        .launch_template(
            aws_sdk_ec2::types::LaunchTemplateSpecification::builder()
                .launch_template_id(template_id)
                .build(),
        )
        .min_count(count)
        .max_count(count)
        .send()
        .await
        .unwrap();
    let mut ids: Vec<String> = launched
        .instances()
        .iter()
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect();
    ids.sort();
    ids
}

/// The launch template the stage's group runs from.
pub async fn group_template(clients: &Clients) -> String {
    let groups = clients
        .autoscaling
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(GROUP)
        .send()
        .await
        .unwrap();
    groups.auto_scaling_groups()[0]
        .launch_template()
        .and_then(|t| t.launch_template_id())
        .unwrap()
        .to_string()
}

/// An HTTP target group with AWS's least interval (5 s) and healthy threshold (2): a new
/// target is `initial` for 10 s. Its deregistration delay is `deregistration_secs`, or AWS's
/// 300 s when `None`. Attached to the group; returns its ARN.
pub async fn target_group(clients: &Clients, deregistration_secs: Option<u32>) -> String {
    let vpcs = clients.ec2.describe_vpcs().send().await.unwrap();
    let vpc = vpcs.vpcs()[0].vpc_id().unwrap().to_string();
    let created = clients
        .elb
        .create_target_group()
        .name("web")
        .protocol(ProtocolEnum::Http)
        .port(80)
        .vpc_id(vpc)
        .target_type(TargetTypeEnum::Instance)
        .health_check_interval_seconds(5)
        // Under the interval, as AWS requires.
        .health_check_timeout_seconds(2)
        .healthy_threshold_count(2)
        .send()
        .await
        .unwrap();
    let arn = created.target_groups()[0]
        .target_group_arn()
        .unwrap()
        .to_string();
    if let Some(secs) = deregistration_secs {
        clients
            .elb
            .modify_target_group_attributes()
            .target_group_arn(&arn)
            .attributes(
                aws_sdk_elasticloadbalancingv2::types::TargetGroupAttribute::builder()
                    .key("deregistration_delay.timeout_seconds")
                    .value(secs.to_string())
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }
    clients
        .autoscaling
        .attach_load_balancer_target_groups()
        .auto_scaling_group_name(GROUP)
        .target_group_arns(&arn)
        .send()
        .await
        .unwrap();
    arn
}

/// What a swap must leave as it found it, and the members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState {
    pub sizes: (i32, i32, i32),
    pub suspended: Vec<String>,
    pub tags: BTreeMap<String, String>,
    /// Members with their lifecycle states, sorted.
    pub members: Vec<(String, String)>,
}

pub async fn group_state(clients: &Clients) -> GroupState {
    let groups = clients
        .autoscaling
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(GROUP)
        .send()
        .await
        .unwrap();
    let group = &groups.auto_scaling_groups()[0];
    let mut suspended: Vec<String> = group
        .suspended_processes()
        .iter()
        .filter_map(|p| p.process_name().map(str::to_string))
        .collect();
    suspended.sort();
    let mut members: Vec<(String, String)> = group
        .instances()
        .iter()
        .map(|i| {
            (
                i.instance_id().unwrap().to_string(),
                i.lifecycle_state().unwrap().as_str().to_string(),
            )
        })
        .collect();
    members.sort();
    GroupState {
        sizes: (
            group.min_size().unwrap(),
            group.max_size().unwrap(),
            group.desired_capacity().unwrap(),
        ),
        suspended,
        tags: group
            .tags()
            .iter()
            .map(|t| (t.key().unwrap().to_string(), t.value().unwrap().to_string()))
            .collect(),
        members,
    }
}

pub async fn suspend(clients: &Clients, processes: &[&str]) {
    clients
        .autoscaling
        .suspend_processes()
        .auto_scaling_group_name(GROUP)
        .set_scaling_processes(Some(processes.iter().map(|p| p.to_string()).collect()))
        .send()
        .await
        .unwrap();
}

/// `lifeguard-controller swap --group web ARGS` with the controller's configuration.
pub fn swap_command(config: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(workspace_binary("lifeguard-controller"));
    command
        .arg("--config")
        .arg(config)
        .args(["swap", "--group", GROUP, "--poll-secs", "1"])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing");
    command
}

/// The swap run to its end off the runtime.
pub async fn swap(config: &Path, args: &[&str]) -> Output {
    let mut command = swap_command(config, args);
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

/// The swap started in the background, its output piped.
pub fn spawn_swap(config: &Path, args: &[&str]) -> Child {
    swap_command(config, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The mutating Auto Scaling calls a swap makes.
pub const MUTATING: [(&str, &str); 8] = [
    ("autoscaling", "CreateOrUpdateTags"),
    ("autoscaling", "DeleteTags"),
    ("autoscaling", "SuspendProcesses"),
    ("autoscaling", "ResumeProcesses"),
    ("autoscaling", "UpdateAutoScalingGroup"),
    ("autoscaling", "AttachInstances"),
    ("autoscaling", "DetachInstances"),
    ("autoscaling", "TerminateInstanceInAutoScalingGroup"),
];

/// A swap's stage: see [`setting`].
pub struct SwapScene {
    pub scene: Scene,
    pub controller: Controller,
    /// Kept running for the scene's life.
    pub agents: Vec<ServiceProcess>,
    pub old: Vec<String>,
    pub new: Vec<String>,
    pub before: GroupState,
}

/// A group of two at min 1, max 2 (no room to attach without raising the maximum), in a
/// target group, `suspended` beforehand; agents whose drains take `settle_secs`; two new
/// instances outside the group. The target group's deregistration delay is 10 s instead of
/// AWS's 300 s, a value operators set for short requests, so a leaving instance is held in
/// plain `Terminating` for seconds, not minutes.
pub async fn setting(suspended: &[&str], settle_secs: u32) -> SwapScene {
    setting_with_delay(suspended, settle_secs, Some(10)).await
}

/// [`setting`] with the target group's deregistration delay: `None` is AWS's 300 s.
pub async fn setting_with_delay(
    suspended: &[&str],
    settle_secs: u32,
    deregistration_secs: Option<u32>,
) -> SwapScene {
    let scene = scene(2, 3600, &[]).await;
    let agents = scene.start_agents(&[], settle_secs).await;
    let controller = scene.start_controller("a", "");
    controller.wait_ready().await;
    let clients = &scene.stage.clients;
    clients
        .autoscaling
        .update_auto_scaling_group()
        .auto_scaling_group_name(GROUP)
        .min_size(1)
        .max_size(2)
        .send()
        .await
        .unwrap();
    target_group(clients, deregistration_secs).await;
    if !suspended.is_empty() {
        suspend(clients, suspended).await;
    }
    let template = group_template(clients).await;
    let new = standalone_instances(clients, &template, 2).await;
    let before = group_state(clients).await;
    SwapScene {
        old: scene.stage.instances.clone(),
        new,
        before,
        controller,
        agents,
        scene,
    }
}

impl SwapScene {
    pub fn args<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["--retire"];
        args.extend(self.old.iter().map(String::as_str));
        args.push("--attach");
        args.extend(self.new.iter().map(String::as_str));
        args.extend(extra);
        args
    }

    pub async fn state(&self) -> GroupState {
        group_state(&self.scene.stage.clients).await
    }

    /// Sizes, suspended processes and tags as before the swap, `members` in service.
    pub async fn assert_as_before_with(&self, members: &[String]) {
        let after = self.state().await;
        assert_eq!(after.sizes, self.before.sizes);
        assert_eq!(after.suspended, self.before.suspended);
        assert_eq!(after.tags, self.before.tags);
        let expected: Vec<(String, String)> = members
            .iter()
            .map(|id| (id.clone(), "InService".to_string()))
            .collect();
        assert_eq!(after.members, expected);
    }

    pub async fn calls(&self, action: &str, instance_id: Option<&str>) -> Vec<Value> {
        self.scene
            .stage
            .emulator
            .calls("autoscaling", action, instance_id)
            .await
    }

    pub async fn stage_tag(&self) -> Option<String> {
        self.state().await.tags.get("lifeguard:swap:stage").cloned()
    }

    pub async fn make_unhealthy(&self, instance_id: &str) {
        self.scene
            .stage
            .emulator
            .control_post(
                "target-health",
                json!({"instance_id": instance_id, "state": "unhealthy"}),
            )
            .await;
    }
}
