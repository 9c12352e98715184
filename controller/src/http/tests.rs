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
        failed_task: None,
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
fn a_task_that_ended_turns_both_probes_red() {
    let failed = Health {
        last_poll: Some(AT),
        last_reconcile: Some(AT),
        watching: 0,
        failed_task: Some("supervisor"),
    };
    for path in ["/healthz", "/readyz"] {
        let (status, body) = verdict(path, failed, limits(), AT, false);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert!(body.contains("supervisor"), "{body}");
    }
}

#[test]
fn ready_once_started_and_not_while_stopping() {
    let started = Health {
        last_poll: Some(AT),
        last_reconcile: Some(AT),
        watching: 0,
        failed_task: None,
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
        failed_task: None,
    };
    let (status, body) = verdict("/readyz", fresh, limits(), AT, false);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("not reconciled yet"), "{body}");
}

// The connection tests below run the real accept loop on 127.0.0.1:0 with timeouts of a second
// or so instead of the production 5 s and 30 s, so that each test takes seconds; every wait is
// bounded by `OUTER`, generous enough for a loaded 2-core machine, and the assertions are on
// the server closing the connection, never on when exactly it did.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::timeout;

const OUTER: Duration = Duration::from_secs(20);

const REQUEST: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: lifeguard\r\n\r\n";

fn short() -> ConnectionLimits {
    ConnectionLimits {
        max_connections: 8,
        header_timeout: Duration::from_secs(1),
        connection_timeout: Duration::from_secs(2),
    }
}

/// Starts the accept loop with a trivial page in place of the tracker's.
async fn start(bounds: ConnectionLimits) -> (SocketAddr, CancellationToken, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let pages =
        |path: &str, _stopping: bool| respond(StatusCode::OK, "text/plain", format!("{path}\n"));
    let task = tokio::spawn(accept_loop(listener, bounds, shutdown.clone(), pages));
    (address, shutdown, task)
}

/// Everything the server sends until it closes the connection (end of stream or reset).
async fn until_closed<R: AsyncReadExt + Unpin>(stream: &mut R) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return seen,
            Ok(n) => seen.extend_from_slice(&buffer[..n]),
        }
    }
}

/// Sends a header one byte every 200 ms and never finishes it; stops when the server is gone
/// (or after 200 bytes, 40 s, so the loop is bounded even if the test's own timeout is not).
fn dribble(mut writer: tokio::net::tcp::OwnedWriteHalf) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut header = b"GET /healthz HTTP/1.1\r\nHost: lifeguard\r\nX-Slow: ".to_vec();
        header.resize(200, b'a');
        for byte in header {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed() {
    let (address, _shutdown, _server) = start(short()).await;
    let mut stream = TcpStream::connect(address).await.unwrap();
    let seen = timeout(OUTER, until_closed(&mut stream))
        .await
        .expect("the server should close a connection that sends nothing");
    assert!(!seen.starts_with(b"HTTP/1.1 200"), "{seen:?}");
}

#[tokio::test]
async fn a_header_sent_byte_by_byte_is_cut_off() {
    let (address, _shutdown, _server) = start(short()).await;
    let (mut reader, writer) = TcpStream::connect(address).await.unwrap().into_split();
    let writer = dribble(writer);
    let seen = timeout(OUTER, until_closed(&mut reader))
        .await
        .expect("the server should close a connection whose header never completes");
    writer.abort();
    assert!(!seen.starts_with(b"HTTP/1.1 200"), "{seen:?}");
}

#[tokio::test]
async fn a_connection_is_cut_after_its_time_whatever_it_does() {
    // The header timeout alone would let this client go on for a minute: the connection's own
    // deadline is what cuts it.
    let bounds = ConnectionLimits {
        header_timeout: Duration::from_secs(60),
        connection_timeout: Duration::from_secs(1),
        ..short()
    };
    let (address, _shutdown, _server) = start(bounds).await;
    let (mut reader, writer) = TcpStream::connect(address).await.unwrap().into_split();
    let writer = dribble(writer);
    timeout(OUTER, until_closed(&mut reader))
        .await
        .expect("the server should close a connection that outlives its deadline");
    writer.abort();
}

#[tokio::test]
async fn a_served_connection_is_not_kept_alive() {
    let (address, _shutdown, _server) = start(short()).await;
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(REQUEST).await.unwrap();
    let seen = timeout(OUTER, until_closed(&mut stream))
        .await
        .expect("the server should close the connection after its answer");
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.starts_with("HTTP/1.1 200 OK"), "{seen}");
    assert!(seen.ends_with("/healthz\n"), "{seen}");
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_unserved() {
    // Long timeouts: the two held connections must outlast the test's steps.
    let bounds = ConnectionLimits {
        max_connections: 2,
        header_timeout: Duration::from_secs(15),
        connection_timeout: Duration::from_secs(15),
    };
    let (address, _shutdown, _server) = start(bounds).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(address).await.unwrap();
        // Half a request: the server is waiting for the rest.
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .unwrap();
        held.push(stream);
    }
    // Connections are accepted in order, so the third comes after both held ones took their
    // places. Writing may already fail if the server was quick to close it.
    let mut third = TcpStream::connect(address).await.unwrap();
    let _ = third.write_all(REQUEST).await;
    let seen = timeout(OUTER, until_closed(&mut third))
        .await
        .expect("the server should close a connection beyond the cap at once");
    assert!(seen.is_empty(), "{}", String::from_utf8_lossy(&seen));

    drop(held);
    // The server notices the two went only when it next reads them: try until a place is free.
    let served = timeout(OUTER, async {
        loop {
            let mut stream = TcpStream::connect(address).await.unwrap();
            if stream.write_all(REQUEST).await.is_ok() {
                let seen = until_closed(&mut stream).await;
                if seen.starts_with(b"HTTP/1.1 200 OK") {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        served.is_ok(),
        "a connection should be served once the held ones went"
    );
}

#[tokio::test]
async fn shutdown_stops_the_server_and_closes_its_connections() {
    let bounds = ConnectionLimits {
        header_timeout: Duration::from_secs(15),
        connection_timeout: Duration::from_secs(15),
        ..short()
    };
    let (address, shutdown, server) = start(bounds).await;
    let mut held = TcpStream::connect(address).await.unwrap();
    // Make sure the server has accepted it before stopping.
    held.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    shutdown.cancel();
    timeout(OUTER, server)
        .await
        .expect("the server should stop on the token")
        .unwrap();
    timeout(OUTER, until_closed(&mut held))
        .await
        .expect("a connection open at shutdown should be closed");
    assert!(TcpStream::connect(address).await.is_err());
}

fn parse(text: &str) -> Result<crate::config::ControllerConfig, String> {
    let path = std::path::PathBuf::from("/etc/lifeguard/controller.toml");
    let config: crate::config::ControllerConfig =
        lifeguard_common::config::parse_toml(&path, text).map_err(|e| e.to_string())?;
    config.validate(&path).map_err(|e| e.to_string())?;
    Ok(config)
}

const QUEUE: &str = "[queue]\nurl = \"https://sqs.eu-west-1.amazonaws.com/1/q\"\n";

#[test]
fn the_connection_bounds_have_defaults_and_bounds() {
    let config = parse(QUEUE).unwrap();
    assert_eq!(config.http, HttpConfig::default());
    assert_eq!(
        ConnectionLimits::from(&config.http),
        ConnectionLimits {
            max_connections: 64,
            header_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(30),
        }
    );
    assert_eq!(config.http.listen, "0.0.0.0:9090");
    let config = parse(&format!(
        "{QUEUE}[http]\nlisten = \"127.0.0.1:9090\"\nmax_connections = 4\nheader_timeout_secs = 2\nconnection_timeout_secs = 2\n"
    ))
    .unwrap();
    assert_eq!(config.http.max_connections, 4);
    for (line, key) in [
        ("max_connections = 0", "http.max_connections"),
        ("max_connections = 10001", "http.max_connections"),
        ("header_timeout_secs = 0", "http.header_timeout_secs"),
        ("header_timeout_secs = 61", "http.header_timeout_secs"),
        (
            "connection_timeout_secs = 4",
            "http.connection_timeout_secs",
        ),
        (
            "connection_timeout_secs = 3601",
            "http.connection_timeout_secs",
        ),
        ("idle_timeout_secs = 30", "idle_timeout_secs"),
        ("max_connections = \"64\"", "max_connections"),
    ] {
        let error = parse(&format!("{QUEUE}[http]\n{line}\n")).unwrap_err();
        assert!(error.contains(key), "{line}: {error}");
    }
}
