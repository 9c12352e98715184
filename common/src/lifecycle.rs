//! Auto Scaling's lifecycle calls, as the agent and the controller both make them: where an
//! instance stands, its group's hooks, heartbeats, and completing a lifecycle action by instance
//! id, with "no active lifecycle action" told apart from real failures.

use std::future::Future;
use std::time::Duration;

use crate::aws::{error_code_and_message, is_transient};
pub use crate::message::LifecycleResult;
use crate::message::Transition;
use crate::retry::Transient;
use aws_sdk_autoscaling::Client;
use aws_sdk_autoscaling::error::DisplayErrorContext;

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
        /// AWS's error code, when AWS answered.
        code: Option<String>,
    },
    #[error("DescribeLifecycleHooks {asg}: {message}")]
    DescribeHooks {
        asg: String,
        message: String,
        transient: bool,
        /// AWS's error code, when AWS answered.
        code: Option<String>,
    },
    #[error("RecordLifecycleActionHeartbeat {instance_id} (group {asg}, hook {hook}): {message}")]
    Heartbeat {
        asg: String,
        hook: String,
        instance_id: String,
        message: String,
        transient: bool,
        /// AWS's error code, when AWS answered.
        code: Option<String>,
    },
    #[error("CompleteLifecycleAction {result} {instance_id} (group {asg}, hook {hook}): {message}")]
    Complete {
        asg: String,
        hook: String,
        instance_id: String,
        result: &'static str,
        message: String,
        transient: bool,
        /// AWS's error code, when AWS answered.
        code: Option<String>,
    },
    #[error("{operation} {id}: no answer in time")]
    TimedOut { operation: &'static str, id: String },
}

impl LifecycleError {
    pub fn is_transient(&self) -> bool {
        match self {
            LifecycleError::DescribeInstance { transient, .. }
            | LifecycleError::DescribeHooks { transient, .. }
            | LifecycleError::Heartbeat { transient, .. }
            | LifecycleError::Complete { transient, .. } => *transient,
            LifecycleError::TimedOut { .. } => true,
        }
    }

    /// An attempt cut off by the caller's own time limit: transient, like any timeout.
    pub fn timed_out(operation: &'static str, id: &str) -> LifecycleError {
        LifecycleError::TimedOut {
            operation,
            id: id.to_string(),
        }
    }

    pub fn code(&self) -> Option<&str> {
        match self {
            LifecycleError::DescribeInstance { code, .. }
            | LifecycleError::DescribeHooks { code, .. }
            | LifecycleError::Heartbeat { code, .. }
            | LifecycleError::Complete { code, .. } => code.as_deref(),
            LifecycleError::TimedOut { .. } => None,
        }
    }
}

impl Transient for LifecycleError {
    fn is_transient(&self) -> bool {
        LifecycleError::is_transient(self)
    }
}

/// The Auto Scaling calls made about one instance.
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
pub fn is_no_active_action(code: Option<&str>, message: Option<&str>) -> bool {
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
                code: error_code_and_message(&e).0.map(str::to_string),
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
                code: error_code_and_message(&e).0.map(str::to_string),
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
                    code: code.map(str::to_string),
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
                    code: code.map(str::to_string),
                    message: DisplayErrorContext(&e).to_string(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
