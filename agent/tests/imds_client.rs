//! The IMDSv2 client (`HttpImds`) against a fake metadata service on a loopback port: the
//! token's life (fetched once, renewed early, dropped on 401), 404 as "nothing there", retries
//! and the read deadline, garbage answers refused, no silent IMDSv1, and the configured base URL.
//!
//! The fake is a small HTTP/1.1 server on `tokio::net::TcpListener` that records every request
//! (method, path, token and TTL headers, the status it answered) so the tests check what the
//! client sent, not only what it returned.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lifeguard_agent::config::ImdsConfig;
use lifeguard_agent::imds::{self, HttpImds, ImdsError, InstanceMetadata};
use lifeguard_common::message::SpotAction;
use lifeguard_common::message::imds::TargetLifecycleState;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

const TOKEN_PATH: &str = "/latest/api/token";
const INSTANCE: &str = "i-0123456789abcdef0";
/// Every test ends well within this, whatever the client does.
const TEST_BOUND: Duration = Duration::from_secs(30);
/// Scheduling slack allowed on top of a configured read deadline.
const SLACK: Duration = Duration::from_secs(2);

// ----- the fake IMDS -----

/// One request as the fake received it, with the status it answered (`None`: never answered).
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    token: Option<String>,
    ttl: Option<String>,
    at: Instant,
    status: Option<u16>,
}

impl Seen {
    fn is_token_put(&self) -> bool {
        self.method == "PUT" && self.path.ends_with(TOKEN_PATH)
    }
}

/// What the fake does with one request.
enum Reply {
    Answer {
        status: u16,
        body: Vec<u8>,
        delay: Duration,
    },
    /// Keep the connection open and never answer.
    Hang,
}

impl Reply {
    fn ok(body: impl Into<Vec<u8>>) -> Reply {
        Reply::Answer {
            status: 200,
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    fn status(status: u16) -> Reply {
        Reply::Answer {
            status,
            body: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    fn after(self, wait: Duration) -> Reply {
        match self {
            Reply::Answer { status, body, .. } => Reply::Answer {
                status,
                body,
                delay: wait,
            },
            Reply::Hang => Reply::Hang,
        }
    }
}

type Handler = dyn Fn(&Seen, &[Seen]) -> Reply + Send + Sync;

/// A fake IMDS on 127.0.0.1; the handler sees each request and the ones before it. Dropping it
/// stops the server and every connection it holds.
struct Fake {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Seen>>>,
    server: JoinHandle<()>,
}

impl Fake {
    async fn start(handler: impl Fn(&Seen, &[Seen]) -> Reply + Send + Sync + 'static) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let server = tokio::spawn({
            let log = Arc::clone(&log);
            async move {
                let mut connections = JoinSet::new();
                while let Ok((stream, _)) = listener.accept().await {
                    connections.spawn(serve(stream, Arc::clone(&handler), Arc::clone(&log)));
                }
            }
        });
        Fake { addr, log, server }
    }

    /// The base URL (no trailing slash) of the fake's root.
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }

    fn token_puts(&self) -> Vec<Seen> {
        self.requests()
            .into_iter()
            .filter(Seen::is_token_put)
            .collect()
    }

    fn gets(&self) -> Vec<Seen> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "GET")
            .collect()
    }

    fn gets_of(&self, path: &str) -> Vec<Seen> {
        let suffix = format!("/latest/{path}");
        self.gets()
            .into_iter()
            .filter(|r| r.path.ends_with(&suffix))
            .collect()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Serves one keep-alive connection: request line and headers, a `Content-Length` body (read
/// and dropped), then the handler's reply.
async fn serve(stream: TcpStream, handler: Arc<Handler>, log: Arc<Mutex<Vec<Seen>>>) {
    let mut stream = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
            return;
        };
        let (method, path) = (method.to_string(), path.to_string());
        let mut headers = HashMap::new();
        loop {
            let mut header = String::new();
            if stream.read_line(&mut header).await.unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
            }
        }
        let length: usize = headers
            .get("content-length")
            .map_or(0, |v| v.parse().unwrap_or(0));
        let mut body = vec![0; length];
        if stream.read_exact(&mut body).await.is_err() {
            return;
        }

        let mut seen = Seen {
            method,
            path,
            token: headers.get("x-aws-ec2-metadata-token").cloned(),
            ttl: headers.get("x-aws-ec2-metadata-token-ttl-seconds").cloned(),
            at: Instant::now(),
            status: None,
        };
        let reply = {
            let mut log = log.lock().unwrap();
            let reply = handler(&seen, &log);
            if let Reply::Answer { status, .. } = &reply {
                seen.status = Some(*status);
            }
            log.push(seen);
            reply
        };
        let (status, body, delay) = match reply {
            Reply::Answer {
                status,
                body,
                delay,
            } => (status, body, delay),
            Reply::Hang => std::future::pending().await,
        };
        tokio::time::sleep(delay).await;
        let head = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            reason(status),
            body.len()
        );
        let stream = stream.get_mut();
        if stream.write_all(head.as_bytes()).await.is_err()
            || stream.write_all(&body).await.is_err()
            || stream.flush().await.is_err()
        {
            return;
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

/// IMDS as an instance sees it, for handlers to delegate to: tokens `token-1`, `token-2`, ...
/// that expire after the TTL they were asked for, GETs that need a live token (401 otherwise,
/// unless IMDSv1 is on), metadata from a map (404 when absent), all under a path prefix.
struct Metadata {
    prefix: String,
    imdsv1: bool,
    state: Mutex<MetadataState>,
}

#[derive(Default)]
struct MetadataState {
    issued: usize,
    /// Live tokens and when they expire.
    tokens: HashMap<String, Instant>,
    data: HashMap<String, Vec<u8>>,
}

impl Metadata {
    fn new() -> Arc<Metadata> {
        Metadata::build("", false)
    }

    fn under(prefix: &str) -> Arc<Metadata> {
        Metadata::build(prefix, false)
    }

    /// An instance that also answers token-less GETs (IMDSv1 enabled).
    fn with_imdsv1() -> Arc<Metadata> {
        Metadata::build("", true)
    }

    fn build(prefix: &str, imdsv1: bool) -> Arc<Metadata> {
        let metadata = Metadata {
            prefix: prefix.to_string(),
            imdsv1,
            state: Mutex::new(MetadataState::default()),
        };
        metadata.set(imds::INSTANCE_ID, INSTANCE);
        metadata.set(imds::REGION, "eu-west-1");
        metadata.set(imds::LIFECYCLE_STATE, "InService");
        Arc::new(metadata)
    }

    fn set(&self, path: &str, body: impl Into<Vec<u8>>) {
        let mut state = self.state.lock().unwrap();
        state.data.insert(path.to_string(), body.into());
    }

    fn remove(&self, path: &str) {
        self.state.lock().unwrap().data.remove(path);
    }

    /// As if IMDS restarted: every token issued so far is no longer accepted.
    fn forget_tokens(&self) {
        self.state.lock().unwrap().tokens.clear();
    }

    fn reply(&self, request: &Seen) -> Reply {
        let Some(path) = request.path.strip_prefix(&self.prefix) else {
            return Reply::status(404);
        };
        let mut state = self.state.lock().unwrap();
        let now = Instant::now();
        state.tokens.retain(|_, expires| *expires > now);
        match (request.method.as_str(), path) {
            ("PUT", TOKEN_PATH) => {
                let ttl = request.ttl.as_deref().and_then(|t| t.parse::<u64>().ok());
                let Some(ttl) = ttl.filter(|t| (1..=21_600).contains(t)) else {
                    return Reply::status(400);
                };
                state.issued += 1;
                let token = format!("token-{}", state.issued);
                state
                    .tokens
                    .insert(token.clone(), now + Duration::from_secs(ttl));
                Reply::ok(token)
            }
            ("GET", path) => {
                let authorised = match &request.token {
                    Some(token) => state.tokens.contains_key(token),
                    None => self.imdsv1,
                };
                if !authorised {
                    return Reply::status(401);
                }
                match path
                    .strip_prefix("/latest/")
                    .and_then(|p| state.data.get(p))
                {
                    Some(body) => Reply::ok(body.clone()),
                    None => Reply::status(404),
                }
            }
            _ => Reply::status(405),
        }
    }
}

/// A fake serving `metadata` unchanged.
async fn serving(metadata: &Arc<Metadata>) -> Fake {
    let metadata = Arc::clone(metadata);
    Fake::start(move |request, _| metadata.reply(request)).await
}

fn config(base_url: String) -> ImdsConfig {
    ImdsConfig {
        base_url,
        token_ttl_secs: 21_600,
        request_timeout_ms: 500,
        read_deadline_ms: 3_000,
        allow_imdsv1: false,
    }
}

fn client(config: &ImdsConfig) -> HttpImds {
    HttpImds::new(config).unwrap()
}

/// Runs a test body under a hard bound so no client behaviour can hang the suite.
async fn bounded<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_BOUND, test)
        .await
        .expect("the test did not finish within its bound")
}

// ----- 1. the token: fetched once, with its TTL, sent on every read -----

#[tokio::test]
async fn token_is_fetched_once_with_its_ttl_and_sent_on_every_read() {
    bounded(async {
        let metadata = Metadata::new();
        let fake = serving(&metadata).await;
        let mut config = config(fake.url());
        config.token_ttl_secs = 300;
        let imds = client(&config);

        assert_eq!(imds::instance_id(&imds).await.unwrap(), INSTANCE);
        assert_eq!(imds::region(&imds).await.unwrap(), "eu-west-1");
        assert_eq!(
            imds::target_lifecycle_state(&imds).await.unwrap(),
            Some(TargetLifecycleState::InService)
        );
        assert_eq!(imds::spot_action(&imds).await.unwrap(), None);
        assert_eq!(imds::instance_id(&imds).await.unwrap(), INSTANCE);

        let requests = fake.requests();
        let first = &requests[0];
        assert!(first.is_token_put(), "the first request: {first:?}");
        assert_eq!(first.ttl.as_deref(), Some("300"), "TTL asked for");
        assert_eq!(first.token, None, "the token PUT carries no token");

        let puts = fake.token_puts();
        assert_eq!(puts.len(), 1, "one token for five reads: {requests:#?}");
        let gets = fake.gets();
        assert_eq!(gets.len(), 5, "{requests:#?}");
        for get in &gets {
            assert_eq!(get.token.as_deref(), Some("token-1"), "{get:?}");
            assert_eq!(get.ttl, None, "{get:?}");
            assert_eq!(
                get.status,
                Some(if get.path.contains("spot") { 404 } else { 200 })
            );
        }
        let paths: Vec<&str> = gets.iter().map(|g| g.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/latest/meta-data/instance-id",
                "/latest/meta-data/placement/region",
                "/latest/meta-data/autoscaling/target-lifecycle-state",
                "/latest/meta-data/spot/instance-action",
                "/latest/meta-data/instance-id",
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn token_ttl_asked_for_stays_within_what_imds_accepts() {
    bounded(async {
        for (configured, asked) in [(0, "1"), (21_600, "21600"), (1_000_000, "21600")] {
            let metadata = Metadata::new();
            let fake = serving(&metadata).await;
            let mut config = config(fake.url());
            config.token_ttl_secs = configured;
            let imds = client(&config);

            assert_eq!(imds::instance_id(&imds).await.unwrap(), INSTANCE);
            let puts = fake.token_puts();
            assert_eq!(puts.len(), 1);
            assert_eq!(
                puts[0].ttl.as_deref(),
                Some(asked),
                "configured {configured}"
            );
        }
    })
    .await;
}

// ----- 2. the token is renewed before it expires -----

#[tokio::test]
async fn token_is_renewed_before_it_expires() {
    bounded(async {
        // The fake refuses a token once its TTL has passed; the client must have a new one by
        // then, so no read ever meets a 401.
        const TTL: Duration = Duration::from_secs(4);
        let metadata = Metadata::new();
        let fake = serving(&metadata).await;
        let mut config = config(fake.url());
        config.token_ttl_secs = TTL.as_secs();
        let imds = client(&config);

        let started = Instant::now();
        let mut reads = 0;
        while started.elapsed() < TTL + Duration::from_millis(600) {
            assert_eq!(imds::instance_id(&imds).await.unwrap(), INSTANCE);
            reads += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let requests = fake.requests();
        let rejected: Vec<&Seen> = requests.iter().filter(|r| r.status == Some(401)).collect();
        assert!(
            rejected.is_empty(),
            "a token was used after it expired: {rejected:#?}"
        );
        let puts = fake.token_puts();
        assert!(
            puts.len() >= 2,
            "no renewal in {reads} reads over {TTL:?}: {puts:#?}"
        );
        assert!(
            puts.iter().all(|p| p.ttl.as_deref() == Some("4")),
            "{puts:#?}"
        );
        let renewed_after = puts[1].at - puts[0].at;
        assert!(
            renewed_after < TTL,
            "renewed {renewed_after:?} after the first token, which lived {TTL:?}"
        );
        assert!(
            renewed_after >= TTL / 2,
            "renewed after {renewed_after:?}: the token was not reused for most of its life"
        );
        let gets = fake.gets();
        assert_eq!(gets.len(), reads, "one GET per read");
        for get in &gets {
            let newest = puts.iter().filter(|p| p.at <= get.at).count();
            let expected = format!("token-{newest}");
            assert_eq!(get.token.as_deref(), Some(expected.as_str()), "{get:?}");
        }
    })
    .await;
}

// ----- 3. a 401 drops the token -----

#[tokio::test]
async fn unauthorized_read_drops_the_token_and_succeeds_with_a_new_one() {
    bounded(async {
        let metadata = Metadata::new();
        let fake = serving(&metadata).await;
        let imds = client(&config(fake.url()));

        assert_eq!(imds::instance_id(&imds).await.unwrap(), INSTANCE);
        // IMDS restarted: token-1 (cached, hours from its expiry) is no longer accepted.
        metadata.forget_tokens();
        assert_eq!(imds::region(&imds).await.unwrap(), "eu-west-1");
        assert_eq!(imds::instance_id(&imds).await.unwrap(), INSTANCE);

        let requests = fake.requests();
        let summary: Vec<(&str, &str, Option<&str>, Option<u16>)> = requests
            .iter()
            .map(|r| {
                (
                    r.method.as_str(),
                    r.path.as_str(),
                    r.token.as_deref(),
                    r.status,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("PUT", TOKEN_PATH, None, Some(200)),
                (
                    "GET",
                    "/latest/meta-data/instance-id",
                    Some("token-1"),
                    Some(200)
                ),
                (
                    "GET",
                    "/latest/meta-data/placement/region",
                    Some("token-1"),
                    Some(401)
                ),
                ("PUT", TOKEN_PATH, None, Some(200)),
                (
                    "GET",
                    "/latest/meta-data/placement/region",
                    Some("token-2"),
                    Some(200)
                ),
                (
                    "GET",
                    "/latest/meta-data/instance-id",
                    Some("token-2"),
                    Some(200)
                ),
            ]
        );
    })
    .await;
}

// ----- 4. 404 is "nothing there", asked once -----

#[tokio::test]
async fn not_found_is_none_and_not_retried() {
    bounded(async {
        let metadata = Metadata::new();
        metadata.remove(imds::LIFECYCLE_STATE);
        let fake = serving(&metadata).await;
        let imds = client(&config(fake.url()));

        assert_eq!(imds.get(imds::SPOT_ACTION).await.unwrap(), None);
        assert_eq!(imds::spot_action(&imds).await.unwrap(), None);
        assert_eq!(imds::rebalance(&imds).await.unwrap(), None);
        assert_eq!(imds::maintenance(&imds).await.unwrap(), Vec::new());
        assert_eq!(imds::target_lifecycle_state(&imds).await.unwrap(), None);

        assert_eq!(fake.gets_of(imds::SPOT_ACTION).len(), 2, "one GET per read");
        assert_eq!(fake.gets_of(imds::REBALANCE).len(), 1);
        assert_eq!(fake.gets_of(imds::MAINTENANCE).len(), 1);
        assert_eq!(fake.gets_of(imds::LIFECYCLE_STATE).len(), 1);
        assert_eq!(fake.token_puts().len(), 1);
        assert!(fake.gets().iter().all(|g| g.status == Some(404)));
    })
    .await;
}

#[tokio::test]
async fn a_path_that_must_exist_is_an_error_when_absent() {
    bounded(async {
        let metadata = Metadata::new();
        metadata.remove(imds::INSTANCE_ID);
        metadata.set(imds::REGION, "  \n");
        let fake = serving(&metadata).await;
        let imds = client(&config(fake.url()));

        let error = imds::instance_id(&imds).await.unwrap_err();
        assert!(
            matches!(&error, ImdsError::Status { path, status: 404 } if path == imds::INSTANCE_ID),
            "{error:?}"
        );
        let error = imds::region(&imds).await.unwrap_err();
        assert!(
            matches!(&error, ImdsError::Status { path, status: 404 } if path == imds::REGION),
            "a blank region is not a region: {error:?}"
        );
        assert_eq!(fake.gets().len(), 2, "no retries");
    })
    .await;
}

#[tokio::test]
async fn other_client_errors_fail_at_once_naming_the_path() {
    bounded(async {
        let metadata = Metadata::new();
        let fake = Fake::start(move |request, _| {
            if request.path.ends_with(imds::INSTANCE_ID) {
                Reply::status(403)
            } else {
                metadata.reply(request)
            }
        })
        .await;
        let imds = client(&config(fake.url()));

        let error = imds::instance_id(&imds).await.unwrap_err();
        assert!(
            matches!(&error, ImdsError::Status { path, status: 403 } if path == imds::INSTANCE_ID),
            "{error:?}"
        );
        assert!(error.to_string().contains(imds::INSTANCE_ID), "{error}");
        assert_eq!(fake.gets().len(), 1, "a 403 is not retried");
    })
    .await;
}

// ----- 5. server errors: retried with backoff, under the read deadline -----

#[tokio::test]
async fn server_errors_are_retried_with_backoff_until_success() {
    bounded(async {
        let metadata = Metadata::new();
        let fake = Fake::start(move |request, earlier| {
            let failed = earlier.iter().filter(|r| r.method == "GET").count();
            match (request.method.as_str(), failed) {
                ("GET", 0) => Reply::status(500),
                ("GET", 1) => Reply::status(503),
                ("GET", 2) => Reply::status(429),
                _ => metadata.reply(request),
            }
        })
        .await;
        let imds = client(&config(fake.url()));

        assert_eq!(imds::instance_id(&imds).await.unwrap(), INSTANCE);

        let gets = fake.gets();
        let statuses: Vec<Option<u16>> = gets.iter().map(|g| g.status).collect();
        assert_eq!(statuses, [Some(500), Some(503), Some(429), Some(200)]);
        assert_eq!(fake.token_puts().len(), 1, "a 5xx does not cost the token");
        assert!(gets.iter().all(|g| g.token.as_deref() == Some("token-1")));
        // Backoff: the first pause is at least 25 ms (50 ms less half of it in jitter), and
        // the pauses do not shrink below that.
        for pair in gets.windows(2) {
            let pause = pair[1].at - pair[0].at;
            assert!(
                pause >= Duration::from_millis(20),
                "retried after {pause:?}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn token_server_errors_are_retried() {
    bounded(async {
        let metadata = Metadata::new();
        let fake = Fake::start(move |request, earlier| {
            if request.is_token_put() && earlier.is_empty() {
                Reply::status(503)
            } else {
                metadata.reply(request)
            }
        })
        .await;
        let imds = client(&config(fake.url()));

        assert_eq!(imds::instance_id(&imds).await.unwrap(), INSTANCE);
        let puts = fake.token_puts();
        assert_eq!(puts.len(), 2, "{puts:#?}");
        assert_eq!(fake.gets().len(), 1);
        assert_eq!(fake.gets()[0].token.as_deref(), Some("token-1"));
    })
    .await;
}

#[tokio::test]
async fn persistent_server_error_ends_within_the_deadline_naming_the_path() {
    bounded(async {
        let metadata = Metadata::new();
        let fake = Fake::start(move |request, _| {
            if request.method == "GET" {
                Reply::status(500)
            } else {
                metadata.reply(request)
            }
        })
        .await;
        let mut config = config(fake.url());
        config.read_deadline_ms = 1_500;
        let imds = client(&config);

        let started = Instant::now();
        let error = imds.get(imds::LIFECYCLE_STATE).await.unwrap_err();
        let took = started.elapsed();

        let ImdsError::Deadline {
            path,
            deadline,
            attempts,
            last,
        } = &error
        else {
            panic!("expected a deadline error, got {error:?}");
        };
        assert_eq!(path, imds::LIFECYCLE_STATE);
        assert_eq!(*deadline, Duration::from_millis(1_500));
        // The last attempt may start just before the deadline and be cut short by it.
        assert!(
            last.contains("500") || last.contains("deadline"),
            "last failure: {last}"
        );
        assert!(*attempts >= 2, "gave up after {attempts} attempt(s)");
        let gets = fake.gets();
        let sent = u32::try_from(gets.len()).unwrap();
        assert!(
            sent == *attempts || sent + 1 == *attempts,
            "{sent} GETs for {attempts} attempts"
        );
        assert!(gets.iter().all(|g| g.status == Some(500)), "{gets:#?}");
        let message = error.to_string();
        assert!(message.contains(imds::LIFECYCLE_STATE), "{message}");
        assert!(
            took <= *deadline + SLACK,
            "gave up after {took:?}; deadline {deadline:?}"
        );
        assert_eq!(fake.token_puts().len(), 1);
    })
    .await;
}

// ----- 6. a server that never answers -----

#[tokio::test]
async fn silent_server_read_fails_within_the_deadline() {
    bounded(async {
        // Accepts connections and reads requests, never answers: not even the token comes.
        let fake = Fake::start(|_, _| Reply::Hang).await;
        let mut config = config(fake.url());
        config.request_timeout_ms = 300;
        config.read_deadline_ms = 1_000;
        let imds = client(&config);

        let started = Instant::now();
        let error = imds::instance_id(&imds).await.unwrap_err();
        let took = started.elapsed();

        assert!(
            matches!(&error, ImdsError::Deadline { path, .. } if path == imds::INSTANCE_ID),
            "{error:?}"
        );
        assert!(
            took <= Duration::from_millis(1_000) + SLACK,
            "gave up after {took:?}"
        );
        let requests = fake.requests();
        assert!(requests.len() >= 2, "retried: {requests:#?}");
        assert!(
            requests.iter().all(Seen::is_token_put),
            "no GET without a token: {requests:#?}"
        );
    })
    .await;
}

#[tokio::test]
async fn hanging_read_after_a_good_token_fails_within_the_deadline() {
    bounded(async {
        let metadata = Metadata::new();
        let fake = Fake::start(move |request, _| {
            if request.method == "GET" {
                Reply::Hang
            } else {
                metadata.reply(request)
            }
        })
        .await;
        let mut config = config(fake.url());
        config.request_timeout_ms = 300;
        config.read_deadline_ms = 1_000;
        let imds = client(&config);

        let started = Instant::now();
        let error = imds.get(imds::SPOT_ACTION).await.unwrap_err();
        let took = started.elapsed();

        assert!(
            matches!(&error, ImdsError::Deadline { path, .. } if path == imds::SPOT_ACTION),
            "{error:?}"
        );
        assert!(error.to_string().contains(imds::SPOT_ACTION), "{error}");
        assert!(
            took <= Duration::from_millis(1_000) + SLACK,
            "gave up after {took:?}"
        );
        assert_eq!(fake.token_puts().len(), 1, "the token outlives timeouts");
        assert!(fake.gets().len() >= 2, "retried");
    })
    .await;
}

#[tokio::test]
async fn one_slow_request_does_not_stretch_a_read_past_its_deadline() {
    bounded(async {
        // The per-request timeout is longer than the whole read may take: the read deadline,
        // "retries included", still bounds the read.
        let fake = Fake::start(|_, _| Reply::Hang).await;
        let mut config = config(fake.url());
        config.request_timeout_ms = 8_000;
        config.read_deadline_ms = 1_000;
        let imds = client(&config);

        let started = Instant::now();
        let error = imds.get(imds::LIFECYCLE_STATE).await.unwrap_err();
        let took = started.elapsed();

        assert!(
            matches!(&error, ImdsError::Deadline { path, .. } if path == imds::LIFECYCLE_STATE),
            "{error:?}"
        );
        assert!(
            took <= Duration::from_millis(1_000) + SLACK,
            "gave up after {took:?} with a 1 s read deadline"
        );
    })
    .await;
}

#[tokio::test]
async fn slow_token_then_hanging_read_still_ends_at_the_deadline() {
    bounded(async {
        // Each request stays within its own timeout; together they would outlast the read.
        let metadata = Metadata::new();
        let fake = Fake::start(move |request, _| {
            if request.method == "GET" {
                Reply::Hang
            } else {
                metadata.reply(request).after(Duration::from_millis(2_500))
            }
        })
        .await;
        let mut config = config(fake.url());
        config.request_timeout_ms = 3_000;
        config.read_deadline_ms = 3_000;
        let imds = client(&config);

        let started = Instant::now();
        let error = imds.get(imds::INSTANCE_ID).await.unwrap_err();
        let took = started.elapsed();

        assert!(
            matches!(&error, ImdsError::Deadline { path, .. } if path == imds::INSTANCE_ID),
            "{error:?}"
        );
        assert!(
            took <= Duration::from_millis(3_000) + SLACK,
            "gave up after {took:?} with a 3 s read deadline"
        );
    })
    .await;
}

// ----- 7. garbage answers are refused, not guessed at -----

#[tokio::test]
async fn instance_id_refuses_what_is_not_an_instance_id() {
    bounded(async {
        let metadata = Metadata::new();
        let fake = serving(&metadata).await;
        let imds = client(&config(fake.url()));

        metadata.set(imds::INSTANCE_ID, format!("{INSTANCE}\n"));
        assert_eq!(imds::instance_id(&imds).await.unwrap(), INSTANCE);
        metadata.set(imds::INSTANCE_ID, "i-1234abcd");
        assert_eq!(imds::instance_id(&imds).await.unwrap(), "i-1234abcd");

        for garbage in [
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
            "{\"instanceId\": \"i-0123456789abcdef0\"}",
            "ami-0123456789abcdef0",
            "i-0123",
            "i-0123456789abcdefg",
            "i-0123456789abcdef0 i-0fedcba9876543210",
            "i-",
            "0123456789abcdef0",
        ] {
            metadata.set(imds::INSTANCE_ID, garbage);
            let error = imds::instance_id(&imds).await.unwrap_err();
            assert!(
                matches!(&error, ImdsError::Parse { path, .. } if path == imds::INSTANCE_ID),
                "{garbage:?}: {error:?}"
            );
            assert!(
                error.to_string().contains(imds::INSTANCE_ID),
                "{garbage:?}: {error}"
            );
        }
        assert_eq!(fake.gets().len(), 10, "garbage is not retried");
    })
    .await;
}

#[tokio::test]
async fn region_refuses_what_is_not_a_region() {
    bounded(async {
        let metadata = Metadata::new();
        let fake = serving(&metadata).await;
        let imds = client(&config(fake.url()));

        for good in ["eu-west-1", "us-gov-east-1", "ap-southeast-4\n"] {
            metadata.set(imds::REGION, good);
            assert_eq!(imds::region(&imds).await.unwrap(), good.trim());
        }
        for garbage in [
            "us-east-1a",
            "US-EAST-1",
            "<html>eu-west-1</html>",
            "{\"region\":\"eu-west-1\"}",
            "eu-west-1\nus-east-1",
            "eu-west-1.amazonaws.com/x?y=1",
            "euwest1",
            "eu-west-1-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-1",
            "-1",
            "i-0123456789abcdef0",
            "e-west-1",
        ] {
            metadata.set(imds::REGION, garbage);
            let error = imds::region(&imds).await.unwrap_err();
            assert!(
                matches!(&error, ImdsError::Parse { path, .. } if path == imds::REGION),
                "{garbage:?}: {error:?}"
            );
            assert!(
                error.to_string().contains(imds::REGION),
                "{garbage:?}: {error}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn lifecycle_state_refuses_unknown_states() {
    bounded(async {
        let metadata = Metadata::new();
        let fake = serving(&metadata).await;
        let imds = client(&config(fake.url()));

        metadata.set(imds::LIFECYCLE_STATE, "Terminated");
        assert_eq!(
            imds::target_lifecycle_state(&imds).await.unwrap(),
            Some(TargetLifecycleState::Terminated)
        );
        metadata.set(imds::LIFECYCLE_STATE, "Warmed:Stopped");
        assert_eq!(
            imds::target_lifecycle_state(&imds).await.unwrap(),
            Some(TargetLifecycleState::Warmed("Warmed:Stopped".to_string()))
        );
        for garbage in [
            "",
            "terminated",
            "Terminating:Wait",
            "<html>Terminated</html>",
            "InService Terminated",
            "Warmed:",
            "Warmed:Stopped!",
            "{\"state\":\"Terminated\"}",
        ] {
            metadata.set(imds::LIFECYCLE_STATE, garbage);
            let error = imds::target_lifecycle_state(&imds).await.unwrap_err();
            assert!(
                matches!(&error, ImdsError::Parse { path, .. } if path == imds::LIFECYCLE_STATE),
                "{garbage:?}: {error:?}"
            );
            assert!(
                error.to_string().contains(imds::LIFECYCLE_STATE),
                "{garbage:?}: {error}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn spot_rebalance_and_maintenance_refuse_garbage() {
    bounded(async {
        let metadata = Metadata::new();
        let fake = serving(&metadata).await;
        let imds = client(&config(fake.url()));

        metadata.set(
            imds::SPOT_ACTION,
            r#"{"action": "stop", "time": "2026-03-01T12:02:00Z"}"#,
        );
        let spot = imds::spot_action(&imds).await.unwrap().unwrap();
        assert_eq!(spot.action, Some(SpotAction::Stop));
        assert_eq!(spot.time.as_deref(), Some("2026-03-01T12:02:00Z"));

        for garbage in [
            "",
            "<html>terminate</html>",
            "terminate",
            r#"{"action": "explode", "time": "2026-03-01T12:02:00Z"}"#,
            r#"{"action": "terminate", "time": "in two minutes"}"#,
            r#"{"action": "terminate"}"#,
            r#"{"action": "terminate", "time": "2026-03-01T12:02:00Z""#,
        ] {
            metadata.set(imds::SPOT_ACTION, garbage);
            let error = imds::spot_action(&imds).await.unwrap_err();
            assert!(
                matches!(&error, ImdsError::Parse { path, .. } if path == imds::SPOT_ACTION),
                "{garbage:?}: {error:?}"
            );
            assert!(
                error.to_string().contains(imds::SPOT_ACTION),
                "{garbage:?}: {error}"
            );
        }

        for garbage in ["<html/>", r#"{"noticeTime": "soon"}"#, "{}"] {
            metadata.set(imds::REBALANCE, garbage);
            let error = imds::rebalance(&imds).await.unwrap_err();
            assert!(
                matches!(&error, ImdsError::Parse { path, .. } if path == imds::REBALANCE),
                "{garbage:?}: {error:?}"
            );
        }
        for garbage in ["<html/>", "{\"Code\": \"system-reboot\"}", "[{}]"] {
            metadata.set(imds::MAINTENANCE, garbage);
            let error = imds::maintenance(&imds).await.unwrap_err();
            assert!(
                matches!(&error, ImdsError::Parse { path, .. } if path == imds::MAINTENANCE),
                "{garbage:?}: {error:?}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn a_body_that_is_not_text_is_an_error_naming_the_path() {
    bounded(async {
        let metadata = Metadata::new();
        metadata.set(imds::INSTANCE_ID, b"i-0123\xff\xfe".to_vec());
        let fake = serving(&metadata).await;
        let imds = client(&config(fake.url()));

        let error = imds::instance_id(&imds).await.unwrap_err();
        assert!(
            matches!(&error, ImdsError::NotText { path } if path == imds::INSTANCE_ID),
            "{error:?}"
        );
        assert!(error.to_string().contains(imds::INSTANCE_ID), "{error}");
        assert_eq!(fake.gets().len(), 1, "not retried");
    })
    .await;
}

// ----- 8. IMDSv1 only when configured -----

#[tokio::test]
async fn refused_token_fails_without_falling_back_to_imdsv1() {
    bounded(async {
        for refusal in [403, 405, 400] {
            // This instance would answer token-less GETs: a fallback would be visible.
            let metadata = Metadata::with_imdsv1();
            let fake = Fake::start(move |request, _| {
                if request.is_token_put() {
                    Reply::status(refusal)
                } else {
                    metadata.reply(request)
                }
            })
            .await;
            let imds = client(&config(fake.url()));

            let error = imds::instance_id(&imds).await.unwrap_err();
            assert!(
                matches!(error, ImdsError::TokenRefused { status } if status == refusal),
                "{refusal}: {error:?}"
            );
            assert_eq!(fake.gets().len(), 0, "{refusal}: no GET without a token");
            assert_eq!(fake.token_puts().len(), 1, "{refusal}: a refusal is final");
            let error = imds.get(imds::SPOT_ACTION).await.unwrap_err();
            assert!(matches!(error, ImdsError::TokenRefused { .. }), "{error:?}");
            assert_eq!(fake.gets().len(), 0, "{refusal}: no GET without a token");
        }
    })
    .await;
}

#[tokio::test]
async fn imdsv1_fallback_only_when_allowed() {
    bounded(async {
        // Allowed, and the token is refused: token-less GETs.
        let metadata = Metadata::with_imdsv1();
        let fake = Fake::start(move |request, _| {
            if request.is_token_put() {
                Reply::status(403)
            } else {
                metadata.reply(request)
            }
        })
        .await;
        let mut allowed = config(fake.url());
        allowed.allow_imdsv1 = true;
        let imds = client(&allowed);
        assert_eq!(imds::instance_id(&imds).await.unwrap(), INSTANCE);
        assert_eq!(imds.get(imds::SPOT_ACTION).await.unwrap(), None);
        let gets = fake.gets();
        assert_eq!(gets.len(), 2);
        assert!(gets.iter().all(|g| g.token.is_none()), "{gets:#?}");

        // Allowed, and IMDSv2 works: the token is still used.
        let metadata = Metadata::with_imdsv1();
        let fake = serving(&metadata).await;
        let mut allowed = config(fake.url());
        allowed.allow_imdsv1 = true;
        let imds = client(&allowed);
        assert_eq!(imds::instance_id(&imds).await.unwrap(), INSTANCE);
        assert_eq!(imds::region(&imds).await.unwrap(), "eu-west-1");
        let gets = fake.gets();
        assert_eq!(fake.token_puts().len(), 1);
        assert!(
            gets.iter().all(|g| g.token.as_deref() == Some("token-1")),
            "{gets:#?}"
        );
    })
    .await;
}

// ----- 9. the configured base URL, path prefix included -----

#[tokio::test]
async fn base_url_with_a_path_prefix_is_honoured() {
    bounded(async {
        let prefix = format!("/_imds/{INSTANCE}");
        for trailing in ["", "/"] {
            let metadata = Metadata::under(&prefix);
            let fake = serving(&metadata).await;
            let imds = client(&config(format!("{}{prefix}{trailing}", fake.url())));

            assert_eq!(imds::instance_id(&imds).await.unwrap(), INSTANCE);
            assert_eq!(imds.get(imds::SPOT_ACTION).await.unwrap(), None);

            let paths: Vec<String> = fake.requests().into_iter().map(|r| r.path).collect();
            assert_eq!(
                paths,
                [
                    format!("{prefix}/latest/api/token"),
                    format!("{prefix}/latest/meta-data/instance-id"),
                    format!("{prefix}/latest/meta-data/spot/instance-action"),
                ],
                "base URL with {trailing:?} at its end"
            );
        }
    })
    .await;
}
