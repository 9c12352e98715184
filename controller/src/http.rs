//! The health and metrics port: `/healthz` (the queue answers and reconciles are recent),
//! `/readyz` (started: reconciled once and polling), `/metrics`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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

/// Serves until `shutdown`. Binding is done by the caller so a taken port fails the start.
pub async fn serve<F: Fleet>(
    listener: TcpListener,
    tracker: Arc<Tracker<F>>,
    limits: Limits,
    shutdown: CancellationToken,
) {
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
        let tracker = tracker.clone();
        let stopping = shutdown.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let tracker = tracker.clone();
                let stopping = stopping.is_cancelled();
                async move {
                    let path = request.uri().path();
                    let response = match path {
                        "/healthz" | "/readyz" => {
                            let (status, body) =
                                verdict(path, tracker.health(), limits, now(), stopping);
                            respond(status, "application/json", body)
                        }
                        "/metrics" => respond(
                            StatusCode::OK,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            tracker.metrics.render(),
                        ),
                        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, %peer, "HTTP connection ended with an error");
            }
        });
    }
}

pub async fn bind(listen: &str) -> std::io::Result<TcpListener> {
    let address: SocketAddr = listen.parse().map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{listen}: {e}"))
    })?;
    TcpListener::bind(address).await
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    const AT: OffsetDateTime = datetime!(2026-11-22 10:00:00 UTC);

    fn limits() -> Limits {
        Limits {
            poll: Duration::from_secs(60),
            reconcile: Duration::from_secs(200),
        }
    }

    #[test]
    fn healthy_while_polls_and_reconciles_are_recent() {
        let health = Health {
            last_poll: Some(AT - time::Duration::seconds(5)),
            last_reconcile: Some(AT - time::Duration::seconds(100)),
            watching: 3,
        };
        let (status, body) = verdict("/healthz", health, limits(), AT, false);
        assert_eq!(status, StatusCode::OK, "{body}");
        let stale = Health {
            last_poll: Some(AT - time::Duration::seconds(61)),
            ..health
        };
        let (status, body) = verdict("/healthz", stale, limits(), AT, false);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("queue not reachable recently"), "{body}");
    }

    #[test]
    fn ready_once_started_and_not_while_stopping() {
        let started = Health {
            last_poll: Some(AT),
            last_reconcile: Some(AT),
            watching: 0,
        };
        assert_eq!(
            verdict("/readyz", started, limits(), AT, false).0,
            StatusCode::OK
        );
        assert_eq!(
            verdict("/readyz", started, limits(), AT, true).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        let fresh = Health {
            last_poll: None,
            last_reconcile: None,
            watching: 0,
        };
        let (status, body) = verdict("/readyz", fresh, limits(), AT, false);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("not reconciled yet"), "{body}");
    }
}
