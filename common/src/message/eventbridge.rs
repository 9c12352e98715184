//! EventBridge events, dispatched on `source` and `detail-type`.

use super::cloudtrail::{self, Wrapper};
use super::fields::{
    Object, optional_str, optional_str_list, optional_u64, required_object, required_str,
};
use super::lifeguard::{self, AGENT_SOURCE, COMMAND_SOURCE};
use super::{
    AmiState, AmiStateChange, Ignored, InstanceRefreshEvent, InstanceStateChange, LifecycleAction,
    LifecycleEndpoint, Message, ParseError, RebalanceRecommendation, RefreshStage, RegionalImage,
    ScheduledChange, SpotAction, SpotInterruption, Transition,
};

const CLOUDTRAIL_DETAIL_TYPE: &str = "AWS API Call via CloudTrail";
const REFRESH_PREFIX: &str = "EC2 Auto Scaling Instance Refresh ";

struct Envelope<'a> {
    source: &'a str,
    detail_type: &'a str,
    detail: &'a Object,
    account: Option<String>,
    region: Option<String>,
    time: Option<String>,
}

impl Envelope<'_> {
    fn ignored(&self, reason: impl Into<String>) -> Message {
        Message::Ignored(Ignored {
            reason: reason.into(),
            source: Some(self.source.to_string()),
            detail_type: Some(self.detail_type.to_string()),
        })
    }
}

pub(crate) fn parse_event(object: &Object) -> Result<Message, ParseError> {
    let envelope = Envelope {
        source: required_str(object, "", "source")?,
        detail_type: required_str(object, "", "detail-type")?,
        detail: required_object(object, "", "detail")?,
        account: optional_str(object, "", "account")?,
        region: optional_str(object, "", "region")?,
        time: optional_str(object, "", "time")?,
    };
    let resources = optional_str_list(object, "", "resources")?;
    match envelope.source {
        "aws.autoscaling" => parse_auto_scaling(&envelope),
        "aws.ec2" => parse_ec2(&envelope),
        "aws.health" => parse_health(&envelope, &resources),
        AGENT_SOURCE => lifeguard::parse_report(envelope.detail_type, envelope.detail),
        COMMAND_SOURCE => Ok(lifeguard::parse_command(
            envelope.detail_type,
            envelope.detail,
        )?),
        other => Ok(envelope.ignored(format!("events from source `{other}` are not acted on"))),
    }
}

fn parse_auto_scaling(envelope: &Envelope<'_>) -> Result<Message, ParseError> {
    let detail = envelope.detail;
    match envelope.detail_type {
        "EC2 Instance-launch Lifecycle Action" => lifecycle_action(envelope, Transition::Launching),
        "EC2 Instance-terminate Lifecycle Action" => {
            lifecycle_action(envelope, Transition::Terminating)
        }
        CLOUDTRAIL_DETAIL_TYPE => cloudtrail_call(envelope),
        refresh if refresh.starts_with(REFRESH_PREFIX) => {
            Ok(Message::InstanceRefresh(InstanceRefreshEvent {
                stage: RefreshStage::parse(&refresh[REFRESH_PREFIX.len()..]),
                refresh_id: required_str(detail, "detail", "InstanceRefreshId")?.to_string(),
                asg: required_str(detail, "detail", "AutoScalingGroupName")?.to_string(),
                checkpoint_percentage: optional_u64(detail, "detail", "CheckpointPercentage")?
                    .map(|p| u32::try_from(p).unwrap_or(u32::MAX)),
                checkpoint_delay_secs: optional_u64(detail, "detail", "CheckpointDelay")?,
            }))
        }
        other => Ok(envelope.ignored(format!("Auto Scaling event `{other}` is not acted on"))),
    }
}

fn lifecycle_action(
    envelope: &Envelope<'_>,
    transition: Transition,
) -> Result<Message, ParseError> {
    let detail = envelope.detail;
    let sent = required_str(detail, "detail", "LifecycleTransition")?;
    if Transition::from_aws_str(sent) != Some(transition) {
        return Err(ParseError::new(
            "detail.LifecycleTransition",
            format!(
                "{sent:?} does not match detail-type `{}`",
                envelope.detail_type
            ),
        ));
    }
    Ok(Message::LifecycleAction(LifecycleAction {
        transition,
        instance_id: required_str(detail, "detail", "EC2InstanceId")?.to_string(),
        asg: required_str(detail, "detail", "AutoScalingGroupName")?.to_string(),
        hook: required_str(detail, "detail", "LifecycleHookName")?.to_string(),
        token: required_str(detail, "detail", "LifecycleActionToken")?.to_string(),
        metadata: optional_str(detail, "detail", "NotificationMetadata")?,
        origin: optional_str(detail, "detail", "Origin")?.map(|v| LifecycleEndpoint::parse(&v)),
        destination: optional_str(detail, "detail", "Destination")?
            .map(|v| LifecycleEndpoint::parse(&v)),
        account: envelope.account.clone(),
        time: envelope.time.clone(),
    }))
}

fn cloudtrail_call(envelope: &Envelope<'_>) -> Result<Message, ParseError> {
    cloudtrail::parse_record(
        envelope.detail,
        Some(Wrapper {
            location: "detail",
            account: envelope.account.clone(),
        }),
    )
}

fn parse_ec2(envelope: &Envelope<'_>) -> Result<Message, ParseError> {
    let detail = envelope.detail;
    match envelope.detail_type {
        "EC2 Spot Instance Interruption Warning" => {
            Ok(Message::SpotInterruption(SpotInterruption {
                instance_id: Some(required_str(detail, "detail", "instance-id")?.to_string()),
                action: optional_str(detail, "detail", "instance-action")?
                    .map(|a| SpotAction::parse(&a)),
                time: envelope.time.clone(),
            }))
        }
        "EC2 Instance Rebalance Recommendation" => {
            Ok(Message::RebalanceRecommendation(RebalanceRecommendation {
                instance_id: Some(required_str(detail, "detail", "instance-id")?.to_string()),
                time: envelope.time.clone(),
            }))
        }
        "EC2 Instance State-change Notification" => {
            Ok(Message::InstanceStateChange(InstanceStateChange {
                instance_id: required_str(detail, "detail", "instance-id")?.to_string(),
                state: required_str(detail, "detail", "state")?.to_string(),
            }))
        }
        "EC2 AMI State Change" => Ok(Message::AmiStateChange(AmiStateChange {
            images: vec![RegionalImage {
                image_id: required_str(detail, "detail", "ImageId")?.to_string(),
                region: envelope.region.clone(),
            }],
            state: AmiState::parse(required_str(detail, "detail", "State")?),
            error_message: optional_str(detail, "detail", "ErrorMessage")?,
            image_builder_arn: None,
        })),
        CLOUDTRAIL_DETAIL_TYPE => cloudtrail_call(envelope),
        other => Ok(envelope.ignored(format!("EC2 event `{other}` is not acted on"))),
    }
}

/// AWS Health events: only EC2 scheduled changes matter (retirement, reboot, maintenance).
fn parse_health(envelope: &Envelope<'_>, resources: &[String]) -> Result<Message, ParseError> {
    let detail = envelope.detail;
    if envelope.detail_type != "AWS Health Event" {
        return Ok(envelope.ignored(format!(
            "AWS Health event `{}` is not acted on",
            envelope.detail_type
        )));
    }
    let service = required_str(detail, "detail", "service")?;
    let category = optional_str(detail, "detail", "eventTypeCategory")?.unwrap_or_default();
    if service != "EC2" || category != "scheduledChange" {
        return Ok(envelope.ignored(format!(
            "AWS Health {service} event of category `{category}` is not an EC2 scheduled change"
        )));
    }
    let mut instance_ids: Vec<String> = Vec::new();
    if let Some(entities) = detail.get("affectedEntities").and_then(|v| v.as_array()) {
        for (index, entity) in entities.iter().enumerate() {
            let location = format!("detail.affectedEntities[{index}]");
            let Some(entity) = entity.as_object() else {
                return Err(ParseError::new(location, "expected an object"));
            };
            if let Some(value) = optional_str(entity, &location, "entityValue")? {
                instance_ids.push(value);
            }
        }
    }
    if instance_ids.is_empty() {
        instance_ids = resources
            .iter()
            .filter_map(|r| r.rsplit('/').next())
            .filter(|id| id.starts_with("i-"))
            .map(str::to_string)
            .collect();
    }
    Ok(Message::ScheduledChange(ScheduledChange {
        event_type_code: required_str(detail, "detail", "eventTypeCode")?.to_string(),
        event_arn: optional_str(detail, "detail", "eventArn")?,
        instance_ids,
        start_time: optional_str(detail, "detail", "startTime")?,
        end_time: optional_str(detail, "detail", "endTime")?,
    }))
}
