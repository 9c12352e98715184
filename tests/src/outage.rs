//! A loopback TCP proxy that goes away for a while: the client sees what it would see if the
//! server were stopped and started again (open connections reset, new ones refused), while the
//! server behind it keeps its state.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub struct OutageProxy {
    pub port: u16,
    forwarded: Arc<AtomicU64>,
    outages: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl OutageProxy {
    /// Forwards 127.0.0.1:`port` to 127.0.0.1:`upstream`. Once `after_bytes` bytes have gone
    /// from clients to the server, every connection is cut and the port closed for `down_for`,
    /// then it listens again (once; the proxy ends when the test drops it).
    pub async fn start(upstream: u16, after_bytes: u64, down_for: Duration) -> OutageProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let forwarded = Arc::new(AtomicU64::new(0));
        let outages = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(serve(
            listener,
            address,
            upstream,
            after_bytes,
            down_for,
            forwarded.clone(),
            outages.clone(),
        ));
        OutageProxy {
            port: address.port(),
            forwarded,
            outages,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// How many times the proxy went down (0 or 1).
    pub fn outages(&self) -> u64 {
        self.outages.load(Ordering::SeqCst)
    }

    pub fn forwarded_bytes(&self) -> u64 {
        self.forwarded.load(Ordering::SeqCst)
    }
}

impl Drop for OutageProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    listener: TcpListener,
    address: SocketAddr,
    upstream: u16,
    after_bytes: u64,
    down_for: Duration,
    forwarded: Arc<AtomicU64>,
    outages: Arc<AtomicU64>,
) {
    let cut = Arc::new(Notify::new());
    let mut connections = Vec::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                connections.push(tokio::spawn(pipe(
                    client, upstream, after_bytes, forwarded.clone(), cut.clone(),
                )));
            }
            () = cut.notified() => break,
        }
    }
    outages.fetch_add(1, Ordering::SeqCst);
    // Closing the listener makes new connections fail with "connection refused".
    drop(listener);
    for connection in connections.drain(..) {
        connection.abort();
    }
    tokio::time::sleep(down_for).await;
    // Back up, with the server's state intact: plain forwarding from now on.
    let listener = rebind(address).await;
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(pipe(
            client,
            upstream,
            u64::MAX,
            forwarded.clone(),
            Arc::new(Notify::new()),
        ));
    }
}

async fn rebind(address: SocketAddr) -> TcpListener {
    // The port was ours a moment ago; retry briefly in case the kernel still holds it.
    for _ in 0..50 {
        if let Ok(listener) = TcpListener::bind(address).await {
            return listener;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("could not listen on {address} again");
}

async fn pipe(
    client: TcpStream,
    upstream: u16,
    after_bytes: u64,
    forwarded: Arc<AtomicU64>,
    cut: Arc<Notify>,
) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upward = async {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let read = match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            if server_write.write_all(&buffer[..read]).await.is_err() {
                break;
            }
            let total = forwarded.fetch_add(read as u64, Ordering::SeqCst) + read as u64;
            if total >= after_bytes {
                cut.notify_one();
                // Stay here until the serve loop aborts this connection.
                std::future::pending::<()>().await;
            }
        }
        let _ = server_write.shutdown().await;
    };
    let downward = async {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::join!(upward, downward);
}
