//! The pipeline against an in-memory S3 that can fail on cue.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::mpsc::Sender;

use super::super::part_writer::part_channel;
use super::super::{ChecksumKind, ServerSideEncryption};
use super::*;

const TEST_LIMITS: Limits = Limits {
    min_part: 4,
    max_part: 64,
    max_parts: 5,
};

#[derive(Debug, Default)]
struct State {
    next_id: u32,
    /// Upload id → part number → (bytes, checksum).
    uploads: HashMap<String, BTreeMap<u32, (Bytes, String)>>,
    /// Key → (bytes, checksum as reported).
    objects: HashMap<String, (Bytes, String)>,
    calls: Vec<String>,
    in_flight: usize,
    max_in_flight: usize,
    /// Failures to return, per call name, before answering normally.
    failures: HashMap<&'static str, VecDeque<CallError>>,
    part_delay: Duration,
    /// Report this checksum instead of the right one.
    wrong_checksum: Option<String>,
    /// CompleteMultipartUpload completes, then answers with this error (a lost answer).
    lose_complete_answer: bool,
}

#[derive(Debug, Clone, Default)]
struct Fake {
    state: Arc<Mutex<State>>,
}

impl Fake {
    fn with(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state.lock().unwrap());
    }

    fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    fn count(&self, name: &str) -> usize {
        self.calls().iter().filter(|c| c.starts_with(name)).count()
    }

    fn object(&self, key: &str) -> Option<Bytes> {
        self.state
            .lock()
            .unwrap()
            .objects
            .get(key)
            .map(|(b, _)| b.clone())
    }

    fn open_uploads(&self) -> usize {
        self.state.lock().unwrap().uploads.len()
    }

    fn fail(&self, call: &'static str, errors: impl IntoIterator<Item = CallError>) {
        self.with(|s| s.failures.entry(call).or_default().extend(errors));
    }

    /// Records the call; the scripted failure for it, if any.
    fn enter(&self, call: &'static str, detail: String) -> Result<(), CallError> {
        let mut state = self.state.lock().unwrap();
        state.calls.push(detail);
        match state.failures.get_mut(call).and_then(VecDeque::pop_front) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

fn transient() -> CallError {
    CallError {
        retryable: true,
        code: Some("SlowDown".into()),
        detail: "503 SlowDown".into(),
    }
}

fn unanswered() -> CallError {
    CallError {
        retryable: true,
        code: None,
        detail: "connection closed".into(),
    }
}

fn permanent(code: &str) -> CallError {
    CallError {
        retryable: false,
        code: Some(code.into()),
        detail: format!("403 {code}"),
    }
}

impl ObjectApi for Fake {
    async fn create(&self, object: &ObjectSpec) -> Result<String, CallError> {
        self.enter("create", "create".into())?;
        let mut state = self.state.lock().unwrap();
        state.next_id += 1;
        let id = format!("up-{}", state.next_id);
        state.uploads.insert(id.clone(), BTreeMap::new());
        let _ = object;
        Ok(id)
    }

    async fn upload_part(
        &self,
        object: &ObjectSpec,
        upload_id: &str,
        number: u32,
        body: Bytes,
        checksum: &PartChecksum,
    ) -> Result<String, CallError> {
        self.enter("part", format!("part {number}"))?;
        let delay = {
            let mut state = self.state.lock().unwrap();
            state.in_flight += 1;
            state.max_in_flight = state.max_in_flight.max(state.in_flight);
            state.part_delay
        };
        tokio::time::sleep(delay).await;
        let mut state = self.state.lock().unwrap();
        state.in_flight -= 1;
        // S3 checks the part against the checksum sent.
        assert_eq!(
            PartChecksum::of(object.checksum, &body).base64,
            checksum.base64
        );
        let parts = state.uploads.get_mut(upload_id).ok_or_else(|| CallError {
            retryable: false,
            code: Some("NoSuchUpload".into()),
            detail: "404 NoSuchUpload".into(),
        })?;
        parts.insert(number, (body, checksum.base64.clone()));
        Ok(format!("etag-{number}"))
    }

    async fn complete(
        &self,
        object: &ObjectSpec,
        upload_id: &str,
        parts: &[UploadedPart],
        total_bytes: u64,
    ) -> Result<Stored, CallError> {
        self.enter("complete", "complete".into())?;
        let mut state = self.state.lock().unwrap();
        let Some(stored) = state.uploads.remove(upload_id) else {
            return Err(CallError {
                retryable: false,
                code: Some("NoSuchUpload".into()),
                detail: "404 NoSuchUpload".into(),
            });
        };
        let numbers: Vec<u32> = parts.iter().map(|p| p.number).collect();
        assert_eq!(numbers, stored.keys().copied().collect::<Vec<_>>());
        for part in parts {
            assert_eq!(part.etag, format!("etag-{}", part.number));
            assert_eq!(part.checksum.base64, stored[&part.number].1);
        }
        let body: Vec<u8> = stored
            .values()
            .flat_map(|(b, _)| b.iter().copied())
            .collect();
        assert_eq!(body.len() as u64, total_bytes);
        let sums: Vec<PartChecksum> = stored
            .values()
            .map(|(b, _)| PartChecksum::of(object.checksum, b))
            .collect();
        let reported = state
            .wrong_checksum
            .clone()
            .unwrap_or_else(|| composite(object.checksum, &sums));
        state
            .objects
            .insert(object.key.clone(), (Bytes::from(body), reported.clone()));
        if state.lose_complete_answer {
            state.lose_complete_answer = false;
            return Err(unanswered());
        }
        Ok(Stored {
            etag: Some("etag-mpu".into()),
            version_id: None,
            checksum: Some(reported),
        })
    }

    async fn abort(&self, _object: &ObjectSpec, upload_id: &str) -> Result<(), CallError> {
        self.enter("abort", format!("abort {upload_id}"))?;
        let mut state = self.state.lock().unwrap();
        match state.uploads.remove(upload_id) {
            Some(_) => Ok(()),
            None => Err(CallError {
                retryable: false,
                code: Some("NoSuchUpload".into()),
                detail: "404 NoSuchUpload".into(),
            }),
        }
    }

    async fn put(
        &self,
        object: &ObjectSpec,
        body: Bytes,
        checksum: &PartChecksum,
    ) -> Result<Stored, CallError> {
        self.enter("put", format!("put {}", body.len()))?;
        let mut state = self.state.lock().unwrap();
        let reported = state
            .wrong_checksum
            .clone()
            .unwrap_or_else(|| PartChecksum::of(object.checksum, &body).base64);
        assert_eq!(
            checksum.base64,
            PartChecksum::of(object.checksum, &body).base64
        );
        state
            .objects
            .insert(object.key.clone(), (body, reported.clone()));
        Ok(Stored {
            etag: Some("etag-put".into()),
            version_id: None,
            checksum: Some(reported),
        })
    }

    async fn head(
        &self,
        object: &ObjectSpec,
        _version_id: Option<&str>,
    ) -> Result<Stored, CallError> {
        self.enter("head", "head".into())?;
        let state = self.state.lock().unwrap();
        match state.objects.get(&object.key) {
            Some((_, checksum)) => Ok(Stored {
                etag: Some("etag-head".into()),
                version_id: None,
                checksum: Some(checksum.clone()),
            }),
            None => Err(permanent("NotFound")),
        }
    }

    async fn delete(
        &self,
        object: &ObjectSpec,
        _version_id: Option<&str>,
    ) -> Result<(), CallError> {
        self.enter("delete", "delete".into())?;
        self.state.lock().unwrap().objects.remove(&object.key);
        Ok(())
    }

    async fn list_uploads(&self, _object: &ObjectSpec) -> Result<Vec<String>, CallError> {
        self.enter("list", "list".into())?;
        Ok(self.state.lock().unwrap().uploads.keys().cloned().collect())
    }
}

fn spec() -> ObjectSpec {
    ObjectSpec {
        bucket: "logs".into(),
        key: "a/b.tar.gz".into(),
        metadata: BTreeMap::new(),
        content_type: "application/gzip".into(),
        sse: ServerSideEncryption::S3,
        expected_bucket_owner: None,
        checksum: ChecksumKind::Crc32c,
    }
}

fn policy(deadline_in: Duration) -> UploadPolicy {
    UploadPolicy {
        concurrency: 2,
        deadline: Instant::now() + deadline_in,
        retry_base: Duration::from_millis(2),
        retry_max: Duration::from_millis(10),
        attempt_timeout: Duration::from_secs(2),
        abort_grace: Duration::from_millis(300),
    }
}

/// Sends `parts` (and the end marker if `finish`), then keeps the sender until the test ends
/// if `hold`.
async fn feed(tx: Sender<Bytes>, parts: Vec<&'static [u8]>, finish: bool) {
    for part in parts {
        if tx.send(Bytes::from_static(part)).await.is_err() {
            return;
        }
    }
    if finish {
        let _ = tx.send(Bytes::new()).await;
    }
}

async fn run(
    fake: &Fake,
    parts: Vec<&'static [u8]>,
    finish: bool,
    policy: &UploadPolicy,
) -> Result<UploadReceipt, UploadError> {
    let (tx, rx) = part_channel(1);
    let producer = tokio::spawn(feed(tx, parts, finish));
    let result = upload_stream_with(fake, &spec(), rx, policy, TEST_LIMITS).await;
    producer.abort();
    result
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[tokio::test]
async fn a_single_part_is_one_put_object() {
    let fake = Fake::default();
    let receipt = run(&fake, vec![b"tiny"], true, &policy(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(fake.calls(), vec!["put 4"]);
    assert_eq!(fake.object("a/b.tar.gz").unwrap(), &b"tiny"[..]);
    assert_eq!(receipt.bytes, 4);
    assert_eq!(receipt.parts, 1);
    assert_eq!(receipt.sha256_hex, sha256_hex(b"tiny"));
    assert_eq!(
        receipt.s3_checksum,
        PartChecksum::of(ChecksumKind::Crc32c, b"tiny").base64
    );
}

#[tokio::test]
async fn an_empty_stream_stores_an_empty_object() {
    let fake = Fake::default();
    let receipt = run(&fake, vec![], true, &policy(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(fake.calls(), vec!["put 0"]);
    assert_eq!(receipt.bytes, 0);
    assert_eq!(receipt.sha256_hex, sha256_hex(b""));
}

#[tokio::test]
async fn parts_go_up_in_parallel_and_complete_in_order() {
    let fake = Fake::default();
    fake.with(|s| s.part_delay = Duration::from_millis(30));
    let parts: Vec<&'static [u8]> = vec![b"aaaa", b"bbbb", b"cccc", b"dddd", b"ee"];
    let receipt = run(&fake, parts, true, &policy(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(
        fake.object("a/b.tar.gz").unwrap(),
        &b"aaaabbbbccccddddee"[..]
    );
    assert_eq!(fake.state.lock().unwrap().max_in_flight, 2);
    assert_eq!(fake.count("part"), 5);
    assert_eq!(fake.count("complete"), 1);
    assert_eq!(fake.count("abort"), 0);
    assert_eq!(receipt.parts, 5);
    assert_eq!(receipt.bytes, 18);
    assert_eq!(receipt.sha256_hex, sha256_hex(b"aaaabbbbccccddddee"));
    let sums: Vec<PartChecksum> = [&b"aaaa"[..], b"bbbb", b"cccc", b"dddd", b"ee"]
        .iter()
        .map(|p| PartChecksum::of(ChecksumKind::Crc32c, p))
        .collect();
    assert_eq!(receipt.s3_checksum, composite(ChecksumKind::Crc32c, &sums));
    assert!(receipt.s3_checksum.ends_with("-5"));
}

#[tokio::test]
async fn concurrency_one_uploads_one_part_at_a_time() {
    let fake = Fake::default();
    fake.with(|s| s.part_delay = Duration::from_millis(10));
    let mut policy = policy(Duration::from_secs(5));
    policy.concurrency = 1;
    run(&fake, vec![b"aaaa", b"bbbb", b"cc"], true, &policy)
        .await
        .unwrap();
    assert_eq!(fake.state.lock().unwrap().max_in_flight, 1);
}

#[tokio::test]
async fn transient_failures_are_ridden_out() {
    let fake = Fake::default();
    fake.fail("create", [transient()]);
    fake.fail("part", [transient(), transient(), unanswered()]);
    fake.fail("complete", [transient()]);
    let receipt = run(
        &fake,
        vec![b"aaaa", b"bbbb", b"cc"],
        true,
        &policy(Duration::from_secs(5)),
    )
    .await
    .unwrap();
    assert_eq!(receipt.parts, 3);
    assert_eq!(fake.object("a/b.tar.gz").unwrap(), &b"aaaabbbbcc"[..]);
    assert_eq!(fake.open_uploads(), 0);
}

#[tokio::test]
async fn a_permanent_part_failure_aborts_the_upload() {
    let fake = Fake::default();
    fake.fail("part", [permanent("AccessDenied")]);
    let error = run(
        &fake,
        vec![b"aaaa", b"bbbb", b"cc"],
        true,
        &policy(Duration::from_secs(5)),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&error, UploadError::UploadPart { upload_id, detail, .. }
            if upload_id == "up-1" && detail.contains("AccessDenied")),
        "{error}"
    );
    assert_eq!(fake.count("abort"), 1);
    assert_eq!(fake.open_uploads(), 0);
    assert!(fake.object("a/b.tar.gz").is_none());
}

#[tokio::test]
async fn a_stream_closed_without_the_marker_is_aborted() {
    let fake = Fake::default();
    let error = run(
        &fake,
        vec![b"aaaa", b"bbbb", b"cccc"],
        false,
        &policy(Duration::from_secs(5)),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            &error,
            UploadError::StreamAborted {
                upload_id: Some(_),
                bytes_received: 12,
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(fake.count("abort"), 1);
    assert_eq!(fake.count("complete"), 0);
    assert_eq!(fake.open_uploads(), 0);
}

#[tokio::test]
async fn a_stream_closed_before_a_second_part_creates_nothing() {
    let fake = Fake::default();
    let error = run(&fake, vec![b"aaaa"], false, &policy(Duration::from_secs(5)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            UploadError::StreamAborted {
                upload_id: None,
                ..
            }
        ),
        "{error}"
    );
    assert!(fake.calls().is_empty());
}

#[tokio::test]
async fn the_deadline_ends_a_failing_upload_and_aborts_it() {
    let fake = Fake::default();
    fake.fail("part", std::iter::repeat_n(transient(), 10_000));
    let started = Instant::now();
    let error = run(
        &fake,
        vec![b"aaaa", b"bbbb", b"cc"],
        true,
        &policy(Duration::from_millis(200)),
    )
    .await
    .unwrap_err();
    assert!(error.is_deadline(), "{error}");
    assert!(error.to_string().contains("SlowDown"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(fake.count("abort"), 1);
    assert_eq!(fake.open_uploads(), 0);
}

#[tokio::test]
async fn the_deadline_while_waiting_for_the_archiver_aborts() {
    let fake = Fake::default();
    let (tx, rx) = part_channel(1);
    let producer = tokio::spawn(async move {
        tx.send(Bytes::from_static(b"aaaa")).await.unwrap();
        tx.send(Bytes::from_static(b"bbbb")).await.unwrap();
        // The archiver stalls, holding its end of the channel.
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(tx);
    });
    let error = upload_stream_with(
        &fake,
        &spec(),
        rx,
        &policy(Duration::from_millis(200)),
        TEST_LIMITS,
    )
    .await
    .unwrap_err();
    producer.abort();
    assert!(
        matches!(
            &error,
            UploadError::DeadlineExceeded {
                operation: "waiting for parts",
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(fake.count("abort"), 1);
    assert_eq!(fake.open_uploads(), 0);
}

#[tokio::test]
async fn a_small_part_in_the_middle_is_refused_and_aborted() {
    let fake = Fake::default();
    let error = run(
        &fake,
        vec![b"aaaa", b"bbbb", b"cc", b"dddd"],
        true,
        &policy(Duration::from_secs(5)),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&error, UploadError::InvalidPart { part: 3, .. }),
        "{error}"
    );
    assert_eq!(fake.count("abort"), 1);
    assert_eq!(fake.open_uploads(), 0);
}

#[tokio::test]
async fn too_many_parts_are_refused() {
    let fake = Fake::default();
    let error = run(
        &fake,
        vec![b"aaaa", b"aaaa", b"aaaa", b"aaaa", b"aaaa", b"aaaa"],
        true,
        &policy(Duration::from_secs(5)),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&error, UploadError::InvalidPart { part: 6, .. }),
        "{error}"
    );
    assert_eq!(fake.open_uploads(), 0);
}

#[tokio::test]
async fn a_checksum_mismatch_deletes_the_object() {
    let fake = Fake::default();
    fake.with(|s| s.wrong_checksum = Some("AAAAAA==-2".into()));
    let error = run(
        &fake,
        vec![b"aaaa", b"bb"],
        true,
        &policy(Duration::from_secs(5)),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&error, UploadError::ChecksumMismatch { deleted: true, reported: Some(r), .. }
            if r == "AAAAAA==-2"),
        "{error}"
    );
    assert!(fake.object("a/b.tar.gz").is_none());

    let fake = Fake::default();
    fake.with(|s| s.wrong_checksum = Some("AAAAAA==".into()));
    let error = run(&fake, vec![b"aa"], true, &policy(Duration::from_secs(5)))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, UploadError::ChecksumMismatch { deleted: true, .. }),
        "{error}"
    );
    assert!(fake.object("a/b.tar.gz").is_none());
}

#[tokio::test]
async fn a_lost_complete_answer_is_checked_through_head_object() {
    let fake = Fake::default();
    fake.with(|s| s.lose_complete_answer = true);
    let receipt = run(
        &fake,
        vec![b"aaaa", b"bb"],
        true,
        &policy(Duration::from_secs(5)),
    )
    .await
    .unwrap();
    assert_eq!(fake.count("complete"), 2);
    assert!(fake.count("head") >= 1);
    assert_eq!(fake.count("abort"), 0);
    assert!(receipt.s3_checksum.ends_with("-2"));
    assert_eq!(fake.object("a/b.tar.gz").unwrap(), &b"aaaabb"[..]);
}

#[tokio::test]
async fn an_unanswered_create_has_its_stray_upload_aborted() {
    let fake = Fake::default();
    // The first create "happens" but its answer is lost.
    fake.with(|s| {
        s.next_id = 1;
        s.uploads.insert("up-1".into(), BTreeMap::new());
    });
    fake.fail("create", [unanswered()]);
    run(
        &fake,
        vec![b"aaaa", b"bb"],
        true,
        &policy(Duration::from_secs(5)),
    )
    .await
    .unwrap();
    assert_eq!(fake.count("list"), 1);
    assert!(fake.calls().contains(&"abort up-1".to_string()));
    assert_eq!(fake.open_uploads(), 0);
}

#[tokio::test]
async fn a_failed_abort_is_reported() {
    let fake = Fake::default();
    fake.fail("part", [permanent("AccessDenied")]);
    fake.fail("abort", std::iter::repeat_n(transient(), 10_000));
    let error = run(
        &fake,
        vec![b"aaaa", b"bb"],
        true,
        &policy(Duration::from_secs(5)),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&error, UploadError::AbortFailed { cause, .. }
            if matches!(**cause, UploadError::UploadPart { .. })),
        "{error}"
    );
}

#[tokio::test]
async fn dropping_the_upload_midway_still_aborts_it() {
    let fake = Fake::default();
    fake.with(|s| s.part_delay = Duration::from_secs(30));
    let (tx, rx) = part_channel(1);
    let producer = tokio::spawn(feed(tx, vec![b"aaaa", b"bbbb"], false));
    let policy = policy(Duration::from_secs(60));
    let object = spec();
    let upload = upload_stream_with(&fake, &object, rx, &policy, TEST_LIMITS);
    let outcome = tokio::time::timeout(Duration::from_millis(100), upload).await;
    assert!(outcome.is_err(), "the upload should still be running");
    producer.abort();
    for _ in 0..100 {
        if fake.count("abort") == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(fake.count("abort"), 1);
    assert_eq!(fake.open_uploads(), 0);
}

#[tokio::test]
async fn put_object_stores_and_verifies_a_body_in_memory() {
    let fake = Fake::default();
    let mut object = spec();
    object.checksum = ChecksumKind::Sha256;
    let receipt = put_object(
        &fake,
        &object,
        Bytes::from_static(b"manifest"),
        &policy(Duration::from_secs(5)),
    )
    .await
    .unwrap();
    assert_eq!(receipt.parts, 1);
    assert_eq!(receipt.sha256_hex, sha256_hex(b"manifest"));
    assert_eq!(
        receipt.s3_checksum,
        crate::upload::checksum::base64(&Sha256::digest(b"manifest"))
    );
}
