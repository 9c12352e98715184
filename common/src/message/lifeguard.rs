//! lifeguard's own messages on the queue: agents' progress reports and commands. Both travel in
//! the EventBridge envelope shape so one EventBridge rule or one `SendMessage` can carry them.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::fields::{Object, optional_str, optional_str_list};
use super::{Ignored, Message, ParseError};

pub const AGENT_SOURCE: &str = "lifeguard.agent";
pub const COMMAND_SOURCE: &str = "lifeguard.command";

/// Where an agent is in a drain or a launch; the event's `detail-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportPhase {
    /// The lifecycle action is confirmed (or none is expected) and the drain begins.
    DrainStarted,
    /// The agent is alive and draining: sent on the agent's own cadence
    /// ([`AgentReport::report_interval_secs`]), whatever the hook's heartbeat timeout.
    DrainProgress,
    /// The agent has just recorded a lifecycle heartbeat.
    DrainHeartbeat,
    /// The drain ended and the lifecycle action was completed (or none waited).
    DrainFinished,
    /// The drain ended but something failed: the archive, or the completion
    /// ([`AgentReport::completion`] says which).
    DrainFailed,
    /// The agent is alive and running readiness checks on a new instance (its cadence).
    LaunchProgress,
    LaunchReady,
    LaunchFailed,
}

impl ReportPhase {
    const ALL: [ReportPhase; 8] = [
        ReportPhase::DrainStarted,
        ReportPhase::DrainProgress,
        ReportPhase::DrainHeartbeat,
        ReportPhase::DrainFinished,
        ReportPhase::DrainFailed,
        ReportPhase::LaunchProgress,
        ReportPhase::LaunchReady,
        ReportPhase::LaunchFailed,
    ];

    pub fn detail_type(self) -> &'static str {
        match self {
            ReportPhase::DrainStarted => "Drain Started",
            ReportPhase::DrainProgress => "Drain Progress",
            ReportPhase::DrainHeartbeat => "Drain Heartbeat",
            ReportPhase::DrainFinished => "Drain Finished",
            ReportPhase::DrainFailed => "Drain Failed",
            ReportPhase::LaunchProgress => "Launch Progress",
            ReportPhase::LaunchReady => "Launch Ready",
            ReportPhase::LaunchFailed => "Launch Failed",
        }
    }

    /// snake_case name, e.g. `drain_finished`.
    pub fn name(self) -> &'static str {
        match self {
            ReportPhase::DrainStarted => "drain_started",
            ReportPhase::DrainProgress => "drain_progress",
            ReportPhase::DrainHeartbeat => "drain_heartbeat",
            ReportPhase::DrainFinished => "drain_finished",
            ReportPhase::DrainFailed => "drain_failed",
            ReportPhase::LaunchProgress => "launch_progress",
            ReportPhase::LaunchReady => "launch_ready",
            ReportPhase::LaunchFailed => "launch_failed",
        }
    }

    /// Whether the report ends the agent's part (no more reports follow).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ReportPhase::DrainFinished
                | ReportPhase::DrainFailed
                | ReportPhase::LaunchReady
                | ReportPhase::LaunchFailed
        )
    }

    /// Whether the report is about a launch (as opposed to a drain).
    pub fn is_launch(self) -> bool {
        matches!(
            self,
            ReportPhase::LaunchProgress | ReportPhase::LaunchReady | ReportPhase::LaunchFailed
        )
    }

    pub fn from_detail_type(detail_type: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|phase| phase.detail_type() == detail_type)
    }

    /// The phase named by [`ReportPhase::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|phase| phase.name() == name)
    }
}

/// How a drain step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    Succeeded,
    Failed,
    TimedOut,
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepReport {
    pub name: String,
    pub outcome: StepOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub duration_ms: u64,
}

/// The archive a drain uploaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveSummary {
    pub bucket: String,
    pub key: String,
    pub bytes: u64,
    /// Hex SHA-256 of the whole object.
    pub sha256: String,
    #[serde(default)]
    pub files: u64,
    #[serde(default)]
    pub skipped_files: u64,
    /// Hex SHA-256 of the archive's `MANIFEST.json`, the same bytes as the object
    /// `<key>.manifest.json` stored beside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_sha256: Option<String>,
}

/// An agent's report. Unknown fields are tolerated so agents and controllers of different
/// versions can share a queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentReport {
    #[serde(skip, default = "default_phase")]
    pub phase: ReportPhase,
    pub instance_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asg: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Why the drain runs: `scale_in`, `spot_interruption`, `rebalance`, `maintenance`, `launch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Increases with every report of one drain, so a reordered delivery can be recognised.
    #[serde(default)]
    pub seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveSummary>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepReport>,
    /// The lifecycle result the agent sent or will send: `CONTINUE` or `ABANDON`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the agent is doing: `steps:NAME`, `archive`, `completing`, `checks`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// The agent's promise: its next report comes within this many seconds, until a final one.
    /// The controller takes the agent for dead only once several promised reports are missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_interval_secs: Option<u64>,
    /// How the agent's `CompleteLifecycleAction` ended, in final reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion: Option<CompletionReport>,
    /// The last lifecycle heartbeat the agent recorded (RFC 3339), when it recorded one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_heartbeat_at: Option<String>,
}

/// How an agent's completion of its lifecycle action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompletionReport {
    /// `CompleteLifecycleAction` succeeded.
    Completed,
    /// Auto Scaling said no action waits: completed already, timed out, or never created.
    NoActiveAction,
    /// The call failed for good (access denied, throttled past the deadline, ...): the action
    /// still waits, and `error` says why.
    Failed,
    /// The drain expected a lifecycle action but found no hook to complete.
    NoHook,
    /// The drain has no lifecycle action (spot, rebalance, maintenance).
    NotNeeded,
}

impl CompletionReport {
    /// Whether the action is known not to wait any more because of the agent or before it.
    pub fn action_done(self) -> bool {
        matches!(
            self,
            CompletionReport::Completed | CompletionReport::NoActiveAction
        )
    }
}

/// Placeholder while deserializing; the real phase comes from the `detail-type`.
fn default_phase() -> ReportPhase {
    ReportPhase::DrainHeartbeat
}

impl AgentReport {
    /// A report with only its phase and instance; the rest is filled in by the caller.
    pub fn new(phase: ReportPhase, instance_id: &str) -> AgentReport {
        AgentReport {
            phase,
            instance_id: instance_id.to_string(),
            asg: None,
            hook: None,
            token: None,
            reason: None,
            seq: 0,
            archive: None,
            steps: Vec::new(),
            result: None,
            error: None,
            stage: None,
            report_interval_secs: None,
            completion: None,
            lifecycle_heartbeat_at: None,
        }
    }

    /// The whole queue message: an EventBridge-shaped event with this report as its detail.
    pub fn to_event(&self, id: &str, time: &str, region: &str, account: &str) -> Value {
        json!({
            "version": "0",
            "id": id,
            "detail-type": self.phase.detail_type(),
            "source": AGENT_SOURCE,
            "account": account,
            "time": time,
            "region": region,
            "resources": [],
            "detail": self,
        })
    }
}

pub(crate) fn parse_report(detail_type: &str, detail: &Object) -> Result<Message, ParseError> {
    let Some(phase) = ReportPhase::from_detail_type(detail_type) else {
        return Ok(Message::Ignored(Ignored {
            reason: format!("agent report `{detail_type}` is not known to this version"),
            source: Some(AGENT_SOURCE.to_string()),
            detail_type: Some(detail_type.to_string()),
        }));
    };
    let mut report: AgentReport = serde_json::from_value(Value::Object(detail.clone()))
        .map_err(|e| ParseError::new("detail", e.to_string()))?;
    if report.instance_id.trim().is_empty() {
        return Err(ParseError::new("detail.instance_id", "empty"));
    }
    report.phase = phase;
    Ok(Message::AgentReport(report))
}

/// The commands the controller runs; the event's `detail-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandName {
    /// Terminate chosen instances through the hook and report on their drains.
    Drill,
    /// Replace named instances without the scaling policies reacting.
    Swap,
    /// Bake or adopt a new image and move launch templates onto it.
    RefreshImage,
    /// Rebuild the drain watch from AWS now.
    Reconcile,
    /// A delayed message the controller sent itself to look at a drain again.
    CheckDrain,
}

impl CommandName {
    const ALL: [CommandName; 5] = [
        CommandName::Drill,
        CommandName::Swap,
        CommandName::RefreshImage,
        CommandName::Reconcile,
        CommandName::CheckDrain,
    ];

    pub fn detail_type(self) -> &'static str {
        match self {
            CommandName::Drill => "Drill",
            CommandName::Swap => "Swap",
            CommandName::RefreshImage => "Refresh Image",
            CommandName::Reconcile => "Reconcile",
            CommandName::CheckDrain => "Check Drain",
        }
    }

    /// snake_case name, e.g. `refresh_image`.
    pub fn name(self) -> &'static str {
        match self {
            CommandName::Drill => "drill",
            CommandName::Swap => "swap",
            CommandName::RefreshImage => "refresh_image",
            CommandName::Reconcile => "reconcile",
            CommandName::CheckDrain => "check_drain",
        }
    }
}

/// A command. Its parameters stay as sent; each handler reads what it needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub name: CommandName,
    pub asg: Option<String>,
    pub instance_ids: Vec<String>,
    pub params: Object,
}

pub(crate) fn parse_command(detail_type: &str, detail: &Object) -> Result<Message, ParseError> {
    let Some(name) = CommandName::ALL
        .into_iter()
        .find(|name| name.detail_type() == detail_type)
    else {
        let known: Vec<&str> = CommandName::ALL.iter().map(|n| n.detail_type()).collect();
        return Ok(Message::Ignored(Ignored {
            reason: format!(
                "unknown command `{detail_type}` (known: {})",
                known.join(", ")
            ),
            source: Some(COMMAND_SOURCE.to_string()),
            detail_type: Some(detail_type.to_string()),
        }));
    };
    Ok(Message::Command(Command {
        name,
        asg: optional_str(detail, "detail", "asg")?,
        instance_ids: optional_str_list(detail, "detail", "instance_ids")?,
        params: detail.clone(),
    }))
}
