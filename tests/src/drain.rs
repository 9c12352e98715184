//! A ready stage for agent scenarios: an emulator, a bucket, a report queue, a group with a
//! terminate hook, a directory of logs, and helpers to read back what reached S3.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::fleet::{self, Hook, Queue};
use crate::{Clients, Emulator, eventually};

pub const BUCKET: &str = "fleet-logs";
pub const GROUP: &str = "web";
pub const HOOK: &str = "lifeguard-drain";

pub struct Stage {
    pub emulator: Emulator,
    pub clients: Clients,
    pub dir: tempfile::TempDir,
    pub queue: Queue,
    pub instances: Vec<String>,
    pub logs: PathBuf,
}

/// A group of `size` instances with a terminate hook (`heartbeat_secs`, default ABANDON).
pub async fn stage(size: i32, heartbeat_secs: i32) -> Stage {
    let emulator = Emulator::start().await;
    if heartbeat_secs < 30 {
        // AWS refuses heartbeat timeouts under 30 s; scenarios about heartbeats and timeouts
        // ask for shorter ones explicitly, so they run in seconds (each says why).
        emulator
            .control_post(
                "config",
                serde_json::json!({"min_heartbeat_timeout_secs": 1}),
            )
            .await;
    }
    let clients = emulator.clients().await;
    clients
        .s3
        .create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap();
    let queue = fleet::queue(&clients, "lifeguard-reports").await;
    let image = fleet::any_image(&clients).await;
    let template = fleet::launch_template(&clients, "web", &image).await;
    fleet::group(
        &clients,
        GROUP,
        &template,
        size,
        &[Hook {
            name: HOOK,
            transition: lifeguard_common::message::Transition::TERMINATING,
            heartbeat_timeout_secs: heartbeat_secs,
            default_result: "ABANDON",
            target_arn: None,
        }],
    )
    .await;
    let instances = fleet::instances(&clients, GROUP)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    write_logs(&logs);
    Stage {
        emulator,
        clients,
        dir,
        queue,
        instances,
        logs,
    }
}

/// A small, varied log tree: plain files, a nested directory, a symlink.
pub fn write_logs(root: &Path) {
    std::fs::create_dir_all(root.join("worker")).unwrap();
    let mut app = String::new();
    for i in 0..4000 {
        app.push_str(&format!(
            "2026-11-22T10:{:02}:{:02}Z INFO request_id=r{i:06} path=/api/items/{} status=200 took_ms={}\n",
            (i / 60) % 60,
            i % 60,
            i % 97,
            i % 250
        ));
    }
    std::fs::write(root.join("app.log"), &app).unwrap();
    std::fs::write(
        root.join("access.log"),
        "127.0.0.1 - - \"GET / HTTP/1.1\" 200 12\n".repeat(500),
    )
    .unwrap();
    std::fs::write(
        root.join("worker/jobs.log"),
        "job=42 state=done\n".repeat(100),
    )
    .unwrap();
    std::os::unix::fs::symlink("app.log", root.join("current.log")).unwrap();
}

impl Stage {
    /// Starts the agent of `instance_id` in the stage's directory with `extra` configuration
    /// and `env`, and waits until it watches.
    pub async fn start_agent(
        &self,
        instance_id: &str,
        extra: &str,
        env: &[(&str, &str)],
    ) -> crate::agent::AgentProcess {
        let config = crate::agent::config_for(&self.emulator, instance_id, self.dir.path(), extra);
        let agent = crate::agent::ServiceProcess::start_with_env(self.dir.path(), &config, env);
        agent
            .wait_for_log("lifeguard-agent watching", Duration::from_secs(60))
            .await;
        agent
    }

    /// Scales the group in to `desired` instances.
    pub async fn scale_to(&self, desired: i32) {
        self.clients
            .autoscaling
            .set_desired_capacity()
            .auto_scaling_group_name(GROUP)
            .desired_capacity(desired)
            .send()
            .await
            .unwrap();
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The `[archive]`, `[upload]` and `[report]` tables for this stage's logs, bucket and queue.
    pub fn archive_config(&self) -> String {
        self.archive_config_with("", "")
    }

    /// The same, with more keys in `[archive]` and `[upload]`.
    pub fn archive_config_with(&self, archive: &str, upload: &str) -> String {
        format!(
            "[archive]\npaths = [\"{}\"]\n{archive}\n\n[upload]\nbucket = \"{BUCKET}\"\nchecksum = \"crc32c\"\n{upload}\n\n[report]\nqueue_url = \"{}\"\n",
            self.logs.display(),
            self.queue.url
        )
    }

    /// Writes `big.log` (about 8 MB of distinct lines: two 5 MiB parts uncompressed) into the
    /// logs; its bytes.
    pub fn write_big_log(&self) -> Vec<u8> {
        let big: String = (0..400_000u64)
            .map(|i| format!("line {i} {}\n", i * 7919 % 100_003))
            .collect();
        std::fs::write(self.logs.join("big.log"), &big).unwrap();
        big.into_bytes()
    }

    /// The upload settings that make `big.log` a multipart upload of two parts.
    pub fn multipart_config(&self) -> String {
        self.archive_config_with("compression = \"none\"", "part_size_mib = 5")
    }

    /// S3 answers 503 to every `UploadPart` for `secs` seconds from now.
    pub async fn refuse_parts_for(&self, secs: u64) {
        self.emulator
            .control_post(
                "faults",
                serde_json::json!({"service": "s3", "mode": "unavailable", "secs": secs, "action": "UploadPart"}),
            )
            .await;
    }

    /// Waits until S3 has refused a part upload.
    pub async fn wait_for_a_refused_part(&self) {
        eventually(
            "a part upload to be refused",
            Duration::from_secs(60),
            || async {
                self.emulator
                    .calls("s3", "UploadPart", None)
                    .await
                    .iter()
                    .any(|c| c["status"].as_u64() == Some(503))
                    .then_some(())
            },
        )
        .await;
    }

    /// `CompleteLifecycleAction` calls the emulator served for `instance_id`: (HTTP status,
    /// result).
    pub async fn completions(&self, instance_id: &str) -> Vec<(u64, String)> {
        self.emulator
            .calls("autoscaling", "CompleteLifecycleAction", Some(instance_id))
            .await
            .iter()
            .map(|call| {
                (
                    call["status"].as_u64().unwrap_or_default(),
                    call["params"]["LifecycleActionResult"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect()
    }

    /// Scale-in of one instance through the hook, capacity decremented.
    pub async fn terminate(&self, instance_id: &str) {
        self.clients
            .autoscaling
            .terminate_instance_in_auto_scaling_group()
            .instance_id(instance_id)
            .should_decrement_desired_capacity(true)
            .send()
            .await
            .unwrap();
    }

    pub async fn wait_terminated(&self, instance_id: &str, timeout: Duration) {
        eventually("the instance to be terminated", timeout, || async {
            (fleet::ec2_state(&self.clients, instance_id).await == "terminated").then_some(())
        })
        .await;
    }

    /// Keys in the bucket under `prefix`.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let listed = self
            .clients
            .s3
            .list_objects_v2()
            .bucket(BUCKET)
            .prefix(prefix)
            .send()
            .await
            .unwrap();
        let mut keys: Vec<String> = listed
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect();
        keys.sort();
        keys
    }

    pub async fn object(&self, key: &str) -> Vec<u8> {
        let got = self
            .clients
            .s3
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .unwrap();
        got.body.collect().await.unwrap().into_bytes().to_vec()
    }

    /// The archive of `instance_id` whose key ends in `-{reason}.{ext}`: its key and bytes;
    /// panics unless there is exactly one.
    pub async fn archive_of(&self, instance_id: &str, reason: &str) -> (String, Vec<u8>) {
        let keys: Vec<String> = self
            .keys(&format!("lifeguard/{GROUP}/{instance_id}/"))
            .await
            .into_iter()
            .filter(|k| !k.ends_with(".manifest.json") && k.contains(&format!("-{reason}.")))
            .collect();
        assert_eq!(
            keys.len(),
            1,
            "one {reason} archive of {instance_id}: {keys:?}"
        );
        let bytes = self.object(&keys[0]).await;
        (keys[0].clone(), bytes)
    }

    /// The user metadata of an object.
    pub async fn metadata(&self, key: &str) -> std::collections::HashMap<String, String> {
        let head = self
            .clients
            .s3
            .head_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .unwrap();
        head.metadata().cloned().unwrap_or_default()
    }

    /// Multipart uploads left open in the bucket (there must be none).
    pub async fn open_uploads(&self) -> usize {
        let listed = self
            .clients
            .s3
            .list_multipart_uploads()
            .bucket(BUCKET)
            .send()
            .await
            .unwrap();
        listed.uploads().len()
    }

    /// The agent's reports on the queue so far, parsed.
    pub async fn reports(&self) -> Vec<lifeguard_common::message::AgentReport> {
        let mut reports = Vec::new();
        loop {
            let received = self
                .clients
                .sqs
                .receive_message()
                .queue_url(&self.queue.url)
                .max_number_of_messages(10)
                .wait_time_seconds(0)
                .send()
                .await
                .unwrap();
            if received.messages().is_empty() {
                break;
            }
            for message in received.messages() {
                let parsed =
                    lifeguard_common::message::parse(message.body().unwrap_or_default().as_bytes())
                        .unwrap();
                if let lifeguard_common::message::Message::AgentReport(report) = parsed.message {
                    reports.push(report);
                }
                self.clients
                    .sqs
                    .delete_message()
                    .queue_url(&self.queue.url)
                    .receipt_handle(message.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
        reports.sort_by_key(|r| r.seq);
        reports
    }
}

/// The entries of a tar or tar.gz: regular files' bytes by path, and symlinks' targets.
pub struct Unpacked {
    pub files: BTreeMap<String, Vec<u8>>,
    pub symlinks: BTreeMap<String, String>,
}

pub fn unpack(archive: &[u8]) -> Unpacked {
    let reader: Box<dyn std::io::Read + '_> = if archive.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(archive))
    } else {
        Box::new(archive)
    };
    let mut tar = tar::Archive::new(reader);
    let mut files = BTreeMap::new();
    let mut symlinks = BTreeMap::new();
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().display().to_string();
        match entry.header().entry_type() {
            tar::EntryType::Symlink => {
                let target = entry.link_name().unwrap().unwrap().display().to_string();
                symlinks.insert(path, target);
            }
            _ => {
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes).unwrap();
                files.insert(path, bytes);
            }
        }
    }
    Unpacked { files, symlinks }
}

/// `MANIFEST.json` of an unpacked archive, parsed.
pub fn manifest_of(unpacked: &Unpacked) -> serde_json::Value {
    serde_json::from_slice(
        unpacked
            .files
            .get("MANIFEST.json")
            .expect("MANIFEST.json in the archive"),
    )
    .unwrap()
}

/// The names of an archive's entries exactly as stored (bytes, not text).
pub fn raw_names(archive: &[u8]) -> Vec<Vec<u8>> {
    let reader: Box<dyn std::io::Read + '_> = if archive.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(archive))
    } else {
        Box::new(archive)
    };
    let mut tar = tar::Archive::new(reader);
    tar.entries()
        .unwrap()
        .map(|entry| entry.unwrap().path_bytes().into_owned())
        .collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The path a file is stored under in the archive (absolute, without the leading `/`).
pub fn archived_path(path: &Path) -> String {
    path.display()
        .to_string()
        .trim_start_matches('/')
        .to_string()
}
