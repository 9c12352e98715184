//! What lifeguard understood of a message, flattened for people (`lifeguard-controller explain`).

use serde::Serialize;

use super::imds::{self, TargetLifecycleState};
use super::{Format, Message, Parsed};

/// One JSON object per message. Fields a message does not have are left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Explanation {
    pub kind: &'static str,
    pub format: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub instance_ids: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asg: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transition: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub image_ids: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Explanation {
    fn new(kind: &'static str, format: Format) -> Self {
        Explanation {
            kind,
            format: format.as_str(),
            ..Explanation::default()
        }
    }

    pub fn of(parsed: &Parsed) -> Self {
        let mut out = Explanation::new(parsed.message.kind(), parsed.format);
        match &parsed.message {
            Message::LifecycleAction(action) => {
                out.instance_id = Some(action.instance_id.clone());
                out.asg = Some(action.asg.clone());
                out.hook = Some(action.hook.clone());
                out.transition = Some(action.transition.as_aws_str().to_string());
                out.token = Some(action.token.clone());
                out.origin = action.origin.as_ref().map(|o| o.as_str().to_string());
                out.destination = action.destination.as_ref().map(|d| d.as_str().to_string());
                out.time = action.time.clone();
            }
            Message::TestNotification(test) => {
                out.asg = Some(test.asg.clone());
                out.time = test.time.clone();
            }
            Message::SpotInterruption(spot) => {
                out.instance_id = spot.instance_id.clone();
                out.state = spot.action.as_ref().map(|a| a.as_str().to_string());
                out.time = spot.time.clone();
            }
            Message::RebalanceRecommendation(rebalance) => {
                out.instance_id = rebalance.instance_id.clone();
                out.time = rebalance.time.clone();
            }
            Message::ScheduledChange(change) => {
                out.set_instances(&change.instance_ids);
                out.state = Some(change.event_type_code.clone());
                out.time = change.start_time.clone();
            }
            Message::InstanceStateChange(change) => {
                out.instance_id = Some(change.instance_id.clone());
                out.state = Some(change.state.clone());
            }
            Message::InstanceRefresh(refresh) => {
                out.asg = Some(refresh.asg.clone());
                out.refresh_id = Some(refresh.refresh_id.clone());
                out.state = Some(refresh.stage.name());
            }
            Message::AmiStateChange(change) => {
                out.image_id = change.images.first().map(|i| i.image_id.clone());
                if change.images.len() > 1 {
                    out.image_ids = change.images.iter().map(|i| i.image_id.clone()).collect();
                }
                out.state = Some(change.state.as_str().to_string());
                out.reason = change.error_message.clone();
            }
            Message::CreateImageCall(call) => {
                out.image_id = call.image_id.clone();
                out.instance_id = call.instance_id.clone();
            }
            Message::CreateAutoScalingGroupCall(call) => {
                out.asg = Some(call.asg.clone());
            }
            Message::AgentReport(report) => {
                out.instance_id = Some(report.instance_id.clone());
                out.asg = report.asg.clone();
                out.hook = report.hook.clone();
                out.token = report.token.clone();
                out.state = Some(report.phase.name().to_string());
                out.reason = report.error.clone();
            }
            Message::Command(command) => {
                out.command = Some(command.name.name().to_string());
                out.asg = command.asg.clone();
                out.set_instances(&command.instance_ids);
            }
            Message::Ignored(ignored) => {
                out.reason = Some(ignored.reason.clone());
            }
        }
        out
    }

    fn set_instances(&mut self, ids: &[String]) {
        match ids {
            [one] => self.instance_id = Some(one.clone()),
            many => self.instance_ids = many.to_vec(),
        }
    }

    /// Recognises a body read from IMDS (`spot/instance-action`, `spot/termination-time`,
    /// `events/recommendations/rebalance`, `events/maintenance/scheduled`,
    /// `autoscaling/target-lifecycle-state`). `None` if it is none of them.
    pub fn of_imds_body(body: &str) -> Option<Self> {
        if let Ok(spot) = imds::parse_spot_instance_action(body) {
            let mut out = Explanation::new("spot_interruption", Format::Imds);
            out.state = spot.action.map(|a| a.as_str().to_string());
            out.time = spot.time;
            return Some(out);
        }
        if let Ok(time) = imds::parse_spot_termination_time(body) {
            let mut out = Explanation::new("spot_interruption", Format::Imds);
            out.time = Some(time);
            return Some(out);
        }
        if let Ok(rebalance) = imds::parse_rebalance_recommendation(body) {
            let mut out = Explanation::new("rebalance_recommendation", Format::Imds);
            out.time = rebalance.time;
            return Some(out);
        }
        if body.trim_start().starts_with('[')
            && let Ok(events) = imds::parse_maintenance_events(body)
        {
            let mut out = Explanation::new("scheduled_change", Format::Imds);
            let active: Vec<&imds::MaintenanceEvent> = events
                .iter()
                .filter(|e| e.state != "completed" && e.state != "canceled")
                .collect();
            match active.first() {
                Some(first) => {
                    out.state = Some(first.code.clone());
                    out.time = Some(first.not_before.clone()).filter(|t| !t.is_empty());
                }
                None => {
                    out.kind = "ignored";
                    out.reason = Some("no active scheduled maintenance event".to_string());
                }
            }
            return Some(out);
        }
        let state = imds::parse_target_lifecycle_state(body).ok()?;
        let mut out = match state {
            TargetLifecycleState::Terminated => {
                Explanation::new("lifecycle_terminate", Format::Imds)
            }
            _ => {
                let mut ignored = Explanation::new("ignored", Format::Imds);
                ignored.reason = Some(format!(
                    "target lifecycle state {} needs no drain",
                    state.as_str()
                ));
                ignored
            }
        };
        out.state = Some(state.as_str().to_string());
        Some(out)
    }
}
