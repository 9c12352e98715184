//! `lifeguard-controller status`: the drains in progress and their recent outcomes, read from
//! AWS (the marks on the instances), so every replica and an operator's shell see the same.

use serde::Serialize;
use time::OffsetDateTime;

use crate::fleet::MarkedInstance;
use crate::marks;

/// One row of the status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DrainStatus {
    pub instance_id: String,
    pub group: Option<String>,
    pub transition: Option<&'static str>,
    pub hook: Option<String>,
    pub began_at: Option<String>,
    /// The agent's last report: its phase and when.
    pub agent: Option<String>,
    pub agent_at: Option<String>,
    /// `in progress`, or the result (`CONTINUE`, `ABANDON`, `FAILED`, `ENDED`).
    pub outcome: String,
    /// Who ended it: `agent`, `controller`, `timeout`.
    pub ended_by: Option<&'static str>,
    pub ended_at: Option<String>,
    pub duration_secs: Option<i64>,
    pub ec2_state: String,
}

impl DrainStatus {
    pub fn of(instance: &MarkedInstance) -> Self {
        let m = &instance.marks;
        let began = m.action.as_ref().map(|a| a.began_at);
        // An outcome older than the action belongs to an earlier action of this instance.
        let outcome = m
            .outcome
            .as_ref()
            .filter(|o| began.is_none_or(|b| o.at >= b));
        let transition = m.action.as_ref().map(|a| match a.transition {
            lifeguard_common::message::Transition::Launching => "launch",
            lifeguard_common::message::Transition::Terminating => "terminate",
        });
        DrainStatus {
            instance_id: instance.instance_id.clone(),
            group: instance.asg.clone(),
            transition,
            hook: m.action.as_ref().and_then(|a| a.hook.clone()),
            began_at: began.map(marks::format_time),
            agent: m
                .agent
                .filter(|a| began.is_none_or(|b| a.at >= b))
                .map(|a| a.phase.name().to_string()),
            agent_at: m
                .agent
                .filter(|a| began.is_none_or(|b| a.at >= b))
                .map(|a| marks::format_time(a.at)),
            outcome: outcome.map_or_else(|| "in progress".to_string(), |o| o.result.clone()),
            ended_by: outcome.map(|o| o.by.as_str()),
            ended_at: outcome.map(|o| marks::format_time(o.at)),
            duration_secs: outcome.zip(began).map(|(o, b)| (o.at - b).whole_seconds()),
            ec2_state: instance.ec2_state.clone(),
        }
    }

    fn in_progress(&self) -> bool {
        self.ended_by.is_none()
    }
}

/// Drains in progress first (oldest first), then ended ones (latest first).
pub fn rows(instances: &[MarkedInstance]) -> Vec<DrainStatus> {
    let mut rows: Vec<DrainStatus> = instances.iter().map(DrainStatus::of).collect();
    rows.sort_by(|a, b| {
        b.in_progress()
            .cmp(&a.in_progress())
            .then_with(|| {
                if a.in_progress() {
                    a.began_at.cmp(&b.began_at)
                } else {
                    b.ended_at.cmp(&a.ended_at)
                }
            })
            .then_with(|| a.instance_id.cmp(&b.instance_id))
    });
    rows
}

/// A plain table, one drain per line.
pub fn table(rows: &[DrainStatus], at: OffsetDateTime) -> String {
    let header = [
        "INSTANCE", "GROUP", "ACTION", "BEGAN", "AGENT", "OUTCOME", "BY", "TOOK", "EC2",
    ];
    let mut lines: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for row in rows {
        let took = match (row.duration_secs, &row.began_at) {
            (Some(secs), _) => format!("{secs}s"),
            (None, Some(began)) => {
                OffsetDateTime::parse(began, &time::format_description::well_known::Rfc3339)
                    .map(|b| format!("{}s so far", (at - b).whole_seconds()))
                    .unwrap_or_default()
            }
            _ => String::new(),
        };
        let dash = |v: Option<&str>| v.unwrap_or("-").to_string();
        lines.push(vec![
            row.instance_id.clone(),
            dash(row.group.as_deref()),
            dash(row.transition),
            dash(row.began_at.as_deref()),
            dash(row.agent.as_deref()),
            row.outcome.clone(),
            dash(row.ended_by),
            if took.is_empty() { "-".into() } else { took },
            row.ec2_state.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            lines
                .iter()
                .map(|l| l[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in &lines {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use lifeguard_common::message::{ReportPhase, Transition};
    use time::macros::datetime;

    use super::*;
    use crate::marks::{ActionMark, AgentMark, EndedBy, Marks, OutcomeMark};

    const AT: OffsetDateTime = datetime!(2026-11-22 10:00:00 UTC);

    fn instance(id: &str, outcome: Option<(&str, EndedBy, i64)>) -> MarkedInstance {
        MarkedInstance {
            instance_id: id.into(),
            asg: Some("web".into()),
            ec2_state: if outcome.is_some() {
                "terminated"
            } else {
                "running"
            }
            .into(),
            marks: Marks {
                action: Some(ActionMark {
                    transition: Transition::Terminating,
                    began_at: AT,
                    hook: Some("drain".into()),
                }),
                agent: Some(AgentMark {
                    phase: ReportPhase::DrainStarted,
                    seq: 1,
                    at: AT + time::Duration::seconds(2),
                    promise_secs: Some(30),
                    result: None,
                    action_done: None,
                }),
                heartbeat: None,
                takeover: None,
                outcome: outcome.map(|(result, by, secs)| OutcomeMark {
                    result: result.into(),
                    by,
                    at: AT + time::Duration::seconds(secs),
                }),
                archive: None,
            },
        }
    }

    #[test]
    fn drains_in_progress_come_first_then_latest_outcomes() {
        let found = [
            instance("i-1", Some(("CONTINUE", EndedBy::Agent, 40))),
            instance("i-2", None),
            instance("i-3", Some(("ABANDON", EndedBy::Controller, 90))),
        ];
        let rows = rows(&found);
        let order: Vec<&str> = rows.iter().map(|r| r.instance_id.as_str()).collect();
        assert_eq!(order, ["i-2", "i-3", "i-1"]);
        assert_eq!(rows[1].duration_secs, Some(90));
        let text = table(&rows, AT + time::Duration::seconds(100));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("INSTANCE"), "{text}");
        assert!(
            lines[1].contains("in progress") && lines[1].contains("100s so far"),
            "{text}"
        );
        assert!(
            lines[2].contains("ABANDON") && lines[2].contains("controller"),
            "{text}"
        );
        assert!(
            lines[3].contains("CONTINUE") && lines[3].contains("agent"),
            "{text}"
        );
    }

    #[test]
    fn an_outcome_of_an_earlier_action_is_not_this_ones() {
        let mut earlier = instance("i-1", Some(("CONTINUE", EndedBy::Agent, -10)));
        earlier.ec2_state = "running".into();
        let row = DrainStatus::of(&earlier);
        assert_eq!(row.outcome, "in progress");
        assert_eq!(row.ended_by, None);
    }
}
