//! Every sample in `tests/fixtures/aws-events/` (verbatim AWS documentation samples and real
//! captures; see its README) parses as what it is.

// A failed unwrap in a test is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use lifeguard_common::message::{self, Explanation};
use serde_json::{Value, json};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/aws-events")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture_dir().join(name)).unwrap_or_else(|e| panic!("reading {name}: {e}"))
}

fn explain_queue(name: &str) -> Value {
    let parsed = message::parse(&read(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    serde_json::to_value(Explanation::of(&parsed)).unwrap()
}

const DOC_TOKEN: &str = "87654321-4321-4321-4321-210987654321";
const DOC_INSTANCE: &str = "i-1234567890abcdef0";

/// The queue messages and what `explain` must say of each, field for field.
fn queue_expectations() -> Vec<(&'static str, Value)> {
    let refresh = |stage: &str| {
        json!({"kind": "instance_refresh", "format": "eventbridge", "asg": "my-auto-scaling-group",
               "refresh_id": "c613620e-07e2-4ed2-a9e2-ef8258911ade", "state": stage})
    };
    let doc_lifecycle = |kind: &str, transition: &str, hook: &str| {
        json!({"kind": kind, "format": "eventbridge", "instance_id": DOC_INSTANCE, "asg": "my-asg",
               "hook": hook, "transition": transition, "token": DOC_TOKEN,
               "time": "yyyy-mm-ddThh:mm:ssZ"})
    };
    let ami = |state: &str, reason: Option<&str>| {
        let mut v = json!({"kind": "ami_state_change", "format": "eventbridge",
                           "image_id": "ami-0123456789example", "state": state});
        if let Some(reason) = reason {
            v["reason"] = json!(reason);
        }
        v
    };
    vec![
        ("asg-instance-refresh-cancelled.json", refresh("cancelled")),
        (
            "asg-instance-refresh-checkpoint-reached.json",
            json!({"kind": "instance_refresh", "format": "eventbridge",
                   "asg": "my-auto-scaling-group", "refresh_id": "ab00cf8f-9126-4f3c-8010-dbb8cad6fb86",
                   "state": "checkpoint_reached"}),
        ),
        ("asg-instance-refresh-failed.json", refresh("failed")),
        ("asg-instance-refresh-started.json", refresh("started")),
        ("asg-instance-refresh-succeeded.json", refresh("succeeded")),
        (
            "asg-launch-lifecycle-action.json",
            doc_lifecycle(
                "lifecycle_launch",
                "autoscaling:EC2_INSTANCE_LAUNCHING",
                "my-lifecycle-hook",
            ),
        ),
        (
            "asg-terminate-lifecycle-action.json",
            doc_lifecycle(
                "lifecycle_terminate",
                "autoscaling:EC2_INSTANCE_TERMINATING",
                "my-lifecycle-hook",
            ),
        ),
        (
            "cloudtrail-record-createimage-appstream-NEGATIVE.json",
            json!({"kind": "ignored", "format": "direct",
                   "reason": "CloudTrail call appstream.amazonaws.com CreateImage is not one lifeguard acts on"}),
        ),
        (
            "cloudtrail-record-createimage-ec2-console.json",
            json!({"kind": "create_image_call", "format": "direct",
                   "image_id": "ami-0528b3966f95526ee", "instance_id": "i-0ed7c37bce75f98f9"}),
        ),
        (
            "ec2-ami-state-change-available.json",
            ami("available", None),
        ),
        (
            "ec2-ami-state-change-deregistered.json",
            ami("deregistered", None),
        ),
        (
            "ec2-ami-state-change-failed.json",
            ami("failed", Some("Description of failure")),
        ),
        (
            "eventbridge-cloudtrail-createautoscalinggroup-eks.json",
            json!({"kind": "create_auto_scaling_group_call", "format": "eventbridge",
                   "asg": "eks-e6b9d024-1742-daf1-664e-b6de9bd9074b"}),
        ),
        (
            "eventbridge-cloudtrail-createautoscalinggroup-errorcode.json",
            json!({"kind": "ignored", "format": "eventbridge",
                   "reason": "CloudTrail call autoscaling.amazonaws.com CreateAutoScalingGroup failed with ValidationException"}),
        ),
        (
            "eventbridge-launch-lifecycle-action-new-instance-to-asg.aws-docs.json",
            json!({"kind": "lifecycle_launch", "format": "eventbridge", "instance_id": DOC_INSTANCE,
                   "asg": "my-asg", "hook": "my-launch-lifecycle-hook",
                   "transition": "autoscaling:EC2_INSTANCE_LAUNCHING",
                   "token": "87654321-4321-4321-4321-21098EXAMPLE", "origin": "EC2",
                   "destination": "AutoScalingGroup", "time": "2021-02-01T17:18:06.082Z"}),
        ),
        (
            "eventbridge-launch-lifecycle-action.aws-docs.json",
            doc_lifecycle(
                "lifecycle_launch",
                "autoscaling:EC2_INSTANCE_LAUNCHING",
                "my-lifecycle-hook",
            ),
        ),
        (
            "eventbridge-rebalance-recommendation.aws-docs.json",
            json!({"kind": "rebalance_recommendation", "format": "eventbridge",
                   "instance_id": DOC_INSTANCE, "time": "yyyy-mm-ddThh:mm:ssZ"}),
        ),
        (
            "eventbridge-spot-interruption-warning.aws-docs.json",
            json!({"kind": "spot_interruption", "format": "eventbridge", "instance_id": DOC_INSTANCE,
                   "state": "action", "time": "yyyy-mm-ddThh:mm:ssZ"}),
        ),
        (
            "eventbridge-terminate-lifecycle-action-return-to-warmpool.aws-docs.json",
            json!({"kind": "lifecycle_terminate", "format": "eventbridge", "instance_id": DOC_INSTANCE,
                   "asg": "my-asg", "hook": "my-termination-lifecycle-hook",
                   "transition": "autoscaling:EC2_INSTANCE_TERMINATING",
                   "token": "42694b3d-4b70-6a62-8523-09a1eEXAMPLE", "origin": "AutoScalingGroup",
                   "destination": "WarmPool", "time": "2022-03-28T00:12:37.214Z"}),
        ),
        (
            "eventbridge-terminate-lifecycle-action.aws-docs.json",
            doc_lifecycle(
                "lifecycle_terminate",
                "autoscaling:EC2_INSTANCE_TERMINATING",
                "my-lifecycle-hook",
            ),
        ),
        (
            "sns-imagebuilder-image-available.json",
            json!({"kind": "ami_state_change", "format": "sns",
                   "image_id": "place-here-your-test-ami-id", "state": "available"}),
        ),
        (
            "sqs-direct-launching-origin-destination.cdk-sample-2023.json",
            json!({"kind": "lifecycle_launch", "format": "direct", "instance_id": "i-0853dfa8ce1627af9",
                   "asg": "DenoTestStack-AutoscalingGroupASG25987EFB-1FXPOBZFMDQTL",
                   "hook": "DenoTestStack-AutoscalingGroupLifecycleHookOnLaunch49A664EF-3lhKS3adlUsx",
                   "transition": "autoscaling:EC2_INSTANCE_LAUNCHING",
                   "token": "917070d0-a303-474b-a36c-a5e38a19de5e", "origin": "EC2",
                   "destination": "AutoScalingGroup", "time": "2023-09-11T03:30:33.136Z"}),
        ),
        (
            "sqs-direct-terminating-origin-destination.readyset-rust-test.json",
            json!({"kind": "lifecycle_terminate", "format": "direct", "instance_id": "i-xxxxxxxxxxxxxxxxx",
                   "asg": "[redacted]", "hook": "ReadySetServerASGTerminateSNS",
                   "transition": "autoscaling:EC2_INSTANCE_TERMINATING",
                   "token": "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", "origin": "AutoScalingGroup",
                   "destination": "EC2", "time": "2021-11-01T00:00:00.000Z"}),
        ),
        (
            "sqs-direct-terminating.ecs-instance-drainer.json",
            json!({"kind": "lifecycle_terminate", "format": "direct", "instance_id": "i-0194708ef7e24dcc7",
                   "asg": "MarketDataECS-AutoScalingGroup-TZI0DMYKJBJG",
                   "hook": "MarketDataECS-AutoScalingGroupTerminatingLifecycleHook-65KCAZVO19BF",
                   "transition": "autoscaling:EC2_INSTANCE_TERMINATING",
                   "token": "602063c7-4a06-4a67-b8cf-87ccc33bdc86", "time": "2018-05-16T20:13:40.414Z"}),
        ),
        (
            "sqs-direct-test-notification.cdk-sample-2023.json",
            json!({"kind": "test_notification", "format": "direct",
                   "asg": "DenoTestStack-AutoscalingGroupASG25987EFB-1FXPOBZFMDQTL",
                   "time": "2023-09-11T03:03:14.022Z"}),
        ),
        (
            "sqs-direct-test-notification.ecs-instance-drainer.json",
            json!({"kind": "test_notification", "format": "direct",
                   "asg": "MarketDataECS-AutoScalingGroup-TZI0DMYKJBJG", "time": "2018-05-14T22:39:45.555Z"}),
        ),
        (
            "sqs-sns-notification-keyvalue.aws-docs.txt",
            json!({"kind": "lifecycle_launch", "format": "sns", "instance_id": "i-0598c7d356eba48d7",
                   "asg": "my-asg", "hook": "my-hook", "transition": "autoscaling:EC2_INSTANCE_LAUNCHING",
                   "token": "71514b9d-6a40-4b26-8523-05e7ee35fa40", "time": "2021-01-19T00:36:26.533Z"}),
        ),
        (
            "sqs-sns-test-notification-keyvalue.aws-docs.txt",
            json!({"kind": "test_notification", "format": "sns", "asg": "my-asg",
                   "time": "2021-01-19T00:35:52.359Z"}),
        ),
        (
            "synthetic-eventbridge-cloudtrail-createimage-with-marker.json",
            json!({"kind": "create_image_call", "format": "eventbridge",
                   "image_id": "ami-0528b3966f95526ee", "instance_id": "i-0ed7c37bce75f98f9"}),
        ),
    ]
}

/// The IMDS bodies: not queue messages, recognised by `explain` as IMDS answers.
fn imds_expectations() -> Vec<(&'static str, Value)> {
    vec![
        (
            "imds-rebalance-recommendation.aws-docs.json",
            json!({"kind": "rebalance_recommendation", "format": "imds", "time": "2020-10-27T08:22:00Z"}),
        ),
        (
            "imds-spot-instance-action-stop.aws-docs.json",
            json!({"kind": "spot_interruption", "format": "imds", "state": "stop", "time": "2017-09-18T08:22:00Z"}),
        ),
        (
            "imds-spot-instance-action-terminate.aws-docs.json",
            json!({"kind": "spot_interruption", "format": "imds", "state": "terminate", "time": "2017-09-18T08:22:00Z"}),
        ),
        (
            "imds-spot-termination-time.aws-docs.txt",
            json!({"kind": "spot_interruption", "format": "imds", "time": "2015-01-05T18:02:00Z"}),
        ),
        (
            "imds-target-lifecycle-state-inservice.aws-docs.txt",
            json!({"kind": "ignored", "format": "imds", "state": "InService",
                   "reason": "target lifecycle state InService needs no drain"}),
        ),
        (
            "imds-target-lifecycle-state-terminated.aemm-readme.txt",
            json!({"kind": "lifecycle_terminate", "format": "imds", "state": "Terminated"}),
        ),
    ]
}

#[test]
fn every_fixture_is_covered() {
    let mut expected: Vec<&str> = queue_expectations()
        .iter()
        .chain(imds_expectations().iter())
        .map(|(name, _)| *name)
        .collect();
    expected.push("README.md");
    expected.sort_unstable();
    let mut present: Vec<String> = std::fs::read_dir(fixture_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    present.sort_unstable();
    assert_eq!(present, expected, "fixture files and expectations differ");
}

#[test]
fn queue_fixtures_parse_as_what_they_are() {
    for (name, expected) in queue_expectations() {
        assert_eq!(explain_queue(name), expected, "{name}");
    }
}

#[test]
fn imds_fixtures_are_recognised_as_imds_bodies_and_are_not_queue_messages() {
    for (name, expected) in imds_expectations() {
        let body = String::from_utf8(read(name)).unwrap();
        assert!(
            message::parse(body.as_bytes()).is_err(),
            "{name} parsed as a queue message"
        );
        let explanation = Explanation::of_imds_body(&body).unwrap_or_else(|| panic!("{name}"));
        assert_eq!(
            serde_json::to_value(explanation).unwrap(),
            expected,
            "{name}"
        );
    }
}

#[test]
fn fixture_details_beyond_the_explanation() {
    use lifeguard_common::message::{LifecycleEndpoint, Message};
    let parsed = message::parse(&read(
        "synthetic-eventbridge-cloudtrail-createimage-with-marker.json",
    ))
    .unwrap();
    let Message::CreateImageCall(call) = parsed.message else {
        panic!("{parsed:?}")
    };
    assert_eq!(
        call.description.as_deref(),
        Some("nightly bake [asg-image-refresh:lt-0abcd290751193123]")
    );
    assert_eq!(call.name.as_deref(), Some("web-golden-2020-04-01"));
    assert_eq!(call.region.as_deref(), Some("us-west-2"));
    assert_eq!(call.account.as_deref(), Some("527579490183"));

    let parsed = message::parse(&read(
        "eventbridge-cloudtrail-createautoscalinggroup-eks.json",
    ))
    .unwrap();
    let Message::CreateAutoScalingGroupCall(call) = parsed.message else {
        panic!("{parsed:?}")
    };
    let template = call.launch_template.unwrap();
    assert_eq!(template.id.as_deref(), Some("lt-0c2d2c87b6de105f8"));
    assert_eq!(template.version.as_deref(), Some("1"));

    let parsed = message::parse(&read("asg-instance-refresh-checkpoint-reached.json")).unwrap();
    let Message::InstanceRefresh(refresh) = parsed.message else {
        panic!("{parsed:?}")
    };
    assert_eq!(refresh.checkpoint_percentage, Some(50));
    assert_eq!(refresh.checkpoint_delay_secs, Some(300));

    let parsed = message::parse(&read(
        "eventbridge-terminate-lifecycle-action-return-to-warmpool.aws-docs.json",
    ))
    .unwrap();
    let Message::LifecycleAction(action) = parsed.message else {
        panic!("{parsed:?}")
    };
    assert_eq!(action.destination, Some(LifecycleEndpoint::WarmPool));
    assert!(
        !action.ends_instance(),
        "a terminate action into a warm pool does not end the instance"
    );
    assert_eq!(action.metadata.as_deref(), Some("additional-info"));

    let parsed = message::parse(&read("sqs-direct-terminating.ecs-instance-drainer.json")).unwrap();
    let Message::LifecycleAction(action) = parsed.message else {
        panic!("{parsed:?}")
    };
    assert!(action.ends_instance());
    assert_eq!(action.metadata, None);
    assert_eq!(action.account.as_deref(), Some("609519224176"));
}
