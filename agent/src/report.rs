//! Progress reports to the controller's queue. Reporting is best effort and bounded in time:
//! the agent works the same with no controller, and a slow queue never delays a drain.

use std::future::Future;
use std::time::Duration;

use aws_sdk_sqs::error::DisplayErrorContext;
use lifeguard_common::message::AgentReport;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Time one report may take before it is given up.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

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
        let sending = self
            .client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .send();
        match tokio::time::timeout(SEND_TIMEOUT, sending).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!(
                "SendMessage {} ({} of {}): {}",
                self.queue_url,
                report.phase.name(),
                report.instance_id,
                DisplayErrorContext(&e)
            )),
            Err(_) => Err(format!(
                "SendMessage {} ({} of {}): no answer within {SEND_TIMEOUT:?}",
                self.queue_url,
                report.phase.name(),
                report.instance_id
            )),
        }
    }
}
