//! The S3 calls, one attempt each, through aws-sdk-s3: what [`super::pipeline`] needs from S3.

use std::collections::HashMap;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, ChecksumType, CompletedMultipartUpload, CompletedPart,
    ServerSideEncryption as SdkSse,
};
use bytes::Bytes;
use tokio::sync::mpsc::Receiver;

use super::checksum::PartChecksum;
use super::pipeline::{self, ObjectApi, Stored, UploadedPart};
use super::retry::CallError;
use super::{
    ArchiveStore, ChecksumKind, ObjectSpec, ServerSideEncryption, UploadError, UploadPolicy,
    UploadReceipt,
};

/// The real [`ArchiveStore`]: S3 through aws-sdk-s3. Build the client with
/// `lifeguard_common::aws::s3_client`.
#[derive(Debug, Clone)]
pub struct S3Store {
    api: S3Api,
    identity: Option<aws_sdk_sts::Client>,
    /// The writer's id never changes for the life of the credentials' role session.
    writer_id: std::sync::Arc<tokio::sync::OnceCell<String>>,
}

impl S3Store {
    pub fn new(client: Client) -> Self {
        S3Store {
            api: S3Api { client },
            identity: None,
            writer_id: std::sync::Arc::default(),
        }
    }

    /// Lets the store learn its writer's id from STS (`GetCallerIdentity`, which needs no
    /// permission), for keys that carry `{principal}`.
    pub fn with_identity(mut self, sts: aws_sdk_sts::Client) -> Self {
        self.identity = Some(sts);
        self
    }
}

impl ArchiveStore for S3Store {
    async fn upload_stream(
        &self,
        object: &ObjectSpec,
        parts: Receiver<Bytes>,
        policy: &UploadPolicy,
    ) -> Result<UploadReceipt, UploadError> {
        pipeline::upload_stream(&self.api, object, parts, policy).await
    }

    async fn put_object(
        &self,
        object: &ObjectSpec,
        body: Bytes,
        policy: &UploadPolicy,
    ) -> Result<UploadReceipt, UploadError> {
        pipeline::put_object(&self.api, object, body, policy).await
    }

    async fn abort_leftover_uploads(&self, object: &ObjectSpec, policy: &UploadPolicy) -> usize {
        pipeline::abort_leftover_uploads(&self.api, object, policy).await
    }

    async fn writer_id(&self, bucket: &str) -> Result<String, UploadError> {
        let failed = |detail: String| UploadError::WriterId {
            bucket: bucket.to_string(),
            detail,
        };
        let Some(sts) = &self.identity else {
            return Err(failed("no STS client was given to the store".into()));
        };
        self.writer_id
            .get_or_try_init(|| async {
                let answer = sts.get_caller_identity().send().await.map_err(|error| {
                    failed(aws_sdk_sts::error::DisplayErrorContext(&error).to_string())
                })?;
                match answer.user_id() {
                    Some(id) if !id.is_empty() => Ok(id.to_string()),
                    _ => Err(failed("the answer carries no UserId".into())),
                }
            })
            .await
            .cloned()
    }
}

#[derive(Debug, Clone)]
struct S3Api {
    client: Client,
}

fn algorithm(kind: ChecksumKind) -> ChecksumAlgorithm {
    match kind {
        ChecksumKind::Crc32c => ChecksumAlgorithm::Crc32C,
        ChecksumKind::Sha256 => ChecksumAlgorithm::Sha256,
    }
}

fn metadata(object: &ObjectSpec) -> Option<HashMap<String, String>> {
    if object.metadata.is_empty() {
        return None;
    }
    Some(
        object
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

fn sse(object: &ObjectSpec) -> (Option<SdkSse>, Option<String>) {
    match &object.sse {
        ServerSideEncryption::None => (None, None),
        ServerSideEncryption::S3 => (Some(SdkSse::Aes256), None),
        ServerSideEncryption::Kms { key_id } => (Some(SdkSse::AwsKms), key_id.clone()),
    }
}

/// The checksum of `kind` in an answer that carries all of them.
fn pick(kind: ChecksumKind, crc32c: Option<&str>, sha256: Option<&str>) -> Option<String> {
    match kind {
        ChecksumKind::Crc32c => crc32c,
        ChecksumKind::Sha256 => sha256,
    }
    .map(str::to_string)
}

/// A version id worth keeping: `null` (what an unversioned bucket's object is called, and what
/// some S3 implementations return for it) is no version at all.
fn version(id: Option<&str>) -> Option<String> {
    id.filter(|id| *id != "null").map(str::to_string)
}

fn length(body: &Bytes) -> i64 {
    // Parts are at most 5 GiB and objects sent in one piece smaller still.
    i64::try_from(body.len()).unwrap_or(i64::MAX)
}

impl ObjectApi for S3Api {
    async fn create(&self, object: &ObjectSpec) -> Result<String, CallError> {
        let (sse, kms_key) = sse(object);
        let output = self
            .client
            .create_multipart_upload()
            .bucket(&object.bucket)
            .key(&object.key)
            .content_type(&object.content_type)
            .set_metadata(metadata(object))
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms_key)
            .set_expected_bucket_owner(object.expected_bucket_owner.clone())
            .checksum_algorithm(algorithm(object.checksum))
            .checksum_type(ChecksumType::Composite)
            .send()
            .await
            .map_err(|e| CallError::from_sdk(&e))?;
        output.upload_id().map(str::to_string).ok_or_else(|| {
            CallError::bad_answer("CreateMultipartUpload answered without an UploadId")
        })
    }

    async fn upload_part(
        &self,
        object: &ObjectSpec,
        upload_id: &str,
        number: u32,
        body: Bytes,
        checksum: &PartChecksum,
    ) -> Result<String, CallError> {
        let mut request = self
            .client
            .upload_part()
            .bucket(&object.bucket)
            .key(&object.key)
            .upload_id(upload_id)
            .part_number(i32::try_from(number).unwrap_or(i32::MAX))
            .content_length(length(&body))
            .body(ByteStream::from(body))
            .checksum_algorithm(algorithm(object.checksum))
            .set_expected_bucket_owner(object.expected_bucket_owner.clone());
        request = match object.checksum {
            ChecksumKind::Crc32c => request.checksum_crc32_c(&checksum.base64),
            ChecksumKind::Sha256 => request.checksum_sha256(&checksum.base64),
        };
        let output = request.send().await.map_err(|e| CallError::from_sdk(&e))?;
        // S3 has checked the part against the checksum sent (BadDigest otherwise) and echoes
        // what it stored; anything else means the part is not the one computed here.
        let stored = pick(
            object.checksum,
            output.checksum_crc32_c(),
            output.checksum_sha256(),
        );
        if let Some(stored) = stored
            && stored != checksum.base64
        {
            return Err(CallError::bad_answer(&format!(
                "S3 stored the part with checksum {stored}, sent {}",
                checksum.base64
            )));
        }
        output
            .e_tag()
            .map(str::to_string)
            .ok_or_else(|| CallError::bad_answer("UploadPart answered without an ETag"))
    }

    async fn complete(
        &self,
        object: &ObjectSpec,
        upload_id: &str,
        parts: &[UploadedPart],
        total_bytes: u64,
    ) -> Result<Stored, CallError> {
        let completed = parts
            .iter()
            .map(|part| {
                let builder = CompletedPart::builder()
                    .part_number(i32::try_from(part.number).unwrap_or(i32::MAX))
                    .e_tag(&part.etag);
                match object.checksum {
                    ChecksumKind::Crc32c => builder.checksum_crc32_c(&part.checksum.base64),
                    ChecksumKind::Sha256 => builder.checksum_sha256(&part.checksum.base64),
                }
                .build()
            })
            .collect();
        let output = self
            .client
            .complete_multipart_upload()
            .bucket(&object.bucket)
            .key(&object.key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .checksum_type(ChecksumType::Composite)
            .mpu_object_size(i64::try_from(total_bytes).unwrap_or(i64::MAX))
            .set_expected_bucket_owner(object.expected_bucket_owner.clone())
            .send()
            .await
            .map_err(|e| CallError::from_sdk(&e))?;
        Ok(Stored {
            etag: output.e_tag().map(str::to_string),
            version_id: version(output.version_id()),
            checksum: pick(
                object.checksum,
                output.checksum_crc32_c(),
                output.checksum_sha256(),
            ),
        })
    }

    async fn abort(&self, object: &ObjectSpec, upload_id: &str) -> Result<(), CallError> {
        self.client
            .abort_multipart_upload()
            .bucket(&object.bucket)
            .key(&object.key)
            .upload_id(upload_id)
            .set_expected_bucket_owner(object.expected_bucket_owner.clone())
            .send()
            .await
            .map_err(|e| CallError::from_sdk(&e))?;
        Ok(())
    }

    async fn put(
        &self,
        object: &ObjectSpec,
        body: Bytes,
        checksum: &PartChecksum,
    ) -> Result<Stored, CallError> {
        let (sse, kms_key) = sse(object);
        let mut request = self
            .client
            .put_object()
            .bucket(&object.bucket)
            .key(&object.key)
            .content_type(&object.content_type)
            .set_metadata(metadata(object))
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms_key)
            .set_expected_bucket_owner(object.expected_bucket_owner.clone())
            .content_length(length(&body))
            .body(ByteStream::from(body))
            .checksum_algorithm(algorithm(object.checksum));
        request = match object.checksum {
            ChecksumKind::Crc32c => request.checksum_crc32_c(&checksum.base64),
            ChecksumKind::Sha256 => request.checksum_sha256(&checksum.base64),
        };
        let output = request.send().await.map_err(|e| CallError::from_sdk(&e))?;
        Ok(Stored {
            etag: output.e_tag().map(str::to_string),
            version_id: version(output.version_id()),
            checksum: pick(
                object.checksum,
                output.checksum_crc32_c(),
                output.checksum_sha256(),
            ),
        })
    }

    async fn head(
        &self,
        object: &ObjectSpec,
        version_id: Option<&str>,
    ) -> Result<Stored, CallError> {
        let output = self
            .client
            .head_object()
            .bucket(&object.bucket)
            .key(&object.key)
            .set_version_id(version_id.map(str::to_string))
            .checksum_mode(ChecksumMode::Enabled)
            .set_expected_bucket_owner(object.expected_bucket_owner.clone())
            .send()
            .await
            .map_err(|e| CallError::from_sdk(&e))?;
        Ok(Stored {
            etag: output.e_tag().map(str::to_string),
            version_id: version(output.version_id()),
            checksum: pick(
                object.checksum,
                output.checksum_crc32_c(),
                output.checksum_sha256(),
            ),
        })
    }

    async fn delete(&self, object: &ObjectSpec, version_id: Option<&str>) -> Result<(), CallError> {
        self.client
            .delete_object()
            .bucket(&object.bucket)
            .key(&object.key)
            .set_version_id(version_id.map(str::to_string))
            .set_expected_bucket_owner(object.expected_bucket_owner.clone())
            .send()
            .await
            .map_err(|e| CallError::from_sdk(&e))?;
        Ok(())
    }

    async fn list_uploads(&self, object: &ObjectSpec) -> Result<Vec<String>, CallError> {
        let mut ids = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut upload_id_marker: Option<String> = None;
        loop {
            let output = self
                .client
                .list_multipart_uploads()
                .bucket(&object.bucket)
                .prefix(&object.key)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(upload_id_marker.take())
                .set_expected_bucket_owner(object.expected_bucket_owner.clone())
                .send()
                .await
                .map_err(|e| CallError::from_sdk(&e))?;
            ids.extend(
                output
                    .uploads()
                    .iter()
                    .filter(|upload| upload.key() == Some(object.key.as_str()))
                    .filter_map(|upload| upload.upload_id().map(str::to_string)),
            );
            if output.is_truncated() != Some(true) {
                return Ok(ids);
            }
            key_marker = output.next_key_marker().map(str::to_string);
            upload_id_marker = output.next_upload_id_marker().map(str::to_string);
            if key_marker.is_none() && upload_id_marker.is_none() {
                return Ok(ids);
            }
        }
    }
}
