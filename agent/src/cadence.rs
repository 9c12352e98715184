//! What keeps a lifecycle action alive and the controller informed while the agent works (a
//! drain, or launch readiness checks): lifecycle heartbeats every third of the hook's heartbeat
//! timeout, and progress reports on the agent's own cadence, whatever that timeout. The
//! controller takes an agent for dead only once several of the promised reports are missing,
//! so a long step under a one-hour heartbeat timeout is never mistaken for a dead agent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lifeguard_common::message::{AgentReport, ReportPhase};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::drain::Deps;
use crate::lifecycle::{AutoScaling, heartbeat_interval};
use crate::report::ReportSink;

/// What the cadence and the work it accompanies share.
#[derive(Debug, Default)]
pub struct Progress {
    seq: AtomicU64,
    stage: Mutex<String>,
    last_heartbeat_at: Mutex<Option<OffsetDateTime>>,
}

impl Progress {
    pub fn starting_at(seq: u64, stage: &str) -> Arc<Progress> {
        Arc::new(Progress {
            seq: AtomicU64::new(seq),
            stage: Mutex::new(stage.to_string()),
            last_heartbeat_at: Mutex::new(None),
        })
    }

    /// The next report's sequence number.
    pub fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::SeqCst) + 1
    }

    pub fn seq(&self) -> u64 {
        self.seq.load(Ordering::SeqCst)
    }

    pub fn set_stage(&self, stage: &str) {
        // A poisoned lock only means a panic elsewhere mid-assignment of a string; the value
        // is still a whole string.
        *self
            .stage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = stage.to_string();
    }

    pub fn stage(&self) -> String {
        self.stage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn last_heartbeat_at(&self) -> Option<OffsetDateTime> {
        *self
            .last_heartbeat_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn heartbeat_recorded(&self, at: OffsetDateTime) {
        *self
            .last_heartbeat_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(at);
    }

    /// Fills in what every report of this drain or launch carries.
    pub fn stamp(&self, report: &mut AgentReport, interval: Duration) {
        report.stage = Some(self.stage());
        report.report_interval_secs = Some(interval.as_secs().max(1));
        report.lifecycle_heartbeat_at = self
            .last_heartbeat_at()
            .and_then(|at| at.format(&Rfc3339).ok());
    }
}

/// The lifecycle action the cadence keeps alive.
#[derive(Debug, Clone)]
pub struct HeartbeatTarget {
    pub asg: String,
    pub hook: String,
    pub heartbeat_timeout: Duration,
    /// No heartbeat can keep the action past this (its global timeout).
    pub until: Instant,
}

/// The cadence of one drain or launch.
pub struct CadenceSpec {
    /// The report every progress report starts from (instance, group, hook, reason).
    pub template: AgentReport,
    /// `DrainProgress` or `LaunchProgress`.
    pub progress_phase: ReportPhase,
    /// `DrainHeartbeat` reports follow heartbeats of drains; launches send none.
    pub heartbeat_phase: Option<ReportPhase>,
    pub report_interval: Duration,
    pub heartbeats: Option<HeartbeatTarget>,
    /// A heartbeat is due at once (the action may have waited a while before the work began),
    /// unless one was recorded this recently.
    pub last_heartbeat: Option<Instant>,
}

/// The running cadence; heartbeats and reports stop separately (heartbeats before the
/// completion, reports only with the final report).
pub struct Cadence {
    heartbeats: CancellationToken,
    reports: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Cadence {
    pub fn start<A, S, R>(
        deps: Arc<Deps<A, S, R>>,
        spec: CadenceSpec,
        progress: Arc<Progress>,
    ) -> Cadence
    where
        A: AutoScaling + 'static,
        S: Send + Sync + 'static,
        R: ReportSink + 'static,
    {
        let heartbeats = CancellationToken::new();
        let reports = CancellationToken::new();
        let task = tokio::spawn(run(
            deps,
            spec,
            progress,
            heartbeats.clone(),
            reports.clone(),
        ));
        Cadence {
            heartbeats,
            reports,
            task: Some(task),
        }
    }

    /// No more heartbeats: the action is about to be completed.
    pub fn stop_heartbeats(&self) {
        self.heartbeats.cancel();
    }

    /// Stops everything and waits for a call in flight to end.
    pub async fn stop(mut self) {
        self.heartbeats.cancel();
        self.reports.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Cadence {
    fn drop(&mut self) {
        self.heartbeats.cancel();
        self.reports.cancel();
    }
}

async fn run<A, S, R>(
    deps: Arc<Deps<A, S, R>>,
    spec: CadenceSpec,
    progress: Arc<Progress>,
    stop_heartbeats: CancellationToken,
    stop_reports: CancellationToken,
) where
    A: AutoScaling + 'static,
    S: Send + Sync + 'static,
    R: ReportSink + 'static,
{
    let (autoscaling, reports) = (&deps.autoscaling, &deps.reports);
    let instance_id = spec.template.instance_id.clone();
    let mut next_report = Instant::now() + spec.report_interval;
    let mut next_heartbeat = spec.heartbeats.as_ref().map(|target| {
        let interval = heartbeat_interval(target.heartbeat_timeout);
        spec.last_heartbeat
            .map_or_else(Instant::now, |last| last + interval)
    });
    loop {
        let heartbeat_due = next_heartbeat.filter(|_| !stop_heartbeats.is_cancelled());
        let wake = heartbeat_due.map_or(next_report, |due| due.min(next_report));
        tokio::select! {
            () = stop_reports.cancelled() => return,
            () = stop_heartbeats.cancelled(), if heartbeat_due.is_some() => continue,
            () = tokio::time::sleep_until(wake) => {}
        }
        let now = Instant::now();
        if let (Some(due), Some(target)) = (heartbeat_due, &spec.heartbeats)
            && now >= due
        {
            next_heartbeat = if now >= target.until {
                None
            } else {
                heartbeat(autoscaling, reports, &spec, target, &progress).await
            };
        }
        if Instant::now() >= next_report && !stop_reports.is_cancelled() {
            let mut report = spec.template.clone();
            report.phase = spec.progress_phase;
            report.seq = progress.next_seq();
            progress.stamp(&mut report, spec.report_interval);
            if let Err(error) = reports.send(&report).await {
                tracing::warn!(%instance_id, %error, "progress report not sent");
            }
            next_report = Instant::now() + spec.report_interval;
        }
    }
}

/// One heartbeat; when the next one is due (`None`: no action waits any more).
async fn heartbeat<A: AutoScaling, R: ReportSink>(
    autoscaling: &A,
    reports: &R,
    spec: &CadenceSpec,
    target: &HeartbeatTarget,
    progress: &Progress,
) -> Option<Instant> {
    let instance_id = &spec.template.instance_id;
    let interval = heartbeat_interval(target.heartbeat_timeout);
    match autoscaling
        .heartbeat(&target.asg, &target.hook, instance_id)
        .await
    {
        Ok(true) => {
            progress.heartbeat_recorded(OffsetDateTime::now_utc());
            tracing::debug!(%instance_id, asg = %target.asg, hook = %target.hook, "lifecycle heartbeat sent");
            if let Some(phase) = spec.heartbeat_phase {
                let mut report = spec.template.clone();
                report.phase = phase;
                report.seq = progress.next_seq();
                progress.stamp(&mut report, spec.report_interval);
                if let Err(error) = reports.send(&report).await {
                    tracing::warn!(%instance_id, %error, "heartbeat report not sent");
                }
            }
            Some(Instant::now() + interval)
        }
        Ok(false) => {
            tracing::warn!(%instance_id, asg = %target.asg, hook = %target.hook,
                "no lifecycle action waits any more (completed elsewhere, timed out, or not there yet)");
            None
        }
        Err(error) => {
            // Try again soon: a third of the interval leaves room for two more tries.
            tracing::warn!(%instance_id, %error, "lifecycle heartbeat failed");
            Some(Instant::now() + (interval / 3).max(Duration::from_secs(1)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::{Completion, GroupMembership, HookInfo, LifecycleError};
    use lifeguard_common::message::LifecycleResult;

    /// Counts heartbeats; fails the first `failing` of them.
    #[derive(Default)]
    struct Hooks {
        heartbeats: Mutex<u32>,
        failing: Mutex<u32>,
    }

    impl AutoScaling for Hooks {
        async fn membership(&self, _: &str) -> Result<Option<GroupMembership>, LifecycleError> {
            Ok(None)
        }
        async fn hooks(&self, _: &str) -> Result<Vec<HookInfo>, LifecycleError> {
            Ok(Vec::new())
        }
        async fn heartbeat(&self, _: &str, _: &str, id: &str) -> Result<bool, LifecycleError> {
            let mut failing = self.failing.lock().unwrap();
            if *failing > 0 {
                *failing -= 1;
                return Err(LifecycleError::timed_out(
                    "RecordLifecycleActionHeartbeat",
                    id,
                ));
            }
            *self.heartbeats.lock().unwrap() += 1;
            Ok(true)
        }
        async fn complete(
            &self,
            _: &str,
            _: &str,
            _: &str,
            _: LifecycleResult,
        ) -> Result<Completion, LifecycleError> {
            Ok(Completion::Completed)
        }
    }

    #[derive(Default)]
    struct Sent(Mutex<Vec<AgentReport>>);

    impl ReportSink for Sent {
        async fn send(&self, report: &AgentReport) -> Result<(), String> {
            self.0.lock().unwrap().push(report.clone());
            Ok(())
        }
    }

    fn deps(failing: u32) -> Arc<Deps<Hooks, (), Sent>> {
        let hooks = Hooks::default();
        *hooks.failing.lock().unwrap() = failing;
        Arc::new(Deps {
            autoscaling: hooks,
            store: None,
            reports: Sent::default(),
        })
    }

    /// Reports every 100 ms; heartbeats a third of `heartbeat_timeout` apart.
    fn spec(heartbeat_timeout: Duration) -> CadenceSpec {
        CadenceSpec {
            template: AgentReport::new(ReportPhase::DrainProgress, "i-0abc"),
            progress_phase: ReportPhase::DrainProgress,
            heartbeat_phase: Some(ReportPhase::DrainHeartbeat),
            report_interval: Duration::from_millis(100),
            heartbeats: Some(HeartbeatTarget {
                asg: "web".into(),
                hook: "drain".into(),
                heartbeat_timeout,
                until: Instant::now() + heartbeat_timeout * 100,
            }),
            last_heartbeat: None,
        }
    }

    #[tokio::test]
    async fn reports_keep_their_own_cadence_whatever_the_heartbeat_timeout() {
        let deps = deps(0);
        let progress = Progress::starting_at(1, "step:drain-queue");
        // Heartbeats a minute apart; reports ten times a second.
        let cadence = Cadence::start(deps.clone(), spec(Duration::from_secs(180)), progress);
        tokio::time::sleep(Duration::from_millis(1050)).await;
        cadence.stop().await;
        assert_eq!(
            *deps.autoscaling.heartbeats.lock().unwrap(),
            1,
            "one at once"
        );
        let sent = deps.reports.0.lock().unwrap().clone();
        let progress_reports: Vec<&AgentReport> = sent
            .iter()
            .filter(|r| r.phase == ReportPhase::DrainProgress)
            .collect();
        assert!(
            (5..=11).contains(&progress_reports.len()),
            "about ten: {sent:?}"
        );
        for report in &progress_reports {
            assert_eq!(
                report.report_interval_secs,
                Some(1),
                "the promise, in whole seconds"
            );
            assert_eq!(report.stage.as_deref(), Some("step:drain-queue"));
            assert!(report.lifecycle_heartbeat_at.is_some());
        }
        assert_eq!(sent[0].phase, ReportPhase::DrainHeartbeat);
        let seqs: Vec<u64> = sent.iter().map(|r| r.seq).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        assert!(seqs[0] > 1, "numbered after the drain's own reports");
    }

    #[tokio::test]
    async fn a_failed_heartbeat_is_tried_again_soon_and_heartbeats_stop_on_request() {
        let deps = deps(2);
        // Heartbeats 2 s apart; a failed one is tried again after a third of that (at least
        // 1 s): failures at 0 s and 1 s, success at 2 s, the next due at 4 s.
        let cadence = Cadence::start(
            deps.clone(),
            spec(Duration::from_secs(6)),
            Progress::starting_at(0, "archive"),
        );
        tokio::time::sleep(Duration::from_millis(3000)).await;
        assert_eq!(
            *deps.autoscaling.heartbeats.lock().unwrap(),
            1,
            "after two retries"
        );
        cadence.stop_heartbeats();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(*deps.autoscaling.heartbeats.lock().unwrap(), 1, "stopped");
        let before = deps.reports.0.lock().unwrap().len();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            deps.reports.0.lock().unwrap().len() > before,
            "reports go on"
        );
        cadence.stop().await;
    }
}
