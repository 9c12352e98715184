use std::sync::Mutex as StdMutex;

use super::*;

const TERMINATE: &str = include_str!(
    "../../../common/tests/fixtures/aws-events/eventbridge-terminate-lifecycle-action.aws-docs.json"
);
const IGNORED: &str = include_str!(
    "../../../common/tests/fixtures/aws-events/cloudtrail-record-createimage-appstream-NEGATIVE.json"
);

/// A queue in memory: messages handed out once each, what was deleted and released.
#[derive(Default)]
struct FakeQueue {
    state: StdMutex<QueueState>,
}

#[derive(Default)]
struct QueueState {
    waiting: Vec<Received>,
    deleted: Vec<String>,
    delete_calls: Vec<usize>,
    visibility: Vec<(String, Duration)>,
    receive_failures: usize,
}

impl FakeQueue {
    fn with(bodies: &[&str]) -> Arc<FakeQueue> {
        let queue = FakeQueue::default();
        queue.state.lock().unwrap().waiting = bodies
            .iter()
            .enumerate()
            .map(|(i, body)| Received {
                message_id: format!("m{i}"),
                receipt_handle: format!("r{i}"),
                body: (*body).to_string(),
                receive_count: 1,
                sender_id: None,
                sent_at: None,
            })
            .collect();
        Arc::new(queue)
    }
}

impl EventQueue for FakeQueue {
    async fn receive(
        &self,
        max_messages: i32,
        _wait: Duration,
        _visibility: Duration,
    ) -> Result<Vec<Received>, QueueError> {
        let batch = {
            let mut state = self.state.lock().unwrap();
            if state.receive_failures > 0 {
                state.receive_failures -= 1;
                return Err(QueueError {
                    operation: "ReceiveMessage",
                    queue_url: "q".into(),
                    detail: "throttled".into(),
                });
            }
            let n = state.waiting.len().min(max_messages as usize);
            state.waiting.drain(..n).collect::<Vec<_>>()
        };
        if batch.is_empty() {
            // A long poll that finds nothing.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(batch)
    }

    async fn delete_batch(&self, messages: &[Received]) -> Result<Vec<String>, QueueError> {
        let mut state = self.state.lock().unwrap();
        state.delete_calls.push(messages.len());
        state
            .deleted
            .extend(messages.iter().map(|m| m.message_id.clone()));
        Ok(Vec::new())
    }

    async fn set_visibility(
        &self,
        receipt_handle: &str,
        visibility: Duration,
    ) -> Result<(), QueueError> {
        self.state
            .lock()
            .unwrap()
            .visibility
            .push((receipt_handle.to_string(), visibility));
        Ok(())
    }
}

/// Records what it handled; answers `Retry` for the ids it is told to, and takes `delay`.
#[derive(Default)]
struct Recorder {
    handled: StdMutex<Vec<String>>,
    retry: Vec<String>,
    delay: Duration,
    in_flight: StdMutex<(usize, usize)>,
}

impl Handler for Recorder {
    async fn handle(&self, message: &Parsed, received: &Received) -> Handled {
        {
            let mut flight = self.in_flight.lock().unwrap();
            flight.0 += 1;
            flight.1 = flight.1.max(flight.0);
        }
        tokio::time::sleep(self.delay).await;
        self.in_flight.lock().unwrap().0 -= 1;
        self.handled.lock().unwrap().push(format!(
            "{} {}",
            received.message_id,
            message.message.kind()
        ));
        if self.retry.contains(&received.message_id) {
            Handled::Retry {
                reason: "test".into(),
            }
        } else {
            Handled::Done
        }
    }
}

fn settings(workers: usize) -> ConsumerSettings {
    ConsumerSettings {
        workers,
        wait: Duration::from_secs(1),
        visibility: Duration::from_secs(2),
    }
}

/// Consumes until the fake queue is empty and every worker is done, then stops.
async fn drain_queue(queue: Arc<FakeQueue>, handler: Arc<Recorder>, workers: usize) -> Counters {
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let watcher = {
        let queue = queue.clone();
        let handler = handler.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let empty = queue.state.lock().unwrap().waiting.is_empty();
                if empty && handler.in_flight.lock().unwrap().0 == 0 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    stop.cancel();
                    return;
                }
            }
        })
    };
    let counters = consume(queue, handler, settings(workers), shutdown).await;
    watcher.await.unwrap();
    counters
}

#[tokio::test]
async fn handled_messages_are_deleted_in_batches_and_failures_stay() {
    let mut bodies = vec![TERMINATE; 12];
    bodies.push(IGNORED);
    bodies.push("{not json");
    let queue = FakeQueue::with(&bodies);
    let handler = Arc::new(Recorder {
        retry: vec!["m3".into()],
        ..Recorder::default()
    });
    let counters = drain_queue(queue.clone(), handler.clone(), 4).await;

    assert_eq!(
        counters,
        Counters {
            received: 14,
            deleted: 12,
            retried: 1,
            malformed: 1,
            ignored: 1,
        }
    );
    let state = queue.state.lock().unwrap();
    let mut deleted = state.deleted.clone();
    deleted.sort();
    assert!(
        !deleted.contains(&"m3".to_string()),
        "a retried message stays"
    );
    assert!(
        !deleted.contains(&"m13".to_string()),
        "a malformed message stays"
    );
    assert!(
        deleted.contains(&"m12".to_string()),
        "an ignorable message is deleted"
    );
    assert!(state.delete_calls.iter().all(|n| *n <= 10));
    assert!(state.delete_calls.len() < 12, "{:?}", state.delete_calls);
    // The malformed message is made visible again at once, towards its dead-letter queue.
    assert!(
        state
            .visibility
            .contains(&("r13".to_string(), Duration::ZERO))
    );
    // The handler never saw the malformed or the ignorable one.
    assert_eq!(handler.handled.lock().unwrap().len(), 12);
}

#[tokio::test]
async fn never_more_messages_in_hand_than_workers() {
    let queue = FakeQueue::with(&[TERMINATE; 9]);
    let handler = Arc::new(Recorder {
        delay: Duration::from_millis(200),
        ..Recorder::default()
    });
    let counters = drain_queue(queue, handler.clone(), 3).await;
    assert_eq!(counters.deleted, 9);
    assert_eq!(handler.in_flight.lock().unwrap().1, 3);
}

#[tokio::test]
async fn a_slow_message_has_its_visibility_extended() {
    let queue = FakeQueue::with(&[TERMINATE]);
    let handler = Arc::new(Recorder {
        delay: Duration::from_millis(3500),
        ..Recorder::default()
    });
    let counters = drain_queue(queue.clone(), handler, 1).await;
    assert_eq!(counters.deleted, 1);
    let extended: Vec<Duration> = queue
        .state
        .lock()
        .unwrap()
        .visibility
        .iter()
        .filter(|(r, _)| r == "r0")
        .map(|(_, v)| *v)
        .collect();
    // 3.5 s of work with a 2 s visibility: pushed out every second (at 1, 2 and 3 s; a late
    // wake-up on a loaded machine may add one).
    assert!(extended.len() >= 3, "{extended:?}");
    assert!(extended.iter().all(|v| *v == Duration::from_secs(2)));
}

#[tokio::test]
async fn receive_errors_are_ridden_out() {
    let queue = FakeQueue::with(&[TERMINATE, TERMINATE]);
    queue.state.lock().unwrap().receive_failures = 3;
    let counters = drain_queue(queue, Arc::new(Recorder::default()), 2).await;
    assert_eq!(counters.deleted, 2);
}
