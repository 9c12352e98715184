//! Building blocks of a scenario: a launch template, queues, EventBridge rules, a group with
//! lifecycle hooks, and reading queue messages through lifeguard's parser.

use std::time::Duration;

use aws_sdk_autoscaling::types::LaunchTemplateSpecification;
use aws_sdk_ec2::types::RequestLaunchTemplateData;
use aws_sdk_sqs::types::QueueAttributeName;
use lifeguard_common::message::{self, Parsed};

use crate::{Clients, eventually};

/// An AMI that the emulator knows (moto loads a set of public images).
pub async fn any_image(clients: &Clients) -> String {
    let images = clients
        .ec2
        .describe_images()
        .owners("amazon")
        .send()
        .await
        .unwrap();
    images
        .images()
        .iter()
        .find_map(|image| image.image_id().map(str::to_string))
        .expect("the emulator has at least one public AMI")
}

/// A launch template whose version 1 uses `image_id`. Returns its id.
pub async fn launch_template(clients: &Clients, name: &str, image_id: &str) -> String {
    let created = clients
        .ec2
        .create_launch_template()
        .launch_template_name(name)
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id(image_id)
                .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                .build(),
        )
        .send()
        .await
        .unwrap();
    created
        .launch_template()
        .and_then(|t| t.launch_template_id())
        .unwrap()
        .to_string()
}

/// A queue: its URL and ARN.
pub struct Queue {
    pub url: String,
    pub arn: String,
}

pub async fn queue(clients: &Clients, name: &str) -> Queue {
    let url = clients
        .sqs
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    let attributes = clients
        .sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap();
    let arn = attributes
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .unwrap()
        .clone();
    Queue { url, arn }
}

/// An EventBridge rule on the default bus delivering `pattern` matches to `queue`.
pub async fn rule_to_queue(
    clients: &Clients,
    name: &str,
    pattern: serde_json::Value,
    queue: &Queue,
) {
    clients
        .events
        .put_rule()
        .name(name)
        .event_pattern(pattern.to_string())
        .send()
        .await
        .unwrap();
    clients
        .events
        .put_targets()
        .rule(name)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("queue")
                .arn(&queue.arn)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
}

/// A lifecycle hook to create with a group.
pub struct Hook<'a> {
    pub name: &'a str,
    pub transition: &'a str,
    pub heartbeat_timeout_secs: i32,
    pub default_result: &'a str,
    pub target_arn: Option<&'a str>,
}

/// Creates a group of `desired` instances from `template_id`, then puts `hooks` on it with
/// `PutLifecycleHook` (a hook with a target sends its test notification).
pub async fn group(
    clients: &Clients,
    name: &str,
    template_id: &str,
    desired: i32,
    hooks: &[Hook<'_>],
) {
    clients
        .autoscaling
        .create_auto_scaling_group()
        .auto_scaling_group_name(name)
        .launch_template(
            LaunchTemplateSpecification::builder()
                .launch_template_id(template_id)
                .version("$Latest")
                .build(),
        )
        .min_size(0)
        .max_size(desired.max(1) * 2)
        .desired_capacity(desired)
        .availability_zones("us-east-1a")
        .send()
        .await
        .unwrap();
    for hook in hooks {
        let mut put = clients
            .autoscaling
            .put_lifecycle_hook()
            .auto_scaling_group_name(name)
            .lifecycle_hook_name(hook.name)
            .lifecycle_transition(hook.transition)
            .heartbeat_timeout(hook.heartbeat_timeout_secs)
            .default_result(hook.default_result);
        if let Some(arn) = hook.target_arn {
            put = put
                .notification_target_arn(arn)
                .role_arn("arn:aws:iam::123456789012:role/lifecycle-notifications");
        }
        put.send().await.unwrap();
    }
}

/// The instances of a group with their lifecycle states, sorted by id.
pub async fn instances(clients: &Clients, group: &str) -> Vec<(String, String)> {
    let described = clients
        .autoscaling
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(group)
        .send()
        .await
        .unwrap();
    let mut out: Vec<(String, String)> = described
        .auto_scaling_groups()
        .iter()
        .flat_map(|g| g.instances())
        .map(|i| {
            (
                i.instance_id().unwrap_or_default().to_string(),
                i.lifecycle_state()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
            )
        })
        .collect();
    out.sort();
    out
}

/// `DescribeAutoScalingInstances` for one instance: its lifecycle state, or `None` once gone.
pub async fn lifecycle_state(clients: &Clients, instance_id: &str) -> Option<String> {
    let described = clients
        .autoscaling
        .describe_auto_scaling_instances()
        .instance_ids(instance_id)
        .send()
        .await
        .unwrap();
    described
        .auto_scaling_instances()
        .first()
        .map(|i| i.lifecycle_state().unwrap_or_default().to_string())
}

/// The EC2 state of an instance (`running`, `terminated`, ...).
pub async fn ec2_state(clients: &Clients, instance_id: &str) -> String {
    let described = clients
        .ec2
        .describe_instances()
        .instance_ids(instance_id)
        .send()
        .await
        .unwrap();
    described
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .find_map(|i| {
            i.state()
                .and_then(|s| s.name())
                .map(|n| n.as_str().to_string())
        })
        .unwrap_or_default()
}

/// Receives messages from `queue` until `wanted` accepts one, deleting each; panics after
/// `timeout`. Every message must parse: the emulator sends only what AWS sends.
pub async fn receive_until(
    clients: &Clients,
    queue: &Queue,
    timeout: Duration,
    mut wanted: impl FnMut(&Parsed) -> bool,
) -> Parsed {
    let mut seen = Vec::new();
    let started = std::time::Instant::now();
    loop {
        let received = clients
            .sqs
            .receive_message()
            .queue_url(&queue.url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for msg in received.messages() {
            let body = msg.body().unwrap_or_default();
            let parsed = message::parse(body.as_bytes())
                .unwrap_or_else(|e| panic!("message on {} does not parse: {e}\n{body}", queue.url));
            if let Some(receipt) = msg.receipt_handle() {
                clients
                    .sqs
                    .delete_message()
                    .queue_url(&queue.url)
                    .receipt_handle(receipt)
                    .send()
                    .await
                    .unwrap();
            }
            if wanted(&parsed) {
                return parsed;
            }
            seen.push(parsed.message.kind());
        }
        assert!(
            started.elapsed() < timeout,
            "no wanted message on {} within {timeout:?}; saw {seen:?}",
            queue.url
        );
    }
}

/// Waits until the instance's lifecycle state satisfies `check`.
pub async fn wait_for_state(
    clients: &Clients,
    instance_id: &str,
    timeout: Duration,
    what: &str,
    check: impl Fn(Option<&str>) -> bool,
) -> Option<String> {
    eventually(what, timeout, || async {
        let state = lifecycle_state(clients, instance_id).await;
        check(state.as_deref()).then_some(state)
    })
    .await
}

/// Sends what `queue` fails to handle `max_receive_count` times to `dead`.
pub async fn dead_letter_to(
    clients: &Clients,
    queue: &Queue,
    dead: &Queue,
    max_receive_count: u32,
) {
    clients
        .sqs
        .set_queue_attributes()
        .queue_url(&queue.url)
        .attributes(
            QueueAttributeName::RedrivePolicy,
            format!(
                "{{\"deadLetterTargetArn\":\"{}\",\"maxReceiveCount\":\"{max_receive_count}\"}}",
                dead.arn
            ),
        )
        .send()
        .await
        .unwrap();
}

/// A queue's (visible, in flight) message counts.
pub async fn queue_depth(clients: &Clients, url: &str) -> (u64, u64) {
    let attributes = clients
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap();
    let get = |name: QueueAttributeName| -> u64 {
        attributes
            .attributes()
            .and_then(|a| a.get(&name))
            .and_then(|v| v.parse().ok())
            .unwrap_or_default()
    };
    (
        get(QueueAttributeName::ApproximateNumberOfMessages),
        get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    )
}

/// Registers lifeguard's SSM document (`packaging/ssm/lifeguard-ArchiveLogs.json`), as a
/// deployment does, so agentless archives meet the emulator's parameter checks.
pub async fn archive_document(clients: &Clients) {
    let path = crate::repo_root().join("packaging/ssm/lifeguard-ArchiveLogs.json");
    let content = std::fs::read_to_string(path).unwrap();
    clients
        .ssm
        .create_document()
        .name("lifeguard-ArchiveLogs")
        .content(content)
        .document_type(aws_sdk_ssm::types::DocumentType::Command)
        .document_format(aws_sdk_ssm::types::DocumentFormat::Json)
        .send()
        .await
        .unwrap();
}
