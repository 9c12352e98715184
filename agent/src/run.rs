//! The agent's life: learn who it is, resume an unfinished drain, gate the launch, then watch
//! IMDS until the instance leaves, drain it, and wait to be stopped.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lifeguard_common::message::{AgentReport, ReportPhase, SpotAction, Transition};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;
use crate::drain::{Deps, Drain, DrainOutcome, DrainPlan};
use crate::imds::{self, ImdsError, InstanceMetadata};
use crate::lifecycle::{AutoScaling, HookInfo, LifecycleResult, choose_hook};
use crate::report::ReportSink;
use crate::state::{self, DrainRecord};
use crate::steps::StepEnv;
use crate::upload::ArchiveStore;
use crate::watch::{self, Observation, Trigger, WatchPolicy, WatchState};
use crate::{launch, pack, service};

/// How long IMDS may say `Terminated` before the lifecycle action shows up in Auto Scaling.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// Completion is kept this far inside the action's global timeout.
const COMPLETION_MARGIN: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("reading the instance identity: {0}")]
    Identity(ImdsError),
    #[error(transparent)]
    State(#[from] state::StateError),
}

pub struct Agent<M, A, S, R> {
    pub config: AgentConfig,
    pub config_path: PathBuf,
    pub imds: M,
    pub deps: Arc<Deps<A, S, R>>,
    pub shutdown: CancellationToken,
    /// Notified on SIGHUP: re-read the configuration.
    pub reload: Arc<Notify>,
}

/// Who the instance is.
#[derive(Debug, Clone)]
pub struct Identity {
    pub instance_id: String,
}

impl<M, A, S, R> Agent<M, A, S, R>
where
    M: InstanceMetadata,
    A: AutoScaling + 'static,
    S: ArchiveStore + 'static,
    R: ReportSink + 'static,
{
    pub async fn run(&mut self) -> Result<(), AgentError> {
        let identity = self.identity().await?;
        let instance_id = identity.instance_id.clone();
        service::notify_ready(&format!("watching {instance_id}"));
        tracing::info!(%instance_id, "lifeguard-agent watching");

        match state::load(&self.config.state.path)? {
            Some(record) if record.instance_id != instance_id => {
                // A record baked into the image by another instance: not ours to resume.
                tracing::warn!(%instance_id, recorded = %record.instance_id, "drain record of another instance ignored");
                let _ = std::fs::remove_file(&self.config.state.path);
            }
            Some(record)
                if record.boot_id.is_some() && record.boot_id != state::current_boot_id() =>
            {
                // Stopped and started again since: the event that record was for has passed.
                tracing::info!(%instance_id, reason = %record.reason, finished = record.finished,
                    "drain record from an earlier boot set aside");
                let _ = std::fs::remove_file(&self.config.state.path);
            }
            Some(record) if !record.finished => {
                let trigger = trigger_from_record(&record);
                tracing::info!(%instance_id, reason = %record.reason, "resuming an unfinished drain");
                let outcome = self.drain(&instance_id, trigger.clone(), record).await;
                self.after_drain(&trigger, &outcome).await;
                if trigger.ends_instance() {
                    return self.idle().await;
                }
            }
            Some(record) if trigger_from_record(&record).ends_instance() => {
                tracing::info!(%instance_id, "drain already finished; waiting to be stopped");
                return self.idle().await;
            }
            _ => {}
        }

        if self.config.launch.enabled {
            // Checks and the completion's retries can outlast the watchdog interval.
            service::feeding_watchdog(self.gate_launch(&instance_id)).await;
        }
        self.watch(&instance_id).await
    }

    async fn identity(&self) -> Result<Identity, AgentError> {
        let mut delay = Duration::from_millis(200);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match imds::instance_id(&self.imds).await {
                Ok(instance_id) => return Ok(Identity { instance_id }),
                Err(error)
                    if Instant::now() + delay < deadline && !self.shutdown.is_cancelled() =>
                {
                    tracing::warn!(%error, "instance id not readable yet");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(error) => return Err(AgentError::Identity(error)),
            }
        }
    }

    /// Waits for the stop signal, keeping the watchdog fed.
    async fn idle(&self) -> Result<(), AgentError> {
        service::notify_status("drained; waiting to be stopped");
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(Duration::from_secs(1)) => service::notify_watchdog(),
            }
        }
    }

    fn policy(&self) -> WatchPolicy {
        WatchPolicy {
            drain_on_rebalance: self.config.watch.drain_on_rebalance,
            drain_on_maintenance: self.config.watch.drain_on_maintenance,
            maintenance_lead_secs: i64::try_from(self.config.watch.maintenance_lead_secs)
                .unwrap_or(i64::MAX),
        }
    }

    async fn observe(&self, with_maintenance: bool) -> Observation {
        let log = |what: &str, error: &ImdsError| {
            tracing::warn!(read = what, %error, "IMDS answer unusable; not acting on it");
        };
        let target_state = match imds::target_lifecycle_state(&self.imds).await {
            Ok(state) => Some(state),
            Err(e) => {
                log("target-lifecycle-state", &e);
                None
            }
        };
        let spot = match imds::spot_action(&self.imds).await {
            Ok(found) => Some(found.map(|spot| {
                let at = spot.time.as_deref().and_then(watch::parse_rfc3339);
                (spot.action.unwrap_or(SpotAction::Terminate), at)
            })),
            Err(e) => {
                log("spot/instance-action", &e);
                None
            }
        };
        let rebalance = if self.config.watch.drain_on_rebalance {
            match imds::rebalance(&self.imds).await {
                Ok(found) => Some(found.is_some()),
                Err(e) => {
                    log("rebalance", &e);
                    None
                }
            }
        } else {
            Some(false)
        };
        let maintenance = if with_maintenance && self.config.watch.drain_on_maintenance {
            match imds::maintenance(&self.imds).await {
                Ok(events) => Some(events),
                Err(e) => {
                    log("maintenance/scheduled", &e);
                    None
                }
            }
        } else {
            None
        };
        Observation {
            target_state,
            spot,
            rebalance,
            maintenance,
        }
    }

    async fn watch(&mut self, instance_id: &str) -> Result<(), AgentError> {
        let mut state = WatchState::default();
        let mut next_maintenance = Instant::now();
        loop {
            let with_maintenance = Instant::now() >= next_maintenance;
            if with_maintenance {
                next_maintenance = Instant::now()
                    + Duration::from_secs(self.config.watch.maintenance_interval_secs.max(1));
            }
            let observation = self.observe(with_maintenance).await;
            service::notify_watchdog();
            if let Some(trigger) = watch::decide(
                &mut state,
                &observation,
                &self.policy(),
                OffsetDateTime::now_utc(),
            ) {
                tracing::info!(%instance_id, reason = trigger.reason(), ?trigger, "instance is leaving; draining");
                let record = DrainRecord::new(instance_id, trigger.reason(), state::now_rfc3339());
                let outcome = self.drain(instance_id, trigger.clone(), record).await;
                self.after_drain(&trigger, &outcome).await;
                if trigger.ends_instance() {
                    return self.idle().await;
                }
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return Ok(()),
                () = self.reload.notified() => self.reload_config(),
                () = tokio::time::sleep(Duration::from_millis(self.config.watch.poll_interval_ms)) => {}
            }
        }
    }

    fn reload_config(&mut self) {
        match AgentConfig::load(&self.config_path) {
            Ok(config) => {
                tracing::info!(path = %self.config_path.display(), "configuration reloaded");
                self.config = config;
            }
            Err(error) => {
                tracing::error!(%error, "configuration not reloaded; keeping the previous one");
            }
        }
    }

    async fn after_drain(&self, trigger: &Trigger, outcome: &DrainOutcome) {
        if outcome.finished && !trigger.ends_instance() {
            // The instance stays (warm pool, rebalance, stop): a later notice drains it again.
            let _ = std::fs::remove_file(&self.config.state.path);
        }
        tracing::debug!(?outcome, "drain outcome");
    }

    async fn group_of(&self, instance_id: &str) -> Option<String> {
        if let Some(asg) = &self.config.instance.asg {
            return Some(asg.clone());
        }
        match self.deps.autoscaling.membership(instance_id).await {
            Ok(membership) => membership.map(|m| m.asg),
            Err(error) => {
                tracing::warn!(%instance_id, %error, "group not known");
                None
            }
        }
    }

    /// Waits until Auto Scaling shows the terminate action (IMDS can say `Terminated` first;
    /// completing before the action exists fails). `true` when an action waits.
    async fn confirm_action(&self, instance_id: &str, wait_state: &str) -> bool {
        let deadline = Instant::now() + CONFIRM_TIMEOUT;
        loop {
            match self.deps.autoscaling.membership(instance_id).await {
                Ok(Some(m)) if m.lifecycle_state == wait_state => return true,
                Ok(Some(m))
                    if m.lifecycle_state.starts_with("Terminating")
                        || m.lifecycle_state == "Terminated" =>
                {
                    tracing::info!(%instance_id, state = %m.lifecycle_state, "no lifecycle action waits");
                    return false;
                }
                Ok(None) => {
                    tracing::info!(%instance_id, "no longer in a group; no lifecycle action waits");
                    return false;
                }
                Ok(Some(m)) => {
                    tracing::debug!(%instance_id, state = %m.lifecycle_state, "lifecycle action not there yet")
                }
                Err(error) => tracing::warn!(%instance_id, %error, "lifecycle state not readable"),
            }
            if Instant::now() >= deadline || self.shutdown.is_cancelled() {
                tracing::warn!(%instance_id, "no lifecycle action appeared; draining without one");
                return false;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn hook_for(&self, asg: &str, transition: Transition) -> Option<HookInfo> {
        let configured = match transition {
            Transition::Terminating => self.config.lifecycle.terminate_hook.as_deref(),
            Transition::Launching => self.config.lifecycle.launch_hook.as_deref(),
        };
        let mut delay = Duration::from_millis(200);
        for _ in 0..5 {
            match self.deps.autoscaling.hooks(asg).await {
                Ok(hooks) => {
                    return match choose_hook(&hooks, transition, configured) {
                        Ok(hook) => hook.cloned(),
                        Err(problem) => {
                            tracing::error!(%asg, %problem, "cannot tell which lifecycle hook to complete");
                            None
                        }
                    };
                }
                Err(error) if error.is_transient() => {
                    tracing::warn!(%asg, %error, "lifecycle hooks not readable; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(error) => {
                    tracing::error!(%asg, %error, "lifecycle hooks not readable");
                    return None;
                }
            }
        }
        None
    }

    async fn plan(&self, instance_id: &str, trigger: &Trigger, record: &DrainRecord) -> DrainPlan {
        let asg = match record.asg.clone() {
            Some(asg) => Some(asg),
            None => self.group_of(instance_id).await,
        };
        let elapsed = OffsetDateTime::parse(&record.started_at, &Rfc3339)
            .map(|started| (OffsetDateTime::now_utc() - started).unsigned_abs())
            .unwrap_or_default();
        let mut hook = None;
        let mut action_deadline = None;
        if trigger.has_lifecycle_action() && !record.lifecycle_done {
            if let Some(asg) = &asg {
                let waiting = record.hook.is_some()
                    || self.confirm_action(instance_id, "Terminating:Wait").await;
                if waiting {
                    hook = self.hook_for(asg, Transition::Terminating).await;
                }
            }
            if let Some(hook) = &hook {
                let left = hook
                    .global_timeout
                    .saturating_sub(elapsed)
                    .saturating_sub(COMPLETION_MARGIN);
                action_deadline = Some(Instant::now() + left);
            }
        }
        let spot_deadline = match trigger {
            Trigger::Spot { at: Some(at), .. } => Some(instant_at(*at)),
            _ => None,
        };
        let margin = Duration::from_secs(self.config.archive.spot_margin_secs);
        let archive_deadline = match (spot_deadline, action_deadline) {
            (Some(spot), _) => Some(spot.checked_sub(margin).unwrap_or_else(Instant::now)),
            (None, Some(action)) => Some(
                action
                    .checked_sub(COMPLETION_MARGIN)
                    .unwrap_or_else(Instant::now),
            ),
            (None, None) => None,
        };
        DrainPlan {
            instance_id: instance_id.to_string(),
            asg,
            trigger: trigger.clone(),
            hook,
            action_deadline,
            archive_deadline,
            work_dir: pack::work_dir_for(&self.config.state.path),
        }
    }

    async fn drain(
        &self,
        instance_id: &str,
        trigger: Trigger,
        mut record: DrainRecord,
    ) -> DrainOutcome {
        service::notify_status(&format!("draining ({})", trigger.reason()));
        if let Trigger::Spot { action, at } = &trigger {
            record.spot_time = at.and_then(|at| at.format(&Rfc3339).ok());
            record.spot_action = Some(action.as_str().to_string());
        }
        let plan = self.plan(instance_id, &trigger, &record).await;
        if record.seq == 0 {
            // A new drain: outputs of an earlier drain of this instance must not be archived again.
            let _ = std::fs::remove_dir_all(&plan.work_dir);
        }
        let drain = Drain {
            config: &self.config,
            deps: self.deps.clone(),
            plan,
            shutdown: self.shutdown.clone(),
        };
        service::feeding_watchdog(drain.run(record)).await
    }

    async fn gate_launch(&self, instance_id: &str) {
        let deadline = Instant::now() + Duration::from_secs(self.config.launch.deadline_secs);
        // The group may not list the new instance at once.
        let membership = loop {
            match self.deps.autoscaling.membership(instance_id).await {
                Ok(Some(m)) => break Some(m),
                Ok(None) | Err(_)
                    if Instant::now() + Duration::from_secs(1)
                        < deadline.min(Instant::now() + CONFIRM_TIMEOUT) =>
                {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                _ => break None,
            }
        };
        let Some(membership) = membership else {
            tracing::info!(%instance_id, "not in a group; no launch to gate");
            return;
        };
        if membership.lifecycle_state != "Pending:Wait" {
            tracing::info!(%instance_id, state = %membership.lifecycle_state, "no launch action waits");
            return;
        }
        let Some(hook) = self.hook_for(&membership.asg, Transition::Launching).await else {
            return;
        };
        service::notify_status("launching: running readiness checks");
        let mut env = StepEnv::default();
        env.set("INSTANCE_ID", instance_id);
        env.set("ASG", &membership.asg);
        env.set("REASON", "launch");
        let ready = launch::wait_ready(&self.config.launch, &env, deadline).await;
        let (result, phase) = match &ready {
            Ok(()) => (LifecycleResult::Continue, ReportPhase::LaunchReady),
            Err(_) => (LifecycleResult::Abandon, ReportPhase::LaunchFailed),
        };
        tracing::info!(%instance_id, asg = %membership.asg, hook = %hook.name, result = result.as_str(),
            failure = ?ready.as_ref().err(), "readiness decided");
        let mut delay = Duration::from_millis(200);
        let give_up = Instant::now() + hook.heartbeat_timeout;
        loop {
            match self
                .deps
                .autoscaling
                .complete(&membership.asg, &hook.name, instance_id, result)
                .await
            {
                Ok(completion) => {
                    tracing::info!(%instance_id, ?completion, "launch action completed");
                    break;
                }
                Err(error) if error.is_transient() && Instant::now() + delay < give_up => {
                    tracing::warn!(%instance_id, %error, "completing the launch action failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(error) => {
                    tracing::error!(%instance_id, %error, "launch action not completed; the hook's default result will apply");
                    break;
                }
            }
        }
        let report = AgentReport {
            phase,
            instance_id: instance_id.to_string(),
            asg: Some(membership.asg.clone()),
            hook: Some(hook.name.clone()),
            token: None,
            reason: Some("launch".to_string()),
            seq: 1,
            archive: None,
            steps: Vec::new(),
            result: Some(result.as_str().to_string()),
            error: ready.err(),
        };
        if let Err(error) = self.deps.reports.send(&report).await {
            tracing::warn!(%instance_id, %error, "launch report not sent");
        }
    }
}

/// The instant matching a wall-clock time (now if it has passed).
fn instant_at(at: OffsetDateTime) -> Instant {
    let left = at - OffsetDateTime::now_utc();
    Instant::now() + left.try_into().unwrap_or(Duration::ZERO)
}

fn trigger_from_record(record: &DrainRecord) -> Trigger {
    match record.reason.as_str() {
        "warm_pool" => Trigger::WarmPool,
        "spot_interruption" => Trigger::Spot {
            action: record
                .spot_action
                .as_deref()
                .map_or(SpotAction::Terminate, SpotAction::parse),
            at: record.spot_time.as_deref().and_then(watch::parse_rfc3339),
        },
        "rebalance" => Trigger::Rebalance,
        "maintenance" => Trigger::Maintenance {
            code: "instance-stop".to_string(),
            not_before: None,
        },
        _ => Trigger::Terminate,
    }
}
