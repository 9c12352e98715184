//! The launch-configuration path: a group that launches from a launch configuration (which
//! cannot be versioned) gets a copy of it with the new image, and is switched to the copy.

use std::collections::HashMap;

use crate::fleet::FleetError;

/// Lifeguard's copies carry this in their name (`{source}-lifeguard-{pipeline}`): it deletes
/// only configurations it made.
pub const COPY_MARK: &str = "-lifeguard-";

/// A group as the launch-configuration path needs to see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfiguration {
    pub name: String,
    /// `None` for a group on a launch template.
    pub configuration: Option<String>,
    pub tags: HashMap<String, String>,
}

/// What deleting the source configuration came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    Deleted,
    /// Kept, and why (another group uses it; lifeguard did not make it).
    Kept(String),
}

pub trait ConfigurationApi: Send + Sync {
    fn group_configuration(
        &self,
        group: &str,
    ) -> impl Future<Output = Result<Option<GroupConfiguration>, FleetError>> + Send;

    /// Every group with a launch-configuration pipeline's record in its tags (the service's
    /// reconcile goes on with them).
    fn groups_with_pipelines(
        &self,
    ) -> impl Future<Output = Result<Vec<GroupConfiguration>, FleetError>> + Send;

    /// Writes the pipeline's record in the group's tags (not propagated to instances).
    fn tag_group(
        &self,
        group: &str,
        tags: &[(String, String)],
    ) -> impl Future<Output = Result<(), FleetError>> + Send;

    /// A copy of `source` named `name` with `image_id` and every other setting kept. A copy of
    /// that name made by an earlier attempt is taken if it has that image.
    fn copy_configuration(
        &self,
        source: &str,
        name: &str,
        image_id: &str,
    ) -> impl Future<Output = Result<(), FleetError>> + Send;

    fn use_configuration(
        &self,
        group: &str,
        name: &str,
    ) -> impl Future<Output = Result<(), FleetError>> + Send;

    fn delete_configuration(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Deleted, FleetError>> + Send;
}
