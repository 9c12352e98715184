//! The instance metadata service, IMDSv2: the token is cached with its expiry and renewed
//! early, a 401 drops it, a 404 means "nothing there" (`None`), and transient failures are
//! retried with backoff and jitter under one deadline per read. No IMDSv1 unless configured.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use lifeguard_common::message::imds::{
    MaintenanceEvent, TargetLifecycleState, parse_maintenance_events,
    parse_rebalance_recommendation, parse_spot_instance_action, parse_target_lifecycle_state,
};
use lifeguard_common::message::{ParseError, RebalanceRecommendation, SpotInterruption};
use lifeguard_common::retry::{GaveUp, RetryPolicy, Transient, retry};
use reqwest::StatusCode;
use tokio::time::Instant;

use crate::config::ImdsConfig;

const TOKEN_PATH: &str = "/latest/api/token";
const TOKEN_TTL_HEADER: &str = "X-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "X-aws-ec2-metadata-token";

#[derive(Debug, thiserror::Error)]
pub enum ImdsError {
    #[error("IMDS GET {path}: HTTP {status}")]
    Status { path: String, status: u16 },
    #[error("IMDS GET {path}: no answer within {deadline:?} after {attempts} attempts: {last}")]
    Deadline {
        path: String,
        deadline: Duration,
        attempts: u32,
        last: String,
    },
    #[error("IMDS token: HTTP {status} (IMDSv2 refused; IMDSv1 fallback is off)")]
    TokenRefused { status: u16 },
    #[error("IMDS {path}: {source}")]
    Parse { path: String, source: ParseError },
    #[error("IMDS {path}: body is not UTF-8")]
    NotText { path: String },
    #[error("building the IMDS client: {0}")]
    Client(reqwest::Error),
}

/// Read access to instance metadata; paths are relative to `/latest/` (`meta-data/instance-id`,
/// `dynamic/instance-identity/document`).
pub trait InstanceMetadata: Send + Sync {
    /// `Ok(None)` when IMDS answers 404: nothing announced, not an error.
    fn get(&self, path: &str) -> impl Future<Output = Result<Option<String>, ImdsError>> + Send;
}

/// IMDSv2 over HTTP.
pub struct HttpImds {
    http: reqwest::Client,
    base_url: String,
    token_ttl: Duration,
    read_deadline: Duration,
    allow_imdsv1: bool,
    token: Mutex<Option<CachedToken>>,
}

#[derive(Clone)]
struct CachedToken {
    value: String,
    renew_at: Instant,
}

/// Why one attempt failed, and whether another attempt may help.
enum Attempt {
    Retry(String),
    Fail(ImdsError),
}

impl Transient for Attempt {
    fn is_transient(&self) -> bool {
        matches!(self, Attempt::Retry(_))
    }
}

impl std::fmt::Display for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Attempt::Retry(reason) => f.write_str(reason),
            Attempt::Fail(error) => write!(f, "{error}"),
        }
    }
}

impl HttpImds {
    pub fn new(config: &ImdsConfig) -> Result<HttpImds, ImdsError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.request_timeout_ms))
            .connect_timeout(Duration::from_millis(config.request_timeout_ms))
            .no_proxy()
            // IMDS is plain HTTP on a link-local address: an empty trust store spares loading
            // the system's certificates into an agent that idles for weeks, and makes an https
            // base URL fail loudly rather than trust anything.
            .tls_certs_only(Vec::new())
            .build()
            .map_err(ImdsError::Client)?;
        Ok(HttpImds {
            http,
            base_url: config.base_url.trim_end_matches('/').to_string(),
            token_ttl: Duration::from_secs(config.token_ttl_secs.clamp(1, 21_600)),
            read_deadline: Duration::from_millis(config.read_deadline_ms),
            allow_imdsv1: config.allow_imdsv1,
            token: Mutex::new(None),
        })
    }

    fn cached_token(&self) -> Option<String> {
        let guard = self
            .token
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        guard
            .as_ref()
            .filter(|token| Instant::now() < token.renew_at)
            .map(|token| token.value.clone())
    }

    fn store_token(&self, token: Option<CachedToken>) {
        let mut guard = self
            .token
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *guard = token;
    }

    /// A valid token, fetched when missing or near its end; `None` in IMDSv1 fallback.
    async fn token(&self) -> Result<Option<String>, Attempt> {
        if let Some(token) = self.cached_token() {
            return Ok(Some(token));
        }
        let url = format!("{}{TOKEN_PATH}", self.base_url);
        let response = self
            .http
            .put(&url)
            .header(TOKEN_TTL_HEADER, self.token_ttl.as_secs().to_string())
            .send()
            .await
            .map_err(|e| Attempt::Retry(format!("token: {e}")))?;
        let status = response.status();
        if status.is_server_error() {
            return Err(Attempt::Retry(format!("token: HTTP {status}")));
        }
        if !status.is_success() {
            if self.allow_imdsv1 {
                return Ok(None);
            }
            return Err(Attempt::Fail(ImdsError::TokenRefused {
                status: status.as_u16(),
            }));
        }
        let value = response
            .text()
            .await
            .map_err(|e| Attempt::Retry(format!("token body: {e}")))?;
        let value = value.trim().to_string();
        if value.is_empty() || value.len() > 1024 || !value.chars().all(|c| c.is_ascii_graphic()) {
            return Err(Attempt::Retry("token: implausible token body".to_string()));
        }
        // Renew a minute early (a tenth of the lifetime for short ones) so a token never
        // expires between being read from the cache and being used.
        let margin = Duration::from_secs(60).min(self.token_ttl / 10);
        self.store_token(Some(CachedToken {
            value: value.clone(),
            renew_at: Instant::now() + self.token_ttl.saturating_sub(margin),
        }));
        Ok(Some(value))
    }

    async fn attempt(&self, path: &str) -> Result<Option<String>, Attempt> {
        let token = self.token().await?;
        let url = format!("{}/latest/{path}", self.base_url);
        let mut request = self.http.get(&url);
        if let Some(token) = &token {
            request = request.header(TOKEN_HEADER, token);
        }
        let response = request
            .send()
            .await
            .map_err(|e| Attempt::Retry(e.to_string()))?;
        let status = response.status();
        match status {
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::UNAUTHORIZED => {
                // The token expired or IMDS restarted: drop it and try again with a new one.
                self.store_token(None);
                Err(Attempt::Retry("HTTP 401: token rejected".to_string()))
            }
            s if s.is_success() => {
                let bytes = response
                    .bytes()
                    .await
                    .map_err(|e| Attempt::Retry(format!("reading the body: {e}")))?;
                String::from_utf8(bytes.to_vec()).map(Some).map_err(|_| {
                    Attempt::Fail(ImdsError::NotText {
                        path: path.to_string(),
                    })
                })
            }
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                Err(Attempt::Retry(format!("HTTP {s}")))
            }
            s => Err(Attempt::Fail(ImdsError::Status {
                path: path.to_string(),
                status: s.as_u16(),
            })),
        }
    }
}

impl InstanceMetadata for HttpImds {
    async fn get(&self, path: &str) -> Result<Option<String>, ImdsError> {
        let attempts = std::sync::atomic::AtomicU32::new(0);
        // The deadline bounds the attempt in flight too, not only the decision to retry:
        // otherwise one slow token fetch plus one hanging GET outlast it by two timeouts.
        let policy = RetryPolicy {
            deadline: Instant::now() + self.read_deadline,
            attempt_timeout: self.read_deadline,
            base: Duration::from_millis(50),
            max: Duration::from_secs(1),
        };
        let read = retry(
            "IMDS GET",
            policy,
            |_| Attempt::Retry("no answer in time".to_string()),
            || {
                attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.attempt(path)
            },
        )
        .await;
        match read {
            Ok(body) => Ok(body),
            Err(GaveUp::Permanent(Attempt::Fail(error))) => Err(error),
            Err(gave_up) => Err(ImdsError::Deadline {
                path: path.to_string(),
                deadline: self.read_deadline,
                attempts: attempts.load(std::sync::atomic::Ordering::Relaxed),
                last: gave_up.last().map_or_else(
                    || "a request still in flight at the deadline".to_string(),
                    ToString::to_string,
                ),
            }),
        }
    }
}

/// The instance id, checked for its shape (`i-` and hex digits) so a garbled answer is never
/// taken for an identity.
pub async fn instance_id<M: InstanceMetadata>(imds: &M) -> Result<String, ImdsError> {
    let id = required(imds, INSTANCE_ID).await?;
    let hex = id.strip_prefix("i-").unwrap_or_default();
    if hex.len() >= 8 && hex.len() <= 32 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(id)
    } else {
        Err(ImdsError::Parse {
            path: INSTANCE_ID.to_string(),
            source: ParseError {
                location: String::new(),
                problem: format!(
                    "not an instance id: {:?}",
                    id.chars().take(40).collect::<String>()
                ),
            },
        })
    }
}

/// The region, checked for its shape (`eu-west-1`, `us-gov-east-1`: lowercase letters,
/// digits and dashes, ending in a digit) so a garbled answer never becomes an endpoint.
pub async fn region<M: InstanceMetadata>(imds: &M) -> Result<String, ImdsError> {
    let region = required(imds, REGION).await?;
    if region_shape(&region) {
        Ok(region)
    } else {
        Err(ImdsError::Parse {
            path: REGION.to_string(),
            source: ParseError {
                location: String::new(),
                problem: format!(
                    "not a region: {:?}",
                    region.chars().take(40).collect::<String>()
                ),
            },
        })
    }
}

/// `eu-west-1`, `us-gov-east-1`, `ap-southeast-3`: two letters, one or more words, a number.
fn region_shape(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    let all =
        |part: &str, test: fn(&char) -> bool| !part.is_empty() && part.chars().all(|c| test(&c));
    region.len() <= 32
        && parts.len() >= 3
        && parts[0].len() == 2
        && all(parts[0], char::is_ascii_lowercase)
        && parts[1..parts.len() - 1]
            .iter()
            .all(|part| all(part, char::is_ascii_lowercase))
        && all(parts[parts.len() - 1], char::is_ascii_digit)
}

/// Reads a path that must exist (instance id, region).
pub async fn required<M: InstanceMetadata>(imds: &M, path: &str) -> Result<String, ImdsError> {
    match imds.get(path).await? {
        Some(body) if !body.trim().is_empty() => Ok(body.trim().to_string()),
        _ => Err(ImdsError::Status {
            path: path.to_string(),
            status: 404,
        }),
    }
}

pub const INSTANCE_ID: &str = "meta-data/instance-id";
pub const REGION: &str = "meta-data/placement/region";
pub const IDENTITY_DOCUMENT: &str = "dynamic/instance-identity/document";
pub const LIFECYCLE_STATE: &str = "meta-data/autoscaling/target-lifecycle-state";
pub const SPOT_ACTION: &str = "meta-data/spot/instance-action";
pub const REBALANCE: &str = "meta-data/events/recommendations/rebalance";
pub const MAINTENANCE: &str = "meta-data/events/maintenance/scheduled";

fn parsed<T>(path: &str, result: Result<T, ParseError>) -> Result<T, ImdsError> {
    result.map_err(|source| ImdsError::Parse {
        path: path.to_string(),
        source,
    })
}

/// The account id, from the instance identity document.
pub async fn account_id<M: InstanceMetadata>(imds: &M) -> Result<String, ImdsError> {
    let document = required(imds, IDENTITY_DOCUMENT).await?;
    let parsed: serde_json::Value =
        serde_json::from_str(&document).map_err(|e| ImdsError::Parse {
            path: IDENTITY_DOCUMENT.to_string(),
            source: ParseError {
                location: String::new(),
                problem: e.to_string(),
            },
        })?;
    parsed["accountId"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| ImdsError::Parse {
            path: IDENTITY_DOCUMENT.to_string(),
            source: ParseError {
                location: "accountId".to_string(),
                problem: "missing".to_string(),
            },
        })
}

/// `None` when the instance is not in a group.
pub async fn target_lifecycle_state<M: InstanceMetadata>(
    imds: &M,
) -> Result<Option<TargetLifecycleState>, ImdsError> {
    match imds.get(LIFECYCLE_STATE).await? {
        None => Ok(None),
        Some(body) => parsed(LIFECYCLE_STATE, parse_target_lifecycle_state(&body)).map(Some),
    }
}

pub async fn spot_action<M: InstanceMetadata>(
    imds: &M,
) -> Result<Option<SpotInterruption>, ImdsError> {
    match imds.get(SPOT_ACTION).await? {
        None => Ok(None),
        Some(body) => parsed(SPOT_ACTION, parse_spot_instance_action(&body)).map(Some),
    }
}

pub async fn rebalance<M: InstanceMetadata>(
    imds: &M,
) -> Result<Option<RebalanceRecommendation>, ImdsError> {
    match imds.get(REBALANCE).await? {
        None => Ok(None),
        Some(body) => parsed(REBALANCE, parse_rebalance_recommendation(&body)).map(Some),
    }
}

pub async fn maintenance<M: InstanceMetadata>(
    imds: &M,
) -> Result<Vec<MaintenanceEvent>, ImdsError> {
    match imds.get(MAINTENANCE).await? {
        None => Ok(Vec::new()),
        Some(body) => parsed(MAINTENANCE, parse_maintenance_events(&body)),
    }
}
