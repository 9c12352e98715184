//! The end of the drain: completing the lifecycle action, transient failures retried until the
//! action's own deadline, and saying how it went.

use std::time::Duration;

use lifeguard_common::message::CompletionReport;
use lifeguard_common::retry::{RetryPolicy, retry};
use tokio::time::Instant;

use super::machine::DrainRecord;
use super::{Drain, SHUTDOWN_UPLOAD_GRACE, instant_at};
use crate::imds::InstanceMetadata;
use crate::lifecycle::{AutoScaling, Completion, LifecycleError, LifecycleResult};
use crate::report::ReportSink;
use crate::upload::ArchiveStore;

/// One `CompleteLifecycleAction` attempt may take this long.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl<M, A, S, R> Drain<'_, M, A, S, R>
where
    M: InstanceMetadata,
    A: AutoScaling + 'static,
    S: ArchiveStore + 'static,
    R: ReportSink + 'static,
{
    /// Completes the action by instance id, retrying transient failures until the action's own
    /// deadline (or the shutdown grace). Says how it went, and why it failed if it did.
    pub(super) async fn complete(
        &self,
        record: &DrainRecord,
        result: LifecycleResult,
    ) -> (CompletionReport, Option<String>) {
        let (Some(hook), Some(asg)) = (&record.hook, &record.asg) else {
            return (CompletionReport::NoHook, None);
        };
        let instance_id = record.instance_id.as_str();
        let mut deadline = self
            .deadlines(record)
            .action
            .map_or_else(|| Instant::now() + Duration::from_secs(300), instant_at);
        if self.shutdown.is_cancelled() {
            deadline = deadline.min(Instant::now() + SHUTDOWN_UPLOAD_GRACE);
        }
        crate::service::notify_status("draining: completing the lifecycle action");
        complete_action(
            &self.deps.autoscaling,
            asg,
            &hook.name,
            instance_id,
            result,
            deadline,
        )
        .await
    }
}

/// `CompleteLifecycleAction` by instance id, transient failures retried until `deadline`: how
/// it went, and why it failed if it did.
pub async fn complete_action<A: AutoScaling>(
    autoscaling: &A,
    asg: &str,
    hook: &str,
    instance_id: &str,
    result: LifecycleResult,
    deadline: Instant,
) -> (CompletionReport, Option<String>) {
    let completed = retry(
        "CompleteLifecycleAction",
        RetryPolicy::until(deadline, CALL_TIMEOUT),
        |_| LifecycleError::timed_out("CompleteLifecycleAction", instance_id),
        || autoscaling.complete(asg, hook, instance_id, result),
    )
    .await;
    match completed {
        Ok(Completion::Completed) => {
            tracing::info!(%instance_id, %asg, %hook, result = result.as_str(), "lifecycle action completed");
            (CompletionReport::Completed, None)
        }
        Ok(Completion::NoActiveAction) => {
            tracing::warn!(%instance_id, %asg, %hook,
                "no lifecycle action waited (completed elsewhere, timed out, or never created)");
            (CompletionReport::NoActiveAction, None)
        }
        Err(gave_up) => {
            // The action still waits: the controller (told so by the final report) or the
            // hook's default result at its timeout ends it.
            tracing::error!(%instance_id, %asg, %hook, error = %gave_up, "lifecycle action not completed");
            (CompletionReport::Failed, Some(gave_up.to_string()))
        }
    }
}
