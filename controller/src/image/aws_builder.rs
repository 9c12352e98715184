//! [`BuilderApi`] over the EC2 and SSM SDK clients.

use aws_sdk_ec2::types::{
    Filter, LaunchTemplateSpecification, ResourceType, Tag, TagSpecification,
};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use super::aws::AwsImages;
use super::builder::{BuilderApi, BuilderSpec, InstanceView, Invocation, LaunchBuilder};
use super::pipeline::IMAGE_PIPELINE_TAG;
use crate::fleet::{FleetError, fleet_error};

/// States in which a builder still exists (and costs money).
const NOT_TERMINATED: [&str; 4] = ["pending", "running", "stopping", "stopped"];

/// The most of the command's error output kept in the failure reason.
const MAX_DETAIL_CHARS: usize = 160;

fn instance_view(instance: &aws_sdk_ec2::types::Instance) -> Option<InstanceView> {
    Some(InstanceView {
        id: instance.instance_id()?.to_string(),
        state: instance
            .state()
            .and_then(|s| s.name())
            .map_or("unknown", |n| n.as_str())
            .to_string(),
    })
}

fn service_code<E: ProvideErrorMetadata>(
    error: &aws_smithy_runtime_api::client::result::SdkError<
        E,
        aws_smithy_runtime_api::client::orchestrator::HttpResponse,
    >,
) -> Option<&str> {
    error.as_service_error().and_then(|e| e.code())
}

fn no_answer(operation: &'static str, subject: &str, what: &str) -> FleetError {
    FleetError {
        operation,
        subject: subject.to_string(),
        message: format!("no {what} in the answer"),
        transient: true,
        code: None,
    }
}

/// What the failed step said: its exit code and the end of its output (where errors are).
fn failure_detail(invocation: &aws_sdk_ssm::types::CommandInvocation) -> String {
    let failed = invocation.command_plugins().iter().find(|p| {
        p.status()
            .is_some_and(|s| !matches!(s.as_str(), "Success" | "Pending" | "InProgress"))
    });
    let Some(step) = failed else {
        return invocation.status_details().unwrap_or_default().to_string();
    };
    let output = step.output().unwrap_or_default().trim();
    let count = output.chars().count();
    let tail: String = output
        .chars()
        .skip(count.saturating_sub(MAX_DETAIL_CHARS))
        .collect();
    format!(
        "{} exit {}{}",
        step.name().unwrap_or("step"),
        step.response_code(),
        if tail.is_empty() {
            String::new()
        } else {
            format!("; {tail}")
        }
    )
}

impl BuilderApi for AwsImages {
    async fn builder_of(&self, pipeline_id: &str) -> Result<Option<InstanceView>, FleetError> {
        let ec2: &aws_sdk_ec2::Client = &self.ec2;
        let answer = ec2
            .describe_instances()
            .filters(
                Filter::builder()
                    .name(format!("tag:{IMAGE_PIPELINE_TAG}"))
                    .values(pipeline_id)
                    .build(),
            )
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .set_values(Some(NOT_TERMINATED.map(String::from).to_vec()))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| fleet_error("DescribeInstances", pipeline_id, &e))?;
        Ok(answer
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find_map(instance_view))
    }

    async fn instance(&self, instance_id: &str) -> Result<Option<InstanceView>, FleetError> {
        let ec2: &aws_sdk_ec2::Client = &self.ec2;
        match ec2
            .describe_instances()
            .instance_ids(instance_id)
            .send()
            .await
        {
            Ok(answer) => Ok(answer
                .reservations()
                .iter()
                .flat_map(|r| r.instances())
                .find_map(instance_view)),
            Err(e) if service_code(&e) == Some("InvalidInstanceID.NotFound") => Ok(None),
            Err(e) => Err(fleet_error("DescribeInstances", instance_id, &e)),
        }
    }

    async fn launch_builder(&self, request: &LaunchBuilder) -> Result<String, FleetError> {
        let ec2: &aws_sdk_ec2::Client = &self.ec2;
        let tags: Vec<Tag> = request
            .tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        let answer = ec2
            .run_instances()
            .launch_template(
                LaunchTemplateSpecification::builder()
                    .launch_template_id(&request.template_id)
                    .version(request.version.to_string())
                    .build(),
            )
            .set_subnet_id(request.subnet.clone())
            .min_count(1)
            .max_count(1)
            .client_token(&request.client_token)
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .set_tags(Some(tags.clone()))
                    .build(),
            )
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Volume)
                    .set_tags(Some(tags))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| fleet_error("RunInstances", &request.template_id, &e))?;
        answer
            .instances()
            .first()
            .and_then(|i| i.instance_id())
            .map(str::to_string)
            .ok_or_else(|| no_answer("RunInstances", &request.template_id, "instance id"))
    }

    async fn command_with_comment(
        &self,
        instance_id: &str,
        comment: &str,
    ) -> Result<Option<String>, FleetError> {
        let ssm: &aws_sdk_ssm::Client = &self.ssm;
        let answer = ssm
            .list_commands()
            .instance_id(instance_id)
            .send()
            .await
            .map_err(|e| fleet_error("ListCommands", instance_id, &e))?;
        Ok(answer
            .commands()
            .iter()
            .find(|c| c.comment() == Some(comment))
            .and_then(|c| c.command_id())
            .map(str::to_string))
    }

    async fn send_patch(
        &self,
        instance_id: &str,
        spec: &BuilderSpec,
        comment: &str,
    ) -> Result<Option<String>, FleetError> {
        let ssm: &aws_sdk_ssm::Client = &self.ssm;
        let answer = ssm
            .send_command()
            .document_name(&spec.document)
            .instance_ids(instance_id)
            .set_parameters(Some(spec.parameters.clone().into_iter().collect()))
            .comment(comment)
            .send()
            .await;
        match answer {
            Ok(answer) => answer
                .command()
                .and_then(|c| c.command_id())
                .map(|id| Some(id.to_string()))
                .ok_or_else(|| no_answer("SendCommand", instance_id, "command id")),
            // SSM learns of an instance when its agent registers, a little after boot.
            Err(e) if service_code(&e) == Some("InvalidInstanceId") => Ok(None),
            Err(e) => Err(fleet_error("SendCommand", instance_id, &e)),
        }
    }

    async fn invocation(
        &self,
        command_id: &str,
        instance_id: &str,
    ) -> Result<Option<Invocation>, FleetError> {
        let ssm: &aws_sdk_ssm::Client = &self.ssm;
        // Not GetCommandInvocation: for a document of several steps (AWS-RunPatchBaseline has
        // one per platform) it needs the step's name, which depends on the builder's platform.
        let answer = ssm
            .list_command_invocations()
            .command_id(command_id)
            .instance_id(instance_id)
            .details(true)
            .send()
            .await
            .map_err(|e| fleet_error("ListCommandInvocations", command_id, &e))?;
        // Right after SendCommand, SSM may not list the invocation yet.
        let Some(invocation) = answer.command_invocations().first() else {
            return Ok(None);
        };
        let status = invocation.status().map_or("Pending", |s| s.as_str());
        Ok(Some(match status {
            "Pending" | "InProgress" | "Delayed" | "Cancelling" => {
                Invocation::Running(status.to_string())
            }
            "Success" => Invocation::Succeeded,
            other => Invocation::Ended {
                status: other.to_string(),
                detail: failure_detail(invocation),
            },
        }))
    }

    async fn stop_instance(&self, instance_id: &str) -> Result<(), FleetError> {
        let ec2: &aws_sdk_ec2::Client = &self.ec2;
        ec2.stop_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| fleet_error("StopInstances", instance_id, &e))?;
        Ok(())
    }

    async fn terminate_instance(&self, instance_id: &str) -> Result<(), FleetError> {
        let ec2: &aws_sdk_ec2::Client = &self.ec2;
        match ec2
            .terminate_instances()
            .instance_ids(instance_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if service_code(&e) == Some("InvalidInstanceID.NotFound") => Ok(()),
            Err(e) => Err(fleet_error("TerminateInstances", instance_id, &e)),
        }
    }
}
