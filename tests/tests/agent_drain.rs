//! The real agent binary against the emulator: a scale-in through the terminate hook drains
//! the instance, uploads a verified archive, and completes the lifecycle action once.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use lifeguard_common::message::{ReportPhase, StepOutcome};
use lifeguard_e2e::agent::{AgentProcess, config_for, config_with_aws};
use lifeguard_e2e::drain::{BUCKET, GROUP, HOOK, archived_path, sha256_hex, stage, unpack};
use lifeguard_e2e::eventually;
use lifeguard_e2e::outage::OutageProxy;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(40);

fn manifest_of(files: &std::collections::BTreeMap<String, Vec<u8>>) -> Value {
    serde_json::from_slice(
        files
            .get("MANIFEST.json")
            .expect("MANIFEST.json in the archive"),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_in_drains_uploads_a_verified_archive_and_completes_once() {
    let stage = stage(2, 60).await;
    let victim = stage.instances[0].clone();
    let order = stage.path("order");
    let extra = format!(
        r#"{archive}
[[drain.steps]]
name = "first"
shell = "echo first >> {order}; echo reason=$LIFEGUARD_REASON asg=$LIFEGUARD_ASG"

[[drain.steps]]
name = "second"
run = ["sh", "-c", "echo second >> {order}"]
"#,
        archive = stage.archive_config(),
        order = order.display()
    );
    let config = config_for(&stage.emulator, &victim, stage.dir.path(), &extra);
    let agent = AgentProcess::start(stage.dir.path(), &config);
    agent.wait_for_log("lifeguard-agent watching", WAIT).await;

    stage.terminate(&victim).await;
    stage.wait_terminated(&victim, WAIT).await;
    agent.wait_for_log("drain finished", WAIT).await;

    // The steps ran, in order, once each, with the event in their environment.
    assert_eq!(std::fs::read_to_string(&order).unwrap(), "first\nsecond\n");

    // Exactly one archive (plus its manifest copy) for this instance.
    let prefix = format!("lifeguard/{GROUP}/{victim}/");
    let keys = stage.keys(&prefix).await;
    assert_eq!(keys.len(), 2, "{keys:?}");
    let archive_key = keys
        .iter()
        .find(|k| k.ends_with("-scale_in.tar.gz"))
        .unwrap()
        .clone();
    assert!(keys.contains(&format!("{archive_key}.manifest.json")));
    // Beneath the instance role session's own level (`aws:userid`, as STS answered the agent's
    // IMDS credentials): the one level the agent's IAM policy lets this instance write.
    let principal = archive_key
        .strip_prefix(&prefix)
        .and_then(|rest| rest.split_once('/'))
        .map(|(principal, _)| principal)
        .unwrap_or_default();
    assert!(
        principal.starts_with("AROA") && principal.ends_with(&format!(":{victim}")),
        "{archive_key}"
    );
    let archive = stage.object(&archive_key).await;

    // S3 verified the checksum the agent sent; the object's metadata names the drain.
    let head = stage
        .clients
        .s3
        .head_object()
        .bucket(BUCKET)
        .key(&archive_key)
        .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert!(head.checksum_crc32_c().is_some(), "{head:?}");
    let metadata = head.metadata().unwrap();
    assert_eq!(metadata.get("instance-id"), Some(&victim));
    assert_eq!(metadata.get("reason").map(String::as_str), Some("scale_in"));

    // Every configured file is in the archive with its bytes, and the manifest says so.
    let unpacked = unpack(&archive);
    let manifest = manifest_of(&unpacked.files);
    // The digests live on the manifest beside the archive: the archive is written once, never
    // copied onto itself to add metadata (twice the S3 work, and impossible past 5 GB).
    let sidecar_key = format!("{archive_key}.manifest.json");
    let sidecar = stage.object(&sidecar_key).await;
    assert_eq!(sidecar, unpacked.files["MANIFEST.json"], "the same bytes");
    let sidecar_metadata = stage.metadata(&sidecar_key).await;
    assert_eq!(
        sidecar_metadata.get("manifest-sha256"),
        Some(&sha256_hex(&unpacked.files["MANIFEST.json"]))
    );
    assert_eq!(
        sidecar_metadata.get("archive-sha256"),
        Some(&sha256_hex(&archive))
    );
    assert!(
        stage
            .emulator
            .calls("s3", "CopyObject", None)
            .await
            .is_empty(),
        "no copy of the archive"
    );
    for name in ["app.log", "access.log", "worker/jobs.log"] {
        let path = stage.logs.join(name);
        let original = std::fs::read(&path).unwrap();
        let stored = archived_path(&path);
        assert_eq!(unpacked.files.get(&stored), Some(&original), "{stored}");
        let entry = manifest["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"].as_str() == path.to_str())
            .unwrap_or_else(|| panic!("{stored} not in the manifest: {manifest}"));
        assert_eq!(
            entry["sha256"].as_str(),
            Some(sha256_hex(&original).as_str())
        );
    }
    assert_eq!(
        unpacked
            .symlinks
            .get(&archived_path(&stage.logs.join("current.log")))
            .map(String::as_str),
        Some("app.log"),
        "symlinks are stored as links"
    );
    let first_output = unpacked
        .files
        .iter()
        .find(|(path, _)| path.starts_with("lifeguard/steps/") && path.ends_with("first.log"))
        .map(|(_, bytes)| String::from_utf8_lossy(bytes).to_string())
        .unwrap();
    assert_eq!(first_output, format!("reason=scale_in asg={GROUP}\n"));

    // One completion, CONTINUE, by instance id.
    assert_eq!(
        stage.completions(&victim).await,
        vec![(200, "CONTINUE".to_string())]
    );
    let call = &stage
        .emulator
        .calls("autoscaling", "CompleteLifecycleAction", Some(&victim))
        .await[0];
    assert_eq!(call["params"]["InstanceId"], json!(victim));
    assert_eq!(call["params"]["LifecycleHookName"], json!(HOOK));

    // The reports tell the controller the same story, ending with the archive's digest.
    let reports = stage.reports().await;
    let phases: Vec<ReportPhase> = reports.iter().map(|r| r.phase).collect();
    assert_eq!(
        phases.first(),
        Some(&ReportPhase::DrainStarted),
        "{phases:?}"
    );
    assert_eq!(
        phases.last(),
        Some(&ReportPhase::DrainFinished),
        "{phases:?}"
    );
    let finished = reports.last().unwrap();
    let summary = finished.archive.as_ref().unwrap();
    assert_eq!(summary.key, archive_key);
    assert_eq!(summary.sha256, sha256_hex(&archive));
    assert_eq!(summary.bytes, archive.len() as u64);
    assert_eq!(finished.result.as_deref(), Some("CONTINUE"));
    assert!(
        finished
            .steps
            .iter()
            .all(|s| s.outcome == StepOutcome::Succeeded)
    );
    assert_eq!(stage.open_uploads().await, 0);

    // The other instance was left alone.
    assert_eq!(
        lifeguard_e2e::fleet::lifecycle_state(&stage.clients, &stage.instances[1])
            .await
            .as_deref(),
        Some("InService")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_longer_than_the_heartbeat_timeout_succeeds_through_heartbeats() {
    // A 3 s heartbeat timeout and a 7 s drain step: without heartbeats the action would time
    // out and the agent's completion would find no action.
    let stage = stage(1, 3).await;
    let victim = stage.instances[0].clone();
    let extra = format!(
        "{}\n[[drain.steps]]\nname = \"slow\"\nrun = [\"sleep\", \"7\"]\ntimeout_secs = 20\n",
        stage.archive_config()
    );
    let agent = AgentProcess::start(
        stage.dir.path(),
        &config_for(&stage.emulator, &victim, stage.dir.path(), &extra),
    );
    agent.wait_for_log("lifeguard-agent watching", WAIT).await;
    stage.terminate(&victim).await;
    stage.wait_terminated(&victim, WAIT).await;

    let heartbeats = stage
        .emulator
        .calls(
            "autoscaling",
            "RecordLifecycleActionHeartbeat",
            Some(&victim),
        )
        .await;
    let accepted = heartbeats
        .iter()
        .filter(|c| c["status"].as_u64() == Some(200))
        .count();
    assert!(accepted >= 3, "heartbeats: {heartbeats:?}");
    assert_eq!(
        stage.completions(&victim).await,
        vec![(200, "CONTINUE".to_string())]
    );
    let reports = stage.reports().await;
    assert!(
        reports
            .iter()
            .any(|r| r.phase == ReportPhase::DrainHeartbeat)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandon_steps_complete_with_abandon_and_continue_steps_do_not() {
    let stage = stage(2, 60).await;
    let mut agents = Vec::new();
    for (instance, policy) in stage.instances.iter().zip(["abandon", "continue"]) {
        let dir = stage.path(policy);
        std::fs::create_dir_all(&dir).unwrap();
        let extra = format!(
            "{}\n[[drain.steps]]\nname = \"fails\"\nrun = [\"false\"]\non_failure = \"{policy}\"\n\n[[drain.steps]]\nname = \"after\"\nrun = [\"true\"]\n",
            stage.archive_config()
        );
        let agent = AgentProcess::start(&dir, &config_for(&stage.emulator, instance, &dir, &extra));
        agents.push(agent);
    }
    for agent in &agents {
        agent.wait_for_log("lifeguard-agent watching", WAIT).await;
    }
    for instance in &stage.instances {
        stage.terminate(instance).await;
    }
    for instance in &stage.instances {
        stage.wait_terminated(instance, WAIT).await;
    }
    assert_eq!(
        stage.completions(&stage.instances[0]).await,
        vec![(200, "ABANDON".to_string())]
    );
    assert_eq!(
        stage.completions(&stage.instances[1]).await,
        vec![(200, "CONTINUE".to_string())]
    );
    // The step after the failing one still ran, and the archive still went up.
    for instance in &stage.instances {
        let keys = stage.keys(&format!("lifeguard/{GROUP}/{instance}/")).await;
        assert_eq!(keys.len(), 2, "{instance}: {keys:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_down_for_a_while_still_gets_the_whole_archive() {
    let stage = stage(1, 60).await;
    let victim = stage.instances[0].clone();
    // Enough logs for a multipart upload (5 MiB parts), so the outage hits it midway.
    let big = stage.write_big_log();
    // S3 goes away (connections reset, then refused) once the first part is on its way, and
    // comes back four seconds later with its state intact; then it answers 503 to the next
    // two part uploads.
    let s3 = OutageProxy::start(stage.emulator.port(), 3 << 20, Duration::from_secs(4)).await;
    let aws = format!("s3_endpoint_url = \"{}\"", s3.url());
    let extra = stage.multipart_config();
    let agent = AgentProcess::start(
        stage.dir.path(),
        &config_with_aws(&stage.emulator, &victim, stage.dir.path(), &aws, &extra),
    );
    agent.wait_for_log("lifeguard-agent watching", WAIT).await;
    stage
        .emulator
        .control_post(
            "faults",
            json!({"service": "s3", "mode": "unavailable", "count": 2, "action": "UploadPart"}),
        )
        .await;
    stage.terminate(&victim).await;
    stage
        .wait_terminated(&victim, Duration::from_secs(90))
        .await;
    assert_eq!(s3.outages(), 1, "S3 went away during the upload");

    let keys = stage.keys(&format!("lifeguard/{GROUP}/{victim}/")).await;
    let archive_key = keys.iter().find(|k| k.ends_with(".tar")).unwrap().clone();
    let unpacked = unpack(&stage.object(&archive_key).await);
    assert_eq!(
        unpacked
            .files
            .get(&archived_path(&stage.logs.join("big.log"))),
        Some(&big),
        "the archive holds the whole file"
    );
    let failed_parts = stage
        .emulator
        .calls("s3", "UploadPart", None)
        .await
        .iter()
        .filter(|c| c["status"].as_u64() == Some(503))
        .count();
    assert_eq!(failed_parts, 2, "the 503s were answered and ridden out");
    assert_eq!(
        stage.open_uploads().await,
        0,
        "no multipart upload left open"
    );
    assert_eq!(
        stage.completions(&victim).await,
        vec![(200, "CONTINUE".to_string())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_drain_and_restarted_resumes_without_doing_anything_twice() {
    let stage = stage(1, 60).await;
    let victim = stage.instances[0].clone();
    let order = stage.path("order");
    let extra = format!(
        "{archive}\n[[drain.steps]]\nname = \"one\"\nshell = \"echo one >> {order}\"\n\n[[drain.steps]]\nname = \"slow\"\nshell = \"echo slow >> {order}; sleep 4\"\n",
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
    agent.kill9();
    agent.restart();
    stage.wait_terminated(&victim, WAIT).await;
    agent.wait_for_log("drain finished", WAIT).await;

    // The first step ran once; the interrupted one ran again; one archive; one completion.
    assert_eq!(
        std::fs::read_to_string(&order).unwrap(),
        "one\nslow\nslow\n"
    );
    let keys = stage.keys(&format!("lifeguard/{GROUP}/{victim}/")).await;
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(
        stage.completions(&victim).await,
        vec![(200, "CONTINUE".to_string())]
    );
    assert!(agent.log().contains("resuming an unfinished drain"));
    let creates = stage.emulator.calls("s3", "PutObject", None).await.len()
        + stage
            .emulator
            .calls("s3", "CreateMultipartUpload", None)
            .await
            .len();
    assert_eq!(creates, 2, "one archive and one manifest copy were written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_upload_and_restarted_leaves_no_open_upload() {
    let stage = stage(1, 60).await;
    let victim = stage.instances[0].clone();
    let big = stage.write_big_log();
    let extra = stage.multipart_config();
    let mut agent = AgentProcess::start(
        stage.dir.path(),
        &config_for(&stage.emulator, &victim, stage.dir.path(), &extra),
    );
    agent.wait_for_log("lifeguard-agent watching", WAIT).await;
    // Parts fail for a while, so the first run is caught with its multipart upload open.
    stage.refuse_parts_for(8).await;
    stage.terminate(&victim).await;
    stage.wait_for_a_refused_part().await;
    assert_eq!(
        stage.open_uploads().await,
        1,
        "the first run's upload is open"
    );
    agent.kill9();
    agent.restart();
    stage
        .wait_terminated(&victim, Duration::from_secs(90))
        .await;

    assert_eq!(
        stage.open_uploads().await,
        0,
        "the first run's upload was aborted by the second"
    );
    let aborts = stage
        .emulator
        .calls("s3", "AbortMultipartUpload", None)
        .await;
    assert_eq!(aborts.len(), 1, "{aborts:?}");
    assert!(
        agent
            .log()
            .contains("aborted uploads left by the previous run")
    );
    let keys = stage.keys(&format!("lifeguard/{GROUP}/{victim}/")).await;
    let archive_key = keys.iter().find(|k| k.ends_with(".tar")).unwrap().clone();
    let unpacked = unpack(&stage.object(&archive_key).await);
    assert_eq!(
        unpacked
            .files
            .get(&archived_path(&stage.logs.join("big.log"))),
        Some(&big)
    );
    assert_eq!(
        stage.completions(&victim).await,
        vec![(200, "CONTINUE".to_string())]
    );
}
