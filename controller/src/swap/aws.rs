//! [`SwapApi`] over the Auto Scaling, EC2 and Elastic Load Balancing SDK clients.

use aws_sdk_autoscaling::types::Tag;
use aws_sdk_elasticloadbalancingv2::types::TargetDescription;
use lifeguard_common::message::Transition;

use super::api::{Member, SwapApi, SwapGroup, TargetHealth};
use crate::fleet::{AwsFleet, DESCRIBE_BATCH, Fleet, FleetError, fleet_error, group_tags};

pub struct AwsSwap {
    fleet: AwsFleet,
    autoscaling: aws_sdk_autoscaling::Client,
    ec2: aws_sdk_ec2::Client,
    elb: aws_sdk_elasticloadbalancingv2::Client,
}

impl AwsSwap {
    pub fn new(sdk: &aws_config::SdkConfig, fleet: AwsFleet) -> Self {
        AwsSwap {
            fleet,
            autoscaling: aws_sdk_autoscaling::Client::new(sdk),
            ec2: aws_sdk_ec2::Client::new(sdk),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(sdk),
        }
    }
}

impl SwapApi for AwsSwap {
    async fn group(&self, name: &str) -> Result<Option<SwapGroup>, FleetError> {
        let answer = self
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .map_err(|e| fleet_error("DescribeAutoScalingGroups", name, &e))?;
        Ok(answer
            .auto_scaling_groups()
            .iter()
            .find(|g| g.auto_scaling_group_name() == Some(name))
            .map(|g| SwapGroup {
                name: name.to_string(),
                min: g.min_size().unwrap_or(0),
                max: g.max_size().unwrap_or(0),
                desired: g.desired_capacity().unwrap_or(0),
                suspended: g
                    .suspended_processes()
                    .iter()
                    .filter_map(|p| p.process_name().map(str::to_string))
                    .collect(),
                target_groups: g.target_group_arns().to_vec(),
                members: g
                    .instances()
                    .iter()
                    .filter_map(|i| {
                        Some(Member {
                            id: i.instance_id()?.to_string(),
                            lifecycle_state: i.lifecycle_state()?.as_str().to_string(),
                            health: i.health_status().unwrap_or_default().to_string(),
                        })
                    })
                    .collect(),
                tags: group_tags(g.tags()),
            }))
    }

    async fn has_terminate_hook(&self, group: &str) -> Result<bool, FleetError> {
        Ok(self.fleet.group(group).await?.is_some_and(|g| {
            g.hooks
                .iter()
                .any(|h| h.transition == Transition::Terminating)
        }))
    }

    async fn unattachable(&self, ids: &[String]) -> Result<Vec<(String, String)>, FleetError> {
        let mut found = Vec::new();
        if ids.is_empty() {
            return Ok(found);
        }
        for (id, state) in self.fleet.states(ids).await? {
            found.push((id, format!("it is in group {}", state.asg)));
        }
        for chunk in ids.chunks(DESCRIBE_BATCH) {
            let answer = self
                .ec2
                .describe_instances()
                .set_instance_ids(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| fleet_error("DescribeInstances", &chunk.join(","), &e))?;
            let mut seen = Vec::new();
            for instance in answer.reservations().iter().flat_map(|r| r.instances()) {
                let Some(id) = instance.instance_id() else {
                    continue;
                };
                seen.push(id.to_string());
                let state = instance
                    .state()
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_string())
                    .unwrap_or_default();
                if state != "running" {
                    found.push((id.to_string(), format!("it is {state}, not running")));
                }
            }
            for id in chunk.iter().filter(|id| !seen.contains(id)) {
                found.push((id.clone(), "EC2 does not know it".into()));
            }
        }
        found.sort();
        Ok(found)
    }

    async fn write_record(&self, group: &str, tags: &[(String, String)]) -> Result<(), FleetError> {
        let mut call = self.autoscaling.create_or_update_tags();
        for (key, value) in tags {
            call = call.tags(
                Tag::builder()
                    .resource_id(group)
                    .resource_type("auto-scaling-group")
                    .key(key)
                    .value(value)
                    .propagate_at_launch(false)
                    .build(),
            );
        }
        call.send()
            .await
            .map_err(|e| fleet_error("CreateOrUpdateTags", group, &e))?;
        Ok(())
    }

    async fn delete_record(&self, group: &str, keys: &[&str]) -> Result<(), FleetError> {
        let mut call = self.autoscaling.delete_tags();
        for key in keys {
            call = call.tags(
                Tag::builder()
                    .resource_id(group)
                    .resource_type("auto-scaling-group")
                    .key(*key)
                    .build(),
            );
        }
        call.send()
            .await
            .map_err(|e| fleet_error("DeleteTags", group, &e))?;
        Ok(())
    }

    async fn suspend(&self, group: &str, processes: &[String]) -> Result<(), FleetError> {
        self.autoscaling
            .suspend_processes()
            .auto_scaling_group_name(group)
            .set_scaling_processes(Some(processes.to_vec()))
            .send()
            .await
            .map_err(|e| fleet_error("SuspendProcesses", group, &e))?;
        Ok(())
    }

    async fn resume(&self, group: &str, processes: &[String]) -> Result<(), FleetError> {
        self.autoscaling
            .resume_processes()
            .auto_scaling_group_name(group)
            .set_scaling_processes(Some(processes.to_vec()))
            .send()
            .await
            .map_err(|e| fleet_error("ResumeProcesses", group, &e))?;
        Ok(())
    }

    async fn set_sizes(
        &self,
        group: &str,
        min: Option<i32>,
        max: Option<i32>,
        desired: Option<i32>,
    ) -> Result<(), FleetError> {
        let mut call = self
            .autoscaling
            .update_auto_scaling_group()
            .auto_scaling_group_name(group);
        if let Some(min) = min {
            call = call.min_size(min);
        }
        if let Some(max) = max {
            call = call.max_size(max);
        }
        if let Some(desired) = desired {
            call = call.desired_capacity(desired);
        }
        call.send()
            .await
            .map_err(|e| fleet_error("UpdateAutoScalingGroup", group, &e))?;
        Ok(())
    }

    async fn attach(&self, group: &str, ids: &[String]) -> Result<(), FleetError> {
        self.autoscaling
            .attach_instances()
            .auto_scaling_group_name(group)
            .set_instance_ids(Some(ids.to_vec()))
            .send()
            .await
            .map_err(|e| fleet_error("AttachInstances", &ids.join(","), &e))?;
        Ok(())
    }

    async fn detach(&self, group: &str, ids: &[String]) -> Result<(), FleetError> {
        self.autoscaling
            .detach_instances()
            .auto_scaling_group_name(group)
            .set_instance_ids(Some(ids.to_vec()))
            .should_decrement_desired_capacity(true)
            .send()
            .await
            .map_err(|e| fleet_error("DetachInstances", &ids.join(","), &e))?;
        Ok(())
    }

    async fn terminate(&self, instance_id: &str) -> Result<(), FleetError> {
        self.fleet.terminate_in_group(instance_id, true).await
    }

    async fn target_health(
        &self,
        target_groups: &[String],
        ids: &[String],
    ) -> Result<Vec<TargetHealth>, FleetError> {
        let mut found = Vec::new();
        for arn in target_groups {
            let mut call = self.elb.describe_target_health().target_group_arn(arn);
            for id in ids {
                call = call.targets(TargetDescription::builder().id(id).build());
            }
            let answer = call
                .send()
                .await
                .map_err(|e| fleet_error("DescribeTargetHealth", arn, &e))?;
            for description in answer.target_health_descriptions() {
                let Some(id) = description.target().and_then(|t| t.id()) else {
                    continue;
                };
                let health = description.target_health();
                found.push(TargetHealth {
                    target_group: arn.clone(),
                    instance_id: id.to_string(),
                    state: health
                        .and_then(|h| h.state())
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                    reason: health
                        .and_then(|h| h.reason())
                        .map(|r| r.as_str().to_string()),
                });
            }
        }
        Ok(found)
    }
}
