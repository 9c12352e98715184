//! Before the drain: waiting for Auto Scaling to create the lifecycle action (the instance sits
//! in plain `Terminating` while its load balancers deregister it), and the look-ups of the
//! group and the hook the drain completes.

use std::time::Duration;

use lifeguard_common::message::Transition;
use lifeguard_common::retry::{RetryPolicy, retry};
use time::OffsetDateTime;
use tokio::time::Instant;

use super::Drain;
use super::machine::{self, AwaitDecision, DrainRecord};
use crate::config::AgentConfig;
use crate::imds::{self, InstanceMetadata};
use crate::lifecycle::{AutoScaling, HookInfo, LifecycleError};
use crate::report::ReportSink;
use crate::upload::ArchiveStore;
use crate::watch;

impl<M, A, S, R> Drain<'_, M, A, S, R>
where
    M: InstanceMetadata,
    A: AutoScaling + 'static,
    S: ArchiveStore + 'static,
    R: ReportSink + 'static,
{
    /// One look at Auto Scaling while awaiting the lifecycle action, then the pause before the
    /// next (cut short by a spot interruption or a stop signal).
    pub(super) async fn await_action(
        &self,
        record: &mut DrainRecord,
        hooks: &mut Option<Option<HookInfo>>,
    ) {
        let instance_id = record.instance_id.clone();
        let membership = match self.deps.autoscaling.membership(&instance_id).await {
            Ok(membership) => membership,
            Err(error) => {
                tracing::warn!(%instance_id, %error, "lifecycle state not readable; looking again shortly");
                self.pause(record, Duration::from_secs(2)).await;
                return;
            }
        };
        if let (None, Some(m)) = (&record.asg, &membership) {
            record.asg = Some(m.asg.clone());
        }
        if hooks.is_none()
            && let Some(asg) = &record.asg
        {
            match hook_for(
                self.config,
                &self.deps.autoscaling,
                asg,
                Transition::Terminating,
            )
            .await
            {
                Ok(hook) => *hooks = Some(hook),
                Err(_) => {
                    self.pause(record, Duration::from_secs(2)).await;
                    return;
                }
            }
        }
        let state = membership.as_ref().map(|m| m.lifecycle_state.as_str());
        let seen = machine::terminate_state(state);
        let hook = hooks.as_ref().and_then(Option::as_ref);
        let wait_limit = Duration::from_secs(self.config.lifecycle.action_wait_secs);
        let decision =
            machine::on_action_lookup(record, seen, hook, wait_limit, OffsetDateTime::now_utc());
        match decision {
            AwaitDecision::LookAgainIn(pause) => {
                tracing::debug!(%instance_id, state, "lifecycle action not there yet (load balancer deregistration?)");
                crate::service::notify_status(&format!(
                    "leaving: waiting for the lifecycle action ({})",
                    state.unwrap_or("not in a group")
                ));
                self.pause(record, pause).await;
            }
            AwaitDecision::Begin => {
                if !record.action_confirmed && hook.is_some() {
                    tracing::warn!(%instance_id, state, "no lifecycle action seen waiting; draining anyway");
                }
                self.save(record);
            }
        }
    }

    /// Waits `pause` while awaiting the action, watching for a spot interruption meanwhile.
    async fn pause(&self, record: &mut DrainRecord, pause: Duration) {
        self.save(record);
        tokio::select! {
            () = self.shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
        if let Ok(Some(spot)) = imds::spot_action(self.imds).await {
            let at = spot.time.as_deref().and_then(watch::parse_rfc3339);
            tracing::warn!(instance_id = %record.instance_id, ?at,
                "spot interruption while awaiting the lifecycle action: draining now");
            record.interrupted(at, OffsetDateTime::now_utc());
            self.save(record);
        }
    }

    pub(super) async fn group_of(&self, instance_id: &str) -> Option<String> {
        if let Some(asg) = &self.config.instance.asg {
            return Some(asg.clone());
        }
        let policy = RetryPolicy::until(
            Instant::now() + Duration::from_secs(20),
            Duration::from_secs(10),
        );
        match retry(
            "DescribeAutoScalingInstances",
            policy,
            |_| LifecycleError::timed_out("DescribeAutoScalingInstances", instance_id),
            || self.deps.autoscaling.membership(instance_id),
        )
        .await
        {
            Ok(membership) => membership.map(|m| m.asg),
            Err(error) => {
                tracing::warn!(%instance_id, %error, "group not known");
                None
            }
        }
    }
}

/// The hook of `asg` to complete for `transition` (`Ok(None)`: the group has none, or more
/// than one and the configuration does not say which); `Err` when the hooks could not be read.
pub async fn hook_for<A: AutoScaling>(
    config: &AgentConfig,
    autoscaling: &A,
    asg: &str,
    transition: Transition,
) -> Result<Option<HookInfo>, String> {
    let configured = match transition {
        Transition::Terminating => config.lifecycle.terminate_hook.as_deref(),
        Transition::Launching => config.lifecycle.launch_hook.as_deref(),
    };
    let policy = RetryPolicy::until(
        Instant::now() + Duration::from_secs(20),
        Duration::from_secs(10),
    );
    let hooks = retry(
        "DescribeLifecycleHooks",
        policy,
        |_| LifecycleError::timed_out("DescribeLifecycleHooks", asg),
        || autoscaling.hooks(asg),
    )
    .await;
    match hooks {
        Ok(hooks) => match crate::lifecycle::choose_hook(&hooks, transition, configured) {
            Ok(hook) => Ok(hook.cloned()),
            Err(problem) => {
                tracing::error!(%asg, %problem, "cannot tell which lifecycle hook to complete");
                Ok(None)
            }
        },
        Err(error) => {
            tracing::warn!(%asg, %error, "lifecycle hooks not readable");
            Err(error.to_string())
        }
    }
}
