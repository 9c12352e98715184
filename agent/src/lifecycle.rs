//! Auto Scaling, as the agent needs it: where the instance stands, its group's hooks,
//! heartbeats, and completing the lifecycle action by instance id.

use std::future::Future;
use std::time::Duration;

use aws_sdk_autoscaling::Client;
use aws_sdk_autoscaling::error::DisplayErrorContext;
use lifeguard_common::aws::{error_code_and_message, is_transient};
use lifeguard_common::message::Transition;

pub use lifeguard_common::message::LifecycleResult;

/// The instance as its group sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMembership {
    pub asg: String,
    /// `InService`, `Pending:Wait`, `Terminating:Wait`, ...
    pub lifecycle_state: String,
}

/// A lifecycle hook of the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookInfo {
    pub name: String,
    pub transition: Transition,
    pub heartbeat_timeout: Duration,
    pub global_timeout: Duration,
    pub default_result: String,
}

/// How a completion ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// This call completed the action.
    Completed,
    /// No action is waiting: completed earlier (by us, a retried call, or the controller),
    /// timed out, or never created. Nothing is left to do either way.
    NoActiveAction,
}

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("DescribeAutoScalingInstances {instance_id}: {message}")]
    DescribeInstance {
        instance_id: String,
        message: String,
        transient: bool,
    },
    #[error("DescribeLifecycleHooks {asg}: {message}")]
    DescribeHooks {
        asg: String,
        message: String,
        transient: bool,
    },
    #[error("RecordLifecycleActionHeartbeat {instance_id} (group {asg}, hook {hook}): {message}")]
    Heartbeat {
        asg: String,
        hook: String,
        instance_id: String,
        message: String,
        transient: bool,
    },
    #[error("CompleteLifecycleAction {result} {instance_id} (group {asg}, hook {hook}): {message}")]
    Complete {
        asg: String,
        hook: String,
        instance_id: String,
        result: &'static str,
        message: String,
        transient: bool,
    },
}

impl LifecycleError {
    pub fn is_transient(&self) -> bool {
        match self {
            LifecycleError::DescribeInstance { transient, .. }
            | LifecycleError::DescribeHooks { transient, .. }
            | LifecycleError::Heartbeat { transient, .. }
            | LifecycleError::Complete { transient, .. } => *transient,
        }
    }
}

/// The Auto Scaling calls the agent makes.
pub trait AutoScaling: Send + Sync {
    /// `None` when the instance is in no group (or no longer in one).
    fn membership(
        &self,
        instance_id: &str,
    ) -> impl Future<Output = Result<Option<GroupMembership>, LifecycleError>> + Send;
    fn hooks(
        &self,
        asg: &str,
    ) -> impl Future<Output = Result<Vec<HookInfo>, LifecycleError>> + Send;
    /// `Ok(false)` when no action is waiting any more.
    fn heartbeat(
        &self,
        asg: &str,
        hook: &str,
        instance_id: &str,
    ) -> impl Future<Output = Result<bool, LifecycleError>> + Send;
    fn complete(
        &self,
        asg: &str,
        hook: &str,
        instance_id: &str,
        result: LifecycleResult,
    ) -> impl Future<Output = Result<Completion, LifecycleError>> + Send;
}

/// AWS answers a completion or heartbeat for an action that no longer waits with a
/// `ValidationError` saying "No active Lifecycle Action found".
fn is_no_active_action(code: Option<&str>, message: Option<&str>) -> bool {
    code == Some("ValidationError")
        && message.is_some_and(|m| m.contains("No active Lifecycle Action found"))
}

/// The SDK client.
pub struct AwsAutoScaling {
    client: Client,
}

impl AwsAutoScaling {
    pub fn new(client: Client) -> Self {
        AwsAutoScaling { client }
    }
}

impl AutoScaling for AwsAutoScaling {
    async fn membership(
        &self,
        instance_id: &str,
    ) -> Result<Option<GroupMembership>, LifecycleError> {
        let answer = self
            .client
            .describe_auto_scaling_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| LifecycleError::DescribeInstance {
                instance_id: instance_id.to_string(),
                transient: is_transient(&e),
                message: DisplayErrorContext(&e).to_string(),
            })?;
        Ok(answer
            .auto_scaling_instances()
            .iter()
            .find(|i| i.instance_id() == Some(instance_id))
            .map(|i| GroupMembership {
                asg: i.auto_scaling_group_name().unwrap_or_default().to_string(),
                lifecycle_state: i.lifecycle_state().unwrap_or_default().to_string(),
            }))
    }

    async fn hooks(&self, asg: &str) -> Result<Vec<HookInfo>, LifecycleError> {
        let answer = self
            .client
            .describe_lifecycle_hooks()
            .auto_scaling_group_name(asg)
            .send()
            .await
            .map_err(|e| LifecycleError::DescribeHooks {
                asg: asg.to_string(),
                transient: is_transient(&e),
                message: DisplayErrorContext(&e).to_string(),
            })?;
        let secs = |value: Option<i32>, default: u64| {
            Duration::from_secs(value.and_then(|v| u64::try_from(v).ok()).unwrap_or(default))
        };
        Ok(answer
            .lifecycle_hooks()
            .iter()
            .filter_map(|hook| {
                let transition = Transition::from_aws_str(hook.lifecycle_transition()?)?;
                let heartbeat_timeout = secs(hook.heartbeat_timeout(), 3_600);
                Some(HookInfo {
                    name: hook.lifecycle_hook_name()?.to_string(),
                    transition,
                    heartbeat_timeout,
                    // AWS caps an action at 100 heartbeat timeouts or 48 hours, whichever is less.
                    global_timeout: secs(
                        hook.global_timeout(),
                        (heartbeat_timeout.as_secs() * 100).min(172_800),
                    ),
                    default_result: hook.default_result().unwrap_or("ABANDON").to_string(),
                })
            })
            .collect())
    }

    async fn heartbeat(
        &self,
        asg: &str,
        hook: &str,
        instance_id: &str,
    ) -> Result<bool, LifecycleError> {
        let sent = self
            .client
            .record_lifecycle_action_heartbeat()
            .auto_scaling_group_name(asg)
            .lifecycle_hook_name(hook)
            .instance_id(instance_id)
            .send()
            .await;
        match sent {
            Ok(_) => Ok(true),
            Err(e) => {
                let (code, message) = error_code_and_message(&e);
                if is_no_active_action(code, message) {
                    return Ok(false);
                }
                Err(LifecycleError::Heartbeat {
                    asg: asg.to_string(),
                    hook: hook.to_string(),
                    instance_id: instance_id.to_string(),
                    transient: is_transient(&e),
                    message: DisplayErrorContext(&e).to_string(),
                })
            }
        }
    }

    async fn complete(
        &self,
        asg: &str,
        hook: &str,
        instance_id: &str,
        result: LifecycleResult,
    ) -> Result<Completion, LifecycleError> {
        let sent = self
            .client
            .complete_lifecycle_action()
            .auto_scaling_group_name(asg)
            .lifecycle_hook_name(hook)
            .instance_id(instance_id)
            .lifecycle_action_result(result.as_str())
            .send()
            .await;
        match sent {
            Ok(_) => Ok(Completion::Completed),
            Err(e) => {
                let (code, message) = error_code_and_message(&e);
                if is_no_active_action(code, message) {
                    return Ok(Completion::NoActiveAction);
                }
                Err(LifecycleError::Complete {
                    asg: asg.to_string(),
                    hook: hook.to_string(),
                    instance_id: instance_id.to_string(),
                    result: result.as_str(),
                    transient: is_transient(&e),
                    message: DisplayErrorContext(&e).to_string(),
                })
            }
        }
    }
}

/// Picks the hook to complete for `transition`: the configured one, else the group's only one.
pub fn choose_hook<'a>(
    hooks: &'a [HookInfo],
    transition: Transition,
    configured: Option<&str>,
) -> Result<Option<&'a HookInfo>, String> {
    let matching: Vec<&HookInfo> = hooks
        .iter()
        .filter(|h| h.transition == transition)
        .collect();
    match configured {
        Some(name) => matching
            .iter()
            .find(|h| h.name == name)
            .copied()
            .map(Some)
            .ok_or_else(|| format!("the group has no {transition} hook named {name:?}")),
        None => match matching.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one)),
            many => Err(format!(
                "the group has {} {transition} hooks ({}); set lifecycle.{} to the one lifeguard completes",
                many.len(),
                many.iter()
                    .map(|h| h.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                match transition {
                    Transition::Launching => "launch_hook",
                    Transition::Terminating => "terminate_hook",
                }
            )),
        },
    }
}

/// When to send the next heartbeat: a third of the hook's heartbeat timeout after the last one,
/// so one lost heartbeat still leaves time for another.
pub fn heartbeat_interval(heartbeat_timeout: Duration) -> Duration {
    (heartbeat_timeout / 3).max(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(name: &str, transition: Transition) -> HookInfo {
        HookInfo {
            name: name.into(),
            transition,
            heartbeat_timeout: Duration::from_secs(60),
            global_timeout: Duration::from_secs(6000),
            default_result: "ABANDON".into(),
        }
    }

    #[test]
    fn hook_choice() {
        let hooks = vec![
            hook("ready", Transition::Launching),
            hook("drain", Transition::Terminating),
        ];
        assert_eq!(
            choose_hook(&hooks, Transition::Terminating, None)
                .unwrap()
                .unwrap()
                .name,
            "drain"
        );
        assert!(choose_hook(&hooks, Transition::Terminating, Some("other")).is_err());
        let two = vec![
            hook("a", Transition::Terminating),
            hook("b", Transition::Terminating),
        ];
        let err = choose_hook(&two, Transition::Terminating, None).unwrap_err();
        assert!(err.contains("lifecycle.terminate_hook"), "{err}");
        assert_eq!(
            choose_hook(&two, Transition::Terminating, Some("b"))
                .unwrap()
                .unwrap()
                .name,
            "b"
        );
        assert!(
            choose_hook(&[], Transition::Terminating, None)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn heartbeats_come_three_times_per_timeout() {
        assert_eq!(
            heartbeat_interval(Duration::from_secs(30)),
            Duration::from_secs(10)
        );
        assert_eq!(
            heartbeat_interval(Duration::from_secs(2)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn no_active_action_is_recognised() {
        assert!(is_no_active_action(
            Some("ValidationError"),
            Some("No active Lifecycle Action found with instance ID i-0abc")
        ));
        assert!(!is_no_active_action(
            Some("ValidationError"),
            Some("Group not found")
        ));
        assert!(!is_no_active_action(Some("Throttling"), None));
    }
}
