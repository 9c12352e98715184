//! Lifecycle hooks through aws-sdk-rust against the emulator: a terminate hook holds the
//! instance in `Terminating:Wait`, notifies its SQS target and EventBridge, IMDS says
//! `Terminated`, and completing by instance id lets it go; a hook nobody answers gets its
//! `DefaultResult` when the heartbeat timeout expires.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use aws_sdk_autoscaling::types::LifecycleState;
use lifeguard_common::message::imds::{TargetLifecycleState, parse_target_lifecycle_state};
use lifeguard_common::message::{Format, LifecycleEndpoint, Message, Transition};
use lifeguard_e2e::fleet::{self, Hook};
use lifeguard_e2e::{Emulator, eventually};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_hook_holds_notifies_and_completes_by_instance_id() {
    let emulator = Emulator::start().await;
    let c = emulator.clients().await;
    let image = fleet::any_image(&c).await;
    let template = fleet::launch_template(&c, "web", &image).await;
    let hook_queue = fleet::queue(&c, "web-lifecycle").await;
    let events_queue = fleet::queue(&c, "lifeguard-events").await;
    fleet::rule_to_queue(
        &c,
        "lifecycle-actions",
        json!({"source": ["aws.autoscaling"],
               "detail-type": ["EC2 Instance-terminate Lifecycle Action"]}),
        &events_queue,
    )
    .await;
    fleet::group(
        &c,
        "web",
        &template,
        2,
        &[Hook {
            name: "drain",
            transition: Transition::TERMINATING,
            heartbeat_timeout_secs: 300,
            default_result: "ABANDON",
            target_arn: Some(&hook_queue.arn),
        }],
    )
    .await;

    let test = fleet::receive_until(&c, &hook_queue, WAIT, |p| {
        p.message.kind() == "test_notification"
    })
    .await;
    assert_eq!(test.format, Format::Direct);
    let Message::TestNotification(test) = test.message else {
        unreachable!()
    };
    assert_eq!(test.asg, "web");

    let members = fleet::instances(&c, "web").await;
    assert_eq!(members.len(), 2, "{members:?}");
    assert!(
        members.iter().all(|(_, state)| state == "InService"),
        "{members:?}"
    );
    let victim = members[0].0.clone();
    let survivor = members[1].0.clone();
    let (status, body) = emulator
        .imds_get(&victim, "autoscaling/target-lifecycle-state")
        .await;
    assert_eq!((status, body.trim()), (200, "InService"));

    c.autoscaling
        .terminate_instance_in_auto_scaling_group()
        .instance_id(&victim)
        .should_decrement_desired_capacity(true)
        .send()
        .await
        .unwrap();
    // First plain Terminating (the scaling activity; no load balancer here), then the hook.
    assert_eq!(
        fleet::lifecycle_state(&c, &victim).await.as_deref(),
        Some(LifecycleState::Terminating.as_str())
    );
    fleet::wait_for_state(&c, &victim, WAIT, "Terminating:Wait", |s| {
        s == Some(LifecycleState::TerminatingWait.as_str())
    })
    .await;

    // The hook's own target gets the direct notification...
    let direct = fleet::receive_until(&c, &hook_queue, WAIT, |p| {
        p.message.kind() == "lifecycle_terminate"
    })
    .await;
    assert_eq!(direct.format, Format::Direct);
    let Message::LifecycleAction(direct) = direct.message else {
        unreachable!()
    };
    assert_eq!(direct.instance_id, victim);
    assert_eq!(direct.asg, "web");
    assert_eq!(direct.hook, "drain");
    assert_eq!(direct.origin, Some(LifecycleEndpoint::AutoScalingGroup));
    assert_eq!(direct.destination, Some(LifecycleEndpoint::Ec2));
    assert!(direct.ends_instance());
    assert!(!direct.token.is_empty());

    // ...and the EventBridge rule delivers the event, with the same action token.
    let event = fleet::receive_until(&c, &events_queue, WAIT, |p| {
        p.message.kind() == "lifecycle_terminate"
    })
    .await;
    assert_eq!(event.format, Format::EventBridge);
    let Message::LifecycleAction(event) = event.message else {
        unreachable!()
    };
    assert_eq!(event.instance_id, victim);
    assert_eq!(event.token, direct.token);
    assert_eq!(event.account.as_deref(), Some(lifeguard_e2e::ACCOUNT));

    let (status, body) = emulator
        .imds_get(&victim, "autoscaling/target-lifecycle-state")
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        parse_target_lifecycle_state(&body).unwrap(),
        TargetLifecycleState::Terminated
    );

    // Nobody has answered: the instance waits.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        fleet::lifecycle_state(&c, &victim).await.as_deref(),
        Some("Terminating:Wait")
    );
    assert_eq!(fleet::ec2_state(&c, &victim).await, "running");

    c.autoscaling
        .complete_lifecycle_action()
        .auto_scaling_group_name("web")
        .lifecycle_hook_name("drain")
        .instance_id(&victim)
        .lifecycle_action_result("CONTINUE")
        .send()
        .await
        .unwrap();
    fleet::wait_for_state(&c, &victim, WAIT, "the instance to leave the group", |s| {
        s.is_none()
    })
    .await;
    eventually("EC2 to terminate the instance", WAIT, || async {
        (fleet::ec2_state(&c, &victim).await == "terminated").then_some(())
    })
    .await;

    // Completing again is AWS's "no active lifecycle action" error, not a second completion.
    let again = c
        .autoscaling
        .complete_lifecycle_action()
        .auto_scaling_group_name("web")
        .lifecycle_hook_name("drain")
        .instance_id(&victim)
        .lifecycle_action_result("CONTINUE")
        .send()
        .await
        .unwrap_err();
    let again = format!("{:?}", again.into_service_error());
    assert!(
        again.contains("No active Lifecycle Action found"),
        "{again}"
    );

    let completions = emulator
        .calls("autoscaling", "CompleteLifecycleAction", Some(&victim))
        .await;
    let accepted: Vec<_> = completions
        .iter()
        .filter(|call| call["status"].as_u64() == Some(200))
        .collect();
    assert_eq!(completions.len(), 2, "{completions:?}");
    assert_eq!(accepted.len(), 1, "{completions:?}");

    assert_eq!(
        fleet::instances(&c, "web").await,
        vec![(survivor.clone(), "InService".to_string())],
        "capacity was decremented, the other instance untouched"
    );
    drop(emulator);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_hooks_get_their_default_result_at_the_heartbeat_timeout() {
    let emulator = Emulator::start().await;
    // 2-second hooks (AWS's floor is 30 s) so that four timeouts fit in a few seconds.
    emulator
        .control_post(
            "config",
            serde_json::json!({"min_heartbeat_timeout_secs": 1}),
        )
        .await;
    let c = emulator.clients().await;
    let image = fleet::any_image(&c).await;
    let template = fleet::launch_template(&c, "app", &image).await;
    let short = |name, transition, default_result| Hook {
        name,
        transition,
        heartbeat_timeout_secs: 2,
        default_result,
        target_arn: None,
    };
    fleet::group(
        &c,
        "terminate-continue",
        &template,
        1,
        &[short("drain", Transition::TERMINATING, "CONTINUE")],
    )
    .await;
    fleet::group(
        &c,
        "launch-abandon",
        &template,
        0,
        &[short("ready", Transition::LAUNCHING, "ABANDON")],
    )
    .await;
    fleet::group(
        &c,
        "launch-continue",
        &template,
        0,
        &[short("ready", Transition::LAUNCHING, "CONTINUE")],
    )
    .await;

    // Terminate hook, nobody answers: after the timeout the instance goes on to terminate.
    let (victim, _) = fleet::instances(&c, "terminate-continue").await.remove(0);
    c.autoscaling
        .terminate_instance_in_auto_scaling_group()
        .instance_id(&victim)
        .should_decrement_desired_capacity(true)
        .send()
        .await
        .unwrap();
    fleet::wait_for_state(&c, &victim, WAIT, "Terminating:Wait", |s| {
        s == Some("Terminating:Wait")
    })
    .await;

    // Launch hooks, nobody answers: ABANDON terminates the new instance, CONTINUE keeps it.
    for group in ["launch-abandon", "launch-continue"] {
        c.autoscaling
            .set_desired_capacity()
            .auto_scaling_group_name(group)
            .desired_capacity(1)
            .send()
            .await
            .unwrap();
    }
    let abandoned = eventually("a launching instance", WAIT, || async {
        fleet::instances(&c, "launch-abandon")
            .await
            .into_iter()
            .next()
    })
    .await;
    let continued = eventually("a launching instance", WAIT, || async {
        fleet::instances(&c, "launch-continue")
            .await
            .into_iter()
            .next()
    })
    .await;
    // Plain Pending while EC2 starts them, then the launch hooks hold them.
    for (instance, _) in [&abandoned, &continued] {
        fleet::wait_for_state(&c, instance, WAIT, "Pending:Wait", |s| {
            s == Some("Pending:Wait")
        })
        .await;
    }

    fleet::wait_for_state(&c, &victim, WAIT, "the terminate hook to time out", |s| {
        s.is_none()
    })
    .await;
    eventually("EC2 to terminate the timed-out instance", WAIT, || async {
        (fleet::ec2_state(&c, &victim).await == "terminated").then_some(())
    })
    .await;
    fleet::wait_for_state(
        &c,
        &continued.0,
        WAIT,
        "CONTINUE at the launch timeout",
        |s| s == Some("InService"),
    )
    .await;
    eventually(
        "ABANDON at the launch timeout to terminate the instance",
        WAIT,
        || async { (fleet::ec2_state(&c, &abandoned.0).await == "terminated").then_some(()) },
    )
    .await;
    assert_ne!(
        fleet::lifecycle_state(&c, &abandoned.0).await.as_deref(),
        Some("InService")
    );

    // The defaults were applied by the timeout, not by any call.
    for instance in [&victim, &abandoned.0, &continued.0] {
        let calls = emulator
            .calls("autoscaling", "CompleteLifecycleAction", Some(instance))
            .await;
        assert!(calls.is_empty(), "{instance}: {calls:?}");
    }
}
