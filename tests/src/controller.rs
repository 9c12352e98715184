//! A stage for controller scenarios: the agent stage (emulator, group `web` with a terminate
//! hook, bucket, logs), with the group tagged as managed, an EventBridge rule delivering its
//! lifecycle events to the stage's queue (which the agents report to as well), a dead-letter
//! queue behind it, and helpers to run controllers and read what they did.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use aws_sdk_autoscaling::types::Tag;
use serde_json::{Value, json};

use crate::agent::{ServiceProcess, workspace_binary};
use crate::drain::{GROUP, Stage, stage};
use crate::fleet::{self, Queue};
use crate::{REGION, eventually};

pub struct Scene {
    pub stage: Stage,
    pub dead: Queue,
}

/// `size` instances, hook heartbeat timeout `heartbeat_secs` (default result ABANDON), the
/// group tagged `lifeguard:managed` plus `tags`.
pub async fn scene(size: i32, heartbeat_secs: i32, tags: &[(&str, &str)]) -> Scene {
    let stage = stage(size, heartbeat_secs).await;
    let clients = &stage.clients;
    let mut put = clients.autoscaling.create_or_update_tags();
    for (key, value) in [("lifeguard:managed", "true")].iter().chain(tags) {
        put = put.tags(
            Tag::builder()
                .resource_id(GROUP)
                .resource_type("auto-scaling-group")
                .key(*key)
                .value(*value)
                .propagate_at_launch(false)
                .build(),
        );
    }
    put.send().await.unwrap();
    fleet::rule_to_queue(
        clients,
        "lifecycle-to-lifeguard",
        json!({
            "source": ["aws.autoscaling"],
            "detail-type": [
                "EC2 Instance-launch Lifecycle Action",
                "EC2 Instance-terminate Lifecycle Action"
            ]
        }),
        &stage.queue,
    )
    .await;
    let dead = fleet::queue(clients, "lifeguard-dead").await;
    fleet::dead_letter_to(clients, &stage.queue, &dead, 2).await;
    fleet::archive_document(clients).await;
    Scene { stage, dead }
}

/// A free loopback port for a controller's health port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Scene {
    /// A controller configuration for this scene; `defaults` goes into `[groups.defaults]`.
    pub fn controller_config(&self, port: u16, defaults: &str) -> String {
        format!(
            r#"[aws]
region = "{REGION}"
endpoint_url = "{endpoint}"
max_attempts = 3
connect_timeout_ms = 1000

[queue]
url = "{queue}"
workers = 8
wait_time_secs = 1
visibility_timeout_secs = 10

[groups]
tag = "lifeguard:managed"

[groups.defaults]
{defaults}

[reconcile]
interval_secs = 2

[http]
listen = "127.0.0.1:{port}"

[log]
format = "json"
level = "info,lifeguard_controller=debug"
"#,
            endpoint = self.stage.emulator.endpoint(),
            queue = self.stage.queue.url,
        )
    }

    /// Starts an agent on each of the stage's instances, each drain one step of
    /// `settle_secs`; `broken` ones upload to a bucket that does not exist.
    pub async fn start_agents(&self, broken: &[&str], settle_secs: u32) -> Vec<ServiceProcess> {
        let stage = &self.stage;
        let mut started = Vec::new();
        for instance_id in &stage.instances {
            let dir = stage.path(instance_id);
            std::fs::create_dir_all(&dir).unwrap();
            // One drain step, so a report has a step's time to show.
            let mut archive = format!(
                "{}\n[[drain.steps]]\nname = \"settle\"\nrun = [\"sleep\", \"{settle_secs}\"]\n",
                stage.archive_config()
            );
            if broken.contains(&instance_id.as_str()) {
                archive = archive.replace(
                    &format!("bucket = \"{}\"", crate::drain::BUCKET),
                    "bucket = \"no-such-bucket\"",
                );
            }
            let config = crate::agent::config_for(&stage.emulator, instance_id, &dir, &archive);
            let agent = ServiceProcess::start_with_env(&dir, &config, &[]);
            agent
                .wait_for_log("lifeguard-agent watching", Duration::from_secs(60))
                .await;
            started.push(agent);
        }
        started
    }

    /// Starts a controller named `name` (its replica id, config and log file names).
    pub fn start_controller(&self, name: &str, defaults: &str) -> Controller {
        let port = free_port();
        let config = self.controller_config(port, defaults);
        let process = ServiceProcess::controller(
            self.stage.dir.path(),
            name,
            &config,
            &[("LIFEGUARD_REPLICA_ID", name)],
        );
        Controller {
            process,
            port,
            config: self.stage.dir.path().join(format!("{name}.toml")),
        }
    }

    /// `RecordLifecycleActionHeartbeat` calls served for `instance_id`: their sequence numbers.
    pub async fn heartbeats(&self, instance_id: &str) -> Vec<u64> {
        self.stage
            .emulator
            .calls(
                "autoscaling",
                "RecordLifecycleActionHeartbeat",
                Some(instance_id),
            )
            .await
            .iter()
            .filter(|c| c["status"].as_u64() == Some(200))
            .filter_map(|c| c["seq"].as_u64())
            .collect()
    }

    /// The sequence number of the latest call the emulator recorded.
    pub async fn last_call_seq(&self) -> u64 {
        let reply = self.stage.emulator.control_get("calls?limit=1").await;
        reply["calls"][0]["seq"].as_u64().unwrap_or_default()
    }

    /// Sends `body` to the controller queue.
    pub async fn send(&self, body: &str) {
        self.send_with(&self.stage.clients.sqs, body).await;
    }

    async fn send_with(&self, sqs: &aws_sdk_sqs::Client, body: &str) {
        sqs.send_message()
            .queue_url(&self.stage.queue.url)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }

    /// Sends `body` to the queue signed with `instance_id`'s role, as that instance's agent (or
    /// anything else running on it) would.
    pub async fn send_as(&self, instance_id: &str, body: &str) {
        let sqs = self.stage.emulator.sqs_as(instance_id).await;
        self.send_with(&sqs, body).await;
    }

    /// The active lifecycle actions the emulator holds.
    pub async fn active_actions(&self) -> Vec<Value> {
        self.stage.emulator.control_get("lifecycle-actions").await["lifecycle_actions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until the emulator holds a lifecycle action for `instance_id`; that action.
    pub async fn wait_for_action(&self, instance_id: &str, timeout: Duration) -> Value {
        eventually("the lifecycle action to start", timeout, || async {
            self.active_actions()
                .await
                .into_iter()
                .find(|a| a["instance_id"] == instance_id)
        })
        .await
    }
}

/// The row of `instance_id` in `status --output json`.
pub fn status_row<'a>(status: &'a [Value], instance_id: &str) -> &'a Value {
    status
        .iter()
        .find(|r| r["instance_id"] == instance_id)
        .unwrap_or_else(|| panic!("{instance_id} not in status: {status:?}"))
}

/// A controller process and its health port.
pub struct Controller {
    pub process: ServiceProcess,
    pub port: u16,
    pub config: PathBuf,
}

impl Controller {
    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(format!("http://127.0.0.1:{}{path}", self.port))
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// Waits until `/readyz` says ready (reconciled and polling).
    pub async fn wait_ready(&self) {
        eventually(
            "the controller to be ready",
            Duration::from_secs(30),
            || async {
                let ready = matches!(
                    reqwest::get(format!("http://127.0.0.1:{}/readyz", self.port)).await,
                    Ok(r) if r.status().is_success()
                );
                ready.then_some(())
            },
        )
        .await;
    }

    /// The value of one sample of `/metrics` (0 when absent).
    pub async fn metric(&self, sample: &str) -> f64 {
        let (_, text) = self.get("/metrics").await;
        text.lines()
            .find_map(|line| {
                line.strip_prefix(sample)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Waits until `status` shows an outcome for `instance_id`; that row.
    pub async fn wait_outcome(&self, instance_id: &str) -> Value {
        eventually("the outcome in status", Duration::from_secs(60), || async {
            let status = self.status();
            let row = status_row(&status, instance_id).clone();
            (row["outcome"] != "in progress").then_some(row)
        })
        .await
    }

    /// `lifeguard-controller status --output json` (with this controller's configuration).
    pub fn status(&self) -> Vec<Value> {
        let output = Command::new(workspace_binary("lifeguard-controller"))
            .arg("--config")
            .arg(&self.config)
            .args(["status", "--output", "json"])
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "status: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }
}
