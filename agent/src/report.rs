//! Progress reports to the controller's queue. Reporting is bounded in time: the agent works the
//! same with no controller, and a slow queue delays a drain by seconds at most. Transient
//! failures (throttling, a queue briefly unreachable) are retried under the one retry policy,
//! longer for a final report, which tells the controller whether it must step in.

use std::future::Future;
use std::time::Duration;

use lifeguard_common::message::AgentReport;
use lifeguard_common::retry::{CallError, RetryPolicy, retry};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::time::Instant;

/// Time one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a progress report may take, retries included: the next one is not far off.
const PROGRESS_BUDGET: Duration = Duration::from_secs(10);
/// Time a final report may take, retries included.
const FINAL_BUDGET: Duration = Duration::from_secs(30);

/// Where reports go.
pub trait ReportSink: Send + Sync {
    fn send(&self, report: &AgentReport) -> impl Future<Output = Result<(), String>> + Send;
}

/// No controller configured.
pub struct NoReports;

impl ReportSink for NoReports {
    async fn send(&self, _report: &AgentReport) -> Result<(), String> {
        Ok(())
    }
}

/// Reports as EventBridge-shaped messages on the controller's SQS queue.
pub struct SqsReports {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    region: String,
    account: String,
}

impl SqsReports {
    pub fn new(
        client: aws_sdk_sqs::Client,
        queue_url: String,
        region: String,
        account: String,
    ) -> Self {
        SqsReports {
            client,
            queue_url,
            region,
            account,
        }
    }
}

fn event_id(report: &AgentReport) -> String {
    format!(
        "{}-{}-{}",
        report.instance_id,
        report.phase.name(),
        report.seq
    )
}

impl ReportSink for SqsReports {
    async fn send(&self, report: &AgentReport) -> Result<(), String> {
        let now = OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .unwrap_or_default();
        let body = report
            .to_event(&event_id(report), &now, &self.region, &self.account)
            .to_string();
        let budget = if report.phase.is_final() {
            FINAL_BUDGET
        } else {
            PROGRESS_BUDGET
        };
        retry(
            "SendMessage",
            RetryPolicy::until(Instant::now() + budget, ATTEMPT_TIMEOUT),
            |timeout| CallError {
                retryable: true,
                code: None,
                detail: format!("no answer within {timeout:?}"),
            },
            || async {
                self.client
                    .send_message()
                    .queue_url(&self.queue_url)
                    .message_body(body.as_str())
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| CallError::from_sdk(&e))
            },
        )
        .await
        .map_err(|gave_up| {
            format!(
                "SendMessage {} ({} of {}): {gave_up}",
                self.queue_url,
                report.phase.name(),
                report.instance_id
            )
        })
    }
}
