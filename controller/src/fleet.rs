//! What the controller needs of AWS beyond one instance's lifecycle calls: the managed groups
//! with their hooks and waiting instances, the lifecycle states of many instances at once, and
//! the marks (tags) on instances that replicas share.

use std::collections::HashMap;
use std::future::Future;

pub use lifeguard_common::lifecycle::{AutoScaling, Completion, HookInfo, LifecycleError};
use lifeguard_common::message::Transition;

use crate::marks::Marks;

mod aws;

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

/// An agentless archive to run on an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveCommand {
    pub bucket: String,
    pub key: String,
    pub paths: Vec<String>,
    pub timeout: std::time::Duration,
}

#[derive(Debug, thiserror::Error)]
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
