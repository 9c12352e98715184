//! The drill's report: per instance the times from its termination, each step, the archive and
//! who completed the action; what was lost; a summary. Text, JSON, and a self-contained HTML
//! page with a timeline (one bar per instance, its phases coloured).

use serde::Serialize;
use time::OffsetDateTime;

use super::follow::Timeline;
use super::verify::ArchiveCheck;

#[derive(Debug, Clone, Serialize)]
pub struct StepTime {
    pub name: String,
    pub outcome: String,
    pub secs: f64,
}

/// A span of the instance's way out, in seconds from the drill's start.
#[derive(Debug, Clone, Serialize)]
pub struct Span {
    pub phase: &'static str,
    pub from: f64,
    pub to: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct InstanceReport {
    pub instance_id: String,
    pub zone: String,
    /// From the termination to `Terminating:Wait` (the load balancer's deregistration delay and
    /// plain `Terminating`).
    pub to_wait_secs: Option<f64>,
    /// From the termination to the agent's drain start.
    pub to_drain_secs: Option<f64>,
    pub steps: Vec<StepTime>,
    pub archive_key: Option<String>,
    pub archive_bytes: Option<u64>,
    /// From the archive's start (the manifest's time) to the end of its upload (S3's time).
    pub archive_secs: Option<f64>,
    pub result: Option<String>,
    pub completed_by: Option<String>,
    pub timed_out: bool,
    /// What did not reach S3 intact.
    pub lost: Vec<String>,
    /// What the agent left out on purpose (the manifest's skipped entries).
    pub skipped: Vec<String>,
    pub spans: Vec<Span>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub instances: usize,
    pub archived: usize,
    pub lost: usize,
    pub timed_out: usize,
    pub bytes: u64,
    pub took_secs: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    pub group: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    pub instances: Vec<InstanceReport>,
    pub summary: Summary,
}

impl DrillReport {
    /// Anything lost, or any action ended by its timeout.
    pub fn failed(&self) -> bool {
        self.summary.lost > 0 || self.summary.timed_out > 0
    }
}

fn secs(from: OffsetDateTime, to: OffsetDateTime) -> f64 {
    (to - from).as_seconds_f64().max(0.0)
}

fn manifest_time(manifest: &serde_json::Value, pointer: &str) -> Option<OffsetDateTime> {
    let text = manifest.pointer(pointer)?.as_str()?;
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

/// One instance's line of the report from its timeline and the archives found for it.
pub fn instance_report(
    timeline: &Timeline,
    archives: &[ArchiveCheck],
    drill_started: OffsetDateTime,
    ended: OffsetDateTime,
) -> InstanceReport {
    let t0 = timeline.terminated_at;
    // The newest archive is this drain's; older ones are earlier drains' (a restarted agent).
    let archive = archives
        .iter()
        .filter(|a| {
            a.uploaded_at
                .is_none_or(|at| at >= t0 - time::Duration::minutes(1))
        })
        .max_by_key(|a| a.uploaded_at);
    let manifest = archive.and_then(|a| a.manifest.as_ref());
    let mut lost = Vec::new();
    match archive {
        None => lost.push("no archive in S3".to_string()),
        Some(found) => lost.extend(found.problems.iter().cloned()),
    }
    let list = |pointer: &str| -> Vec<serde_json::Value> {
        manifest
            .and_then(|m| m.pointer(pointer))
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default()
    };
    for error in list("/errors") {
        lost.push(format!(
            "unreadable on the instance: {} ({})",
            error["path"].as_str().unwrap_or("?"),
            error["error"].as_str().unwrap_or("?")
        ));
    }
    let skipped = list("/skipped")
        .iter()
        .map(|s| {
            format!(
                "{} ({})",
                s["path"].as_str().unwrap_or("?"),
                s["reason"].as_str().unwrap_or("?")
            )
        })
        .collect();
    let steps = list("/drain/steps")
        .iter()
        .map(|s| StepTime {
            name: s["name"].as_str().unwrap_or("?").to_string(),
            outcome: s["outcome"].as_str().unwrap_or("?").to_string(),
            secs: s["duration_ms"].as_u64().unwrap_or(0) as f64 / 1000.0,
        })
        .collect();
    // The agent's own record is exact; the marks only show what a look happened to catch.
    let drain_started = manifest
        .and_then(|m| manifest_time(m, "/drain/drain_started_at"))
        .or(timeline.drain_started_at);
    let archive_started = manifest.and_then(|m| manifest_time(m, "/created_at"));
    let uploaded = archive.and_then(|a| a.uploaded_at);
    let completed = timeline.outcome.as_ref().map(|o| o.at);
    let end = timeline.gone_at.unwrap_or(ended);
    let mut spans = Vec::new();
    let mut span =
        |phase: &'static str, from: Option<OffsetDateTime>, to: Option<OffsetDateTime>| {
            if let (Some(from), Some(to)) = (from, to)
                && to > from
            {
                spans.push(Span {
                    phase,
                    from: secs(drill_started, from),
                    to: secs(drill_started, to),
                });
            }
        };
    let held = timeline.wait_at.or(drain_started);
    span("terminating", Some(t0), held.or(Some(end)));
    span("waiting", timeline.wait_at, drain_started);
    span("steps", drain_started, archive_started.or(completed));
    span("archive", archive_started, uploaded.or(completed));
    span("leaving", completed.or(uploaded), Some(end));
    InstanceReport {
        instance_id: timeline.instance_id.clone(),
        zone: timeline.zone.clone(),
        to_wait_secs: timeline.wait_at.map(|at| secs(t0, at)),
        to_drain_secs: drain_started.map(|at| secs(t0, at)),
        steps,
        archive_key: archive.map(|a| a.key.clone()),
        archive_bytes: archive.map(|a| a.bytes),
        archive_secs: archive_started
            .zip(uploaded)
            .map(|(from, to)| secs(from, to)),
        result: timeline.outcome.as_ref().map(|o| o.result.clone()),
        completed_by: timeline.outcome.as_ref().map(|o| o.by.as_str().to_string()),
        timed_out: timeline.ended_by_timeout(),
        lost,
        skipped,
        spans,
    }
}

pub fn report(
    group: &str,
    started_at: OffsetDateTime,
    ended_at: OffsetDateTime,
    instances: Vec<InstanceReport>,
) -> DrillReport {
    let summary = Summary {
        instances: instances.len(),
        archived: instances.iter().filter(|i| i.archive_key.is_some()).count(),
        lost: instances.iter().filter(|i| !i.lost.is_empty()).count(),
        timed_out: instances.iter().filter(|i| i.timed_out).count(),
        bytes: instances.iter().filter_map(|i| i.archive_bytes).sum(),
        took_secs: secs(started_at, ended_at),
    };
    DrillReport {
        group: group.to_string(),
        started_at,
        instances,
        summary,
    }
}

/// Names from the instance (file names, step names) without control characters: an escape
/// sequence in a log file's name must not drive the operator's terminal.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn opt_secs(value: Option<f64>) -> String {
    value.map_or("-".to_string(), |s| format!("{s:.1}s"))
}

/// The report as text: a table, the steps and losses of each instance, a summary.
pub fn text(report: &DrillReport) -> String {
    let mut out = format!(
        "{:<20} {:<11} {:>8} {:>8} {:>10} {:>9} {:<9} {:<10} {}\n",
        "INSTANCE", "ZONE", "TO WAIT", "TO DRAIN", "ARCHIVE", "UPLOAD", "RESULT", "BY", "LOST"
    );
    for i in &report.instances {
        out.push_str(&format!(
            "{:<20} {:<11} {:>8} {:>8} {:>10} {:>9} {:<9} {:<10} {}\n",
            i.instance_id,
            i.zone,
            opt_secs(i.to_wait_secs),
            opt_secs(i.to_drain_secs),
            i.archive_bytes.map_or("-".into(), |b| format!("{b} B")),
            opt_secs(i.archive_secs),
            i.result.as_deref().unwrap_or("-"),
            i.completed_by.as_deref().unwrap_or("-"),
            if i.lost.is_empty() {
                "nothing".to_string()
            } else {
                i.lost.len().to_string()
            },
        ));
    }
    for i in &report.instances {
        for step in &i.steps {
            out.push_str(&format!(
                "  {} step {}: {} in {:.1}s\n",
                i.instance_id,
                printable(&step.name),
                step.outcome,
                step.secs
            ));
        }
        for what in &i.lost {
            out.push_str(&format!("  {} LOST: {}\n", i.instance_id, printable(what)));
        }
        for what in &i.skipped {
            out.push_str(&format!(
                "  {} skipped: {}\n",
                i.instance_id,
                printable(what)
            ));
        }
        if i.timed_out {
            out.push_str(&format!(
                "  {} ended by the hook's timeout, not by the agent or the controller\n",
                i.instance_id
            ));
        }
    }
    let s = &report.summary;
    out.push_str(&format!(
        "{}: {} instance(s) drilled in {:.1}s; {} archived ({} bytes), {} with losses, {} ended by timeout: {}\n",
        report.group,
        s.instances,
        s.took_secs,
        s.archived,
        s.bytes,
        s.lost,
        s.timed_out,
        if report.failed() { "FAILED" } else { "nothing lost" }
    ));
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::macros::datetime;

    use super::*;
    use crate::marks::{EndedBy, OutcomeMark};

    const T0: OffsetDateTime = datetime!(2026-12-03 10:00:00 UTC);

    fn timeline() -> Timeline {
        let mut t = Timeline::new("i-0123456789abcdef0", "eu-west-1a", T0);
        t.wait_at = Some(T0 + time::Duration::seconds(300));
        t.outcome = Some(OutcomeMark {
            result: "CONTINUE".into(),
            by: EndedBy::Agent,
            at: T0 + time::Duration::seconds(320),
        });
        t.gone_at = Some(T0 + time::Duration::seconds(325));
        t
    }

    fn archive(problems: Vec<String>) -> ArchiveCheck {
        ArchiveCheck {
            key: "lifeguard/web/i-0123456789abcdef0/R:i-0123456789abcdef0/x-scale_in.tar.gz".into(),
            bytes: 4096,
            uploaded_at: Some(T0 + time::Duration::seconds(318)),
            manifest: Some(json!({
                "created_at": "2026-12-03T10:05:10Z",
                "drain": {
                    "drain_started_at": "2026-12-03T10:05:01Z",
                    "steps": [{"name": "flush", "outcome": "succeeded", "duration_ms": 2500}]
                },
                "errors": [{"path": "/var/log/app/<script>alert(1)</script>.log", "error": "EACCES"}],
                "skipped": [{"path": "/var/log/app/core", "reason": "special file"}]
            })),
            files_listed: 3,
            files_found: 3,
            problems,
        }
    }

    #[test]
    fn a_whole_archive_gives_the_times_and_the_agents_record() {
        let line = instance_report(&timeline(), &[archive(Vec::new())], T0, T0);
        assert_eq!(line.to_wait_secs, Some(300.0));
        assert_eq!(line.to_drain_secs, Some(301.0));
        assert_eq!(line.archive_secs, Some(8.0));
        assert_eq!(line.steps[0].secs, 2.5);
        assert_eq!(line.completed_by.as_deref(), Some("agent"));
        // A file the instance could not read is lost; a special file was skipped on purpose.
        assert_eq!(line.lost.len(), 1, "{:?}", line.lost);
        assert_eq!(
            line.skipped,
            vec!["/var/log/app/core (special file)".to_string()]
        );
        let report = report("web", T0, T0 + time::Duration::seconds(330), vec![line]);
        assert!(report.failed());
        assert!(text(&report).contains("LOST: unreadable on the instance"));
        // A name with a terminal escape sequence is printed without its control characters.
        let mut hostile = timeline();
        hostile.instance_id = "i-1".into();
        let mut line = instance_report(&hostile, &[], T0, T0);
        line.lost.push("/var/log/\u{1b}]0;owned\u{7}.log".into());
        let printed = text(&report_of(line));
        assert!(
            !printed.chars().any(|c| c.is_control() && c != '\n'),
            "{printed:?}"
        );
    }

    fn report_of(line: InstanceReport) -> DrillReport {
        report("web", T0, T0, vec![line])
    }

    #[test]
    fn no_archive_is_a_loss_and_the_page_escapes_what_came_from_the_instance() {
        let lost = instance_report(&timeline(), &[], T0, T0);
        assert_eq!(lost.lost, vec!["no archive in S3".to_string()]);
        let named = instance_report(&timeline(), &[archive(Vec::new())], T0, T0);
        let page = super::super::html::page(&report("web", T0, T0, vec![lost, named]));
        assert!(
            !page.contains("<script>"),
            "a file name reached the page unescaped"
        );
        assert!(page.contains("&lt;script&gt;"));
        assert!(page.contains("<svg") && page.matches("i-0123456789abcdef0").count() >= 2);
    }
}
