//! Streaming the tar: extras, links, files in priority order, then the manifest.
//!
//! Each file is opened without following a link (a file swapped for a link after planning is
//! not read through it) and without blocking (a file swapped for a FIFO does not hang the
//! drain), then stat'ed: that length, capped, is the entry's size, written in the header before
//! any content. The content is then read in fixed-size chunks and hashed on the way; whatever
//! cannot be read up to that size (the file shrank, a read failed, the deadline passed) is
//! written as zeros, so the tar stays valid and the manifest says what happened.

use std::collections::HashSet;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use sha2::{Digest, Sha256};
use tar::{Builder, EntryType, Header};

use super::compress::Sink;
use super::error::ArchiveError;
use super::manifest::{
    ErrorRecord, ExtraRecord, FORMAT_VERSION, FileRecord, MANIFEST_PATH, Manifest, SkipReason,
    SkippedRecord, Totals, TruncateReason, Truncation, octal_mode, rfc3339,
};
use super::select::{SelectedFile, SelectedLink, select};
use super::{ArchiveOutcome, ArchiveSpec, Compression, ExtraEntry};

/// Bytes read from a file at a time; the deadline is checked between reads.
const READ_BUFFER_BYTES: usize = 256 * 1024;

/// Zeros for padding.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

// `O_NOFOLLOW` and `O_NONBLOCK` for the architectures the agent ships on (the values differ
// between architectures and std does not export them). Elsewhere the file type is still checked
// after opening, which catches a FIFO or a device but not a link to a regular file.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
const OPEN_FLAGS: i32 = 0o400_000 | 0o4000;
#[cfg(all(target_os = "linux", target_arch = "aarch64"))]
const OPEN_FLAGS: i32 = 0o100_000 | 0o4000;
#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
const OPEN_FLAGS: i32 = 0;

/// Test hooks: let a test change a file at a precise moment.
#[derive(Default)]
pub(crate) struct Hooks<'a> {
    /// Called with the path to read just before a file is opened.
    pub before_open: Option<&'a dyn Fn(&Path)>,
    /// Called once a file is opened and its size taken, before its content is read.
    pub after_open: Option<&'a dyn Fn(&Path)>,
}

fn is_past(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

fn compression_name(compression: &Compression) -> &'static str {
    match compression {
        Compression::Gzip { .. } => "gzip",
        Compression::Zstd { .. } => "zstd",
        Compression::None => "none",
    }
}

fn sha256_hex(hasher: Sha256) -> String {
    hex::encode(hasher.finalize())
}

fn mtime_secs(meta: &Metadata) -> u64 {
    u64::try_from(meta.mtime()).unwrap_or(0)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Checks that every extra has a plain relative path, distinct from the others and from the
/// manifest's, and returns those paths.
fn validate_extras(extras: &[ExtraEntry]) -> Result<HashSet<PathBuf>, ArchiveError> {
    let mut names = HashSet::new();
    for extra in extras {
        let invalid = |reason: &str| ArchiveError::ExtraPath {
            path: extra.path.clone(),
            reason: reason.to_string(),
        };
        let path = Path::new(&extra.path);
        if extra.path.is_empty() || extra.path.ends_with('/') {
            return Err(invalid("must name a file"));
        }
        if !extra
            .path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
        {
            return Err(invalid(
                "must be relative, without empty, `.` or `..` components",
            ));
        }
        if path == Path::new(MANIFEST_PATH) {
            return Err(invalid("is the manifest's path"));
        }
        if !names.insert(path.to_path_buf()) {
            return Err(invalid("is given twice"));
        }
    }
    Ok(names)
}

/// What [`ArchiveWriter::write_file`] made of one file.
struct FileResult {
    /// The entry, when one was written.
    record: Option<FileRecord>,
    /// What went wrong, when something did.
    error: Option<ErrorRecord>,
}

impl FileResult {
    fn failed(path: &str, operation: &str, error: &dyn std::fmt::Display) -> FileResult {
        FileResult {
            record: None,
            error: Some(ErrorRecord {
                path: path.to_string(),
                operation: operation.to_string(),
                error: error.to_string(),
            }),
        }
    }
}

/// The archive being written, with the manifest being built.
struct ArchiveWriter<'h, W: Write> {
    tar: Builder<Sink<W>>,
    manifest: Manifest,
    deadline: Option<Instant>,
    hooks: &'h Hooks<'h>,
    buffer: Vec<u8>,
}

pub(crate) fn write_archive<W: Write>(
    spec: &ArchiveSpec,
    extras: &[ExtraEntry],
    drain: serde_json::Value,
    deadline: Option<Instant>,
    out: W,
    hooks: &Hooks<'_>,
) -> Result<ArchiveOutcome, ArchiveError> {
    let started = Instant::now();
    let created_at = rfc3339(SystemTime::now());
    let extra_names = validate_extras(extras)?;
    let selection = select(spec)?;
    let planned_bytes = selection.file_bytes();
    let sink = Sink::new(&spec.compression, out)?;

    let mut writer = ArchiveWriter {
        tar: Builder::new(sink),
        manifest: Manifest {
            format_version: FORMAT_VERSION,
            created_at,
            compression: compression_name(&spec.compression).to_string(),
            drain,
            sources: selection.sources,
            extras: Vec::with_capacity(extras.len()),
            files: Vec::with_capacity(selection.files.len()),
            symlinks: Vec::with_capacity(selection.links.len()),
            skipped: selection.skipped,
            errors: selection.errors,
            totals: Totals::default(),
        },
        deadline,
        hooks,
        buffer: vec![0; READ_BUFFER_BYTES],
    };

    for extra in extras {
        writer.write_extra(extra)?;
    }
    for link in selection.links {
        if extra_names.contains(&link.archive_name) {
            writer.skip(link.record.path, 0, SkipReason::NameConflict);
        } else if is_past(deadline) {
            writer.skip(link.record.path, 0, SkipReason::Deadline);
        } else {
            writer.write_link(link)?;
        }
    }
    // Bytes the total cap still owes to the files after the current one, so that a file that
    // grew since planning cannot take them.
    let mut owed_later = planned_bytes;
    let mut written: u64 = 0;
    for file in &selection.files {
        owed_later -= file.planned.size;
        if extra_names.contains(&file.archive_name) {
            writer.skip(
                file.planned.path.clone(),
                file.planned.original_size,
                SkipReason::NameConflict,
            );
            continue;
        }
        if is_past(deadline) {
            writer.skip(
                file.planned.path.clone(),
                file.planned.original_size,
                SkipReason::Deadline,
            );
            continue;
        }
        let budget = spec
            .max_total_bytes
            .map(|cap| cap.saturating_sub(written.saturating_add(owed_later)));
        let result = writer.write_file(file, spec.max_file_bytes, budget)?;
        if let Some(record) = result.record {
            written += record.size;
            writer.manifest.files.push(record);
        }
        if let Some(error) = result.error {
            writer.manifest.errors.push(error);
        }
    }
    writer.finish(started)
}

impl<W: Write> ArchiveWriter<'_, W> {
    fn skip(&mut self, path: String, size: u64, reason: SkipReason) {
        if reason == SkipReason::Deadline {
            self.manifest.totals.deadline_reached = true;
        }
        self.manifest
            .skipped
            .push(SkippedRecord { path, size, reason });
    }

    fn write_extra(&mut self, extra: &ExtraEntry) -> Result<(), ArchiveError> {
        let mut header = Header::new_gnu();
        header.set_entry_type(EntryType::Regular);
        header.set_size(extra.data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(now_secs());
        self.tar
            .append_data(&mut header, &extra.path, extra.data.as_slice())
            .map_err(|source| ArchiveError::WriteEntry {
                path: extra.path.clone(),
                source,
            })?;
        self.manifest.extras.push(ExtraRecord {
            path: extra.path.clone(),
            size: extra.data.len() as u64,
            sha256: hex::encode(Sha256::digest(&extra.data)),
        });
        Ok(())
    }

    fn write_link(&mut self, link: SelectedLink) -> Result<(), ArchiveError> {
        let meta = &link.metadata;
        let mut header = Header::new_gnu();
        header.set_entry_type(EntryType::Symlink);
        header.set_size(0);
        header.set_mode(meta.permissions().mode() & 0o7777);
        header.set_mtime(mtime_secs(meta));
        header.set_uid(u64::from(meta.uid()));
        header.set_gid(u64::from(meta.gid()));
        self.tar
            .append_link(&mut header, &link.archive_name, &link.target)
            .map_err(|source| ArchiveError::WriteEntry {
                path: link.record.path.clone(),
                source,
            })?;
        self.manifest.symlinks.push(link.record);
        Ok(())
    }

    /// Archives one file. Only a failure of the output is an `Err`; a file that cannot be read
    /// is reported in the result.
    fn write_file(
        &mut self,
        file: &SelectedFile,
        max_file_bytes: Option<u64>,
        budget: Option<u64>,
    ) -> Result<FileResult, ArchiveError> {
        let path = &file.planned.path;
        if let Some(hook) = self.hooks.before_open {
            hook(&file.real_path);
        }
        let mut handle = match OpenOptions::new()
            .read(true)
            .custom_flags(OPEN_FLAGS)
            .open(&file.real_path)
        {
            Ok(handle) => handle,
            Err(e) => return Ok(FileResult::failed(path, "open", &e)),
        };
        let opened = match handle.metadata() {
            Ok(meta) => meta,
            Err(e) => return Ok(FileResult::failed(path, "stat", &e)),
        };
        if !opened.is_file() {
            return Ok(FileResult::failed(
                path,
                "open",
                &"no longer a regular file (replaced since it was listed)",
            ));
        }
        let original_size = opened.len();
        let mut size = max_file_bytes.map_or(original_size, |cap| original_size.min(cap));
        let mut cut = (size < original_size).then_some(TruncateReason::MaxFileBytes);
        if let Some(budget) = budget
            && budget < size
        {
            size = budget;
            cut = Some(TruncateReason::MaxTotalBytes);
        }
        let offset = original_size - size;
        if let Some(hook) = self.hooks.after_open {
            hook(&file.real_path);
        }

        let mut header = Header::new_gnu();
        header.set_entry_type(EntryType::Regular);
        header.set_size(size);
        header.set_mode(opened.permissions().mode() & 0o7777);
        header.set_mtime(mtime_secs(&opened));
        header.set_uid(u64::from(opened.uid()));
        header.set_gid(u64::from(opened.gid()));
        let write_error = |source| ArchiveError::WriteEntry {
            path: path.clone(),
            source,
        };
        // The header alone; the content follows, written here so that it can be read in large
        // chunks, hashed, and padded when the file does not deliver it.
        self.tar
            .append_data(&mut header, &file.archive_name, io::empty())
            .map_err(write_error)?;

        let copied = copy_content(
            &mut handle,
            offset,
            size,
            self.deadline,
            &mut self.buffer,
            self.tar.get_mut(),
        )
        .map_err(write_error)?;
        let tar_padding = (512 - size % 512) % 512;
        self.tar
            .get_mut()
            .write_all(&ZEROS[..tar_padding as usize])
            .map_err(write_error)?;

        let changed_while_reading = match handle.metadata() {
            Ok(after) => {
                after.len() != original_size || after.modified().ok() != opened.modified().ok()
            }
            Err(_) => true,
        };
        let padding = size - copied.read;
        let truncated = match &copied.stop {
            Some((reason, _)) => Some(Truncation {
                reason: *reason,
                from_offset: offset + copied.read,
            }),
            None => cut.map(|reason| Truncation {
                reason,
                from_offset: offset,
            }),
        };
        if copied
            .stop
            .as_ref()
            .is_some_and(|(r, _)| *r == TruncateReason::Deadline)
        {
            self.manifest.totals.deadline_reached = true;
        }
        let error = match copied.stop {
            Some((_, Some(e))) => Some(ErrorRecord {
                path: path.clone(),
                operation: "read".to_string(),
                error: e.to_string(),
            }),
            _ => None,
        };
        let record = FileRecord {
            path: path.clone(),
            size,
            original_size,
            offset,
            padding,
            mtime: rfc3339(opened.modified().unwrap_or(SystemTime::UNIX_EPOCH)),
            mode: octal_mode(opened.permissions().mode()),
            sha256: copied.sha256,
            changed_while_reading,
            truncated,
        };
        Ok(FileResult {
            record: Some(record),
            error,
        })
    }

    fn finish(mut self, started: Instant) -> Result<ArchiveOutcome, ArchiveError> {
        let m = &mut self.manifest;
        let totals = &mut m.totals;
        totals.files = m.files.len() as u64;
        totals.file_bytes = m.files.iter().map(|f| f.size).sum();
        totals.symlinks = m.symlinks.len() as u64;
        totals.extras = m.extras.len() as u64;
        totals.extra_bytes = m.extras.iter().map(|e| e.size).sum();
        totals.skipped = m.skipped.len() as u64;
        totals.skipped_bytes = m.skipped.iter().map(|s| s.size).sum();
        totals.errors = m.errors.len() as u64;
        totals.truncated = m.files.iter().filter(|f| f.truncated.is_some()).count() as u64;
        totals.changed_while_reading =
            m.files.iter().filter(|f| f.changed_while_reading).count() as u64;
        totals.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);

        let json =
            serde_json::to_vec_pretty(&self.manifest).map_err(|source| ArchiveError::Manifest {
                path: MANIFEST_PATH,
                source,
            })?;
        let mut header = Header::new_gnu();
        header.set_entry_type(EntryType::Regular);
        header.set_size(json.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(now_secs());
        self.tar
            .append_data(&mut header, MANIFEST_PATH, json.as_slice())
            .map_err(|source| ArchiveError::WriteEntry {
                path: MANIFEST_PATH.to_string(),
                source,
            })?;
        let sink = self
            .tar
            .into_inner()
            .map_err(|source| ArchiveError::Finish { source })?;
        let compressed_bytes = sink
            .finish()
            .map_err(|source| ArchiveError::Finish { source })?;
        Ok(ArchiveOutcome {
            content_bytes: self.manifest.totals.file_bytes,
            manifest_sha256: hex::encode(Sha256::digest(&json)),
            manifest: self.manifest,
            compressed_bytes,
        })
    }
}

/// What [`copy_content`] did.
struct Copied {
    /// Bytes of the file copied; the rest of the entry is zeros.
    read: u64,
    /// Why it stopped before `size`, with the read error if that was the cause.
    stop: Option<(TruncateReason, Option<io::Error>)>,
    /// SHA-256 of the entry's content (padding included), hex.
    sha256: String,
}

/// Copies exactly `size` bytes of entry content to `out`: the file's bytes from `offset`, then
/// zeros for whatever the file does not deliver. Only an output failure is an `Err`.
fn copy_content(
    file: &mut File,
    offset: u64,
    size: u64,
    deadline: Option<Instant>,
    buffer: &mut [u8],
    out: &mut dyn Write,
) -> io::Result<Copied> {
    let mut hasher = Sha256::new();
    let mut read: u64 = 0;
    let mut stop = None;
    if offset > 0
        && let Err(e) = file.seek(SeekFrom::Start(offset))
    {
        stop = Some((TruncateReason::ReadError, Some(e)));
    }
    while stop.is_none() && read < size {
        if is_past(deadline) {
            stop = Some((TruncateReason::Deadline, None));
            break;
        }
        let want = usize::try_from(size - read).map_or(buffer.len(), |n| n.min(buffer.len()));
        match file.read(&mut buffer[..want]) {
            Ok(0) => stop = Some((TruncateReason::Shrank, None)),
            Ok(n) => {
                hasher.update(&buffer[..n]);
                out.write_all(&buffer[..n])?;
                read += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => stop = Some((TruncateReason::ReadError, Some(e))),
        }
    }
    let mut padding = size - read;
    while padding > 0 {
        let n = usize::try_from(padding).map_or(ZEROS.len(), |p| p.min(ZEROS.len()));
        hasher.update(&ZEROS[..n]);
        out.write_all(&ZEROS[..n])?;
        padding -= n as u64;
    }
    Ok(Copied {
        read,
        stop,
        sha256: sha256_hex(hasher),
    })
}
