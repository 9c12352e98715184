//! What a swap needs from Auto Scaling, EC2 and Elastic Load Balancing, behind one trait.

use std::collections::HashMap;
use std::future::Future;

use crate::fleet::FleetError;

/// A group as the swap sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SwapGroup {
    pub name: String,
    pub min: i32,
    pub max: i32,
    pub desired: i32,
    pub suspended: Vec<String>,
    pub target_groups: Vec<String>,
    pub members: Vec<Member>,
    pub tags: HashMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub lifecycle_state: String,
    /// Auto Scaling's health status: `Healthy` or `Unhealthy`.
    pub health: String,
}

impl SwapGroup {
    pub fn member(&self, id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }
}

/// One attached instance in one target group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetHealth {
    pub target_group: String,
    pub instance_id: String,
    /// `initial`, `healthy`, `unhealthy`, `unused`, `draining`, `unavailable`.
    pub state: String,
    pub reason: Option<String>,
}

pub trait SwapApi: Send + Sync {
    fn group(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<SwapGroup>, FleetError>> + Send;

    /// Whether the group has a lifecycle hook on termination.
    fn has_terminate_hook(
        &self,
        group: &str,
    ) -> impl Future<Output = Result<bool, FleetError>> + Send;

    /// The instances of `ids` that cannot be attached, each with why (not running, already
    /// in a group).
    fn unattachable(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<(String, String)>, FleetError>> + Send;

    fn write_record(
        &self,
        group: &str,
        tags: &[(String, String)],
    ) -> impl Future<Output = Result<(), FleetError>> + Send;

    fn delete_record(
        &self,
        group: &str,
        keys: &[&str],
    ) -> impl Future<Output = Result<(), FleetError>> + Send;

    fn suspend(
        &self,
        group: &str,
        processes: &[String],
    ) -> impl Future<Output = Result<(), FleetError>> + Send;

    fn resume(
        &self,
        group: &str,
        processes: &[String],
    ) -> impl Future<Output = Result<(), FleetError>> + Send;

    /// `UpdateAutoScalingGroup` with the sizes given.
    fn set_sizes(
        &self,
        group: &str,
        min: Option<i32>,
        max: Option<i32>,
        desired: Option<i32>,
    ) -> impl Future<Output = Result<(), FleetError>> + Send;

    fn attach(
        &self,
        group: &str,
        ids: &[String],
    ) -> impl Future<Output = Result<(), FleetError>> + Send;

    /// Detaches, decrementing the desired capacity; the instances keep running.
    fn detach(
        &self,
        group: &str,
        ids: &[String],
    ) -> impl Future<Output = Result<(), FleetError>> + Send;

    /// Terminates through the group, decrementing the desired capacity, so the terminate
    /// hooks hold the instance while it drains.
    fn terminate(&self, instance_id: &str) -> impl Future<Output = Result<(), FleetError>> + Send;

    fn target_health(
        &self,
        target_groups: &[String],
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<TargetHealth>, FleetError>> + Send;
}
