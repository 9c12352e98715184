//! [`DrillApi`] over the Auto Scaling, EC2 and S3 SDK clients.

use std::collections::HashMap;

use super::api::{DrillApi, Look};
use super::plan::{DrillGroup, Member};
use super::verify::{ArchiveCheck, verify_archives};
use crate::fleet::{AwsFleet, DESCRIBE_BATCH, Fleet, FleetError, fleet_error, group_tags};

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
        self.fleet.pace(crate::pace::AUTOSCALING).await;
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
        self.fleet.terminate_in_group(instance_id, decrement).await
    }

    async fn look(
        &self,
        group: &str,
        instance_ids: &[String],
    ) -> Result<HashMap<String, Look>, FleetError> {
        // Past one DescribeAutoScalingInstances call's worth, the group's own description lists
        // every member's state in one call (an instance not in it has left).
        let states: HashMap<String, String> = if instance_ids.len() > DESCRIBE_BATCH {
            self.group(group)
                .await?
                .map(|g| {
                    g.members
                        .into_iter()
                        .map(|m| (m.id, m.lifecycle_state))
                        .collect()
                })
                .unwrap_or_default()
        } else {
            self.fleet
                .states(instance_ids)
                .await?
                .into_iter()
                .map(|(id, s)| (id, s.lifecycle_state))
                .collect()
        };
        let mut marks = self.fleet.marks(instance_ids).await?;
        Ok(instance_ids
            .iter()
            .map(|id| {
                let look = Look {
                    state: states.get(id).cloned(),
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
