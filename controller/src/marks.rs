//! What controllers know of a lifecycle action, written as tags on the instance itself. AWS is
//! the only store the controller has: a replica that takes in an agent's report, sends a
//! heartbeat or takes an action over writes it here, so every other replica (and a restarted
//! one) decides from the same facts. Each fact has its own tag, written by one kind of event,
//! so two replicas writing at once do not overwrite each other's facts.

use std::collections::HashMap;

use lifeguard_common::message::{LifecycleResult, ReportPhase, Transition};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::watch::Heard;

/// `transition began-at [hook]`: when the action began (the event's time, or first sight).
pub const ACTION: &str = "lifeguard:drain:action";
/// `phase seq at [every=SECS] [result=R] [done=yes|no]`: the agent's latest report, its promised
/// report interval, and for a final report the result and whether its completion went through.
pub const AGENT: &str = "lifeguard:drain:agent";
/// `at`: the latest heartbeat anyone recorded.
pub const HEARTBEAT: &str = "lifeguard:drain:heartbeat";
/// `replica at`: the replica that claimed the fallback.
pub const TAKEOVER: &str = "lifeguard:drain:takeover";
/// `result by at`: how the action ended, and who ended it.
pub const OUTCOME: &str = "lifeguard:drain:outcome";
/// `command-id at`: the agentless archive's SSM command, and when it was sent.
pub const ARCHIVE: &str = "lifeguard:drain:archive";
/// `at`: when a replica saw the action over with no outcome recorded. Its own key, never
/// `OUTCOME`: a replica that completed the action may write its outcome a moment after another
/// read the marks, and neither write must undo the other.
pub const ENDED: &str = "lifeguard:drain:ended";

pub const ALL: [&str; 7] = [ACTION, AGENT, HEARTBEAT, TAKEOVER, OUTCOME, ARCHIVE, ENDED];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionMark {
    pub transition: Transition,
    pub began_at: OffsetDateTime,
    /// The hook holding the instance, when known.
    pub hook: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentMark {
    pub phase: ReportPhase,
    pub seq: u64,
    pub at: OffsetDateTime,
    pub promise_secs: Option<u64>,
    pub result: Option<LifecycleResult>,
    /// `None` for marks written before completions were reported.
    pub action_done: Option<bool>,
}

impl AgentMark {
    /// The mark of a report as the watch took it in.
    pub fn of(heard: &Heard) -> AgentMark {
        AgentMark {
            phase: heard.phase,
            seq: heard.seq,
            at: heard.at,
            promise_secs: heard.promise.map(|p| p.as_secs()),
            result: heard.result,
            action_done: heard.phase.is_final().then_some(heard.action_done),
        }
    }

    /// The report this mark stands for (its heartbeat has a mark of its own).
    pub fn heard(&self) -> Heard {
        Heard {
            phase: self.phase,
            seq: self.seq,
            at: self.at,
            promise: self.promise_secs.map(std::time::Duration::from_secs),
            heartbeat_at: None,
            result: self.result,
            action_done: self.action_done.unwrap_or(true),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakeoverMark {
    pub replica: String,
    pub at: OffsetDateTime,
}

/// Who ended an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndedBy {
    Agent,
    Controller,
    /// Nobody we know of: the hook's default result at its timeout, or someone else's call.
    Timeout,
}

impl EndedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            EndedBy::Agent => "agent",
            EndedBy::Controller => "controller",
            EndedBy::Timeout => "timeout",
        }
    }

    fn parse(value: &str) -> Option<Self> {
        [EndedBy::Agent, EndedBy::Controller, EndedBy::Timeout]
            .into_iter()
            .find(|by| by.as_str() == value)
    }
}

/// How an action ended: `CONTINUE`, `ABANDON`, `FAILED` (the agent's drain failed), or
/// `ENDED` (over, result unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeMark {
    pub result: String,
    pub by: EndedBy,
    pub at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveMark {
    pub command_id: String,
    pub at: OffsetDateTime,
}

/// Every mark an instance carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marks {
    pub action: Option<ActionMark>,
    pub agent: Option<AgentMark>,
    pub heartbeat: Option<OffsetDateTime>,
    pub takeover: Option<TakeoverMark>,
    pub outcome: Option<OutcomeMark>,
    pub archive: Option<ArchiveMark>,
}

pub fn format_time(at: OffsetDateTime) -> String {
    // Whole seconds keep tags short and readable; nothing here needs more.
    let at = at.replace_nanosecond(0).unwrap_or(at);
    at.format(&Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

pub fn parse_time(value: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(value, &Rfc3339).ok()
}

impl Marks {
    /// Reads the marks among an instance's tags. A tag that does not parse is left out (and
    /// rewritten by the next writer) rather than trusted.
    pub fn from_tags(tags: &HashMap<String, String>) -> Marks {
        let words = |key: &str| -> Vec<&str> {
            tags.get(key)
                .map(|v| v.split_whitespace().collect())
                .unwrap_or_default()
        };
        // The hook's name may hold spaces: it is the rest of the value.
        let action = tags.get(ACTION).and_then(|value| {
            let mut parts = value.splitn(3, ' ');
            let transition = match parts.next()? {
                "launching" => Transition::Launching,
                "terminating" => Transition::Terminating,
                _ => return None,
            };
            let began_at = parse_time(parts.next()?)?;
            let hook = parts.next().map(str::to_string).filter(|h| !h.is_empty());
            Some(ActionMark {
                transition,
                began_at,
                hook,
            })
        });
        let agent = match words(AGENT).as_slice() {
            [phase, seq, at, extra @ ..] => {
                match (ReportPhase::from_name(phase), seq.parse(), parse_time(at)) {
                    (Some(phase), Ok(seq), Some(at)) => {
                        let mut mark = AgentMark {
                            phase,
                            seq,
                            at,
                            promise_secs: None,
                            result: None,
                            action_done: None,
                        };
                        // Unknown or damaged extras are left out, as a whole damaged mark is.
                        for word in extra {
                            match word.split_once('=') {
                                Some(("every", secs)) => mark.promise_secs = secs.parse().ok(),
                                Some(("result", "CONTINUE")) => {
                                    mark.result = Some(LifecycleResult::Continue);
                                }
                                Some(("result", "ABANDON")) => {
                                    mark.result = Some(LifecycleResult::Abandon);
                                }
                                Some(("done", "yes")) => mark.action_done = Some(true),
                                Some(("done", "no")) => mark.action_done = Some(false),
                                _ => {}
                            }
                        }
                        Some(mark)
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        let heartbeat = match words(HEARTBEAT).as_slice() {
            [at] => parse_time(at),
            _ => None,
        };
        let takeover = match words(TAKEOVER).as_slice() {
            [replica, at] => parse_time(at).map(|at| TakeoverMark {
                replica: (*replica).to_string(),
                at,
            }),
            _ => None,
        };
        let outcome = match words(OUTCOME).as_slice() {
            [result, by, at] => {
                EndedBy::parse(by)
                    .zip(parse_time(at))
                    .map(|(by, at)| OutcomeMark {
                        result: (*result).to_string(),
                        by,
                        at,
                    })
            }
            _ => None,
        };
        let ended = match words(ENDED).as_slice() {
            [at] => parse_time(at).map(|at| OutcomeMark {
                result: "ENDED".to_string(),
                by: EndedBy::Timeout,
                at,
            }),
            _ => None,
        };
        // Whoever ended the action names its outcome; `ENDED` stands only where no outcome of
        // the same action was written, in whichever order the two were.
        let of_this_action = |at: OffsetDateTime| action.as_ref().is_none_or(|a| at >= a.began_at);
        let outcome = match (outcome, ended) {
            (Some(recorded), Some(ended))
                if !of_this_action(recorded.at) && of_this_action(ended.at) =>
            {
                Some(ended)
            }
            (recorded, ended) => recorded.or(ended),
        };
        let archive = match words(ARCHIVE).as_slice() {
            [command_id, at] => parse_time(at).map(|at| ArchiveMark {
                command_id: (*command_id).to_string(),
                at,
            }),
            _ => None,
        };
        Marks {
            action,
            agent,
            heartbeat,
            takeover,
            outcome,
            archive,
        }
    }
}

pub fn action_tag(mark: &ActionMark) -> (&'static str, String) {
    let transition = match mark.transition {
        Transition::Launching => "launching",
        Transition::Terminating => "terminating",
    };
    let mut value = format!("{transition} {}", format_time(mark.began_at));
    if let Some(hook) = &mark.hook {
        value.push(' ');
        value.push_str(hook);
    }
    // Tag values hold 256 characters; a hook name that does not fit is left out.
    if value.chars().count() > 256 {
        value = format!("{transition} {}", format_time(mark.began_at));
    }
    (ACTION, value)
}

pub fn agent_tag(mark: &AgentMark) -> (&'static str, String) {
    let mut value = format!(
        "{} {} {}",
        mark.phase.name(),
        mark.seq,
        format_time(mark.at)
    );
    if let Some(secs) = mark.promise_secs {
        value.push_str(&format!(" every={secs}"));
    }
    if let Some(result) = mark.result {
        value.push_str(&format!(" result={}", result.as_str()));
    }
    if let Some(done) = mark.action_done {
        value.push_str(if done { " done=yes" } else { " done=no" });
    }
    (AGENT, value)
}

pub fn heartbeat_tag(at: OffsetDateTime) -> (&'static str, String) {
    (HEARTBEAT, format_time(at))
}

pub fn takeover_tag(replica: &str, at: OffsetDateTime) -> (&'static str, String) {
    (TAKEOVER, format!("{replica} {}", format_time(at)))
}

pub fn archive_tag(command_id: &str, at: OffsetDateTime) -> (&'static str, String) {
    (ARCHIVE, format!("{command_id} {}", format_time(at)))
}

pub fn ended_tag(at: OffsetDateTime) -> (&'static str, String) {
    (ENDED, format_time(at))
}

pub fn outcome_tag(mark: &OutcomeMark) -> (&'static str, String) {
    (
        OUTCOME,
        format!(
            "{} {} {}",
            mark.result,
            mark.by.as_str(),
            format_time(mark.at)
        ),
    )
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    const AT: OffsetDateTime = datetime!(2026-11-22 10:00:00 UTC);

    fn tags(pairs: &[(&'static str, String)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn every_mark_reads_back_as_written() {
        let marks = Marks {
            action: Some(ActionMark {
                transition: Transition::Terminating,
                began_at: AT,
                hook: Some("drain logs".into()),
            }),
            agent: Some(AgentMark {
                phase: ReportPhase::DrainFailed,
                seq: 7,
                at: AT + time::Duration::seconds(30),
                promise_secs: Some(30),
                result: Some(LifecycleResult::Continue),
                action_done: Some(false),
            }),
            heartbeat: Some(AT + time::Duration::seconds(31)),
            takeover: Some(TakeoverMark {
                replica: "ctl-a1b2".into(),
                at: AT,
            }),
            outcome: Some(OutcomeMark {
                result: "CONTINUE".into(),
                by: EndedBy::Agent,
                at: AT,
            }),
            archive: Some(ArchiveMark {
                command_id: "0b5a8e7c-1d2f-4e3a-9b6c-7d8e9f0a1b2c".into(),
                at: AT,
            }),
        };
        let written = tags(&[
            action_tag(marks.action.as_ref().unwrap()),
            agent_tag(marks.agent.as_ref().unwrap()),
            heartbeat_tag(marks.heartbeat.unwrap()),
            takeover_tag("ctl-a1b2", AT),
            outcome_tag(marks.outcome.as_ref().unwrap()),
            archive_tag("0b5a8e7c-1d2f-4e3a-9b6c-7d8e9f0a1b2c", AT),
        ]);
        assert_eq!(
            written[AGENT],
            "drain_failed 7 2026-11-22T10:00:30Z every=30 result=CONTINUE done=no"
        );
        assert_eq!(Marks::from_tags(&written), marks);
        // A mark of the earlier form still reads.
        let older = Marks::from_tags(&tags(&[(
            AGENT,
            "drain_heartbeat 7 2026-11-22T10:00:30Z".into(),
        )]));
        assert_eq!(older.agent.unwrap().heard().promise, None);
        assert!(written.values().all(|v| v.len() <= 256), "tag values fit");
    }

    #[test]
    fn damaged_marks_are_left_out_not_trusted() {
        let read = Marks::from_tags(&tags(&[
            (ACTION, "terminating yesterday".into()),
            (AGENT, "drain_exploded 1 2026-11-22T10:00:00Z".into()),
            (HEARTBEAT, String::new()),
            (OUTCOME, "CONTINUE nobody 2026-11-22T10:00:00Z".into()),
        ]));
        assert_eq!(read, Marks::default());
    }

    #[test]
    fn an_ended_mark_stands_only_where_no_outcome_of_the_same_action_was_written() {
        let action = (ACTION, "terminating 2026-11-22T10:00:00Z".to_string());
        let completed = (
            OUTCOME,
            "CONTINUE controller 2026-11-22T10:05:00Z".to_string(),
        );
        let ended_after = (ENDED, "2026-11-22T10:05:01Z".to_string());
        // Written after the replica that completed the action: the completion still names it.
        let read = Marks::from_tags(&tags(&[
            action.clone(),
            completed.clone(),
            ended_after.clone(),
        ]));
        let outcome = read.outcome.unwrap();
        assert_eq!(
            (outcome.result.as_str(), outcome.by),
            ("CONTINUE", EndedBy::Controller)
        );
        // An outcome of an earlier action (a launch) does not hide this one's end.
        let earlier = (OUTCOME, "CONTINUE agent 2026-11-22T09:00:00Z".to_string());
        let read = Marks::from_tags(&tags(&[action.clone(), earlier, ended_after.clone()]));
        let outcome = read.outcome.unwrap();
        assert_eq!(
            (outcome.result.as_str(), outcome.by),
            ("ENDED", EndedBy::Timeout)
        );
        // Alone, it is the outcome.
        let read = Marks::from_tags(&tags(&[action, ended_after]));
        assert_eq!(read.outcome.unwrap().by, EndedBy::Timeout);
    }
}
