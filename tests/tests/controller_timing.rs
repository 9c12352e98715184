//! The real controller and agents under AWS's own timing: a one-hour hook whose agent is busy
//! for longer than the controller's silence limit, an agent whose completion is denied, and a
//! controller restarted while the actions it must end were already waiting.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use lifeguard_e2e::controller::scene;
use lifeguard_e2e::drain::GROUP;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_longer_than_the_silence_limit_under_a_one_hour_hook_is_never_taken_over() {
    // AWS's default hook: a 3600 s heartbeat timeout, so the agent's lifecycle heartbeats come
    // 20 minutes apart. The controller's silence limit is shortened from 180 s to 10 s so that
    // a 25 s step outlasts it; the agent, with its defaults, promises a report every 30 s.
    let scene = scene(1, 3600, &[]).await;
    let stage = &scene.stage;
    let controller = scene.start_controller(
        "ctl",
        "agent_grace_secs = 20\nreport_silence_secs = 10\nfallback_result = \"ABANDON\"",
    );
    controller.wait_ready().await;
    let victim = stage.instances[0].clone();
    let extra = format!(
        "{}\n[[drain.steps]]\nname = \"finish-requests\"\nrun = [\"sleep\", \"25\"]\ntimeout_secs = 60\n",
        stage.archive_config()
    );
    let agent = stage.start_agent(&victim, &extra, &[]).await;

    stage.terminate(&victim).await;
    stage.wait_terminated(&victim, WAIT).await;
    agent.wait_for_log("drain finished", WAIT).await;

    assert_eq!(
        stage.completions(&victim).await,
        vec![(200, "CONTINUE".to_string())],
        "the agent's completion only"
    );
    assert!(
        stage
            .emulator
            .calls("ssm", "SendCommand", None)
            .await
            .is_empty(),
        "no agentless archive"
    );
    assert_eq!(controller.metric("lifeguard_fallbacks_total").await, 0.0);
    let row = controller.wait_outcome(&victim).await;
    assert_eq!(
        (row["outcome"].as_str(), row["ended_by"].as_str()),
        (Some("CONTINUE"), Some("agent"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_completion_is_reported_as_failed_and_the_controller_completes_it() {
    let scene = scene(1, 3600, &[]).await;
    let stage = &scene.stage;
    let victim = stage.instances[0].clone();
    // The agent signs with its instance role's credentials, and that role lacks
    // autoscaling:CompleteLifecycleAction; the controller's has it.
    stage
        .emulator
        .control_post(
            "faults",
            json!({"service": "autoscaling", "action": "CompleteLifecycleAction",
                   "mode": "access_denied", "instance_id": victim, "secs": 600}),
        )
        .await;
    let controller = scene.start_controller(
        "ctl",
        "agent_grace_secs = 30\nreport_silence_secs = 60\nfallback_result = \"ABANDON\"",
    );
    controller.wait_ready().await;
    let agent = stage
        .start_agent(&victim, &stage.archive_config(), &[])
        .await;

    stage.terminate(&victim).await;
    agent.wait_for_log("drain finished", WAIT).await;
    stage.wait_terminated(&victim, WAIT).await;

    // The agent says what happened: its drain is done, its completion is not.
    let finished = agent
        .log_events()
        .into_iter()
        .find(|e| e["message"] == "drain finished")
        .expect("the agent's drain finished log");
    assert_eq!(finished["phase"], "drain_failed", "{finished}");
    assert!(
        finished["completion"]
            .as_str()
            .is_some_and(|c| c.contains("Failed")),
        "{finished}"
    );
    // One denied call (the agent's, not retried: a permanent failure), then the controller's,
    // with the agent's result: the drain itself was done.
    assert_eq!(
        stage.completions(&victim).await,
        vec![(403, "CONTINUE".to_string()), (200, "CONTINUE".to_string())]
    );
    let row = controller.wait_outcome(&victim).await;
    assert_eq!(
        (
            row["outcome"].as_str(),
            row["ended_by"].as_str(),
            row["agent"].as_str()
        ),
        (Some("CONTINUE"), Some("controller"), Some("drain_failed"))
    );
    // The archive is the agent's; no agentless one was needed.
    assert_eq!(
        stage
            .keys(&format!("lifeguard/{GROUP}/{victim}/"))
            .await
            .len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_controller_counts_the_grace_from_the_events_and_ends_them_together() {
    let scene = scene(3, 3600, &[]).await;
    let stage = &scene.stage;
    // Agentless instances scaled in while no controller runs.
    stage.scale_to(0).await;
    for instance in &stage.instances {
        scene.wait_for_action(instance, WAIT).await;
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    // The queue is out of reach for the new controller's first seconds, so it sees the actions
    // through its reconcile before it reads their events, as a restarted replica does while
    // the messages its predecessor received are still invisible.
    stage
        .emulator
        .control_post(
            "faults",
            json!({"service": "sqs", "action": "ReceiveMessage", "mode": "unavailable", "secs": 6}),
        )
        .await;
    let started = Instant::now();
    let controller = scene.start_controller(
        "ctl",
        "agent_grace_secs = 30\nreport_silence_secs = 60\nfallback_result = \"CONTINUE\"",
    );
    // The actions began over 30 s ago: their grace is over once the events are read. Counted
    // from the restart, it would end 30 s after it.
    for instance in &stage.instances {
        stage
            .wait_terminated(instance, Duration::from_secs(20))
            .await;
    }
    assert!(started.elapsed() < Duration::from_secs(25));
    for instance in &stage.instances {
        assert_eq!(
            stage.completions(instance).await,
            vec![(200, "CONTINUE".to_string())]
        );
    }
    // All three were due together and were taken over in one round, not in stragglers.
    let claims: Vec<u64> = controller
        .process
        .log_events()
        .iter()
        .filter(|e| e["message"] == "takeovers claimed; confirming after the pause")
        .filter_map(|e| e["claimed"].as_u64())
        .collect();
    assert_eq!(claims, vec![3], "{}", controller.process.log());
}
