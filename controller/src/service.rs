//! `lifeguard-controller run`: the queue consumer, the supervisor, the reconcile loop and the
//! health port, under one shutdown token. SIGTERM stops receiving, lets the messages in hand
//! finish (each is deleted or left to come back), and exits 0. A task that ends on its own (a
//! panic, a loop that returned) turns the health probes red and stops the whole service with an
//! error, for the container runtime to restart it: a controller that polls but no longer
//! supervises must never look healthy.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::commands::OperatorCommands;
use crate::config::ControllerConfig;
use crate::drill::aws::AwsDrill;
use crate::fleet::AwsFleet;
use crate::http::{self, Limits};
use crate::image::aws::AwsImages;
use crate::image::service::{ImageService, Triggers};
use crate::metrics::Metrics;
use crate::pace::Pacer;
use crate::queue::sqs::SqsQueue;
use crate::queue::{ConsumerSettings, consume};
use crate::router::Router;
use crate::swap::aws::AwsSwap;
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
    #[error("the {task} task {how} while the service should have run")]
    TaskEnded { task: &'static str, how: String },
}

/// One of the service's tasks, named for the log and the health probes.
pub type Task = (&'static str, Pin<Box<dyn Future<Output = ()> + Send>>);

/// Runs `tasks` until `shutdown`. The first to end before `shutdown` is a failure: `failed` is
/// told (health turns red), `shutdown` is cancelled so the others stop, and the error names it.
pub async fn run_tasks(
    tasks: Vec<Task>,
    shutdown: &CancellationToken,
    failed: impl Fn(&'static str),
) -> Result<(), ServiceError> {
    let mut set = tokio::task::JoinSet::new();
    let mut names = HashMap::new();
    for (name, task) in tasks {
        names.insert(set.spawn(task).id(), name);
    }
    let mut failure = None;
    while let Some(joined) = set.join_next_with_id().await {
        let (id, how) = match joined {
            Ok((id, ())) => (id, "returned".to_string()),
            Err(error) => (
                error.id(),
                if error.is_panic() {
                    "panicked".to_string()
                } else {
                    "was cancelled".to_string()
                },
            ),
        };
        let task = names.get(&id).copied().unwrap_or("unnamed");
        if failure.is_none() && !shutdown.is_cancelled() {
            tracing::error!(
                task,
                how,
                "a task of the service ended while it should have run: stopping, to be restarted"
            );
            failed(task);
            failure = Some(ServiceError::TaskEnded { task, how });
            shutdown.cancel();
        }
    }
    failure.map_or(Ok(()), Err)
}

/// 64 random bits without a dependency: std's hasher keys are random per process.
pub fn random_bits() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// This replica's name in the marks it writes: `LIFEGUARD_REPLICA_ID`, else host, pid and a
/// random suffix (containers on host networking share host names and often pids).
pub fn replica_id() -> String {
    let chosen = std::env::var("LIFEGUARD_REPLICA_ID")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .or_else(|| std::env::var("HOSTNAME").ok())
                .unwrap_or_else(|| "controller".into());
            format!(
                "{}-{}-{:08x}",
                host.trim(),
                std::process::id(),
                random_bits() as u32
            )
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

    let sdk = lifeguard_common::aws::sdk_config(&config.aws_settings(), None).await;
    // One pacer for every call of this replica: the buckets are the account's.
    let pacer = Arc::new(Pacer::new(config.pacing.rates()));
    let document = config.agentless.document.clone();
    let paced_fleet = || AwsFleet::paced(&sdk, &document, pacer.clone());
    let fleet = Arc::new(paced_fleet());
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
    let settings = ConsumerSettings {
        workers: config.queue.workers,
        wait: Duration::from_secs(u64::from(config.queue.wait_time_secs)),
        visibility: Duration::from_secs(u64::from(config.queue.visibility_timeout_secs)),
    };
    let images = Arc::new(ImageService::new(
        AwsImages::new(&sdk),
        Triggers {
            images: config.images.clone(),
            managed_tag: config.groups.tag.clone(),
            managed_groups: config.groups.names.clone(),
        },
    ));
    let commands = Arc::new(OperatorCommands {
        drill: AwsDrill::new(&sdk, &config.aws_settings(), paced_fleet()),
        swap: AwsSwap::new(&sdk, paced_fleet()),
        config: config.clone(),
        replica: replica.clone(),
        shutdown: shutdown.clone(),
        settle: Duration::from_secs(2),
    });
    let router = Arc::new(Router {
        tracker: tracker.clone(),
        images: images.clone(),
        commands,
    });
    let consumer = {
        let shutdown = shutdown.clone();
        async move {
            let counters = consume(queue, router, settings, shutdown).await;
            tracing::info!(
                received = counters.received,
                deleted = counters.deleted,
                retried = counters.retried,
                malformed = counters.malformed,
                "queue consumer stopped"
            );
        }
    };
    let tasks: Vec<Task> = vec![
        (
            "http",
            Box::pin(http::serve(
                listener,
                tracker.clone(),
                limits,
                shutdown.clone(),
            )),
        ),
        (
            "supervisor",
            Box::pin(tracker.clone().supervise(shutdown.clone())),
        ),
        (
            "reconcile",
            Box::pin(reconcile_loop(tracker.clone(), interval, shutdown.clone())),
        ),
        ("queue consumer", Box::pin(consumer)),
        (
            "image pipelines",
            Box::pin(image_loop(images, interval, shutdown.clone())),
        ),
    ];
    let ended = run_tasks(tasks, &shutdown, |task| tracker.task_failed(task)).await;
    tracing::info!("lifeguard-controller stopped");
    ended
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

/// Takes every running image pipeline as far as it goes, each reconcile interval: the safety
/// net under the `EC2 AMI State Change` events, and how a pipeline goes on after a restart.
async fn image_loop(
    images: Arc<ImageService<AwsImages>>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        match images.reconcile().await {
            Ok(0) => {}
            Ok(running) => tracing::debug!(running, "image pipelines looked at"),
            Err(error) => tracing::warn!(%error, "image pipelines: trying again next pass"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn until_shutdown(shutdown: &CancellationToken) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let shutdown = shutdown.clone();
        Box::pin(async move { shutdown.cancelled().await })
    }

    #[test]
    fn replicas_on_one_host_get_distinct_ids() {
        let (a, b) = (replica_id(), replica_id());
        if std::env::var("LIFEGUARD_REPLICA_ID").is_err() {
            assert_ne!(a, b);
        }
    }

    #[tokio::test]
    async fn a_task_that_panics_stops_the_service_with_its_name() {
        let shutdown = CancellationToken::new();
        let told = Mutex::new(Vec::new());
        let tasks: Vec<Task> = vec![
            ("queue consumer", until_shutdown(&shutdown)),
            ("http", until_shutdown(&shutdown)),
            (
                "supervisor",
                Box::pin(async {
                    tokio::task::yield_now().await;
                    panic!("a duration overflowed");
                }),
            ),
        ];
        let ended = tokio::time::timeout(
            Duration::from_secs(20),
            run_tasks(tasks, &shutdown, |task| told.lock().unwrap().push(task)),
        )
        .await
        .expect("the other tasks stopped");
        let error = ended.unwrap_err();
        assert!(
            matches!(&error, ServiceError::TaskEnded { task: "supervisor", how } if how == "panicked"),
            "{error}"
        );
        assert!(shutdown.is_cancelled());
        assert_eq!(*told.lock().unwrap(), ["supervisor"]);
    }

    #[tokio::test]
    async fn a_loop_that_returns_is_a_failure_too_but_a_shutdown_is_not() {
        let shutdown = CancellationToken::new();
        let tasks: Vec<Task> = vec![
            ("reconcile", Box::pin(async {})),
            ("http", until_shutdown(&shutdown)),
        ];
        let error = run_tasks(tasks, &shutdown, |_| {}).await.unwrap_err();
        assert!(
            error.to_string().contains("reconcile task returned"),
            "{error}"
        );

        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let tasks: Vec<Task> = vec![("http", until_shutdown(&shutdown))];
        assert!(run_tasks(tasks, &shutdown, |_| {}).await.is_ok());
    }
}
