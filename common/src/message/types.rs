//! What lifeguard understands of a message, independent of the envelope it came in.

use std::fmt;

use super::lifeguard::{AgentReport, Command};

/// One understood message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// An instance is held in `Pending:Wait` or `Terminating:Wait` by a lifecycle hook.
    LifecycleAction(LifecycleAction),
    /// `autoscaling:TEST_NOTIFICATION`, sent when a hook with a notification target is created.
    TestNotification(TestNotification),
    /// EC2 will interrupt a spot instance in about two minutes.
    SpotInterruption(SpotInterruption),
    /// EC2 recommends replacing a spot instance that is at elevated risk of interruption.
    RebalanceRecommendation(RebalanceRecommendation),
    /// AWS Health has scheduled a change (retirement, reboot, maintenance) for instances.
    ScheduledChange(ScheduledChange),
    /// `EC2 Instance State-change Notification`.
    InstanceStateChange(InstanceStateChange),
    /// An instance refresh started, reached a checkpoint, or ended.
    InstanceRefresh(InstanceRefreshEvent),
    /// An AMI changed state (`EC2 AMI State Change`, or an Image Builder notification).
    AmiStateChange(AmiStateChange),
    /// CloudTrail saw a successful EC2 `CreateImage`.
    CreateImageCall(CreateImageCall),
    /// CloudTrail saw a successful `CreateAutoScalingGroup`.
    CreateAutoScalingGroupCall(CreateAutoScalingGroupCall),
    /// A progress report from a lifeguard agent.
    AgentReport(AgentReport),
    /// An operator or scheduled command, or a delayed message the controller sent itself.
    Command(Command),
    /// Well-formed, but nothing lifeguard acts on.
    Ignored(Ignored),
}

impl Message {
    /// The short name `explain` prints and metrics use as a label.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::LifecycleAction(action) => match action.transition {
                Transition::Launching => "lifecycle_launch",
                Transition::Terminating => "lifecycle_terminate",
            },
            Message::TestNotification(_) => "test_notification",
            Message::SpotInterruption(_) => "spot_interruption",
            Message::RebalanceRecommendation(_) => "rebalance_recommendation",
            Message::ScheduledChange(_) => "scheduled_change",
            Message::InstanceStateChange(_) => "instance_state_change",
            Message::InstanceRefresh(_) => "instance_refresh",
            Message::AmiStateChange(_) => "ami_state_change",
            Message::CreateImageCall(_) => "create_image_call",
            Message::CreateAutoScalingGroupCall(_) => "create_auto_scaling_group_call",
            Message::AgentReport(_) => "agent_report",
            Message::Command(_) => "command",
            Message::Ignored(_) => "ignored",
        }
    }
}

/// The two lifecycle transitions a hook can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// `autoscaling:EC2_INSTANCE_LAUNCHING`
    Launching,
    /// `autoscaling:EC2_INSTANCE_TERMINATING`
    Terminating,
}

impl Transition {
    pub const LAUNCHING: &'static str = "autoscaling:EC2_INSTANCE_LAUNCHING";
    pub const TERMINATING: &'static str = "autoscaling:EC2_INSTANCE_TERMINATING";

    pub fn as_aws_str(self) -> &'static str {
        match self {
            Transition::Launching => Self::LAUNCHING,
            Transition::Terminating => Self::TERMINATING,
        }
    }

    pub fn from_aws_str(value: &str) -> Option<Self> {
        match value {
            Self::LAUNCHING => Some(Transition::Launching),
            Self::TERMINATING => Some(Transition::Terminating),
            _ => None,
        }
    }
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_aws_str())
    }
}

/// Where an instance comes from or goes to in a lifecycle action (`Origin`, `Destination`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LifecycleEndpoint {
    Ec2,
    AutoScalingGroup,
    WarmPool,
    /// A value this version does not know; kept so nothing is lost.
    Other(String),
}

impl LifecycleEndpoint {
    pub fn parse(value: &str) -> Self {
        match value {
            "EC2" => LifecycleEndpoint::Ec2,
            "AutoScalingGroup" => LifecycleEndpoint::AutoScalingGroup,
            "WarmPool" => LifecycleEndpoint::WarmPool,
            other => LifecycleEndpoint::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            LifecycleEndpoint::Ec2 => "EC2",
            LifecycleEndpoint::AutoScalingGroup => "AutoScalingGroup",
            LifecycleEndpoint::WarmPool => "WarmPool",
            LifecycleEndpoint::Other(other) => other,
        }
    }
}

/// A lifecycle action waiting for completion.
#[derive(Debug, Clone, PartialEq)]
pub struct LifecycleAction {
    pub transition: Transition,
    pub instance_id: String,
    pub asg: String,
    pub hook: String,
    pub token: String,
    /// `NotificationMetadata`, present only when set on the hook.
    pub metadata: Option<String>,
    pub origin: Option<LifecycleEndpoint>,
    pub destination: Option<LifecycleEndpoint>,
    pub account: Option<String>,
    /// As sent; may be a documentation placeholder, so not parsed here.
    pub time: Option<String>,
}

impl LifecycleAction {
    /// A terminate action whose destination is a warm pool drains the instance but does not end it.
    pub fn ends_instance(&self) -> bool {
        self.transition == Transition::Terminating
            && self.destination != Some(LifecycleEndpoint::WarmPool)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TestNotification {
    pub asg: String,
    pub asg_arn: Option<String>,
    pub account: Option<String>,
    pub time: Option<String>,
}

/// What EC2 will do to an interrupted spot instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpotAction {
    Terminate,
    Stop,
    Hibernate,
    /// Unknown, or a documentation placeholder; treated as a termination by the agent.
    Other(String),
}

impl SpotAction {
    pub fn parse(value: &str) -> Self {
        match value {
            "terminate" => SpotAction::Terminate,
            "stop" => SpotAction::Stop,
            "hibernate" => SpotAction::Hibernate,
            other => SpotAction::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            SpotAction::Terminate => "terminate",
            SpotAction::Stop => "stop",
            SpotAction::Hibernate => "hibernate",
            SpotAction::Other(other) => other,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SpotInterruption {
    /// Absent in IMDS bodies, which are about the instance that reads them.
    pub instance_id: Option<String>,
    /// Absent in `spot/termination-time`, which only says when.
    pub action: Option<SpotAction>,
    pub time: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RebalanceRecommendation {
    /// Absent in IMDS bodies, which are about the instance that reads them.
    pub instance_id: Option<String>,
    pub time: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledChange {
    pub event_type_code: String,
    pub event_arn: Option<String>,
    pub instance_ids: Vec<String>,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InstanceStateChange {
    pub instance_id: String,
    pub state: String,
}

/// The stage an instance refresh event reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshStage {
    Started,
    CheckpointReached,
    Succeeded,
    Failed,
    Cancelled,
    /// A stage this version does not know (e.g. rollback stages); kept as sent.
    Other(String),
}

impl RefreshStage {
    pub fn parse(suffix: &str) -> Self {
        match suffix {
            "Started" => RefreshStage::Started,
            "Checkpoint Reached" => RefreshStage::CheckpointReached,
            "Succeeded" => RefreshStage::Succeeded,
            "Failed" => RefreshStage::Failed,
            "Cancelled" => RefreshStage::Cancelled,
            other => RefreshStage::Other(other.to_string()),
        }
    }

    /// snake_case name, e.g. `checkpoint_reached`.
    pub fn name(&self) -> String {
        match self {
            RefreshStage::Started => "started".into(),
            RefreshStage::CheckpointReached => "checkpoint_reached".into(),
            RefreshStage::Succeeded => "succeeded".into(),
            RefreshStage::Failed => "failed".into(),
            RefreshStage::Cancelled => "cancelled".into(),
            RefreshStage::Other(other) => other.to_lowercase().replace(' ', "_"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRefreshEvent {
    pub stage: RefreshStage,
    pub refresh_id: String,
    pub asg: String,
    pub checkpoint_percentage: Option<u32>,
    pub checkpoint_delay_secs: Option<u64>,
}

/// AMI states, as the `EC2 AMI State Change` event spells them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AmiState {
    Pending,
    Available,
    Failed,
    Deregistered,
    Other(String),
}

impl AmiState {
    /// Case-insensitive, because Image Builder says `AVAILABLE` where EC2 says `available`.
    pub fn parse(value: &str) -> Self {
        match value.to_ascii_lowercase().as_str() {
            "pending" => AmiState::Pending,
            "available" => AmiState::Available,
            "failed" => AmiState::Failed,
            "deregistered" => AmiState::Deregistered,
            other => AmiState::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            AmiState::Pending => "pending",
            AmiState::Available => "available",
            AmiState::Failed => "failed",
            AmiState::Deregistered => "deregistered",
            AmiState::Other(other) => other,
        }
    }
}

/// An image in one region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionalImage {
    pub image_id: String,
    pub region: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AmiStateChange {
    /// One image for an EC2 event; one per distribution region for an Image Builder image.
    pub images: Vec<RegionalImage>,
    pub state: AmiState,
    pub error_message: Option<String>,
    /// The Image Builder image ARN, when the notification came from Image Builder.
    pub image_builder_arn: Option<String>,
}

/// A resource tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CreateImageCall {
    /// From `responseElements`; absent if CloudTrail recorded none.
    pub image_id: Option<String>,
    pub instance_id: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    /// Tags requested for the image in `tagSpecificationSet`.
    pub tags: Vec<Tag>,
    pub region: Option<String>,
    pub account: Option<String>,
}

/// A launch template as a group names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchTemplateRef {
    pub id: Option<String>,
    pub name: Option<String>,
    pub version: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CreateAutoScalingGroupCall {
    pub asg: String,
    pub launch_template: Option<LaunchTemplateRef>,
    pub launch_configuration: Option<String>,
    pub region: Option<String>,
    pub account: Option<String>,
}

/// A well-formed message lifeguard does not act on.
#[derive(Debug, Clone, PartialEq)]
pub struct Ignored {
    pub reason: String,
    pub source: Option<String>,
    pub detail_type: Option<String>,
}

impl Ignored {
    pub fn because(reason: impl Into<String>) -> Self {
        Ignored {
            reason: reason.into(),
            source: None,
            detail_type: None,
        }
    }
}

/// How a lifecycle action is completed: `CONTINUE` or `ABANDON`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LifecycleResult {
    Continue,
    Abandon,
}

impl LifecycleResult {
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleResult::Continue => "CONTINUE",
            LifecycleResult::Abandon => "ABANDON",
        }
    }
}
