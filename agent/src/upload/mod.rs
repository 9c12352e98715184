//! Uploading archives to S3: streamed multipart, verified checksums, never left half-done.
//!
//! The archiver writes its tar.gz into a [`PartWriter`] on a blocking thread; the writer cuts
//! the bytes into parts and hands them over a bounded channel to [`ArchiveStore::upload_stream`],
//! which uploads them while the archive is still being built.
//!
//! # The stream protocol
//!
//! The channel carries the parts in order, each at least [`MIN_PART_BYTES`] except the last,
//! and then **one empty [`Bytes`]: the end marker**. Only a stream that ends with the marker is
//! complete. A channel that closes without it means the producer gave up (the archiver failed,
//! panicked, or dropped its [`PartWriter`] without calling [`PartWriter::finish`]): the upload
//! is aborted and [`UploadError::StreamAborted`] returned. So an aborted archive can never be
//! stored as if it were whole, and the producer needs nothing more than dropping its writer to
//! signal it. A stream of one part followed by the marker is stored with one `PutObject`; a
//! stream of only the marker stores an empty object.
//!
//! # Failure and the multipart upload
//!
//! Every call is retried with backoff and jitter ([`UploadPolicy::retry_base`] doubling up to
//! [`UploadPolicy::retry_max`]) while the failure is transient (5xx, throttling, timeouts,
//! connection errors) and the deadline has not passed; permanent failures (access denied, no
//! such bucket, other 4xx) end the upload at once. Whatever ends a multipart upload early
//! (deadline, permanent error, aborted stream, a part that breaks S3's size rules), the upload
//! is aborted with `AbortMultipartUpload`, retried for up to [`UploadPolicy::abort_grace`] even
//! when the deadline has passed. If the upload future itself is dropped midway, a guard spawns
//! the same abort on the current runtime. An upload whose abort also failed is reported as
//! [`UploadError::AbortFailed`], so the caller knows an incomplete upload may remain (a bucket
//! lifecycle rule `AbortIncompleteMultipartUpload` is the last line of defence).
//!
//! # Checksums
//!
//! The object is created with a checksum algorithm ([`ChecksumKind`]); every part carries its
//! own checksum, computed here from the part's bytes once (a retry sends the same value), so S3
//! refuses a part that was damaged on the way. The parts' checksums go into
//! `CompleteMultipartUpload` and the composite checksum S3 reports (from that answer, or from
//! `HeadObject` with checksum mode when the answer has none) must equal the one computed here;
//! a single `PutObject` carries the object's full checksum and its answer is compared the same
//! way. On a mismatch the stored object (that version) is deleted, so nothing unverified
//! remains under the key, and [`UploadError::ChecksumMismatch`] is returned. The SHA-256 of the
//! whole stream is computed as well and returned in the [`UploadReceipt`].
//!
//! # Memory
//!
//! At most [`UploadPolicy::concurrency`] parts are being uploaded, the channel holds its
//! capacity in parts, and the writer fills one more; the uploader takes a part from the channel
//! only when a slot is free. (At the start it holds the first two parts to choose between
//! `PutObject` and a multipart upload, so with a concurrency of 1 there is one part more.)
//! With the defaults (8 MiB parts, concurrency 2, channel capacity 1) that is 32 MiB.

mod checksum;
mod error;
mod part_writer;
mod pipeline;
mod retry;
mod s3;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc::Receiver;
use tokio::time::Instant;

pub use error::UploadError;
pub use part_writer::{PartWriter, part_channel};
pub use s3::S3Store;

/// Default part size: 8 MiB.
pub const DEFAULT_PART_BYTES: usize = 8 * 1024 * 1024;
/// S3's smallest part, except for the last one of an upload: 5 MiB.
pub const MIN_PART_BYTES: usize = 5 * 1024 * 1024;
/// S3's largest part: 5 GiB.
pub const MAX_PART_BYTES: u64 = 5 * 1024 * 1024 * 1024;
/// S3's largest part number.
pub const MAX_PARTS: u32 = 10_000;
/// Default capacity of the part channel, in parts.
pub const DEFAULT_CHANNEL_CAPACITY: usize = 1;

/// Server-side encryption asked for on the object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ServerSideEncryption {
    /// Nothing asked; the bucket's default encryption applies.
    None,
    /// SSE-S3 (`AES256`).
    #[default]
    S3,
    /// SSE-KMS with this key (id, alias or ARN), or the account's default `aws/s3` key.
    Kms { key_id: Option<String> },
}

/// The checksum S3 verifies for every part and for the object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ChecksumKind {
    /// CRC32C (Castagnoli): cheap to compute.
    #[default]
    Crc32c,
    /// SHA-256.
    Sha256,
}

/// Where and how an object is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectSpec {
    pub bucket: String,
    pub key: String,
    /// User metadata (`x-amz-meta-*`), names without the prefix.
    pub metadata: BTreeMap<String, String>,
    pub content_type: String,
    pub sse: ServerSideEncryption,
    /// Sent as `ExpectedBucketOwner` on every call: S3 refuses the call (403) when the bucket
    /// belongs to another account.
    pub expected_bucket_owner: Option<String>,
    pub checksum: ChecksumKind,
}

/// What was stored, once S3 has confirmed the checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadReceipt {
    pub bucket: String,
    pub key: String,
    /// Size of the object.
    pub bytes: u64,
    /// SHA-256 of the whole object, computed locally, lowercase hex.
    pub sha256_hex: String,
    /// The object's checksum as S3 reports it: base64 of the full checksum for a single
    /// `PutObject`, `base64-N` (composite of N parts) for a multipart upload (written that way
    /// even when the store left the `-N` out of its report).
    pub s3_checksum: String,
    /// Parts uploaded (1 for a single `PutObject`).
    pub parts: u32,
    pub etag: Option<String>,
    /// Set when the bucket is versioned.
    pub version_id: Option<String>,
}

/// How hard to try, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadPolicy {
    /// Parts in flight at once (at least 1).
    pub concurrency: usize,
    /// Give up (and abort) after this instant.
    pub deadline: Instant,
    /// First pause between attempts; it doubles after each failure.
    pub retry_base: Duration,
    /// Longest pause between attempts.
    pub retry_max: Duration,
    /// Time allowed for one attempt of one call (a part's upload included); a hung connection
    /// is given up after it and the call retried.
    pub attempt_timeout: Duration,
    /// Time allowed to abort a failed multipart upload (or delete an unverified object),
    /// counted from the failure, even past the deadline.
    pub abort_grace: Duration,
}

impl UploadPolicy {
    /// The defaults: 2 parts in flight, pauses from 200 ms up to 5 s, 60 s per attempt, 10 s
    /// to abort.
    pub fn new(deadline: Instant) -> Self {
        UploadPolicy {
            concurrency: 2,
            deadline,
            retry_base: Duration::from_millis(200),
            retry_max: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(60),
            abort_grace: Duration::from_secs(10),
        }
    }
}

/// Stores archives. [`S3Store`] is the real one; tests of the drain can use a fake.
pub trait ArchiveStore: Send + Sync {
    /// Uploads a stream of parts (each at least [`MIN_PART_BYTES`] except the last, then the
    /// empty end marker; see the module documentation) as one object, while the parts are
    /// still being produced. One `PutObject` if the stream holds a single part.
    fn upload_stream(
        &self,
        object: &ObjectSpec,
        parts: Receiver<Bytes>,
        policy: &UploadPolicy,
    ) -> impl Future<Output = Result<UploadReceipt, UploadError>> + Send;

    /// Aborts the multipart uploads still open for the object's key (left by a run that was
    /// killed); how many were aborted.
    fn abort_leftover_uploads(
        &self,
        object: &ObjectSpec,
        policy: &UploadPolicy,
    ) -> impl Future<Output = usize> + Send;

    /// Uploads one object that is already in memory with one `PutObject`.
    fn put_object(
        &self,
        object: &ObjectSpec,
        body: Bytes,
        policy: &UploadPolicy,
    ) -> impl Future<Output = Result<UploadReceipt, UploadError>> + Send;

    /// The id AWS knows this store's writer by (`aws:userid`, `ROLEID:i-…` for an instance
    /// role): the key level the IAM policy confines each instance to. `bucket` only names the
    /// archive in an error.
    fn writer_id(&self, bucket: &str) -> impl Future<Output = Result<String, UploadError>> + Send;
}
