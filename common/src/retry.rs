//! The one policy for transient failures, used by every AWS call lifeguard makes: which
//! failures are worth another attempt (one classifier for every service), and the loop that
//! keeps trying until a deadline, pausing with jittered exponential backoff between attempts.
//!
//! The SDK retries each call a few times on its own (`aws.max_attempts`, `aws.retry_mode`);
//! this loop sits above it only where lifeguard has a deadline of its own that is longer than
//! the SDK's few attempts: a lifecycle completion retried until the action's timeout, an upload
//! until the spot interruption. Calls without such a deadline (the controller's, which look
//! again at their next round) rely on the SDK's retries alone.

use std::error::Error as StdError;
use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::time::Instant;

/// Error codes AWS services use for throttling and passing trouble (query, JSON and S3
/// protocols), and for clock skew, which the SDK corrects on the next attempt.
const RETRYABLE_CODES: [&str; 16] = [
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "TooManyRequestsException",
    "SlowDown",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "OperationAborted",
    "RequestTimeTooSkewed",
    "RequestExpired",
    "PriorRequestNotComplete",
];

/// How a call failed, before looking at codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// The request could not be built, or the client refused it: the same again fails again.
    Construction,
    /// No answer in time.
    Timeout,
    /// The connection failed (refused, reset, closed without an answer).
    Connection,
    /// An answer came but could not be read (truncated, garbled).
    Response,
    /// The service answered with an error status.
    Service,
}

/// Whether another attempt may succeed: timeouts, connection failures, unreadable answers,
/// 5xx, 429 and the codes above are transient; anything else (access denied, validation, a
/// missing resource, any other 4xx) is permanent, and retrying it only delays the error.
pub fn is_retryable(class: FailureClass, status: Option<u16>, code: Option<&str>) -> bool {
    match class {
        FailureClass::Construction => false,
        FailureClass::Timeout | FailureClass::Connection | FailureClass::Response => true,
        FailureClass::Service => {
            status.is_some_and(|s| s >= 500 || s == 429)
                || code.is_some_and(|c| RETRYABLE_CODES.contains(&c))
        }
    }
}

/// The class, HTTP status and error code of an SDK error, for any AWS service.
pub fn classify<E: ProvideErrorMetadata>(
    error: &SdkError<E, HttpResponse>,
) -> (FailureClass, Option<u16>, Option<&str>) {
    match error {
        SdkError::ConstructionFailure(_) => (FailureClass::Construction, None, None),
        SdkError::TimeoutError(_) => (FailureClass::Timeout, None, None),
        SdkError::DispatchFailure(failure) if failure.is_user() => {
            (FailureClass::Construction, None, None)
        }
        SdkError::DispatchFailure(_) => (FailureClass::Connection, None, None),
        SdkError::ResponseError(_) => (FailureClass::Response, None, None),
        SdkError::ServiceError(service) => (
            FailureClass::Service,
            Some(service.raw().status().as_u16()),
            service.err().code(),
        ),
        _ => (FailureClass::Construction, None, None),
    }
}

/// Whether another attempt of a failed SDK call may succeed.
pub fn is_transient<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> bool {
    let (class, status, code) = classify(error);
    is_retryable(class, status, code)
}

/// A failure that knows whether another attempt may cure it.
pub trait Transient {
    fn is_transient(&self) -> bool;
}

/// A failed call, already classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    /// Another attempt may succeed.
    pub retryable: bool,
    /// The AWS error code, for a service error.
    pub code: Option<String>,
    /// The SDK error with its whole context.
    pub detail: String,
}

impl CallError {
    pub fn from_sdk<E>(error: &SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        let (class, status, code) = classify(error);
        CallError {
            retryable: is_retryable(class, status, code),
            code: code.map(str::to_string),
            detail: DisplayErrorContext(error).to_string(),
        }
    }

    /// A well-formed answer that cannot be used (no upload id, say): the service misbehaving,
    /// which a new attempt may cure.
    pub fn bad_answer(what: &str) -> Self {
        CallError {
            retryable: true,
            code: None,
            detail: what.to_string(),
        }
    }

    pub fn has_code(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }
}

impl Transient for CallError {
    fn is_transient(&self) -> bool {
        self.retryable
    }
}

impl Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

/// Until when to try, how long one attempt may take, and how to pause between attempts.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub deadline: Instant,
    /// One attempt is cut off after this long (and counts as a transient failure).
    pub attempt_timeout: Duration,
    /// The first pause; doubled after each failure.
    pub base: Duration,
    /// The longest pause.
    pub max: Duration,
}

impl RetryPolicy {
    /// Attempts until `deadline`, each bounded by `attempt_timeout`, pausing 200 ms doubling up
    /// to 5 s: the pace for a few calls about one instance.
    pub fn until(deadline: Instant, attempt_timeout: Duration) -> Self {
        RetryPolicy {
            deadline,
            attempt_timeout,
            base: Duration::from_millis(200),
            max: Duration::from_secs(5),
        }
    }

    /// The pauses between attempts: see [`pauses`].
    pub fn pauses(&self) -> impl Iterator<Item = Duration> + use<> {
        pauses(self.base, self.max)
    }
}

/// Pauses between attempts, for loops that retry without end (a queue poll): exponential from
/// `base`, capped at `max`, with jitter so that callers failing together do not retry in step.
/// Never runs out.
pub fn pauses(base: Duration, max: Duration) -> impl Iterator<Item = Duration> + use<> {
    ExponentialBuilder::default()
        .with_min_delay(base)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Why a retried call ended without success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GaveUp<E> {
    /// A permanent failure.
    Permanent(E),
    /// The deadline came first; the last failure, if an attempt had failed.
    Deadline(Option<E>),
}

impl<E> GaveUp<E> {
    /// The last failure, if any attempt failed (rather than being cut off by the deadline).
    pub fn last(&self) -> Option<&E> {
        match self {
            GaveUp::Permanent(error) => Some(error),
            GaveUp::Deadline(last) => last.as_ref(),
        }
    }
}

impl<E: Display> Display for GaveUp<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GaveUp::Permanent(error) => write!(f, "{error}"),
            GaveUp::Deadline(Some(error)) => write!(f, "deadline reached; last failure: {error}"),
            GaveUp::Deadline(None) => f.write_str("deadline reached before an answer"),
        }
    }
}

/// Calls `attempt` until it succeeds, fails permanently, or the deadline passes (checked
/// before each pause; a running attempt is cut off at the deadline). Each attempt is bounded by
/// the policy's attempt timeout; `timed_out` makes the error for an attempt cut off that way,
/// which counts as transient.
pub async fn retry<T, E, F, Fut>(
    operation: &'static str,
    policy: RetryPolicy,
    timed_out: impl Fn(Duration) -> E,
    mut attempt: F,
) -> Result<T, GaveUp<E>>
where
    E: Transient + Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut pauses = policy.pauses();
    let mut failures = 0u32;
    let mut last: Option<E> = None;
    loop {
        let now = Instant::now();
        if now >= policy.deadline {
            return Err(GaveUp::Deadline(last));
        }
        let cutoff = (now + policy.attempt_timeout).min(policy.deadline);
        let error = match tokio::time::timeout_at(cutoff, attempt()).await {
            Ok(Ok(value)) => {
                if failures > 0 {
                    tracing::info!(
                        operation,
                        attempts = failures + 1,
                        "succeeded after retries"
                    );
                }
                return Ok(value);
            }
            Ok(Err(error)) if !error.is_transient() => return Err(GaveUp::Permanent(error)),
            Ok(Err(error)) => error,
            Err(_) if cutoff >= policy.deadline => return Err(GaveUp::Deadline(last)),
            Err(_) => timed_out(policy.attempt_timeout),
        };
        failures += 1;
        let pause = pauses.next().unwrap_or(policy.max);
        tracing::warn!(
            operation,
            attempt = failures,
            retry_in_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
            %error,
            "transient failure"
        );
        if Instant::now() + pause >= policy.deadline {
            return Err(GaveUp::Deadline(Some(error)));
        }
        last = Some(error);
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug, Clone, PartialEq)]
    struct Failure(bool);

    impl Transient for Failure {
        fn is_transient(&self) -> bool {
            self.0
        }
    }

    impl Display for Failure {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "transient={}", self.0)
        }
    }

    fn fast(deadline: Duration) -> RetryPolicy {
        RetryPolicy {
            deadline: Instant::now() + deadline,
            attempt_timeout: Duration::from_millis(200),
            base: Duration::from_millis(5),
            max: Duration::from_millis(20),
        }
    }

    #[test]
    fn one_classifier_for_every_service() {
        for (status, code, retryable) in [
            (Some(400), Some("Throttling"), true),
            (Some(400), Some("ThrottlingException"), true),
            (Some(503), Some("RequestLimitExceeded"), true),
            (Some(503), Some("SlowDown"), true),
            (Some(500), Some("InternalError"), true),
            (Some(500), Some("InternalFailure"), true),
            (Some(429), None, true),
            (Some(400), Some("RequestTimeTooSkewed"), true),
            (Some(403), Some("AccessDenied"), false),
            (Some(400), Some("ValidationError"), false),
            (Some(404), Some("NoSuchBucket"), false),
            (Some(400), Some("BadDigest"), false),
        ] {
            assert_eq!(
                is_retryable(FailureClass::Service, status, code),
                retryable,
                "{status:?} {code:?}"
            );
        }
        assert!(is_retryable(FailureClass::Timeout, None, None));
        assert!(is_retryable(FailureClass::Connection, None, None));
        assert!(is_retryable(FailureClass::Response, None, None));
        assert!(!is_retryable(FailureClass::Construction, None, None));
    }

    #[test]
    fn pauses_grow_are_capped_and_jittered() {
        let policy = RetryPolicy::until(Instant::now(), Duration::from_secs(1));
        let pauses: Vec<Duration> = policy.pauses().take(12).collect();
        assert_eq!(pauses.len(), 12, "never runs out");
        assert!(pauses.iter().all(|p| *p <= Duration::from_secs(10)));
        assert!(pauses[11] >= Duration::from_secs(5), "{pauses:?}");
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let got = retry(
            "Op",
            fast(Duration::from_secs(5)),
            |_| Failure(true),
            || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 3 {
                    Err(Failure(true))
                } else {
                    Ok(7)
                }
            },
        )
        .await;
        assert_eq!(got, Ok(7));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn permanent_failures_are_not_retried() {
        let calls = AtomicU32::new(0);
        let got: Result<(), _> = retry(
            "Op",
            fast(Duration::from_secs(5)),
            |_| Failure(true),
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Failure(false))
            },
        )
        .await;
        assert_eq!(got, Err(GaveUp::Permanent(Failure(false))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_deadline_ends_retries_and_cuts_a_hung_attempt() {
        let started = Instant::now();
        let got: Result<(), _> = retry(
            "Op",
            fast(Duration::from_millis(300)),
            |_| Failure(true),
            || async { Err(Failure(true)) },
        )
        .await;
        assert!(matches!(got, Err(GaveUp::Deadline(Some(Failure(true))))));
        assert!(started.elapsed() < Duration::from_secs(2));

        let mut policy = fast(Duration::from_millis(300));
        policy.attempt_timeout = Duration::from_secs(60);
        let hung: Result<(), _> = retry(
            "Op",
            policy,
            |_| Failure(true),
            std::future::pending::<Result<(), Failure>>,
        )
        .await;
        assert_eq!(hung, Err(GaveUp::Deadline(None)));
    }
}
