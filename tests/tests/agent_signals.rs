//! The agent's process life under a service manager: SIGTERM in the middle of a drain, and
//! SIGHUP to read the configuration again.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use lifeguard_e2e::agent::{AgentProcess, config_for, signal};
use lifeguard_e2e::drain::{GROUP, archived_path, stage, unpack};
use lifeguard_e2e::{eventually, fleet};

const WAIT: Duration = Duration::from_secs(60);
/// The agent gives a running upload 30 s after SIGTERM; beyond that plus slack it is stuck.
const EXIT_BOUND: Duration = Duration::from_secs(45);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_step_secures_the_logs_and_leaves_the_rest_to_the_restarted_agent() {
    let stage = stage(1, 120).await;
    let victim = stage.instances[0].clone();
    let order = stage.path("order");
    let extra = format!(
        "{archive}\n[[drain.steps]]\nname = \"one\"\nshell = \"echo one >> {order}\"\n\n\
         [[drain.steps]]\nname = \"slow\"\nshell = \"echo slow >> {order}; [ -e {order}.once ] || {{ touch {order}.once; sleep 30; }}; echo slow-done >> {order}\"\ntimeout_secs = 60\n\n\
         [[drain.steps]]\nname = \"three\"\nshell = \"echo three >> {order}\"\n",
        archive = stage.archive_config(),
        order = order.display()
    );
    let mut agent = AgentProcess::start(
        stage.dir.path(),
        &config_for(&stage.emulator, &victim, stage.dir.path(), &extra),
    );
    agent.wait_for_log("lifeguard-agent watching", WAIT).await;
    stage.terminate(&victim).await;
    eventually("the slow step to start", WAIT, || async {
        std::fs::read_to_string(&order)
            .ok()
            .filter(|o| o.contains("slow"))
            .map(|_| ())
    })
    .await;

    agent.terminate();
    assert_eq!(
        agent.wait_exit(EXIT_BOUND).await,
        Some(0),
        "{}",
        agent.log()
    );
    // The logs are in S3 already; the action still waits; the interrupted step was stopped.
    let prefix = format!("lifeguard/{GROUP}/{victim}/");
    let keys = stage.keys(&prefix).await;
    assert_eq!(keys.len(), 2, "archive and manifest: {keys:?}");
    assert!(
        stage
            .emulator
            .calls("autoscaling", "CompleteLifecycleAction", Some(&victim))
            .await
            .is_empty()
    );
    assert_eq!(
        fleet::lifecycle_state(&stage.clients, &victim)
            .await
            .as_deref(),
        Some("Terminating:Wait")
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(std::fs::read_to_string(&order).unwrap(), "one\nslow\n");

    agent.restart();
    stage.wait_terminated(&victim, WAIT).await;
    agent.wait_for_log("drain finished", WAIT).await;
    assert_eq!(
        std::fs::read_to_string(&order).unwrap(),
        "one\nslow\nslow\nslow-done\nthree\n",
        "the interrupted step ran again, then the rest; nothing twice that had finished"
    );
    assert_eq!(stage.keys(&prefix).await, keys, "archived once");
    assert_eq!(
        stage.completions(&victim).await,
        vec![(200, "CONTINUE".to_string())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_upload_finishes_the_upload_before_exiting() {
    let stage = stage(1, 120).await;
    let victim = stage.instances[0].clone();
    let big = stage.write_big_log();
    let extra = stage.multipart_config();
    let mut agent = AgentProcess::start(
        stage.dir.path(),
        &config_for(&stage.emulator, &victim, stage.dir.path(), &extra),
    );
    agent.wait_for_log("lifeguard-agent watching", WAIT).await;
    // Parts are refused for six seconds: the upload is in flight when the stop comes.
    stage.refuse_parts_for(6).await;
    stage.terminate(&victim).await;
    stage.wait_for_a_refused_part().await;
    agent.terminate();
    assert_eq!(
        agent.wait_exit(EXIT_BOUND).await,
        Some(0),
        "{}",
        agent.log()
    );

    let keys = stage.keys(&format!("lifeguard/{GROUP}/{victim}/")).await;
    let key = keys.iter().find(|k| k.ends_with(".tar")).unwrap().clone();
    let unpacked = unpack(&stage.object(&key).await);
    assert_eq!(
        unpacked
            .files
            .get(&archived_path(&stage.logs.join("big.log"))),
        Some(&big),
        "the upload finished whole after the stop signal"
    );
    assert_eq!(stage.open_uploads().await, 0);
    // No step was left, so the drain was whole and the action completed before exiting.
    assert_eq!(
        stage.completions(&victim).await,
        vec![(200, "CONTINUE".to_string())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reads_the_configuration_again_and_keeps_the_old_one_if_bad() {
    let stage = stage(1, 60).await;
    let victim = stage.instances[0].clone();
    let marker = stage.path("marker");
    let with_step = |word: &str| {
        format!(
            "{archive}\n[[drain.steps]]\nname = \"mark\"\nshell = \"echo {word} >> {marker}\"\n",
            archive = stage.archive_config(),
            marker = marker.display()
        )
    };
    let config_path = stage.dir.path().join("agent.toml");
    let agent = AgentProcess::start(
        stage.dir.path(),
        &config_for(
            &stage.emulator,
            &victim,
            stage.dir.path(),
            &with_step("before"),
        ),
    );
    agent.wait_for_log("lifeguard-agent watching", WAIT).await;

    std::fs::write(
        &config_path,
        config_for(
            &stage.emulator,
            &victim,
            stage.dir.path(),
            &with_step("after"),
        ),
    )
    .unwrap();
    signal(agent.pid(), "HUP");
    agent.wait_for_log("configuration reloaded", WAIT).await;
    // A broken file afterwards is refused and the running configuration kept.
    std::fs::write(&config_path, "[watch]\npoll_interval = 1\n").unwrap();
    signal(agent.pid(), "HUP");
    agent.wait_for_log("configuration not reloaded", WAIT).await;

    stage.terminate(&victim).await;
    stage.wait_terminated(&victim, WAIT).await;
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "after\n");
}
