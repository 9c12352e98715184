//! Harness for the end-to-end scenarios: starts the AWS emulator (moto plus lifeguard's
//! additions, `tests/emulator/`) on a free loopback port, builds the real SDK clients against
//! it through lifeguard's own client factory, and reads the emulator's control API.
//!
//! The emulator must start: if it cannot, the test fails with the emulator's log. Nothing here
//! skips silently.

// Harness code runs only under tests; a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use lifeguard_common::aws::{AwsSettings, s3_client, sdk_config};
use serde_json::Value;

pub const REGION: &str = "us-east-1";
pub const ACCOUNT: &str = "123456789012";

/// How long the emulator may take to start: importing moto is slow on a loaded 2-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// The checkout the tests run in. Cargo and nextest set `CARGO_MANIFEST_DIR` for the test
/// process too; the compile-time value is only a fallback, since a target directory shared
/// between checkouts can hold this crate built from another one.
pub fn repo_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("..")
}

/// The emulator's Python, from `tests/emulator/setup.sh` (idempotent, fast once built).
fn emulator_python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let script = repo_root().join("tests/emulator/setup.sh");
        let output = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        assert!(
            output.status.success(),
            "{} failed: the emulator's environment could not be built",
            script.display()
        );
        let venv = String::from_utf8(output.stdout).unwrap();
        PathBuf::from(venv.trim()).join("bin/python")
    })
}

/// One emulator process, stopped when dropped.
pub struct Emulator {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Emulator {
    /// Starts an emulator on a free port and waits until it answers.
    pub async fn start() -> Emulator {
        let dir = tempfile::tempdir().unwrap();
        let (child, port) = spawn(dir.path(), 0).await;
        Emulator {
            child: Some(child),
            port,
            dir,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The IMDS base URL of one simulated instance.
    pub fn imds_url(&self, instance_id: &str) -> String {
        format!("{}/_imds/{instance_id}", self.endpoint())
    }

    /// The role credentials the instance's IMDS hands out, fetched as the SDK on the instance
    /// does (token, role name, credentials): what signs everything that instance sends.
    pub async fn instance_credentials(&self, instance_id: &str) -> Credentials {
        let base = format!("{}/latest", self.imds_url(instance_id));
        let http = reqwest::Client::new();
        let token = http
            .put(format!("{base}/api/token"))
            .header("X-aws-ec2-metadata-token-ttl-seconds", "21600")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let get = |path: String| {
            let request = http
                .get(format!("{base}/meta-data/iam/security-credentials/{path}"))
                .header("X-aws-ec2-metadata-token", &token);
            async move { request.send().await.unwrap().text().await.unwrap() }
        };
        let role = get(String::new()).await;
        let body: Value = serde_json::from_str(&get(role.trim().to_string()).await).unwrap();
        let field = |name: &str| body[name].as_str().unwrap().to_string();
        Credentials::new(
            field("AccessKeyId"),
            field("SecretAccessKey"),
            Some(field("Token")),
            None,
            "instance-role",
        )
    }

    /// An SQS client signing with the instance's role, as its agent does.
    pub async fn sqs_as(&self, instance_id: &str) -> aws_sdk_sqs::Client {
        let credentials = self.instance_credentials(instance_id).await;
        aws_sdk_sqs::Client::new(&sdk_config(&self.settings(), Some(credentials)).await)
    }

    /// The emulator's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("emulator.log")).unwrap_or_default()
    }

    pub fn settings(&self) -> AwsSettings {
        AwsSettings::for_emulator(&self.endpoint(), REGION)
    }

    /// SDK clients built by lifeguard's client factory, pointed at this emulator.
    pub async fn clients(&self) -> Clients {
        let settings = self.settings();
        let sdk = sdk_config(&settings, Some(test_credentials())).await;
        Clients {
            autoscaling: aws_sdk_autoscaling::Client::new(&sdk),
            ec2: aws_sdk_ec2::Client::new(&sdk),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(&sdk),
            sqs: aws_sdk_sqs::Client::new(&sdk),
            events: aws_sdk_eventbridge::Client::new(&sdk),
            s3: s3_client(&sdk, &settings),
            ssm: aws_sdk_ssm::Client::new(&sdk),
        }
    }

    async fn control(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/_lifeguard/{path}", self.endpoint());
        let mut request = self.http.request(method.clone(), &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "{method} {url}: {status}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {url}: {e}: {text}"))
    }

    pub async fn control_get(&self, path: &str) -> Value {
        self.control(reqwest::Method::GET, path, None).await
    }

    pub async fn control_post(&self, path: &str, body: Value) -> Value {
        self.control(reqwest::Method::POST, path, Some(body)).await
    }

    /// The API calls the emulator served, oldest first, filtered like its control API.
    pub async fn calls(
        &self,
        service: &str,
        action: &str,
        instance_id: Option<&str>,
    ) -> Vec<Value> {
        let mut query = format!("calls?service={service}&action={action}");
        if let Some(id) = instance_id {
            query.push_str(&format!("&instance_id={id}"));
        }
        let reply = self.control_get(&query).await;
        reply["calls"].as_array().cloned().unwrap_or_default()
    }

    /// How many calls of each `(service, action)` the emulator has recorded (a dry run's
    /// before and after).
    pub async fn call_counts(&self, actions: &[(&str, &str)]) -> Vec<usize> {
        let mut counts = Vec::new();
        for (service, action) in actions {
            counts.push(self.calls(service, action, None).await.len());
        }
        counts
    }

    /// What the emulator knows of an instance: EC2 state, group, target lifecycle state.
    pub async fn instance(&self, instance_id: &str) -> Value {
        self.control_get(&format!("instances/{instance_id}")).await
    }

    /// Reads one IMDS path as an instance would, with an IMDSv2 token.
    pub async fn imds_get(&self, instance_id: &str, path: &str) -> (u16, String) {
        let base = self.imds_url(instance_id);
        let token = self
            .http
            .put(format!("{base}/latest/api/token"))
            .header("X-aws-ec2-metadata-token-ttl-seconds", "60")
            .send()
            .await
            .unwrap();
        assert!(
            token.status().is_success(),
            "IMDS token: {}",
            token.status()
        );
        let token = token.text().await.unwrap();
        let response = self
            .http
            .get(format!("{base}/latest/meta-data/{path}"))
            .header("X-aws-ec2-metadata-token", token)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop(child);
        }
    }
}

pub fn test_credentials() -> Credentials {
    Credentials::new("testing", "testing", None, None, "lifeguard-e2e")
}

async fn spawn(dir: &Path, port: u16) -> (Child, u16) {
    let port_file = dir.join("port");
    let _ = std::fs::remove_file(&port_file);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("emulator.log"))
        .unwrap();
    let mut child = Command::new(emulator_python())
        .args(["-m", "lifeguard_emulator", "--host", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .arg("--port-file")
        .arg(&port_file)
        .env("PYTHONPATH", repo_root().join("tests/emulator"))
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("starting the emulator: {e}"));
    let started = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(&port_file)
            && let Ok(port) = text.trim().parse::<u16>()
        {
            return (child, port);
        }
        let log = std::fs::read_to_string(dir.join("emulator.log")).unwrap_or_default();
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the emulator exited during start-up ({status}):\n{log}");
        }
        if started.elapsed() > START_TIMEOUT {
            let _ = child.kill();
            panic!("the emulator did not start within {START_TIMEOUT:?}:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGTERM, then SIGKILL if it has not gone within five seconds.
fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The SDK clients a scenario drives.
pub struct Clients {
    pub autoscaling: aws_sdk_autoscaling::Client,
    pub ec2: aws_sdk_ec2::Client,
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub events: aws_sdk_eventbridge::Client,
    pub s3: aws_sdk_s3::Client,
    pub ssm: aws_sdk_ssm::Client,
}

/// Polls `check` every 100 ms until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub mod agent;
pub mod controller;
pub mod drain;
pub mod fleet;
pub mod images;
pub mod outage;
pub mod step_runner;
pub mod swap;
