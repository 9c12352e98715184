//! One drilled instance's timeline, built from what AWS shows each time the drill looks: its
//! lifecycle state, and the marks the agents' reports and the controller leave on it.

use lifeguard_common::message::ReportPhase;
use time::OffsetDateTime;

use crate::marks::{EndedBy, Marks, OutcomeMark};

/// Marks written a little before the drill's own clock said it terminated the instance still
/// count (clocks differ); older ones belong to an earlier action (the launch hook's).
const CLOCK_SKEW: time::Duration = time::Duration::seconds(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Terminated, not yet held by the hook (load balancer deregistration, plain `Terminating`).
    Terminating,
    /// `Terminating:Wait`: held by the hook, the agent not heard of yet.
    Waiting,
    Draining,
    /// The lifecycle action is completed; the instance is on its way out.
    Completed,
    /// No longer in the group.
    Gone,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Terminating => "terminating",
            Phase::Waiting => "terminating:wait",
            Phase::Draining => "draining",
            Phase::Completed => "completed",
            Phase::Gone => "gone",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeline {
    pub instance_id: String,
    pub zone: String,
    pub terminated_at: OffsetDateTime,
    /// First seen in `Terminating:Wait`.
    pub wait_at: Option<OffsetDateTime>,
    /// The agent's `drain_started` report (its own time), or the first report seen.
    pub drain_started_at: Option<OffsetDateTime>,
    pub agent_phase: Option<ReportPhase>,
    pub outcome: Option<OutcomeMark>,
    pub gone_at: Option<OffsetDateTime>,
    pub phase: Phase,
}

fn is_drain(phase: ReportPhase) -> bool {
    matches!(
        phase,
        ReportPhase::DrainStarted
            | ReportPhase::DrainProgress
            | ReportPhase::DrainHeartbeat
            | ReportPhase::DrainFinished
            | ReportPhase::DrainFailed
    )
}

impl Timeline {
    pub fn new(instance_id: &str, zone: &str, terminated_at: OffsetDateTime) -> Self {
        Timeline {
            instance_id: instance_id.to_string(),
            zone: zone.to_string(),
            terminated_at,
            wait_at: None,
            drain_started_at: None,
            agent_phase: None,
            outcome: None,
            gone_at: None,
            phase: Phase::Terminating,
        }
    }

    /// Takes in one look: the lifecycle state (`None`: no longer in the group) and the marks.
    pub fn observe(&mut self, state: Option<&str>, marks: Option<&Marks>, now: OffsetDateTime) {
        if self.gone_at.is_some() {
            return;
        }
        let recent = |at: OffsetDateTime| at >= self.terminated_at - CLOCK_SKEW;
        if let Some(marks) = marks {
            if let Some(agent) = marks.agent.filter(|a| recent(a.at) && is_drain(a.phase)) {
                self.agent_phase = Some(agent.phase);
                if self.drain_started_at.is_none() || agent.phase == ReportPhase::DrainStarted {
                    self.drain_started_at = Some(match (agent.phase, self.drain_started_at) {
                        (ReportPhase::DrainStarted, _) | (_, None) => agent.at,
                        (_, Some(seen)) => seen,
                    });
                }
            }
            // The lifecycle event's time: exact even when the hold was too short to be seen.
            if let Some(action) = marks.action.as_ref().filter(|a| {
                a.transition == lifeguard_common::message::Transition::Terminating
                    && recent(a.began_at)
            }) {
                let began = action.began_at.max(self.terminated_at);
                self.wait_at = Some(self.wait_at.map_or(began, |seen| seen.min(began)));
            }
            if let Some(outcome) = marks.outcome.as_ref().filter(|o| recent(o.at)) {
                self.outcome = Some(outcome.clone());
            }
        }
        if state == Some("Terminating:Wait") && self.wait_at.is_none() {
            self.wait_at = Some(now);
        }
        self.phase = match state {
            None => {
                self.gone_at = Some(now);
                Phase::Gone
            }
            _ if self.outcome.is_some() => Phase::Completed,
            _ if self.agent_phase.is_some() => Phase::Draining,
            Some("Terminating:Wait") => Phase::Waiting,
            Some("Terminating:Proceed") | Some("Terminated") => Phase::Completed,
            _ => Phase::Terminating,
        };
    }

    pub fn is_done(&self) -> bool {
        self.gone_at.is_some()
    }

    /// The action ended by the hook's timeout (its default result), not by anyone's call.
    pub fn ended_by_timeout(&self) -> bool {
        match &self.outcome {
            Some(outcome) => outcome.by == EndedBy::Timeout,
            // Left the group after being held, with nobody recording a completion.
            None => self.gone_at.is_some() && self.wait_at.is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use lifeguard_common::message::ReportPhase;
    use time::macros::datetime;

    use super::*;
    use crate::marks::AgentMark;

    const T0: OffsetDateTime = datetime!(2026-12-03 10:00:00 UTC);

    fn agent(phase: ReportPhase, at: OffsetDateTime) -> Marks {
        Marks {
            agent: Some(AgentMark {
                phase,
                seq: 1,
                at,
                promise_secs: None,
                result: None,
                action_done: None,
            }),
            ..Marks::default()
        }
    }

    #[test]
    fn a_drain_is_followed_from_termination_to_gone() {
        let s = time::Duration::seconds;
        let mut t = Timeline::new("i-1", "a", T0);
        t.observe(Some("Terminating"), None, T0 + s(1));
        assert_eq!(t.phase, Phase::Terminating);
        t.observe(Some("Terminating:Wait"), None, T0 + s(301));
        assert_eq!((t.phase, t.wait_at), (Phase::Waiting, Some(T0 + s(301))));
        let started = agent(ReportPhase::DrainStarted, T0 + s(302));
        t.observe(Some("Terminating:Wait"), Some(&started), T0 + s(303));
        assert_eq!(t.phase, Phase::Draining);
        assert_eq!(t.drain_started_at, Some(T0 + s(302)));
        // A later report does not move the drain's start.
        let mut finished = agent(ReportPhase::DrainFinished, T0 + s(310));
        finished.outcome = Some(OutcomeMark {
            result: "CONTINUE".into(),
            by: EndedBy::Agent,
            at: T0 + s(310),
        });
        t.observe(Some("Terminating:Proceed"), Some(&finished), T0 + s(311));
        assert_eq!(t.phase, Phase::Completed);
        assert_eq!(t.drain_started_at, Some(T0 + s(302)));
        t.observe(None, Some(&finished), T0 + s(315));
        assert!(t.is_done() && !t.ended_by_timeout());
        assert_eq!(t.wait_at, Some(T0 + s(301)), "the first sight is kept");
    }

    #[test]
    fn marks_of_an_earlier_action_are_not_this_drains() {
        let mut t = Timeline::new("i-1", "a", T0);
        let mut old = agent(ReportPhase::LaunchReady, T0 - time::Duration::hours(2));
        old.outcome = Some(OutcomeMark {
            result: "CONTINUE".into(),
            by: EndedBy::Agent,
            at: T0 - time::Duration::hours(2),
        });
        t.observe(Some("Terminating:Wait"), Some(&old), T0);
        assert_eq!(t.phase, Phase::Waiting);
        assert_eq!(t.outcome, None);
        // Held, then gone with nobody completing: the hook's timeout ended it.
        t.observe(None, Some(&old), T0 + time::Duration::hours(1));
        assert!(t.ended_by_timeout());
    }
}
