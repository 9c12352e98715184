//! `lifeguard-controller run`: the queue consumer, the supervisor, the reconcile loop and the
//! health port, under one shutdown token. SIGTERM stops receiving, lets the messages in hand
//! finish (each is deleted or left to come back), and exits 0.

use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::config::ControllerConfig;
use crate::fleet::AwsFleet;
use crate::http::{self, Limits};
use crate::metrics::Metrics;
use crate::queue::sqs::SqsQueue;
use crate::queue::{ConsumerSettings, consume};
use crate::tracker::Tracker;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("listening on {listen}: {source}")]
    Listen {
        listen: String,
        source: std::io::Error,
    },
}

/// This replica's name in the marks it writes: `LIFEGUARD_REPLICA_ID`, else host and pid.
pub fn replica_id() -> String {
    let chosen = std::env::var("LIFEGUARD_REPLICA_ID")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .or_else(|| std::env::var("HOSTNAME").ok())
                .unwrap_or_else(|| "controller".into());
            format!("{}-{}", host.trim(), std::process::id())
        });
    // Marks are space-separated words.
    chosen
        .chars()
        .map(|c| if c.is_whitespace() { '-' } else { c })
        .take(100)
        .collect()
}

fn install_signals(shutdown: &CancellationToken) -> std::io::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!(
            signal = name,
            "stopping: no new messages; finishing those in hand"
        );
        shutdown.cancel();
    });
    Ok(())
}

pub async fn run(config: ControllerConfig) -> Result<(), ServiceError> {
    let shutdown = CancellationToken::new();
    install_signals(&shutdown).map_err(ServiceError::Signals)?;
    let listener =
        http::bind(&config.http.listen)
            .await
            .map_err(|source| ServiceError::Listen {
                listen: config.http.listen.clone(),
                source,
            })?;

    let sdk = lifeguard_common::aws::sdk_config(&config.aws, None).await;
    let fleet = Arc::new(AwsFleet::new(&sdk, &config.agentless.document));
    // Validation guarantees a queue URL; an empty one fails the first receive loudly.
    let url = config.queue.url.clone().unwrap_or_default();
    let queue = Arc::new(SqsQueue::new(aws_sdk_sqs::Client::new(&sdk), url.clone()));
    let replica = replica_id();
    let config = Arc::new(config);
    let tracker = Arc::new(Tracker::new(
        fleet,
        config.clone(),
        replica.clone(),
        Arc::new(Metrics::new()),
    ));
    tracing::info!(%replica, queue = %url, listen = %config.http.listen, "lifeguard-controller starting");

    let interval = Duration::from_secs(config.reconcile.interval_secs);
    let limits = Limits {
        poll: Duration::from_secs(u64::from(config.queue.wait_time_secs) + 60),
        reconcile: interval * 3 + Duration::from_secs(30),
    };
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(http::serve(
        listener,
        tracker.clone(),
        limits,
        shutdown.clone(),
    ));
    tasks.spawn(tracker.clone().supervise(shutdown.clone()));
    tasks.spawn(reconcile_loop(tracker.clone(), interval, shutdown.clone()));

    let settings = ConsumerSettings {
        workers: config.queue.workers,
        wait: Duration::from_secs(u64::from(config.queue.wait_time_secs)),
        visibility: Duration::from_secs(u64::from(config.queue.visibility_timeout_secs)),
    };
    let counters = consume(queue, tracker, settings, shutdown.clone()).await;
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    tracing::info!(
        received = counters.received,
        deleted = counters.deleted,
        retried = counters.retried,
        malformed = counters.malformed,
        "lifeguard-controller stopped"
    );
    Ok(())
}

async fn reconcile_loop(
    tracker: Arc<Tracker<AwsFleet>>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        let pause = match tracker.reconcile().await {
            Ok(()) => interval,
            Err(error) => {
                tracing::warn!(%error, "reconcile failed; trying again shortly");
                tracker
                    .metrics
                    .api_error(error.operation, error.code.as_deref());
                interval.min(Duration::from_secs(10))
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}
