//! The archive of one drain, built on a blocking thread and streamed to the store while it is
//! being built; then the manifest beside it, for reading without downloading the archive.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bytes::Bytes;
use lifeguard_common::message::ArchiveSummary;
use serde_json::json;
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::archive::{self, ArchiveOutcome, ArchiveSpec, Compression, ExtraEntry};
use crate::config::{
    AgentConfig, ArchiveConfig, ChecksumConfig, CompressionKind, SseKind, UploadConfig,
};
use crate::drain::DrainPlan;
use crate::drain::machine::DrainRecord;
use crate::keys::{KeyParts, render};
use crate::upload::{
    ArchiveStore, ChecksumKind, ObjectSpec, PartWriter, ServerSideEncryption, UploadError,
    UploadPolicy, part_channel,
};

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("building the archive for s3://{bucket}/{key}: {message}")]
    Archive {
        bucket: String,
        key: String,
        message: String,
    },
    #[error(transparent)]
    Upload(#[from] UploadError),
    #[error("the agent was asked to stop and the upload did not finish in time")]
    Shutdown,
}

/// File name of a step's output, in the work directory and in the archive.
pub fn step_output_name(index: usize, name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{:02}-{safe}.log", index + 1)
}

/// Compact UTC, sortable, safe in keys: `20261122T101500Z`.
pub fn key_timestamp(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

pub fn archive_spec(config: &ArchiveConfig) -> ArchiveSpec {
    let compression = match config.compression {
        CompressionKind::Gzip => Compression::Gzip {
            level: config
                .level
                .and_then(|l| u32::try_from(l).ok())
                .unwrap_or(6),
            threads: config.threads,
            block_bytes: 1024 * 1024,
        },
        CompressionKind::Zstd => Compression::Zstd {
            level: config.level.unwrap_or(3),
            threads: u32::try_from(config.threads).unwrap_or(0),
        },
        CompressionKind::None => Compression::None,
    };
    ArchiveSpec {
        sources: config.paths.clone(),
        exclude: config.exclude.clone(),
        compression,
        max_total_bytes: config.max_total_bytes,
        max_file_bytes: config.max_file_bytes,
        max_files: config.max_files,
    }
}

fn object_spec(
    upload: &UploadConfig,
    key: String,
    metadata: BTreeMap<String, String>,
    content_type: &str,
) -> ObjectSpec {
    ObjectSpec {
        bucket: upload.bucket.clone(),
        key,
        metadata,
        content_type: content_type.to_string(),
        sse: match upload.sse {
            SseKind::S3 => ServerSideEncryption::S3,
            SseKind::Kms => ServerSideEncryption::Kms {
                key_id: upload.kms_key_id.clone(),
            },
            SseKind::None => ServerSideEncryption::None,
        },
        expected_bucket_owner: upload.expected_bucket_owner.clone(),
        checksum: match upload.checksum {
            ChecksumConfig::Crc32c => ChecksumKind::Crc32c,
            ChecksumConfig::Sha256 => ChecksumKind::Sha256,
        },
    }
}

/// The writer's id for the key's `{principal}`, asked of AWS only when the key template uses it
/// (empty otherwise). Without it there is no key the IAM policy would let this instance write.
pub async fn writer_id<S: ArchiveStore>(
    store: &S,
    config: &AgentConfig,
) -> Result<String, UploadError> {
    match &config.upload {
        Some(upload) if crate::keys::needs_principal(&upload.key_template) => {
            store.writer_id(&upload.bucket).await
        }
        _ => Ok(String::new()),
    }
}

/// Everything the blocking archiver and the uploader need, owned.
pub struct PackJob {
    object: ObjectSpec,
    manifest_object: ObjectSpec,
    spec: ArchiveSpec,
    extras: Vec<ExtraEntry>,
    drain_json: serde_json::Value,
    part_bytes: usize,
    concurrency: usize,
}

impl PackJob {
    /// `writer_id` fills the key's `{principal}` (see [`writer_id`]).
    ///
    /// # Panics
    /// Never: callers only build a job when `config.upload` is set.
    pub fn new(
        config: &AgentConfig,
        plan: &DrainPlan,
        record: &DrainRecord,
        writer_id: &str,
    ) -> PackJob {
        let upload = match &config.upload {
            Some(upload) => upload.clone(),
            None => unreachable!("a pack job is only built with an upload configured"),
        };
        let timestamp = key_timestamp(record.noticed_at);
        let asg = plan.asg.clone().unwrap_or_else(|| "no-group".to_string());
        let key = render(
            &upload.key_template,
            &KeyParts {
                prefix: &upload.prefix,
                asg: &asg,
                instance_id: &plan.instance_id,
                principal: writer_id,
                timestamp: &timestamp,
                reason: plan.trigger.reason(),
                ext: config.archive.compression.extension(),
            },
        );
        let metadata: BTreeMap<String, String> = [
            ("instance-id", plan.instance_id.clone()),
            ("asg", asg.clone()),
            ("reason", plan.trigger.reason().to_string()),
            ("agent-version", env!("CARGO_PKG_VERSION").to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let extras = step_extras(config, &plan.work_dir);
        let drain_json = json!({
            "instance_id": plan.instance_id,
            "asg": plan.asg,
            "reason": plan.trigger.reason(),
            "hook": plan.hook.as_ref().map(|h| h.name.clone()),
            "started_at": record.noticed_at.format(&time::format_description::well_known::Rfc3339).ok(),
            "drain_started_at": record.drain_started_at.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()),
            "steps": record.steps,
            "abandon": record.abandon,
            "agent_version": env!("CARGO_PKG_VERSION"),
        });
        let manifest_key = format!("{key}.manifest.json");
        PackJob {
            object: object_spec(
                &upload,
                key,
                metadata.clone(),
                config.archive.compression.media_type(),
            ),
            manifest_object: object_spec(&upload, manifest_key, metadata, "application/json"),
            spec: archive_spec(&config.archive),
            extras,
            drain_json,
            part_bytes: upload.part_size_mib * 1024 * 1024,
            concurrency: upload.concurrency,
        }
    }

    pub fn key(&self) -> &str {
        &self.object.key
    }
}

/// The steps' outputs kept in the work directory, in step order.
fn step_extras(config: &AgentConfig, work_dir: &std::path::Path) -> Vec<ExtraEntry> {
    config
        .drain
        .steps
        .iter()
        .enumerate()
        .filter_map(|(index, step)| {
            let name = step_output_name(index, &step.name);
            let data = std::fs::read(work_dir.join(&name)).ok()?;
            Some(ExtraEntry {
                path: format!("lifeguard/steps/{name}"),
                data,
            })
        })
        .collect()
}

/// Aborts multipart uploads an earlier, killed run left open for this job's key.
pub async fn abort_leftovers<S: ArchiveStore>(
    store: &S,
    job: &PackJob,
    deadline: Instant,
) -> usize {
    store
        .abort_leftover_uploads(&job.object, &UploadPolicy::new(deadline))
        .await
}

/// How long past the deadline the archiver is waited for before the upload is given up. The
/// archiver cannot block on a file (its filesystem calls run on threads it can abandon), so it
/// ends by its own deadline, well before this; the bound only keeps a bug from holding a drain
/// for ever.
const ARCHIVER_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Builds the archive on a blocking thread while the store uploads it; then stores the
/// manifest beside it. `deadline` bounds both: the archiver stops taking files in time for
/// the upload to end by then.
///
/// The manifest's digest is not added to the archive's own metadata: that would take a second,
/// whole-object copy (CopyObject, which also refuses objects over 5 GB) under the deadline.
/// The sidecar `<key>.manifest.json` holds exactly `MANIFEST.json`'s bytes, with metadata
/// `archive-sha256` (the whole archive) and `manifest-sha256` (those bytes).
pub async fn archive_and_upload<S: ArchiveStore>(
    store: &S,
    job: PackJob,
    deadline: Instant,
) -> Result<ArchiveSummary, PackError> {
    pack_within(store, job, deadline, ARCHIVER_GRACE).await
}

async fn pack_within<S: ArchiveStore>(
    store: &S,
    job: PackJob,
    deadline: Instant,
    grace: std::time::Duration,
) -> Result<ArchiveSummary, PackError> {
    let (tx, rx) = part_channel(1);
    let PackJob {
        object,
        manifest_object,
        spec,
        extras,
        drain_json,
        part_bytes,
        concurrency,
    } = job;
    // The archiver stops adding files a little before the deadline, so what it has written
    // can still be uploaded and the upload completed.
    let archive_deadline = std::time::Instant::now()
        + deadline
            .saturating_duration_since(Instant::now())
            .mul_f64(0.8);
    let archiving = tokio::task::spawn_blocking(move || -> Result<ArchiveOutcome, String> {
        let mut writer = PartWriter::new(tx, part_bytes);
        let outcome = archive::build_archive(
            &spec,
            &extras,
            drain_json,
            Some(archive_deadline),
            &mut writer,
        )
        .map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())?;
        Ok(outcome)
    });
    let mut policy = UploadPolicy::new(deadline);
    policy.concurrency = concurrency.max(1);
    let upload = store.upload_stream(&object, rx, &policy);
    let archive_failed = |message: String| PackError::Archive {
        bucket: object.bucket.clone(),
        key: object.key.clone(),
        message,
    };
    let (archived, uploaded) = match join_within(archiving, upload, deadline + grace).await {
        Joined::Both(archived, uploaded) => (archived, uploaded),
        Joined::ArchiverLate(uploaded) => {
            // Dropping the upload (if it had not ended) armed its own abort; this one is
            // waited for, so that nothing is left open under the key when the drain goes on.
            let aborted = store
                .abort_leftover_uploads(
                    &object,
                    &UploadPolicy::new(Instant::now() + policy.abort_grace),
                )
                .await;
            let stored = if matches!(uploaded, Some(Ok(_))) {
                "; the object was stored but its manifest is unknown"
            } else {
                ""
            };
            return Err(archive_failed(format!(
                "the archiver had not ended {} s after the deadline: upload abandoned, \
                 {aborted} multipart upload(s) aborted{stored}",
                grace.as_secs_f64()
            )));
        }
    };
    let outcome = match archived {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(message)) => return Err(archive_failed(message)),
        Err(join) => return Err(archive_failed(format!("the archiver stopped: {join}"))),
    };
    let receipt = uploaded?;
    let ArchiveOutcome {
        manifest,
        manifest_sha256,
        manifest_json,
        ..
    } = outcome;
    let mut manifest_object = manifest_object;
    manifest_object
        .metadata
        .insert("archive-sha256".to_string(), receipt.sha256_hex.clone());
    manifest_object
        .metadata
        .insert("manifest-sha256".to_string(), manifest_sha256.clone());
    let manifest_policy =
        UploadPolicy::new(deadline.max(Instant::now() + std::time::Duration::from_secs(10)));
    // Exactly the bytes of MANIFEST.json inside the archive, which `manifest-sha256` names.
    if let Err(error) = store
        .put_object(
            &manifest_object,
            Bytes::from(manifest_json),
            &manifest_policy,
        )
        .await
    {
        // The manifest is inside the archive too; the copy beside it is a convenience.
        tracing::warn!(key = %manifest_object.key, %error, "manifest copy not stored");
    }
    Ok(ArchiveSummary {
        bucket: receipt.bucket,
        key: receipt.key,
        bytes: receipt.bytes,
        sha256: receipt.sha256_hex,
        files: manifest.totals.files,
        skipped_files: manifest.totals.skipped,
        manifest_sha256: Some(manifest_sha256),
    })
}

/// How waiting for the archiver and the upload ended.
enum Joined<A, U> {
    Both(A, U),
    /// The archiver had not ended by the limit; the upload's result if it had ended.
    ArchiverLate(Option<U>),
}

/// Waits for both the archiver and the upload, but for the archiver only until `limit`. The
/// upload is bounded by its own policy.
async fn join_within<A, U>(
    mut archiving: tokio::task::JoinHandle<A>,
    upload: impl std::future::Future<Output = U>,
    limit: Instant,
) -> Joined<Result<A, tokio::task::JoinError>, U> {
    let mut upload = std::pin::pin!(upload);
    let mut limit = std::pin::pin!(tokio::time::sleep_until(limit));
    let mut uploaded = None;
    let archived = loop {
        tokio::select! {
            result = &mut archiving => break result,
            result = &mut upload, if uploaded.is_none() => uploaded = Some(result),
            () = &mut limit => return Joined::ArchiverLate(uploaded),
        }
    };
    let uploaded = match uploaded {
        Some(uploaded) => uploaded,
        None => upload.await,
    };
    Joined::Both(archived, uploaded)
}

/// Where step outputs wait for the archive: beside the drain record, so they survive a restart.
pub fn work_dir_for(state_path: &std::path::Path) -> PathBuf {
    state_path
        .parent()
        .map(|dir| dir.join("drain-outputs"))
        .unwrap_or_else(|| PathBuf::from("/var/lib/lifeguard/drain-outputs"))
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use sha2::{Digest, Sha256};
    use tokio::sync::mpsc::Receiver;

    use super::*;
    use crate::upload::UploadReceipt;

    /// A call the store saw.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Call {
        UploadStream(String),
        PutObject(String),
        AbortLeftovers(String),
    }

    /// An in-memory store. `stuck`: the upload takes no part and never ends, so the archiver
    /// blocks on a full channel: an archiver that outlives the deadline.
    #[derive(Default, Clone)]
    struct FakeStore {
        stuck: bool,
        calls: Arc<Mutex<Vec<Call>>>,
        objects: Arc<Mutex<BTreeMap<String, Stored>>>,
    }

    /// An object's bytes and metadata.
    type Stored = (Vec<u8>, BTreeMap<String, String>);

    fn sha256_hex(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    impl FakeStore {
        fn receipt(&self, object: &ObjectSpec, body: Vec<u8>) -> UploadReceipt {
            let receipt = UploadReceipt {
                bucket: object.bucket.clone(),
                key: object.key.clone(),
                bytes: body.len() as u64,
                sha256_hex: sha256_hex(&body),
                s3_checksum: String::new(),
                parts: 1,
                etag: None,
                version_id: None,
            };
            self.objects
                .lock()
                .unwrap()
                .insert(object.key.clone(), (body, object.metadata.clone()));
            receipt
        }
    }

    impl ArchiveStore for FakeStore {
        async fn upload_stream(
            &self,
            object: &ObjectSpec,
            mut parts: Receiver<Bytes>,
            _policy: &UploadPolicy,
        ) -> Result<UploadReceipt, UploadError> {
            self.calls
                .lock()
                .unwrap()
                .push(Call::UploadStream(object.key.clone()));
            if self.stuck {
                std::future::pending::<()>().await;
            }
            let mut body = Vec::new();
            while let Some(part) = parts.recv().await {
                if part.is_empty() {
                    return Ok(self.receipt(object, body));
                }
                body.extend_from_slice(&part);
            }
            Err(UploadError::StreamAborted {
                bucket: object.bucket.clone(),
                key: object.key.clone(),
                upload_id: None,
                bytes_received: body.len() as u64,
            })
        }

        async fn abort_leftover_uploads(
            &self,
            object: &ObjectSpec,
            _policy: &UploadPolicy,
        ) -> usize {
            self.calls
                .lock()
                .unwrap()
                .push(Call::AbortLeftovers(object.key.clone()));
            1
        }

        async fn put_object(
            &self,
            object: &ObjectSpec,
            body: Bytes,
            _policy: &UploadPolicy,
        ) -> Result<UploadReceipt, UploadError> {
            self.calls
                .lock()
                .unwrap()
                .push(Call::PutObject(object.key.clone()));
            Ok(self.receipt(object, body.to_vec()))
        }

        async fn writer_id(&self, _bucket: &str) -> Result<String, UploadError> {
            Ok("AROAFAKEROLEID:i-0abc".to_string())
        }
    }

    const KEY: &str = "lifeguard/web/i-0abc/20261122T101500Z-scale_in.tar";

    fn job(logs: &std::path::Path, part_bytes: usize) -> PackJob {
        let object = ObjectSpec {
            bucket: "logs".to_string(),
            key: KEY.to_string(),
            metadata: BTreeMap::from([("instance-id".to_string(), "i-0abc".to_string())]),
            content_type: "application/x-tar".to_string(),
            sse: ServerSideEncryption::S3,
            expected_bucket_owner: None,
            checksum: ChecksumKind::Crc32c,
        };
        let mut manifest_object = object.clone();
        manifest_object.key = format!("{KEY}.manifest.json");
        manifest_object.content_type = "application/json".to_string();
        PackJob {
            object,
            manifest_object,
            spec: ArchiveSpec {
                sources: vec![logs.to_string_lossy().into_owned()],
                exclude: Vec::new(),
                compression: Compression::None,
                max_total_bytes: None,
                max_file_bytes: None,
                max_files: archive::DEFAULT_MAX_FILES,
            },
            extras: Vec::new(),
            drain_json: json!({"instance_id": "i-0abc"}),
            part_bytes,
            concurrency: 1,
        }
    }

    fn logs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.log"), vec![b'a'; 300_000]).unwrap();
        std::fs::write(dir.path().join("other.log"), b"other\n").unwrap();
        dir
    }

    #[tokio::test]
    async fn the_sidecar_is_the_manifest_with_both_digests_and_nothing_is_copied() {
        let dir = logs();
        let store = FakeStore::default();
        let deadline = Instant::now() + Duration::from_secs(30);
        let summary = archive_and_upload(&store, job(dir.path(), 1 << 20), deadline)
            .await
            .unwrap();

        let calls = store.calls.lock().unwrap().clone();
        assert_eq!(
            calls,
            vec![
                Call::UploadStream(KEY.to_string()),
                Call::PutObject(format!("{KEY}.manifest.json")),
            ],
            "one upload and the sidecar: no copy of the archive onto itself"
        );
        let objects = store.objects.lock().unwrap().clone();
        let (archive, archive_metadata) = &objects[KEY];
        assert!(!archive_metadata.contains_key("manifest-sha256"));
        let mut manifest_in_archive = Vec::new();
        let mut tar = tar::Archive::new(archive.as_slice());
        for entry in tar.entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry.path().unwrap().as_os_str() == archive::MANIFEST_PATH {
                entry.read_to_end(&mut manifest_in_archive).unwrap();
            }
        }
        assert!(!manifest_in_archive.is_empty());

        let (sidecar, sidecar_metadata) = &objects[&format!("{KEY}.manifest.json")];
        assert_eq!(sidecar, &manifest_in_archive, "byte for byte");
        assert_eq!(sidecar_metadata["archive-sha256"], sha256_hex(archive));
        assert_eq!(sidecar_metadata["manifest-sha256"], sha256_hex(sidecar));
        assert_eq!(sidecar_metadata["instance-id"], "i-0abc");

        assert_eq!(summary.key, KEY);
        assert_eq!(summary.sha256, sha256_hex(archive));
        assert_eq!(summary.manifest_sha256, Some(sha256_hex(sidecar)));
        assert_eq!(summary.files, 2);
        assert_eq!(summary.skipped_files, 0);
    }

    #[tokio::test]
    async fn an_archiver_that_outlives_the_deadline_is_given_up_and_the_upload_aborted() {
        let dir = logs();
        let store = FakeStore {
            stuck: true,
            ..FakeStore::default()
        };
        let started = Instant::now();
        let deadline = started + Duration::from_millis(500);
        // Small parts: the archiver fills the channel and then waits on it for ever.
        let job = job(dir.path(), 4096);
        let result = tokio::time::timeout(
            Duration::from_secs(10),
            pack_within(&store, job, deadline, Duration::from_millis(300)),
        )
        .await
        .expect("the drain is not held by the archiver");
        let error = result.unwrap_err().to_string();
        assert!(error.contains(KEY), "{error}");
        assert!(error.contains("had not ended"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(
            store
                .calls
                .lock()
                .unwrap()
                .contains(&Call::AbortLeftovers(KEY.to_string()))
        );
    }
}
