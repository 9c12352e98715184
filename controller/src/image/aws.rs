//! [`ImageApi`] over the EC2, Auto Scaling and SSM SDK clients.

use std::collections::{BTreeSet, HashMap};

use aws_sdk_ec2::types::{Filter, RequestLaunchTemplateData, ResourceType, Tag, TagSpecification};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use time::OffsetDateTime;

use super::api::{
    CreateImage, GroupTemplate, ImageApi, ImageState, ImageView, SnapshotView, TemplateView,
    VersionView,
};
use super::roll::{RefreshView, Roll};
use crate::fleet::FleetError;
use crate::fleet::fleet_error;

/// Instance refreshes in these states still hold the configuration they roll to, and the one
/// they would roll back to.
const UNFINISHED_REFRESH: [&str; 5] = [
    "Pending",
    "InProgress",
    "Cancelling",
    "RollbackInProgress",
    "Baking",
];

pub struct AwsImages {
    pub(super) ec2: aws_sdk_ec2::Client,
    pub(super) autoscaling: aws_sdk_autoscaling::Client,
    pub(super) ssm: aws_sdk_ssm::Client,
}

impl AwsImages {
    pub fn new(sdk: &aws_config::SdkConfig) -> Self {
        AwsImages {
            ec2: aws_sdk_ec2::Client::new(sdk),
            autoscaling: aws_sdk_autoscaling::Client::new(sdk),
            ssm: aws_sdk_ssm::Client::new(sdk),
        }
    }
}

fn code_is<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>, codes: &[&str]) -> bool {
    error
        .as_service_error()
        .and_then(|e| e.code())
        .is_some_and(|code| codes.contains(&code))
}

fn tag_map(tags: &[Tag]) -> HashMap<String, String> {
    tags.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_string(),
                t.value().unwrap_or_default().to_string(),
            ))
        })
        .collect()
}

fn ec2_tags(tags: &[(String, String)]) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

fn template_view(t: &aws_sdk_ec2::types::LaunchTemplate) -> Option<TemplateView> {
    Some(TemplateView {
        id: t.launch_template_id()?.to_string(),
        name: t.launch_template_name().unwrap_or_default().to_string(),
        default_version: t.default_version_number()?,
        latest_version: t.latest_version_number()?,
        tags: tag_map(t.tags()),
    })
}

fn image_view(image: &aws_sdk_ec2::types::Image) -> Option<ImageView> {
    Some(ImageView {
        id: image.image_id()?.to_string(),
        name: image.name().unwrap_or_default().to_string(),
        state: ImageState::parse(image.state().map_or("unknown", |s| s.as_str())),
        reason: image
            .state_reason()
            .and_then(|r| r.message())
            .map(str::to_string),
        snapshot_ids: image
            .block_device_mappings()
            .iter()
            .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()))
            .map(str::to_string)
            .collect(),
        tags: tag_map(image.tags()),
    })
}

/// A group or refresh names the template by id or by name; a number is a pin, `$Latest` and
/// `$Default` are not.
fn pin(
    spec: Option<&aws_sdk_autoscaling::types::LaunchTemplateSpecification>,
    template: &TemplateView,
) -> Option<i64> {
    let spec = spec?;
    let names_it = spec.launch_template_id() == Some(template.id.as_str())
        || spec.launch_template_name() == Some(template.name.as_str());
    if !names_it {
        return None;
    }
    spec.version()?.parse().ok()
}

impl ImageApi for AwsImages {
    async fn template(&self, name_or_id: &str) -> Result<Option<TemplateView>, FleetError> {
        let mut call = self.ec2.describe_launch_templates();
        call = if name_or_id.starts_with("lt-") {
            call.launch_template_ids(name_or_id)
        } else {
            call.launch_template_names(name_or_id)
        };
        let answer = match call.send().await {
            Ok(answer) => answer,
            Err(error)
                if code_is(
                    &error,
                    &[
                        "InvalidLaunchTemplateId.NotFound",
                        "InvalidLaunchTemplateName.NotFoundException",
                        "InvalidLaunchTemplateId.Malformed",
                    ],
                ) =>
            {
                return Ok(None);
            }
            Err(error) => return Err(fleet_error("DescribeLaunchTemplates", name_or_id, &error)),
        };
        Ok(answer.launch_templates().first().and_then(template_view))
    }

    async fn templates(&self) -> Result<Vec<TemplateView>, FleetError> {
        let mut templates = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let page = self
                .ec2
                .describe_launch_templates()
                .set_next_token(next.take())
                .send()
                .await
                .map_err(|e| fleet_error("DescribeLaunchTemplates", "all", &e))?;
            templates.extend(page.launch_templates().iter().filter_map(template_view));
            match page.next_token() {
                Some(token) if !token.is_empty() => next = Some(token.to_string()),
                _ => return Ok(templates),
            }
        }
    }

    async fn versions(&self, template_id: &str) -> Result<Vec<VersionView>, FleetError> {
        let mut versions = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let page = self
                .ec2
                .describe_launch_template_versions()
                .launch_template_id(template_id)
                .set_next_token(next.take())
                .send()
                .await
                .map_err(|e| fleet_error("DescribeLaunchTemplateVersions", template_id, &e))?;
            for version in page.launch_template_versions() {
                if let Some(number) = version.version_number() {
                    versions.push(VersionView {
                        number,
                        image_id: version
                            .launch_template_data()
                            .and_then(|d| d.image_id())
                            .map(str::to_string),
                    });
                }
            }
            match page.next_token() {
                Some(token) if !token.is_empty() => next = Some(token.to_string()),
                _ => return Ok(versions),
            }
        }
    }

    async fn tag_template(
        &self,
        template_id: &str,
        tags: &[(String, String)],
    ) -> Result<(), FleetError> {
        self.ec2
            .create_tags()
            .resources(template_id)
            .set_tags(Some(ec2_tags(tags)))
            .send()
            .await
            .map_err(|e| fleet_error("CreateTags", template_id, &e))?;
        Ok(())
    }

    async fn image(&self, image_id: &str) -> Result<Option<ImageView>, FleetError> {
        match self.ec2.describe_images().image_ids(image_id).send().await {
            Ok(answer) => Ok(answer.images().first().and_then(image_view)),
            Err(error)
                if code_is(
                    &error,
                    &["InvalidAMIID.NotFound", "InvalidAMIID.Unavailable"],
                ) =>
            {
                Ok(None)
            }
            Err(error) => Err(fleet_error("DescribeImages", image_id, &error)),
        }
    }

    async fn image_named(&self, name: &str) -> Result<Option<ImageView>, FleetError> {
        let answer = self
            .ec2
            .describe_images()
            .owners("self")
            .filters(Filter::builder().name("name").values(name).build())
            .send()
            .await
            .map_err(|e| fleet_error("DescribeImages", name, &e))?;
        Ok(answer.images().first().and_then(image_view))
    }

    async fn snapshots(&self, snapshot_ids: &[String]) -> Result<Vec<SnapshotView>, FleetError> {
        if snapshot_ids.is_empty() {
            return Ok(Vec::new());
        }
        let answer = self
            .ec2
            .describe_snapshots()
            .set_snapshot_ids(Some(snapshot_ids.to_vec()))
            .send()
            .await
            .map_err(|e| fleet_error("DescribeSnapshots", &snapshot_ids.join(","), &e))?;
        Ok(answer
            .snapshots()
            .iter()
            .filter_map(|s| {
                Some(SnapshotView {
                    id: s.snapshot_id()?.to_string(),
                    state: s.state().map_or("unknown", |v| v.as_str()).to_string(),
                    progress: s.progress().map(str::to_string),
                })
            })
            .collect())
    }

    async fn create_image(&self, request: &CreateImage) -> Result<String, FleetError> {
        let answer = self
            .ec2
            .create_image()
            .instance_id(&request.instance_id)
            .name(&request.name)
            .description(&request.description)
            .no_reboot(request.no_reboot)
            // The snapshots carry the tags too: prune may delete only what the pipeline made.
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Image)
                    .set_tags(Some(ec2_tags(&request.tags)))
                    .build(),
            )
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Snapshot)
                    .set_tags(Some(ec2_tags(&request.tags)))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| fleet_error("CreateImage", &request.instance_id, &e))?;
        answer
            .image_id()
            .map(str::to_string)
            .ok_or_else(|| FleetError {
                operation: "CreateImage",
                subject: request.instance_id.clone(),
                message: "no image id in the answer".into(),
                transient: true,
                code: None,
            })
    }

    async fn create_version(
        &self,
        template_id: &str,
        source_version: i64,
        image_id: &str,
        client_token: &str,
        description: &str,
    ) -> Result<i64, FleetError> {
        let answer = self
            .ec2
            .create_launch_template_version()
            .launch_template_id(template_id)
            .source_version(source_version.to_string())
            .launch_template_data(
                RequestLaunchTemplateData::builder()
                    .image_id(image_id)
                    .build(),
            )
            .client_token(client_token)
            .version_description(description)
            .send()
            .await
            .map_err(|e| fleet_error("CreateLaunchTemplateVersion", template_id, &e))?;
        answer
            .launch_template_version()
            .and_then(|v| v.version_number())
            .ok_or_else(|| FleetError {
                operation: "CreateLaunchTemplateVersion",
                subject: template_id.to_string(),
                message: "no version number in the answer".into(),
                transient: true,
                code: None,
            })
    }

    async fn set_default_version(&self, template_id: &str, version: i64) -> Result<(), FleetError> {
        self.ec2
            .modify_launch_template()
            .launch_template_id(template_id)
            .default_version(version.to_string())
            .send()
            .await
            .map_err(|e| fleet_error("ModifyLaunchTemplate", template_id, &e))?;
        Ok(())
    }

    async fn put_parameter(&self, name: &str, image_id: &str) -> Result<(), FleetError> {
        self.ssm
            .put_parameter()
            .name(name)
            .value(image_id)
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .data_type("aws:ec2:image")
            .overwrite(true)
            .send()
            .await
            .map_err(|e| fleet_error("PutParameter", name, &e))?;
        Ok(())
    }

    async fn groups_of_template(
        &self,
        template: &TemplateView,
    ) -> Result<Vec<(String, Option<String>)>, FleetError> {
        let mut users = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let page = self
                .autoscaling
                .describe_auto_scaling_groups()
                .set_next_token(next.take())
                .send()
                .await
                .map_err(|e| fleet_error("DescribeAutoScalingGroups", &template.id, &e))?;
            for group in page.auto_scaling_groups() {
                let specs = [
                    group.launch_template(),
                    group
                        .mixed_instances_policy()
                        .and_then(|m| m.launch_template())
                        .and_then(|l| l.launch_template_specification()),
                ];
                let spec = specs.into_iter().flatten().find(|spec| {
                    spec.launch_template_id() == Some(template.id.as_str())
                        || spec.launch_template_name() == Some(template.name.as_str())
                });
                if let (Some(spec), Some(name)) = (spec, group.auto_scaling_group_name()) {
                    users.push((name.to_string(), spec.version().map(str::to_string)));
                }
            }
            match page.next_token() {
                Some(token) if !token.is_empty() => next = Some(token.to_string()),
                _ => return Ok(users),
            }
        }
    }

    async fn pinned_versions(&self, template: &TemplateView) -> Result<BTreeSet<i64>, FleetError> {
        let groups = self.groups_of_template(template).await?;
        let mut pinned: BTreeSet<i64> = groups
            .iter()
            .filter_map(|(_, version)| version.as_deref()?.parse().ok())
            .collect();
        let users: Vec<String> = groups.into_iter().map(|(name, _)| name).collect();
        // A refresh can roll a group to a version the group does not name yet.
        for group in users {
            let answer = self
                .autoscaling
                .describe_instance_refreshes()
                .auto_scaling_group_name(&group)
                .send()
                .await
                .map_err(|e| fleet_error("DescribeInstanceRefreshes", &group, &e))?;
            for refresh in answer.instance_refreshes() {
                let unfinished = refresh
                    .status()
                    .is_some_and(|s| UNFINISHED_REFRESH.contains(&s.as_str()));
                if !unfinished {
                    continue;
                }
                let desired = refresh.desired_configuration();
                let specs = [
                    desired.and_then(|d| d.launch_template()),
                    desired
                        .and_then(|d| d.mixed_instances_policy())
                        .and_then(|m| m.launch_template())
                        .and_then(|l| l.launch_template_specification()),
                ];
                for spec in specs.into_iter().flatten() {
                    pinned.extend(pin(Some(spec), template));
                }
            }
        }
        Ok(pinned)
    }

    async fn delete_versions(
        &self,
        template_id: &str,
        versions: &[i64],
    ) -> Result<Vec<(i64, String)>, FleetError> {
        let mut refused = Vec::new();
        // DeleteLaunchTemplateVersions takes up to 200 versions per call.
        for batch in versions.chunks(200) {
            let answer = self
                .ec2
                .delete_launch_template_versions()
                .launch_template_id(template_id)
                .set_versions(Some(batch.iter().map(i64::to_string).collect()))
                .send()
                .await
                .map_err(|e| fleet_error("DeleteLaunchTemplateVersions", template_id, &e))?;
            for item in answer.unsuccessfully_deleted_launch_template_versions() {
                if let Some(number) = item.version_number() {
                    let why = item
                        .response_error()
                        .map(|e| {
                            format!(
                                "{}: {}",
                                e.code().map_or("error", |c| c.as_str()),
                                e.message().unwrap_or_default()
                            )
                        })
                        .unwrap_or_default();
                    refused.push((number, why));
                }
            }
        }
        Ok(refused)
    }

    async fn launch_configuration_images(&self) -> Result<BTreeSet<String>, FleetError> {
        let mut images = BTreeSet::new();
        let mut next: Option<String> = None;
        loop {
            let page = self
                .autoscaling
                .describe_launch_configurations()
                .set_next_token(next.take())
                .send()
                .await
                .map_err(|e| fleet_error("DescribeLaunchConfigurations", "all", &e))?;
            images.extend(
                page.launch_configurations()
                    .iter()
                    .filter_map(|c| c.image_id())
                    .map(str::to_string),
            );
            match page.next_token() {
                Some(token) if !token.is_empty() => next = Some(token.to_string()),
                _ => return Ok(images),
            }
        }
    }

    async fn latest_refresh(&self, group: &str) -> Result<Option<RefreshView>, FleetError> {
        let answer = self
            .autoscaling
            .describe_instance_refreshes()
            .auto_scaling_group_name(group)
            .max_records(1)
            .send()
            .await
            .map_err(|e| fleet_error("DescribeInstanceRefreshes", group, &e))?;
        Ok(answer.instance_refreshes().first().and_then(|r| {
            Some(RefreshView {
                id: r.instance_refresh_id()?.to_string(),
                status: r.status().map_or("unknown", |s| s.as_str()).to_string(),
                percent: r.percentage_complete(),
                reason: r.status_reason().map(str::to_string),
                started_at: r
                    .start_time()
                    .and_then(|t| OffsetDateTime::from_unix_timestamp(t.secs()).ok()),
            })
        }))
    }

    async fn start_refresh(
        &self,
        group: &str,
        roll: &Roll,
        desired: Option<(&str, i64)>,
    ) -> Result<String, FleetError> {
        use aws_sdk_autoscaling::types::{
            DesiredConfiguration, LaunchTemplateSpecification, RefreshPreferences,
        };
        let mut preferences = RefreshPreferences::builder()
            .min_healthy_percentage(i32::from(roll.min_healthy_percentage))
            .instance_warmup(i32::try_from(roll.instance_warmup_secs).unwrap_or(i32::MAX))
            .skip_matching(true)
            // Rollback needs a desired configuration that is not an alias.
            .auto_rollback(desired.is_some());
        for checkpoint in &roll.checkpoints {
            preferences = preferences.checkpoint_percentages(i32::from(*checkpoint));
        }
        let mut call = self
            .autoscaling
            .start_instance_refresh()
            .auto_scaling_group_name(group)
            .preferences(preferences.build());
        if let Some((template_id, version)) = desired {
            call = call.desired_configuration(
                DesiredConfiguration::builder()
                    .launch_template(
                        LaunchTemplateSpecification::builder()
                            .launch_template_id(template_id)
                            .version(version.to_string())
                            .build(),
                    )
                    .build(),
            );
        }
        let answer = call
            .send()
            .await
            .map_err(|e| fleet_error("StartInstanceRefresh", group, &e))?;
        Ok(answer.instance_refresh_id().unwrap_or_default().to_string())
    }

    async fn group(&self, name: &str) -> Result<Option<GroupTemplate>, FleetError> {
        let answer = self
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .map_err(|e| fleet_error("DescribeAutoScalingGroups", name, &e))?;
        Ok(answer.auto_scaling_groups().first().map(|group| {
            let spec = group.launch_template().or_else(|| {
                group
                    .mixed_instances_policy()
                    .and_then(|m| m.launch_template())
                    .and_then(|l| l.launch_template_specification())
            });
            GroupTemplate {
                tags: crate::fleet::group_tags(group.tags()),
                template_id: spec
                    .and_then(|s| s.launch_template_id())
                    .map(str::to_string),
                template_name: spec
                    .and_then(|s| s.launch_template_name())
                    .map(str::to_string),
                version: spec.and_then(|s| s.version()).map(str::to_string),
            }
        }))
    }

    async fn use_template_version(
        &self,
        group: &str,
        template_id: &str,
        version: &str,
    ) -> Result<(), FleetError> {
        self.autoscaling
            .update_auto_scaling_group()
            .auto_scaling_group_name(group)
            .launch_template(
                aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                    .launch_template_id(template_id)
                    .version(version)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| fleet_error("UpdateAutoScalingGroup", group, &e))?;
        Ok(())
    }

    // Already gone is done: another run of the same pipeline may have pruned it first.
    async fn deregister_image(&self, image_id: &str) -> Result<(), FleetError> {
        match self.ec2.deregister_image().image_id(image_id).send().await {
            Ok(_) => Ok(()),
            Err(e) if code_is(&e, &["InvalidAMIID.NotFound", "InvalidAMIID.Unavailable"]) => Ok(()),
            Err(e) => Err(fleet_error("DeregisterImage", image_id, &e)),
        }
    }

    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), FleetError> {
        match self
            .ec2
            .delete_snapshot()
            .snapshot_id(snapshot_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if code_is(&e, &["InvalidSnapshot.NotFound"]) => Ok(()),
            Err(e) => Err(fleet_error("DeleteSnapshot", snapshot_id, &e)),
        }
    }
}
