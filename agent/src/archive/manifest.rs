//! `MANIFEST.json`, the last entry of every archive, and the plan `drain --dry-run` shows.
//!
//! Field names are stable: readers (the controller's drill check, operators with `jq`) rely on
//! them. A change that would break a reader bumps [`FORMAT_VERSION`]; new fields may be added
//! without a bump, so readers should ignore fields they do not know.
//!
//! Paths are the absolute paths on the instance (`/var/log/app/app.log`); inside the archive the
//! entry is stored under the same path without its leading `/` (`var/log/app/app.log`), as GNU
//! tar does. Extras are stored under their own relative path. Times are RFC 3339 in UTC.
//!
//! A name that is not valid UTF-8 is stored byte for byte in the tar, but JSON strings are
//! Unicode: its `path` shows each invalid byte as U+FFFD, so two such names can read alike.
//! Every record that names a file then also carries `path_base64` (and a link whose target is
//! not UTF-8, `target_base64`): the exact bytes, standard base64 with padding. Absent for UTF-8
//! names, which `path` already holds exactly.
//!
//! The manifest stays bounded whatever the number of files: `files` and `symlinks` hold at most
//! `max_files` records each, `skipped` and `errors` at most [`MAX_LISTED`] each; the totals
//! count everything (`skipped_unlisted` and `errors_unlisted` say how many records were left
//! out of those two lists).

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

/// The manifest's path inside the archive (the archive's last entry).
pub const MANIFEST_PATH: &str = "MANIFEST.json";

/// Version of the manifest layout.
pub const FORMAT_VERSION: u32 = 1;

/// Most records kept in `skipped`, and in `errors`. At a few hundred bytes of JSON each, 1000
/// records are a few hundred kilobytes: enough to see what went wrong and where, small enough
/// that a directory of millions of sockets or unreadable files cannot bloat the manifest.
pub const MAX_LISTED: usize = 1000;

/// Everything the archive holds, and everything it was meant to hold but does not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Version of this layout ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// When archiving started (RFC 3339, UTC).
    pub created_at: String,
    /// How the archive is compressed: `gzip` (a multi-member gzip stream), `zstd` or `none`.
    pub compression: String,
    /// What the caller said about the drain (instance, group, reason, steps...), verbatim.
    pub drain: serde_json::Value,
    /// Each configured source with how many entries it matched.
    pub sources: Vec<SourceRecord>,
    /// The extra entries (drain steps' outputs), in archive order; they come first.
    pub extras: Vec<ExtraRecord>,
    /// The log files archived, in archive order (newest first).
    pub files: Vec<FileRecord>,
    /// The symbolic links archived as links.
    pub symlinks: Vec<SymlinkRecord>,
    /// What was found but deliberately left out.
    pub skipped: Vec<SkippedRecord>,
    /// What could not be read; archiving went on without it.
    pub errors: Vec<ErrorRecord>,
    /// Sums over the lists above.
    pub totals: Totals,
}

/// A configured source and what it matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// The source as configured (a path or a glob pattern).
    pub source: String,
    /// Files, symbolic links and special files it matched, excludes applied (directories are
    /// walked, not counted; an entry also matched by an earlier source is counted by both).
    /// 0 when nothing matched, which is not an error.
    pub matched: u64,
    /// Set when the search below this source stopped before it was done: entries not found by
    /// then are missing from the archive and from every list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<IncompleteWalk>,
}

/// An extra entry (a drain step's output, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraRecord {
    /// Path inside the archive (`lifeguard/steps/01-stop-nginx.log`).
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256 of the bytes, lowercase hex.
    pub sha256: String,
}

/// A log file in the archive.
///
/// The entry holds `size` bytes: the file's bytes from `offset` on (all of it unless it was
/// tailed by a cap), of which the last `padding` bytes are zeros that stand for bytes that could
/// not be read (the file shrank, the deadline passed, a read failed). A file that grew while it
/// was read holds only the length seen when it was opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Absolute path on the instance; stored in the archive without the leading `/`.
    pub path: String,
    /// The path's exact bytes, base64, when they are not UTF-8 (see the module documentation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_base64: Option<String>,
    /// Bytes in the archive entry (its tar size).
    pub size: u64,
    /// The file's size when it was opened.
    pub original_size: u64,
    /// Offset in the file of the entry's first byte: 0, or where the kept tail starts.
    pub offset: u64,
    /// Zero bytes at the end of the entry that are not the file's content.
    pub padding: u64,
    /// Modification time when the file was opened (RFC 3339, UTC); also the entry's mtime.
    pub mtime: String,
    /// Permission bits, octal (`"0640"`); also the entry's mode.
    pub mode: String,
    /// SHA-256 of the entry's bytes (what extraction yields, padding included), lowercase hex.
    pub sha256: String,
    /// The file's size or mtime after reading differed from those at open: it was written to
    /// (or truncated) while being archived. Not checked (false) when reading was cut short by
    /// the deadline or a stall: `truncated` says so.
    pub changed_while_reading: bool,
    /// Set when the entry is not the whole file as it was at open.
    pub truncated: Option<Truncation>,
}

/// Why and where an entry is not the whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truncation {
    /// Why.
    pub reason: TruncateReason,
    /// An offset in the file. For `max_file_bytes` and `max_total_bytes`: the file's bytes
    /// before it are left out (it equals [`FileRecord::offset`]). For `shrank`, `deadline`,
    /// `read_error` and `stalled`: the file's bytes from it on are missing and the entry is
    /// zero-padded from there (it equals `offset + size - padding`). When both happened, the
    /// padding is reported.
    pub from_offset: u64,
}

/// Why an entry is not the whole file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TruncateReason {
    /// The file is larger than the per-file cap: only its last `max_file_bytes` are kept.
    MaxFileBytes,
    /// The file grew between planning and opening beyond what the total cap leaves: only its
    /// tail that fits is kept.
    MaxTotalBytes,
    /// The file became shorter while it was read (copytruncate rotation): zero-padded.
    Shrank,
    /// The deadline passed while the file was read: zero-padded.
    Deadline,
    /// Reading failed midway (the failure is in `errors`): zero-padded.
    ReadError,
    /// A read did not return in time: it was stuck in the kernel, as on a hung NFS mount,
    /// and cannot be interrupted. The archive stopped waiting for it (after the stall timeout
    /// or at the deadline, whichever came first) and zero-padded the entry; `errors` holds the
    /// operation that stalled.
    Stalled,
}

/// A symbolic link, archived as a link (never followed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SymlinkRecord {
    /// Absolute path of the link on the instance.
    pub path: String,
    /// The path's exact bytes, base64, when they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_base64: Option<String>,
    /// The link's target, verbatim (relative or absolute, existing or not).
    pub target: String,
    /// The target's exact bytes, base64, when they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_base64: Option<String>,
}

/// Something found but left out of the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedRecord {
    /// Absolute path on the instance.
    pub path: String,
    /// The path's exact bytes, base64, when they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_base64: Option<String>,
    /// The file's size (0 for special files and links).
    pub size: u64,
    /// Why.
    pub reason: SkipReason,
}

/// Why something was left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// It did not fit in `max_total_bytes` after the newer files.
    MaxTotalBytes,
    /// The deadline passed before it was started.
    Deadline,
    /// A socket, FIFO or device: only regular files and links are archived.
    SpecialFile,
    /// Its path inside the archive is taken by an extra entry or by the manifest.
    NameConflict,
    /// More files (or symbolic links) matched than `max_files`: the newest files (the first
    /// links found) were kept.
    MaxFiles,
    /// Opening it or reading its status did not return in time (a hung filesystem), before
    /// anything of it was written; `errors` holds the operation that stalled.
    Stalled,
    /// Not read, for safety: reaching it again from its source's root met a symbolic link (a
    /// directory on the way was swapped for a link since the walk), or found another file
    /// than the one the walk listed (device and inode differ: it was replaced). Reading it
    /// could have archived a file from outside the sources. `errors` says which (`open`,
    /// a message starting with `refused:`).
    Refused,
}

/// Something that could not be read; archiving went on without it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorRecord {
    /// Absolute path on the instance (or the configured source).
    pub path: String,
    /// The path's exact bytes, base64, when they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_base64: Option<String>,
    /// What was being done: `resolve`, `walk`, `stat`, `read_link`, `open`, `read`.
    pub operation: String,
    /// The system's message (`No such file or directory (os error 2)`), or for a call that
    /// never returned, a message starting with `stalled:`.
    pub error: String,
}

/// Where the search for files under a source stopped before it was done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncompleteWalk {
    /// Why.
    pub reason: WalkStop,
    /// The directory the walk was in when it stopped (as far as can be told: the last one it
    /// entered or listed an entry of), or the source's root when it never got further.
    pub path: String,
    /// The path's exact bytes, base64, when they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_base64: Option<String>,
}

/// Why the search for files stopped early. What it found until then is archived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WalkStop {
    /// Reading a directory or a file's status did not return in time (a hung filesystem);
    /// `errors` holds the operation. The next source is walked.
    Stalled,
    /// The walk's share of the deadline ran out (or it had run out before this source was
    /// started).
    Deadline,
}

/// Sums over the manifest's lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Entries in `files`.
    pub files: u64,
    /// Sum of the files' `size`: the file content bytes archived (what `max_total_bytes` caps).
    pub file_bytes: u64,
    /// Entries in `symlinks`.
    pub symlinks: u64,
    /// Entries in `extras`.
    pub extras: u64,
    /// Sum of the extras' `size`.
    pub extra_bytes: u64,
    /// Entries skipped: those in `skipped` and those left out of that list.
    pub skipped: u64,
    /// Sum of the skipped entries' `size`, listed or not.
    pub skipped_bytes: u64,
    /// Skipped entries not listed in `skipped` (it keeps at most [`MAX_LISTED`]).
    #[serde(default)]
    pub skipped_unlisted: u64,
    /// Errors: those in `errors` and those left out of that list.
    pub errors: u64,
    /// Errors not listed in `errors` (it keeps at most [`MAX_LISTED`]).
    #[serde(default)]
    pub errors_unlisted: u64,
    /// Files with `truncated` set.
    pub truncated: u64,
    /// Files with `changed_while_reading`.
    pub changed_while_reading: u64,
    /// Files cut short (`truncated.reason` = `stalled`) or left out (`skipped` reason
    /// `stalled`) because a filesystem call did not return in time.
    #[serde(default)]
    pub stalled: u64,
    /// The deadline passed before everything planned was archived.
    pub deadline_reached: bool,
    /// The search for files stopped early under at least one source (see its `incomplete`).
    #[serde(default)]
    pub walk_incomplete: bool,
    /// Time from the start of archiving to the manifest, in milliseconds.
    pub elapsed_ms: u64,
}

/// What an archive would hold, without reading any file's contents (`drain --dry-run`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Each configured source with how many entries it matched.
    pub sources: Vec<SourceRecord>,
    /// The files that would be archived, in archive order (newest first), caps applied.
    pub files: Vec<PlannedFile>,
    /// The symbolic links that would be archived as links.
    pub symlinks: Vec<SymlinkRecord>,
    /// What would be left out (caps, special files, name conflicts); at most [`MAX_LISTED`].
    pub skipped: Vec<SkippedRecord>,
    /// What could not be examined; at most [`MAX_LISTED`].
    pub errors: Vec<ErrorRecord>,
    /// Sum of the files' `size`.
    pub file_bytes: u64,
    /// Entries that would be left out, listed in `skipped` or not.
    #[serde(default)]
    pub skipped_count: u64,
    /// Sum of their sizes.
    #[serde(default)]
    pub skipped_bytes: u64,
    /// Errors, listed in `errors` or not.
    #[serde(default)]
    pub error_count: u64,
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SkipReason::MaxTotalBytes => "max_total_bytes",
            SkipReason::Deadline => "deadline",
            SkipReason::SpecialFile => "special_file",
            SkipReason::NameConflict => "name_conflict",
            SkipReason::MaxFiles => "max_files",
            SkipReason::Stalled => "stalled",
            SkipReason::Refused => "refused",
        })
    }
}

/// A human-readable listing, one entry a line, ending with a newline.
impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "archive: {} files, {} bytes, newest first; {} symbolic links; {} skipped; {} errors",
            self.files.len(),
            self.file_bytes,
            self.symlinks.len(),
            self.skipped_count,
            self.error_count
        )?;
        for source in &self.sources {
            write!(f, "  source {}: {} matched", source.source, source.matched)?;
            match &source.incomplete {
                Some(stop) => writeln!(
                    f,
                    " (search incomplete: {} in {})",
                    match stop.reason {
                        WalkStop::Stalled => "stalled",
                        WalkStop::Deadline => "deadline",
                    },
                    stop.path
                )?,
                None => writeln!(f)?,
            }
        }
        for file in &self.files {
            write!(
                f,
                "  file {} ({} bytes, {}",
                file.path, file.size, file.mtime
            )?;
            if file.offset > 0 {
                write!(f, ", last {} of {} bytes", file.size, file.original_size)?;
            }
            writeln!(f, ")")?;
        }
        for link in &self.symlinks {
            writeln!(f, "  link {} -> {}", link.path, link.target)?;
        }
        for skipped in &self.skipped {
            writeln!(
                f,
                "  skipped {} ({} bytes): {}",
                skipped.path, skipped.size, skipped.reason
            )?;
        }
        let unlisted = self.skipped_count.saturating_sub(self.skipped.len() as u64);
        if unlisted > 0 {
            writeln!(f, "  ... and {unlisted} more skipped, not listed")?;
        }
        for error in &self.errors {
            writeln!(
                f,
                "  error {}: {}: {}",
                error.path, error.operation, error.error
            )?;
        }
        let unlisted = self.error_count.saturating_sub(self.errors.len() as u64);
        if unlisted > 0 {
            writeln!(f, "  ... and {unlisted} more errors, not listed")?;
        }
        Ok(())
    }
}

/// A file the archive would hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedFile {
    /// Absolute path on the instance.
    pub path: String,
    /// The path's exact bytes, base64, when they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_base64: Option<String>,
    /// Bytes that would be archived (after `max_file_bytes`).
    pub size: u64,
    /// The file's size now.
    pub original_size: u64,
    /// Where the kept tail would start (0 unless the file is larger than `max_file_bytes`).
    pub offset: u64,
    /// Modification time (RFC 3339, UTC).
    pub mtime: String,
    /// Permission bits, octal.
    pub mode: String,
}

/// Formats a time as RFC 3339 in UTC (`2026-11-22T10:00:00.123456789Z`).
pub(crate) fn rfc3339(time: std::time::SystemTime) -> String {
    let time = time::OffsetDateTime::from(time);
    time.format(&time::format_description::well_known::Rfc3339)
        // Only years outside 0..=9999 cannot be formatted; say what the time is anyway.
        .unwrap_or_else(|_| format!("@{}", time.unix_timestamp()))
}

/// Formats permission bits as four octal digits (`0644`).
pub(crate) fn octal_mode(mode: u32) -> String {
    format!("{:04o}", mode & 0o7777)
}

/// A path as the manifest names it: readable (`path`, invalid bytes shown as U+FFFD) and, when
/// that is not exact, its bytes in base64 (`path_base64`).
impl SkippedRecord {
    /// The record of `path`, left out for `reason`.
    pub(crate) fn of(path: &Path, size: u64, reason: SkipReason) -> SkippedRecord {
        let (path, path_base64) = manifest_name(path);
        SkippedRecord {
            path,
            path_base64,
            size,
            reason,
        }
    }
}

pub(crate) fn manifest_name(path: &Path) -> (String, Option<String>) {
    match path.to_str() {
        Some(text) => (text.to_string(), None),
        None => (
            path.to_string_lossy().into_owned(),
            Some(BASE64.encode(path.as_os_str().as_bytes())),
        ),
    }
}

/// A list that keeps its first [`MAX_LISTED`] records and counts all, with their bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed<T> {
    pub records: Vec<T>,
    /// Records pushed, kept or not.
    pub count: u64,
    /// Sum of the bytes given with them.
    pub bytes: u64,
}

impl<T> Default for Listed<T> {
    fn default() -> Self {
        Listed {
            records: Vec::new(),
            count: 0,
            bytes: 0,
        }
    }
}

impl<T> Listed<T> {
    pub fn push(&mut self, record: T, bytes: u64) {
        self.count += 1;
        self.bytes = self.bytes.saturating_add(bytes);
        if self.records.len() < MAX_LISTED {
            self.records.push(record);
        }
    }

    /// Like [`Listed::push`], making the record only when it is kept.
    pub fn push_with(&mut self, bytes: u64, make: impl FnOnce() -> T) {
        self.count += 1;
        self.bytes = self.bytes.saturating_add(bytes);
        if self.records.len() < MAX_LISTED {
            self.records.push(make());
        }
    }

    /// Records counted but not kept.
    pub fn unlisted(&self) -> u64 {
        self.count - self.records.len() as u64
    }
}
