//! What can end an upload. Each variant names the step that failed and carries the bucket, key,
//! upload id and part where they apply; `detail` is the SDK error with its whole context.

/// Why an upload failed. The multipart upload, if one was created, has been aborted unless the
/// error is [`UploadError::AbortFailed`].
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("CreateMultipartUpload s3://{bucket}/{key}: {detail}")]
    CreateMultipartUpload {
        bucket: String,
        key: String,
        detail: String,
    },

    #[error("UploadPart {part} of s3://{bucket}/{key} (upload {upload_id}): {detail}")]
    UploadPart {
        bucket: String,
        key: String,
        upload_id: String,
        part: u32,
        detail: String,
    },

    #[error(
        "CompleteMultipartUpload of s3://{bucket}/{key} (upload {upload_id}, {parts} parts): {detail}"
    )]
    CompleteMultipartUpload {
        bucket: String,
        key: String,
        upload_id: String,
        parts: u32,
        detail: String,
    },

    #[error("PutObject s3://{bucket}/{key}: {detail}")]
    PutObject {
        bucket: String,
        key: String,
        detail: String,
    },

    /// Reading the stored object's checksum back failed.
    #[error("HeadObject s3://{bucket}/{key} (checking its checksum): {detail}")]
    HeadObject {
        bucket: String,
        key: String,
        detail: String,
    },

    /// The deadline passed while a call was still failing (or still running).
    #[error(
        "deadline passed during {operation} of s3://{bucket}/{key}{}{}{}",
        upload_id.as_ref().map(|id| format!(" (upload {id})")).unwrap_or_default(),
        part.map(|p| format!(", part {p}")).unwrap_or_default(),
        last_error.as_ref().map(|e| format!("; last error: {e}")).unwrap_or_default()
    )]
    DeadlineExceeded {
        bucket: String,
        key: String,
        operation: &'static str,
        upload_id: Option<String>,
        part: Option<u32>,
        /// The last failure before the deadline, if an attempt had failed.
        last_error: Option<String>,
    },

    /// The producer dropped the channel without the end marker: the archive is incomplete.
    #[error(
        "the stream for s3://{bucket}/{key} ended without its end marker after {bytes_received} bytes: the producer gave up"
    )]
    StreamAborted {
        bucket: String,
        key: String,
        upload_id: Option<String>,
        bytes_received: u64,
    },

    /// The stream broke S3's rules for parts (a part other than the last below 5 MiB, a part
    /// above 5 GiB, more than 10 000 parts).
    #[error("s3://{bucket}/{key}: part {part}: {reason}")]
    InvalidPart {
        bucket: String,
        key: String,
        part: u32,
        reason: String,
    },

    /// The checksum S3 reports is not the one computed from the bytes sent. The object (that
    /// version) was deleted if `deleted`.
    #[error(
        "checksum of s3://{bucket}/{key}: computed {local}, S3 reports {}{}",
        reported.as_deref().unwrap_or("none"),
        if *deleted { "; the object was deleted" } else { "; the object could not be deleted" }
    )]
    ChecksumMismatch {
        bucket: String,
        key: String,
        local: String,
        reported: Option<String>,
        deleted: bool,
    },

    /// The upload failed and aborting it failed too: an incomplete multipart upload may remain.
    #[error(
        "{cause}; then AbortMultipartUpload of s3://{bucket}/{key} (upload {upload_id}) failed: {detail}"
    )]
    AbortFailed {
        bucket: String,
        key: String,
        upload_id: String,
        cause: Box<UploadError>,
        detail: String,
    },

    /// Who the archive is written as could not be learned, so its key cannot be made.
    #[error("GetCallerIdentity (the writer's id for the key of the archive in {bucket}): {detail}")]
    WriterId { bucket: String, detail: String },

    /// A part's upload task ended without an answer (it panicked).
    #[error("s3://{bucket}/{key}: part upload task failed: {detail}")]
    Task {
        bucket: String,
        key: String,
        detail: String,
    },
}

impl UploadError {
    /// Whether the deadline, rather than a permanent failure, ended the upload.
    pub fn is_deadline(&self) -> bool {
        match self {
            UploadError::DeadlineExceeded { .. } => true,
            UploadError::AbortFailed { cause, .. } => cause.is_deadline(),
            _ => false,
        }
    }
}
