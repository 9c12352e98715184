//! The health and metrics port: `/healthz` (the queue answers and reconciles are recent),
//! `/readyz` (started: reconciled once and polling), `/metrics`. One request per connection,
//! headers within `http.header_timeout_secs`, every connection closed after
//! `http.connection_timeout_secs` at the latest, at most `http.max_connections` at once.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::HttpConfig;
use crate::fleet::Fleet;
use crate::tracker::{Health, Tracker, now};

/// What the probes compare against.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A receive must have answered within this.
    pub poll: Duration,
    /// A reconcile must have finished within this.
    pub reconcile: Duration,
}

/// The verdict of `/healthz` or `/readyz`: the status and a one-line JSON body.
pub fn verdict(
    path: &str,
    health: Health,
    limits: Limits,
    at: OffsetDateTime,
    stopping: bool,
) -> (StatusCode, String) {
    let age = |t: Option<OffsetDateTime>| t.map(|t| (at - t).whole_seconds());
    let fresh = |t: Option<OffsetDateTime>, limit: Duration| {
        t.is_some_and(|t| at - t <= time::Duration::try_from(limit).unwrap_or(time::Duration::MAX))
    };
    let mut problems = Vec::new();
    if health.failed_task.is_some() {
        problems.push("a task of the service ended; it is stopping");
    }
    match path {
        "/readyz" => {
            if stopping {
                problems.push("shutting down");
            }
            if health.last_reconcile.is_none() {
                problems.push("not reconciled yet");
            }
            if health.last_poll.is_none() {
                problems.push("queue not polled yet");
            }
        }
        _ => {
            if !fresh(health.last_poll, limits.poll) {
                problems.push("queue not reachable recently");
            }
            if !fresh(health.last_reconcile, limits.reconcile) {
                problems.push("no recent reconcile");
            }
        }
    }
    let body = serde_json::json!({
        "status": if problems.is_empty() { "ok" } else { "unhealthy" },
        "problems": problems,
        "last_poll_age_secs": age(health.last_poll),
        "last_reconcile_age_secs": age(health.last_reconcile),
        "watching": health.watching,
        "failed_task": health.failed_task,
    });
    let status = if problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body.to_string())
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

/// How connections to the port are bounded, so that whoever can reach it cannot hold it open:
/// each connection costs a file descriptor and a task, and the queue consumer and AWS clients
/// need descriptors too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections served at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// Time for a request's headers to arrive in full (hyper's own header read timeout).
    pub header_timeout: Duration,
    /// The longest a connection stays open, whatever the client does: a probe or a scrape
    /// takes milliseconds, so this only ends connections that are stuck or abusive (a client
    /// that trickles a request body, or never reads what it asked for).
    pub connection_timeout: Duration,
}

impl From<&HttpConfig> for ConnectionLimits {
    fn from(config: &HttpConfig) -> Self {
        ConnectionLimits {
            max_connections: config.max_connections,
            header_timeout: Duration::from_secs(config.header_timeout_secs),
            connection_timeout: Duration::from_secs(config.connection_timeout_secs),
        }
    }
}

/// How long a connection open at shutdown may take to finish: an answer being written takes
/// milliseconds, and a client still sending its request is not worth delaying the exit for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// How often connections turned away at the cap are logged, at most: a flood of them must not
/// flood the log as well.
const REJECTED_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Serves until `shutdown`. Binding is done by the caller so a taken port fails the start.
pub async fn serve<F: Fleet>(
    listener: TcpListener,
    tracker: Arc<Tracker<F>>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let bounds = ConnectionLimits::from(&tracker.config.http);
    let pages = move |path: &str, stopping: bool| match path {
        "/healthz" | "/readyz" => {
            let (status, body) = verdict(path, tracker.health(), limits, now(), stopping);
            respond(status, "application/json", body)
        }
        "/metrics" => respond(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            tracker.metrics.render(),
        ),
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    };
    accept_loop(listener, bounds, shutdown, pages).await;
}

/// Accepts connections until `shutdown` and answers each request with `pages(path, stopping)`.
async fn accept_loop<P>(
    listener: TcpListener,
    bounds: ConnectionLimits,
    shutdown: CancellationToken,
    pages: P,
) where
    P: Fn(&str, bool) -> Response<Full<Bytes>> + Clone + Send + Sync + 'static,
{
    // `Semaphore::new` panics above MAX_PERMITS; validation allows 10000 at most, and the clamp
    // keeps a caller that skipped validation from panicking here.
    let places = Arc::new(Semaphore::new(
        bounds.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(bounds.header_timeout)
        // One request per connection: probes and scrapes come seconds apart, so a connection
        // kept alive between them would only sit idle in one of the few places.
        .keep_alive(false);
    let mut rejected = Rejected::default();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(place) = places.clone().try_acquire_owned() else {
            // Closed unanswered: answering would cost the very time and buffers the cap is
            // there to save.
            drop(stream);
            rejected.count(peer, bounds.max_connections);
            continue;
        };
        let pages = pages.clone();
        let stopping = shutdown.clone();
        let shutdown = shutdown.clone();
        let connection = builder.serve_connection(
            TokioIo::new(stream),
            hyper::service::service_fn(move |request: Request<Incoming>| {
                let response = pages(request.uri().path(), stopping.is_cancelled());
                async move { Ok::<_, Infallible>(response) }
            }),
        );
        tokio::spawn(async move {
            let _place = place;
            tokio::pin!(connection);
            let shutting_down = tokio::select! {
                ended = connection.as_mut() => {
                    if let Err(error) = ended {
                        tracing::debug!(%error, %peer, "HTTP connection ended with an error");
                    }
                    return;
                }
                () = tokio::time::sleep(bounds.connection_timeout) => false,
                () = shutdown.cancelled() => true,
            };
            if shutting_down {
                connection.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(SHUTDOWN_GRACE, connection).await;
            } else {
                // Dropping the connection closes the socket.
                tracing::debug!(%peer, "HTTP connection open too long; closed");
            }
        });
    }
}

/// Connections turned away at the cap: the first is logged at once, then at most one line a
/// minute carries the count since the last line.
#[derive(Default)]
struct Rejected {
    since_logged: u64,
    logged_at: Option<Instant>,
}

impl Rejected {
    fn count(&mut self, peer: SocketAddr, max_connections: usize) {
        self.since_logged += 1;
        if self
            .logged_at
            .is_none_or(|at| at.elapsed() >= REJECTED_LOG_INTERVAL)
        {
            tracing::warn!(
                %peer,
                rejected = self.since_logged,
                max_connections,
                "HTTP connections closed unanswered: the health port is at its connection cap"
            );
            self.since_logged = 0;
            self.logged_at = Some(Instant::now());
        }
    }
}

pub async fn bind(listen: &str) -> std::io::Result<TcpListener> {
    let address: SocketAddr = listen.parse().map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{listen}: {e}"))
    })?;
    TcpListener::bind(address).await
}

#[cfg(test)]
mod tests;
