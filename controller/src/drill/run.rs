//! The drill: terminate the chosen instances through their group, follow each drain until the
//! instance has left, then find and verify each archive, and report.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use time::OffsetDateTime;

use super::api::DrillApi;
use super::follow::{Phase, Timeline};
use super::plan::{Pick, pick};
use super::report::{DrillReport, instance_report, report};
use crate::fleet::FleetError;

/// What `lifeguard-controller drill` asks for.
#[derive(Debug, Clone)]
pub struct DrillRequest {
    pub group: String,
    pub pick: Pick,
    pub keep_capacity: bool,
    /// The longest the drill follows the drains.
    pub timeout: Duration,
    pub bucket: String,
    /// The agents' `upload.prefix`: archives are under `{prefix}/{group}/{instance}/`.
    pub prefix: String,
    pub poll: Duration,
    pub dry_run: bool,
}

pub enum Drilled {
    Report(Box<DrillReport>),
    /// `--dry-run`: the calls the drill would make.
    DryRun(Vec<String>),
    Refused(String),
}

/// One line per instance, rewritten in place on a terminal; elsewhere a line whenever an
/// instance's phase changes.
pub struct Live {
    /// The service logs the report instead: nothing is drawn.
    silent: bool,
    terminal: bool,
    drawn: usize,
    last: Vec<Phase>,
}

impl Live {
    pub fn new() -> Self {
        Live {
            silent: false,
            terminal: std::io::stderr().is_terminal(),
            drawn: 0,
            last: Vec::new(),
        }
    }

    /// Draws nothing (the controller service).
    pub fn silent() -> Self {
        Live {
            silent: true,
            ..Live::new()
        }
    }

    fn show(&mut self, timelines: &[Timeline], now: OffsetDateTime) {
        if self.silent {
            return;
        }
        let line = |t: &Timeline| {
            format!(
                "{:<20} {:<16} {:>6.0}s",
                t.instance_id,
                t.phase.as_str(),
                (t.gone_at.unwrap_or(now) - t.terminated_at).as_seconds_f64()
            )
        };
        let mut err = std::io::stderr().lock();
        if self.terminal {
            if self.drawn > 0 {
                let _ = write!(err, "\x1b[{}A", self.drawn);
            }
            for t in timelines {
                let _ = writeln!(err, "\x1b[2K{}", line(t));
            }
            self.drawn = timelines.len();
        } else {
            for (n, t) in timelines.iter().enumerate() {
                if self.last.get(n) != Some(&t.phase) {
                    let _ = writeln!(err, "{}", line(t));
                }
            }
            self.last = timelines.iter().map(|t| t.phase).collect();
        }
    }
}

impl Default for Live {
    fn default() -> Self {
        Live::new()
    }
}

pub async fn drill<A: DrillApi>(
    api: &A,
    request: &DrillRequest,
    live: &mut Live,
) -> Result<Drilled, FleetError> {
    let Some(group) = api.group(&request.group).await? else {
        return Ok(Drilled::Refused(format!("no group {:?}", request.group)));
    };
    let chosen = match pick(&group, &request.pick, !request.keep_capacity) {
        Ok(chosen) => chosen,
        Err(why) => return Ok(Drilled::Refused(why)),
    };
    if request.dry_run {
        return Ok(Drilled::DryRun(
            chosen
                .iter()
                .map(|m| {
                    format!(
                        "autoscaling TerminateInstanceInAutoScalingGroup InstanceId={} \
                         ShouldDecrementDesiredCapacity={} ({})",
                        m.id, !request.keep_capacity, m.zone
                    )
                })
                .collect(),
        ));
    }
    let started = OffsetDateTime::now_utc();
    let mut timelines = Vec::new();
    for member in &chosen {
        api.terminate(&member.id, !request.keep_capacity).await?;
        tracing::info!(instance_id = %member.id, asg = %group.name, "drill: terminated through the group");
        timelines.push(Timeline::new(
            &member.id,
            &member.zone,
            OffsetDateTime::now_utc(),
        ));
    }
    let deadline = tokio::time::Instant::now() + request.timeout;
    loop {
        // Only the instances still leaving are looked at: a drill of thousands spends fewer
        // calls as it goes.
        let ids: Vec<String> = timelines
            .iter()
            .filter(|t| !t.is_done())
            .map(|t| t.instance_id.clone())
            .collect();
        // A look that fails is tried at the next tick: the drill's own calls may be throttled.
        match api.look(&group.name, &ids).await {
            Ok(looks) => {
                let now = OffsetDateTime::now_utc();
                for timeline in timelines.iter_mut().filter(|t| !t.is_done()) {
                    let look = looks
                        .get(&timeline.instance_id)
                        .cloned()
                        .unwrap_or_default();
                    timeline.observe(look.state.as_deref(), look.marks.as_ref(), now);
                }
                live.show(&timelines, now);
            }
            Err(error) => tracing::warn!(%error, "drill: look failed; trying again"),
        }
        if timelines.iter().all(Timeline::is_done) || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(request.poll).await;
    }
    let ended = OffsetDateTime::now_utc();
    let mut instances = Vec::new();
    for timeline in &timelines {
        let prefix = format!(
            "{}/{}/{}/",
            request.prefix.trim_end_matches('/'),
            group.name,
            timeline.instance_id
        );
        let archives = api.archives(&request.bucket, &prefix).await?;
        let mut line = instance_report(timeline, &archives, started, ended);
        if !timeline.is_done() {
            line.lost.push(format!(
                "still {} when the drill's timeout ran out",
                timeline.phase.as_str()
            ));
        }
        instances.push(line);
    }
    Ok(Drilled::Report(Box::new(report(
        &group.name,
        started,
        ended,
        instances,
    ))))
}
