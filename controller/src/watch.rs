//! The drain watch: what the controller knows of one lifecycle action, and the pure decision of
//! what to do about it now. No I/O here: the service feeds in events, agent reports and the
//! clock, and carries out the decision with conditional checks against AWS (an action is only
//! completed while Auto Scaling still shows it waiting, and completing twice is harmless).
//!
//! The agent comes first: while it reports, the controller only follows. When no report comes
//! within the group's grace period, or the reports stop, the controller takes over: optionally
//! an agentless archive, then the group's fallback result. It keeps the action alive with
//! heartbeats while it waits (if the group's policy says so), and never past the hook's global
//! timeout, after which Auto Scaling applies the hook's default result on its own.

use std::time::Duration;

use lifeguard_common::message::{LifecycleResult, ReportPhase, Transition};
use time::OffsetDateTime;

/// Auto Scaling ends a lifecycle action after 100 heartbeat timeouts or 48 hours, whichever
/// comes first, however many heartbeats it gets.
pub const MAX_GLOBAL_TIMEOUT: Duration = Duration::from_secs(48 * 3600);

/// A group's policy for the actions the controller watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPolicy {
    /// What the controller completes a terminate action with when it takes over.
    pub fallback_result: LifecycleResult,
    /// What it completes a launch action with when the agent never says ready.
    pub launch_fallback_result: LifecycleResult,
    /// Time for the agent's first report, from the start of the action.
    pub agent_grace: Duration,
    /// Time without a report after which a reporting agent is taken for dead.
    pub report_silence: Duration,
    /// Heartbeat on the agent's behalf while waiting for it or archiving without it.
    pub heartbeat_while_waiting: bool,
    /// Archive the logs through SSM Run Command before a fallback completion.
    pub agentless_archive: Option<AgentlessArchive>,
    /// Time allowed for the agentless archive before completing anyway.
    pub agentless_archive_timeout: Duration,
}

/// Where and what an agentless archive takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentlessArchive {
    pub bucket: String,
    /// Paths on the instance, given to `tar`.
    pub paths: Vec<String>,
}

/// What the agent has said about this action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentState {
    /// Nothing yet.
    Silent,
    /// Reports arrive; the last one at `last_at`.
    Reporting { last_at: OffsetDateTime, seq: u64 },
    /// The agent finished and completed the action itself (or reported that it failed to).
    Finished {
        at: OffsetDateTime,
        result: Option<LifecycleResult>,
    },
}

/// What the controller has done about this action itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takeover {
    /// Nothing: the agent has it, or its grace has not run out.
    None,
    /// An agentless archive was started at `since`.
    Archiving { since: OffsetDateTime },
    /// The agentless archive ended (whatever its outcome): complete next.
    Archived,
    /// The controller completed the action with `result`.
    Completed { result: LifecycleResult },
}

/// One lifecycle action under watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    pub instance_id: String,
    pub asg: String,
    pub hook: String,
    pub transition: Transition,
    /// When the action began (the event's time, or when reconcile first saw it).
    pub began_at: OffsetDateTime,
    pub heartbeat_timeout: Duration,
    /// The last heartbeat anyone is known to have recorded (the agent's reports say so).
    pub last_heartbeat_at: Option<OffsetDateTime>,
    pub agent: AgentState,
    pub takeover: Takeover,
}

/// What to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nothing until then (or until a report or event arrives).
    WaitUntil(OffsetDateTime),
    /// `RecordLifecycleActionHeartbeat`, so the action does not time out while we wait.
    Heartbeat,
    /// Start the agentless archive through SSM Run Command.
    StartAgentlessArchive,
    /// `CompleteLifecycleAction` with this result, if Auto Scaling still shows it waiting.
    Complete(LifecycleResult),
    /// The action is over (completed by the agent or by us, or timed out): stop watching.
    Forget,
}

impl Watch {
    /// The action's global timeout: 100 heartbeat timeouts, at most 48 hours.
    pub fn global_deadline(&self) -> OffsetDateTime {
        self.began_at + (self.heartbeat_timeout * 100).min(MAX_GLOBAL_TIMEOUT)
    }

    /// When Auto Scaling will apply the hook's default result unless it hears a heartbeat.
    pub fn expires_at(&self) -> OffsetDateTime {
        let last = self.last_heartbeat_at.unwrap_or(self.began_at);
        (last + self.heartbeat_timeout).min(self.global_deadline())
    }

    /// Takes in an agent report (reports may arrive twice or out of order: an older sequence
    /// number changes nothing).
    pub fn on_report(&mut self, phase: ReportPhase, seq: u64, at: OffsetDateTime) {
        if let AgentState::Reporting { seq: known, .. } = self.agent
            && seq < known
        {
            return;
        }
        if matches!(self.agent, AgentState::Finished { .. }) {
            return;
        }
        if phase == ReportPhase::DrainHeartbeat {
            self.last_heartbeat_at = Some(self.last_heartbeat_at.map_or(at, |last| last.max(at)));
        }
        self.agent = match phase {
            ReportPhase::DrainFinished | ReportPhase::LaunchReady => AgentState::Finished {
                at,
                result: Some(LifecycleResult::Continue),
            },
            ReportPhase::DrainFailed | ReportPhase::LaunchFailed => {
                AgentState::Finished { at, result: None }
            }
            ReportPhase::DrainStarted | ReportPhase::DrainHeartbeat => {
                AgentState::Reporting { last_at: at, seq }
            }
        };
    }

    /// Auto Scaling shows the action still waiting at `at`. If this record says it has expired,
    /// a heartbeat it does not know of kept it alive (sent before a restart, or by a replica
    /// whose mark is not visible yet): take the latest heartbeat to be as old as it can be
    /// without being overdue, so one is due now rather than the action given up.
    pub fn seen_waiting(&mut self, at: OffsetDateTime) {
        if self.expires_at() <= at && at < self.global_deadline() {
            self.last_heartbeat_at = Some(at - self.heartbeat_timeout + self.heartbeat_timeout / 3);
        }
    }

    /// Records a heartbeat the controller sent.
    pub fn on_heartbeat_sent(&mut self, at: OffsetDateTime) {
        self.last_heartbeat_at = Some(self.last_heartbeat_at.map_or(at, |last| last.max(at)));
    }
}

/// The decision for `watch` at `now`.
pub fn decide(watch: &Watch, policy: &GroupPolicy, now: OffsetDateTime) -> Decision {
    if let Takeover::Completed { .. } = watch.takeover {
        return Decision::Forget;
    }
    if let AgentState::Finished { result, .. } = watch.agent {
        // The agent completes the action itself; a failed drain was completed by it too (with
        // ABANDON if a step said so), or left to the hook's default result. A launch the agent
        // reported ready but that still waits (its own completion did not get through) is
        // completed with CONTINUE here; "no active lifecycle action" then just means it did.
        return match (watch.transition, result) {
            (Transition::Launching, Some(result)) if now < watch.expires_at() => {
                Decision::Complete(result)
            }
            _ => Decision::Forget,
        };
    }
    if now >= watch.expires_at() {
        // Too late for anything: Auto Scaling has applied the hook's default result.
        return Decision::Forget;
    }

    let agent_deadline = match (watch.transition, watch.agent) {
        (_, AgentState::Finished { .. }) => return Decision::Forget,
        // A launch is the agent's to gate with its readiness checks for as long as the hook
        // allows; the fallback comes only at the deadline, just before the hook's default.
        (Transition::Launching, _) => watch.expires_at() - launch_margin(watch.heartbeat_timeout),
        (_, AgentState::Silent) => watch.began_at + policy.agent_grace,
        (_, AgentState::Reporting { last_at, .. }) => last_at + policy.report_silence,
    };
    // Launches are not kept waiting on an absent agent's behalf: a new instance that never
    // says ready should not hold capacity back for days.
    let heartbeats = policy.heartbeat_while_waiting && watch.transition == Transition::Terminating;
    let fallback = match watch.transition {
        Transition::Terminating => policy.fallback_result,
        Transition::Launching => policy.launch_fallback_result,
    };
    let heartbeat_now = heartbeat_due_at(watch).is_some_and(|due| now >= due);
    let until_heartbeat = |next: OffsetDateTime| match heartbeat_due_at(watch) {
        Some(due) if heartbeats => next.min(due),
        _ => next,
    };

    if now < agent_deadline {
        // The agent has it, or may still come. Keep the action alive meanwhile: a reporting
        // agent's heartbeats (its reports say so) push this one out, so the controller only
        // sends one when the agent is late, which is when it may have died.
        if heartbeats && heartbeat_now {
            return Decision::Heartbeat;
        }
        return Decision::WaitUntil(until_heartbeat(agent_deadline).min(watch.expires_at()));
    }

    // The agent is absent or gone quiet: the controller takes over.
    match watch.takeover {
        Takeover::None
            if policy.agentless_archive.is_some()
                && watch.transition == Transition::Terminating =>
        {
            Decision::StartAgentlessArchive
        }
        Takeover::Archiving { since } if now < since + policy.agentless_archive_timeout => {
            if heartbeats && heartbeat_now {
                Decision::Heartbeat
            } else {
                let next = until_heartbeat(since + policy.agentless_archive_timeout);
                Decision::WaitUntil(next.min(watch.expires_at()))
            }
        }
        _ => Decision::Complete(fallback),
    }
}

/// How long before a launch action's deadline the controller applies the launch fallback: enough
/// for a claim among replicas and the call, a sixth of the heartbeat timeout within 3 s to 60 s.
fn launch_margin(heartbeat_timeout: Duration) -> Duration {
    (heartbeat_timeout / 6).clamp(Duration::from_secs(3), Duration::from_secs(60))
}

/// Heartbeats go out when two thirds of the heartbeat timeout have passed since the last one,
/// so one lost or throttled heartbeat still leaves time for another. `None` once a heartbeat
/// could not move the end any more (the global timeout comes first).
fn heartbeat_due_at(watch: &Watch) -> Option<OffsetDateTime> {
    let last = watch.last_heartbeat_at.unwrap_or(watch.began_at);
    if last + watch.heartbeat_timeout >= watch.global_deadline() {
        return None;
    }
    Some(last + watch.heartbeat_timeout - watch.heartbeat_timeout / 3)
}

#[cfg(test)]
mod tests;
