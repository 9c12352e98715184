//! The agent's life: learn who it is, resume an unfinished drain, gate the launch, then watch
//! IMDS until the instance leaves, drain it, and wait to be stopped.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lifeguard_common::message::SpotAction;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;
use crate::drain::machine::{DrainRecord, Stage};
use crate::drain::{Deps, Drain, DrainOutcome};
use crate::imds::{self, ImdsError, InstanceMetadata};
use crate::lifecycle::AutoScaling;
use crate::report::ReportSink;
use crate::state::{self, StateStore};
use crate::upload::ArchiveStore;
use crate::watch::{self, Observation, Trigger, WatchPolicy, WatchState};
use crate::{launch, pack, service};
use lifeguard_common::retry::{GaveUp, RetryPolicy, Transient, retry};

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

/// IMDS gave no answer about the instance id in time.
fn gone_quiet() -> ImdsError {
    ImdsError::Deadline {
        path: "meta-data/instance-id".to_string(),
        deadline: Duration::from_secs(60),
        attempts: 0,
        last: "no answer in time".to_string(),
    }
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

        let store = StateStore::open(&self.config.state.path, &instance_id)?;
        if let Some(record) = store.drain() {
            let trigger = record.trigger();
            if record.stage == Stage::Done {
                if trigger.ends_instance() {
                    tracing::info!(%instance_id, "drain already finished; waiting to be stopped");
                    return self.idle().await;
                }
                store.drain_over(trigger.notice_key());
            } else {
                tracing::info!(%instance_id, reason = trigger.reason(), stage = ?record.stage,
                    "resuming an unfinished drain");
                let outcome = self.drain(&store, record).await;
                if self.after_drain(&store, &trigger, &outcome) {
                    return self.idle().await;
                }
            }
        }

        if self.config.launch.enabled && !self.shutdown.is_cancelled() {
            // Checks and the completion's retries can outlast the watchdog interval.
            service::feeding_watchdog(launch::gate(
                &self.config,
                &self.deps,
                &instance_id,
                &self.shutdown,
            ))
            .await;
        }
        self.watch(&store, &instance_id).await
    }

    async fn identity(&self) -> Result<Identity, AgentError> {
        /// At boot IMDS may not answer yet, or answer garbage for a moment: every failure is
        /// worth another try until the minute is up.
        struct NotYet(ImdsError);
        impl Transient for NotYet {
            fn is_transient(&self) -> bool {
                true
            }
        }
        impl std::fmt::Display for NotYet {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}", self.0)
            }
        }
        let policy = RetryPolicy {
            deadline: Instant::now() + Duration::from_secs(60),
            attempt_timeout: Duration::from_secs(30),
            base: Duration::from_millis(200),
            max: Duration::from_secs(5),
        };
        let read = tokio::select! {
            read = retry(
                "reading the instance id",
                policy,
                |_| NotYet(gone_quiet()),
                || async { imds::instance_id(&self.imds).await.map_err(NotYet) },
            ) => read,
            () = self.shutdown.cancelled() => Err(GaveUp::Deadline(None)),
        };
        match read {
            Ok(instance_id) => Ok(Identity { instance_id }),
            Err(GaveUp::Permanent(NotYet(error)) | GaveUp::Deadline(Some(NotYet(error)))) => {
                Err(AgentError::Identity(error))
            }
            Err(GaveUp::Deadline(None)) => Err(AgentError::Identity(gone_quiet())),
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
                // A notice without a time is still a notice; it is told apart by its absence.
                Ok(found) => Some(found.map(|notice| notice.time.unwrap_or_default())),
                Err(e) => {
                    log("rebalance", &e);
                    None
                }
            }
        } else {
            Some(None)
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

    async fn watch(&mut self, store: &StateStore, instance_id: &str) -> Result<(), AgentError> {
        let mut state = WatchState {
            handled: store.handled(),
            ..WatchState::default()
        };
        let mut next_maintenance = Instant::now();
        loop {
            if self.shutdown.is_cancelled() {
                return Ok(());
            }
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
                // Outputs of an earlier drain of this instance must not be archived again.
                let _ = std::fs::remove_dir_all(pack::work_dir_for(&self.config.state.path));
                let record = DrainRecord::new(
                    instance_id,
                    &trigger,
                    state::current_boot_id(),
                    OffsetDateTime::now_utc(),
                );
                store.save_drain(&record);
                let outcome = self.drain(store, record).await;
                if self.after_drain(store, &trigger, &outcome) {
                    return self.idle().await;
                }
                state.handled = store.handled();
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

    /// Whether the agent is done with this instance (it only waits to be stopped now).
    fn after_drain(&self, store: &StateStore, trigger: &Trigger, outcome: &DrainOutcome) -> bool {
        tracing::debug!(?outcome, "drain outcome");
        if !outcome.finished {
            // Stopped mid-drain: the record stays for the restarted agent.
            return true;
        }
        if trigger.ends_instance() {
            return true;
        }
        // The instance stays (warm pool, rebalance, stop): the same notice must not drain it
        // again while it stays readable; a new one will.
        store.drain_over(trigger.notice_key());
        false
    }

    async fn drain(&self, store: &StateStore, record: DrainRecord) -> DrainOutcome {
        service::notify_status(&format!("draining ({})", record.trigger().reason()));
        let drain = Drain {
            config: &self.config,
            imds: &self.imds,
            deps: self.deps.clone(),
            state: store,
            shutdown: self.shutdown.clone(),
        };
        service::feeding_watchdog(drain.run(record)).await
    }
}
