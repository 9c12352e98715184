//! The drill's check of an instance's archives: every archive under the instance's prefix is
//! downloaded once and held against what S3 and the agent recorded of it.
//!
//! # What is checked
//!
//! For every object under the prefix that is not a `.manifest.json` sidecar:
//!
//! - no multipart upload is still open under its key (one `ListMultipartUploads` for the whole
//!   prefix; an open upload for a key that has no object at all is reported as an archive that
//!   was never completed);
//! - the checksum S3 stores for it is recomputed over the downloaded bytes and compared. CRC32,
//!   CRC32C, CRC64NVME, SHA-256 and SHA-512 are recomputed, of either type: `FULL_OBJECT` (what a
//!   single `PutObject` stores, the agent's small archives included, and what a CRC64NVME
//!   multipart upload stores) or `COMPOSITE` (`base64-N`, the checksum of the parts' checksums:
//!   what the agent asks for on its multipart uploads). A composite checksum needs the part
//!   boundaries: a multipart object (its ETag ends in `-N`) has each part's size read with
//!   `HeadObject` and `PartNumber`, a few at a time, before the download. No checksum, or one
//!   of an algorithm not recomputed here (SHA-1, MD5, xxHash), is a problem: the bytes are
//!   unverified;
//! - the SHA-256 of the bytes equals the sidecar's `archive-sha256` metadata, when it has one;
//! - `{key}.manifest.json` exists, is at most [`MAX_MANIFEST_BYTES`], is a JSON object, matches
//!   its `manifest-sha256` metadata, and is byte for byte the archive's own `MANIFEST.json`;
//! - the archive decompresses (gzip, one member or many; zstd; or a plain tar, told by its first
//!   bytes, and the key's extension agrees) and reads as a tar to its end, `MANIFEST.json`
//!   included;
//! - every file, extra and symbolic link the manifest lists is an entry of the tar: files and
//!   extras with the size and SHA-256 the manifest gives them, links as links to the same
//!   target. Names come from `path_base64` when the manifest has it (names that are not UTF-8),
//!   and a file's entry is its path without the leading `/`.
//!
//! When the sidecar is missing or unreadable, the archive's own `MANIFEST.json` stands in for
//! it (the problem is still reported), so that the drill keeps the drain's times and the file
//! check. A sidecar whose archive is gone is reported under the archive's key.
//!
//! # Streaming
//!
//! An archive is never held whole, neither in memory nor on disk. `GetObject` is sent with
//! checksum mode, so the answer carries the stored checksum and its type along with the bytes
//! (and with `If-Match` on the listed ETag, so the bytes are those of the object listed). A task
//! reads the body and hands its chunks over a bounded channel ([`CHANNEL_CHUNKS`] chunks) to a
//! blocking thread, which in one pass hashes the bytes (S3's checksum, per part when composite,
//! and SHA-256), decompresses them and walks the tar, hashing each entry's contents. Memory is
//! the channel, the decompressor's window and the listing (a name, a size and a digest per
//! entry; the agent caps the number of files). Downloading to a temporary file first would have
//! cost the controller's container the archive's size in disk (archives can be gigabytes) and a
//! second read of it; downloading twice (once to hash, once to list) would double the
//! transfer.
//!
//! The SDK checks a full-object checksum itself while the body streams in, and reports a
//! mismatch as an error after the last byte: such an error, once all the bytes announced have
//! come, is taken as the end of the body, and the comparison made here reports the mismatch. A
//! download that fails midway, or stalls for [`STALL`], fails the verification with a transient
//! [`FleetError`] naming the key, rather than judging part of the bytes; so do S3 calls that
//! fail. Listed objects that vanish or change before they are read are problems of their
//! check, not errors.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufReader, Read};
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ChecksumMode;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde_json::Value;
use sha2::{Digest as _, Sha256, Sha512};
use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::fleet::{FleetError, fleet_error};

/// The sidecar beside each archive: `{key}.manifest.json`.
pub const MANIFEST_SUFFIX: &str = ".manifest.json";

/// The manifest's name inside the archive (its last entry).
const MANIFEST_ENTRY: &[u8] = b"MANIFEST.json";

/// How the controller names the archives it takes through Run Command (no manifest).
const AGENTLESS_SUFFIX: &str = "-agentless.tar.gz";

/// Largest manifest read, beside the archive or inside it. The agent's manifest is about 380
/// bytes a file: some 19 MB at its default cap of 50,000 files.
pub const MAX_MANIFEST_BYTES: u64 = 256 * 1024 * 1024;

/// Problems about single entries listed for one archive; the rest are counted in one more.
const MAX_ENTRY_PROBLEMS: usize = 20;

/// Body chunks in flight between the download and the blocking reader.
const CHANNEL_CHUNKS: usize = 16;

/// `HeadObject` calls in flight when reading the part sizes of a multipart object.
const PART_HEADS_IN_FLIGHT: usize = 8;

/// How long a download may go without a byte before it is given up.
const STALL: Duration = Duration::from_secs(120);

/// Read buffer of the blocking reader, before decompression.
const READ_BUFFER: usize = 256 * 1024;

/// S3's largest part number.
const MAX_PARTS: u32 = 10_000;

/// One archive of an instance as the drill found and checked it.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchiveCheck {
    pub key: String,
    /// The object's size (0 for an upload that was never completed).
    pub bytes: u64,
    /// S3's LastModified of the archive object (the upload's end); `None` when there is no
    /// object (an upload never completed, or only the manifest stored).
    pub uploaded_at: Option<OffsetDateTime>,
    /// The manifest: the sidecar when it was found and parsed, otherwise the archive's own
    /// `MANIFEST.json` when that could be read.
    pub manifest: Option<Value>,
    /// Entries the manifest lists: files, extras (drain steps' outputs) and symbolic links.
    pub files_listed: usize,
    /// Of those, the ones in the tar as listed (same size and SHA-256, links to the same
    /// target). Without any manifest: the regular files the tar holds, `MANIFEST.json` aside.
    pub files_found: usize,
    /// Everything wrong, each a sentence naming the key. Empty when the archive is whole.
    pub problems: Vec<String>,
}

impl ArchiveCheck {
    /// Nothing wrong was found.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    fn without_object(key: &str) -> ArchiveCheck {
        ArchiveCheck {
            key: key.to_string(),
            bytes: 0,
            uploaded_at: None,
            manifest: None,
            files_listed: 0,
            files_found: 0,
            problems: Vec::new(),
        }
    }
}

/// Every archive under `prefix` (e.g. `lifeguard/{asg}/{instance_id}/`; a `/` is added when it
/// does not end with one, so that `i-01234567` does not take in `i-0123456789abcdef0`) in
/// `bucket`, each verified as the module documentation says, sorted by key. No archive at all
/// under the prefix is an empty `Vec` (the caller reports that as a loss).
pub async fn verify_archives(
    s3: &Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<ArchiveCheck>, FleetError> {
    let prefix = if prefix.is_empty() || prefix.ends_with('/') {
        prefix.to_string()
    } else {
        format!("{prefix}/")
    };
    let objects = list_objects(s3, bucket, &prefix).await?;
    let uploads = open_uploads(s3, bucket, &prefix).await?;
    let mut checks: BTreeMap<String, ArchiveCheck> = BTreeMap::new();
    for (key, listed) in &objects {
        if key.ends_with('/') {
            // A folder marker, not an archive.
            continue;
        }
        if let Some(archive) = key.strip_suffix(MANIFEST_SUFFIX) {
            if !objects.contains_key(archive) {
                let mut check = ArchiveCheck::without_object(archive);
                check.problems.push(format!(
                    "{archive}: the archive is missing; only its manifest {key} is stored"
                ));
                if let Sidecar::Read { bytes, .. } = read_sidecar(s3, bucket, key).await? {
                    check.manifest = parse_manifest(&bytes).ok();
                }
                checks.insert(archive.to_string(), check);
            }
            continue;
        }
        let sidecar_key = format!("{key}{MANIFEST_SUFFIX}");
        let has_sidecar = objects.contains_key(&sidecar_key);
        let check = verify_archive(s3, bucket, key, listed, has_sidecar).await?;
        checks.insert(key.clone(), check);
    }
    for upload in &uploads {
        let check = checks
            .entry(upload.key.clone())
            .or_insert_with(|| ArchiveCheck::without_object(&upload.key));
        let started = upload
            .initiated
            .map(|at| format!(", started {}", rfc3339(at)))
            .unwrap_or_default();
        check.problems.push(if objects.contains_key(&upload.key) {
            format!(
                "{}: a multipart upload ({}{started}) is still open under this key: a writer \
                 neither completed nor aborted it",
                upload.key, upload.upload_id
            )
        } else {
            format!(
                "{}: the archive was never completed: a multipart upload ({}{started}) is still \
                 open under this key and no object is stored",
                upload.key, upload.upload_id
            )
        });
    }
    Ok(checks.into_values().collect())
}

/// An object as `ListObjectsV2` shows it.
#[derive(Debug, Clone)]
struct Listed {
    size: u64,
    etag: Option<String>,
    last_modified: Option<OffsetDateTime>,
}

/// A multipart upload still open.
#[derive(Debug, Clone)]
struct OpenUpload {
    key: String,
    upload_id: String,
    initiated: Option<OffsetDateTime>,
}

fn subject(bucket: &str, key: &str) -> String {
    format!("s3://{bucket}/{key}")
}

fn offset_time(at: &aws_smithy_types::DateTime) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(at.as_nanos()).ok()
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| format!("@{}", at.unix_timestamp()))
}

async fn list_objects(
    s3: &Client,
    bucket: &str,
    prefix: &str,
) -> Result<BTreeMap<String, Listed>, FleetError> {
    let mut objects = BTreeMap::new();
    let mut token: Option<String> = None;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token.take())
            .send()
            .await
            .map_err(|e| fleet_error("ListObjectsV2", &subject(bucket, prefix), &e))?;
        for object in page.contents() {
            let Some(key) = object.key() else { continue };
            objects.insert(
                key.to_string(),
                Listed {
                    size: object
                        .size()
                        .and_then(|size| u64::try_from(size).ok())
                        .unwrap_or(0),
                    etag: object.e_tag().map(str::to_string),
                    last_modified: object.last_modified().and_then(offset_time),
                },
            );
        }
        match page.next_continuation_token() {
            Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_string()),
            _ => return Ok(objects),
        }
    }
}

async fn open_uploads(
    s3: &Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<OpenUpload>, FleetError> {
    let mut uploads = Vec::new();
    let mut key_marker: Option<String> = None;
    let mut upload_id_marker: Option<String> = None;
    loop {
        let page = s3
            .list_multipart_uploads()
            .bucket(bucket)
            .prefix(prefix)
            .set_key_marker(key_marker.take())
            .set_upload_id_marker(upload_id_marker.take())
            .send()
            .await
            .map_err(|e| fleet_error("ListMultipartUploads", &subject(bucket, prefix), &e))?;
        uploads.extend(page.uploads().iter().filter_map(|upload| {
            Some(OpenUpload {
                key: upload.key()?.to_string(),
                upload_id: upload.upload_id().unwrap_or("no id").to_string(),
                initiated: upload.initiated().and_then(offset_time),
            })
        }));
        if page.is_truncated() != Some(true) {
            return Ok(uploads);
        }
        key_marker = page.next_key_marker().map(str::to_string);
        upload_id_marker = page.next_upload_id_marker().map(str::to_string);
        if key_marker.is_none() && upload_id_marker.is_none() {
            return Ok(uploads);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One archive
// ---------------------------------------------------------------------------------------------

async fn verify_archive(
    s3: &Client,
    bucket: &str,
    key: &str,
    listed: &Listed,
    has_sidecar: bool,
) -> Result<ArchiveCheck, FleetError> {
    let sidecar_key = format!("{key}{MANIFEST_SUFFIX}");
    let mut check = ArchiveCheck::without_object(key);
    check.bytes = listed.size;
    check.uploaded_at = listed.last_modified;

    // The manifest beside the archive.
    let sidecar = if has_sidecar {
        read_sidecar(s3, bucket, &sidecar_key).await?
    } else {
        Sidecar::Missing
    };
    let mut sidecar_sha256 = None;
    let mut archive_sha256 = None;
    match sidecar {
        Sidecar::Missing if key.ends_with(AGENTLESS_SUFFIX) => check.problems.push(format!(
            "{key}: an agentless archive (taken through Run Command, not by the agent): it has \
             no manifest to check its contents against"
        )),
        Sidecar::Missing => check
            .problems
            .push(format!("{key}: its manifest {sidecar_key} is missing")),
        Sidecar::Unreadable(why) => check.problems.push(format!(
            "{key}: its manifest {sidecar_key} is unreadable: {why}"
        )),
        Sidecar::Read { bytes, metadata } => {
            let digest = sha256_hex(&bytes);
            if let Some(recorded) = metadata.get("manifest-sha256")
                && !recorded.eq_ignore_ascii_case(&digest)
            {
                check.problems.push(format!(
                    "{key}: its manifest {sidecar_key} has SHA-256 {digest}, not the {recorded} \
                     recorded in its metadata"
                ));
            }
            match parse_manifest(&bytes) {
                Ok(manifest) => check.manifest = Some(manifest),
                Err(why) => check.problems.push(format!(
                    "{key}: its manifest {sidecar_key} is unreadable: {why}"
                )),
            }
            sidecar_sha256 = Some(digest);
            archive_sha256 = metadata.get("archive-sha256").cloned();
        }
    }

    // The part boundaries, for a composite checksum.
    let parts = match listed.etag.as_deref().and_then(etag_parts) {
        Some(count) => Some(part_sizes(s3, bucket, key, count).await?),
        None => None,
    };

    let Downloaded {
        bytes,
        stored,
        plan_problem,
        scanned,
        sdk_error,
    } = match download(s3, bucket, key, listed.etag.as_deref(), parts).await? {
        Download::Read(downloaded) => *downloaded,
        Download::Gone => {
            check.problems.push(format!(
                "{key}: the archive was deleted while it was being verified"
            ));
            return Ok(check);
        }
        Download::Changed => {
            check.problems.push(format!(
                "{key}: the archive was replaced while it was being verified (its ETag \
                     changed); verify it again"
            ));
            return Ok(check);
        }
    };
    check.bytes = bytes;

    // S3's checksum.
    if let Some(why) = plan_problem {
        check.problems.push(format!(
            "{key}: its composite checksum cannot be recomputed: {why}"
        ));
    }
    let checksum = checksum_problem(key, &stored, scanned.s3.as_ref());
    if checksum.is_none()
        && let Some(message) = &sdk_error
    {
        // The SDK checked another checksum than the one recomputed here, and it failed.
        check.problems.push(format!(
            "{key}: the download's own checksum check failed: {message}"
        ));
    }
    check.problems.extend(checksum);
    if let Some(recorded) = &archive_sha256
        && !recorded.eq_ignore_ascii_case(&scanned.sha256_hex)
    {
        check.problems.push(format!(
            "{key}: its bytes have SHA-256 {}, not the {recorded} its manifest's metadata \
             records (archive-sha256)",
            scanned.sha256_hex
        ));
    }

    // The tar, and the manifest inside it.
    check
        .problems
        .extend(format_problem(key, scanned.compression));
    let listing = &scanned.listing;
    if let Some(error) = &listing.error {
        check.problems.push(format!(
            "{key}: the archive does not read as a {} tar after {} entries: {error}",
            scanned.compression.name(),
            listing.entries.len()
        ));
    }
    match (&listing.manifest_sha256, &sidecar_sha256) {
        // The controller's agentless archive is a plain `tar czf`, without a manifest.
        (None, _) if listing.error.is_none() && !key.ends_with(AGENTLESS_SUFFIX) => {
            check.problems.push(format!(
                "{key}: the archive holds no MANIFEST.json (the agent writes it last): it was cut \
             short or not written by the agent"
            ));
        }
        (Some(inside), Some(beside)) if inside != beside => check.problems.push(format!(
            "{key}: its manifest {sidecar_key} differs from the MANIFEST.json inside the archive"
        )),
        _ => {}
    }
    if check.manifest.is_none()
        && let Some(inside) = &listing.manifest
        && let Ok(manifest) = parse_manifest(inside)
    {
        check.manifest = Some(manifest);
    }
    match &check.manifest {
        Some(manifest) => {
            let comparison = compare(key, manifest, listing);
            check.files_listed = comparison.listed;
            check.files_found = comparison.found;
            check.problems.extend(comparison.problems);
        }
        None => {
            check.files_found = listing
                .entries
                .iter()
                .filter(|(name, entry)| {
                    entry.kind == EntryKind::File && name.as_slice() != MANIFEST_ENTRY
                })
                .count();
        }
    }
    Ok(check)
}

/// The manifest beside an archive, as read.
enum Sidecar {
    Missing,
    Unreadable(String),
    Read {
        bytes: Vec<u8>,
        metadata: HashMap<String, String>,
    },
}

async fn read_sidecar(s3: &Client, bucket: &str, key: &str) -> Result<Sidecar, FleetError> {
    let answer = match s3.get_object().bucket(bucket).key(key).send().await {
        Ok(answer) => answer,
        Err(error) if error.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
            return Ok(Sidecar::Missing);
        }
        Err(error) => return Err(fleet_error("GetObject", &subject(bucket, key), &error)),
    };
    let length = answer
        .content_length()
        .and_then(|length| u64::try_from(length).ok());
    if let Some(length) = length
        && length > MAX_MANIFEST_BYTES
    {
        return Ok(Sidecar::Unreadable(format!(
            "{length} bytes, more than the {MAX_MANIFEST_BYTES} read"
        )));
    }
    let metadata = answer.metadata().cloned().unwrap_or_default();
    let mut body = answer.body;
    let mut bytes = Vec::new();
    loop {
        match next_chunk(&mut body, bytes.len() as u64).await {
            Ok(Some(chunk)) => {
                if (bytes.len() + chunk.len()) as u64 > MAX_MANIFEST_BYTES {
                    return Ok(Sidecar::Unreadable(format!(
                        "more than the {MAX_MANIFEST_BYTES} bytes read"
                    )));
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(Sidecar::Read { bytes, metadata }),
            // The SDK's checksum check fails after the last byte.
            Err(message) if length == Some(bytes.len() as u64) => {
                return Ok(Sidecar::Unreadable(format!(
                    "its bytes do not match its S3 checksum ({message})"
                )));
            }
            Err(message) => {
                return Err(FleetError {
                    operation: "GetObject",
                    subject: subject(bucket, key),
                    message,
                    transient: true,
                    code: None,
                });
            }
        }
    }
}

/// The next chunk of a body: `None` at its end, `Err` when it failed or stalled.
async fn next_chunk(body: &mut ByteStream, received: u64) -> Result<Option<Bytes>, String> {
    match tokio::time::timeout(STALL, body.next()).await {
        Err(_) => Err(format!(
            "the download stalled: no data for {} s after {received} bytes",
            STALL.as_secs()
        )),
        Ok(None) => Ok(None),
        Ok(Some(Ok(chunk))) => Ok(Some(chunk)),
        Ok(Some(Err(error))) => Err(format!(
            "the download failed after {received} bytes: {}",
            DisplayErrorContext(&error)
        )),
    }
}

/// The manifest's JSON: an object, as the agent writes it.
pub(crate) fn parse_manifest(bytes: &[u8]) -> Result<Value, String> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(value) if value.is_object() => Ok(value),
        Ok(_) => Err("not a JSON object".to_string()),
        Err(error) => Err(format!("not JSON: {error}")),
    }
}

/// The number of parts of a multipart object, from its ETag (`"<md5 of the parts' md5s>-N"`).
pub(crate) fn etag_parts(etag: &str) -> Option<u32> {
    let (_, count) = etag.trim_matches('"').rsplit_once('-')?;
    count.parse().ok()
}

/// The size of each part of a multipart object, read with `HeadObject` and `PartNumber`;
/// `Err` says why they could not be known.
async fn part_sizes(
    s3: &Client,
    bucket: &str,
    key: &str,
    count: u32,
) -> Result<Result<Vec<u64>, String>, FleetError> {
    if count == 0 || count > MAX_PARTS {
        return Ok(Err(format!("its ETag names {count} parts")));
    }
    let mut sizes: Vec<Option<u64>> = vec![None; count as usize];
    let mut heads = tokio::task::JoinSet::new();
    let mut next = 1u32;
    loop {
        while next <= count && heads.len() < PART_HEADS_IN_FLIGHT {
            let s3 = s3.clone();
            let (bucket, key, number) = (bucket.to_string(), key.to_string(), next);
            heads.spawn(async move {
                let answer = s3
                    .head_object()
                    .bucket(bucket)
                    .key(key)
                    .part_number(i32::try_from(number).unwrap_or(i32::MAX))
                    .send()
                    .await;
                (number, answer)
            });
            next += 1;
        }
        let Some(joined) = heads.join_next().await else {
            break;
        };
        let (number, answer) = joined.map_err(|error| FleetError {
            operation: "HeadObject",
            subject: subject(bucket, key),
            message: format!("reading the part sizes stopped: {error}"),
            transient: false,
            code: None,
        })?;
        match answer {
            Ok(head) => {
                let size = head
                    .content_length()
                    .and_then(|length| u64::try_from(length).ok());
                match (size, sizes.get_mut(number as usize - 1)) {
                    (Some(size), Some(slot)) => *slot = Some(size),
                    _ => return Ok(Err(format!("HeadObject of part {number} gave no length"))),
                }
            }
            Err(error) if error.as_service_error().is_some_and(|e| e.is_not_found()) => {
                return Ok(Err(format!("part {number} of {count} was not found")));
            }
            Err(error) => {
                return Err(fleet_error(
                    "HeadObject",
                    &format!("{} part {number}", subject(bucket, key)),
                    &error,
                ));
            }
        }
    }
    Ok(Ok(sizes.into_iter().flatten().collect()))
}

/// What reading an archive came to.
enum Download {
    /// Deleted since it was listed.
    Gone,
    /// Replaced since it was listed.
    Changed,
    Read(Box<Downloaded>),
}

/// An archive read to its end.
struct Downloaded {
    bytes: u64,
    stored: Stored,
    /// Why the stored composite checksum could not be recomputed.
    plan_problem: Option<String>,
    scanned: Scanned,
    /// The SDK's own checksum check failed after the last byte.
    sdk_error: Option<String>,
}

async fn download(
    s3: &Client,
    bucket: &str,
    key: &str,
    etag: Option<&str>,
    parts: Option<Result<Vec<u64>, String>>,
) -> Result<Download, FleetError> {
    let answer = match s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .set_if_match(etag.map(str::to_string))
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
    {
        Ok(answer) => answer,
        Err(error) if error.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
            return Ok(Download::Gone);
        }
        Err(error)
            if error
                .as_service_error()
                .and_then(|e| e.code())
                .is_some_and(|code| code == "PreconditionFailed")
                || error
                    .raw_response()
                    .is_some_and(|r| r.status().as_u16() == 412) =>
        {
            return Ok(Download::Changed);
        }
        Err(error) => return Err(fleet_error("GetObject", &subject(bucket, key), &error)),
    };
    let stored = stored_checksum(&answer);
    let (plan, plan_problem) = digest_plan(&stored, parts);
    let expected = answer
        .content_length()
        .and_then(|length| u64::try_from(length).ok());

    let (sender, receiver) = mpsc::channel(CHANNEL_CHUNKS);
    let scanning = tokio::task::spawn_blocking(move || scan(ChannelReader::new(receiver), plan));
    let pumped = pump(answer.body, sender, expected).await;
    let scanned = scanning.await.map_err(|error| FleetError {
        operation: "GetObject",
        subject: subject(bucket, key),
        message: format!("reading the archive stopped: {error}"),
        transient: false,
        code: None,
    })?;
    let failed = |message: String| FleetError {
        operation: "GetObject",
        subject: subject(bucket, key),
        message,
        transient: true,
        code: None,
    };
    if let Some(message) = pumped.failure {
        return Err(failed(message));
    }
    let scanned = scanned.map_err(|error| failed(error.to_string()))?;
    Ok(Download::Read(Box::new(Downloaded {
        bytes: scanned.bytes,
        stored,
        plan_problem,
        scanned,
        sdk_error: pumped.sdk_error,
    })))
}

/// How the body's transfer ended.
struct Pumped {
    /// Why it failed, when it did (the reader was told too).
    failure: Option<String>,
    /// The SDK's checksum error after the last byte.
    sdk_error: Option<String>,
}

/// Feeds the body into the channel until it ends, fails, or the reader stops taking it.
async fn pump(
    mut body: ByteStream,
    sender: mpsc::Sender<Result<Bytes, String>>,
    expected: Option<u64>,
) -> Pumped {
    let mut received = 0u64;
    loop {
        match next_chunk(&mut body, received).await {
            Ok(Some(chunk)) => {
                received += chunk.len() as u64;
                if sender.send(Ok(chunk)).await.is_err() {
                    // The reader has stopped; what it returns says why.
                    return Pumped {
                        failure: None,
                        sdk_error: None,
                    };
                }
            }
            Ok(None) => {
                return Pumped {
                    failure: None,
                    sdk_error: None,
                };
            }
            // Every byte announced has come: this is the SDK's checksum check at the end.
            Err(message) if expected == Some(received) => {
                return Pumped {
                    failure: None,
                    sdk_error: Some(message),
                };
            }
            Err(message) => {
                let _ = sender.send(Err(message.clone())).await;
                return Pumped {
                    failure: Some(message),
                    sdk_error: None,
                };
            }
        }
    }
}

/// The body as a blocking reader, fed by [`pump`].
struct ChannelReader {
    receiver: mpsc::Receiver<Result<Bytes, String>>,
    current: Bytes,
}

impl ChannelReader {
    fn new(receiver: mpsc::Receiver<Result<Bytes, String>>) -> Self {
        ChannelReader {
            receiver,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.current.is_empty() {
            match self.receiver.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(message)) => return Err(io::Error::other(message)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------------
// Checksums
// ---------------------------------------------------------------------------------------------

/// A checksum algorithm recomputed here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Algorithm {
    Crc32,
    Crc32c,
    Crc64Nvme,
    Sha256,
    Sha512,
}

impl Algorithm {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Algorithm::Crc32 => "CRC32",
            Algorithm::Crc32c => "CRC32C",
            Algorithm::Crc64Nvme => "CRC64NVME",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha512 => "SHA-512",
        }
    }
}

/// The checksum S3 stores for an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stored {
    /// None at all.
    Absent,
    /// One of an algorithm not recomputed here.
    Unsupported(&'static str),
    Checksum(StoredChecksum),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredChecksum {
    pub algorithm: Algorithm,
    /// The digest, base64, without the `-N` of a composite checksum.
    pub digest: String,
    /// `COMPOSITE`: the checksum of the parts' checksums.
    pub composite: bool,
    /// The part count S3 gave with a composite checksum (`-N`).
    pub parts: Option<u32>,
}

impl StoredChecksum {
    /// As S3 writes it.
    fn shown(&self) -> String {
        match self.parts {
            Some(parts) => format!("{}-{parts}", self.digest),
            None => self.digest.clone(),
        }
    }
}

/// A checksum S3 reported: `value` as written (`base64`, or `base64-N` for a composite one) and
/// its type (`COMPOSITE`, `FULL_OBJECT`) when S3 gave it. A `-N` suffix makes it composite
/// whatever the type says.
pub(crate) fn parse_stored(
    algorithm: Algorithm,
    value: &str,
    checksum_type: Option<&str>,
) -> StoredChecksum {
    let suffix = value.rsplit_once('-').and_then(|(digest, count)| {
        (!count.is_empty() && count.bytes().all(|b| b.is_ascii_digit()))
            .then(|| count.parse::<u32>().ok().map(|count| (digest, count)))
            .flatten()
    });
    match suffix {
        Some((digest, parts)) => StoredChecksum {
            algorithm,
            digest: digest.to_string(),
            composite: true,
            parts: Some(parts),
        },
        None => StoredChecksum {
            algorithm,
            digest: value.to_string(),
            composite: checksum_type == Some("COMPOSITE"),
            parts: None,
        },
    }
}

fn stored_checksum(answer: &GetObjectOutput) -> Stored {
    let checksum_type = answer.checksum_type().map(|kind| kind.as_str());
    let recomputed = [
        (Algorithm::Crc64Nvme, answer.checksum_crc64_nvme()),
        (Algorithm::Crc32c, answer.checksum_crc32_c()),
        (Algorithm::Crc32, answer.checksum_crc32()),
        (Algorithm::Sha256, answer.checksum_sha256()),
        (Algorithm::Sha512, answer.checksum_sha512()),
    ];
    for (algorithm, value) in recomputed {
        if let Some(value) = value.filter(|value| !value.is_empty()) {
            return Stored::Checksum(parse_stored(algorithm, value, checksum_type));
        }
    }
    let others = [
        ("SHA-1", answer.checksum_sha1()),
        ("MD5", answer.checksum_md5()),
        ("XXHASH64", answer.checksum_xxhash64()),
        ("XXHASH3", answer.checksum_xxhash3()),
        ("XXHASH128", answer.checksum_xxhash128()),
    ];
    others
        .into_iter()
        .find(|(_, value)| value.is_some_and(|value| !value.is_empty()))
        .map_or(Stored::Absent, |(name, _)| Stored::Unsupported(name))
}

/// What to compute over the bytes for S3's checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DigestPlan {
    Full(Algorithm),
    /// One digest per part of these sizes, then the digest of the digests.
    Composite(Algorithm, Vec<u64>),
}

/// The computation a stored checksum needs, given the part sizes when the object is multipart;
/// or why it cannot be made.
pub(crate) fn digest_plan(
    stored: &Stored,
    parts: Option<Result<Vec<u64>, String>>,
) -> (Option<DigestPlan>, Option<String>) {
    let Stored::Checksum(checksum) = stored else {
        return (None, None);
    };
    if !checksum.composite {
        return (Some(DigestPlan::Full(checksum.algorithm)), None);
    }
    match parts {
        Some(Ok(sizes)) => match checksum.parts {
            Some(count) if count as usize != sizes.len() => (
                None,
                Some(format!(
                    "S3 gives it for {count} parts, the object has {} parts",
                    sizes.len()
                )),
            ),
            _ => (Some(DigestPlan::Composite(checksum.algorithm, sizes)), None),
        },
        Some(Err(why)) => (None, Some(why)),
        None => (
            None,
            Some("its ETag does not say it was uploaded in parts".to_string()),
        ),
    }
}

/// One running digest, of any algorithm.
enum Running {
    Crc {
        digest: crc_fast::Digest,
        /// Bytes of the result: 4 for the CRC32s, 8 for CRC64NVME.
        width: usize,
    },
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Running {
    fn new(algorithm: Algorithm) -> Running {
        let crc = |algorithm, width| Running::Crc {
            digest: crc_fast::Digest::new(algorithm),
            width,
        };
        match algorithm {
            Algorithm::Crc32 => crc(crc_fast::CrcAlgorithm::Crc32IsoHdlc, 4),
            Algorithm::Crc32c => crc(crc_fast::CrcAlgorithm::Crc32Iscsi, 4),
            Algorithm::Crc64Nvme => crc(crc_fast::CrcAlgorithm::Crc64Nvme, 8),
            Algorithm::Sha256 => Running::Sha256(Sha256::new()),
            Algorithm::Sha512 => Running::Sha512(Sha512::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Running::Crc { digest, .. } => digest.update(data),
            Running::Sha256(hasher) => hasher.update(data),
            Running::Sha512(hasher) => hasher.update(data),
        }
    }

    /// The raw digest, big-endian, as S3 encodes it in base64.
    fn finish(self) -> Vec<u8> {
        match self {
            Running::Crc { digest, width } => {
                let value = digest.finalize().to_be_bytes();
                value[value.len() - width..].to_vec()
            }
            Running::Sha256(hasher) => hasher.finalize().to_vec(),
            Running::Sha512(hasher) => hasher.finalize().to_vec(),
        }
    }
}

/// The raw digest of some bytes.
pub(crate) fn digest_of(algorithm: Algorithm, data: &[u8]) -> Vec<u8> {
    let mut running = Running::new(algorithm);
    running.update(data);
    running.finish()
}

/// S3's checksum of a stream, computed as it goes.
enum S3Digest {
    Full(Running),
    Composite {
        algorithm: Algorithm,
        sizes: Vec<u64>,
        /// The part being hashed (`sizes.len()` once all are done).
        index: usize,
        /// Bytes still to come in that part.
        left: u64,
        current: Running,
        /// The raw digests of the parts done.
        joined: Vec<u8>,
        /// Bytes that came after the last part.
        excess: u64,
    },
}

impl S3Digest {
    fn new(plan: DigestPlan) -> S3Digest {
        match plan {
            DigestPlan::Full(algorithm) => S3Digest::Full(Running::new(algorithm)),
            DigestPlan::Composite(algorithm, sizes) => {
                let mut digest = S3Digest::Composite {
                    algorithm,
                    left: sizes.first().copied().unwrap_or(0),
                    sizes,
                    index: 0,
                    current: Running::new(algorithm),
                    joined: Vec::new(),
                    excess: 0,
                };
                digest.close_parts();
                digest
            }
        }
    }

    /// Ends the parts that have all their bytes (several, for parts of 0 bytes).
    fn close_parts(&mut self) {
        if let S3Digest::Composite {
            algorithm,
            sizes,
            index,
            left,
            current,
            joined,
            ..
        } = self
        {
            while *left == 0 && *index < sizes.len() {
                let done = std::mem::replace(current, Running::new(*algorithm));
                joined.extend_from_slice(&done.finish());
                *index += 1;
                *left = sizes.get(*index).copied().unwrap_or(0);
            }
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        match self {
            S3Digest::Full(running) => running.update(data),
            S3Digest::Composite { .. } => {
                while !data.is_empty() {
                    let S3Digest::Composite {
                        sizes,
                        index,
                        left,
                        current,
                        excess,
                        ..
                    } = self
                    else {
                        return;
                    };
                    if *index >= sizes.len() {
                        *excess += data.len() as u64;
                        return;
                    }
                    let take = usize::try_from(*left).unwrap_or(usize::MAX).min(data.len());
                    current.update(&data[..take]);
                    *left -= take as u64;
                    data = &data[take..];
                    self.close_parts();
                }
            }
        }
    }

    /// The checksum as S3 writes it (`base64`, or `base64-N`), or why the bytes do not fit the
    /// parts.
    fn finish(self) -> Result<String, String> {
        match self {
            S3Digest::Full(running) => Ok(BASE64.encode(running.finish())),
            S3Digest::Composite {
                algorithm,
                sizes,
                index,
                joined,
                excess,
                ..
            } => {
                let expected: u64 = sizes.iter().sum();
                if excess > 0 || index < sizes.len() {
                    return Err(format!(
                        "its {} parts hold {expected} bytes, the download gave {}",
                        sizes.len(),
                        if excess > 0 {
                            format!("{excess} more")
                        } else {
                            "fewer".to_string()
                        }
                    ));
                }
                Ok(format!(
                    "{}-{}",
                    BASE64.encode(digest_of(algorithm, &joined)),
                    sizes.len()
                ))
            }
        }
    }
}

/// The digests of a whole object, computed as it streams.
pub(crate) struct ObjectDigest {
    bytes: u64,
    sha256: Sha256,
    s3: Option<S3Digest>,
}

/// What [`ObjectDigest`] came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ObjectDigests {
    pub bytes: u64,
    pub sha256_hex: String,
    /// S3's checksum as S3 writes it, when there was one to compute.
    pub s3: Option<Result<String, String>>,
}

impl ObjectDigest {
    pub(crate) fn new(plan: Option<DigestPlan>) -> ObjectDigest {
        ObjectDigest {
            bytes: 0,
            sha256: Sha256::new(),
            s3: plan.map(S3Digest::new),
        }
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        self.sha256.update(data);
        if let Some(s3) = &mut self.s3 {
            s3.update(data);
        }
    }

    pub(crate) fn finish(self) -> ObjectDigests {
        ObjectDigests {
            bytes: self.bytes,
            sha256_hex: hex::encode(self.sha256.finalize()),
            s3: self.s3.map(S3Digest::finish),
        }
    }
}

/// The problem with S3's checksum, if any: absent, not recomputable, or not the bytes'.
pub(crate) fn checksum_problem(
    key: &str,
    stored: &Stored,
    computed: Option<&Result<String, String>>,
) -> Option<String> {
    let checksum = match stored {
        Stored::Absent => {
            return Some(format!(
                "{key}: S3 stores no checksum for the archive, so its bytes are unverified"
            ));
        }
        Stored::Unsupported(name) => {
            return Some(format!(
                "{key}: S3 stores a {name} checksum for the archive, which the drill does not \
                 recompute, so its bytes are unverified"
            ));
        }
        Stored::Checksum(checksum) => checksum,
    };
    let kind = if checksum.composite {
        "composite"
    } else {
        "full-object"
    };
    match computed {
        // The plan's own problem says why.
        None => None,
        Some(Err(why)) => Some(format!(
            "{key}: the bytes downloaded do not fit the parts of its {kind} {} checksum: {why}",
            checksum.algorithm.name()
        )),
        Some(Ok(computed)) => {
            let (digest, parts) = match computed.rsplit_once('-') {
                Some((digest, parts)) if checksum.composite => (digest, parts.parse().ok()),
                _ => (computed.as_str(), None),
            };
            let same = digest == checksum.digest
                && (checksum.parts.is_none() || parts.is_none() || checksum.parts == parts);
            (!same).then(|| {
                format!(
                    "{key}: the bytes downloaded do not match the archive's {kind} {} checksum: \
                     S3 stores {}, the bytes give {computed}",
                    checksum.algorithm.name(),
                    checksum.shown()
                )
            })
        }
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

// ---------------------------------------------------------------------------------------------
// The tar
// ---------------------------------------------------------------------------------------------

/// How an archive is compressed, told by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    Gzip,
    Zstd,
    None,
}

impl Compression {
    pub(crate) fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip-compressed",
            Compression::Zstd => "zstd-compressed",
            Compression::None => "plain",
        }
    }
}

/// The key's extension against the bytes.
fn format_problem(key: &str, found: Compression) -> Option<String> {
    let named = if key.ends_with(".tar.gz") || key.ends_with(".tgz") {
        Compression::Gzip
    } else if key.ends_with(".tar.zst") {
        Compression::Zstd
    } else if key.ends_with(".tar") {
        Compression::None
    } else {
        return None;
    };
    (named != found).then(|| {
        format!(
            "{key}: its name says a {} tar, its bytes are {}",
            named.name(),
            match found {
                Compression::None => "not compressed (or not an archive)",
                Compression::Gzip => "gzip",
                Compression::Zstd => "zstd",
            }
        )
    })
}

/// What kind of tar entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryKind {
    File,
    Link,
    Other,
}

/// One entry of the tar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TarEntry {
    pub kind: EntryKind,
    pub size: u64,
    /// SHA-256 of its contents, lowercase hex.
    pub sha256: String,
    /// A symbolic link's target.
    pub link: Option<Vec<u8>>,
}

/// The tar as read: its entries by exact name (a later entry of the same name replaces an
/// earlier one, as extraction would).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct TarListing {
    pub entries: HashMap<Vec<u8>, TarEntry>,
    /// `MANIFEST.json`'s bytes, when it is at most [`MAX_MANIFEST_BYTES`].
    pub manifest: Option<Vec<u8>>,
    /// `MANIFEST.json`'s SHA-256, hex, whatever its size.
    pub manifest_sha256: Option<String>,
    /// Why reading stopped before the end (the entries before it are listed).
    pub error: Option<String>,
}

/// What one pass over an archive found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scanned {
    pub bytes: u64,
    pub sha256_hex: String,
    pub s3: Option<Result<String, String>>,
    pub compression: Compression,
    pub listing: TarListing,
}

/// Counts and hashes what is read through it; remembers a failure of the source itself (the
/// download), which is told apart from a damaged archive.
struct Hashing<R> {
    inner: R,
    digest: ObjectDigest,
    failed: Option<String>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.digest.update(&buf[..n]);
                Ok(n)
            }
            Err(error) => {
                if error.kind() != io::ErrorKind::Interrupted {
                    self.failed = Some(error.to_string());
                }
                Err(error)
            }
        }
    }
}

/// Reads an archive once: hashes every byte (`plan` for S3's checksum, SHA-256 always),
/// decompresses it and lists its tar, then reads whatever follows to the end, so that the
/// digests cover the whole object whatever the tar holds. Errs only when `raw` itself fails.
pub(crate) fn scan<R: Read>(raw: R, plan: Option<DigestPlan>) -> io::Result<Scanned> {
    let mut hashing = Hashing {
        inner: raw,
        digest: ObjectDigest::new(plan),
        failed: None,
    };
    let mut head = [0u8; 4];
    let mut filled = 0;
    while filled < head.len() {
        match hashing.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    let head = &head[..filled];
    let compression = Compression::sniff(head);
    let listing = {
        let mut buffered = BufReader::with_capacity(READ_BUFFER, head.chain(&mut hashing));
        match compression {
            Compression::Gzip => list_tar(flate2::bufread::MultiGzDecoder::new(&mut buffered)),
            Compression::Zstd => match zstd::stream::read::Decoder::with_buffer(&mut buffered) {
                Ok(decoder) => list_tar(decoder),
                Err(error) => TarListing {
                    error: Some(format!("zstd: {error}")),
                    ..TarListing::default()
                },
            },
            Compression::None => list_tar(&mut buffered),
        }
    };
    if let Some(message) = hashing.failed.take() {
        return Err(io::Error::other(message));
    }
    io::copy(&mut hashing, &mut io::sink())?;
    let digests = hashing.digest.finish();
    Ok(Scanned {
        bytes: digests.bytes,
        sha256_hex: digests.sha256_hex,
        s3: digests.s3,
        compression,
        listing,
    })
}

/// Lists a (decompressed) tar stream, hashing each entry, then reads the stream to its end so
/// that damage after the tar's last entry is noticed too.
pub(crate) fn list_tar<R: Read>(reader: R) -> TarListing {
    let mut listing = TarListing::default();
    let mut archive = tar::Archive::new(reader);
    let mut buffer = vec![0u8; 64 * 1024];
    let entries = match archive.entries() {
        Ok(entries) => entries,
        Err(error) => {
            listing.error = Some(error.to_string());
            return listing;
        }
    };
    for entry in entries {
        let mut entry = match entry {
            Ok(entry) => entry,
            Err(error) => {
                listing.error = Some(error.to_string());
                return listing;
            }
        };
        let name = entry.path_bytes().into_owned();
        let entry_type = entry.header().entry_type();
        let kind = if entry_type.is_file() {
            EntryKind::File
        } else if entry_type.is_symlink() {
            EntryKind::Link
        } else {
            EntryKind::Other
        };
        let link = entry
            .link_name_bytes()
            .filter(|_| kind == EntryKind::Link)
            .map(|target| target.into_owned());
        let is_manifest = name.as_slice() == MANIFEST_ENTRY;
        let mut kept = is_manifest.then(Vec::new);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        loop {
            let n = match entry.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    listing.error = Some(format!(
                        "reading {}: {error}",
                        String::from_utf8_lossy(&name)
                    ));
                    return listing;
                }
            };
            hasher.update(&buffer[..n]);
            size += n as u64;
            if let Some(bytes) = &mut kept {
                if size <= MAX_MANIFEST_BYTES {
                    bytes.extend_from_slice(&buffer[..n]);
                } else {
                    kept = None;
                }
            }
        }
        let sha256 = hex::encode(hasher.finalize());
        if is_manifest {
            listing.manifest = kept;
            listing.manifest_sha256 = Some(sha256.clone());
        }
        listing.entries.insert(
            name,
            TarEntry {
                kind,
                size,
                sha256,
                link,
            },
        );
    }
    let mut rest = archive.into_inner();
    if let Err(error) = io::copy(&mut rest, &mut io::sink()) {
        listing.error = Some(format!("after the tar's last entry: {error}"));
    }
    listing
}

// ---------------------------------------------------------------------------------------------
// The manifest against the tar
// ---------------------------------------------------------------------------------------------

/// An entry the manifest lists.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expected {
    /// The list it is in: `files`, `extras`, `symlinks`.
    list: &'static str,
    /// Its exact name in the tar.
    name: Vec<u8>,
    want: Want,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Want {
    Content {
        size: Option<u64>,
        sha256: Option<String>,
    },
    Link {
        target: Vec<u8>,
    },
}

/// The exact bytes of a record's name: `{field}_base64` when present, else `{field}`.
fn exact(record: &Value, field: &str) -> Result<Vec<u8>, String> {
    if let Some(encoded) = record
        .get(format!("{field}_base64"))
        .and_then(Value::as_str)
    {
        return BASE64
            .decode(encoded)
            .map_err(|error| format!("its {field}_base64 is not base64 ({error})"));
    }
    record
        .get(field)
        .and_then(Value::as_str)
        .map(|text| text.as_bytes().to_vec())
        .ok_or_else(|| format!("it has no {field}"))
}

/// The entries the manifest lists, and what is malformed in it.
fn expected_entries(manifest: &Value) -> (Vec<Expected>, Vec<String>) {
    let mut expected = Vec::new();
    let mut malformed = Vec::new();
    for list in ["extras", "files", "symlinks"] {
        let Some(records) = manifest.get(list) else {
            if list != "symlinks" {
                malformed.push(format!("the manifest has no `{list}` list"));
            }
            continue;
        };
        let Some(records) = records.as_array() else {
            malformed.push(format!("the manifest's `{list}` is not a list"));
            continue;
        };
        for (index, record) in records.iter().enumerate() {
            let name = match exact(record, "path") {
                Ok(name) if list == "extras" => name,
                // Files and links are stored under their absolute path without the `/`.
                Ok(name) => {
                    let start = name.iter().take_while(|b| **b == b'/').count();
                    name[start..].to_vec()
                }
                Err(why) => {
                    malformed.push(format!("the manifest's {list}[{index}]: {why}"));
                    continue;
                }
            };
            let want = if list == "symlinks" {
                match exact(record, "target") {
                    Ok(target) => Want::Link { target },
                    Err(why) => {
                        malformed.push(format!("the manifest's {list}[{index}]: {why}"));
                        continue;
                    }
                }
            } else {
                Want::Content {
                    size: record.get("size").and_then(Value::as_u64),
                    sha256: record
                        .get("sha256")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                }
            };
            expected.push(Expected { list, name, want });
        }
    }
    (expected, malformed)
}

/// The manifest held against the tar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Comparison {
    pub listed: usize,
    pub found: usize,
    pub problems: Vec<String>,
}

fn short(sha256: &str) -> &str {
    sha256.get(..12).unwrap_or(sha256)
}

/// Whether every file, extra and link the manifest lists is in the tar as listed.
pub(crate) fn compare(key: &str, manifest: &Value, listing: &TarListing) -> Comparison {
    let (expected, malformed) = expected_entries(manifest);
    let mut problems: Vec<String> = malformed
        .into_iter()
        .map(|why| format!("{key}: {why}"))
        .collect();
    let mut entry_problems = Vec::new();
    let mut found = 0;
    for item in &expected {
        let shown = String::from_utf8_lossy(&item.name);
        let entry = listing.entries.get(&item.name);
        let problem = match (entry, &item.want) {
            (None, _) => Some(format!(
                "{key}: the manifest lists {shown} ({}), but the archive holds no such entry",
                item.list
            )),
            (Some(entry), Want::Content { size, sha256 }) => {
                if entry.kind != EntryKind::File {
                    Some(format!(
                        "{key}: {shown} is not a regular file in the archive, but the manifest \
                         lists it as one ({})",
                        item.list
                    ))
                } else if size.is_some_and(|size| size != entry.size)
                    || sha256
                        .as_deref()
                        .is_some_and(|sha256| !sha256.eq_ignore_ascii_case(&entry.sha256))
                {
                    Some(format!(
                        "{key}: {shown} in the archive holds {} bytes with SHA-256 {}…, the \
                         manifest lists {} bytes with SHA-256 {}…",
                        entry.size,
                        short(&entry.sha256),
                        size.map_or_else(|| "?".to_string(), |size| size.to_string()),
                        sha256.as_deref().map_or("?", short)
                    ))
                } else {
                    None
                }
            }
            (Some(entry), Want::Link { target }) => {
                if entry.kind != EntryKind::Link {
                    Some(format!(
                        "{key}: {shown} is not a symbolic link in the archive, but the manifest \
                         lists it as one"
                    ))
                } else if entry.link.as_deref() != Some(target.as_slice()) {
                    Some(format!(
                        "{key}: the link {shown} in the archive points to {}, the manifest says \
                         {}",
                        String::from_utf8_lossy(entry.link.as_deref().unwrap_or_default()),
                        String::from_utf8_lossy(target)
                    ))
                } else {
                    None
                }
            }
        };
        match problem {
            Some(problem) => entry_problems.push(problem),
            None => found += 1,
        }
    }
    let more = entry_problems.len().saturating_sub(MAX_ENTRY_PROBLEMS);
    entry_problems.truncate(MAX_ENTRY_PROBLEMS);
    problems.extend(entry_problems);
    if more > 0 {
        problems.push(format!(
            "{key}: {more} more entries the manifest lists are missing from the archive or \
             differ (not named one by one)"
        ));
    }
    Comparison {
        listed: expected.len(),
        found,
        problems,
    }
}
