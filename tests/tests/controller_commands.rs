//! `Drill` and `Swap` command messages run by the controller service: once per message even
//! with two replicas on the queue, a replica stopped mid-command taken over by the other.
//!
//! Hooks keep AWS's default 3600 s heartbeat timeout; every action is completed by its agent.

// Test code: a helper panics with a message on anything unexpected, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use lifeguard_e2e::controller::scene;
use lifeguard_e2e::drain::{BUCKET, GROUP};
use lifeguard_e2e::eventually;
use lifeguard_e2e::swap::{group_state, setting};
use serde_json::json;

const CLAIM: &str = "lifeguard:command:claim";
const DONE: &str = "lifeguard:command:done";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_command_runs_once_even_when_its_replica_stops_mid_way() {
    let scene = scene(3, 3600, &[]).await;
    let stage = &scene.stage;
    // Drains of 6 s: the replica running the drill is killed while they go on.
    let _agents = scene.start_agents(&[], 6).await;
    let mut a = scene.start_controller("a", "");
    let mut b = scene.start_controller("b", "");
    a.wait_ready().await;
    b.wait_ready().await;

    scene
        .send(
            &json!({
                "source": "lifeguard.command",
                "detail-type": "Drill",
                "detail": {"asg": GROUP, "count": 2, "bucket": BUCKET, "timeout_secs": 600}
            })
            .to_string(),
        )
        .await;
    let holder = eventually(
        "a replica to claim the drill",
        Duration::from_secs(60),
        || async {
            let tags = group_state(&stage.clients).await.tags;
            let claim = tags.get(CLAIM)?;
            let terminated = stage
                .emulator
                .calls("autoscaling", "TerminateInstanceInAutoScalingGroup", None)
                .await;
            (terminated.len() == 2).then(|| claim.split(' ').nth(1).unwrap().to_string())
        },
    )
    .await;
    let (stopped, other) = if holder == "a" {
        (&mut a, &b)
    } else {
        (&mut b, &a)
    };
    stopped.process.kill9();

    // The message comes back after its visibility timeout (10 s) to the other replica, which
    // finds it claimed by the stopped one and does not drill again.
    let done = eventually(
        "the drill command done",
        Duration::from_secs(120),
        || async {
            let tags = group_state(&stage.clients).await.tags;
            (!tags.contains_key(CLAIM))
                .then(|| tags.get(DONE).cloned())
                .flatten()
        },
    )
    .await;
    assert_eq!(done.split(',').count(), 1, "{done}");
    other
        .process
        .wait_for_log("not run again", Duration::from_secs(5))
        .await;
    let terminated = stage
        .emulator
        .calls("autoscaling", "TerminateInstanceInAutoScalingGroup", None)
        .await;
    assert_eq!(terminated.len(), 2, "{terminated:?}");
    // The drilled instances still drain to their end: each completed by its agent.
    for call in &terminated {
        let instance_id = call["params"]["InstanceId"].as_str().unwrap();
        eventually("the drain completed", Duration::from_secs(120), || async {
            (stage.completions(instance_id).await == [(200, "CONTINUE".to_string())]).then_some(())
        })
        .await;
    }
    other.process.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_command_is_run_by_the_service_and_a_repeat_is_refused() {
    let swap_ = setting(&["AZRebalance"], 1).await;
    let body = json!({
        "source": "lifeguard.command",
        "detail-type": "Swap",
        "detail": {"asg": GROUP, "retire": swap_.old, "attach": swap_.new}
    })
    .to_string();
    swap_.scene.send(&body).await;
    eventually(
        "the swap command done",
        Duration::from_secs(180),
        || async {
            let state = swap_.state().await;
            (state.tags.contains_key(DONE) && !state.tags.contains_key(CLAIM)).then_some(())
        },
    )
    .await;
    let log = swap_.controller.process.log();
    assert!(log.contains("swapped:"), "{log}");
    let mut before = swap_.before.clone();
    before
        .tags
        .insert(DONE.into(), swap_.state().await.tags[DONE].clone());
    let after = swap_.state().await;
    assert_eq!(
        (after.sizes, &after.suspended, &after.tags),
        (before.sizes, &before.suspended, &before.tags)
    );
    let members: Vec<&String> = after.members.iter().map(|(id, _)| id).collect();
    assert_eq!(members, swap_.new.iter().collect::<Vec<_>>());
    for old in &swap_.old {
        assert_eq!(
            swap_.scene.stage.completions(old).await,
            [(200, "CONTINUE".into())]
        );
    }

    // The same command sent again is a new message: refused, since the instances to retire
    // have left; nothing changes.
    let attached = swap_.calls("AttachInstances", None).await.len();
    swap_.scene.send(&body).await;
    swap_
        .controller
        .process
        .wait_for_log("swap refused", Duration::from_secs(60))
        .await;
    assert_eq!(swap_.calls("AttachInstances", None).await.len(), attached);
    swap_.controller.process.terminate();
}
