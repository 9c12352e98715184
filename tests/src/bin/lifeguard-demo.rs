//! The local demo, the whole story on one machine against the emulator: a group of three
//! instances with a terminate hook, lifeguard-agent running for each simulated instance over its
//! own logs, a scale-in, the chosen instance's drain (steps, archive, upload, completion), the
//! agent's reports and the lifecycle event explained by `lifeguard-controller explain`, and the
//! archive listed from S3 with its manifest.

// Demo tooling built on the test harness, which fails loudly rather than carrying on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use lifeguard_common::message::Transition;
use lifeguard_e2e::agent::{AgentProcess, config_for};
use lifeguard_e2e::drain::{sha256_hex, unpack, write_logs};
use lifeguard_e2e::fleet::{self, Hook};
use lifeguard_e2e::{Emulator, eventually};
use serde_json::{Value, json};

const GROUP: &str = "demo-web";
const HOOK: &str = "lifeguard-drain";
const BUCKET: &str = "demo-fleet-logs";
const WAIT: Duration = Duration::from_secs(60);

/// `lifeguard-controller` from the same build as this demo.
fn controller_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("LIFEGUARD_CONTROLLER") {
        return PathBuf::from(path);
    }
    let me = std::env::current_exe().unwrap();
    me.with_file_name("lifeguard-controller")
}

fn explain(body: &str) -> String {
    let binary = controller_binary();
    let mut child = Command::new(&binary)
        .args(["explain", "--pretty", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {}: {e}", binary.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "explain failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn step(text: &str) {
    println!("\n==> {text}");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    step("starting the AWS emulator (moto + lifeguard's lifecycle hooks and IMDS)");
    let emulator = Emulator::start().await;
    println!("    endpoint {}", emulator.endpoint());
    let c = emulator.clients().await;
    let work = tempfile::tempdir().unwrap();

    let image = fleet::any_image(&c).await;
    let template = fleet::launch_template(&c, "demo-web", &image).await;
    let queue = fleet::queue(&c, "lifeguard-controller").await;
    fleet::rule_to_queue(
        &c,
        "lifeguard-lifecycle",
        json!({"source": ["aws.autoscaling"],
               "detail-type": ["EC2 Instance-launch Lifecycle Action",
                               "EC2 Instance-terminate Lifecycle Action"]}),
        &queue,
    )
    .await;
    c.s3.create_bucket().bucket(BUCKET).send().await.unwrap();
    step(&format!(
        "group {GROUP}: 3 instances of {template} ({image}), terminate hook {HOOK} \
         (heartbeat 300 s, default ABANDON); EventBridge rule and agent reports -> queue \
         lifeguard-controller; bucket {BUCKET}"
    ));
    fleet::group(
        &c,
        GROUP,
        &template,
        3,
        &[Hook {
            name: HOOK,
            transition: Transition::TERMINATING,
            heartbeat_timeout_secs: 300,
            default_result: "ABANDON",
            target_arn: None,
        }],
    )
    .await;

    step("lifeguard-agent on each instance, each with its own logs and drain steps");
    let mut agents = Vec::new();
    for (id, state) in fleet::instances(&c, GROUP).await {
        let dir = work.path().join(&id);
        let logs = dir.join("var/log/app");
        write_logs(&logs);
        let config = agent_config(&emulator, &id, &dir, &logs, &queue.url);
        std::fs::create_dir_all(&dir).unwrap();
        let agent = AgentProcess::start(&dir, &config);
        println!(
            "    {id}  {state}  agent pid {}, logs in {}",
            agent.pid(),
            logs.display()
        );
        agents.push((id, logs, agent));
    }
    for (_, _, agent) in &agents {
        agent.wait_for_log("lifeguard-agent watching", WAIT).await;
    }
    println!("    all three agents are polling IMDS every second");

    step("scale-in: SetDesiredCapacity 3 -> 2; the group picks the instance to terminate");
    c.autoscaling
        .set_desired_capacity()
        .auto_scaling_group_name(GROUP)
        .desired_capacity(2)
        .send()
        .await
        .unwrap();
    let victim = eventually("an instance in Terminating:Wait", WAIT, || async {
        for (id, _, _) in &agents {
            if fleet::lifecycle_state(&c, id).await.as_deref() == Some("Terminating:Wait") {
                return Some(id.clone());
            }
        }
        None
    })
    .await;
    println!("    {victim}: Terminating:Wait; its agent sees IMDS say Terminated and drains");
    let (_, logs, agent) = agents.iter().find(|(id, _, _)| *id == victim).unwrap();

    eventually("the instance to terminate", WAIT, || async {
        (fleet::ec2_state(&c, &victim).await == "terminated").then_some(())
    })
    .await;
    agent.wait_for_log("drain finished", WAIT).await;
    step(&format!(
        "what {victim}'s agent did (its JSON log, abridged)"
    ));
    for event in agent.log_events() {
        let message = event["message"].as_str().unwrap_or_default();
        if event["level"] == "DEBUG" || message.is_empty() {
            continue;
        }
        let details: Vec<String> = [
            "reason", "step", "outcome", "key", "bytes", "result", "hook",
        ]
        .iter()
        .filter_map(|k| event.get(*k).map(|v| format!("{k}={}", plain(v))))
        .collect();
        println!("    {message}  {}", details.join(" "));
    }

    step("the queue, as the controller will read it (`lifeguard-controller explain`)");
    let mut seen = 0;
    while let Some(body) = receive_one(&c, &queue.url).await {
        let explained: Value = serde_json::from_str(&explain(&body)).unwrap();
        let kind = explained["kind"].as_str().unwrap_or_default();
        // An agent report's phase is its `state`; a lifecycle event shows its transition.
        let phase = explained
            .get("state")
            .or_else(|| explained.get("transition"))
            .map(plain)
            .unwrap_or_default();
        println!(
            "    {kind:<20} {phase:<18} instance {} ",
            explained.get("instance_id").map(plain).unwrap_or_default()
        );
        seen += 1;
    }
    println!("    ({seen} messages)");

    step(&format!("the archive in s3://{BUCKET}/ and its manifest"));
    let listed = c.s3.list_objects_v2().bucket(BUCKET).send().await.unwrap();
    let mut archive_key = String::new();
    for object in listed.contents() {
        let key = object.key().unwrap_or_default();
        println!("    {key}  {} bytes", object.size().unwrap_or_default());
        if key.ends_with(".tar.gz") {
            archive_key = key.to_string();
        }
    }
    let head =
        c.s3.head_object()
            .bucket(BUCKET)
            .key(&archive_key)
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .send()
            .await
            .unwrap();
    println!(
        "    checksum CRC32C {} (verified by S3 at upload), metadata {:?}",
        head.checksum_crc32_c().unwrap_or("-"),
        head.metadata().cloned().unwrap_or_default()
    );
    let archive =
        c.s3.get_object()
            .bucket(BUCKET)
            .key(&archive_key)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes();
    let unpacked = unpack(&archive);
    let manifest: Value = serde_json::from_slice(&unpacked.files["MANIFEST.json"]).unwrap();
    for file in manifest["files"].as_array().unwrap() {
        let path = file["path"].as_str().unwrap();
        let on_disk = std::fs::read(path).unwrap();
        let same = file["sha256"].as_str() == Some(sha256_hex(&on_disk).as_str());
        println!(
            "    file {path}  {} bytes  sha256 {}…  {}",
            file["size"],
            &file["sha256"].as_str().unwrap()[..16],
            if same {
                "matches the instance's copy"
            } else {
                "DIFFERS"
            }
        );
    }
    for link in manifest["symlinks"].as_array().unwrap() {
        println!(
            "    link {} -> {}",
            plain(&link["path"]),
            plain(&link["target"])
        );
    }
    for extra in manifest["extras"].as_array().unwrap() {
        println!(
            "    step output {}  {} bytes",
            plain(&extra["path"]),
            extra["size"]
        );
    }
    println!("    logs archived from {}", logs.display());

    step("the group now");
    for (id, state) in fleet::instances(&c, GROUP).await {
        println!("    {id}  {state}");
    }
    let completions = emulator
        .calls("autoscaling", "CompleteLifecycleAction", Some(&victim))
        .await;
    println!(
        "    CompleteLifecycleAction for {victim}: {} call(s), result {}",
        completions.len(),
        completions
            .first()
            .map(|c| plain(&c["params"]["LifecycleActionResult"]))
            .unwrap_or_default()
    );
    for (_, _, agent) in &agents {
        agent.terminate();
    }
    println!("\ndone: the agents and the emulator stop now.");
}

fn agent_config(
    emulator: &Emulator,
    instance_id: &str,
    dir: &std::path::Path,
    logs: &std::path::Path,
    queue_url: &str,
) -> String {
    let extra = format!(
        r#"[[drain.steps]]
name = "leave-load-balancer"
shell = "echo \"deregistering $LIFEGUARD_INSTANCE_ID of $LIFEGUARD_ASG, reason $LIFEGUARD_REASON\"; sleep 1"

[[drain.steps]]
name = "flush-app"
run = ["/bin/sh", "-c", "echo flushed 42 queued jobs"]

[archive]
paths = ["{logs}"]

[upload]
bucket = "{BUCKET}"

[report]
queue_url = "{queue_url}"
"#,
        logs = logs.display()
    );
    config_for(emulator, instance_id, dir, &extra)
        .replace("lifeguard_agent=debug", "lifeguard_agent=info")
}

async fn receive_one(c: &lifeguard_e2e::Clients, queue_url: &str) -> Option<String> {
    let received = c
        .sqs
        .receive_message()
        .queue_url(queue_url)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap();
    let message = received.messages().first()?;
    c.sqs
        .delete_message()
        .queue_url(queue_url)
        .receipt_handle(message.receipt_handle().unwrap())
        .send()
        .await
        .unwrap();
    message.body().map(str::to_string)
}

/// A JSON value without the quotes around strings.
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
