//! One drain, from the first report to the lifecycle completion: steps, archive and upload,
//! heartbeats while work remains, completion retried until the action's own deadline. Every
//! stage is recorded on disk before the next begins, so a restarted agent picks up where it
//! stopped and never uploads or completes twice.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lifeguard_common::message::{AgentReport, ArchiveSummary, ReportPhase, StepReport};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{AgentConfig, OnFailure};
use crate::lifecycle::{AutoScaling, Completion, HookInfo, LifecycleResult, heartbeat_interval};
use crate::pack::{self, PackError};
use crate::report::ReportSink;
use crate::state::{self, DrainRecord};
use crate::steps::{StepEnv, run_step};
use crate::upload::ArchiveStore;
use crate::watch::Trigger;

/// What the drain works with, shared with its heartbeat task.
pub struct Deps<A, S, R> {
    pub autoscaling: A,
    pub store: Option<S>,
    pub reports: R,
}

/// Facts about this drain that do not change while it runs.
#[derive(Debug, Clone)]
pub struct DrainPlan {
    pub instance_id: String,
    pub asg: Option<String>,
    pub trigger: Trigger,
    /// The hook whose action holds the instance; `None` when no action waits.
    pub hook: Option<HookInfo>,
    /// The lifecycle action ends (by its global timeout) at this instant.
    pub action_deadline: Option<Instant>,
    /// The archive must be uploaded by then (spot interruption minus the margin).
    pub archive_deadline: Option<Instant>,
    /// Where step outputs are kept until archived (they survive a restart).
    pub work_dir: PathBuf,
}

/// How the drain ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainOutcome {
    /// `false` when a stop signal left steps to run: the record stays for a restart.
    pub finished: bool,
    pub result: Option<LifecycleResult>,
    pub completion: Option<Completion>,
    pub archive: Option<ArchiveSummary>,
    pub archive_error: Option<String>,
    pub steps: Vec<StepReport>,
}

/// Upload time allowed after SIGTERM before the agent gives up and exits.
pub const SHUTDOWN_UPLOAD_GRACE: Duration = Duration::from_secs(30);

pub struct Drain<'a, A, S, R> {
    pub config: &'a AgentConfig,
    pub deps: Arc<Deps<A, S, R>>,
    pub plan: DrainPlan,
    pub shutdown: CancellationToken,
}

impl<A, S, R> Drain<'_, A, S, R>
where
    A: AutoScaling + 'static,
    S: ArchiveStore + 'static,
    R: ReportSink + 'static,
{
    fn report(&self, record: &DrainRecord, phase: ReportPhase, seq: u64) -> AgentReport {
        AgentReport {
            phase,
            instance_id: self.plan.instance_id.clone(),
            asg: self.plan.asg.clone(),
            hook: self.plan.hook.as_ref().map(|h| h.name.clone()),
            token: None,
            reason: Some(self.plan.trigger.reason().to_string()),
            seq,
            archive: record.archive.clone(),
            steps: record.steps.clone(),
            result: None,
            error: record.archive_error.clone(),
        }
    }

    async fn send(&self, report: AgentReport) {
        if let Err(error) = self.deps.reports.send(&report).await {
            tracing::warn!(instance_id = %self.plan.instance_id, phase = report.phase.name(), %error, "report not sent");
        }
    }

    fn save(&self, record: &DrainRecord) {
        if let Err(error) = state::save(&self.config.state.path, record) {
            // Losing the record only risks redoing work after a restart; the drain goes on.
            tracing::error!(instance_id = %self.plan.instance_id, %error, "drain record not saved");
        }
    }

    pub async fn run(&self, mut record: DrainRecord) -> DrainOutcome {
        let instance_id = self.plan.instance_id.clone();
        let resumed = record.seq > 0;
        tracing::info!(%instance_id, asg = self.plan.asg.as_deref(), reason = self.plan.trigger.reason(),
            hook = self.plan.hook.as_ref().map(|h| h.name.as_str()), resumed, "drain started");
        record.asg = self.plan.asg.clone();
        record.hook = self.plan.hook.as_ref().map(|h| h.name.clone());
        let seq = Arc::new(AtomicU64::new(record.seq));
        if !resumed {
            record.seq = seq.fetch_add(1, Ordering::SeqCst) + 1;
            self.save(&record);
            self.send(self.report(&record, ReportPhase::DrainStarted, record.seq))
                .await;
        }

        let heartbeats = CancellationToken::new();
        let heartbeat_task = self.start_heartbeats(&record, seq.clone(), heartbeats.clone());

        self.run_steps(&mut record).await;
        // Also on a stop signal mid-drain: the instance may be shutting down, and the logs
        // must be safe before it does.
        if record.archive.is_none() && record.archive_error.is_none() {
            self.archive(&mut record).await;
        }

        heartbeats.cancel();
        if let Some(task) = heartbeat_task {
            let _ = task.await;
        }
        record.seq = seq.load(Ordering::SeqCst);

        let steps_left = self
            .config
            .drain
            .steps
            .len()
            .saturating_sub(record.steps.len());
        if self.shutdown.is_cancelled() && steps_left > 0 {
            // Completing now would let the instance go with its drain half done. The record
            // stays unfinished: a restarted agent runs the remaining steps and completes; if
            // none comes back, the hook's timeout applies its default result.
            self.save(&record);
            tracing::warn!(%instance_id, steps_left, archived = record.archive.is_some(),
                "stopped mid-drain; the lifecycle action is left for the restarted agent");
            return DrainOutcome {
                finished: false,
                result: None,
                completion: None,
                archive: record.archive,
                archive_error: record.archive_error,
                steps: record.steps,
            };
        }

        let result = if record.abandon {
            LifecycleResult::Abandon
        } else {
            LifecycleResult::Continue
        };
        let mut completion = None;
        if !record.lifecycle_done {
            completion = self.complete(result).await;
            record.lifecycle_done = true;
            self.save(&record);
        }

        let phase = if record.archive_error.is_some() {
            ReportPhase::DrainFailed
        } else {
            ReportPhase::DrainFinished
        };
        record.seq += 1;
        let mut report = self.report(&record, phase, record.seq);
        report.result = self.plan.hook.as_ref().map(|_| result.as_str().to_string());
        self.send(report).await;
        record.finished = true;
        self.save(&record);
        tracing::info!(%instance_id, result = result.as_str(), completion = ?completion,
            archive = ?record.archive.as_ref().map(|a| &a.key), error = ?record.archive_error, "drain finished");
        DrainOutcome {
            finished: true,
            result: self.plan.hook.as_ref().map(|_| result),
            completion,
            archive: record.archive,
            archive_error: record.archive_error,
            steps: record.steps,
        }
    }

    fn step_env(&self) -> StepEnv {
        let mut env = StepEnv::default();
        env.set("INSTANCE_ID", &self.plan.instance_id);
        env.set("REASON", self.plan.trigger.reason());
        if let Some(asg) = &self.plan.asg {
            env.set("ASG", asg);
        }
        if let Some(hook) = &self.plan.hook {
            env.set("HOOK", &hook.name);
        }
        if let Trigger::Spot { action, at } = &self.plan.trigger {
            env.set("SPOT_ACTION", action.as_str());
            if let Some(at) = at.and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            }) {
                env.set("SPOT_TIME", at);
            }
        }
        env
    }

    async fn run_steps(&self, record: &mut DrainRecord) {
        let env = self.step_env();
        let drain_deadline = self
            .plan
            .archive_deadline
            .or(self.plan.action_deadline)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        for (index, step) in self.config.drain.steps.iter().enumerate() {
            if record.steps.iter().any(|done| done.name == step.name) {
                continue;
            }
            // Asked to stop: steps not run yet are left for the restarted agent to resume.
            if self.shutdown.is_cancelled() {
                break;
            }
            let result = tokio::select! {
                result = run_step(step, &env, drain_deadline) => result,
                () = self.shutdown.cancelled() => {
                    // Dropping the step stops its process group; it is not recorded, so the
                    // restarted agent runs it again.
                    tracing::warn!(instance_id = %self.plan.instance_id, step = %step.name,
                        "stop signal: drain step interrupted");
                    break;
                }
            };
            tracing::info!(instance_id = %self.plan.instance_id, step = %step.name, outcome = ?result.outcome,
                exit_code = ?result.exit_code, duration_ms = result.duration.as_millis() as u64, "drain step done");
            let output_path = self
                .plan
                .work_dir
                .join(pack::step_output_name(index, &step.name));
            if let Err(error) = std::fs::create_dir_all(&self.plan.work_dir)
                .and_then(|()| std::fs::write(&output_path, &result.output))
            {
                tracing::warn!(path = %output_path.display(), %error, "step output not kept");
            }
            if result.failed() && step.on_failure == OnFailure::Abandon {
                record.abandon = true;
            }
            record.steps.push(StepReport {
                name: result.name.clone(),
                outcome: result.outcome,
                exit_code: result.exit_code,
                duration_ms: u64::try_from(result.duration.as_millis()).unwrap_or(u64::MAX),
            });
            self.save(record);
        }
    }

    async fn archive(&self, record: &mut DrainRecord) {
        let (Some(upload), Some(store)) = (&self.config.upload, self.deps.store.as_ref()) else {
            return;
        };
        let deadline = self
            .plan
            .archive_deadline
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(upload.timeout_secs));
        let job = pack::PackJob::new(self.config, &self.plan, record);
        if record.upload_key.as_deref() == Some(job.key()) {
            // An earlier run got as far as the upload and was killed: its multipart upload
            // would otherwise stay open (and billed) until a bucket lifecycle rule removes it.
            let aborted = pack::abort_leftovers(store, &job, deadline).await;
            if aborted > 0 {
                tracing::info!(instance_id = %self.plan.instance_id, key = job.key(), aborted, "aborted uploads left by the previous run");
            }
        } else {
            record.upload_key = Some(job.key().to_string());
            self.save(record);
        }
        let uploading = pack::archive_and_upload(store, job, deadline);
        let outcome = tokio::select! {
            outcome = uploading => outcome,
            () = self.shutdown_deadline(deadline) => Err(PackError::Shutdown),
        };
        match outcome {
            Ok(summary) => record.archive = Some(summary),
            Err(error) => {
                tracing::error!(instance_id = %self.plan.instance_id, %error, "archive not uploaded");
                record.archive_error = Some(error.to_string());
            }
        }
        self.save(record);
    }

    /// Resolves once a shutdown has been asked for and its grace has passed (or the deadline).
    async fn shutdown_deadline(&self, deadline: Instant) {
        self.shutdown.cancelled().await;
        let grace_end = (Instant::now() + SHUTDOWN_UPLOAD_GRACE).min(deadline);
        tokio::time::sleep_until(grace_end).await;
    }

    fn start_heartbeats(
        &self,
        record: &DrainRecord,
        seq: Arc<AtomicU64>,
        stop: CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let hook = self.plan.hook.clone()?;
        if record.lifecycle_done {
            return None;
        }
        let asg = self.plan.asg.clone()?;
        let deps = self.deps.clone();
        let instance_id = self.plan.instance_id.clone();
        let reason = self.plan.trigger.reason().to_string();
        Some(tokio::spawn(async move {
            let interval = heartbeat_interval(hook.heartbeat_timeout);
            // One at once: the action may have waited a while before the drain began.
            let mut next = Instant::now();
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep_until(next) => {}
                }
                match deps
                    .autoscaling
                    .heartbeat(&asg, &hook.name, &instance_id)
                    .await
                {
                    Ok(true) => {
                        next = Instant::now() + interval;
                        tracing::debug!(%instance_id, %asg, hook = %hook.name, "lifecycle heartbeat sent");
                        let report = AgentReport {
                            phase: ReportPhase::DrainHeartbeat,
                            instance_id: instance_id.clone(),
                            asg: Some(asg.clone()),
                            hook: Some(hook.name.clone()),
                            token: None,
                            reason: Some(reason.clone()),
                            seq: seq.fetch_add(1, Ordering::SeqCst) + 1,
                            archive: None,
                            steps: Vec::new(),
                            result: None,
                            error: None,
                        };
                        if let Err(error) = deps.reports.send(&report).await {
                            tracing::warn!(%instance_id, %error, "heartbeat report not sent");
                        }
                    }
                    Ok(false) => {
                        tracing::warn!(%instance_id, %asg, hook = %hook.name,
                            "no lifecycle action waits any more (completed elsewhere or timed out)");
                        return;
                    }
                    Err(error) => {
                        // Try again soon: a third of the timeout leaves room for two more tries.
                        next = Instant::now() + (interval / 3).max(Duration::from_secs(1));
                        tracing::warn!(%instance_id, %error, "lifecycle heartbeat failed");
                    }
                }
            }
        }))
    }

    /// Completes the action by instance id, retrying transient failures until the action's
    /// own deadline; `None` when no action waits or it could not be completed.
    async fn complete(&self, result: LifecycleResult) -> Option<Completion> {
        let (Some(hook), Some(asg)) = (&self.plan.hook, &self.plan.asg) else {
            return None;
        };
        let instance_id = &self.plan.instance_id;
        let deadline = self
            .plan
            .action_deadline
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(300));
        let mut delay = Duration::from_millis(200);
        loop {
            match self
                .deps
                .autoscaling
                .complete(asg, &hook.name, instance_id, result)
                .await
            {
                Ok(completion) => {
                    tracing::info!(%instance_id, %asg, hook = %hook.name, result = result.as_str(),
                        ?completion, "lifecycle action completed");
                    return Some(completion);
                }
                Err(error) if error.is_transient() && Instant::now() + delay < deadline => {
                    tracing::warn!(%instance_id, %error, "completing the lifecycle action failed; retrying");
                    tokio::time::sleep(delay.mul_f64(0.5 + fastrand::f64())).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(error) => {
                    // The hook's default result applies at its timeout: the instance is never
                    // held forever because of us.
                    tracing::error!(%instance_id, %error, default_result = %hook.default_result,
                        "lifecycle action not completed; the hook's default result will apply");
                    return None;
                }
            }
        }
    }
}
