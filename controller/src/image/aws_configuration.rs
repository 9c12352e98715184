//! [`ConfigurationApi`] over the Auto Scaling and EC2 SDK clients.

use std::collections::BTreeSet;

use aws_sdk_autoscaling::types::{BlockDeviceMapping, LaunchConfiguration, Tag};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use super::aws::AwsImages;
use super::configuration::{ConfigurationApi, Deleted, GroupConfiguration};
use super::pipeline::TAG_PREFIX;
use crate::fleet::{FleetError, fleet_error, group_tags};

fn refused(operation: &'static str, subject: &str, message: String) -> FleetError {
    FleetError {
        operation,
        subject: subject.to_string(),
        message,
        transient: false,
        code: None,
    }
}

/// Auto Scaling answers unset strings as `""` and refuses `""` on create: unset stays unset.
fn set(value: Option<&str>) -> Option<String> {
    value.filter(|v| !v.is_empty()).map(str::to_string)
}

/// The source's block devices, minus the snapshots of its image: a mapping that names the old
/// image's root snapshot would launch the copy with the old disk.
fn mappings_for(
    source: &LaunchConfiguration,
    old_snapshots: &BTreeSet<String>,
) -> Vec<BlockDeviceMapping> {
    source
        .block_device_mappings()
        .iter()
        .map(|mapping| {
            let Some(ebs) = mapping.ebs() else {
                return mapping.clone();
            };
            if !ebs.snapshot_id().is_some_and(|s| old_snapshots.contains(s)) {
                return mapping.clone();
            }
            let mut ebs = ebs.clone();
            ebs.snapshot_id = None;
            let mut mapping = mapping.clone();
            mapping.ebs = Some(ebs);
            mapping
        })
        .collect()
}

fn group_view(group: &aws_sdk_autoscaling::types::AutoScalingGroup) -> GroupConfiguration {
    GroupConfiguration {
        name: group
            .auto_scaling_group_name()
            .unwrap_or_default()
            .to_string(),
        configuration: set(group.launch_configuration_name()),
        tags: group_tags(group.tags()),
    }
}

impl AwsImages {
    async fn launch_configuration(
        &self,
        name: &str,
    ) -> Result<Option<LaunchConfiguration>, FleetError> {
        let autoscaling: &aws_sdk_autoscaling::Client = &self.autoscaling;
        let answer = autoscaling
            .describe_launch_configurations()
            .launch_configuration_names(name)
            .send()
            .await
            .map_err(|e| fleet_error("DescribeLaunchConfigurations", name, &e))?;
        Ok(answer.launch_configurations().first().cloned())
    }

    async fn snapshots_of(&self, image_id: &str) -> Result<BTreeSet<String>, FleetError> {
        let ec2: &aws_sdk_ec2::Client = &self.ec2;
        let answer = ec2
            .describe_images()
            .image_ids(image_id)
            .send()
            .await
            .map_err(|e| fleet_error("DescribeImages", image_id, &e))?;
        Ok(answer
            .images()
            .iter()
            .flat_map(|i| i.block_device_mappings())
            .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()))
            .map(str::to_string)
            .collect())
    }
}

impl ConfigurationApi for AwsImages {
    async fn group_configuration(
        &self,
        group: &str,
    ) -> Result<Option<GroupConfiguration>, FleetError> {
        let autoscaling: &aws_sdk_autoscaling::Client = &self.autoscaling;
        let answer = autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(group)
            .send()
            .await
            .map_err(|e| fleet_error("DescribeAutoScalingGroups", group, &e))?;
        Ok(answer.auto_scaling_groups().first().map(group_view))
    }

    async fn groups_with_pipelines(&self) -> Result<Vec<GroupConfiguration>, FleetError> {
        let autoscaling: &aws_sdk_autoscaling::Client = &self.autoscaling;
        let mut pages = autoscaling
            .describe_auto_scaling_groups()
            .filters(
                aws_sdk_autoscaling::types::Filter::builder()
                    .name("tag-key")
                    .values(format!("{TAG_PREFIX}configuration-source"))
                    .build(),
            )
            .into_paginator()
            .send();
        let mut groups = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| fleet_error("DescribeAutoScalingGroups", "all", &e))?;
            groups.extend(page.auto_scaling_groups().iter().map(group_view));
        }
        Ok(groups)
    }

    async fn tag_group(&self, group: &str, tags: &[(String, String)]) -> Result<(), FleetError> {
        let autoscaling: &aws_sdk_autoscaling::Client = &self.autoscaling;
        let tags: Vec<Tag> = tags
            .iter()
            .map(|(key, value)| {
                Tag::builder()
                    .resource_id(group)
                    .resource_type("auto-scaling-group")
                    .key(key)
                    .value(value)
                    // The record is the group's, not its instances'.
                    .propagate_at_launch(false)
                    .build()
            })
            .collect();
        autoscaling
            .create_or_update_tags()
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(|e| fleet_error("CreateOrUpdateTags", group, &e))?;
        Ok(())
    }

    async fn copy_configuration(
        &self,
        source: &str,
        name: &str,
        image_id: &str,
    ) -> Result<(), FleetError> {
        let autoscaling: &aws_sdk_autoscaling::Client = &self.autoscaling;
        if let Some(existing) = self.launch_configuration(name).await? {
            return match existing.image_id() {
                Some(id) if id == image_id => Ok(()),
                other => Err(refused(
                    "CreateLaunchConfiguration",
                    name,
                    format!(
                        "a launch configuration of that name exists with image {}",
                        other.unwrap_or("none")
                    ),
                )),
            };
        }
        let Some(from) = self.launch_configuration(source).await? else {
            return Err(refused(
                "DescribeLaunchConfigurations",
                source,
                "the group's launch configuration no longer exists".into(),
            ));
        };
        let old_snapshots = match from.image_id() {
            Some(old)
                if from
                    .block_device_mappings()
                    .iter()
                    .any(|m| m.ebs().and_then(|e| e.snapshot_id()).is_some()) =>
            {
                self.snapshots_of(old).await?
            }
            _ => BTreeSet::new(),
        };
        let mappings = mappings_for(&from, &old_snapshots);
        let created = autoscaling
            .create_launch_configuration()
            .launch_configuration_name(name)
            .image_id(image_id)
            .set_key_name(set(from.key_name()))
            .set_security_groups(Some(from.security_groups().to_vec()).filter(|g| !g.is_empty()))
            .set_user_data(set(from.user_data()))
            .set_instance_type(set(from.instance_type()))
            .set_kernel_id(set(from.kernel_id()))
            .set_ramdisk_id(set(from.ramdisk_id()))
            .set_block_device_mappings(Some(mappings).filter(|m| !m.is_empty()))
            .set_instance_monitoring(from.instance_monitoring().cloned())
            .set_spot_price(set(from.spot_price()))
            .set_iam_instance_profile(set(from.iam_instance_profile()))
            .set_ebs_optimized(from.ebs_optimized())
            .set_associate_public_ip_address(from.associate_public_ip_address())
            .set_placement_tenancy(set(from.placement_tenancy()))
            .set_metadata_options(from.metadata_options().cloned())
            .send()
            .await;
        match created {
            Ok(_) => Ok(()),
            // Another replica's copy, made between the look and the create.
            Err(e) if e.as_service_error().and_then(|s| s.code()) == Some("AlreadyExists") => {
                match self.launch_configuration(name).await? {
                    Some(existing) if existing.image_id() == Some(image_id) => Ok(()),
                    _ => Err(fleet_error("CreateLaunchConfiguration", name, &e)),
                }
            }
            Err(e) => Err(fleet_error("CreateLaunchConfiguration", name, &e)),
        }
    }

    async fn use_configuration(&self, group: &str, name: &str) -> Result<(), FleetError> {
        let autoscaling: &aws_sdk_autoscaling::Client = &self.autoscaling;
        autoscaling
            .update_auto_scaling_group()
            .auto_scaling_group_name(group)
            .launch_configuration_name(name)
            .send()
            .await
            .map_err(|e| fleet_error("UpdateAutoScalingGroup", group, &e))?;
        Ok(())
    }

    async fn delete_configuration(&self, name: &str) -> Result<Deleted, FleetError> {
        let autoscaling: &aws_sdk_autoscaling::Client = &self.autoscaling;
        match autoscaling
            .delete_launch_configuration()
            .launch_configuration_name(name)
            .send()
            .await
        {
            Ok(_) => Ok(Deleted::Deleted),
            Err(e) => match e.as_service_error().and_then(|s| s.code()) {
                Some("ResourceInUse") => Ok(Deleted::Kept(format!(
                    "{name} is still used by another group"
                ))),
                Some("ValidationError") if self.launch_configuration(name).await?.is_none() => {
                    Ok(Deleted::Deleted)
                }
                _ => Err(fleet_error("DeleteLaunchConfiguration", name, &e)),
            },
        }
    }
}
