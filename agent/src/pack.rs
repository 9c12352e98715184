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
use crate::keys::{KeyParts, render};
use crate::state::DrainRecord;
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
    /// # Panics
    /// Never: callers only build a job when `config.upload` is set.
    pub fn new(config: &AgentConfig, plan: &DrainPlan, record: &DrainRecord) -> PackJob {
        let upload = match &config.upload {
            Some(upload) => upload.clone(),
            None => unreachable!("a pack job is only built with an upload configured"),
        };
        let started = OffsetDateTime::parse(
            &record.started_at,
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap_or_else(|_| OffsetDateTime::now_utc());
        let timestamp = key_timestamp(started);
        let asg = plan.asg.clone().unwrap_or_else(|| "no-group".to_string());
        let key = render(
            &upload.key_template,
            &KeyParts {
                prefix: &upload.prefix,
                asg: &asg,
                instance_id: &plan.instance_id,
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
            "started_at": record.started_at,
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

/// Builds the archive on a blocking thread while the store uploads it; then stores the
/// manifest beside it. `deadline` bounds both: the archiver stops taking files in time for
/// the upload to end by then.
pub async fn archive_and_upload<S: ArchiveStore>(
    store: &S,
    job: PackJob,
    deadline: Instant,
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
    let (archived, uploaded) = tokio::join!(archiving, store.upload_stream(&object, rx, &policy));
    let archive_failed = |message: String| PackError::Archive {
        bucket: object.bucket.clone(),
        key: object.key.clone(),
        message,
    };
    let outcome = match archived {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(message)) => return Err(archive_failed(message)),
        Err(join) => return Err(archive_failed(format!("the archiver stopped: {join}"))),
    };
    let receipt = uploaded?;
    // The same bytes as MANIFEST.json inside the archive (same struct, same serialiser).
    let manifest_json = serde_json::to_vec_pretty(&outcome.manifest).unwrap_or_default();
    let manifest_sha256 = outcome.manifest_sha256.clone();
    // The manifest's digest is known only once the archive is written: added afterwards.
    let mut object = object;
    object
        .metadata
        .insert("manifest-sha256".to_string(), manifest_sha256.clone());
    if let Err(error) = store
        .replace_metadata(&object, receipt.bytes, &UploadPolicy::new(deadline))
        .await
    {
        tracing::warn!(key = %object.key, %error, "manifest digest not added to the archive's metadata");
    }
    let mut manifest_object = manifest_object;
    manifest_object
        .metadata
        .insert("archive-sha256".to_string(), receipt.sha256_hex.clone());
    manifest_object
        .metadata
        .insert("manifest-sha256".to_string(), manifest_sha256);
    let manifest_policy =
        UploadPolicy::new(deadline.max(Instant::now() + std::time::Duration::from_secs(10)));
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
        files: outcome.manifest.files.len() as u64,
        skipped_files: outcome.manifest.skipped.len() as u64,
    })
}

/// Where step outputs wait for the archive: beside the drain record, so they survive a restart.
pub fn work_dir_for(state_path: &std::path::Path) -> PathBuf {
    state_path
        .parent()
        .map(|dir| dir.join("drain-outputs"))
        .unwrap_or_else(|| PathBuf::from("/var/lib/lifeguard/drain-outputs"))
}
