//! What the image pipeline needs from EC2, Auto Scaling and SSM, behind one narrow trait so the
//! step logic and the dry run can be tested without AWS.

use std::collections::{BTreeSet, HashMap};

use super::roll::{RefreshView, Roll};
use crate::fleet::FleetError;

/// A launch template and the versions it resolves `$Default` and `$Latest` to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateView {
    pub id: String,
    pub name: String,
    pub default_version: i64,
    pub latest_version: i64,
    pub tags: HashMap<String, String>,
}

/// One version of a launch template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionView {
    pub number: i64,
    pub image_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageState {
    Pending,
    Available,
    Failed,
    /// `invalid`, `deregistered`, `error`, `transient`, `disabled`, or a state added later:
    /// never launchable, so never waited for.
    Other(String),
}

impl ImageState {
    pub fn parse(state: &str) -> ImageState {
        match state {
            "pending" => ImageState::Pending,
            "available" => ImageState::Available,
            "failed" => ImageState::Failed,
            other => ImageState::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            ImageState::Pending => "pending",
            ImageState::Available => "available",
            ImageState::Failed => "failed",
            ImageState::Other(other) => other,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageView {
    pub id: String,
    pub name: String,
    pub state: ImageState,
    /// EC2's `StateReason` message, for a failed image.
    pub reason: Option<String>,
    pub snapshot_ids: Vec<String>,
    pub tags: HashMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotView {
    pub id: String,
    pub state: String,
    /// `"42%"`, as EC2 reports it.
    pub progress: Option<String>,
}

/// A group as the pipeline needs to see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupTemplate {
    pub tags: HashMap<String, String>,
    pub template_id: Option<String>,
    pub template_name: Option<String>,
    pub version: Option<String>,
}

/// `CreateImage` as the pipeline makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateImage {
    pub instance_id: String,
    /// Unique per account and region: a retry with the same name cannot make a second image.
    pub name: String,
    pub description: String,
    /// Image without stopping the instance; EC2 "can't guarantee the file system integrity of
    /// the created image".
    pub no_reboot: bool,
    pub tags: Vec<(String, String)>,
}

/// Builder mode's and the launch-configuration path's calls are traits of their own; every
/// image API also serves them.
pub trait ImageApi:
    super::builder::BuilderApi + super::configuration::ConfigurationApi + Send + Sync
{
    /// A template by id (`lt-…`) or by name; `None` if there is none.
    fn template(
        &self,
        name_or_id: &str,
    ) -> impl Future<Output = Result<Option<TemplateView>, FleetError>> + Send;

    /// Every launch template of the account and region (the service looks for pipelines
    /// among their tags).
    fn templates(&self) -> impl Future<Output = Result<Vec<TemplateView>, FleetError>> + Send;

    fn versions(
        &self,
        template_id: &str,
    ) -> impl Future<Output = Result<Vec<VersionView>, FleetError>> + Send;

    /// Writes the pipeline's record (`CreateTags` replaces values of existing keys).
    fn tag_template(
        &self,
        template_id: &str,
        tags: &[(String, String)],
    ) -> impl Future<Output = Result<(), FleetError>> + Send;

    fn image(
        &self,
        image_id: &str,
    ) -> impl Future<Output = Result<Option<ImageView>, FleetError>> + Send;

    /// The account's own image of that name, if any.
    fn image_named(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<ImageView>, FleetError>> + Send;

    fn snapshots(
        &self,
        snapshot_ids: &[String],
    ) -> impl Future<Output = Result<Vec<SnapshotView>, FleetError>> + Send;

    /// The new image's id.
    fn create_image(
        &self,
        request: &CreateImage,
    ) -> impl Future<Output = Result<String, FleetError>> + Send;

    /// A version from `source_version` with only `ImageId` changed; its number. The client token
    /// makes a retry return the version the first call created.
    fn create_version(
        &self,
        template_id: &str,
        source_version: i64,
        image_id: &str,
        client_token: &str,
        description: &str,
    ) -> impl Future<Output = Result<i64, FleetError>> + Send;

    fn set_default_version(
        &self,
        template_id: &str,
        version: i64,
    ) -> impl Future<Output = Result<(), FleetError>> + Send;

    /// Publishes the AMI id (`aws:ec2:image` data type, overwriting).
    fn put_parameter(
        &self,
        name: &str,
        image_id: &str,
    ) -> impl Future<Output = Result<(), FleetError>> + Send;

    /// Version numbers of the template that a group or an unfinished instance refresh names.
    fn pinned_versions(
        &self,
        template: &TemplateView,
    ) -> impl Future<Output = Result<BTreeSet<i64>, FleetError>> + Send;

    /// Deletes versions; for each one EC2 refused, its number and the reason.
    fn delete_versions(
        &self,
        template_id: &str,
        versions: &[i64],
    ) -> impl Future<Output = Result<Vec<(i64, String)>, FleetError>> + Send;

    /// The images launch configurations use (a group on a launch configuration uses its image).
    fn launch_configuration_images(
        &self,
    ) -> impl Future<Output = Result<BTreeSet<String>, FleetError>> + Send;

    /// The groups that launch from the template: name and the version they name.
    fn groups_of_template(
        &self,
        template: &TemplateView,
    ) -> impl Future<Output = Result<Vec<(String, Option<String>)>, FleetError>> + Send;

    /// The group's newest instance refresh, if it has had one.
    fn latest_refresh(
        &self,
        group: &str,
    ) -> impl Future<Output = Result<Option<RefreshView>, FleetError>> + Send;

    /// Starts an instance refresh (skip-matching on); with `desired`, the group is rolled to
    /// that template version and rolls back on failure. Its id.
    fn start_refresh(
        &self,
        group: &str,
        roll: &Roll,
        desired: Option<(&str, i64)>,
    ) -> impl Future<Output = Result<String, FleetError>> + Send;

    /// A group's tags and the launch template it names (id or name, version); `None` if there
    /// is no such group.
    fn group(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<GroupTemplate>, FleetError>> + Send;

    /// Points the group at `version` (`$Latest`, `$Default` or a number) of the template.
    fn use_template_version(
        &self,
        group: &str,
        template_id: &str,
        version: &str,
    ) -> impl Future<Output = Result<(), FleetError>> + Send;

    fn deregister_image(
        &self,
        image_id: &str,
    ) -> impl Future<Output = Result<(), FleetError>> + Send;

    fn delete_snapshot(
        &self,
        snapshot_id: &str,
    ) -> impl Future<Output = Result<(), FleetError>> + Send;
}
