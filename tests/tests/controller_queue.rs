//! The real controller against the emulator's queue: two replicas make one outcome, poison
//! messages neither stop nor delay it, and duplicate or reordered deliveries make one action.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use lifeguard_common::message::{AgentReport, ReportPhase};
use lifeguard_e2e::controller::{Scene, scene};
use lifeguard_e2e::drain::{GROUP, HOOK};
use lifeguard_e2e::{ACCOUNT, REGION, eventually, fleet};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

/// The EventBridge event Auto Scaling sends for the action the emulator holds on `instance_id`.
async fn terminate_event(scene: &Scene, instance_id: &str, group: &str) -> String {
    let action = scene.wait_for_action(instance_id, WAIT).await;
    json!({
        "version": "0",
        "id": format!("dup-{instance_id}"),
        "detail-type": "EC2 Instance-terminate Lifecycle Action",
        "source": "aws.autoscaling",
        "account": ACCOUNT,
        // As Auto Scaling stamps it: when the action started (the controller counts the grace
        // from the earliest time it is told).
        "time": action["started"],
        "region": REGION,
        "resources": [format!("arn:aws:autoscaling:{REGION}:{ACCOUNT}:autoScalingGroup:x:autoScalingGroupName/{group}")],
        "detail": {
            "LifecycleActionToken": action["token"],
            "AutoScalingGroupName": group,
            "LifecycleHookName": HOOK,
            "EC2InstanceId": instance_id,
            "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
            "Origin": "AutoScalingGroup",
            "Destination": "EC2"
        }
    })
    .to_string()
}

fn report(instance_id: &str, phase: ReportPhase, seq: u64) -> String {
    let mut report = AgentReport::new(phase, instance_id);
    report.asg = Some(GROUP.to_string());
    report.hook = Some(HOOK.to_string());
    report.reason = Some("scale_in".into());
    report.seq = seq;
    // An agent promising a report every second: silent for the group's silence limit, it is
    // taken for dead.
    report.report_interval_secs = Some(1);
    report
        .to_event(
            &format!("report-{seq}"),
            "2026-11-22T10:00:00Z",
            REGION,
            ACCOUNT,
        )
        .to_string()
}

async fn wait_queue_empty(scene: &Scene) {
    eventually("the controller queue to be empty", WAIT, || async {
        (fleet::queue_depth(&scene.stage.clients, &scene.stage.queue.url).await == (0, 0))
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_complete_each_action_exactly_once() {
    let scene = scene(4, 60, &[]).await;
    let stage = &scene.stage;
    let defaults = "agent_grace_secs = 4\nfallback_result = \"CONTINUE\"";
    let a = scene.start_controller("replica-a", defaults);
    let b = scene.start_controller("replica-b", defaults);
    a.wait_ready().await;
    b.wait_ready().await;

    stage
        .clients
        .autoscaling
        .set_desired_capacity()
        .auto_scaling_group_name(GROUP)
        .desired_capacity(0)
        .send()
        .await
        .unwrap();
    for instance in &stage.instances {
        stage.wait_terminated(instance, WAIT).await;
    }

    // Every call the emulator saw, failed ones included: one per action.
    for instance in &stage.instances {
        assert_eq!(
            stage.completions(instance).await,
            vec![(200, "CONTINUE".to_string())],
            "{instance}"
        );
    }
    let fallbacks =
        a.metric("lifeguard_fallbacks_total").await + b.metric("lifeguard_fallbacks_total").await;
    assert_eq!(fallbacks, 4.0);
    // Both replicas watched the actions (from events or from their reconciles).
    for replica in [&a, &b] {
        let log = replica.process.log();
        assert!(log.contains("watching lifecycle action"), "{log}");
    }
    let status = a.status();
    assert_eq!(
        status
            .iter()
            .filter(|r| r["outcome"] == "CONTINUE" && r["ended_by"] == "controller")
            .count(),
        4,
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_set_aside_and_hold_nothing_up() {
    let scene = scene(1, 60, &[]).await;
    let stage = &scene.stage;
    let victim = stage.instances[0].clone();
    let mut controller = scene.start_controller(
        "ctl",
        "agent_grace_secs = 3\nfallback_result = \"CONTINUE\"",
    );
    controller.wait_ready().await;

    let huge = "#".repeat(256 * 1024 - 64);
    let unknown_group = include_str!(
        "../../common/tests/fixtures/aws-events/eventbridge-terminate-lifecycle-action.aws-docs.json"
    )
    .replace("my-asg", "no-such-group");
    for body in [
        "{not json at all",
        "{\"hello\": [\"valid\", \"json\", \"of no known shape\"]}",
        huge.as_str(),
        unknown_group.as_str(),
    ] {
        scene.send(body).await;
    }
    stage.terminate(&victim).await;
    stage.wait_terminated(&victim, WAIT).await;

    // The real action was not held up by the poison: the fallback came at its grace.
    let status = controller.status();
    let row = status.iter().find(|r| r["instance_id"] == victim).unwrap();
    assert_eq!(row["ended_by"], "controller", "{row}");
    assert!(row["duration_secs"].as_i64().unwrap() < 15, "{row}");
    assert_eq!(
        stage.completions(&victim).await,
        vec![(200, "CONTINUE".to_string())]
    );

    // What cannot be read (bad JSON, JSON of no known shape, the 256 KB one) went to the
    // dead-letter queue; the event of an unknown group was deleted as ignorable.
    wait_queue_empty(&scene).await;
    eventually("the poison in the dead-letter queue", WAIT, || async {
        (fleet::queue_depth(&stage.clients, &scene.dead.url).await == (3, 0)).then_some(())
    })
    .await;
    let malformed = controller
        .metric("lifeguard_messages_failed_total{kind=\"malformed\",reason=\"malformed\"}")
        .await;
    // Each seen twice (the queue's maxReceiveCount) before SQS moved it.
    assert_eq!(malformed, 6.0);
    assert!(controller.process.is_running());
    let log = controller.process.log();
    assert!(
        log.contains("event of a group lifeguard does not manage"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_and_reordered_deliveries_make_one_action() {
    let scene = scene(1, 60, &[]).await;
    let stage = &scene.stage;
    let victim = stage.instances[0].clone();
    let controller = scene.start_controller(
        "ctl",
        "agent_grace_secs = 30\nreport_silence_secs = 4\nfallback_result = \"ABANDON\"",
    );
    controller.wait_ready().await;

    stage.terminate(&victim).await;
    let event = terminate_event(&scene, &victim, GROUP).await;
    // The event three more times (from EventBridge), and the agent's reports (from the
    // instance), its second one before its first.
    for (from_instance, body) in [
        (false, event.clone()),
        (true, report(&victim, ReportPhase::DrainHeartbeat, 2)),
        (false, event.clone()),
        (true, report(&victim, ReportPhase::DrainStarted, 1)),
        (false, event.clone()),
    ] {
        if from_instance {
            scene.send_as(&victim, &body).await;
        } else {
            scene.send(&body).await;
        }
    }
    stage.wait_terminated(&victim, WAIT).await;
    // After the end: the event once more, and a stale report.
    scene.send(&event).await;
    scene
        .send_as(&victim, &report(&victim, ReportPhase::DrainStarted, 1))
        .await;
    wait_queue_empty(&scene).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    assert_eq!(
        stage.completions(&victim).await,
        vec![(200, "ABANDON".to_string())],
        "one action: the fallback after the reports stopped"
    );
    let status = controller.status();
    let row = status.iter().find(|r| r["instance_id"] == victim).unwrap();
    assert_eq!(row["ended_by"], "controller", "{row}");
    // Followed as a reporting agent (silence 4 s), not as an absent one (grace 30 s).
    assert!(row["duration_secs"].as_i64().unwrap() < 25, "{row}");
    assert_eq!(
        fleet::queue_depth(&stage.clients, &scene.dead.url).await,
        (0, 0)
    );
    let log = controller.process.log();
    assert!(log.contains("the agent's reports stopped"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_tell_the_truth_and_sigterm_stops_cleanly() {
    let scene = scene(1, 60, &[]).await;
    let mut controller = scene.start_controller("ctl", "agent_grace_secs = 60");
    controller.wait_ready().await;

    let (status, body) = controller.get("/healthz").await;
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");
    assert!(
        health["last_reconcile_age_secs"].as_i64().unwrap() <= 5,
        "{health}"
    );
    let (status, metrics) = controller.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("lifeguard_reconciles_total"), "{metrics}");
    assert!(metrics.ends_with("# EOF\n"));
    assert_eq!(controller.get("/nothing-here").await.0, 404);

    // A message in hand when the signal comes is finished, not lost: the event is deleted
    // and the action watched by whoever runs next.
    scene.stage.terminate(&scene.stage.instances[0]).await;
    controller
        .process
        .wait_for_log("watching lifecycle action", WAIT)
        .await;
    controller.process.terminate();
    assert_eq!(controller.process.wait_exit(WAIT).await, Some(0));
    let log = controller.process.log();
    assert!(log.contains("lifeguard-controller stopped"), "{log}");
    wait_queue_empty(&scene).await;
}
