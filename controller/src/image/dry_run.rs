//! `--dry-run`: reads go to AWS, every call that would change something is written out instead
//! of made, and answered with a stand-in so the rest of the pipeline can be shown.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use super::api::{
    CreateImage, GroupTemplate, ImageApi, ImageState, ImageView, SnapshotView, TemplateView,
    VersionView,
};
use super::roll::{RefreshView, Roll};
use crate::fleet::FleetError;

/// The image id a dry run's `CreateImage` answers with.
pub const STAND_IN_IMAGE: &str = "ami-00000000000dryrun";

pub struct DryRun<'a, A> {
    inner: &'a A,
    calls: Mutex<Vec<String>>,
}

impl<'a, A: ImageApi> DryRun<'a, A> {
    pub fn new(inner: &'a A) -> Self {
        DryRun {
            inner,
            calls: Mutex::new(Vec::new()),
        }
    }

    /// The calls that would have been made, in order.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn would(&self, call: String) {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(call);
        }
    }
}

fn pairs(tags: &[(String, String)]) -> String {
    tags.iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join(" ")
}

impl<A: ImageApi> ImageApi for DryRun<'_, A> {
    async fn template(&self, name_or_id: &str) -> Result<Option<TemplateView>, FleetError> {
        self.inner.template(name_or_id).await
    }

    async fn templates(&self) -> Result<Vec<TemplateView>, FleetError> {
        self.inner.templates().await
    }

    async fn versions(&self, template_id: &str) -> Result<Vec<VersionView>, FleetError> {
        self.inner.versions(template_id).await
    }

    async fn tag_template(
        &self,
        template_id: &str,
        tags: &[(String, String)],
    ) -> Result<(), FleetError> {
        self.would(format!("ec2 CreateTags {template_id} {}", pairs(tags)));
        Ok(())
    }

    async fn image(&self, image_id: &str) -> Result<Option<ImageView>, FleetError> {
        if image_id == STAND_IN_IMAGE {
            return Ok(Some(ImageView {
                id: image_id.to_string(),
                name: String::new(),
                state: ImageState::Available,
                reason: None,
                snapshot_ids: Vec::new(),
                tags: HashMap::new(),
            }));
        }
        self.inner.image(image_id).await
    }

    async fn image_named(&self, name: &str) -> Result<Option<ImageView>, FleetError> {
        self.inner.image_named(name).await
    }

    async fn snapshots(&self, snapshot_ids: &[String]) -> Result<Vec<SnapshotView>, FleetError> {
        self.inner.snapshots(snapshot_ids).await
    }

    async fn create_image(&self, request: &CreateImage) -> Result<String, FleetError> {
        self.would(format!(
            "ec2 CreateImage InstanceId={} Name={:?} NoReboot={} Tags: {}",
            request.instance_id,
            request.name,
            request.no_reboot,
            pairs(&request.tags)
        ));
        Ok(STAND_IN_IMAGE.to_string())
    }

    async fn create_version(
        &self,
        template_id: &str,
        source_version: i64,
        image_id: &str,
        client_token: &str,
        _description: &str,
    ) -> Result<i64, FleetError> {
        self.would(format!(
            "ec2 CreateLaunchTemplateVersion LaunchTemplateId={template_id} \
             SourceVersion={source_version} LaunchTemplateData.ImageId={image_id} \
             ClientToken={client_token}"
        ));
        let latest = self
            .inner
            .template(template_id)
            .await?
            .map_or(0, |t| t.latest_version);
        Ok(latest.saturating_add(1))
    }

    async fn set_default_version(&self, template_id: &str, version: i64) -> Result<(), FleetError> {
        self.would(format!(
            "ec2 ModifyLaunchTemplate LaunchTemplateId={template_id} DefaultVersion={version}"
        ));
        Ok(())
    }

    async fn put_parameter(&self, name: &str, image_id: &str) -> Result<(), FleetError> {
        self.would(format!(
            "ssm PutParameter Name={name} Value={image_id} DataType=aws:ec2:image Overwrite=true"
        ));
        Ok(())
    }

    async fn pinned_versions(&self, template: &TemplateView) -> Result<BTreeSet<i64>, FleetError> {
        self.inner.pinned_versions(template).await
    }

    async fn delete_versions(
        &self,
        template_id: &str,
        versions: &[i64],
    ) -> Result<Vec<(i64, String)>, FleetError> {
        self.would(format!(
            "ec2 DeleteLaunchTemplateVersions LaunchTemplateId={template_id} Versions={versions:?}"
        ));
        Ok(Vec::new())
    }

    async fn launch_configuration_images(&self) -> Result<BTreeSet<String>, FleetError> {
        self.inner.launch_configuration_images().await
    }

    async fn groups_of_template(
        &self,
        template: &TemplateView,
    ) -> Result<Vec<(String, Option<String>)>, FleetError> {
        self.inner.groups_of_template(template).await
    }

    async fn latest_refresh(&self, group: &str) -> Result<Option<RefreshView>, FleetError> {
        let started = self.calls().iter().any(|c| {
            c.starts_with(&format!(
                "autoscaling StartInstanceRefresh AutoScalingGroupName={group} "
            ))
        });
        if started {
            // What the stand-in refresh would come to, so the rest of the run can be shown.
            return Ok(Some(RefreshView {
                id: "dry-run".into(),
                status: "Successful".into(),
                percent: Some(100),
                reason: None,
                started_at: None,
            }));
        }
        self.inner.latest_refresh(group).await
    }

    async fn start_refresh(
        &self,
        group: &str,
        roll: &Roll,
        desired: Option<(&str, i64)>,
    ) -> Result<String, FleetError> {
        self.would(format!(
            "autoscaling StartInstanceRefresh AutoScalingGroupName={group} \
             Preferences={{{}, SkipMatching=true, AutoRollback={}}}{}",
            roll.encode(),
            desired.is_some(),
            desired
                .map(|(id, v)| format!(" DesiredConfiguration.LaunchTemplate={id}:{v}"))
                .unwrap_or_default()
        ));
        Ok("dry-run".into())
    }

    async fn group(&self, name: &str) -> Result<Option<GroupTemplate>, FleetError> {
        self.inner.group(name).await
    }

    async fn use_template_version(
        &self,
        group: &str,
        template_id: &str,
        version: &str,
    ) -> Result<(), FleetError> {
        self.would(format!(
            "autoscaling UpdateAutoScalingGroup AutoScalingGroupName={group} \
             LaunchTemplate.LaunchTemplateId={template_id} LaunchTemplate.Version={version}"
        ));
        Ok(())
    }

    async fn deregister_image(&self, image_id: &str) -> Result<(), FleetError> {
        self.would(format!("ec2 DeregisterImage ImageId={image_id}"));
        Ok(())
    }

    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), FleetError> {
        self.would(format!("ec2 DeleteSnapshot SnapshotId={snapshot_id}"));
        Ok(())
    }
}
