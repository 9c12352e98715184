//! `--dry-run`: reads go to AWS, every call that would change something is written out instead
//! of made, and answered with a stand-in so the rest of the pipeline can be shown.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use super::api::{
    CreateImage, GroupTemplate, ImageApi, ImageState, ImageView, SnapshotView, TemplateView,
    VersionView,
};
use super::builder::{BuilderApi, BuilderSpec, InstanceView, Invocation, LaunchBuilder};
use super::configuration::{ConfigurationApi, Deleted, GroupConfiguration};
use super::roll::{RefreshView, Roll};
use crate::fleet::FleetError;

/// The image id a dry run's `CreateImage` answers with.
pub const STAND_IN_IMAGE: &str = "ami-00000000000dryrun";

/// The instance id a dry run's builder launch answers with.
pub const STAND_IN_BUILDER: &str = "i-0000000000dryrun";
const STAND_IN_COMMAND: &str = "00000000-0000-0000-0000-00000000dry0";

pub struct DryRun<'a, A> {
    inner: &'a A,
    calls: Mutex<Vec<String>>,
    /// Whether the stand-in builder was (would have been) stopped.
    builder_stopped: std::sync::atomic::AtomicBool,
}

impl<'a, A: ImageApi> DryRun<'a, A> {
    pub fn new(inner: &'a A) -> Self {
        DryRun {
            inner,
            calls: Mutex::new(Vec::new()),
            builder_stopped: std::sync::atomic::AtomicBool::new(false),
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

impl<A: ImageApi> BuilderApi for DryRun<'_, A> {
    async fn builder_of(&self, pipeline_id: &str) -> Result<Option<InstanceView>, FleetError> {
        self.inner.builder_of(pipeline_id).await
    }

    async fn instance(&self, instance_id: &str) -> Result<Option<InstanceView>, FleetError> {
        if instance_id == STAND_IN_BUILDER {
            let stopped = self.builder_stopped.load(Ordering::Relaxed);
            return Ok(Some(InstanceView {
                id: instance_id.to_string(),
                state: if stopped { "stopped" } else { "running" }.to_string(),
            }));
        }
        self.inner.instance(instance_id).await
    }

    async fn launch_builder(&self, request: &LaunchBuilder) -> Result<String, FleetError> {
        self.would(format!(
            "ec2 RunInstances LaunchTemplate.LaunchTemplateId={} LaunchTemplate.Version={} \
             MinCount=1 MaxCount=1{} ClientToken={} Tags: {}",
            request.template_id,
            request.version,
            request
                .subnet
                .as_ref()
                .map(|s| format!(" SubnetId={s}"))
                .unwrap_or_default(),
            request.client_token,
            pairs(&request.tags)
        ));
        Ok(STAND_IN_BUILDER.to_string())
    }

    async fn command_with_comment(
        &self,
        instance_id: &str,
        comment: &str,
    ) -> Result<Option<String>, FleetError> {
        if instance_id == STAND_IN_BUILDER {
            return Ok(None);
        }
        self.inner.command_with_comment(instance_id, comment).await
    }

    async fn send_patch(
        &self,
        instance_id: &str,
        spec: &BuilderSpec,
        comment: &str,
    ) -> Result<Option<String>, FleetError> {
        self.would(format!(
            "ssm SendCommand DocumentName={} InstanceIds={instance_id} Parameters={} \
             Comment={comment:?}",
            spec.document,
            spec.encode_parameters()
        ));
        Ok(Some(STAND_IN_COMMAND.to_string()))
    }

    async fn invocation(
        &self,
        command_id: &str,
        instance_id: &str,
    ) -> Result<Option<Invocation>, FleetError> {
        if command_id == STAND_IN_COMMAND {
            return Ok(Some(Invocation::Succeeded));
        }
        self.inner.invocation(command_id, instance_id).await
    }

    async fn stop_instance(&self, instance_id: &str) -> Result<(), FleetError> {
        self.would(format!("ec2 StopInstances InstanceIds={instance_id}"));
        self.builder_stopped.store(true, Ordering::Relaxed);
        Ok(())
    }

    async fn terminate_instance(&self, instance_id: &str) -> Result<(), FleetError> {
        self.would(format!("ec2 TerminateInstances InstanceIds={instance_id}"));
        Ok(())
    }
}

impl<A: ImageApi> ConfigurationApi for DryRun<'_, A> {
    async fn group_configuration(
        &self,
        group: &str,
    ) -> Result<Option<GroupConfiguration>, FleetError> {
        self.inner.group_configuration(group).await
    }

    async fn groups_with_pipelines(&self) -> Result<Vec<GroupConfiguration>, FleetError> {
        self.inner.groups_with_pipelines().await
    }

    async fn tag_group(&self, group: &str, tags: &[(String, String)]) -> Result<(), FleetError> {
        self.would(format!(
            "autoscaling CreateOrUpdateTags {group} PropagateAtLaunch=false {}",
            pairs(tags)
        ));
        Ok(())
    }

    async fn copy_configuration(
        &self,
        source: &str,
        name: &str,
        image_id: &str,
    ) -> Result<(), FleetError> {
        self.would(format!(
            "autoscaling CreateLaunchConfiguration LaunchConfigurationName={name} \
             ImageId={image_id} (every other setting of {source})"
        ));
        Ok(())
    }

    async fn use_configuration(&self, group: &str, name: &str) -> Result<(), FleetError> {
        self.would(format!(
            "autoscaling UpdateAutoScalingGroup AutoScalingGroupName={group} \
             LaunchConfigurationName={name}"
        ));
        Ok(())
    }

    async fn delete_configuration(&self, name: &str) -> Result<Deleted, FleetError> {
        self.would(format!(
            "autoscaling DeleteLaunchConfiguration LaunchConfigurationName={name}"
        ));
        Ok(Deleted::Deleted)
    }
}
