//! The controller's one queue: long-polled in batches, each message worked on by one of a
//! bounded number of workers with its visibility extended meanwhile, deleted (ten at a time)
//! only once its effect is durable. A message that cannot be handled now is left to come back; one
//! that keeps failing ends in the queue's dead-letter queue after its `maxReceiveCount`; a
//! malformed one is made visible again at once so it gets there quickly, never retried forever
//! in a loop of ours.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lifeguard_common::message::{self, Parsed};
use tokio::sync::{Mutex, Semaphore};
use tokio_util::sync::CancellationToken;

/// One message as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    /// `ApproximateReceiveCount`: 1 on the first delivery.
    pub receive_count: u32,
    /// `SenderId`, as SQS vouches for it: `<role id>:<session>` for a role session (an instance
    /// profile's session is the instance id), an IAM user's id, or a service's.
    pub sender_id: Option<String>,
    /// `SentTimestamp`: when SQS took the message in, by SQS's clock.
    pub sent_at: Option<time::OffsetDateTime>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{operation} on {queue_url}: {detail}")]
pub struct QueueError {
    pub operation: &'static str,
    pub queue_url: String,
    pub detail: String,
}

/// What the controller needs of SQS.
pub trait EventQueue: Send + Sync + 'static {
    fn receive(
        &self,
        max_messages: i32,
        wait: Duration,
        visibility: Duration,
    ) -> impl Future<Output = Result<Vec<Received>, QueueError>> + Send;

    /// Deletes up to 10 messages; the ids of those that could not be deleted.
    fn delete_batch(
        &self,
        messages: &[Received],
    ) -> impl Future<Output = Result<Vec<String>, QueueError>> + Send;

    /// Sets a message's visibility timeout from now (0 makes it visible at once).
    fn set_visibility(
        &self,
        receipt_handle: &str,
        visibility: Duration,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
}

/// How a handler ended with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// Its effect is durable (or it needs none): delete it.
    Done,
    /// Not now (AWS throttled, an effect failed): leave it to come back after its visibility
    /// timeout.
    Retry { reason: String },
}

/// Something the consumer did, for metrics and health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// A receive call answered (with or without messages).
    Polled,
    /// A receive call failed.
    PollFailed,
    Received,
    Deleted,
    Retried,
    Malformed,
    Ignored,
}

/// What acts on messages (the router of the service, or a test's recorder).
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, message: &Parsed, received: &Received)
    -> impl Future<Output = Handled> + Send;

    /// Told of each thing the consumer does; `kind` is the message's kind where known.
    fn observe(&self, _what: Observation, _kind: &str) {}
}

/// What the consumer did with each message, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub received: u64,
    pub deleted: u64,
    pub retried: u64,
    pub malformed: u64,
    pub ignored: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerSettings {
    pub workers: usize,
    pub wait: Duration,
    pub visibility: Duration,
}

/// Pauses between failed receives: from 200 ms up to 10 s, the common policy's backoff.
fn poll_pauses() -> impl Iterator<Item = Duration> {
    lifeguard_common::retry::pauses(Duration::from_millis(200), Duration::from_secs(10))
}

/// Receives and works until `shutdown`; then stops receiving, lets the messages in hand
/// finish, and returns what it did.
pub async fn consume<Q: EventQueue, H: Handler>(
    queue: Arc<Q>,
    handler: Arc<H>,
    settings: ConsumerSettings,
    shutdown: CancellationToken,
) -> Counters {
    let counters = Arc::new(Mutex::new(Counters::default()));
    let workers = Arc::new(Semaphore::new(settings.workers.max(1)));
    let (done_tx, done_rx) = tokio::sync::mpsc::channel::<(Received, &'static str)>(256);
    let deleter = tokio::spawn(delete_in_batches(
        queue.clone(),
        handler.clone(),
        done_rx,
        counters.clone(),
    ));
    let mut tasks = tokio::task::JoinSet::new();
    let mut pauses = poll_pauses();
    while !shutdown.is_cancelled() {
        // Only ask for as many messages as there are free workers: the rest stay in the queue
        // for another replica instead of waiting here with their visibility running.
        let free = workers.available_permits().min(10);
        if free == 0 {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tasks.join_next() => continue,
            }
        }
        let batch = tokio::select! {
            () = shutdown.cancelled() => break,
            batch = queue.receive(i32::try_from(free).unwrap_or(10), settings.wait, settings.visibility) => batch,
        };
        let batch = match batch {
            Ok(batch) => {
                pauses = poll_pauses();
                handler.observe(Observation::Polled, "");
                batch
            }
            Err(error) => {
                handler.observe(Observation::PollFailed, "");
                tracing::warn!(%error, "receiving from the queue failed; retrying");
                let pause = pauses.next().unwrap_or(Duration::from_secs(10));
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(pause) => {}
                }
                continue;
            }
        };
        counters.lock().await.received += batch.len() as u64;
        for received in batch {
            let Ok(permit) = workers.clone().acquire_owned().await else {
                break;
            };
            let queue = queue.clone();
            let handler = handler.clone();
            let counters = counters.clone();
            let done = done_tx.clone();
            let visibility = settings.visibility;
            tasks.spawn(async move {
                if let Some(finished) =
                    work_on(&*queue, &*handler, received, visibility, &counters).await
                {
                    // The deleter outlives every worker: the send only fails if it panicked.
                    let _ = done.send(finished).await;
                }
                drop(permit);
            });
        }
        // Reap what has finished so the set does not grow.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    drop(done_tx);
    let _ = deleter.await;
    *counters.lock().await
}

/// Deletes finished messages ten at a time, waiting briefly for a batch to fill.
async fn delete_in_batches<Q: EventQueue, H: Handler>(
    queue: Arc<Q>,
    handler: Arc<H>,
    mut done: tokio::sync::mpsc::Receiver<(Received, &'static str)>,
    counters: Arc<Mutex<Counters>>,
) {
    while let Some(first) = done.recv().await {
        let mut batch = vec![first];
        let fill_until = tokio::time::Instant::now() + Duration::from_millis(50);
        while batch.len() < 10 {
            match tokio::time::timeout_at(fill_until, done.recv()).await {
                Ok(Some(more)) => batch.push(more),
                _ => break,
            }
        }
        let (batch, kinds): (Vec<Received>, Vec<&'static str>) = batch.into_iter().unzip();
        match queue.delete_batch(&batch).await {
            Ok(failed) => {
                for id in &failed {
                    tracing::warn!(message_id = %id, "not deleted; it will come back and be handled again (handlers are idempotent)");
                }
                for (message, kind) in batch.iter().zip(&kinds) {
                    if !failed.contains(&message.message_id) {
                        handler.observe(Observation::Deleted, kind);
                    }
                }
                counters.lock().await.deleted += (batch.len() - failed.len()) as u64;
            }
            Err(error) => {
                tracing::warn!(%error, messages = batch.len(), "not deleted; they will come back");
            }
        }
    }
}

async fn work_on<Q: EventQueue, H: Handler>(
    queue: &Q,
    handler: &H,
    received: Received,
    visibility: Duration,
    counters: &Mutex<Counters>,
) -> Option<(Received, &'static str)> {
    let parsed = match message::parse(received.body.as_bytes()) {
        Ok(parsed) => parsed,
        Err(error) => {
            handler.observe(Observation::Malformed, "malformed");
            // Logged with its id and what is wrong, never its body (it may be anything).
            tracing::warn!(message_id = %received.message_id, receive_count = received.receive_count,
                %error, "malformed message; it goes to the dead-letter queue");
            counters.lock().await.malformed += 1;
            if let Err(error) = queue
                .set_visibility(&received.receipt_handle, Duration::ZERO)
                .await
            {
                tracing::warn!(message_id = %received.message_id, %error, "could not release it");
            }
            return None;
        }
    };
    let kind = parsed.message.kind();
    handler.observe(Observation::Received, kind);
    if let message::Message::Ignored(ignored) = &parsed.message {
        tracing::info!(message_id = %received.message_id, reason = %ignored.reason, "ignored message deleted");
        handler.observe(Observation::Ignored, kind);
        counters.lock().await.ignored += 1;
        return Some((received, kind));
    }
    let outcome = with_visibility_extended(queue, &received, visibility, async {
        handler.handle(&parsed, &received).await
    })
    .await;
    match outcome {
        Handled::Done => Some((received, kind)),
        Handled::Retry { reason } => {
            handler.observe(Observation::Retried, kind);
            tracing::info!(message_id = %received.message_id, %reason, receive_count = received.receive_count,
                "message left for a later attempt");
            counters.lock().await.retried += 1;
            None
        }
    }
}

/// Runs `work` while pushing the message's visibility out every half period, so a slow
/// effect is not handed to another replica meanwhile.
async fn with_visibility_extended<Q: EventQueue, T>(
    queue: &Q,
    received: &Received,
    visibility: Duration,
    work: impl Future<Output = T>,
) -> T {
    let extend = async {
        loop {
            tokio::time::sleep(visibility / 2).await;
            if let Err(error) = queue
                .set_visibility(&received.receipt_handle, visibility)
                .await
            {
                tracing::warn!(message_id = %received.message_id, %error, "could not extend the visibility");
            }
        }
    };
    tokio::select! {
        output = work => output,
        never = extend => never,
    }
}

pub mod sqs;

#[cfg(test)]
mod tests;
