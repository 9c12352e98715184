//! The real agent under AWS's own timing: a load balancer's deregistration before the terminate
//! hook, a launch that starts in plain `Pending`, readiness checks longer than the hook's
//! heartbeat timeout, notices that stay readable after their drain, steps that talk on their
//! way out, and calls that fail for a while.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use lifeguard_common::message::{CompletionReport, ReportPhase, Transition};
use lifeguard_e2e::agent::{AgentProcess, config_for};
use lifeguard_e2e::drain::{manifest_of, stage, unpack};
use lifeguard_e2e::fleet::{self, Hook};
use lifeguard_e2e::{Emulator, eventually};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

/// Successful calls of one Auto Scaling action about `instance_id`.
async fn accepted(emulator: &Emulator, action: &str, instance_id: &str) -> Vec<serde_json::Value> {
    emulator
        .calls("autoscaling", action, Some(instance_id))
        .await
        .into_iter()
        .filter(|c| c["status"].as_u64() == Some(200))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_waits_through_the_load_balancers_deregistration_and_completes_once() {
    // AWS's default hook (3600 s heartbeat timeout); the target group's deregistration delay
    // is shortened from its 300 s default to 5 s so the test takes seconds, not minutes.
    let stage = stage(1, 3600).await;
    stage
        .emulator
        .control_post("config", json!({"deregistration_delay_secs": 5}))
        .await;
    let victim = stage.instances[0].clone();
    let marker = stage.path("ran-in");
    let extra = format!(
        "{}\n[[drain.steps]]\nname = \"stop-app\"\nshell = \"echo ran >> {}\"\n",
        stage.archive_config(),
        marker.display()
    );
    let agent = stage.start_agent(&victim, &extra, &[]).await;
    stage.terminate(&victim).await;

    // IMDS says Terminated at once, but the instance stays in plain Terminating while the
    // load balancer drains it: the drain must not begin (the app still serves requests).
    eventually("IMDS to say Terminated", WAIT, || async {
        let (status, body) = stage
            .emulator
            .imds_get(&victim, "autoscaling/target-lifecycle-state")
            .await;
        (status == 200 && body == "Terminated").then_some(())
    })
    .await;
    assert_eq!(
        fleet::lifecycle_state(&stage.clients, &victim)
            .await
            .as_deref(),
        Some("Terminating")
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !marker.exists(),
        "no step runs while the load balancer deregisters the instance:\n{}",
        agent.log()
    );

    stage.wait_terminated(&victim, WAIT).await;
    agent.wait_for_log("drain finished", WAIT).await;
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "ran\n");
    // One completion, CONTINUE, accepted: none failed for want of an action, none by the
    // hook's timeout.
    assert_eq!(
        stage.completions(&victim).await,
        vec![(200, "CONTINUE".to_string())]
    );
    // Heartbeats went to an action that existed (the first one at once, when the drain began).
    let heartbeats = stage
        .emulator
        .calls(
            "autoscaling",
            "RecordLifecycleActionHeartbeat",
            Some(&victim),
        )
        .await;
    assert!(!heartbeats.is_empty(), "a heartbeat at the drain's start");
    assert!(
        heartbeats.iter().all(|c| c["status"].as_u64() == Some(200)),
        "{heartbeats:?}"
    );
    let reports = stage.reports().await;
    let finished = reports
        .iter()
        .find(|r| r.phase == ReportPhase::DrainFinished)
        .expect("a Drain Finished report");
    assert_eq!(finished.completion, Some(CompletionReport::Completed));
    assert_eq!(finished.result.as_deref(), Some("CONTINUE"));
    assert!(
        reports.iter().all(|r| r.report_interval_secs == Some(30)),
        "every report promises the next: {reports:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_checks_longer_than_the_heartbeat_timeout_keep_the_launch_alive() {
    let emulator = Emulator::start().await;
    // A 6 s hook (AWS's floor is 30 s) and checks that pass only after 14 s: without
    // heartbeats the hook's ABANDON would replace the instance while its checks still run.
    emulator
        .control_post("config", json!({"min_heartbeat_timeout_secs": 1}))
        .await;
    let c = emulator.clients().await;
    let image = fleet::any_image(&c).await;
    let template = fleet::launch_template(&c, "slow-start", &image).await;
    fleet::group(
        &c,
        "slow-start",
        &template,
        0,
        &[Hook {
            name: "ready",
            transition: Transition::LAUNCHING,
            heartbeat_timeout_secs: 6,
            default_result: "ABANDON",
            target_arn: None,
        }],
    )
    .await;
    c.autoscaling
        .set_desired_capacity()
        .auto_scaling_group_name("slow-start")
        .desired_capacity(1)
        .send()
        .await
        .unwrap();
    // A new instance is first plain Pending while EC2 starts it: the agent starts then.
    let (instance, state) = fleet::instances(&c, "slow-start").await.remove(0);
    assert_eq!(state, "Pending");
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("ready");
    let extra = format!(
        "[launch]\nenabled = true\ndeadline_secs = 60\ninterval_ms = 500\n\n[[launch.checks]]\nname = \"warm\"\nrun = [\"test\", \"-e\", \"{}\"]\n",
        flag.display()
    );
    let agent = AgentProcess::start(
        dir.path(),
        &config_for(&emulator, &instance, dir.path(), &extra),
    );
    agent.wait_for_log("lifeguard-agent watching", WAIT).await;
    fleet::wait_for_state(&c, &instance, WAIT, "Pending:Wait", |s| {
        s == Some("Pending:Wait")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(14)).await;
    std::fs::write(&flag, "").unwrap();
    fleet::wait_for_state(&c, &instance, WAIT, "InService", |s| s == Some("InService")).await;

    let completions = emulator
        .calls("autoscaling", "CompleteLifecycleAction", Some(&instance))
        .await;
    assert_eq!(completions.len(), 1, "{completions:?}");
    assert_eq!(completions[0]["status"].as_u64(), Some(200));
    assert_eq!(
        completions[0]["params"]["LifecycleActionResult"].as_str(),
        Some("CONTINUE")
    );
    let heartbeats = accepted(&emulator, "RecordLifecycleActionHeartbeat", &instance).await;
    assert!(heartbeats.len() >= 3, "{heartbeats:?}");
    assert_eq!(
        fleet::ec2_state(&c, &instance).await,
        "running",
        "not replaced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standing_rebalance_notice_drains_once_across_a_restart_and_a_new_one_again() {
    let stage = stage(1, 3600).await;
    let victim = stage.instances[0].clone();
    let runs = stage.path("runs");
    let extra = format!(
        "[watch]\ndrain_on_rebalance = true\npoll_interval_ms = 200\n\n{}\n[[drain.steps]]\nname = \"shed-load\"\nshell = \"echo ran >> {}\"\n",
        stage.archive_config(),
        runs.display()
    );
    // config_for writes its own [watch]; this scenario needs its own table instead.
    let config = config_for(&stage.emulator, &victim, stage.dir.path(), &extra).replacen(
        "[watch]\npoll_interval_ms = 200\n",
        "",
        1,
    );
    let mut agent = AgentProcess::start(stage.dir.path(), &config);
    agent.wait_for_log("lifeguard-agent watching", WAIT).await;

    stage
        .emulator
        .control_post(&format!("instances/{victim}/rebalance"), json!({}))
        .await;
    agent.wait_for_log("drain finished", WAIT).await;
    // The notice stays readable; polls go on for a while.
    tokio::time::sleep(Duration::from_secs(3)).await;
    agent.restart();
    agent.wait_for_log("lifeguard-agent watching", WAIT).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        std::fs::read_to_string(&runs).unwrap(),
        "ran\n",
        "one drain for one notice, restart or not"
    );
    let archives = |keys: Vec<String>| {
        keys.into_iter()
            .filter(|k| k.ends_with("-rebalance.tar.gz"))
            .count()
    };
    let prefix = format!("lifeguard/{}/{victim}/", lifeguard_e2e::drain::GROUP);
    assert_eq!(archives(stage.keys(&prefix).await), 1);

    // A new recommendation (a new noticeTime) is a new notice.
    stage
        .emulator
        .control_post(&format!("instances/{victim}/rebalance"), json!({}))
        .await;
    eventually("a second drain", WAIT, || async {
        (std::fs::read_to_string(&runs).unwrap_or_default() == "ran\nran\n").then_some(())
    })
    .await;
    // The instance stays in service throughout: no lifecycle action is involved.
    assert_eq!(
        fleet::lifecycle_state(&stage.clients, &victim)
            .await
            .as_deref(),
        Some("InService")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_timed_out_step_says_on_its_way_out_reaches_the_archive() {
    let stage = stage(1, 3600).await;
    let victim = stage.instances[0].clone();
    // A service that hangs, and says why only when told to stop.
    let extra = format!(
        "{}\n[[drain.steps]]\nname = \"flush-queue\"\nshell = \"trap 'echo flushing: 17 jobs left, broker unreachable; sleep 1; echo gave up; exit 1' TERM; while :; do sleep 0.1; done\"\ntimeout_secs = 2\n",
        stage.archive_config()
    );
    let agent = stage.start_agent(&victim, &extra, &[]).await;
    stage.terminate(&victim).await;
    agent.wait_for_log("drain finished", WAIT).await;
    let (_, archive) = stage.archive_of(&victim, "scale_in").await;
    let unpacked = unpack(&archive);
    let output =
        String::from_utf8_lossy(&unpacked.files["lifeguard/steps/01-flush-queue.log"]).to_string();
    assert!(
        output.contains("flushing: 17 jobs left, broker unreachable"),
        "{output}"
    );
    assert!(output.contains("gave up"), "{output}");
    let manifest = manifest_of(&unpacked);
    assert_eq!(manifest["drain"]["steps"][0]["outcome"], "timed_out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_of_every_call_are_ridden_out_by_one_policy() {
    let stage = stage(1, 3600).await;
    let victim = stage.instances[0].clone();
    let extra = format!(
        "{}\n[[drain.steps]]\nname = \"wait\"\nrun = [\"sleep\", \"2\"]\n",
        stage.archive_config()
    );
    let agent = stage.start_agent(&victim, &extra, &[]).await;
    stage.terminate(&victim).await;
    agent.wait_for_log("drain step done", WAIT).await;
    // From now on the queue throttles and Auto Scaling fails with server errors, more times
    // in a row than the SDK's own attempts (two in these tests) cover.
    for (service, action, mode) in [
        ("sqs", "SendMessage", "throttle"),
        ("autoscaling", "CompleteLifecycleAction", "error500"),
    ] {
        stage
            .emulator
            .control_post(
                "faults",
                json!({"service": service, "action": action, "mode": mode, "count": 5}),
            )
            .await;
    }
    stage.wait_terminated(&victim, WAIT).await;
    agent.wait_for_log("drain finished", WAIT).await;
    let completions = stage.completions(&victim).await;
    assert_eq!(
        completions.last(),
        Some(&(200, "CONTINUE".to_string())),
        "{completions:?}"
    );
    assert!(completions.iter().filter(|(s, _)| *s == 500).count() >= 3);
    let reports = stage.reports().await;
    assert!(
        reports
            .iter()
            .any(|r| r.phase == ReportPhase::DrainFinished),
        "the final report got through the throttling: {reports:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archiver_stalled_on_a_read_does_not_hold_the_upload_past_its_deadline() {
    let stage = stage(1, 3600).await;
    let victim = stage.instances[0].clone();
    // One log on a "hung NFS mount": its reads never return (a seam of debug builds).
    std::fs::write(stage.logs.join("stuck.log"), "x".repeat(100_000)).unwrap();
    let extra = stage.archive_config_with("", "timeout_secs = 8");
    let agent = stage
        .start_agent(
            &victim,
            &extra,
            &[("LIFEGUARD_TEST_STALL_READ", "stuck.log")],
        )
        .await;
    stage.terminate(&victim).await;
    // The stalled read never ends; the drain does, by the upload's deadline.
    agent.wait_for_log("drain finished", WAIT).await;
    stage.wait_terminated(&victim, WAIT).await;
    assert_eq!(
        stage.completions(&victim).await,
        vec![(200, "CONTINUE".to_string())]
    );
    let (_, archive) = stage.archive_of(&victim, "scale_in").await;
    let unpacked = unpack(&archive);
    let manifest = manifest_of(&unpacked);
    let stuck = stage.logs.join("stuck.log").display().to_string();
    let records = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .chain(manifest["skipped"].as_array().unwrap())
        .filter(|f| f["path"] == stuck.as_str())
        .collect::<Vec<_>>();
    assert_eq!(records.len(), 1, "{manifest}");
    let stalled =
        records[0]["truncated"]["reason"] == "stalled" || records[0]["reason"] == "stalled";
    assert!(stalled, "{manifest}");
    assert!(
        manifest["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["path"] == stuck.as_str()
                && e["error"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("stalled:"))),
        "{manifest}"
    );
    // Everything else is whole.
    let app = std::fs::read(stage.logs.join("app.log")).unwrap();
    assert_eq!(
        unpacked.files[&lifeguard_e2e::drain::archived_path(&stage.logs.join("app.log"))],
        app
    );
    assert_eq!(stage.open_uploads().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_killed_three_times_is_given_up_and_the_action_still_completed() {
    let stage = stage(1, 3600).await;
    let victim = stage.instances[0].clone();
    // The archive hangs on one file until its deadline (a hung mount, or a huge tree that gets
    // the agent OOM-killed every time): the agent is killed mid-archive again and again.
    std::fs::write(stage.logs.join("stuck.log"), "x".repeat(1000)).unwrap();
    let extra = stage.archive_config_with("", "timeout_secs = 600");
    let mut agent = stage
        .start_agent(
            &victim,
            &extra,
            &[("LIFEGUARD_TEST_STALL_READ", "stuck.log")],
        )
        .await;
    stage.terminate(&victim).await;
    for attempt in 1..=3 {
        eventually("an archive attempt", WAIT, || async {
            let state: serde_json::Value = serde_json::from_slice(
                &std::fs::read(stage.dir.path().join("agent-state.json")).ok()?,
            )
            .ok()?;
            (state["drain"]["archive_attempts"].as_u64() == Some(attempt)).then_some(())
        })
        .await;
        agent.restart();
    }
    agent.wait_for_log("archive given up", WAIT).await;
    agent.wait_for_log("drain finished", WAIT).await;
    stage.wait_terminated(&victim, WAIT).await;
    assert_eq!(
        stage.completions(&victim).await,
        vec![(200, "CONTINUE".to_string())]
    );
    let reports = stage.reports().await;
    let last = reports.last().unwrap();
    assert_eq!(last.phase, ReportPhase::DrainFailed);
    assert!(
        last.error
            .as_deref()
            .is_some_and(|e| e.contains("3 attempts")),
        "{last:?}"
    );
    assert_eq!(
        stage.open_uploads().await,
        0,
        "every attempt's upload aborted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_are_not_utf8_are_kept_exact_in_the_manifest() {
    use base64::Engine as _;
    use std::os::unix::ffi::OsStrExt;

    let stage = stage(1, 3600).await;
    let victim = stage.instances[0].clone();
    // Latin-1 names: two that differ only in a byte that is not UTF-8, so their lossy forms
    // collide.
    let names: [&[u8]; 2] = [b"caf\xe9.log", b"caf\xe8.log"];
    for (i, name) in names.iter().enumerate() {
        let path = stage.logs.join(std::ffi::OsStr::from_bytes(name));
        std::fs::write(path, format!("entry {i}\n")).unwrap();
    }
    let agent = stage
        .start_agent(&victim, &stage.archive_config(), &[])
        .await;
    stage.terminate(&victim).await;
    agent.wait_for_log("drain finished", WAIT).await;
    let (_, archive) = stage.archive_of(&victim, "scale_in").await;
    let manifest = manifest_of(&unpack(&archive));
    let exact: Vec<Vec<u8>> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["path_base64"].as_str())
        .map(|b| base64::engine::general_purpose::STANDARD.decode(b).unwrap())
        .collect();
    assert_eq!(exact.len(), 2, "{manifest}");
    assert_ne!(exact[0], exact[1]);
    let stored = lifeguard_e2e::drain::raw_names(&archive);
    for name in names {
        let mut full = stage.logs.as_os_str().as_bytes().to_vec();
        full.push(b'/');
        full.extend_from_slice(name);
        assert!(exact.contains(&full), "{name:?} exact in the manifest");
        assert!(
            stored.contains(&full[1..].to_vec()),
            "{name:?} exact in the tar"
        );
    }
}
