//! The queue consumer against SQS in the emulator: poison messages end in the dead-letter
//! queue through the queue's own redrive policy, ignorable ones are deleted, good ones handled
//! once and deleted, and nothing holds the others up.

// A failed unwrap in a test is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lifeguard_common::message::Parsed;
use lifeguard_controller::queue::sqs::SqsQueue;
use lifeguard_controller::queue::{ConsumerSettings, Handled, Handler, Received, consume};
use lifeguard_e2e::{Emulator, eventually, fleet};
use tokio_util::sync::CancellationToken;

const TERMINATE: &str = include_str!(
    "../../common/tests/fixtures/aws-events/eventbridge-terminate-lifecycle-action.aws-docs.json"
);

#[derive(Default)]
struct Recorder {
    handled: Mutex<Vec<String>>,
}

impl Handler for Recorder {
    async fn handle(&self, message: &Parsed, received: &Received) -> Handled {
        self.handled.lock().unwrap().push(format!(
            "{} {}",
            received.message_id,
            message.message.kind()
        ));
        Handled::Done
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_goes_to_the_dead_letter_queue_and_the_rest_is_handled() {
    let emulator = Emulator::start().await;
    let clients = emulator.clients().await;
    let dead = fleet::queue(&clients, "lifeguard-dead").await;
    let queue = fleet::queue(&clients, "lifeguard-controller").await;
    fleet::dead_letter_to(&clients, &queue, &dead, 2).await;
    let huge = format!("{{\"padding\":\"{}\"}}", "x".repeat(256 * 1024 - 20));
    let bodies = [
        "{not json at all",
        "{\"source\":\"lifeguard.agent\",\"detail-type\":\"Drain Started\",\"detail\":{}}",
        huge.as_str(),
        "{\"source\":\"aws.s3\",\"detail-type\":\"Object Created\",\"detail\":{}}",
        TERMINATE,
    ];
    for body in bodies {
        clients
            .sqs
            .send_message()
            .queue_url(&queue.url)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }

    let handler = Arc::new(Recorder::default());
    let shutdown = CancellationToken::new();
    let consumer = tokio::spawn(consume(
        Arc::new(SqsQueue::new(clients.sqs.clone(), queue.url.clone())),
        handler.clone(),
        ConsumerSettings {
            workers: 4,
            wait: Duration::from_secs(1),
            visibility: Duration::from_secs(5),
        },
        shutdown.clone(),
    ));
    eventually(
        "the queue to be empty and the poison dead-lettered",
        Duration::from_secs(60),
        || async {
            let main = fleet::queue_depth(&clients, &queue.url).await;
            let dead = fleet::queue_depth(&clients, &dead.url).await;
            (main == (0, 0) && dead.0 == 3).then_some(())
        },
    )
    .await;
    shutdown.cancel();
    let counters = consumer.await.unwrap();

    let handled = handler.handled.lock().unwrap().clone();
    assert_eq!(handled.len(), 1, "{handled:?}");
    assert!(handled[0].ends_with("lifecycle_terminate"), "{handled:?}");
    assert_eq!(
        counters.deleted, 2,
        "the event and the ignorable one: {counters:?}"
    );
    assert_eq!(counters.ignored, 1);
    // Each poison message was seen twice (maxReceiveCount) before SQS moved it.
    assert_eq!(counters.malformed, 6, "{counters:?}");
}
