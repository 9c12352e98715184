//! The local demo, the whole story on one machine against the emulator: a group of three
//! instances with a terminate hook, lifeguard-controller on the group's queue, lifeguard-agent on
//! two of the simulated instances (the third has none), the scale-in of one instance with an
//! agent and of the one without, the drain (steps, archive, upload, completion) followed by the
//! controller, the controller's fallback for the agentless one, the archive listed from S3 with
//! its manifest, and `lifeguard-controller status` with each drain's outcome.

// Demo tooling built on the test harness, which fails loudly rather than carrying on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use lifeguard_common::message::Transition;
use lifeguard_e2e::agent::{AgentProcess, ServiceProcess, config_for};
use lifeguard_e2e::controller::free_port;
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
         (heartbeat 300 s, default ABANDON), tagged lifeguard:managed; EventBridge rule and \
         agent reports -> queue lifeguard-controller; bucket {BUCKET}"
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
    c.autoscaling
        .create_or_update_tags()
        .tags(
            aws_sdk_autoscaling::types::Tag::builder()
                .resource_id(GROUP)
                .resource_type("auto-scaling-group")
                .key("lifeguard:managed")
                .value("true")
                .propagate_at_launch(false)
                .build(),
        )
        .send()
        .await
        .unwrap();

    step("lifeguard-controller on the queue (agent grace 8 s, fallback CONTINUE)");
    let port = free_port();
    let controller_config = controller_config(&emulator, &queue.url, port);
    let controller = ServiceProcess::controller(
        work.path(),
        "controller",
        &controller_config,
        &[("LIFEGUARD_REPLICA_ID", "demo-controller")],
    );
    eventually("the controller to be ready", WAIT, || async {
        let ready = matches!(
            reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await,
            Ok(r) if r.status().is_success()
        );
        ready.then_some(())
    })
    .await;
    println!(
        "    pid {}, health and metrics on http://127.0.0.1:{port}/healthz and /metrics",
        controller.pid()
    );

    step(
        "lifeguard-agent on two instances, each with its own logs and drain steps; none on the third",
    );
    let members = fleet::instances(&c, GROUP).await;
    let mut agents = Vec::new();
    for (id, state) in &members[..2] {
        let dir = work.path().join(id);
        let logs = dir.join("var/log/app");
        write_logs(&logs);
        let config = agent_config(&emulator, id, &dir, &logs, &queue.url);
        std::fs::create_dir_all(&dir).unwrap();
        let agent = AgentProcess::start(&dir, &config);
        println!(
            "    {id}  {state}  agent pid {}, logs in {}",
            agent.pid(),
            logs.display()
        );
        agents.push((id.clone(), logs, agent));
    }
    let agentless = members[2].0.clone();
    println!("    {agentless}  {}  no agent", members[2].1);
    for (_, _, agent) in &agents {
        agent.wait_for_log("lifeguard-agent watching", WAIT).await;
    }
    println!("    both agents are polling IMDS every second");

    let victim = agents[0].0.clone();
    step(&format!(
        "scale-in: TerminateInstanceInAutoScalingGroup {victim} (has an agent) and {agentless} \
         (has none), capacity decremented"
    ));
    for id in [&victim, &agentless] {
        c.autoscaling
            .terminate_instance_in_auto_scaling_group()
            .instance_id(id)
            .should_decrement_desired_capacity(true)
            .send()
            .await
            .unwrap();
    }
    println!(
        "    both wait in Terminating:Wait; the agent on {victim} sees IMDS say Terminated and drains"
    );
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

    step(&format!(
        "{agentless} has no agent: the controller completes its action after the grace"
    ));
    eventually("the agentless instance to terminate", WAIT, || async {
        (fleet::ec2_state(&c, &agentless).await == "terminated").then_some(())
    })
    .await;
    step("what the controller did (its JSON log, abridged)");
    for event in controller.log_events() {
        let message = event["message"].as_str().unwrap_or_default();
        if event["level"] == "DEBUG" || message.is_empty() || message == "reconciled" {
            continue;
        }
        let details: Vec<String> = ["instance_id", "phase", "result", "reason"]
            .iter()
            .filter_map(|k| event.get(*k).map(|v| format!("{k}={}", plain(v))))
            .collect();
        println!("    {message}  {}", details.join(" "));
    }

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
    for id in [&victim, &agentless] {
        let completions = emulator
            .calls("autoscaling", "CompleteLifecycleAction", Some(id))
            .await;
        println!(
            "    CompleteLifecycleAction for {id}: {} call(s), result {}",
            completions.len(),
            completions
                .first()
                .map(|c| plain(&c["params"]["LifecycleActionResult"]))
                .unwrap_or_default()
        );
    }

    step("lifeguard-controller status (read from AWS: the marks on the instances)");
    eventually("both outcomes recorded", WAIT, || async {
        let json = status(&controller_config, work.path(), &["--output", "json"]);
        let rows: Vec<Value> = serde_json::from_str(&json).unwrap();
        (rows.iter().filter(|r| r["ended_by"] != Value::Null).count() >= 2).then_some(())
    })
    .await;
    print!("{}", status(&controller_config, work.path(), &[]));
    for (_, _, agent) in &agents {
        agent.terminate();
    }
    controller.terminate();
    println!("\ndone: the agents, the controller and the emulator stop now.");
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

/// `lifeguard-controller status` with the demo controller's configuration; its output.
fn status(config: &str, dir: &std::path::Path, args: &[&str]) -> String {
    let path = dir.join("status.toml");
    std::fs::write(&path, config).unwrap();
    let output = Command::new(controller_binary())
        .arg("--config")
        .arg(&path)
        .arg("status")
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "lifeguard-controller status failed"
    );
    String::from_utf8(output.stdout).unwrap()
}

fn controller_config(emulator: &Emulator, queue_url: &str, port: u16) -> String {
    format!(
        r#"[aws]
region = "{region}"
endpoint_url = "{endpoint}"

[queue]
url = "{queue_url}"
wait_time_secs = 1

[groups]
tag = "lifeguard:managed"

[groups.defaults]
agent_grace_secs = 8
fallback_result = "CONTINUE"

[reconcile]
interval_secs = 5

[http]
listen = "127.0.0.1:{port}"

[log]
format = "json"
level = "info"
"#,
        region = lifeguard_e2e::REGION,
        endpoint = emulator.endpoint(),
    )
}

/// A JSON value without the quotes around strings.
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
