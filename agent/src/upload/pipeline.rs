//! The upload itself, generic over the S3 calls ([`ObjectApi`]) so that it can be tested with
//! a fake: reading parts from the stream, uploading up to `concurrency` of them at once,
//! retrying, completing, verifying, and aborting on the way out when anything fails.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use bytes::Bytes;
use tokio::sync::mpsc::Receiver;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

use super::checksum::{PartChecksum, StreamDigest, composite, composite_matches};
use super::retry::{CallError, GaveUp, RetrySchedule, retry};
use super::{
    MAX_PART_BYTES, MAX_PARTS, MIN_PART_BYTES, ObjectSpec, UploadError, UploadPolicy, UploadReceipt,
};

/// What the upload needs from S3, one attempt per call; retries are the caller's.
pub(crate) trait ObjectApi: Clone + Send + Sync + 'static {
    /// CreateMultipartUpload with the object's metadata, encryption and checksum algorithm
    /// (composite); the upload id.
    fn create(&self, object: &ObjectSpec)
    -> impl Future<Output = Result<String, CallError>> + Send;

    /// UploadPart with the part's checksum; the part's ETag.
    fn upload_part(
        &self,
        object: &ObjectSpec,
        upload_id: &str,
        number: u32,
        body: Bytes,
        checksum: &PartChecksum,
    ) -> impl Future<Output = Result<String, CallError>> + Send;

    /// CompleteMultipartUpload with every part's ETag and checksum.
    fn complete(
        &self,
        object: &ObjectSpec,
        upload_id: &str,
        parts: &[UploadedPart],
        total_bytes: u64,
    ) -> impl Future<Output = Result<Stored, CallError>> + Send;

    fn abort(
        &self,
        object: &ObjectSpec,
        upload_id: &str,
    ) -> impl Future<Output = Result<(), CallError>> + Send;

    /// PutObject with the object's metadata, encryption and full checksum.
    fn put(
        &self,
        object: &ObjectSpec,
        body: Bytes,
        checksum: &PartChecksum,
    ) -> impl Future<Output = Result<Stored, CallError>> + Send;

    /// HeadObject with checksum mode on.
    fn head(
        &self,
        object: &ObjectSpec,
        version_id: Option<&str>,
    ) -> impl Future<Output = Result<Stored, CallError>> + Send;

    fn delete(
        &self,
        object: &ObjectSpec,
        version_id: Option<&str>,
    ) -> impl Future<Output = Result<(), CallError>> + Send;

    /// The ids of the multipart uploads in progress for exactly this key.
    fn list_uploads(
        &self,
        object: &ObjectSpec,
    ) -> impl Future<Output = Result<Vec<String>, CallError>> + Send;
}

/// A part S3 has accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UploadedPart {
    pub number: u32,
    pub etag: String,
    pub checksum: PartChecksum,
}

/// What S3 says about a stored object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Stored {
    pub etag: Option<String>,
    pub version_id: Option<String>,
    /// The checksum of the object's algorithm, if S3 gave it.
    pub checksum: Option<String>,
}

/// S3's rules for parts; smaller in unit tests.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub min_part: usize,
    pub max_part: u64,
    pub max_parts: u32,
}

const S3_LIMITS: Limits = Limits {
    min_part: MIN_PART_BYTES,
    max_part: MAX_PART_BYTES,
    max_parts: MAX_PARTS,
};

pub(crate) async fn upload_stream<A: ObjectApi>(
    api: &A,
    object: &ObjectSpec,
    parts: Receiver<Bytes>,
    policy: &UploadPolicy,
) -> Result<UploadReceipt, UploadError> {
    upload_stream_with(api, object, parts, policy, S3_LIMITS).await
}

pub(crate) async fn put_object<A: ObjectApi>(
    api: &A,
    object: &ObjectSpec,
    body: Bytes,
    policy: &UploadPolicy,
) -> Result<UploadReceipt, UploadError> {
    let span = upload_span(object);
    async {
        let (digest, checksum) = absorb(object, StreamDigest::default(), body.clone()).await?;
        put_verified(api, object, body, checksum, digest, policy).await
    }
    .instrument(span)
    .await
}

fn upload_span(object: &ObjectSpec) -> tracing::Span {
    tracing::info_span!(
        "upload",
        bucket = %object.bucket,
        key = %object.key,
        upload_id = tracing::field::Empty,
    )
}

fn schedule(policy: &UploadPolicy) -> RetrySchedule {
    RetrySchedule {
        deadline: policy.deadline,
        attempt_timeout: policy.attempt_timeout,
        base: policy.retry_base,
        max: policy.retry_max,
    }
}

/// The schedule for cleaning up after a failure: `abort_grace` from now, whatever the
/// deadline, with short pauses so that several attempts fit.
fn cleanup_schedule(policy: &UploadPolicy) -> RetrySchedule {
    RetrySchedule {
        deadline: Instant::now() + policy.abort_grace,
        attempt_timeout: policy.attempt_timeout.min(policy.abort_grace),
        base: policy.retry_base,
        max: policy.retry_max.min(policy.abort_grace / 4),
    }
}

/// One part read from the stream, with its checksum.
struct Pending {
    number: u32,
    body: Bytes,
    checksum: PartChecksum,
}

/// Adds a part to the stream's SHA-256 and computes its own checksum, off the async threads.
async fn absorb(
    object: &ObjectSpec,
    mut digest: StreamDigest,
    part: Bytes,
) -> Result<(StreamDigest, PartChecksum), UploadError> {
    let kind = object.checksum;
    tokio::task::spawn_blocking(move || {
        digest.update(&part);
        let checksum = PartChecksum::of(kind, &part);
        (digest, checksum)
    })
    .await
    .map_err(|e| UploadError::Task {
        bucket: object.bucket.clone(),
        key: object.key.clone(),
        detail: format!("hashing a part: {e}"),
    })
}

/// The next part of the stream: `Some` for a part, `None` for the end marker.
async fn next_part(
    parts: &mut Receiver<Bytes>,
    object: &ObjectSpec,
    policy: &UploadPolicy,
    received: u64,
) -> Result<Option<Bytes>, UploadError> {
    match tokio::time::timeout_at(policy.deadline, parts.recv()).await {
        Err(_) => Err(UploadError::DeadlineExceeded {
            bucket: object.bucket.clone(),
            key: object.key.clone(),
            operation: "waiting for parts",
            upload_id: None,
            part: None,
            last_error: None,
        }),
        Ok(None) => Err(UploadError::StreamAborted {
            bucket: object.bucket.clone(),
            key: object.key.clone(),
            upload_id: None,
            bytes_received: received,
        }),
        Ok(Some(part)) if part.is_empty() => Ok(None),
        Ok(Some(part)) => Ok(Some(part)),
    }
}

fn check_part(
    object: &ObjectSpec,
    limits: Limits,
    number: u32,
    len: usize,
    previous_len: Option<usize>,
) -> Result<(), UploadError> {
    let invalid = |part: u32, reason: String| UploadError::InvalidPart {
        bucket: object.bucket.clone(),
        key: object.key.clone(),
        part,
        reason,
    };
    if let Some(previous) = previous_len
        && previous < limits.min_part
    {
        return Err(invalid(
            number - 1,
            format!(
                "{previous} bytes, but every part but the last needs at least {}",
                limits.min_part
            ),
        ));
    }
    if number > limits.max_parts {
        return Err(invalid(
            number,
            format!("more than {} parts", limits.max_parts),
        ));
    }
    if len as u64 > limits.max_part {
        return Err(invalid(
            number,
            format!("{len} bytes, more than {} per part", limits.max_part),
        ));
    }
    Ok(())
}

pub(crate) async fn upload_stream_with<A: ObjectApi>(
    api: &A,
    object: &ObjectSpec,
    mut parts: Receiver<Bytes>,
    policy: &UploadPolicy,
    limits: Limits,
) -> Result<UploadReceipt, UploadError> {
    let span = upload_span(object);
    async move {
        let digest = StreamDigest::default();
        let Some(first) = next_part(&mut parts, object, policy, 0).await? else {
            tracing::info!("empty stream: storing an empty object");
            let (digest, checksum) = absorb(object, digest, Bytes::new()).await?;
            return put_verified(api, object, Bytes::new(), checksum, digest, policy).await;
        };
        check_part(object, limits, 1, first.len(), None)?;
        let (digest, first_checksum) = absorb(object, digest, first.clone()).await?;
        let Some(second) = next_part(&mut parts, object, policy, digest.bytes()).await? else {
            return put_verified(api, object, first, first_checksum, digest, policy).await;
        };
        check_part(object, limits, 2, second.len(), Some(first.len()))?;
        let second_len = second.len();
        let (digest, second_checksum) = absorb(object, digest, second.clone()).await?;
        let started = vec![
            Pending {
                number: 1,
                body: first,
                checksum: first_checksum,
            },
            Pending {
                number: 2,
                body: second,
                checksum: second_checksum,
            },
        ];
        let stream = PartStream {
            parts,
            digest,
            last_len: second_len,
            limits,
        };
        multipart(api, object, stream, started, policy).await
    }
    .instrument(span)
    .await
}

/// The rest of the stream, after the two parts that decided on a multipart upload.
struct PartStream {
    parts: Receiver<Bytes>,
    digest: StreamDigest,
    last_len: usize,
    limits: Limits,
}

/// PutObject with the full checksum, then the checksum S3 reports compared with it.
async fn put_verified<A: ObjectApi>(
    api: &A,
    object: &ObjectSpec,
    body: Bytes,
    checksum: PartChecksum,
    digest: StreamDigest,
    policy: &UploadPolicy,
) -> Result<UploadReceipt, UploadError> {
    let stored = retry("PutObject", schedule(policy), || {
        api.put(object, body.clone(), &checksum)
    })
    .await
    .map_err(|gave_up| match gave_up {
        GaveUp::Permanent(error) => UploadError::PutObject {
            bucket: object.bucket.clone(),
            key: object.key.clone(),
            detail: error.detail,
        },
        GaveUp::Deadline(last) => deadline(object, "PutObject", None, None, last),
    })?;
    let mut stored = stored;
    let s3_checksum = verify(api, object, policy, &checksum.base64, false, &mut stored).await?;
    tracing::info!(bytes = digest.bytes(), "object stored and verified");
    Ok(UploadReceipt {
        bucket: object.bucket.clone(),
        key: object.key.clone(),
        bytes: digest.bytes(),
        sha256_hex: digest.finish_hex(),
        s3_checksum,
        parts: 1,
        etag: stored.etag,
        version_id: stored.version_id,
    })
}

fn deadline(
    object: &ObjectSpec,
    operation: &'static str,
    upload_id: Option<&str>,
    part: Option<u32>,
    last: Option<CallError>,
) -> UploadError {
    UploadError::DeadlineExceeded {
        bucket: object.bucket.clone(),
        key: object.key.clone(),
        operation,
        upload_id: upload_id.map(str::to_string),
        part,
        last_error: last.map(|e| e.detail),
    }
}

/// Compares the checksum S3 reports (in `stored`, or else from HeadObject) with `local`. On a
/// mismatch the object version is deleted. When the checksum cannot be read back, the object
/// is left in place (S3 has verified every part's checksum on the way in) and the error says
/// it is unverified.
async fn verify<A: ObjectApi>(
    api: &A,
    object: &ObjectSpec,
    policy: &UploadPolicy,
    local: &str,
    is_composite: bool,
    stored: &mut Stored,
) -> Result<String, UploadError> {
    let reported = match &stored.checksum {
        Some(reported) => Some(reported.clone()),
        None => {
            let version = stored.version_id.clone();
            let version = version.as_deref();
            let head = retry("HeadObject", schedule(policy), || api.head(object, version))
                .await
                .map_err(|gave_up| match gave_up {
                    GaveUp::Permanent(error) => UploadError::HeadObject {
                        bucket: object.bucket.clone(),
                        key: object.key.clone(),
                        detail: error.detail,
                    },
                    GaveUp::Deadline(last) => deadline(object, "HeadObject", None, None, last),
                })?;
            // Fills in what a lost answer to CompleteMultipartUpload did not say.
            if stored.etag.is_none() {
                stored.etag = head.etag;
            }
            if stored.version_id.is_none() {
                stored.version_id = head.version_id;
            }
            head.checksum
        }
    };
    let matches = reported.as_deref().is_some_and(|reported| {
        if is_composite {
            composite_matches(local, reported)
        } else {
            reported == local
        }
    });
    if matches {
        // For a composite, S3's notation `base64-N` (some stores leave the suffix out).
        return Ok(if is_composite {
            local.to_string()
        } else {
            reported.unwrap_or_default()
        });
    }
    tracing::error!(
        local,
        reported = reported.as_deref().unwrap_or("none"),
        "checksum mismatch: deleting the object"
    );
    let version = stored.version_id.as_deref();
    let deleted = retry("DeleteObject", cleanup_schedule(policy), || {
        api.delete(object, version)
    })
    .await;
    if let Err(gave_up) = &deleted {
        tracing::error!(?gave_up, "could not delete the unverified object");
    }
    Err(UploadError::ChecksumMismatch {
        bucket: object.bucket.clone(),
        key: object.key.clone(),
        local: local.to_string(),
        reported,
        deleted: deleted.is_ok(),
    })
}

/// Aborts a multipart upload when dropped while armed (the upload future was dropped midway),
/// by spawning the abort on the current runtime.
struct AbortGuard<A: ObjectApi> {
    armed: Option<(A, Arc<ObjectSpec>, String, UploadPolicy)>,
}

impl<A: ObjectApi> AbortGuard<A> {
    fn disarm(&mut self) {
        self.armed = None;
    }
}

impl<A: ObjectApi> Drop for AbortGuard<A> {
    fn drop(&mut self) {
        let Some((api, object, upload_id, policy)) = self.armed.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                tracing::warn!(upload_id, "upload dropped midway: aborting it");
                runtime.spawn(async move {
                    if let Err(error) = abort_upload(&api, &object, &upload_id, &policy).await {
                        tracing::error!(upload_id, %error, "could not abort the dropped upload");
                    }
                });
            }
            Err(_) => tracing::error!(
                upload_id,
                "upload dropped outside a runtime: the multipart upload is left behind"
            ),
        }
    }
}

/// Aborts every multipart upload still open for the object's key: what an earlier run of the
/// agent left when it was killed mid-upload. Returns how many were aborted; failures are
/// logged, as the new upload does not depend on them.
pub(crate) async fn abort_leftover_uploads<A: ObjectApi>(
    api: &A,
    object: &ObjectSpec,
    policy: &UploadPolicy,
) -> usize {
    let ids = match api.list_uploads(object).await {
        Ok(ids) => ids,
        Err(error) => {
            tracing::warn!(key = %object.key, error = %error.detail, "could not list leftover uploads");
            return 0;
        }
    };
    let mut aborted = 0;
    for upload_id in &ids {
        match abort_upload(api, object, upload_id, policy).await {
            Ok(()) => aborted += 1,
            Err(error) => {
                tracing::warn!(key = %object.key, upload_id, %error, "could not abort a leftover upload");
            }
        }
    }
    aborted
}

/// AbortMultipartUpload, retried for `abort_grace`. An upload S3 no longer knows is gone
/// already.
async fn abort_upload<A: ObjectApi>(
    api: &A,
    object: &ObjectSpec,
    upload_id: &str,
    policy: &UploadPolicy,
) -> Result<(), String> {
    retry("AbortMultipartUpload", cleanup_schedule(policy), || async {
        match api.abort(object, upload_id).await {
            Err(error) if error.has_code("NoSuchUpload") => Ok(()),
            other => other,
        }
    })
    .await
    .map_err(|gave_up| match gave_up {
        GaveUp::Permanent(error) => error.detail,
        GaveUp::Deadline(Some(error)) => format!("gave up after retrying: {}", error.detail),
        GaveUp::Deadline(None) => "no answer in time".to_string(),
    })?;
    tracing::info!(upload_id, "multipart upload aborted");
    Ok(())
}

/// Aborts after `cause`; the error to return.
async fn abort_after<A: ObjectApi>(
    api: &A,
    object: &ObjectSpec,
    upload_id: &str,
    cause: UploadError,
    policy: &UploadPolicy,
) -> UploadError {
    tracing::warn!(%cause, "upload failed: aborting it");
    match abort_upload(api, object, upload_id, policy).await {
        Ok(()) => cause,
        Err(detail) => UploadError::AbortFailed {
            bucket: object.bucket.clone(),
            key: object.key.clone(),
            upload_id: upload_id.to_string(),
            cause: Box::new(cause),
            detail,
        },
    }
}

/// CreateMultipartUpload. If an attempt failed without an answer (it may have created an
/// upload whose id never arrived), uploads left for the same key are aborted, best effort.
async fn create_upload<A: ObjectApi>(
    api: &A,
    object: &ObjectSpec,
    policy: &UploadPolicy,
) -> Result<String, UploadError> {
    let unanswered = AtomicBool::new(false);
    let upload_id = retry("CreateMultipartUpload", schedule(policy), || async {
        let result = api.create(object).await;
        if let Err(error) = &result
            && error.retryable
            && error.code.is_none()
        {
            unanswered.store(true, Ordering::Relaxed);
        }
        result
    })
    .await
    .map_err(|gave_up| match gave_up {
        GaveUp::Permanent(error) => UploadError::CreateMultipartUpload {
            bucket: object.bucket.clone(),
            key: object.key.clone(),
            detail: error.detail,
        },
        GaveUp::Deadline(last) => deadline(object, "CreateMultipartUpload", None, None, last),
    })?;
    if unanswered.load(Ordering::Relaxed) {
        match api.list_uploads(object).await {
            Ok(ids) => {
                for stray in ids.iter().filter(|id| **id != upload_id) {
                    tracing::warn!(stray, "aborting an upload created by an unanswered attempt");
                    if let Err(error) = api.abort(object, stray).await {
                        tracing::warn!(stray, error = %error.detail, "could not abort it");
                    }
                }
            }
            Err(error) => tracing::warn!(
                error = %error.detail,
                "could not look for uploads left by an unanswered CreateMultipartUpload"
            ),
        }
    }
    Ok(upload_id)
}

async fn multipart<A: ObjectApi>(
    api: &A,
    object: &ObjectSpec,
    stream: PartStream,
    started: Vec<Pending>,
    policy: &UploadPolicy,
) -> Result<UploadReceipt, UploadError> {
    let upload_id = create_upload(api, object, policy).await?;
    tracing::Span::current().record("upload_id", upload_id.as_str());
    tracing::info!("multipart upload created");
    let object = Arc::new(object.clone());
    let mut guard = AbortGuard {
        armed: Some((
            api.clone(),
            object.clone(),
            upload_id.clone(),
            policy.clone(),
        )),
    };
    let result = send_parts(api, &object, &upload_id, stream, started, policy).await;
    let (uploaded, digest) = match result {
        Ok(done) => done,
        Err(error) => {
            // The guard stays armed while aborting, in case this future is dropped meanwhile.
            let error = abort_after(api, &object, &upload_id, error, policy).await;
            guard.disarm();
            return Err(error);
        }
    };
    let count = u32::try_from(uploaded.len()).unwrap_or(u32::MAX);
    let local = composite(object.checksum, uploaded.iter().map(|p| &p.checksum));

    let attempts = AtomicU32::new(0);
    let completed = retry("CompleteMultipartUpload", schedule(policy), || async {
        let attempt = attempts.fetch_add(1, Ordering::Relaxed);
        match api
            .complete(&object, &upload_id, &uploaded, digest.bytes())
            .await
        {
            // An earlier attempt completed the upload but its answer was lost: the object
            // is checked through HeadObject below.
            Err(error) if attempt > 0 && error.has_code("NoSuchUpload") => Ok(Stored::default()),
            other => other,
        }
    })
    .await;
    let stored = match completed {
        Ok(stored) => stored,
        Err(gave_up) => {
            let error = match gave_up {
                GaveUp::Permanent(error) => UploadError::CompleteMultipartUpload {
                    bucket: object.bucket.clone(),
                    key: object.key.clone(),
                    upload_id: upload_id.clone(),
                    parts: count,
                    detail: error.detail,
                },
                GaveUp::Deadline(last) => deadline(
                    &object,
                    "CompleteMultipartUpload",
                    Some(&upload_id),
                    None,
                    last,
                ),
            };
            let error = abort_after(api, &object, &upload_id, error, policy).await;
            guard.disarm();
            return Err(error);
        }
    };
    guard.disarm();
    tracing::info!(parts = count, "multipart upload completed");
    let mut stored = stored;
    let s3_checksum = verify(api, &object, policy, &local, true, &mut stored).await?;
    tracing::info!(bytes = digest.bytes(), parts = count, checksum = %s3_checksum, "object stored and verified");
    Ok(UploadReceipt {
        bucket: object.bucket.clone(),
        key: object.key.clone(),
        bytes: digest.bytes(),
        sha256_hex: digest.finish_hex(),
        s3_checksum,
        parts: count,
        etag: stored.etag,
        version_id: stored.version_id,
    })
}

/// Uploads the started parts and the rest of the stream, up to `concurrency` at once, taking
/// a part from the stream only when a slot is free. The parts in order, and the digest of the
/// stream. On error the part tasks have stopped.
async fn send_parts<A: ObjectApi>(
    api: &A,
    object: &Arc<ObjectSpec>,
    upload_id: &str,
    stream: PartStream,
    started: Vec<Pending>,
    policy: &UploadPolicy,
) -> Result<(Vec<UploadedPart>, StreamDigest), UploadError> {
    let mut tasks = JoinSet::new();
    let result = drive_parts(api, object, upload_id, stream, started, policy, &mut tasks).await;
    if result.is_err() {
        // Stop the parts in flight before the upload is aborted.
        tasks.shutdown().await;
    }
    result
}

async fn drive_parts<A: ObjectApi>(
    api: &A,
    object: &Arc<ObjectSpec>,
    upload_id: &str,
    stream: PartStream,
    started: Vec<Pending>,
    policy: &UploadPolicy,
    tasks: &mut JoinSet<Result<UploadedPart, UploadError>>,
) -> Result<(Vec<UploadedPart>, StreamDigest), UploadError> {
    let PartStream {
        mut parts,
        mut digest,
        mut last_len,
        limits,
    } = stream;
    let concurrency = policy.concurrency.max(1);
    let upload_id: Arc<str> = Arc::from(upload_id);
    let mut queue: VecDeque<Pending> = started.into();
    let mut next_number = u32::try_from(queue.len()).unwrap_or(u32::MAX) + 1;
    let mut uploaded: Vec<UploadedPart> = Vec::new();
    let mut ended = false;
    let deadline_sleep = tokio::time::sleep_until(policy.deadline);
    tokio::pin!(deadline_sleep);
    loop {
        while tasks.len() < concurrency {
            let Some(pending) = queue.pop_front() else {
                break;
            };
            let span = tracing::info_span!("part", part = pending.number);
            tasks.spawn(
                upload_part(
                    api.clone(),
                    object.clone(),
                    upload_id.clone(),
                    pending,
                    schedule(policy),
                )
                .instrument(span),
            );
        }
        if ended && queue.is_empty() && tasks.is_empty() {
            break;
        }
        let can_read = !ended && queue.is_empty() && tasks.len() < concurrency;
        tokio::select! {
            joined = tasks.join_next(), if !tasks.is_empty() => match joined {
                Some(Ok(Ok(part))) => uploaded.push(part),
                Some(Ok(Err(error))) => return Err(error),
                Some(Err(join_error)) => {
                    return Err(UploadError::Task {
                        bucket: object.bucket.clone(),
                        key: object.key.clone(),
                        detail: join_error.to_string(),
                    });
                }
                None => {}
            },
            item = parts.recv(), if can_read => match item {
                None => {
                    return Err(UploadError::StreamAborted {
                        bucket: object.bucket.clone(),
                        key: object.key.clone(),
                        upload_id: Some(upload_id.to_string()),
                        bytes_received: digest.bytes(),
                    });
                }
                Some(part) if part.is_empty() => ended = true,
                Some(part) => {
                    check_part(object, limits, next_number, part.len(), Some(last_len))?;
                    last_len = part.len();
                    let (updated, checksum) = absorb(object, digest, part.clone()).await?;
                    digest = updated;
                    queue.push_back(Pending {
                        number: next_number,
                        body: part,
                        checksum,
                    });
                    next_number += 1;
                }
            },
            // Parts in flight stop at the deadline by themselves and say why.
            () = &mut deadline_sleep, if tasks.is_empty() => {
                return Err(deadline(
                    object,
                    "waiting for parts",
                    Some(&upload_id),
                    None,
                    None,
                ));
            }
        }
    }
    uploaded.sort_by_key(|part| part.number);
    Ok((uploaded, digest))
}

async fn upload_part<A: ObjectApi>(
    api: A,
    object: Arc<ObjectSpec>,
    upload_id: Arc<str>,
    part: Pending,
    schedule: RetrySchedule,
) -> Result<UploadedPart, UploadError> {
    let bytes = part.body.len();
    let etag = retry("UploadPart", schedule, || {
        api.upload_part(
            &object,
            &upload_id,
            part.number,
            part.body.clone(),
            &part.checksum,
        )
    })
    .await
    .map_err(|gave_up| match gave_up {
        GaveUp::Permanent(error) => UploadError::UploadPart {
            bucket: object.bucket.clone(),
            key: object.key.clone(),
            upload_id: upload_id.to_string(),
            part: part.number,
            detail: error.detail,
        },
        GaveUp::Deadline(last) => deadline(
            &object,
            "UploadPart",
            Some(&upload_id),
            Some(part.number),
            last,
        ),
    })?;
    tracing::debug!(bytes, "part uploaded");
    Ok(UploadedPart {
        number: part.number,
        etag,
        checksum: part.checksum,
    })
}

#[cfg(test)]
mod tests;
