//! [`EventQueue`] over SQS.

use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};

use super::{EventQueue, QueueError, Received};

pub struct SqsQueue {
    client: Client,
    url: String,
}

impl SqsQueue {
    pub fn new(client: Client, url: String) -> Self {
        SqsQueue { client, url }
    }

    fn error(&self, operation: &'static str, detail: impl std::fmt::Display) -> QueueError {
        QueueError {
            operation,
            queue_url: self.url.clone(),
            detail: detail.to_string(),
        }
    }
}

fn secs(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs()).unwrap_or(i32::MAX)
}

impl EventQueue for SqsQueue {
    async fn receive(
        &self,
        max_messages: i32,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Received>, QueueError> {
        let output = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max_messages.clamp(1, 10))
            .wait_time_seconds(secs(wait).min(20))
            .visibility_timeout(secs(visibility))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SenderId)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send()
            .await
            .map_err(|e| self.error("ReceiveMessage", DisplayErrorContext(&e)))?;
        Ok(output
            .messages()
            .iter()
            .filter_map(|message| {
                let attribute = |name: MessageSystemAttributeName| {
                    message.attributes().and_then(|a| a.get(&name)).cloned()
                };
                Some(Received {
                    message_id: message.message_id()?.to_string(),
                    receipt_handle: message.receipt_handle()?.to_string(),
                    body: message.body().unwrap_or_default().to_string(),
                    receive_count: attribute(MessageSystemAttributeName::ApproximateReceiveCount)
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(1),
                    sender_id: attribute(MessageSystemAttributeName::SenderId),
                    sent_at: attribute(MessageSystemAttributeName::SentTimestamp)
                        .and_then(|ms| ms.parse::<i64>().ok())
                        .and_then(|ms| {
                            time::OffsetDateTime::from_unix_timestamp_nanos(
                                i128::from(ms) * 1_000_000,
                            )
                            .ok()
                        }),
                })
            })
            .collect())
    }

    async fn delete_batch(&self, messages: &[Received]) -> Result<Vec<String>, QueueError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let entries = messages
            .iter()
            .enumerate()
            .map(|(index, message)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .receipt_handle(&message.receipt_handle)
                    .build()
                    .map_err(|e| self.error("DeleteMessageBatch", e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let output = self
            .client
            .delete_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| self.error("DeleteMessageBatch", DisplayErrorContext(&e)))?;
        Ok(output
            .failed()
            .iter()
            .filter_map(|failure| failure.id().parse::<usize>().ok())
            .filter_map(|index| messages.get(index).map(|m| m.message_id.clone()))
            .collect())
    }

    async fn set_visibility(
        &self,
        receipt_handle: &str,
        visibility: Duration,
    ) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(secs(visibility))
            .send()
            .await
            .map_err(|e| self.error("ChangeMessageVisibility", DisplayErrorContext(&e)))?;
        Ok(())
    }
}
