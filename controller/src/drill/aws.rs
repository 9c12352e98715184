//! [`DrillApi`] over the Auto Scaling, EC2 and S3 SDK clients.

use std::collections::HashMap;

use super::api::{DrillApi, Look};
use super::plan::{DrillGroup, Member};
use super::verify::{ArchiveCheck, verify_archives};
use crate::fleet::{AwsFleet, Fleet, FleetError, fleet_error, group_tags};

pub struct AwsDrill {
    fleet: AwsFleet,
    autoscaling: aws_sdk_autoscaling::Client,
    s3: aws_sdk_s3::Client,
}

impl AwsDrill {
    pub fn new(
        sdk: &aws_config::SdkConfig,
        settings: &lifeguard_common::aws::AwsSettings,
        fleet: AwsFleet,
    ) -> Self {
        AwsDrill {
            fleet,
            autoscaling: aws_sdk_autoscaling::Client::new(sdk),
            s3: lifeguard_common::aws::s3_client(sdk, settings),
        }
    }
}

impl DrillApi for AwsDrill {
    async fn group(&self, name: &str) -> Result<Option<DrillGroup>, FleetError> {
        let autoscaling: &aws_sdk_autoscaling::Client = &self.autoscaling;
        let answer = autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .map_err(|e| fleet_error("DescribeAutoScalingGroups", name, &e))?;
        Ok(answer.auto_scaling_groups().first().map(|g| DrillGroup {
            name: g.auto_scaling_group_name().unwrap_or(name).to_string(),
            min_size: g.min_size().unwrap_or(0),
            desired_capacity: g.desired_capacity().unwrap_or(0),
            tags: group_tags(g.tags()),
            members: g
                .instances()
                .iter()
                .filter_map(|i| {
                    Some(Member {
                        id: i.instance_id()?.to_string(),
                        zone: i.availability_zone().unwrap_or_default().to_string(),
                        lifecycle_state: i.lifecycle_state()?.as_str().to_string(),
                    })
                })
                .collect(),
        }))
    }

    async fn terminate(&self, instance_id: &str, decrement: bool) -> Result<(), FleetError> {
        let autoscaling: &aws_sdk_autoscaling::Client = &self.autoscaling;
        autoscaling
            .terminate_instance_in_auto_scaling_group()
            .instance_id(instance_id)
            .should_decrement_desired_capacity(decrement)
            .send()
            .await
            .map_err(|e| fleet_error("TerminateInstanceInAutoScalingGroup", instance_id, &e))?;
        Ok(())
    }

    async fn look(&self, instance_ids: &[String]) -> Result<HashMap<String, Look>, FleetError> {
        let states = self.fleet.states(instance_ids).await?;
        let mut marks = self.fleet.marks(instance_ids).await?;
        Ok(instance_ids
            .iter()
            .map(|id| {
                let look = Look {
                    state: states.get(id).map(|s| s.lifecycle_state.clone()),
                    marks: marks.remove(id),
                };
                (id.clone(), look)
            })
            .collect())
    }

    async fn archives(&self, bucket: &str, prefix: &str) -> Result<Vec<ArchiveCheck>, FleetError> {
        verify_archives(&self.s3, bucket, prefix).await
    }
}
