//! [`Fleet`] over the Auto Scaling and EC2 SDK clients.

use std::collections::HashMap;

use aws_sdk_autoscaling::error::DisplayErrorContext;
use aws_sdk_ec2::types::{Filter, Tag};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use lifeguard_common::aws::is_transient;
use std::sync::Arc;

use lifeguard_common::lifecycle::AwsAutoScaling;

use super::coalesce::Coalescer;
use crate::pace::{AUTOSCALING, EC2_READS, EC2_WRITES, PacedAutoScaling, Pacer};
use lifeguard_common::message::Transition;

use super::{
    ArchiveCommand, ArchiveState, AutoScaling, DESCRIBE_BATCH, Fleet, FleetError, GroupView,
    InstanceState, MarkedInstance,
};
use crate::marks::{self, Marks};

/// The tag Auto Scaling puts on every instance of a group.
const GROUP_NAME_TAG: &str = "aws:autoscaling:groupName";
/// How long a call about one instance waits for others to join it: short beside any wait of
/// a drain, long enough for a burst of events handled at once.
const COALESCE_WINDOW: std::time::Duration = std::time::Duration::from_millis(50);
/// `DescribeTags` takes up to 200 values per filter.
const TAG_FILTER_BATCH: usize = 200;

pub struct AwsFleet {
    autoscaling: aws_sdk_autoscaling::Client,
    ec2: aws_sdk_ec2::Client,
    ssm: aws_sdk_ssm::Client,
    lifecycle: PacedAutoScaling<AwsAutoScaling>,
    pacer: Arc<Pacer>,
    state_reads: Coalescer<(), HashMap<String, InstanceState>>,
    mark_reads: Coalescer<(), HashMap<String, Marks>>,
    mark_writes: Coalescer<Vec<(&'static str, String)>, ()>,
    /// The SSM command document agentless archives run through.
    archive_document: String,
}

impl AwsFleet {
    pub fn new(sdk: &aws_config::SdkConfig, archive_document: &str) -> Self {
        Self::paced(sdk, archive_document, Arc::new(Pacer::unpaced()))
    }

    /// Waits for a token of `bucket`, for a call made beside the fleet's own.
    pub async fn pace(&self, bucket: &'static str) {
        self.pacer.pace(bucket).await;
    }

    /// Terminates an instance through its group, so the terminate hooks hold it while it
    /// drains (a drill's and a swap's way out), paced on Auto Scaling's bucket.
    pub async fn terminate_in_group(
        &self,
        instance_id: &str,
        decrement: bool,
    ) -> Result<(), FleetError> {
        self.pacer.pace(AUTOSCALING).await;
        self.autoscaling
            .terminate_instance_in_auto_scaling_group()
            .instance_id(instance_id)
            .should_decrement_desired_capacity(decrement)
            .send()
            .await
            .map_err(|e| fleet_error("TerminateInstanceInAutoScalingGroup", instance_id, &e))?;
        Ok(())
    }

    /// Every Auto Scaling and EC2 call waits for a token of its bucket in `pacer`.
    pub fn paced(sdk: &aws_config::SdkConfig, archive_document: &str, pacer: Arc<Pacer>) -> Self {
        let autoscaling = aws_sdk_autoscaling::Client::new(sdk);
        AwsFleet {
            lifecycle: PacedAutoScaling {
                inner: AwsAutoScaling::new(autoscaling.clone()),
                pacer: pacer.clone(),
            },
            pacer,
            state_reads: Coalescer::new(COALESCE_WINDOW, DESCRIBE_BATCH),
            mark_reads: Coalescer::new(COALESCE_WINDOW, TAG_FILTER_BATCH),
            mark_writes: Coalescer::new(COALESCE_WINDOW, 1000),
            autoscaling,
            ec2: aws_sdk_ec2::Client::new(sdk),
            ssm: aws_sdk_ssm::Client::new(sdk),
            archive_document: archive_document.to_string(),
        }
    }

    async fn describe_states(
        &self,
        instance_ids: &[String],
    ) -> Result<HashMap<String, InstanceState>, FleetError> {
        let mut states = HashMap::new();
        for chunk in instance_ids.chunks(DESCRIBE_BATCH) {
            self.pacer.pace(AUTOSCALING).await;
            let answer = self
                .autoscaling
                .describe_auto_scaling_instances()
                .set_instance_ids(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| {
                    fleet_error("DescribeAutoScalingInstances", &ids_subject(chunk), &e)
                })?;
            for instance in answer.auto_scaling_instances() {
                if let Some(id) = instance.instance_id() {
                    states.insert(
                        id.to_string(),
                        InstanceState {
                            asg: instance
                                .auto_scaling_group_name()
                                .unwrap_or_default()
                                .to_string(),
                            lifecycle_state: instance
                                .lifecycle_state()
                                .unwrap_or_default()
                                .to_string(),
                        },
                    );
                }
            }
        }
        Ok(states)
    }

    async fn describe_marks(
        &self,
        instance_ids: &[String],
    ) -> Result<HashMap<String, Marks>, FleetError> {
        let mut tags: HashMap<String, HashMap<String, String>> = HashMap::new();
        for chunk in instance_ids.chunks(TAG_FILTER_BATCH) {
            let mut next: Option<String> = None;
            loop {
                self.pacer.pace(EC2_READS).await;
                let page = self
                    .ec2
                    .describe_tags()
                    .filters(
                        Filter::builder()
                            .name("resource-id")
                            .set_values(Some(chunk.to_vec()))
                            .build(),
                    )
                    .filters(
                        Filter::builder()
                            .name("key")
                            .set_values(Some(marks::ALL.iter().map(|k| k.to_string()).collect()))
                            .build(),
                    )
                    .set_next_token(next.take())
                    .send()
                    .await
                    .map_err(|e| fleet_error("DescribeTags", &ids_subject(chunk), &e))?;
                for tag in page.tags() {
                    if let (Some(id), Some(key), Some(value)) =
                        (tag.resource_id(), tag.key(), tag.value())
                    {
                        tags.entry(id.to_string())
                            .or_default()
                            .insert(key.to_string(), value.to_string());
                    }
                }
                next = page.next_token().map(str::to_string);
                if next.is_none() {
                    break;
                }
            }
        }
        Ok(tags
            .into_iter()
            .map(|(id, tags)| (id, Marks::from_tags(&tags)))
            .collect())
    }

    /// `CreateTags` takes up to 1000 resources a call.
    async fn tag_instances(
        &self,
        instance_ids: &[String],
        tags: &[(&'static str, String)],
    ) -> Result<(), FleetError> {
        for chunk in instance_ids.chunks(1000) {
            let mut call = self.ec2.create_tags().set_resources(Some(chunk.to_vec()));
            for (key, value) in tags {
                call = call.tags(Tag::builder().key(*key).value(value).build());
            }
            self.pacer.pace(EC2_WRITES).await;
            call.send()
                .await
                .map_err(|e| fleet_error("CreateTags", &ids_subject(chunk), &e))?;
        }
        Ok(())
    }

    async fn describe_groups(
        &self,
        tag: Option<&str>,
        names: &[String],
    ) -> Result<Vec<GroupView>, FleetError> {
        let subject = match tag {
            Some(tag) => format!("tagged {tag}"),
            None => names.join(","),
        };
        let mut views = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let mut call = self
                .autoscaling
                .describe_auto_scaling_groups()
                .set_next_token(next.take());
            if let Some(tag) = tag {
                call = call.filters(
                    aws_sdk_autoscaling::types::Filter::builder()
                        .name("tag-key")
                        .values(tag)
                        .build(),
                );
            }
            for name in names {
                call = call.auto_scaling_group_names(name);
            }
            self.pacer.pace(AUTOSCALING).await;
            let page = call
                .send()
                .await
                .map_err(|e| fleet_error("DescribeAutoScalingGroups", &subject, &e))?;
            for group in page.auto_scaling_groups() {
                let Some(name) = group.auto_scaling_group_name() else {
                    continue;
                };
                let tags = group_tags(group.tags());
                let waiting = group
                    .instances()
                    .iter()
                    .filter_map(|i| {
                        let transition = match i.lifecycle_state()?.as_str() {
                            "Pending:Wait" => Transition::Launching,
                            "Terminating:Wait" => Transition::Terminating,
                            _ => return None,
                        };
                        Some((i.instance_id()?.to_string(), transition))
                    })
                    .collect();
                views.push(GroupView {
                    name: name.to_string(),
                    tags,
                    hooks: Vec::new(),
                    waiting,
                });
            }
            next = page.next_token().map(str::to_string);
            if next.is_none() {
                break;
            }
        }
        for view in &mut views {
            view.hooks = self
                .lifecycle
                .hooks(&view.name)
                .await
                .map_err(|e| FleetError {
                    operation: "DescribeLifecycleHooks",
                    subject: view.name.clone(),
                    transient: e.is_transient(),
                    code: None,
                    message: e.to_string(),
                })?;
        }
        Ok(views)
    }
}

/// A group's tags as a map (Auto Scaling always answers a value; an empty one stays empty).
pub(crate) fn group_tags(
    tags: &[aws_sdk_autoscaling::types::TagDescription],
) -> HashMap<String, String> {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
        .collect()
}

/// A failed SDK call as a [`FleetError`]: the operation, what it was about, AWS's code and
/// whether trying again may help.
pub(crate) fn fleet_error<E>(
    operation: &'static str,
    subject: &str,
    error: &SdkError<E, HttpResponse>,
) -> FleetError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    FleetError {
        operation,
        subject: subject.to_string(),
        transient: is_transient(error),
        code: error
            .as_service_error()
            .and_then(|e| e.code())
            .map(str::to_string),
        message: DisplayErrorContext(error).to_string(),
    }
}

fn ids_subject(ids: &[String]) -> String {
    match ids {
        [one] => one.clone(),
        [first, ..] => format!("{first} and {} more", ids.len() - 1),
        [] => "no instances".into(),
    }
}

impl Fleet for AwsFleet {
    type Lifecycle = PacedAutoScaling<AwsAutoScaling>;

    fn lifecycle(&self) -> &PacedAutoScaling<AwsAutoScaling> {
        &self.lifecycle
    }
    async fn groups(&self, tag: &str, names: &[String]) -> Result<Vec<GroupView>, FleetError> {
        let mut views = if tag.trim().is_empty() {
            Vec::new()
        } else {
            self.describe_groups(Some(tag), &[]).await?
        };
        let missing: Vec<String> = names
            .iter()
            .filter(|name| !views.iter().any(|v| &v.name == *name))
            .cloned()
            .collect();
        // DescribeAutoScalingGroups takes up to 100 names a call.
        for chunk in missing.chunks(100) {
            views.extend(self.describe_groups(None, chunk).await?);
        }
        Ok(views)
    }

    async fn group(&self, name: &str) -> Result<Option<GroupView>, FleetError> {
        Ok(self
            .describe_groups(None, &[name.to_string()])
            .await?
            .into_iter()
            .find(|g| g.name == name))
    }

    async fn states(
        &self,
        instance_ids: &[String],
    ) -> Result<HashMap<String, InstanceState>, FleetError> {
        let [id] = instance_ids else {
            return self.describe_states(instance_ids).await;
        };
        let answer = self
            .state_reads
            .call((), id.clone(), |ids| async move {
                self.describe_states(&ids).await
            })
            .await;
        let states = answer.as_ref().as_ref().map_err(Clone::clone)?;
        Ok(states
            .get(id)
            .map(|s| (id.clone(), s.clone()))
            .into_iter()
            .collect())
    }

    async fn marks(&self, instance_ids: &[String]) -> Result<HashMap<String, Marks>, FleetError> {
        let [id] = instance_ids else {
            return self.describe_marks(instance_ids).await;
        };
        let answer = self
            .mark_reads
            .call((), id.clone(), |ids| async move {
                self.describe_marks(&ids).await
            })
            .await;
        let marks = answer.as_ref().as_ref().map_err(Clone::clone)?;
        Ok(marks
            .get(id)
            .map(|m| (id.clone(), m.clone()))
            .into_iter()
            .collect())
    }

    /// Marks of one value written at once on many instances become one `CreateTags`.
    async fn set_marks(
        &self,
        instance_id: &str,
        tags: &[(&'static str, String)],
    ) -> Result<(), FleetError> {
        let answer = self
            .mark_writes
            .call(tags.to_vec(), instance_id.to_string(), |ids| async move {
                self.tag_instances(&ids, tags).await
            })
            .await;
        answer.as_ref().clone()
    }

    async fn start_archive(
        &self,
        instance_id: &str,
        archive: &ArchiveCommand,
    ) -> Result<String, FleetError> {
        // Values travel as parameters of lifeguard's own document, never spliced into a script:
        // the document hands them to the shell as environment variables, and SSM refuses any
        // that does not match its allowedPattern. Checked here too, so a bad one is never sent.
        archive.check().map_err(|message| FleetError {
            operation: "SendCommand",
            subject: instance_id.to_string(),
            message,
            transient: false,
            code: None,
        })?;
        let timeout = archive.timeout.as_secs().clamp(30, 7200);
        let sent = self
            .ssm
            .send_command()
            .document_name(&self.archive_document)
            .instance_ids(instance_id)
            .comment("lifeguard agentless archive")
            .timeout_seconds(i32::try_from(timeout).unwrap_or(i32::MAX))
            .parameters("bucket", vec![archive.bucket.clone()])
            .parameters("directory", vec![archive.directory.clone()])
            .parameters("name", vec![archive.name.clone()])
            .parameters("paths", vec![archive.paths.join(" ")])
            .parameters("executionTimeout", vec![timeout.to_string()])
            .send()
            .await
            .map_err(|e| fleet_error("SendCommand", instance_id, &e))?;
        sent.command()
            .and_then(|c| c.command_id())
            .map(str::to_string)
            .ok_or_else(|| FleetError {
                operation: "SendCommand",
                subject: instance_id.to_string(),
                message: "no command id in the answer".into(),
                transient: true,
                code: None,
            })
    }

    async fn archive_state(
        &self,
        instance_id: &str,
        command_id: &str,
    ) -> Result<ArchiveState, FleetError> {
        let answer = self
            .ssm
            .get_command_invocation()
            .command_id(command_id)
            .instance_id(instance_id)
            .send()
            .await;
        let invocation = match answer {
            Ok(invocation) => invocation,
            // Right after SendCommand the invocation may not exist yet.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_invocation_does_not_exist()) =>
            {
                return Ok(ArchiveState::Running);
            }
            Err(e) => return Err(fleet_error("GetCommandInvocation", instance_id, &e)),
        };
        let status = invocation
            .status()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default();
        Ok(match status.as_str() {
            "Pending" | "InProgress" | "Delayed" | "" => ArchiveState::Running,
            _ => ArchiveState::Ended {
                succeeded: status == "Success",
                status,
            },
        })
    }

    async fn marked_instances(
        &self,
        group: Option<&str>,
    ) -> Result<Vec<MarkedInstance>, FleetError> {
        let mut found = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let mut call = self
                .ec2
                .describe_instances()
                .filters(
                    Filter::builder()
                        .name("tag-key")
                        .values(marks::ACTION)
                        .build(),
                )
                .set_next_token(next.take());
            if let Some(group) = group {
                call = call.filters(
                    Filter::builder()
                        .name(format!("tag:{GROUP_NAME_TAG}"))
                        .values(group)
                        .build(),
                );
            }
            self.pacer.pace(EC2_READS).await;
            let page = call
                .send()
                .await
                .map_err(|e| fleet_error("DescribeInstances", group.unwrap_or("all groups"), &e))?;
            for instance in page.reservations().iter().flat_map(|r| r.instances()) {
                let Some(id) = instance.instance_id() else {
                    continue;
                };
                let tags: HashMap<String, String> = instance
                    .tags()
                    .iter()
                    .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
                    .collect();
                found.push(MarkedInstance {
                    instance_id: id.to_string(),
                    asg: tags.get(GROUP_NAME_TAG).cloned(),
                    ec2_state: instance
                        .state()
                        .and_then(|s| s.name())
                        .map(|n| n.as_str().to_string())
                        .unwrap_or_default(),
                    marks: Marks::from_tags(&tags),
                });
            }
            next = page.next_token().map(str::to_string);
            if next.is_none() {
                break;
            }
        }
        Ok(found)
    }
}
