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

use lifeguard_common::message::{AgentReport, LifecycleResult, ReportPhase, Transition};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Auto Scaling ends a lifecycle action after 100 heartbeat timeouts or 48 hours, whichever
/// comes first, however many heartbeats it gets.
pub const MAX_GLOBAL_TIMEOUT: Duration = Duration::from_secs(48 * 3600);
/// Promised reports an agent may miss before it is taken for dead.
pub const MISSED_REPORTS: u32 = 3;
/// The longest report interval an agent is believed to promise: a hook's longest heartbeat
/// timeout.
pub const MAX_PROMISE_SECS: u64 = 7200;
/// How long Auto Scaling may go on showing an action waiting after the agent said it is over
/// (its view lags a moment) before the controller completes it with the agent's result.
pub const FINISHED_SETTLE: Duration = Duration::from_secs(10);

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
    /// Reports arrive; the last one at `last_at`, promising the next within `promise`.
    Reporting {
        last_at: OffsetDateTime,
        seq: u64,
        promise: Option<Duration>,
    },
    /// The agent's part is over.
    Finished {
        at: OffsetDateTime,
        /// The result it sent, or meant to send.
        result: Option<LifecycleResult>,
        /// Whether its completion went through (or found the action already over). When it
        /// did not (access denied, no hook found), the controller completes in its stead.
        action_done: bool,
    },
}

/// One agent report, as the watch takes it in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heard {
    pub phase: ReportPhase,
    pub seq: u64,
    /// When the report was sent, by SQS's clock (when received, where SQS does not say).
    pub at: OffsetDateTime,
    /// The agent's promised report interval; `None` from agents that promise none.
    pub promise: Option<Duration>,
    /// The agent's last lifecycle heartbeat, when it says.
    pub heartbeat_at: Option<OffsetDateTime>,
    /// Final reports: the result the agent sent or meant to send.
    pub result: Option<LifecycleResult>,
    /// Final reports: whether the action is known to be over (agents that say nothing of
    /// their completion are taken at their word).
    pub action_done: bool,
}

impl Heard {
    pub fn from_report(report: &AgentReport, at: OffsetDateTime) -> Heard {
        let result = match report
            .result
            .as_deref()
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            Some("CONTINUE") => Some(LifecycleResult::Continue),
            Some("ABANDON") => Some(LifecycleResult::Abandon),
            _ => None,
        };
        Heard {
            phase: report.phase,
            seq: report.seq,
            at,
            // The agent's own word: bounded like any policy duration.
            promise: report
                .report_interval_secs
                .map(|secs| Duration::from_secs(secs.min(MAX_PROMISE_SECS))),
            // A time from the instance's clock; never later than the report's arrival.
            heartbeat_at: report
                .lifecycle_heartbeat_at
                .as_deref()
                .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
                .map(|t| t.min(at)),
            result,
            action_done: report.completion.is_none_or(|c| c.action_done()),
        }
    }
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
        later(
            self.began_at,
            self.heartbeat_timeout
                .saturating_mul(100)
                .min(MAX_GLOBAL_TIMEOUT),
        )
    }

    /// When Auto Scaling will apply the hook's default result unless it hears a heartbeat.
    pub fn expires_at(&self) -> OffsetDateTime {
        let last = self.last_heartbeat_at.unwrap_or(self.began_at);
        later(last, self.heartbeat_timeout).min(self.global_deadline())
    }

    /// Takes in an agent report (reports may arrive twice or out of order: one sent earlier, by
    /// SQS's clock, changes nothing; the agent's own counter only orders reports sent within
    /// the same instant, so no number it sends can make later reports look stale).
    pub fn on_report(&mut self, heard: &Heard) {
        if let AgentState::Reporting {
            last_at,
            seq: known,
            ..
        } = self.agent
            && (heard.at, heard.seq) < (last_at, known)
        {
            return;
        }
        if matches!(self.agent, AgentState::Finished { .. }) {
            return;
        }
        let heartbeat = match heard.phase {
            ReportPhase::DrainHeartbeat => Some(heard.heartbeat_at.unwrap_or(heard.at)),
            _ => heard.heartbeat_at,
        };
        if let Some(heartbeat) = heartbeat {
            self.on_heartbeat_sent(heartbeat);
        }
        self.agent = if heard.phase.is_final() {
            AgentState::Finished {
                at: heard.at,
                // Agents that name no result: a finished drain or a ready launch continued; a
                // failed launch is not to be let in.
                result: heard.result.or(match heard.phase {
                    ReportPhase::DrainFinished | ReportPhase::LaunchReady => {
                        Some(LifecycleResult::Continue)
                    }
                    ReportPhase::LaunchFailed => Some(LifecycleResult::Abandon),
                    _ => None,
                }),
                action_done: heard.action_done,
            }
        } else {
            AgentState::Reporting {
                last_at: heard.at,
                seq: heard.seq,
                promise: heard.promise,
            }
        };
    }

    /// How long a reporting agent may stay silent before it is taken for dead: the group's
    /// `report_silence`, or [`MISSED_REPORTS`] of the agent's promised intervals if that is
    /// longer. An agent that promises nothing (an earlier version) reports at its lifecycle
    /// heartbeats, a third of the heartbeat timeout apart: that is its implicit promise.
    pub fn silence_limit(&self, policy: &GroupPolicy, promise: Option<Duration>) -> Duration {
        let promise = promise.unwrap_or(self.heartbeat_timeout / 3);
        policy
            .report_silence
            .max(promise.saturating_mul(MISSED_REPORTS))
    }

    /// Auto Scaling shows the action still waiting at `at`. If this record says it has expired,
    /// a heartbeat it does not know of kept it alive (sent before a restart, or by a replica
    /// whose mark is not visible yet): take the latest heartbeat to be as old as it can be
    /// without being overdue, so one is due now rather than the action given up.
    pub fn seen_waiting(&mut self, at: OffsetDateTime) {
        if self.expires_at() <= at && at < self.global_deadline() {
            self.last_heartbeat_at = Some(later(
                earlier(at, self.heartbeat_timeout),
                self.heartbeat_timeout / 3,
            ));
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
    let fallback = match watch.transition {
        Transition::Terminating => policy.fallback_result,
        Transition::Launching => policy.launch_fallback_result,
    };
    if now >= watch.expires_at() {
        // Too late for anything: Auto Scaling has applied the hook's default result.
        return Decision::Forget;
    }
    let agent_deadline = match (watch.transition, watch.agent) {
        (
            _,
            AgentState::Finished {
                at,
                result,
                action_done,
            },
        ) => {
            // The agent's part is over but Auto Scaling still shows the action waiting (this is
            // only decided for actions seen waiting). If the agent's completion failed (access
            // denied, no hook found), the controller completes in its stead, with the agent's
            // result: the drain itself was done. If the agent says it went through, Auto Scaling's
            // view may lag a moment: look again, then complete ("no active lifecycle action" then
            // just means it was over).
            let result = result.unwrap_or(fallback);
            if action_done && now < at + FINISHED_SETTLE {
                return Decision::WaitUntil((at + FINISHED_SETTLE).min(watch.expires_at()));
            }
            return Decision::Complete(result);
        }
        // A launch is the agent's to gate with its readiness checks for as long as the hook
        // allows; the fallback comes at the deadline, just before the hook's default, or
        // earlier if the agent that was reporting has gone silent.
        (
            Transition::Launching,
            AgentState::Reporting {
                last_at, promise, ..
            },
        ) => later(last_at, watch.silence_limit(policy, promise)).min(earlier(
            watch.expires_at(),
            launch_margin(watch.heartbeat_timeout),
        )),
        (Transition::Launching, AgentState::Silent) => {
            earlier(watch.expires_at(), launch_margin(watch.heartbeat_timeout))
        }
        (_, AgentState::Silent) => later(watch.began_at, policy.agent_grace),
        (
            _,
            AgentState::Reporting {
                last_at, promise, ..
            },
        ) => later(last_at, watch.silence_limit(policy, promise)),
    };
    // Launches are not kept waiting on an absent agent's behalf: a new instance that never
    // says ready should not hold capacity back for days.
    let heartbeats = policy.heartbeat_while_waiting && watch.transition == Transition::Terminating;
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
        Takeover::Archiving { since } if now < later(since, policy.agentless_archive_timeout) => {
            if heartbeats && heartbeat_now {
                Decision::Heartbeat
            } else {
                let next = until_heartbeat(later(since, policy.agentless_archive_timeout));
                Decision::WaitUntil(next.min(watch.expires_at()))
            }
        }
        _ => Decision::Complete(fallback),
    }
}

/// `at + span`, saturating at the last representable instant: durations from a hook, a tag or an
/// agent's promise must never make a sum panic and end the supervisor with it.
pub fn later(at: OffsetDateTime, span: Duration) -> OffsetDateTime {
    time::Duration::try_from(span)
        .ok()
        .and_then(|span| at.checked_add(span))
        .unwrap_or(time::PrimitiveDateTime::MAX.assume_utc())
}

/// `at - span`, saturating at the first representable instant.
pub fn earlier(at: OffsetDateTime, span: Duration) -> OffsetDateTime {
    time::Duration::try_from(span)
        .ok()
        .and_then(|span| at.checked_sub(span))
        .unwrap_or(time::PrimitiveDateTime::MIN.assume_utc())
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
    if later(last, watch.heartbeat_timeout) >= watch.global_deadline() {
        return None;
    }
    Some(later(
        last,
        watch.heartbeat_timeout - watch.heartbeat_timeout / 3,
    ))
}

#[cfg(test)]
mod tests;
