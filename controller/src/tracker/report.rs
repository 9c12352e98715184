//! An agent's report: believed only from the instance it speaks of (the router checked the
//! sender), ordered by SQS's clock, its group and action taken from Auto Scaling, and written to
//! the instance's marks before the message is deleted.

use lifeguard_common::message::{
    AgentReport, CompletionReport, LifecycleResult, ReportPhase, Transition,
};
use time::OffsetDateTime;

use super::{Tracker, now, report_transition, retry};
use crate::fleet::Fleet;
use crate::marks::{self, ActionMark, AgentMark, EndedBy, OutcomeMark};
use crate::queue::Handled;
use crate::watch::{Heard, MAX_GLOBAL_TIMEOUT};

impl<F: Fleet> Tracker<F> {
    /// An agent's report, from the instance it speaks of (the router checked its sender).
    pub(crate) async fn on_report(
        &self,
        report: &AgentReport,
        sent_at: Option<OffsetDateTime>,
    ) -> Handled {
        let id = report.instance_id.as_str();
        // SQS's clock orders reports, never the sender's counter.
        let at = sent_at.map_or_else(now, |sent| sent.min(now()));
        let heard = Heard::from_report(report, at);
        let transition = report_transition(report.phase);
        // The group and the action are Auto Scaling's word, never the report's: a watched action
        // was confirmed when it was first seen; otherwise ask.
        let watched_in = self.watched_group(id, transition);
        let confirmed_in = match watched_in {
            Some(asg) => Some(asg),
            None => match self.fleet.states(&[id.to_string()]).await {
                Ok(mut states) => states
                    .remove(id)
                    .filter(|state| in_transition(state, transition))
                    .map(|state| state.asg),
                Err(error) => return retry(&error),
            },
        };
        if let (Some(claimed), Some(asg)) = (&report.asg, &confirmed_in)
            && claimed != asg
        {
            tracing::warn!(instance_id = id, claimed = %claimed, asg = %asg,
                "report names another group than Auto Scaling does; Auto Scaling's is used");
        }
        let found = match self.fleet.marks(&[id.to_string()]).await {
            Ok(mut found) => found.remove(id).unwrap_or_default(),
            Err(error) => return retry(&error),
        };
        let mut tags = Vec::new();
        let action_began = found
            .action
            .as_ref()
            .filter(|a| a.transition == transition)
            .map(|a| a.began_at);
        let newer = match (&found.agent, action_began) {
            (Some(known), Some(began)) if known.at >= began => {
                (known.at, known.seq) < (at, report.seq)
                    || report.phase.is_final() && !known.phase.is_final()
            }
            _ => true,
        };
        if newer {
            tags.push(marks::agent_tag(&AgentMark::of(&heard)));
        }
        // Start marks are written only once Auto Scaling showed the action, so a recent one
        // stands for that (the instance may be gone by the time its final report arrives).
        let marked = action_began.is_some_and(|began| {
            now() - began
                <= time::Duration::try_from(MAX_GLOBAL_TIMEOUT).unwrap_or(time::Duration::MAX)
        });
        if confirmed_in.is_none() && !marked {
            // No action Auto Scaling shows (a spot or rebalance drain, or a report about an
            // instance in service): the agent's own mark only, nothing a later action could
            // take for its start or its end.
            if newer && let Err(error) = self.fleet.set_marks(id, &tags).await {
                return retry(&error);
            }
            tracing::info!(
                instance_id = id,
                phase = report.phase.name(),
                seq = report.seq,
                "agent report of no lifecycle action Auto Scaling shows"
            );
            return Handled::Done;
        }
        if action_began.is_none() {
            // A report before the event: this is when the action is first known.
            tags.push(marks::action_tag(&ActionMark {
                transition,
                began_at: at,
                hook: report.hook.clone(),
            }));
        }
        let heartbeat = match report.phase {
            ReportPhase::DrainHeartbeat => Some(heard.heartbeat_at.unwrap_or(at)),
            _ => heard.heartbeat_at,
        };
        if let Some(heartbeat) = heartbeat
            && found.heartbeat.is_none_or(|known| known < heartbeat)
        {
            tags.push(marks::heartbeat_tag(heartbeat));
        }
        // The agent ended the action only if its own completion went through; otherwise the
        // action stays the controller's to end (and to mark).
        let outcome = (report.phase.is_final() && agent_completed(report)).then(|| OutcomeMark {
            result: outcome_result(&heard),
            by: EndedBy::Agent,
            at,
        });
        let unrecorded = found
            .outcome
            .as_ref()
            .is_none_or(|o| o.at < action_began.unwrap_or(at));
        if let Some(outcome) = &outcome
            && unrecorded
        {
            tags.push(marks::outcome_tag(outcome));
        }
        if !tags.is_empty()
            && let Err(error) = self.fleet.set_marks(id, &tags).await
        {
            return retry(&error);
        }

        let known = {
            let mut state = self.state();
            match state.watches.get_mut(id) {
                Some(entry) if entry.watch.transition == transition => {
                    entry.watch.on_report(&heard);
                    entry.poke(at);
                    true
                }
                _ => false,
            }
        };
        tracing::info!(
            instance_id = id,
            phase = report.phase.name(),
            seq = report.seq,
            completion = ?report.completion,
            "agent report"
        );
        if let Some(outcome) = outcome {
            self.metrics
                .record_outcome(&outcome, action_began.map(|b| at - b));
        }
        // Every action stays watched until Auto Scaling shows it over: an agent's completion
        // that did not go through is carried through or falls back.
        if !known
            && unrecorded
            && let Some(asg) = &confirmed_in
        {
            // A report before the event (or after a restart): watch it from now.
            match self.managed_group(asg).await {
                Ok(Some(group)) => {
                    let hook = group.hooks.iter().find(|h| {
                        h.transition == transition
                            && report.hook.as_ref().is_none_or(|n| &h.name == n)
                    });
                    if let Some(hook) = hook {
                        let mut found = found;
                        found.agent = Some(AgentMark::of(&heard));
                        self.watch_action(
                            id,
                            asg,
                            hook,
                            &group.policy,
                            action_began.unwrap_or(at),
                            &found,
                        );
                    }
                }
                Ok(None) => {}
                Err(error) => return retry(&error),
            }
        }
        self.wake.notify_one();
        Handled::Done
    }
}

/// Whether the agent's own completion ended the action (agents that do not say are taken at
/// their word, as before completions were reported).
fn agent_completed(report: &AgentReport) -> bool {
    report
        .completion
        .is_none_or(|c| c == CompletionReport::Completed)
}

/// The outcome an agent's final report stands for: the result it completed with, or `FAILED`
/// for a failed drain that names none.
fn outcome_result(heard: &Heard) -> String {
    match (heard.result, heard.phase) {
        (Some(result), _) => result.as_str().to_string(),
        (None, ReportPhase::DrainFinished | ReportPhase::LaunchReady) => {
            LifecycleResult::Continue.as_str().to_string()
        }
        (None, _) => "FAILED".to_string(),
    }
}

/// Whether Auto Scaling shows the instance in `transition` (held by a hook or not).
fn in_transition(state: &crate::fleet::InstanceState, transition: Transition) -> bool {
    let prefix = match transition {
        Transition::Launching => "Pending",
        Transition::Terminating => "Terminating",
    };
    state.lifecycle_state.starts_with(prefix)
}
