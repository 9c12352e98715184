//! One drain, driven. The decisions are [`machine::next`]'s: await the lifecycle action
//! through plain `Terminating`, run the steps, archive and upload, complete the action, send
//! the final report. This module does the I/O of each, records its outcome in the
//! [`machine::DrainRecord`] and saves it before the next, so a restarted agent picks up where
//! it stopped and never runs a step, uploads or completes twice. A [`Cadence`] keeps the action
//! alive with heartbeats and the controller informed with progress reports meanwhile.

mod await_action;
mod complete;
pub mod machine;
mod record;

pub use await_action::hook_for;
pub use complete::complete_action;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lifeguard_common::message::{
    AgentReport, ArchiveSummary, CompletionReport, ReportPhase, StepReport,
};
use time::OffsetDateTime;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cadence::{Cadence, CadenceSpec, HeartbeatTarget, Progress};
use crate::config::{AgentConfig, OnFailure, StepAction};
use crate::imds::InstanceMetadata;
use crate::lifecycle::{AutoScaling, HookInfo};
use crate::pack::{self, PackError};
use crate::report::ReportSink;
use crate::state::StateStore;
use crate::step_runner::run_step_via;
use crate::steps::{StepEnv, run_step};
use crate::upload::ArchiveStore;
use crate::watch::Trigger;
use machine::{Deadlines, DrainRecord, Facts, HookRecord, Next, Stage};

/// What the drain works with, shared with its cadence.
pub struct Deps<A, S, R> {
    pub autoscaling: A,
    pub store: Option<S>,
    pub reports: R,
}

/// Facts about this drain that the archive needs (its key, its manifest's `drain` section).
#[derive(Debug, Clone)]
pub struct DrainPlan {
    pub instance_id: String,
    pub asg: Option<String>,
    pub trigger: Trigger,
    /// The hook whose action holds the instance; `None` when no action waits.
    pub hook: Option<HookRecord>,
    /// Where step outputs are kept until archived (they survive a restart).
    pub work_dir: PathBuf,
}

/// How the drain ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainOutcome {
    /// `false` when a stop signal left work to do: the record stays for a restart.
    pub finished: bool,
    pub completion: Option<CompletionReport>,
    pub archive: Option<ArchiveSummary>,
    pub archive_error: Option<String>,
    pub steps: Vec<StepReport>,
}

/// Upload time allowed after SIGTERM before the agent gives up and exits.
pub const SHUTDOWN_UPLOAD_GRACE: Duration = Duration::from_secs(30);

pub struct Drain<'a, M, A, S, R> {
    pub config: &'a AgentConfig,
    pub imds: &'a M,
    pub deps: Arc<Deps<A, S, R>>,
    pub state: &'a StateStore,
    pub shutdown: CancellationToken,
}

/// The instant matching a wall-clock time (now if it has passed).
pub fn instant_at(at: OffsetDateTime) -> Instant {
    let left = at - OffsetDateTime::now_utc();
    Instant::now() + left.try_into().unwrap_or(Duration::ZERO)
}

impl<M, A, S, R> Drain<'_, M, A, S, R>
where
    M: InstanceMetadata,
    A: AutoScaling + 'static,
    S: ArchiveStore + 'static,
    R: ReportSink + 'static,
{
    fn step_names(&self) -> Vec<String> {
        self.config
            .drain
            .steps
            .iter()
            .map(|s| s.name.clone())
            .collect()
    }

    fn report_interval(&self) -> Duration {
        Duration::from_secs(self.config.report.interval_secs.max(1))
    }

    fn save(&self, record: &DrainRecord) {
        self.state.save_drain(record);
    }

    fn deadlines(&self, record: &DrainRecord) -> Deadlines {
        let upload_timeout = self
            .config
            .upload
            .as_ref()
            .map_or(Duration::from_secs(900), |u| {
                Duration::from_secs(u.timeout_secs)
            });
        machine::deadlines(
            record,
            upload_timeout,
            Duration::from_secs(self.config.archive.spot_margin_secs),
            OffsetDateTime::now_utc(),
        )
    }

    pub fn plan(&self, record: &DrainRecord) -> DrainPlan {
        DrainPlan {
            instance_id: record.instance_id.clone(),
            asg: record.asg.clone(),
            trigger: record.trigger(),
            hook: record.hook.clone(),
            work_dir: pack::work_dir_for(&self.config.state.path),
        }
    }

    /// A report of this drain, with everything the record knows.
    fn report(&self, record: &DrainRecord, phase: ReportPhase) -> AgentReport {
        let mut report = AgentReport::new(phase, &record.instance_id);
        report.asg = record.asg.clone();
        report.hook = record.hook.as_ref().map(|h| h.name.clone());
        report.reason = Some(record.trigger().reason().to_string());
        report.seq = record.seq;
        report
    }

    async fn send(&self, report: &AgentReport) {
        if let Err(error) = self.deps.reports.send(report).await {
            tracing::warn!(instance_id = %report.instance_id, phase = report.phase.name(), %error, "report not sent");
        }
    }

    pub async fn run(&self, mut record: DrainRecord) -> DrainOutcome {
        let instance_id = record.instance_id.clone();
        let steps = self.step_names();
        let progress = Progress::starting_at(record.seq, &record.stage_label(&steps));
        let mut cadence: Option<Cadence> = None;
        let mut hook_cache: Option<Option<HookInfo>> = None;
        if record.asg.is_none() {
            record.asg = self.group_of(&instance_id).await;
        }
        tracing::info!(%instance_id, asg = record.asg.as_deref(), reason = record.trigger().reason(),
            stage = ?record.stage, resumed = record.seq > 0, "drain record opened");
        loop {
            let facts = Facts {
                steps: &steps,
                archive: self.config.upload.is_some() && self.deps.store.is_some(),
                stopping: self.shutdown.is_cancelled(),
            };
            let next = machine::next(&record, &facts);
            progress.set_stage(&record.stage_label(&steps));
            match next {
                Next::LookForAction => self.await_action(&mut record, &mut hook_cache).await,
                Next::RunStep(index) => {
                    self.begin(&mut record, &mut cadence, &progress).await;
                    if !self.run_step(&mut record, index).await {
                        continue;
                    }
                }
                Next::Archive => {
                    self.begin(&mut record, &mut cadence, &progress).await;
                    if !self.archive(&mut record).await {
                        return self.leave(record, cadence, &progress).await;
                    }
                }
                Next::GiveUpArchive => {
                    self.abort_last_upload(&record).await;
                    record.archive_given_up();
                    tracing::error!(%instance_id, attempts = record.archive_attempts,
                        "archive given up: every attempt was cut short");
                    self.save(&record);
                }
                Next::Complete(result) => {
                    self.begin(&mut record, &mut cadence, &progress).await;
                    if let Some(cadence) = &cadence {
                        cadence.stop_heartbeats();
                    }
                    record.last_heartbeat_at = progress.last_heartbeat_at();
                    let (completion, error) = self.complete(&record, result).await;
                    record.completed(completion, error);
                    self.save(&record);
                }
                Next::SkipCompletion(completion) => {
                    record.completed(completion, None);
                    self.save(&record);
                }
                Next::Report(phase) => {
                    self.begin(&mut record, &mut cadence, &progress).await;
                    if let Some(cadence) = cadence.take() {
                        cadence.stop().await;
                    }
                    record.seq = progress.next_seq();
                    record.last_heartbeat_at = progress.last_heartbeat_at();
                    let mut report = self.report(&record, phase);
                    progress.stamp(&mut report, self.report_interval());
                    report.stage = Some("done".to_string());
                    report.archive = record.archive.clone();
                    report.steps = record.steps.clone();
                    report.completion = record.completion;
                    report.result = record
                        .hook
                        .as_ref()
                        .map(|_| record.result().as_str().to_string());
                    let errors: Vec<&str> = [&record.archive_error, &record.completion_error]
                        .into_iter()
                        .filter_map(|e| e.as_deref())
                        .collect();
                    report.error = (!errors.is_empty()).then(|| errors.join("; "));
                    self.send(&report).await;
                    record.reported();
                    self.save(&record);
                    tracing::info!(%instance_id, phase = phase.name(), completion = ?record.completion,
                        archive = ?record.archive.as_ref().map(|a| &a.key), error = ?report.error, "drain finished");
                }
                Next::Leave => return self.leave(record, cadence, &progress).await,
                Next::Done => break,
            }
        }
        DrainOutcome {
            finished: true,
            completion: record.completion,
            archive: record.archive,
            archive_error: record.archive_error,
            steps: record.steps,
        }
    }

    /// Stopped with work left: the record stays for the restarted agent.
    async fn leave(
        &self,
        mut record: DrainRecord,
        cadence: Option<Cadence>,
        progress: &Progress,
    ) -> DrainOutcome {
        if let Some(cadence) = cadence {
            cadence.stop().await;
        }
        record.seq = record.seq.max(progress.seq());
        record.last_heartbeat_at = progress.last_heartbeat_at().or(record.last_heartbeat_at);
        self.save(&record);
        tracing::warn!(instance_id = %record.instance_id, stage = ?record.stage,
            steps_done = record.steps.len(), archived = record.archive.is_some(),
            "stopped mid-drain; the lifecycle action is left for the restarted agent");
        DrainOutcome {
            finished: false,
            completion: None,
            archive: record.archive,
            archive_error: record.archive_error,
            steps: record.steps,
        }
    }

    /// Once the drain has begun: the first report (for a new drain) and the cadence.
    async fn begin(
        &self,
        record: &mut DrainRecord,
        cadence: &mut Option<Cadence>,
        progress: &Arc<Progress>,
    ) {
        if cadence.is_some() || record.stage != Stage::Draining {
            return;
        }
        if record.seq == 0 {
            record.seq = progress.next_seq();
            self.save(record);
            let mut report = self.report(record, ReportPhase::DrainStarted);
            progress.stamp(&mut report, self.report_interval());
            self.send(&report).await;
            tracing::info!(instance_id = %record.instance_id, asg = record.asg.as_deref(),
                hook = record.hook.as_ref().map(|h| h.name.as_str()),
                action_confirmed = record.action_confirmed, "drain started");
        }
        let heartbeats = match (&record.hook, &record.asg) {
            (Some(hook), Some(asg)) if record.completion.is_none() => {
                let began = record.drain_started_at.unwrap_or(record.noticed_at);
                Some(HeartbeatTarget {
                    asg: asg.clone(),
                    hook: hook.name.clone(),
                    heartbeat_timeout: hook.heartbeat_timeout(),
                    until: instant_at(began + hook.global_timeout()),
                })
            }
            _ => None,
        };
        let last_heartbeat = record.last_heartbeat_at.map(instant_at);
        *cadence = Some(Cadence::start(
            self.deps.clone(),
            CadenceSpec {
                template: self.report(record, ReportPhase::DrainProgress),
                progress_phase: ReportPhase::DrainProgress,
                heartbeat_phase: Some(ReportPhase::DrainHeartbeat),
                report_interval: self.report_interval(),
                heartbeats,
                last_heartbeat,
            },
            progress.clone(),
        ));
    }

    /// Runs one step; `false` when a stop signal interrupted it (not recorded: the restarted
    /// agent runs it again).
    async fn run_step(&self, record: &mut DrainRecord, index: usize) -> bool {
        let step = &self.config.drain.steps[index];
        let deadline = instant_at(self.deadlines(record).steps);
        let env = self.step_env(record);
        crate::service::notify_status(&format!("draining: step {}", step.name));
        let run = async {
            match (&self.config.drain.step_runner, step.action()) {
                // Waiting for connections needs no privilege: it stays in the agent.
                (Some(_), Ok(StepAction::WaitConnections(_))) | (None, _) => {
                    run_step(step, &env, deadline).await
                }
                (Some(socket), _) => run_step_via(socket, index, step, &env, deadline).await,
            }
        };
        let result = tokio::select! {
            result = run => result,
            () = self.shutdown.cancelled() => {
                // Dropping the step stops its process group.
                tracing::warn!(instance_id = %record.instance_id, step = %step.name,
                    "stop signal: drain step interrupted");
                return false;
            }
        };
        tracing::info!(instance_id = %record.instance_id, step = %step.name, outcome = ?result.outcome,
            exit_code = ?result.exit_code, duration_ms = u64::try_from(result.duration.as_millis()).unwrap_or(u64::MAX),
            "drain step done");
        let work_dir = pack::work_dir_for(&self.config.state.path);
        let output_path = work_dir.join(pack::step_output_name(index, &step.name));
        if let Err(error) = std::fs::create_dir_all(&work_dir)
            .and_then(|()| std::fs::write(&output_path, &result.output))
        {
            tracing::warn!(path = %output_path.display(), %error, "step output not kept");
        }
        record.step_done(
            StepReport {
                name: result.name.clone(),
                outcome: result.outcome,
                exit_code: result.exit_code,
                duration_ms: u64::try_from(result.duration.as_millis()).unwrap_or(u64::MAX),
            },
            step.on_failure == OnFailure::Abandon,
        );
        self.save(record);
        true
    }

    fn step_env(&self, record: &DrainRecord) -> StepEnv {
        let trigger = record.trigger();
        let mut env = StepEnv::default();
        env.set("INSTANCE_ID", &record.instance_id);
        env.set("REASON", trigger.reason());
        if let Some(asg) = &record.asg {
            env.set("ASG", asg);
        }
        if let Some(hook) = &record.hook {
            env.set("HOOK", &hook.name);
        }
        if let Trigger::Spot { action, at } = &trigger {
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

    /// Builds and uploads the archive; `false` when a stop signal cut the upload short (the
    /// attempt is counted; the restarted agent tries again).
    async fn archive(&self, record: &mut DrainRecord) -> bool {
        let Some(store) = self.deps.store.as_ref() else {
            return true;
        };
        let deadline = instant_at(self.deadlines(record).archive);
        let writer_id = match pack::writer_id(store, self.config).await {
            Ok(id) => id,
            Err(error) => {
                tracing::error!(instance_id = %record.instance_id, %error, "archive not uploaded");
                record.archive_finished(Err(error.to_string()));
                self.save(record);
                return true;
            }
        };
        let job = pack::PackJob::new(self.config, &self.plan(record), record, &writer_id);
        if record.upload_key.as_deref() == Some(job.key()) {
            // An earlier run got as far as the upload and was killed: its multipart upload
            // would otherwise stay open (and billed) until a bucket lifecycle rule removes it.
            let aborted = pack::abort_leftovers(store, &job, deadline).await;
            if aborted > 0 {
                tracing::info!(instance_id = %record.instance_id, key = job.key(), aborted,
                    "aborted uploads left by the previous run");
            }
        }
        record.archive_started(job.key());
        self.save(record);
        crate::service::notify_status("draining: archiving the logs");
        let uploading = pack::archive_and_upload(store, job, deadline);
        let outcome = tokio::select! {
            outcome = uploading => outcome,
            () = self.shutdown_deadline(deadline) => Err(PackError::Shutdown),
        };
        match outcome {
            Ok(summary) => record.archive_finished(Ok(summary)),
            Err(PackError::Shutdown) => {
                tracing::warn!(instance_id = %record.instance_id,
                    "stop signal: the upload did not finish within the grace; left for the restarted agent");
                self.save(record);
                return false;
            }
            Err(error) => {
                tracing::error!(instance_id = %record.instance_id, %error, "archive not uploaded");
                record.archive_finished(Err(error.to_string()));
            }
        }
        self.save(record);
        true
    }

    /// Aborts what the last, interrupted archive attempt left open in S3.
    async fn abort_last_upload(&self, record: &DrainRecord) {
        let (Some(store), Some(key)) = (self.deps.store.as_ref(), &record.upload_key) else {
            return;
        };
        let Ok(writer_id) = pack::writer_id(store, self.config).await else {
            tracing::warn!(instance_id = %record.instance_id, %key,
                "the writer's id is unknown: the last attempt's upload is left to the bucket's lifecycle rule");
            return;
        };
        let job = pack::PackJob::new(self.config, &self.plan(record), record, &writer_id);
        if job.key() == key {
            let deadline = Instant::now() + Duration::from_secs(30);
            let aborted = pack::abort_leftovers(store, &job, deadline).await;
            tracing::info!(instance_id = %record.instance_id, %key, aborted,
                "aborted the upload the last archive attempt left");
        }
    }

    /// Resolves once a shutdown has been asked for and its grace has passed (or the deadline).
    async fn shutdown_deadline(&self, deadline: Instant) {
        self.shutdown.cancelled().await;
        let grace_end = (Instant::now() + SHUTDOWN_UPLOAD_GRACE).min(deadline);
        tokio::time::sleep_until(grace_end).await;
    }
}
