//! `/etc/lifeguard/controller.toml`: strict TOML, then environment overrides for containers
//! (`LIFEGUARD_QUEUE_URL`, `LIFEGUARD_REGION`, `LIFEGUARD_ENDPOINT_URL`), then checks.
//! A group's policy comes from the defaults here, then its `[groups.override.NAME]`, then its
//! `lifeguard:*` tags, the most specific last.

mod images;
pub use images::{ImagesConfig, NewGroupVersion};

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use lifeguard_common::aws::AwsSettings;
use lifeguard_common::config::{ConfigError, load_toml};
pub use lifeguard_common::logging::{LogConfig, LogFormat};
use lifeguard_common::message::LifecycleResult;
use serde::Deserialize;

use crate::watch::{AgentlessArchive, GroupPolicy};

pub const DEFAULT_PATH: &str = "/etc/lifeguard/controller.toml";

/// The tag that marks a group as managed, unless configured otherwise.
pub const DEFAULT_MANAGED_TAG: &str = "lifeguard:managed";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerConfig {
    #[serde(default)]
    pub aws: AwsSettings,
    #[serde(default)]
    pub queue: QueueConfig,
    #[serde(default)]
    pub groups: GroupsConfig,
    #[serde(default)]
    pub reconcile: ReconcileConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub agentless: AgentlessConfig,
    #[serde(default)]
    pub reports: ReportsConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub images: ImagesConfig,
    #[serde(default)]
    pub pacing: PacingConfig,
}

/// Client-side token buckets (see `pace.rs`): EC2's published figures, and for Auto Scaling,
/// which publishes none, EC2's mutating figures.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacingConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Every Amazon EC2 Auto Scaling API shares one bucket per account and Region.
    #[serde(default = "default_write_burst")]
    pub autoscaling_burst: u32,
    #[serde(default = "default_write_per_sec")]
    pub autoscaling_per_sec: f64,
    /// EC2's non-mutating actions (`DescribeTags`, `DescribeInstances`): 100, 20 a second.
    #[serde(default = "default_read_burst")]
    pub ec2_read_burst: u32,
    #[serde(default = "default_read_per_sec")]
    pub ec2_read_per_sec: f64,
    /// EC2's mutating actions (`CreateTags`): 50, 5 a second.
    #[serde(default = "default_write_burst")]
    pub ec2_write_burst: u32,
    #[serde(default = "default_write_per_sec")]
    pub ec2_write_per_sec: f64,
}

fn default_read_burst() -> u32 {
    100
}
fn default_read_per_sec() -> f64 {
    20.0
}
fn default_write_burst() -> u32 {
    50
}
fn default_write_per_sec() -> f64 {
    5.0
}

impl Default for PacingConfig {
    fn default() -> Self {
        PacingConfig {
            enabled: true,
            autoscaling_burst: default_write_burst(),
            autoscaling_per_sec: default_write_per_sec(),
            ec2_read_burst: default_read_burst(),
            ec2_read_per_sec: default_read_per_sec(),
            ec2_write_burst: default_write_burst(),
            ec2_write_per_sec: default_write_per_sec(),
        }
    }
}

impl PacingConfig {
    /// The pacer's rates by bucket (`pace::AUTOSCALING`, ...); none when disabled.
    pub fn rates(&self) -> std::collections::HashMap<&'static str, crate::pace::Rate> {
        use crate::pace::{AUTOSCALING, EC2_READS, EC2_WRITES, Rate};
        if !self.enabled {
            return std::collections::HashMap::new();
        }
        std::collections::HashMap::from([
            (
                AUTOSCALING,
                Rate {
                    burst: f64::from(self.autoscaling_burst),
                    per_sec: self.autoscaling_per_sec,
                },
            ),
            (
                EC2_READS,
                Rate {
                    burst: f64::from(self.ec2_read_burst),
                    per_sec: self.ec2_read_per_sec,
                },
            ),
            (
                EC2_WRITES,
                Rate {
                    burst: f64::from(self.ec2_write_burst),
                    per_sec: self.ec2_write_per_sec,
                },
            ),
        ])
    }
}

/// Who may send what: any instance can send to the queue, so the queue's word is not enough.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportsConfig {
    /// Accept an agent report only when SQS's `SenderId` says it was sent by the instance it
    /// speaks of (`<role id>:<instance id>`, what instance-profile credentials give), and
    /// refuse every other message from an instance. Off only for deployments where agents
    /// sign with other credentials.
    #[serde(default = "default_true")]
    pub verify_sender: bool,
    /// The instance roles' unique ids (`AROA...`, from `aws iam get-role`) whose sessions may
    /// report; empty: any role, as long as the session is the instance itself.
    #[serde(default)]
    pub role_ids: Vec<String>,
}

fn default_true() -> bool {
    true
}

impl Default for ReportsConfig {
    fn default() -> Self {
        ReportsConfig {
            verify_sender: true,
            role_ids: Vec::new(),
        }
    }
}

/// How agentless archives run (which groups get one is their policy's `archive_bucket`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentlessConfig {
    /// The SSM command document (name or ARN) to run: lifeguard's own
    /// (`packaging/ssm/lifeguard-ArchiveLogs.json`) or one with the same parameters.
    #[serde(default = "default_archive_document")]
    pub document: String,
}

pub const DEFAULT_ARCHIVE_DOCUMENT: &str = "lifeguard-ArchiveLogs";

/// The controller's default `aws.attempt_timeout_secs`.
pub const DEFAULT_ATTEMPT_TIMEOUT_SECS: u64 = 30;

fn default_archive_document() -> String {
    DEFAULT_ARCHIVE_DOCUMENT.to_string()
}

impl Default for AgentlessConfig {
    fn default() -> Self {
        AgentlessConfig {
            document: default_archive_document(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// The queue EventBridge and the agents write to. Required (here or `LIFEGUARD_QUEUE_URL`).
    #[serde(default)]
    pub url: Option<String>,
    /// Messages worked on at once.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Long-poll wait of one ReceiveMessage (0–20).
    #[serde(default = "default_wait_time_secs")]
    pub wait_time_secs: u32,
    /// Visibility timeout asked for on receipt, extended while a message is worked on.
    #[serde(default = "default_visibility_timeout_secs")]
    pub visibility_timeout_secs: u32,
}

fn default_workers() -> usize {
    8
}
fn default_wait_time_secs() -> u32 {
    20
}
fn default_visibility_timeout_secs() -> u32 {
    60
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            url: None,
            workers: default_workers(),
            wait_time_secs: default_wait_time_secs(),
            visibility_timeout_secs: default_visibility_timeout_secs(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupsConfig {
    /// Groups carrying this tag (any value but `false`) are managed.
    #[serde(default = "default_managed_tag")]
    pub tag: String,
    /// Managed whatever their tags.
    #[serde(default)]
    pub names: Vec<String>,
    /// Policy for every managed group unless overridden.
    #[serde(default)]
    pub defaults: PolicyConfig,
    /// Per-group policy, by group name.
    #[serde(default, rename = "override")]
    pub overrides: BTreeMap<String, PolicyConfig>,
}

fn default_managed_tag() -> String {
    DEFAULT_MANAGED_TAG.to_string()
}

impl Default for GroupsConfig {
    fn default() -> Self {
        GroupsConfig {
            tag: default_managed_tag(),
            names: Vec::new(),
            defaults: PolicyConfig::default(),
            overrides: BTreeMap::new(),
        }
    }
}

/// A group's policy; in `[groups.defaults]` every key has a default, in an override or a tag
/// only what is given changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Result the controller completes a terminate action with when it takes over
    /// (default `ABANDON`: the hook's usual choice when the drain did not happen).
    #[serde(default)]
    pub fallback_result: Option<LifecycleResult>,
    /// Result for a launch action whose agent never said ready (default `ABANDON`).
    #[serde(default)]
    pub launch_fallback_result: Option<LifecycleResult>,
    /// Time for the agent's first report (default 60).
    #[serde(default)]
    pub agent_grace_secs: Option<u64>,
    /// Time without a report after which a reporting agent is taken for dead (default 180).
    #[serde(default)]
    pub report_silence_secs: Option<u64>,
    /// Heartbeat on the agent's behalf while waiting for it (default true).
    #[serde(default)]
    pub heartbeat_while_waiting: Option<bool>,
    /// Bucket for the agentless archive through SSM Run Command; none: no agentless archive.
    #[serde(default)]
    pub archive_bucket: Option<String>,
    /// Time allowed for the agentless archive (default 300).
    #[serde(default)]
    pub agentless_archive_timeout_secs: Option<u64>,
    /// What the agentless archive takes (default `["/var/log"]`).
    #[serde(default)]
    pub agentless_archive_paths: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileConfig {
    /// How often the managed groups' waiting instances are listed and the watch rebuilt.
    #[serde(default = "default_reconcile_interval_secs")]
    pub interval_secs: u64,
}

fn default_reconcile_interval_secs() -> u64 {
    60
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig {
            interval_secs: default_reconcile_interval_secs(),
        }
    }
}

/// The health and metrics port. Whoever can reach it can open connections to it, so they are
/// bounded: a slow or silent client is cut off, and past the cap new connections are closed at
/// once, so the port cannot use up the controller's file descriptors.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address and port of `/healthz`, `/readyz` and `/metrics`. The default, every interface,
    /// is what container health checks need; bind it to a private interface or let only the
    /// health checker and the scraper in (security group, network policy), and use
    /// `127.0.0.1:9090` where only a sidecar scrapes.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Connections served at once (1–10000); one more is closed as soon as it is accepted.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Time for a client to send a request's headers in full (1–60 s).
    #[serde(default = "default_header_timeout_secs")]
    pub header_timeout_secs: u64,
    /// The longest a connection stays open, whatever the client does (from
    /// `header_timeout_secs` to 3600 s); a probe or a scrape takes milliseconds.
    #[serde(default = "default_connection_timeout_secs")]
    pub connection_timeout_secs: u64,
}

fn default_listen() -> String {
    "0.0.0.0:9090".to_string()
}
fn default_max_connections() -> usize {
    64
}
fn default_header_timeout_secs() -> u64 {
    5
}
fn default_connection_timeout_secs() -> u64 {
    30
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_listen(),
            max_connections: default_max_connections(),
            header_timeout_secs: default_header_timeout_secs(),
            connection_timeout_secs: default_connection_timeout_secs(),
        }
    }
}

/// The environment variables a container sets instead of editing the file.
pub const ENV_QUEUE_URL: &str = "LIFEGUARD_QUEUE_URL";
pub const ENV_REGION: &str = "LIFEGUARD_REGION";
pub const ENV_ENDPOINT_URL: &str = "LIFEGUARD_ENDPOINT_URL";

impl ControllerConfig {
    /// Reads the file (a missing default file is an empty one: a container may configure
    /// everything through the environment), applies `env`, and checks the result.
    pub fn load(
        path: &Path,
        env: &HashMap<String, String>,
    ) -> Result<ControllerConfig, ConfigError> {
        let config = Self::read(path, env)?;
        config.validate(path)?;
        Ok(config)
    }

    /// As [`ControllerConfig::load`], for commands that do not read the queue (`status`): a
    /// missing queue URL is fine.
    pub fn load_without_queue(
        path: &Path,
        env: &HashMap<String, String>,
    ) -> Result<ControllerConfig, ConfigError> {
        let mut config = Self::read(path, env)?;
        if config.queue.url.is_none() {
            config.queue.url = Some("unused".into());
        }
        config.validate(path)?;
        Ok(config)
    }

    /// Reads the file (a missing default file is an empty one: a container may configure
    /// everything through the environment) and applies `env`.
    fn read(path: &Path, env: &HashMap<String, String>) -> Result<ControllerConfig, ConfigError> {
        let mut config: ControllerConfig = if path == Path::new(DEFAULT_PATH) && !path.exists() {
            lifeguard_common::config::parse_toml(path, "")?
        } else {
            load_toml(path)?
        };
        config.apply_env(env);
        Ok(config)
    }

    /// The `[aws]` settings, with a bound on every attempt unless one is configured: one call
    /// that stalls must not stall a supervisor round (long polls last 20 s at most).
    pub fn aws_settings(&self) -> AwsSettings {
        let mut settings = self.aws.clone();
        settings
            .attempt_timeout_secs
            .get_or_insert(DEFAULT_ATTEMPT_TIMEOUT_SECS);
        settings
    }

    pub fn apply_env(&mut self, env: &HashMap<String, String>) {
        let get = |name: &str| env.get(name).filter(|v| !v.trim().is_empty()).cloned();
        if let Some(url) = get(ENV_QUEUE_URL) {
            self.queue.url = Some(url);
        }
        if let Some(region) = get(ENV_REGION) {
            self.aws.region = Some(region);
        }
        if let Some(endpoint) = get(ENV_ENDPOINT_URL) {
            self.aws.endpoint_url = Some(endpoint);
        }
    }

    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            message,
        };
        if self
            .queue
            .url
            .as_deref()
            .is_none_or(|u| u.trim().is_empty())
        {
            return Err(invalid(
                "queue.url",
                format!("required (or set {ENV_QUEUE_URL})"),
            ));
        }
        if self.queue.workers == 0 {
            return Err(invalid("queue.workers", "must be at least 1".into()));
        }
        if self.queue.wait_time_secs > 20 {
            return Err(invalid(
                "queue.wait_time_secs",
                "SQS long polls last 20 s at most".into(),
            ));
        }
        if let Some(attempt) = self.aws.attempt_timeout_secs
            && attempt <= u64::from(self.queue.wait_time_secs)
        {
            return Err(invalid(
                "aws.attempt_timeout_secs",
                format!(
                    "{attempt} s would cut off the queue's long polls of {} s",
                    self.queue.wait_time_secs
                ),
            ));
        }
        if !(10..=43_200).contains(&self.queue.visibility_timeout_secs) {
            return Err(invalid(
                "queue.visibility_timeout_secs",
                "between 10 and 43200".into(),
            ));
        }
        if self.groups.tag.trim().is_empty() && self.groups.names.is_empty() {
            return Err(invalid(
                "groups",
                "neither a tag nor names: no group would be managed".into(),
            ));
        }
        let pacing = &self.pacing;
        for (key, burst, per_sec) in [
            (
                "pacing.autoscaling",
                pacing.autoscaling_burst,
                pacing.autoscaling_per_sec,
            ),
            (
                "pacing.ec2_read",
                pacing.ec2_read_burst,
                pacing.ec2_read_per_sec,
            ),
            (
                "pacing.ec2_write",
                pacing.ec2_write_burst,
                pacing.ec2_write_per_sec,
            ),
        ] {
            // A rate of zero would wait forever; NaN or infinity is not a rate.
            if !(1..=100_000).contains(&burst) || !(0.01..=100_000.0).contains(&per_sec) {
                return Err(invalid(
                    key,
                    "burst from 1 to 100000 and per_sec from 0.01 to 100000".into(),
                ));
            }
        }
        if self.reconcile.interval_secs == 0 {
            return Err(invalid(
                "reconcile.interval_secs",
                "must be at least 1".into(),
            ));
        }
        if self.http.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "http.listen",
                format!("{:?} is not an address:port", self.http.listen),
            ));
        }
        if !(1..=10_000).contains(&self.http.max_connections) {
            return Err(invalid(
                "http.max_connections",
                "between 1 and 10000".into(),
            ));
        }
        if !(1..=60).contains(&self.http.header_timeout_secs) {
            return Err(invalid(
                "http.header_timeout_secs",
                "between 1 and 60".into(),
            ));
        }
        if !(self.http.header_timeout_secs..=3600).contains(&self.http.connection_timeout_secs) {
            return Err(invalid(
                "http.connection_timeout_secs",
                "between http.header_timeout_secs and 3600".into(),
            ));
        }
        // SSM document names: letters, digits, `_-.`; an ARN adds `:` and `/`.
        let document = &self.agentless.document;
        if !(3..=200).contains(&document.len())
            || !document
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.:/".contains(c))
        {
            return Err(invalid(
                "agentless.document",
                format!("{document:?} is not an SSM document name"),
            ));
        }
        check_policy(&self.groups.defaults).map_err(|m| invalid("groups.defaults", m))?;
        for (name, policy) in &self.groups.overrides {
            check_policy(policy).map_err(|m| invalid(&format!("groups.override.{name}"), m))?;
        }
        self.images
            .check()
            .map_err(|(key, message)| invalid(&key, message))?;
        Ok(())
    }

    /// The policy of `group`, given its tags.
    pub fn policy_for(
        &self,
        group: &str,
        tags: &HashMap<String, String>,
    ) -> Result<GroupPolicy, String> {
        let mut policy = self.groups.defaults.clone();
        if let Some(found) = self.groups.overrides.get(group) {
            policy.merge(found);
        }
        policy.merge(&policy_from_tags(tags)?);
        Ok(policy.resolve())
    }

    /// Whether a group with these tags is managed.
    pub fn manages(&self, group: &str, tags: &HashMap<String, String>) -> bool {
        self.groups.names.iter().any(|n| n == group)
            || tags
                .get(&self.groups.tag)
                .is_some_and(|value| !value.trim().eq_ignore_ascii_case("false"))
    }
}

/// Bounds of every policy duration, in seconds: the lifecycle hook's own limits (a heartbeat
/// timeout of 30 s to 7200 s) bound how long anything may wait on an action, so a value outside
/// them is a mistake or an attack, never a wish, and a bounded value keeps every time sum finite.
pub const AGENT_GRACE_SECS: std::ops::RangeInclusive<u64> = 1..=7200;
pub const REPORT_SILENCE_SECS: std::ops::RangeInclusive<u64> = 1..=7200;
/// SSM Run Command needs 30 s at least; beyond two hours an archive is not a drain's.
pub const AGENTLESS_ARCHIVE_TIMEOUT_SECS: std::ops::RangeInclusive<u64> = 30..=7200;
/// At most this many agentless archive paths (the SSM document's pattern allows 32).
pub const MAX_AGENTLESS_PATHS: usize = 32;

/// One check for a policy, wherever it comes from: the file or a group's tags.
fn check_policy(policy: &PolicyConfig) -> Result<(), String> {
    let bounded = |name: &str, value: Option<u64>, range: std::ops::RangeInclusive<u64>| match value
    {
        Some(secs) if !range.contains(&secs) => Err(format!(
            "{name} = {secs} is outside {}..={} seconds",
            range.start(),
            range.end()
        )),
        _ => Ok(()),
    };
    bounded(
        "agent_grace_secs",
        policy.agent_grace_secs,
        AGENT_GRACE_SECS,
    )?;
    bounded(
        "report_silence_secs",
        policy.report_silence_secs,
        REPORT_SILENCE_SECS,
    )?;
    bounded(
        "agentless_archive_timeout_secs",
        policy.agentless_archive_timeout_secs,
        AGENTLESS_ARCHIVE_TIMEOUT_SECS,
    )?;
    if let Some(bucket) = &policy.archive_bucket
        && !is_bucket_name(bucket)
    {
        return Err(format!(
            "archive_bucket: {bucket:?} is not an S3 bucket name"
        ));
    }
    if let Some(paths) = &policy.agentless_archive_paths {
        // The paths reach the instance as one parameter of lifeguard's SSM document, whose
        // allowedPattern takes absolute paths of these characters only.
        if paths.is_empty() {
            return Err("agentless_archive_paths is empty".into());
        }
        if paths.len() > MAX_AGENTLESS_PATHS {
            return Err(format!(
                "agentless_archive_paths: {} paths, at most {MAX_AGENTLESS_PATHS}",
                paths.len()
            ));
        }
        if let Some(bad) = paths.iter().find(|p| !is_plain_path(p)) {
            return Err(format!(
                "agentless_archive_paths: {bad:?} is not an absolute path of letters, digits and ._-/"
            ));
        }
    }
    Ok(())
}

/// S3's rules for general purpose bucket names: 3 to 63 lower-case letters, digits, dots and
/// hyphens, beginning and ending with a letter or digit, no two adjacent dots, not an IP address.
pub fn is_bucket_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let edge = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    (3..=63).contains(&bytes.len())
        && bytes.iter().all(|b| edge(b) || *b == b'.' || *b == b'-')
        && bytes.first().is_some_and(edge)
        && bytes.last().is_some_and(edge)
        && !name.contains("..")
        && name.parse::<std::net::Ipv4Addr>().is_err()
}

pub fn is_plain_path(path: &str) -> bool {
    path.starts_with('/')
        && path.len() <= 1024
        && !path.contains("..")
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c))
}

impl PolicyConfig {
    fn merge(&mut self, more: &PolicyConfig) {
        macro_rules! take {
            ($($field:ident),*) => {
                $(if more.$field.is_some() { self.$field = more.$field.clone(); })*
            };
        }
        take!(
            fallback_result,
            launch_fallback_result,
            agent_grace_secs,
            report_silence_secs,
            heartbeat_while_waiting,
            archive_bucket,
            agentless_archive_timeout_secs,
            agentless_archive_paths
        );
    }

    pub(crate) fn resolve(self) -> GroupPolicy {
        GroupPolicy {
            fallback_result: self.fallback_result.unwrap_or(LifecycleResult::Abandon),
            launch_fallback_result: self
                .launch_fallback_result
                .unwrap_or(LifecycleResult::Abandon),
            agent_grace: Duration::from_secs(self.agent_grace_secs.unwrap_or(60)),
            report_silence: Duration::from_secs(self.report_silence_secs.unwrap_or(180)),
            heartbeat_while_waiting: self.heartbeat_while_waiting.unwrap_or(true),
            agentless_archive: self.archive_bucket.map(|bucket| AgentlessArchive {
                bucket,
                paths: self
                    .agentless_archive_paths
                    .unwrap_or_else(|| vec!["/var/log".to_string()]),
            }),
            agentless_archive_timeout: Duration::from_secs(
                self.agentless_archive_timeout_secs.unwrap_or(300),
            ),
        }
    }
}

/// The tag keys a group's policy can be set with, e.g. `lifeguard:fallback-result = CONTINUE`.
pub const POLICY_TAGS: [&str; 7] = [
    "lifeguard:fallback-result",
    "lifeguard:launch-fallback-result",
    "lifeguard:agent-grace-secs",
    "lifeguard:report-silence-secs",
    "lifeguard:heartbeat-while-waiting",
    "lifeguard:archive-bucket",
    "lifeguard:agentless-archive-timeout-secs",
];

/// A policy from a group's tags. A tag with a bad value is an error naming it: the controller
/// logs it and keeps the configured policy rather than guess.
pub fn policy_from_tags(tags: &HashMap<String, String>) -> Result<PolicyConfig, String> {
    let result = |key: &str| -> Result<Option<LifecycleResult>, String> {
        match tags
            .get(key)
            .map(|v| v.trim().to_ascii_uppercase())
            .as_deref()
        {
            None => Ok(None),
            Some("CONTINUE") => Ok(Some(LifecycleResult::Continue)),
            Some("ABANDON") => Ok(Some(LifecycleResult::Abandon)),
            Some(other) => Err(format!("tag {key}: {other:?} is not CONTINUE or ABANDON")),
        }
    };
    let seconds = |key: &str| -> Result<Option<u64>, String> {
        match tags.get(key) {
            None => Ok(None),
            Some(value) => match value.trim().parse::<u64>() {
                Ok(n) => Ok(Some(n)),
                _ => Err(format!("tag {key}: {value:?} is not a number of seconds")),
            },
        }
    };
    let flag = |key: &str| -> Result<Option<bool>, String> {
        match tags
            .get(key)
            .map(|v| v.trim().to_ascii_lowercase())
            .as_deref()
        {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => Err(format!("tag {key}: {other:?} is not true or false")),
        }
    };
    let policy = PolicyConfig {
        fallback_result: result(POLICY_TAGS[0])?,
        launch_fallback_result: result(POLICY_TAGS[1])?,
        agent_grace_secs: seconds(POLICY_TAGS[2])?,
        report_silence_secs: seconds(POLICY_TAGS[3])?,
        heartbeat_while_waiting: flag(POLICY_TAGS[4])?,
        archive_bucket: tags
            .get(POLICY_TAGS[5])
            .map(|b| b.trim().to_string())
            .filter(|b| !b.is_empty()),
        agentless_archive_timeout_secs: seconds(POLICY_TAGS[6])?,
        agentless_archive_paths: None,
    };
    // A tag is as hostile as any input: the same checks as the file, and the message names
    // the tags rather than the file's keys.
    check_policy(&policy).map_err(|problem| format!("lifeguard:* tags: {problem}"))?;
    Ok(policy)
}

#[cfg(test)]
mod tests;
