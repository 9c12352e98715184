//! Bodies the agent reads from the instance metadata service (IMDSv2). A 404 from IMDS means
//! "nothing announced" and never reaches these parsers; a body that does not parse is an error,
//! so the agent never acts on a guess.

use serde::Deserialize;

use super::{ParseError, RebalanceRecommendation, SpotAction, SpotInterruption};

/// `meta-data/autoscaling/target-lifecycle-state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetLifecycleState {
    InService,
    /// The group has decided to terminate the instance (a terminate action may not exist yet).
    Terminated,
    Detached,
    Standby,
    /// `Warmed:Stopped`, `Warmed:Running`, `Warmed:Hibernated` or `Warmed:Terminated`.
    Warmed(String),
}

impl TargetLifecycleState {
    pub fn as_str(&self) -> &str {
        match self {
            TargetLifecycleState::InService => "InService",
            TargetLifecycleState::Terminated => "Terminated",
            TargetLifecycleState::Detached => "Detached",
            TargetLifecycleState::Standby => "Standby",
            TargetLifecycleState::Warmed(state) => state,
        }
    }
}

const LIFECYCLE_STATE_PATH: &str = "autoscaling/target-lifecycle-state";

pub fn parse_target_lifecycle_state(body: &str) -> Result<TargetLifecycleState, ParseError> {
    let state = body.trim();
    match state {
        "InService" => Ok(TargetLifecycleState::InService),
        "Terminated" => Ok(TargetLifecycleState::Terminated),
        "Detached" => Ok(TargetLifecycleState::Detached),
        "Standby" => Ok(TargetLifecycleState::Standby),
        warmed
            if warmed.starts_with("Warmed:")
                && warmed.len() <= 32
                && warmed[7..].chars().all(|c| c.is_ascii_alphabetic())
                && warmed.len() > 7 =>
        {
            Ok(TargetLifecycleState::Warmed(warmed.to_string()))
        }
        other => Err(ParseError::new(
            LIFECYCLE_STATE_PATH,
            format!("unknown lifecycle state {}", quoted_prefix(other)),
        )),
    }
}

#[derive(Deserialize)]
struct InstanceActionBody {
    action: String,
    time: String,
}

/// `meta-data/spot/instance-action`: `{"action": "terminate", "time": "..."}`.
pub fn parse_spot_instance_action(body: &str) -> Result<SpotInterruption, ParseError> {
    let location = "spot/instance-action";
    let parsed: InstanceActionBody =
        serde_json::from_str(body.trim()).map_err(|e| ParseError::new(location, e.to_string()))?;
    let action = SpotAction::parse(&parsed.action);
    if let SpotAction::Other(other) = &action {
        return Err(ParseError::new(
            format!("{location}.action"),
            format!("expected terminate, stop or hibernate, found {other:?}"),
        ));
    }
    check_timestamp(&format!("{location}.time"), &parsed.time)?;
    Ok(SpotInterruption {
        instance_id: None,
        action: Some(action),
        time: Some(parsed.time),
    })
}

/// `meta-data/spot/termination-time`: a bare timestamp.
pub fn parse_spot_termination_time(body: &str) -> Result<String, ParseError> {
    let time = body.trim();
    check_timestamp("spot/termination-time", time)?;
    Ok(time.to_string())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RebalanceBody {
    notice_time: String,
}

/// `meta-data/events/recommendations/rebalance`: `{"noticeTime": "..."}`.
pub fn parse_rebalance_recommendation(body: &str) -> Result<RebalanceRecommendation, ParseError> {
    let location = "events/recommendations/rebalance";
    let parsed: RebalanceBody =
        serde_json::from_str(body.trim()).map_err(|e| ParseError::new(location, e.to_string()))?;
    check_timestamp(&format!("{location}.noticeTime"), &parsed.notice_time)?;
    Ok(RebalanceRecommendation {
        instance_id: None,
        time: Some(parsed.notice_time),
    })
}

/// One entry of `meta-data/events/maintenance/scheduled`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MaintenanceEvent {
    /// `instance-reboot`, `system-reboot`, `system-maintenance`, `instance-retirement`, `instance-stop`.
    pub code: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub event_id: String,
    #[serde(default)]
    pub not_before: String,
    #[serde(default)]
    pub not_after: String,
    /// `active`, `completed` or `canceled`; only active events matter.
    #[serde(default)]
    pub state: String,
}

/// `meta-data/events/maintenance/scheduled`: a JSON array, `[]` when nothing is scheduled.
pub fn parse_maintenance_events(body: &str) -> Result<Vec<MaintenanceEvent>, ParseError> {
    let trimmed = body.trim();
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(trimmed)
        .map_err(|e| ParseError::new("events/maintenance/scheduled", e.to_string()))
}

/// Accepts `YYYY-MM-DDTHH:MM:SS[.fff]Z`, the form IMDS uses, so garbage is never read as a time.
fn check_timestamp(location: &str, value: &str) -> Result<(), ParseError> {
    let bytes = value.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        bytes
            .get(range)
            .is_some_and(|part| part.iter().all(u8::is_ascii_digit))
    };
    let shape_ok = bytes.len() >= 20
        && digits(0..4)
        && bytes[4] == b'-'
        && digits(5..7)
        && bytes[7] == b'-'
        && digits(8..10)
        && bytes[10] == b'T'
        && digits(11..13)
        && bytes[13] == b':'
        && digits(14..16)
        && bytes[16] == b':'
        && digits(17..19)
        && bytes.last() == Some(&b'Z')
        && (bytes.len() == 20
            || (bytes[19] == b'.' && bytes.len() > 21 && digits(20..bytes.len() - 1)));
    if shape_ok {
        Ok(())
    } else {
        Err(ParseError::new(
            location,
            format!("expected a UTC timestamp, found {}", quoted_prefix(value)),
        ))
    }
}

/// Garbage can be long: show only its start in errors.
fn quoted_prefix(value: &str) -> String {
    const LIMIT: usize = 40;
    match value.char_indices().nth(LIMIT) {
        Some((cut, _)) => format!("{:?}…", &value[..cut]),
        None => format!("{value:?}"),
    }
}
