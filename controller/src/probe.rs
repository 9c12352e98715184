//! `lifeguard-controller probe`: the container's health check. A distroless image has no curl,
//! so the binary asks its own health port; exit 0 only on `200 OK`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// Where to ask: the configured listen address, on loopback when it binds every interface.
pub fn local_address(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// `GET path` on `address` within `timeout`: `Ok` with the body on 200, what went wrong otherwise.
pub async fn probe(address: SocketAddr, path: &str, timeout: Duration) -> Result<String, String> {
    tokio::time::timeout(timeout, ask(address, path))
        .await
        .map_err(|_| format!("GET {path} on {address}: no answer within {timeout:?}"))?
}

async fn ask(address: SocketAddr, path: &str) -> Result<String, String> {
    let failed =
        |what: &str, e: &dyn std::fmt::Display| format!("GET {path} on {address}: {what}: {e}");
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| failed("connecting", &e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed("handshake", &e))?;
    let driver = tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, address.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|e| failed("request", &e))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| failed("sending", &e))?;
    let status = response.status();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_string())
        .unwrap_or_default();
    driver.abort();
    if status == hyper::StatusCode::OK {
        Ok(body)
    } else {
        Err(format!("GET {path} on {address}: {status} {body}"))
    }
}
