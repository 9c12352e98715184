//! A drain as the state file keeps it: one typed record of what has been done, with the
//! transitions that record each outcome. The decisions over it are in [`super::machine`].

use std::time::Duration;

use lifeguard_common::lifecycle::HookInfo;
use lifeguard_common::message::{
    ArchiveSummary, CompletionReport, LifecycleResult, ReportPhase, SpotAction, StepReport,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::machine::first_step_left;
use crate::watch::Trigger;

/// Where a drain stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// IMDS says the instance is leaving, and a lifecycle action may come: Auto Scaling keeps
    /// the instance in plain `Terminating` while its load balancers deregister it (300 s by
    /// default, up to an hour). The drain waits for `Terminating:Wait`, so requests the load
    /// balancer still sends are served, and the drain's clock starts when the action does.
    AwaitingAction,
    /// The drain runs: steps, archive, completion, final report. What is done is in the record.
    Draining,
    /// The final report is sent; nothing is left.
    Done,
}

/// Why the drain runs, as the state file keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TriggerRecord {
    ScaleIn,
    WarmPool,
    SpotInterruption {
        action: String,
        #[serde(default, with = "time::serde::rfc3339::option")]
        at: Option<OffsetDateTime>,
    },
    Rebalance {
        noticed: Option<String>,
    },
    Maintenance {
        code: String,
        #[serde(default, with = "time::serde::rfc3339::option")]
        not_before: Option<OffsetDateTime>,
        #[serde(default)]
        event_id: String,
    },
    Manual,
}

impl From<&Trigger> for TriggerRecord {
    fn from(trigger: &Trigger) -> Self {
        match trigger {
            Trigger::Terminate => TriggerRecord::ScaleIn,
            Trigger::WarmPool => TriggerRecord::WarmPool,
            Trigger::Spot { action, at } => TriggerRecord::SpotInterruption {
                action: action.as_str().to_string(),
                at: *at,
            },
            Trigger::Rebalance { noticed } => TriggerRecord::Rebalance {
                noticed: noticed.clone(),
            },
            Trigger::Maintenance {
                code,
                not_before,
                event_id,
            } => TriggerRecord::Maintenance {
                code: code.clone(),
                not_before: *not_before,
                event_id: event_id.clone(),
            },
            Trigger::Manual => TriggerRecord::Manual,
        }
    }
}

impl From<&TriggerRecord> for Trigger {
    fn from(record: &TriggerRecord) -> Self {
        match record {
            TriggerRecord::ScaleIn => Trigger::Terminate,
            TriggerRecord::WarmPool => Trigger::WarmPool,
            TriggerRecord::SpotInterruption { action, at } => Trigger::Spot {
                action: SpotAction::parse(action),
                at: *at,
            },
            TriggerRecord::Rebalance { noticed } => Trigger::Rebalance {
                noticed: noticed.clone(),
            },
            TriggerRecord::Maintenance {
                code,
                not_before,
                event_id,
            } => Trigger::Maintenance {
                code: code.clone(),
                not_before: *not_before,
                event_id: event_id.clone(),
            },
            TriggerRecord::Manual => Trigger::Manual,
        }
    }
}

/// The hook whose action holds the instance, as far as the drain needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookRecord {
    pub name: String,
    pub heartbeat_timeout_secs: u64,
    pub global_timeout_secs: u64,
    pub default_result: String,
}

impl HookRecord {
    pub fn heartbeat_timeout(&self) -> Duration {
        Duration::from_secs(self.heartbeat_timeout_secs)
    }

    pub fn global_timeout(&self) -> Duration {
        Duration::from_secs(self.global_timeout_secs)
    }
}

impl From<&HookInfo> for HookRecord {
    fn from(hook: &HookInfo) -> Self {
        HookRecord {
            name: hook.name.clone(),
            heartbeat_timeout_secs: hook.heartbeat_timeout.as_secs(),
            global_timeout_secs: hook.global_timeout.as_secs(),
            default_result: hook.default_result.clone(),
        }
    }
}

/// One drain, everything a restarted agent needs to resume it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainRecord {
    pub instance_id: String,
    pub trigger: TriggerRecord,
    /// The kernel's boot id when the drain started: a record from an earlier boot belongs to
    /// an event that has passed (the instance was stopped and started again).
    #[serde(default)]
    pub boot_id: Option<String>,
    /// When IMDS first said the instance was leaving (names the archive, so a resumed drain
    /// uploads to the same key).
    #[serde(with = "time::serde::rfc3339")]
    pub noticed_at: OffsetDateTime,
    /// When the drain itself began: the lifecycle action seen waiting, or at once when none is
    /// expected. The drain's deadlines count from here.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub drain_started_at: Option<OffsetDateTime>,
    /// Whether Auto Scaling was seen holding the instance in the wait state.
    #[serde(default)]
    pub action_confirmed: bool,
    /// The drain must be over by then (a spot interruption's time).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub must_end_by: Option<OffsetDateTime>,
    pub asg: Option<String>,
    pub hook: Option<HookRecord>,
    pub stage: Stage,
    /// The last report's sequence number.
    pub seq: u64,
    /// Steps that have run, in order.
    pub steps: Vec<StepReport>,
    /// A step marked `abandon` failed: the action is completed with ABANDON.
    pub abandon: bool,
    /// Archive attempts begun (counted before each begins, so a kill mid-archive counts).
    #[serde(default)]
    pub archive_attempts: u32,
    /// The key an upload was started for; a restarted agent aborts what it left there.
    pub upload_key: Option<String>,
    /// The uploaded archive.
    pub archive: Option<ArchiveSummary>,
    /// Why the archive could not be made or uploaded, if it could not.
    pub archive_error: Option<String>,
    /// How the lifecycle completion ended, once it has.
    pub completion: Option<CompletionReport>,
    /// Why the completion failed, if it did.
    #[serde(default)]
    pub completion_error: Option<String>,
    /// The last lifecycle heartbeat recorded.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_heartbeat_at: Option<OffsetDateTime>,
}

impl DrainRecord {
    /// A new drain for `trigger`, noticed at `now`. A trigger that may come with a lifecycle
    /// action first awaits it; any other drains at once.
    pub fn new(
        instance_id: &str,
        trigger: &Trigger,
        boot_id: Option<String>,
        now: OffsetDateTime,
    ) -> Self {
        let awaits = trigger.has_lifecycle_action();
        let must_end_by = match trigger {
            Trigger::Spot { at, .. } => *at,
            _ => None,
        };
        DrainRecord {
            instance_id: instance_id.to_string(),
            trigger: TriggerRecord::from(trigger),
            boot_id,
            noticed_at: now,
            drain_started_at: (!awaits).then_some(now),
            action_confirmed: false,
            must_end_by,
            asg: None,
            hook: None,
            stage: if awaits {
                Stage::AwaitingAction
            } else {
                Stage::Draining
            },
            seq: 0,
            steps: Vec::new(),
            abandon: false,
            archive_attempts: 0,
            upload_key: None,
            archive: None,
            archive_error: None,
            completion: None,
            completion_error: None,
            last_heartbeat_at: None,
        }
    }

    pub fn trigger(&self) -> Trigger {
        Trigger::from(&self.trigger)
    }

    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// The result the drain completes the action with.
    pub fn result(&self) -> LifecycleResult {
        if self.abandon {
            LifecycleResult::Abandon
        } else {
            LifecycleResult::Continue
        }
    }

    /// The final report's phase: `Drain Failed` when the archive or the completion failed.
    pub fn final_phase(&self) -> ReportPhase {
        if self.archive_error.is_some() || self.completion == Some(CompletionReport::Failed) {
            ReportPhase::DrainFailed
        } else {
            ReportPhase::DrainFinished
        }
    }

    /// The drain begins now: steps, archive, completion.
    pub(super) fn begin(&mut self, now: OffsetDateTime) {
        self.stage = Stage::Draining;
        self.drain_started_at = Some(now);
    }

    /// A spot interruption came while the drain awaited its action: it cannot wait any more.
    pub fn interrupted(&mut self, at: Option<OffsetDateTime>, now: OffsetDateTime) {
        self.must_end_by = match (self.must_end_by, at) {
            (Some(known), Some(at)) => Some(known.min(at)),
            (known, at) => known.or(at).or(Some(now)),
        };
        if self.stage == Stage::AwaitingAction {
            self.begin(now);
        }
    }

    pub fn step_done(&mut self, report: StepReport, abandon_on_failure: bool) {
        let failed = matches!(
            report.outcome,
            lifeguard_common::message::StepOutcome::Failed
                | lifeguard_common::message::StepOutcome::TimedOut
        );
        if failed && abandon_on_failure {
            self.abandon = true;
        }
        self.steps.push(report);
    }

    /// An archive attempt begins (saved before it does, so a kill mid-archive is counted).
    pub fn archive_started(&mut self, key: &str) {
        self.archive_attempts = self.archive_attempts.saturating_add(1);
        self.upload_key = Some(key.to_string());
    }

    pub fn archive_finished(&mut self, outcome: Result<ArchiveSummary, String>) {
        match outcome {
            Ok(summary) => self.archive = Some(summary),
            Err(error) => self.archive_error = Some(error),
        }
    }

    pub fn archive_given_up(&mut self) {
        self.archive_error = Some(format!(
            "archive given up after {} attempts, each interrupted before it ended \
             (the agent was stopped or killed, e.g. out of memory)",
            self.archive_attempts
        ));
    }

    pub fn completed(&mut self, completion: CompletionReport, error: Option<String>) {
        self.completion = Some(completion);
        self.completion_error = error;
    }

    pub fn reported(&mut self) {
        self.stage = Stage::Done;
    }

    /// What the drain is doing, for progress reports: `awaiting_action`, `step:NAME`, ...
    pub fn stage_label(&self, steps: &[String]) -> String {
        match self.stage {
            Stage::AwaitingAction => "awaiting_action".to_string(),
            Stage::Done => "done".to_string(),
            Stage::Draining => match first_step_left(self, steps) {
                Some(index) => format!("step:{}", steps[index]),
                None if self.archive.is_none() && self.archive_error.is_none() => {
                    "archive".to_string()
                }
                None if self.completion.is_none() => "completing".to_string(),
                None => "reporting".to_string(),
            },
        }
    }
}
