//! The upload library against the emulator's S3: streamed multipart with checksums S3
//! verifies, an S3 outage ridden out, failures that abort, and nothing left behind.
//!
//! Checksums are recomputed here independently (a bitwise CRC-32C, `sha2`, a small base64),
//! not with the library's own code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::config::interceptors::{
    BeforeTransmitInterceptorContextMut, BeforeTransmitInterceptorContextRef,
};
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::BoxError;
use aws_sdk_s3::types::{ChecksumMode, ServerSideEncryption as SdkSse};
use bytes::Bytes;
use lifeguard_agent::upload::{
    ArchiveStore, ChecksumKind, ObjectSpec, PartWriter, S3Store, ServerSideEncryption, UploadError,
    UploadPolicy, UploadReceipt, part_channel,
};
use lifeguard_e2e::{ACCOUNT, Clients, Emulator};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc::{Receiver, Sender};
use tokio::time::Instant;

const MIB: usize = 1024 * 1024;
const BUCKET: &str = "archives";

// ----- independent checksums -----

fn crc32c(data: &[u8]) -> u32 {
    // Table-driven CRC-32C (reflected polynomial 0x82F63B78).
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut table = [0u32; 256];
        for (i, entry) in table.iter_mut().enumerate() {
            let mut crc = i as u32;
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0x82f6_3b78
                } else {
                    crc >> 1
                };
            }
            *entry = crc;
        }
        table
    });
    let mut crc = !0u32;
    for &byte in data {
        crc = table[((crc ^ u32::from(byte)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let mut n = 0u32;
        for (i, &b) in chunk.iter().enumerate() {
            n |= u32::from(b) << (16 - 8 * i);
        }
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn raw_checksum(kind: ChecksumKind, data: &[u8]) -> Vec<u8> {
    match kind {
        ChecksumKind::Crc32c => crc32c(data).to_be_bytes().to_vec(),
        ChecksumKind::Sha256 => Sha256::digest(data).to_vec(),
    }
}

fn full_checksum(kind: ChecksumKind, data: &[u8]) -> String {
    base64(&raw_checksum(kind, data))
}

fn composite_checksum(kind: ChecksumKind, data: &[u8], part_bytes: usize) -> String {
    let parts: Vec<&[u8]> = data.chunks(part_bytes).collect();
    let joined: Vec<u8> = parts.iter().flat_map(|p| raw_checksum(kind, p)).collect();
    format!("{}-{}", base64(&raw_checksum(kind, &joined)), parts.len())
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

// ----- set-up -----

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut data = vec![0u8; len];
    rng.fill(&mut data);
    data
}

async fn start() -> (Emulator, Clients) {
    let emulator = Emulator::start().await;
    let clients = emulator.clients().await;
    clients
        .s3
        .create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap();
    (emulator, clients)
}

fn spec(key: &str, checksum: ChecksumKind) -> ObjectSpec {
    ObjectSpec {
        bucket: BUCKET.into(),
        key: key.into(),
        metadata: BTreeMap::from([
            ("instance-id".to_string(), "i-0123456789abcdef0".to_string()),
            ("reason".to_string(), "scale-in".to_string()),
        ]),
        content_type: "application/gzip".into(),
        sse: ServerSideEncryption::S3,
        expected_bucket_owner: None,
        checksum,
    }
}

fn policy(deadline_in: Duration) -> UploadPolicy {
    UploadPolicy {
        concurrency: 2,
        deadline: Instant::now() + deadline_in,
        retry_base: Duration::from_millis(100),
        retry_max: Duration::from_millis(800),
        attempt_timeout: Duration::from_secs(10),
        abort_grace: Duration::from_secs(5),
    }
}

/// The archiver's side: writes `data` through a [`PartWriter`] on a blocking thread in odd
/// chunks; with `fail_after`, gives up (drops the writer) after that many bytes.
fn archiver(
    data: Vec<u8>,
    part_bytes: usize,
    fail_after: Option<usize>,
) -> (
    Receiver<Bytes>,
    tokio::task::JoinHandle<std::io::Result<u64>>,
) {
    let (tx, rx) = part_channel(1);
    let handle = tokio::task::spawn_blocking(move || {
        let mut writer = PartWriter::new(tx, part_bytes);
        for (i, chunk) in data.chunks(100_003).enumerate() {
            if fail_after.is_some_and(|limit| i * 100_003 >= limit) {
                return Err(std::io::Error::other("a log file could not be read"));
            }
            writer.write_all(chunk)?;
        }
        writer.finish()
    });
    (rx, handle)
}

async fn get_object(clients: &Clients, key: &str) -> Vec<u8> {
    let output = clients
        .s3
        .get_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .unwrap();
    output.body.collect().await.unwrap().into_bytes().to_vec()
}

async fn open_uploads(clients: &Clients) -> usize {
    clients
        .s3
        .list_multipart_uploads()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap()
        .uploads()
        .len()
}

fn header<'a>(call: &'a Value, name: &str) -> Option<&'a str> {
    call["params"]["headers"][name].as_str()
}

async fn successful(emulator: &Emulator, action: &str) -> Vec<Value> {
    emulator
        .calls("s3", action, None)
        .await
        .into_iter()
        .filter(|c| {
            c["status"]
                .as_u64()
                .is_some_and(|s| (200..300).contains(&s))
        })
        .collect()
}

fn assert_receipt(receipt: &UploadReceipt, key: &str, data: &[u8], parts: u32) {
    assert_eq!(receipt.bucket, BUCKET);
    assert_eq!(receipt.key, key);
    assert_eq!(receipt.bytes, data.len() as u64);
    assert_eq!(receipt.sha256_hex, sha256_hex(data));
    assert_eq!(receipt.parts, parts);
    assert!(receipt.etag.is_some());
}

// ----- (1) a small stream is one PutObject -----

#[tokio::test]
async fn a_small_stream_is_one_put_object() {
    let (emulator, clients) = start().await;
    let store = S3Store::new(clients.s3.clone());
    let body = data(300 * 1024, 1);
    let key = "lifeguard/web/i-1/small.tar.gz";
    let (rx, archiver) = archiver(body.clone(), 8 * MIB, None);

    let receipt = store
        .upload_stream(
            &spec(key, ChecksumKind::Crc32c),
            rx,
            &policy(Duration::from_secs(20)),
        )
        .await
        .unwrap();

    assert_eq!(archiver.await.unwrap().unwrap(), body.len() as u64);
    assert_receipt(&receipt, key, &body, 1);
    assert_eq!(
        receipt.s3_checksum,
        full_checksum(ChecksumKind::Crc32c, &body)
    );
    assert_eq!(get_object(&clients, key).await, body);

    let puts = successful(&emulator, "PutObject").await;
    assert_eq!(puts.len(), 1);
    assert_eq!(
        header(&puts[0], "x-amz-checksum-crc32c"),
        Some(full_checksum(ChecksumKind::Crc32c, &body).as_str())
    );
    assert_eq!(
        header(&puts[0], "x-amz-server-side-encryption"),
        Some("AES256")
    );
    assert!(
        emulator
            .calls("s3", "CreateMultipartUpload", None)
            .await
            .is_empty()
    );

    let head = clients
        .s3
        .head_object()
        .bucket(BUCKET)
        .key(key)
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.checksum_crc32_c(),
        Some(full_checksum(ChecksumKind::Crc32c, &body).as_str())
    );
    assert_eq!(head.content_type(), Some("application/gzip"));
}

// ----- (2) multipart, CRC32C and SHA-256 -----

async fn multipart_with(kind: ChecksumKind, header_name: &str) {
    let (emulator, clients) = start().await;
    let store = S3Store::new(clients.s3.clone());
    let body = data(21 * MIB + 12_345, 2);
    let part_bytes = 5 * MIB;
    let key = "lifeguard/web/i-2/multi.tar.gz";
    let (rx, archiver) = archiver(body.clone(), part_bytes, None);

    let receipt = store
        .upload_stream(&spec(key, kind), rx, &policy(Duration::from_secs(25)))
        .await
        .unwrap();

    archiver.await.unwrap().unwrap();
    assert_receipt(&receipt, key, &body, 5);
    let composite = composite_checksum(kind, &body, part_bytes);
    assert_eq!(receipt.s3_checksum, composite);
    assert_eq!(get_object(&clients, key).await, body);

    // Create asked for the algorithm; every part carried its own checksum.
    let created = successful(&emulator, "CreateMultipartUpload").await;
    assert_eq!(created.len(), 1);
    let algorithm = match kind {
        ChecksumKind::Crc32c => "CRC32C",
        ChecksumKind::Sha256 => "SHA256",
    };
    assert_eq!(
        header(&created[0], "x-amz-checksum-algorithm"),
        Some(algorithm)
    );
    assert_eq!(
        header(&created[0], "x-amz-server-side-encryption"),
        Some("AES256")
    );
    let mut parts = successful(&emulator, "UploadPart").await;
    parts.sort_by_key(|c| {
        c["params"]["query"]["partNumber"]
            .as_str()
            .unwrap()
            .parse::<u32>()
            .unwrap()
    });
    assert_eq!(parts.len(), 5);
    for (call, chunk) in parts.iter().zip(body.chunks(part_bytes)) {
        assert_eq!(
            header(call, header_name),
            Some(full_checksum(kind, chunk).as_str()),
            "{call}"
        );
    }
    assert_eq!(
        successful(&emulator, "CompleteMultipartUpload").await.len(),
        1
    );

    // S3's own composite checksum, read back. GetObject gives it in full (`base64-N`); the
    // emulator's HeadObject leaves out the `-N`, so only the digest is compared there.
    let get = clients
        .s3
        .get_object()
        .bucket(BUCKET)
        .key(key)
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    let reported = match kind {
        ChecksumKind::Crc32c => get.checksum_crc32_c(),
        ChecksumKind::Sha256 => get.checksum_sha256(),
    };
    assert_eq!(reported, Some(composite.as_str()));
    let head = clients
        .s3
        .head_object()
        .bucket(BUCKET)
        .key(key)
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    let reported = match kind {
        ChecksumKind::Crc32c => head.checksum_crc32_c(),
        ChecksumKind::Sha256 => head.checksum_sha256(),
    }
    .unwrap();
    assert!(
        composite == reported || composite.starts_with(&format!("{reported}-")),
        "HeadObject reports {reported}, expected {composite}"
    );
    assert_eq!(head.content_length(), Some(body.len() as i64));
    assert_eq!(head.content_type(), Some("application/gzip"));
    let metadata = head.metadata().unwrap();
    assert_eq!(metadata["instance-id"], "i-0123456789abcdef0");
    assert_eq!(metadata["reason"], "scale-in");
    assert_eq!(open_uploads(&clients).await, 0);
}

#[tokio::test]
async fn multipart_with_crc32c_is_verified() {
    multipart_with(ChecksumKind::Crc32c, "x-amz-checksum-crc32c").await;
}

#[tokio::test]
async fn multipart_with_sha256_is_verified() {
    multipart_with(ChecksumKind::Sha256, "x-amz-checksum-sha256").await;
}

// ----- (3) S3 down for a while mid-upload -----

async fn wait_for_uploaded_parts(emulator: &Emulator, count: usize) {
    lifeguard_e2e::eventually("parts uploaded", Duration::from_secs(15), || async {
        (successful(emulator, "UploadPart").await.len() >= count).then_some(())
    })
    .await;
}

async fn send_parts(
    tx: &Sender<Bytes>,
    body: &[u8],
    part_bytes: usize,
    range: std::ops::Range<usize>,
) {
    for chunk in body.chunks(part_bytes).skip(range.start).take(range.len()) {
        tx.send(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
}

#[tokio::test]
async fn an_s3_outage_mid_upload_is_ridden_out() {
    let (emulator, clients) = start().await;
    let store = S3Store::new(clients.s3.clone());
    let body = data(21 * MIB, 3);
    let part_bytes = 5 * MIB;
    let key = "lifeguard/web/i-3/outage.tar.gz";
    let (tx, rx) = part_channel(1);
    let object = spec(key, ChecksumKind::Crc32c);
    let policy = policy(Duration::from_secs(25));
    let upload = tokio::spawn(async move { store.upload_stream(&object, rx, &policy).await });

    // Two parts start the multipart upload; once one is in, S3 goes down for 3 s.
    send_parts(&tx, &body, part_bytes, 0..2).await;
    wait_for_uploaded_parts(&emulator, 1).await;
    let fault = emulator
        .control_post(
            "faults",
            json!({"service": "s3", "mode": "unavailable", "secs": 3}),
        )
        .await;
    assert_eq!(fault["mode"], "unavailable");
    let outage = Instant::now();
    send_parts(&tx, &body, part_bytes, 2..5).await;
    tx.send(Bytes::new()).await.unwrap();
    drop(tx);

    let receipt = upload.await.unwrap().unwrap();
    assert!(
        outage.elapsed() >= Duration::from_secs(2),
        "finished during the outage?"
    );
    assert_receipt(&receipt, key, &body, 5);
    assert_eq!(
        receipt.s3_checksum,
        composite_checksum(ChecksumKind::Crc32c, &body, part_bytes)
    );
    assert_eq!(get_object(&clients, key).await, body);
    assert_eq!(open_uploads(&clients).await, 0);
    // The outage was felt: calls were refused, then retried.
    let refused: Vec<Value> = emulator
        .calls("s3", "", None)
        .await
        .into_iter()
        .filter(|c| c["error_code"] == "ServiceUnavailable")
        .collect();
    assert!(!refused.is_empty(), "no call hit the outage");
    assert!(
        emulator
            .calls("s3", "AbortMultipartUpload", None)
            .await
            .is_empty()
    );
}

// ----- (4) deadline and permanent failures abort -----

#[tokio::test]
async fn the_deadline_aborts_the_upload() {
    let (emulator, clients) = start().await;
    let store = S3Store::new(clients.s3.clone());
    emulator
        .control_post(
            "faults",
            json!({"service": "s3", "mode": "unavailable", "secs": 120, "action": "UploadPart"}),
        )
        .await;
    let body = data(11 * MIB, 4);
    let key = "lifeguard/web/i-4/deadline.tar.gz";
    let (rx, archiver) = archiver(body, 5 * MIB, None);
    let started = Instant::now();

    let error = store
        .upload_stream(
            &spec(key, ChecksumKind::Crc32c),
            rx,
            &policy(Duration::from_secs(4)),
        )
        .await
        .unwrap_err();

    assert!(error.is_deadline(), "{error}");
    assert!(error.to_string().contains("ServiceUnavailable"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // The archiver sees a broken pipe once the upload stops reading.
    let _ = archiver.await.unwrap();
    assert_eq!(successful(&emulator, "AbortMultipartUpload").await.len(), 1);
    assert!(
        emulator
            .calls("s3", "CompleteMultipartUpload", None)
            .await
            .is_empty()
    );
    assert_eq!(open_uploads(&clients).await, 0);
}

/// Sends part 3 of every upload to a bucket that does not exist: S3 answers 404 NoSuchBucket,
/// a permanent failure in the middle of the upload.
#[derive(Debug)]
struct LoseBucketAtPart3;

impl Intercept for LoseBucketAtPart3 {
    fn name(&self) -> &'static str {
        "LoseBucketAtPart3"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request_mut();
        if request.method() == "PUT" && request.uri().contains("partNumber=3") {
            let uri = request
                .uri()
                .replacen(&format!("/{BUCKET}/"), "/no-such-bucket/", 1);
            request.set_uri(uri)?;
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_permanent_failure_mid_upload_aborts_at_once() {
    let (emulator, clients) = start().await;
    let client = aws_sdk_s3::Client::from_conf(
        clients
            .s3
            .config()
            .to_builder()
            .interceptor(LoseBucketAtPart3)
            .build(),
    );
    let store = S3Store::new(client);
    let body = data(16 * MIB, 5);
    let key = "lifeguard/web/i-4/permanent.tar.gz";
    let (rx, archiver) = archiver(body, 5 * MIB, None);
    let started = Instant::now();

    let error = store
        .upload_stream(
            &spec(key, ChecksumKind::Crc32c),
            rx,
            &policy(Duration::from_secs(20)),
        )
        .await
        .unwrap_err();

    assert!(
        matches!(&error, UploadError::UploadPart { part: 3, detail, .. } if detail.contains("NoSuchBucket")),
        "{error}"
    );
    // Not retried until the deadline.
    assert!(started.elapsed() < Duration::from_secs(8));
    let _ = archiver.await.unwrap();
    let lost = emulator
        .calls("s3", "UploadPart", None)
        .await
        .into_iter()
        .filter(|c| c["error_code"] == "NoSuchBucket")
        .count();
    assert_eq!(lost, 1, "a permanent failure is not retried");
    assert_eq!(successful(&emulator, "AbortMultipartUpload").await.len(), 1);
    assert_eq!(open_uploads(&clients).await, 0);
}

#[tokio::test]
async fn a_missing_bucket_fails_without_retrying() {
    let (emulator, clients) = start().await;
    let store = S3Store::new(clients.s3.clone());
    let mut object = spec("k.tar.gz", ChecksumKind::Crc32c);
    object.bucket = "no-such-bucket".into();
    let (rx, archiver) = archiver(data(11 * MIB, 6), 5 * MIB, None);

    let error = store
        .upload_stream(&object, rx, &policy(Duration::from_secs(20)))
        .await
        .unwrap_err();

    assert!(
        matches!(&error, UploadError::CreateMultipartUpload { detail, .. } if detail.contains("NoSuchBucket")),
        "{error}"
    );
    let _ = archiver.await.unwrap();
    assert_eq!(
        emulator
            .calls("s3", "CreateMultipartUpload", None)
            .await
            .len(),
        1
    );
}

// ----- (5) the archiver gives up mid-stream -----

#[tokio::test]
async fn an_archiver_failure_mid_stream_aborts_the_upload() {
    let (emulator, clients) = start().await;
    let store = S3Store::new(clients.s3.clone());
    let body = data(20 * MIB, 7);
    let key = "lifeguard/web/i-5/aborted.tar.gz";
    // Three full parts go out, then the archiver fails and drops its writer.
    let (rx, archiver) = archiver(body, 5 * MIB, Some(16 * MIB));

    let error = store
        .upload_stream(
            &spec(key, ChecksumKind::Crc32c),
            rx,
            &policy(Duration::from_secs(20)),
        )
        .await
        .unwrap_err();

    assert!(
        matches!(&error, UploadError::StreamAborted { upload_id: Some(_), bytes_received, .. }
            if *bytes_received == 15 * MIB as u64),
        "{error}"
    );
    assert!(archiver.await.unwrap().is_err());
    assert_eq!(successful(&emulator, "AbortMultipartUpload").await.len(), 1);
    assert!(
        emulator
            .calls("s3", "CompleteMultipartUpload", None)
            .await
            .is_empty()
    );
    assert_eq!(open_uploads(&clients).await, 0);
    let head = clients
        .s3
        .head_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await;
    assert!(head.is_err(), "no object may exist");
}

// ----- (6) SSE-KMS and ExpectedBucketOwner -----

/// Records the `x-amz-expected-bucket-owner` header of every request (the emulator does not
/// record it).
#[derive(Debug, Clone, Default)]
struct OwnerHeaders(Arc<Mutex<Vec<SeenRequest>>>);

/// A request (method and URI) and the owner it named.
type SeenRequest = (String, Option<String>);

impl Intercept for OwnerHeaders {
    fn name(&self) -> &'static str {
        "OwnerHeaders"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request();
        let owner = request
            .headers()
            .get("x-amz-expected-bucket-owner")
            .map(str::to_string);
        self.0
            .lock()
            .unwrap()
            .push((format!("{} {}", request.method(), request.uri()), owner));
        Ok(())
    }
}

#[tokio::test]
async fn sse_kms_and_expected_bucket_owner_are_sent() {
    let (emulator, clients) = start().await;
    let owners = OwnerHeaders::default();
    let client = aws_sdk_s3::Client::from_conf(
        clients
            .s3
            .config()
            .to_builder()
            .interceptor(owners.clone())
            .build(),
    );
    let store = S3Store::new(client);
    let key_arn =
        format!("arn:aws:kms:us-east-1:{ACCOUNT}:key/0a1b2c3d-4e5f-6789-abcd-ef0123456789");
    let mut object = spec("lifeguard/web/i-6/kms.tar.gz", ChecksumKind::Sha256);
    object.sse = ServerSideEncryption::Kms {
        key_id: Some(key_arn.clone()),
    };
    object.expected_bucket_owner = Some(ACCOUNT.to_string());
    let body = data(11 * MIB, 8);
    let (rx, archiver) = archiver(body.clone(), 5 * MIB, None);

    let receipt = store
        .upload_stream(&object, rx, &policy(Duration::from_secs(20)))
        .await
        .unwrap();
    archiver.await.unwrap().unwrap();
    assert_receipt(&receipt, &object.key, &body, 3);

    let created = successful(&emulator, "CreateMultipartUpload").await;
    assert_eq!(
        header(&created[0], "x-amz-server-side-encryption"),
        Some("aws:kms")
    );
    assert_eq!(
        header(&created[0], "x-amz-server-side-encryption-aws-kms-key-id"),
        Some(key_arn.as_str())
    );
    let head = clients
        .s3
        .head_object()
        .bucket(BUCKET)
        .key(&object.key)
        .send()
        .await
        .unwrap();
    assert_eq!(head.server_side_encryption(), Some(&SdkSse::AwsKms));
    assert_eq!(head.ssekms_key_id(), Some(key_arn.as_str()));

    // Every call the store made carried the owner.
    let seen = owners.0.lock().unwrap().clone();
    assert!(seen.len() >= 5, "{seen:?}");
    for (request, owner) in &seen {
        assert_eq!(owner.as_deref(), Some(ACCOUNT), "{request}");
    }

    // A single PutObject, SSE-KMS with the account's default key.
    let mut small = object.clone();
    small.key = "lifeguard/web/i-6/small.tar.gz".into();
    small.sse = ServerSideEncryption::Kms { key_id: None };
    let body = data(1000, 9);
    let receipt = store
        .put_object(
            &small,
            Bytes::from(body.clone()),
            &policy(Duration::from_secs(10)),
        )
        .await
        .unwrap();
    assert_eq!(
        receipt.s3_checksum,
        full_checksum(ChecksumKind::Sha256, &body)
    );
    let puts = successful(&emulator, "PutObject").await;
    assert_eq!(
        header(&puts[0], "x-amz-server-side-encryption"),
        Some("aws:kms")
    );
    assert_eq!(
        header(&puts[0], "x-amz-server-side-encryption-aws-kms-key-id"),
        None
    );
    let seen = owners.0.lock().unwrap().clone();
    assert!(
        seen.iter()
            .all(|(_, owner)| owner.as_deref() == Some(ACCOUNT))
    );
}
