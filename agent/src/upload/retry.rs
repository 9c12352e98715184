//! S3 calls under the one retry policy of [`lifeguard_common::retry`]: the same classifier of
//! transient failures and the same deadline-bounded loop as every other AWS call lifeguard
//! makes; here only the names the upload pipeline uses, and the S3 cases of the classifier.

use std::future::Future;
use std::time::Duration;

pub(crate) use lifeguard_common::retry::{CallError, GaveUp, RetryPolicy as RetrySchedule};

/// Calls `attempt` until it succeeds, fails permanently, or the schedule's deadline passes; an
/// attempt cut off by the schedule's attempt timeout counts as a transient failure.
pub(crate) async fn retry<T, F, Fut>(
    operation: &'static str,
    schedule: RetrySchedule,
    attempt: F,
) -> Result<T, GaveUp<CallError>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, CallError>>,
{
    lifeguard_common::retry::retry(operation, schedule, timed_out, attempt).await
}

fn timed_out(timeout: Duration) -> CallError {
    CallError {
        retryable: true,
        code: None,
        detail: format!("no answer within {timeout:?}"),
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_s3::config::http::HttpResponse;
    use aws_sdk_s3::error::SdkError;
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
}
