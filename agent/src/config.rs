//! `/etc/lifeguard/agent.toml`: strict TOML, a doc comment per field, units in names.

use std::path::{Path, PathBuf};

use lifeguard_common::aws::AwsSettings;
use lifeguard_common::config::{ConfigError, load_toml};
pub use lifeguard_common::logging::{LogConfig, LogFormat};
use serde::Deserialize;

pub const DEFAULT_PATH: &str = "/etc/lifeguard/agent.toml";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    #[serde(default)]
    pub aws: AwsSettings,
    #[serde(default)]
    pub imds: ImdsConfig,
    #[serde(default)]
    pub instance: InstanceConfig,
    #[serde(default)]
    pub watch: WatchConfig,
    #[serde(default)]
    pub drain: DrainConfig,
    #[serde(default)]
    pub archive: ArchiveConfig,
    /// Where archives go. Without it the agent drains and completes but uploads nothing.
    #[serde(default)]
    pub upload: Option<UploadConfig>,
    #[serde(default)]
    pub lifecycle: LifecycleConfig,
    #[serde(default)]
    pub launch: LaunchConfig,
    #[serde(default)]
    pub report: ReportConfig,
    #[serde(default)]
    pub state: StateConfig,
    #[serde(default)]
    pub log: LogConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImdsConfig {
    /// Base URL of the instance metadata service.
    #[serde(default = "default_imds_url")]
    pub base_url: String,
    /// Lifetime asked for each IMDSv2 token; the token is renewed a minute before it ends.
    #[serde(default = "default_token_ttl_secs")]
    pub token_ttl_secs: u64,
    /// Time allowed for one IMDS request.
    #[serde(default = "default_imds_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Time allowed for one IMDS read, retries included.
    #[serde(default = "default_imds_deadline_ms")]
    pub read_deadline_ms: u64,
    /// Fall back to IMDSv1 (no token) when the token call is refused. Off: IMDSv2 only.
    #[serde(default)]
    pub allow_imdsv1: bool,
}

fn default_imds_url() -> String {
    "http://169.254.169.254".to_string()
}
fn default_token_ttl_secs() -> u64 {
    21_600
}
fn default_imds_request_timeout_ms() -> u64 {
    1_000
}
fn default_imds_deadline_ms() -> u64 {
    5_000
}

impl Default for ImdsConfig {
    fn default() -> Self {
        ImdsConfig {
            base_url: default_imds_url(),
            token_ttl_secs: default_token_ttl_secs(),
            request_timeout_ms: default_imds_request_timeout_ms(),
            read_deadline_ms: default_imds_deadline_ms(),
            allow_imdsv1: false,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    /// The Auto Scaling group. Default: asked of `DescribeAutoScalingInstances`.
    #[serde(default)]
    pub asg: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// How often IMDS is polled for termination, spot and rebalance notices.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Drain on a rebalance recommendation (the instance keeps running; the drain prepares
    /// for an interruption that may follow).
    #[serde(default)]
    pub drain_on_rebalance: bool,
    /// Drain when an active scheduled maintenance event will stop, retire or reboot the instance.
    #[serde(default = "default_true")]
    pub drain_on_maintenance: bool,
    /// How often scheduled maintenance events are read (they are announced days ahead).
    #[serde(default = "default_maintenance_interval_secs")]
    pub maintenance_interval_secs: u64,
    /// How long before a maintenance event's start the drain begins.
    #[serde(default = "default_maintenance_lead_secs")]
    pub maintenance_lead_secs: u64,
}

fn default_poll_interval_ms() -> u64 {
    1_000
}
fn default_true() -> bool {
    true
}
fn default_maintenance_interval_secs() -> u64 {
    60
}
fn default_maintenance_lead_secs() -> u64 {
    600
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            poll_interval_ms: default_poll_interval_ms(),
            drain_on_rebalance: false,
            drain_on_maintenance: true,
            maintenance_interval_secs: default_maintenance_interval_secs(),
            maintenance_lead_secs: default_maintenance_lead_secs(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainConfig {
    /// Steps run in order before the archive is built.
    #[serde(default)]
    pub steps: Vec<StepConfig>,
    /// The socket of the step runner (`lifeguard-step.socket`): `run`, `shell` and `stop_unit`
    /// steps run there, outside the agent's sandbox, with the privileges their commands need.
    /// Unset: the agent runs them itself (an agent installed without the hardened unit).
    #[serde(default)]
    pub step_runner: Option<PathBuf>,
}

/// What to do when a step fails or times out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Go on with the next step; the lifecycle action is completed with CONTINUE.
    #[default]
    Continue,
    /// Go on with the remaining steps and the archive, then complete with ABANDON.
    Abandon,
}

/// One drain step: exactly one of `run`, `shell`, `stop_unit`, `wait_connections`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    /// Shown in logs, reports and the archive (`lifeguard/steps/NN-name.log`).
    pub name: String,
    /// A command and its arguments, run without a shell.
    #[serde(default)]
    pub run: Option<Vec<String>>,
    /// A shell command line, run with `/bin/sh -c`. Event data is in the environment only.
    #[serde(default)]
    pub shell: Option<String>,
    /// Built-in: `systemctl stop UNIT`, then wait until it is inactive.
    #[serde(default)]
    pub stop_unit: Option<String>,
    /// Built-in: wait until no TCP connection is established on these local ports.
    #[serde(default)]
    pub wait_connections: Option<Vec<u16>>,
    /// Time allowed for the step.
    #[serde(default = "default_step_timeout_secs")]
    pub timeout_secs: u64,
    #[serde(default)]
    pub on_failure: OnFailure,
}

fn default_step_timeout_secs() -> u64 {
    60
}

/// The step's action, once validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepAction {
    Run(Vec<String>),
    Shell(String),
    StopUnit(String),
    WaitConnections(Vec<u16>),
}

impl StepConfig {
    pub fn action(&self) -> Result<StepAction, String> {
        let chosen: Vec<StepAction> = [
            self.run.clone().map(StepAction::Run),
            self.shell.clone().map(StepAction::Shell),
            self.stop_unit.clone().map(StepAction::StopUnit),
            self.wait_connections
                .clone()
                .map(StepAction::WaitConnections),
        ]
        .into_iter()
        .flatten()
        .collect();
        match chosen.as_slice() {
            [StepAction::Run(argv)] if argv.is_empty() => Err("`run` is empty".to_string()),
            [StepAction::WaitConnections(ports)] if ports.is_empty() => {
                Err("`wait_connections` lists no port".to_string())
            }
            [one] => Ok(one.clone()),
            [] => Err("needs one of `run`, `shell`, `stop_unit`, `wait_connections`".to_string()),
            _ => Err(
                "has more than one of `run`, `shell`, `stop_unit`, `wait_connections`".to_string(),
            ),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompressionKind {
    #[default]
    Gzip,
    Zstd,
    None,
}

impl CompressionKind {
    /// The archive's file extension, for the `{ext}` key placeholder.
    pub fn extension(self) -> &'static str {
        match self {
            CompressionKind::Gzip => "tar.gz",
            CompressionKind::Zstd => "tar.zst",
            CompressionKind::None => "tar",
        }
    }

    /// The archive object's `Content-Type`.
    pub fn media_type(self) -> &'static str {
        match self {
            CompressionKind::Gzip => "application/gzip",
            CompressionKind::Zstd => "application/zstd",
            CompressionKind::None => "application/x-tar",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveConfig {
    /// Absolute paths, directories (archived recursively) or glob patterns.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Glob patterns of paths to leave out.
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub compression: CompressionKind,
    /// Compression level: gzip 1–9 (default 6), zstd 1–19 (default 3).
    #[serde(default)]
    pub level: Option<i32>,
    /// Compression threads; 0 uses every core.
    #[serde(default)]
    pub threads: usize,
    /// Cap on the log bytes archived, newest files first; the rest is listed as skipped.
    #[serde(default)]
    pub max_total_bytes: Option<u64>,
    /// Cap per file: a larger file is archived as its last `max_file_bytes` bytes.
    #[serde(default)]
    pub max_file_bytes: Option<u64>,
    /// Cap on the number of files archived, newest first (symbolic links are capped at the same
    /// number); the rest are counted and listed as skipped. It bounds the agent's memory (about
    /// 1.1 KiB a file at its peak) and the manifest (about 380 bytes of JSON a file): some
    /// 55 MiB and 19 MB at the default of 50000.
    #[serde(default = "default_max_files")]
    pub max_files: u64,
    /// Seconds kept in hand before a spot interruption to finish the upload and complete.
    #[serde(default = "default_spot_margin_secs")]
    pub spot_margin_secs: u64,
}

fn default_spot_margin_secs() -> u64 {
    20
}

fn default_max_files() -> u64 {
    crate::archive::DEFAULT_MAX_FILES
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig {
            paths: Vec::new(),
            exclude: Vec::new(),
            compression: CompressionKind::default(),
            level: None,
            threads: 0,
            max_total_bytes: None,
            max_file_bytes: None,
            max_files: default_max_files(),
            spot_margin_secs: default_spot_margin_secs(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SseKind {
    /// SSE-S3 (AES256).
    #[default]
    S3,
    /// SSE-KMS, with `kms_key_id` or the account's default key.
    Kms,
    /// Nothing asked; the bucket's default encryption applies.
    None,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChecksumConfig {
    #[default]
    Crc32c,
    Sha256,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadConfig {
    pub bucket: String,
    /// Object key; placeholders `{prefix}`, `{asg}`, `{instance_id}`, `{principal}` (the
    /// instance role session's `aws:userid`, the level the IAM policy confines each instance
    /// to), `{timestamp}`, `{reason}`, `{ext}` (`tar.gz`, `tar.zst` or `tar`, from the
    /// compression).
    #[serde(default = "default_key_template")]
    pub key_template: String,
    #[serde(default = "default_prefix")]
    pub prefix: String,
    #[serde(default)]
    pub sse: SseKind,
    #[serde(default)]
    pub kms_key_id: Option<String>,
    /// Refuse to upload unless the bucket belongs to this account.
    #[serde(default)]
    pub expected_bucket_owner: Option<String>,
    #[serde(default)]
    pub checksum: ChecksumConfig,
    /// Multipart part size.
    #[serde(default = "default_part_size_mib")]
    pub part_size_mib: usize,
    /// Parts uploaded at once.
    #[serde(default = "default_upload_concurrency")]
    pub concurrency: usize,
    /// Time allowed for the upload when no spot deadline is tighter.
    #[serde(default = "default_upload_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_key_template() -> String {
    "{prefix}/{asg}/{instance_id}/{principal}/{timestamp}-{reason}.{ext}".to_string()
}
fn default_prefix() -> String {
    "lifeguard".to_string()
}
fn default_part_size_mib() -> usize {
    8
}
fn default_upload_concurrency() -> usize {
    2
}
fn default_upload_timeout_secs() -> u64 {
    900
}

/// The longest duration any setting may have: a lifecycle action's longest life (48 hours).
pub const MAX_DURATION_SECS: u64 = 48 * 3600;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleConfig {
    /// The terminate hook to complete. Default: the group's only terminate hook.
    #[serde(default)]
    pub terminate_hook: Option<String>,
    /// The launch hook to complete. Default: the group's only launch hook.
    #[serde(default)]
    pub launch_hook: Option<String>,
    /// How long the agent waits, once IMDS says the instance is leaving (or a new instance
    /// starts), for Auto Scaling to create the lifecycle action: the instance sits in plain
    /// `Terminating` while its load balancers deregister it (a target group's deregistration
    /// delay: 300 s by default, at most 3600 s), or in plain `Pending` while EC2 starts it.
    /// The default covers the longest delay AWS allows, with a margin.
    #[serde(default = "default_action_wait_secs")]
    pub action_wait_secs: u64,
}

fn default_action_wait_secs() -> u64 {
    3_900
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            terminate_hook: None,
            launch_hook: None,
            action_wait_secs: default_action_wait_secs(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchConfig {
    /// Hold a new instance in `Pending:Wait` until the checks pass.
    #[serde(default)]
    pub enabled: bool,
    /// Give up (ABANDON) when the checks have not all passed by then.
    #[serde(default = "default_launch_deadline_secs")]
    pub deadline_secs: u64,
    /// Pause between rounds of checks.
    #[serde(default = "default_check_interval_ms")]
    pub interval_ms: u64,
    #[serde(default)]
    pub checks: Vec<CheckConfig>,
}

fn default_launch_deadline_secs() -> u64 {
    300
}
fn default_check_interval_ms() -> u64 {
    2_000
}

impl Default for LaunchConfig {
    fn default() -> Self {
        LaunchConfig {
            enabled: false,
            deadline_secs: default_launch_deadline_secs(),
            interval_ms: default_check_interval_ms(),
            checks: Vec::new(),
        }
    }
}

/// One readiness check: exactly one of `run`, `http_get`, `tcp`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    pub name: String,
    /// A command that exits 0 when ready.
    #[serde(default)]
    pub run: Option<Vec<String>>,
    /// A URL that answers 2xx when ready.
    #[serde(default)]
    pub http_get: Option<String>,
    /// `host:port` that accepts a TCP connection when ready.
    #[serde(default)]
    pub tcp: Option<String>,
    /// Time allowed for one attempt of the check.
    #[serde(default = "default_check_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_check_timeout_secs() -> u64 {
    5
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportConfig {
    /// The controller's queue. Without it the agent works alone.
    #[serde(default)]
    pub queue_url: Option<String>,
    /// A progress report at least this often while a drain or launch gating runs. Each report
    /// carries this promise; the controller takes the agent for dead only once several
    /// promised reports are missing.
    #[serde(default = "default_report_interval_secs")]
    pub interval_secs: u64,
}

fn default_report_interval_secs() -> u64 {
    30
}

impl Default for ReportConfig {
    fn default() -> Self {
        ReportConfig {
            queue_url: None,
            interval_secs: default_report_interval_secs(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// Where the agent records a drain in progress, so a restarted agent resumes it.
    #[serde(default = "default_state_path")]
    pub path: PathBuf,
}

fn default_state_path() -> PathBuf {
    PathBuf::from("/var/lib/lifeguard/agent-state.json")
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            path: default_state_path(),
        }
    }
}

impl AgentConfig {
    /// Reads, parses and validates the file.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let config: AgentConfig = load_toml(path)?;
        config.validate(path)?;
        Ok(config)
    }

    /// Checks what the types cannot say.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            message,
        };
        let mut names = std::collections::HashSet::new();
        for (index, step) in self.drain.steps.iter().enumerate() {
            let key = format!("drain.steps[{index}] ({})", step.name);
            step.action().map_err(|m| invalid(key.clone(), m))?;
            if step.name.trim().is_empty() {
                return Err(invalid(key, "`name` is empty".into()));
            }
            if !names.insert(step.name.as_str()) {
                return Err(invalid(key, "another step has the same name".into()));
            }
            if step.timeout_secs == 0 {
                return Err(invalid(key, "`timeout_secs` must be at least 1".into()));
            }
            if let Some(unit) = &step.stop_unit
                && !crate::units::is_unit_name(unit)
            {
                return Err(invalid(
                    key,
                    format!("`stop_unit` {unit:?} is not a unit name (such as app.service)"),
                ));
            }
        }
        if let Some(socket) = &self.drain.step_runner
            && !socket.is_absolute()
        {
            return Err(invalid(
                "drain.step_runner".into(),
                format!("{} is not an absolute path", socket.display()),
            ));
        }
        for (index, check) in self.launch.checks.iter().enumerate() {
            let key = format!("launch.checks[{index}] ({})", check.name);
            let count = [
                check.run.is_some(),
                check.http_get.is_some(),
                check.tcp.is_some(),
            ]
            .into_iter()
            .filter(|set| *set)
            .count();
            if count != 1 {
                return Err(invalid(
                    key,
                    "needs exactly one of `run`, `http_get`, `tcp`".into(),
                ));
            }
        }
        if self.launch.enabled && self.launch.checks.is_empty() {
            return Err(invalid(
                "launch.checks".into(),
                "launch gating is enabled but no check is configured".into(),
            ));
        }
        for (index, pattern) in self.archive.paths.iter().enumerate() {
            if !pattern.starts_with('/') {
                return Err(invalid(
                    format!("archive.paths[{index}]"),
                    format!("{pattern:?} is not an absolute path"),
                ));
            }
        }
        if let Some(level) = self.archive.level {
            let range = match self.archive.compression {
                CompressionKind::Gzip => 1..=9,
                CompressionKind::Zstd => 1..=19,
                CompressionKind::None => 0..=0,
            };
            if !range.contains(&level) {
                return Err(invalid(
                    "archive.level".into(),
                    format!(
                        "{level} is outside {range:?} for {:?}",
                        self.archive.compression
                    ),
                ));
            }
        }
        if let Some(upload) = &self.upload {
            if upload.bucket.trim().is_empty() {
                return Err(invalid("upload.bucket".into(), "empty".into()));
            }
            if !(5..=512).contains(&upload.part_size_mib) {
                return Err(invalid(
                    "upload.part_size_mib".into(),
                    "S3 parts are 5 to 512 MiB here".into(),
                ));
            }
            if upload.concurrency == 0 {
                return Err(invalid(
                    "upload.concurrency".into(),
                    "must be at least 1".into(),
                ));
            }
            crate::keys::check_template(&upload.key_template)
                .map_err(|m| invalid("upload.key_template".into(), m))?;
            if upload.kms_key_id.is_some() && upload.sse != SseKind::Kms {
                return Err(invalid(
                    "upload.kms_key_id".into(),
                    "set, but `sse` is not \"kms\"".into(),
                ));
            }
        }
        if self.watch.poll_interval_ms == 0 {
            return Err(invalid(
                "watch.poll_interval_ms".into(),
                "must be at least 1".into(),
            ));
        }
        // Durations are added to clocks: each is bounded by what a lifecycle action can last
        // (48 hours), so no value can overflow a deadline.
        let mut durations: Vec<(String, u64, u64)> = vec![
            (
                "lifecycle.action_wait_secs".into(),
                self.lifecycle.action_wait_secs,
                0,
            ),
            ("launch.deadline_secs".into(), self.launch.deadline_secs, 1),
            ("report.interval_secs".into(), self.report.interval_secs, 1),
            (
                "archive.spot_margin_secs".into(),
                self.archive.spot_margin_secs,
                0,
            ),
            (
                "watch.maintenance_lead_secs".into(),
                self.watch.maintenance_lead_secs,
                0,
            ),
            (
                "watch.maintenance_interval_secs".into(),
                self.watch.maintenance_interval_secs,
                1,
            ),
        ];
        for (index, step) in self.drain.steps.iter().enumerate() {
            durations.push((
                format!("drain.steps[{index}].timeout_secs"),
                step.timeout_secs,
                1,
            ));
        }
        for (index, check) in self.launch.checks.iter().enumerate() {
            durations.push((
                format!("launch.checks[{index}].timeout_secs"),
                check.timeout_secs,
                1,
            ));
        }
        if let Some(upload) = &self.upload {
            durations.push(("upload.timeout_secs".into(), upload.timeout_secs, 1));
        }
        for (key, value, least) in durations {
            if !(least..=MAX_DURATION_SECS).contains(&value) {
                return Err(invalid(
                    key,
                    format!("{value} is outside {least}..={MAX_DURATION_SECS} seconds"),
                ));
            }
        }
        if self.watch.poll_interval_ms > 60_000 || self.launch.interval_ms > 3_600_000 {
            return Err(invalid(
                "watch.poll_interval_ms / launch.interval_ms".into(),
                "at most 60 s between IMDS polls and an hour between rounds of checks".into(),
            ));
        }
        if self.imds.read_deadline_ms < 100 || self.imds.request_timeout_ms == 0 {
            return Err(invalid(
                "imds".into(),
                "read_deadline_ms must be at least 100 and request_timeout_ms at least 1".into(),
            ));
        }
        if !self.imds.base_url.starts_with("http://") && !self.imds.base_url.starts_with("https://")
        {
            return Err(invalid(
                "imds.base_url".into(),
                "must be an http(s) URL".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeguard_common::config::parse_toml;

    fn parse(text: &str) -> Result<AgentConfig, String> {
        let path = Path::new("/etc/lifeguard/agent.toml");
        let config: AgentConfig = parse_toml(path, text).map_err(|e| e.to_string())?;
        config.validate(path).map_err(|e| e.to_string())?;
        Ok(config)
    }

    #[test]
    fn empty_file_is_a_valid_default() {
        let config = parse("").unwrap();
        assert_eq!(config.imds.base_url, "http://169.254.169.254");
        assert_eq!(config.watch.poll_interval_ms, 1000);
        assert!(config.upload.is_none());
    }

    #[test]
    fn steps_need_exactly_one_action() {
        let err = parse("[[drain.steps]]\nname = \"x\"\n").unwrap_err();
        assert!(err.contains("drain.steps[0] (x): needs one of"), "{err}");
        let err = parse("[[drain.steps]]\nname = \"x\"\nrun = [\"true\"]\nshell = \"true\"\n")
            .unwrap_err();
        assert!(err.contains("more than one"), "{err}");
        let err = parse("[[drain.steps]]\nname = \"x\"\nrun = []\n").unwrap_err();
        assert!(err.contains("`run` is empty"), "{err}");
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let err = parse("[upload]\nbucket = \"b\"\nbukcet = \"c\"\n").unwrap_err();
        assert!(
            err.starts_with("/etc/lifeguard/agent.toml:3:1: unknown field `bukcet`"),
            "{err}"
        );
        assert!(err.contains("(key `upload.bukcet`)"), "{err}");
    }

    #[test]
    fn key_template_placeholders_are_checked() {
        let err = parse("[upload]\nbucket = \"b\"\nkey_template = \"{prefix}/{hostname}.tgz\"\n")
            .unwrap_err();
        assert!(err.contains("upload.key_template"), "{err}");
        assert!(err.contains("{hostname}"), "{err}");
    }

    #[test]
    fn durations_are_bounded_so_no_deadline_can_overflow() {
        let config = parse("").unwrap();
        assert_eq!(
            config.lifecycle.action_wait_secs, 3900,
            "covers a 3600 s deregistration"
        );
        assert_eq!(config.report.interval_secs, 30);
        for (text, key) in [
            (
                "[launch]\ndeadline_secs = 18446744073709551615\n",
                "launch.deadline_secs",
            ),
            (
                "[lifecycle]\naction_wait_secs = 172801\n",
                "lifecycle.action_wait_secs",
            ),
            ("[report]\ninterval_secs = 0\n", "report.interval_secs"),
            (
                "[[drain.steps]]\nname = \"x\"\nrun = [\"true\"]\ntimeout_secs = 9999999999\n",
                "drain.steps[0].timeout_secs",
            ),
            (
                "[upload]\nbucket = \"b\"\ntimeout_secs = 999999999\n",
                "upload.timeout_secs",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn max_files_has_a_default_and_can_be_set() {
        assert_eq!(parse("").unwrap().archive.max_files, 50_000);
        let config = parse("[archive]\nmax_files = 500\n").unwrap();
        assert_eq!(config.archive.max_files, 500);
        assert_eq!(crate::pack::archive_spec(&config.archive).max_files, 500);
    }

    #[test]
    fn relative_archive_paths_are_refused() {
        let err = parse("[archive]\npaths = [\"var/log\"]\n").unwrap_err();
        assert!(err.contains("archive.paths[0]"), "{err}");
    }
}
