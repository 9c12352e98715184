//! Which S3 failures are worth another attempt, the pause before it, and the loop that keeps
//! trying until the deadline.

use std::error::Error as StdError;
use std::future::Future;
use std::time::Duration;

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use tokio::time::Instant;

/// A failed call, already classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CallError {
    /// Another attempt may succeed.
    pub retryable: bool,
    /// The AWS error code, for a service error.
    pub code: Option<String>,
    /// The SDK error with its whole context.
    pub detail: String,
}

impl CallError {
    pub(crate) fn from_sdk<E>(error: &SdkError<E>) -> Self
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        let (kind, status, code) = match error {
            SdkError::ConstructionFailure(_) => (FailureClass::Construction, None, None),
            SdkError::TimeoutError(_) => (FailureClass::Timeout, None, None),
            SdkError::DispatchFailure(failure) => {
                if failure.is_user() {
                    (FailureClass::Construction, None, None)
                } else {
                    (FailureClass::Connection, None, None)
                }
            }
            SdkError::ResponseError(_) => (FailureClass::Response, None, None),
            SdkError::ServiceError(service) => (
                FailureClass::Service,
                Some(service.raw().status().as_u16()),
                service.err().code(),
            ),
            _ => (FailureClass::Construction, None, None),
        };
        CallError {
            retryable: is_retryable(kind, status, code),
            code: code.map(str::to_string),
            detail: DisplayErrorContext(error).to_string(),
        }
    }

    /// A well-formed answer that cannot be used (no upload id, say): S3 misbehaving, which a
    /// new attempt may cure.
    pub(crate) fn bad_answer(what: &str) -> Self {
        CallError {
            retryable: true,
            code: None,
            detail: what.to_string(),
        }
    }

    pub(crate) fn has_code(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }
}

/// How a call failed, before looking at codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureClass {
    /// The request could not be built, or the client refused it: the same again fails again.
    Construction,
    /// No answer in time.
    Timeout,
    /// The connection failed (refused, reset, closed without an answer).
    Connection,
    /// An answer came but could not be read (truncated, garbled).
    Response,
    /// S3 answered with an error status.
    Service,
}

/// Error codes S3 (and AWS in general) uses for throttling and passing trouble, and for clock
/// skew, which the SDK corrects on the next attempt.
const RETRYABLE_CODES: [&str; 12] = [
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "ServiceUnavailable",
    "OperationAborted",
    "RequestTimeTooSkewed",
    "RequestExpired",
];

/// Whether another attempt may succeed: timeouts, connection failures, unreadable answers,
/// 5xx, 429 and the codes above are transient; anything else (access denied, no such bucket or
/// upload, invalid request, bad digest, any other 4xx) is permanent.
pub(crate) fn is_retryable(class: FailureClass, status: Option<u16>, code: Option<&str>) -> bool {
    match class {
        FailureClass::Construction => false,
        FailureClass::Timeout | FailureClass::Connection | FailureClass::Response => true,
        FailureClass::Service => {
            status.is_some_and(|s| s >= 500 || s == 429)
                || code.is_some_and(|c| RETRYABLE_CODES.contains(&c))
        }
    }
}

/// The pause before attempt `failures + 1`: `base` doubled per failure, capped at `max`, then
/// "equal jitter" (half fixed, half random) so that parts failing together do not retry in
/// step. `unit` is a random number in `[0, 1)`.
pub(crate) fn backoff(failures: u32, base: Duration, max: Duration, unit: f64) -> Duration {
    let doubled = base.saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)));
    let capped = doubled.min(max);
    let half = capped / 2;
    half + half.mul_f64(unit.clamp(0.0, 1.0))
}

/// How long one attempt may take, and how to pause between attempts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetrySchedule {
    pub deadline: Instant,
    pub attempt_timeout: Duration,
    pub base: Duration,
    pub max: Duration,
}

/// Why a retried call ended without success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GaveUp {
    /// A permanent failure.
    Permanent(CallError),
    /// The deadline came first; the last failure, if an attempt had failed.
    Deadline(Option<CallError>),
}

/// Calls `attempt` until it succeeds, fails permanently, or the deadline passes (checked
/// before each pause; a running attempt is cut off at the deadline). Each attempt is bounded
/// by the schedule's attempt timeout; an attempt cut off that way counts as a retryable
/// failure.
pub(crate) async fn retry<T, F, Fut>(
    operation: &'static str,
    schedule: RetrySchedule,
    mut attempt: F,
) -> Result<T, GaveUp>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, CallError>>,
{
    let mut failures = 0u32;
    let mut last: Option<CallError> = None;
    loop {
        let now = Instant::now();
        if now >= schedule.deadline {
            return Err(GaveUp::Deadline(last));
        }
        let cutoff = (now + schedule.attempt_timeout).min(schedule.deadline);
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
            Ok(Err(error)) if !error.retryable => return Err(GaveUp::Permanent(error)),
            Ok(Err(error)) => error,
            Err(_) if cutoff >= schedule.deadline => return Err(GaveUp::Deadline(last)),
            Err(_) => CallError {
                retryable: true,
                code: None,
                detail: format!("no answer within {:?}", schedule.attempt_timeout),
            },
        };
        failures += 1;
        let pause = backoff(failures, schedule.base, schedule.max, fastrand::f64());
        tracing::warn!(
            operation,
            attempt = failures,
            retry_in_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
            error = %error.detail,
            "transient failure"
        );
        if Instant::now() + pause >= schedule.deadline {
            return Err(GaveUp::Deadline(Some(error)));
        }
        last = Some(error);
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use aws_sdk_s3::config::http::HttpResponse;
    use aws_sdk_s3::error::{ConnectorError, ErrorMetadata};
    use aws_sdk_s3::operation::upload_part::UploadPartError;
    use aws_sdk_s3::primitives::SdkBody;

    use super::*;

    fn service_error(status: u16, code: &str) -> SdkError<UploadPartError> {
        let meta = ErrorMetadata::builder()
            .code(code)
            .message("from the test")
            .build();
        SdkError::service_error(
            UploadPartError::generic(meta),
            HttpResponse::new(status.try_into().unwrap(), SdkBody::empty()),
        )
    }

    #[test]
    fn service_errors_are_classified_by_status_and_code() {
        let cases = [
            (503, "SlowDown", true),
            (503, "ServiceUnavailable", true),
            (500, "InternalError", true),
            (502, "", true),
            (429, "TooManyRequests", true),
            (400, "RequestTimeout", true),
            (400, "Throttling", true),
            (409, "OperationAborted", true),
            (403, "RequestTimeTooSkewed", true),
            (403, "AccessDenied", false),
            (404, "NoSuchBucket", false),
            (404, "NoSuchUpload", false),
            (400, "InvalidRequest", false),
            (400, "BadDigest", false),
            (400, "EntityTooSmall", false),
            (400, "InvalidPart", false),
            (412, "PreconditionFailed", false),
        ];
        for (status, code, retryable) in cases {
            let error = CallError::from_sdk(&service_error(status, code));
            assert_eq!(error.retryable, retryable, "{status} {code}");
            if !code.is_empty() {
                assert_eq!(error.code.as_deref(), Some(code));
                assert!(error.detail.contains(code), "{}", error.detail);
            }
        }
    }

    #[test]
    fn transport_failures_are_retryable_but_construction_is_not() {
        let timeout: SdkError<UploadPartError> = SdkError::timeout_error("attempt timed out");
        assert!(CallError::from_sdk(&timeout).retryable);

        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let dispatch: SdkError<UploadPartError> =
            SdkError::dispatch_failure(ConnectorError::io(Box::new(io)));
        let error = CallError::from_sdk(&dispatch);
        assert!(error.retryable);
        assert!(error.detail.contains("reset"), "{}", error.detail);

        let user: SdkError<UploadPartError> =
            SdkError::dispatch_failure(ConnectorError::user("bad request".into()));
        assert!(!CallError::from_sdk(&user).retryable);

        let construction: SdkError<UploadPartError> =
            SdkError::construction_failure("missing bucket");
        assert!(!CallError::from_sdk(&construction).retryable);
    }

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        assert_eq!(backoff(1, base, max, 0.0), Duration::from_millis(50));
        assert_eq!(backoff(1, base, max, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(2, base, max, 1.0), Duration::from_millis(200));
        assert_eq!(backoff(3, base, max, 0.5), Duration::from_millis(300));
        assert_eq!(backoff(5, base, max, 1.0), max);
        assert_eq!(backoff(60, base, max, 0.0), max / 2);
        for unit in [0.0, 0.25, 0.999] {
            let pause = backoff(4, base, max, unit);
            assert!(pause >= Duration::from_millis(400) && pause <= Duration::from_millis(800));
        }
    }

    fn schedule(deadline_in: Duration) -> RetrySchedule {
        RetrySchedule {
            deadline: Instant::now() + deadline_in,
            attempt_timeout: Duration::from_millis(100),
            base: Duration::from_millis(5),
            max: Duration::from_millis(20),
        }
    }

    fn transient() -> CallError {
        CallError {
            retryable: true,
            code: Some("SlowDown".into()),
            detail: "slow down".into(),
        }
    }

    #[tokio::test]
    async fn retries_transient_failures_until_success() {
        let calls = Arc::new(AtomicU32::new(0));
        let counter = calls.clone();
        let result = retry("Test", schedule(Duration::from_secs(10)), move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move { if n < 3 { Err(transient()) } else { Ok(n) } }
        })
        .await;
        assert_eq!(result, Ok(3));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn stops_at_once_on_a_permanent_failure() {
        let calls = Arc::new(AtomicU32::new(0));
        let counter = calls.clone();
        let denied = CallError {
            retryable: false,
            code: Some("AccessDenied".into()),
            detail: "denied".into(),
        };
        let expected = denied.clone();
        let result: Result<(), _> = retry("Test", schedule(Duration::from_secs(10)), move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let denied = denied.clone();
            async move { Err(denied) }
        })
        .await;
        assert_eq!(result, Err(GaveUp::Permanent(expected)));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn gives_up_at_the_deadline_with_the_last_error() {
        let started = Instant::now();
        let result: Result<(), _> = retry("Test", schedule(Duration::from_millis(200)), || async {
            Err(transient())
        })
        .await;
        assert_eq!(result, Err(GaveUp::Deadline(Some(transient()))));
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_hung_attempt_is_cut_off_and_retried() {
        let calls = Arc::new(AtomicU32::new(0));
        let counter = calls.clone();
        let result = retry("Test", schedule(Duration::from_secs(5)), move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    std::future::pending::<()>().await;
                }
                Ok(n)
            }
        })
        .await;
        assert_eq!(result, Ok(1));
    }

    #[tokio::test]
    async fn an_attempt_running_into_the_deadline_is_cut_off_there() {
        let started = Instant::now();
        let mut schedule = schedule(Duration::from_millis(150));
        schedule.attempt_timeout = Duration::from_secs(5);
        let result: Result<(), _> = retry("Test", schedule, || async {
            std::future::pending::<Result<(), CallError>>().await
        })
        .await;
        assert_eq!(result, Err(GaveUp::Deadline(None)));
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(150) && elapsed < Duration::from_secs(1));
    }
}
