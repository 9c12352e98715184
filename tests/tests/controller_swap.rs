//! `lifeguard-controller swap` through the real binaries against the emulator: agents on the
//! group's instances, the controller service running, new instances launched outside the
//! group and swapped in while the group's processes are held.
//!
//! The hook keeps AWS's default 3600 s heartbeat timeout: every retired instance is completed
//! by its agent. The target group has AWS's least interval and healthy threshold (5 s × 2),
//! so an attached instance is `initial` for 10 s before it is healthy. The first swap keeps
//! AWS's 300 s deregistration delay; the others shorten it to 10 s so they run in seconds.

// Test code: a helper panics with a message on anything unexpected, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use lifeguard_e2e::swap::{MUTATING, setting, setting_with_delay, spawn_swap, swap};
use lifeguard_e2e::{eventually, fleet};
use serde_json::Value;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn processes(call: &Value) -> Vec<String> {
    // Auto Scaling's query protocol: ScalingProcesses.member.N.
    let mut names: Vec<String> = call["params"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(key, _)| key.starts_with("ScalingProcesses.member."))
        .map(|(_, p)| p.as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_brings_the_new_in_before_the_old_drain_out_and_ends_as_it_began() {
    // AWS's defaults: a 3600 s hook and a 300 s deregistration delay, during which each old
    // instance stays in plain `Terminating`, still serving its last requests.
    let swap_ = setting_with_delay(&["AZRebalance"], 1, None).await;
    let stage = &swap_.scene.stage;
    let started_at = swap_.scene.last_call_seq().await;
    let output = swap(&swap_.controller.config, &swap_.args(&[])).await;
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("swapped"), "{stdout}");
    // Kept for a look after the run (the README's example comes from such a run).
    let kept = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("swap-run.txt");
    std::fs::write(&kept, format!("{stderr}{stdout}")).unwrap();

    // The group ends with the new instances and exactly its sizes, tags and processes.
    swap_.assert_as_before_with(&swap_.new).await;
    // Held while it ran: the process suspended beforehand was neither suspended nor resumed.
    let swap_calls = |calls: Vec<Value>| -> Vec<Value> {
        calls
            .into_iter()
            .filter(|c| c["seq"].as_u64().unwrap() > started_at)
            .collect()
    };
    let suspended = swap_calls(swap_.calls("SuspendProcesses", None).await);
    let resumed = swap_calls(swap_.calls("ResumeProcesses", None).await);
    assert_eq!((suspended.len(), resumed.len()), (2, 1));
    let mut held: Vec<String> = suspended.iter().flat_map(processes).collect();
    held.sort();
    assert_eq!(
        held,
        [
            "AlarmNotification",
            "Launch",
            "ReplaceUnhealthy",
            "ScheduledActions",
            "Terminate"
        ]
    );
    assert_eq!(processes(&resumed[0]), held);

    // Attached first, waited on while the target group said `initial`, then each old one
    // terminated through the hook and completed by its agent after its archive reached S3.
    let attached = swap_.calls("AttachInstances", None).await;
    assert_eq!(attached.len(), 1);
    let attached_at = attached[0]["seq"].as_u64().unwrap();
    // Launch held only once the new ones are in: Auto Scaling refuses to attach before.
    assert_eq!(processes(&suspended[1]), ["Launch"]);
    assert!(suspended[1]["seq"].as_u64().unwrap() > attached_at);
    assert!(stderr.contains("initial in targetgroup/web"), "{stderr}");
    let healthy_at = stderr.find("in service and healthy").unwrap();
    for old in &swap_.old {
        let terminated = swap_
            .calls("TerminateInstanceInAutoScalingGroup", Some(old))
            .await;
        assert_eq!(terminated.len(), 1, "{terminated:?}");
        assert!(terminated[0]["seq"].as_u64().unwrap() > attached_at);
        assert_eq!(
            terminated[0]["params"]["ShouldDecrementDesiredCapacity"],
            "true"
        );
        assert!(stderr.find(&format!("retiring {old}")).unwrap() > healthy_at);
        assert_eq!(stage.completions(old).await, [(200, "CONTINUE".into())]);
        let (_, archive) = stage.archive_of(old, "scale_in").await;
        assert!(!archive.is_empty());
        assert_eq!(fleet::ec2_state(&stage.clients, old).await, "terminated");
    }
    swap_.controller.process.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_killed_while_retiring_is_finished_by_recover() {
    // Drains of 8 s: the swap is killed while the old instances drain.
    let swap_ = setting(&[], 8).await;
    let mut child = spawn_swap(&swap_.controller.config, &swap_.args(&[]));
    eventually("the swap to retire", Duration::from_secs(120), || async {
        (swap_.stage_tag().await.as_deref() == Some("retire")
            && !swap_
                .calls("TerminateInstanceInAutoScalingGroup", None)
                .await
                .is_empty())
        .then_some(())
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        swap_
            .state()
            .await
            .suspended
            .contains(&"Launch".to_string())
    );

    let output = swap(&swap_.controller.config, &["--recover"]).await;
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("recovering web from stage retire"),
        "{stderr}"
    );
    swap_.assert_as_before_with(&swap_.new).await;
    for old in &swap_.old {
        // Each terminated once: one left by the killed run is followed, not terminated again.
        let terminated = swap_
            .calls("TerminateInstanceInAutoScalingGroup", Some(old))
            .await;
        assert_eq!(terminated.len(), 1, "{terminated:?}");
        assert_eq!(
            swap_.scene.stage.completions(old).await,
            [(200, "CONTINUE".into())]
        );
    }
    swap_.controller.process.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_killed_while_waiting_for_health_is_rolled_back_by_recover() {
    let swap_ = setting(&["ScheduledActions"], 1).await;
    swap_.make_unhealthy(&swap_.new[0]).await;
    let mut child = spawn_swap(&swap_.controller.config, &swap_.args(&[]));
    eventually(
        "the swap to wait for health",
        Duration::from_secs(60),
        || async { (swap_.stage_tag().await.as_deref() == Some("await-healthy")).then_some(()) },
    )
    .await;
    child.kill().unwrap();
    child.wait().unwrap();

    let output = swap(&swap_.controller.config, &["--recover"]).await;
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("rolled back") && stdout.contains("interrupted at await-healthy"),
        "{stdout}"
    );
    swap_.assert_as_before_with(&swap_.old).await;
    for new in &swap_.new {
        // Detached, still running: they are the operator's.
        assert_eq!(
            fleet::lifecycle_state(&swap_.scene.stage.clients, new).await,
            None
        );
        assert_eq!(
            fleet::ec2_state(&swap_.scene.stage.clients, new).await,
            "running"
        );
    }
    assert!(
        swap_
            .calls("TerminateInstanceInAutoScalingGroup", None)
            .await
            .is_empty()
    );
    swap_.controller.process.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_whose_new_instance_never_becomes_healthy_rolls_back() {
    let swap_ = setting(&["AZRebalance"], 1).await;
    swap_.make_unhealthy(&swap_.new[1]).await;
    // 20 s instead of the default 900 s: the target group's verdict is known after 10 s.
    let output = swap(
        &swap_.controller.config,
        &swap_.args(&["--healthy-timeout", "20"]),
    )
    .await;
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("rolled back")
            && stdout.contains(&format!("{} unhealthy in targetgroup/web", swap_.new[1])),
        "{stdout}"
    );
    swap_.assert_as_before_with(&swap_.old).await;
    assert_eq!(swap_.calls("DetachInstances", None).await.len(), 1);
    assert!(
        swap_
            .calls("TerminateInstanceInAutoScalingGroup", None)
            .await
            .is_empty()
    );
    for new in &swap_.new {
        assert_eq!(
            fleet::ec2_state(&swap_.scene.stage.clients, new).await,
            "running"
        );
    }
    swap_.controller.process.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_of_a_swap_changes_nothing() {
    let swap_ = setting(&["AZRebalance"], 1).await;
    let emulator = &swap_.scene.stage.emulator;
    let counted = emulator.call_counts(&MUTATING).await;
    let output = swap(&swap_.controller.config, &swap_.args(&["--dry-run"])).await;
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        text(&output.stderr)
    );
    assert!(
        stdout.contains("AttachInstances") && stdout.contains("MaxSize=4"),
        "{stdout}"
    );
    assert_eq!(emulator.call_counts(&MUTATING).await, counted);
    swap_.assert_as_before_with(&swap_.old).await;
    // A refused swap changes nothing either: an instance not in the group to retire.
    let output = swap(
        &swap_.controller.config,
        &["--retire", &swap_.new[0], "--attach", &swap_.new[1]],
    )
    .await;
    assert_eq!(output.status.code(), Some(75), "{}", text(&output.stdout));
    assert_eq!(emulator.call_counts(&MUTATING).await, counted);
    swap_.controller.process.terminate();
}
