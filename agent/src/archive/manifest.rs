//! `MANIFEST.json`, the last entry of every archive, and the plan `drain --dry-run` shows.
//!
//! Field names are stable: readers (the controller's drill check, operators with `jq`) rely on
//! them. A change that would break a reader bumps [`FORMAT_VERSION`]; new fields may be added
//! without a bump, so readers should ignore fields they do not know.
//!
//! Paths are the absolute paths on the instance (`/var/log/app/app.log`); inside the archive the
//! entry is stored under the same path without its leading `/` (`var/log/app/app.log`), as GNU
//! tar does. Extras are stored under their own relative path. Times are RFC 3339 in UTC.

use serde::{Deserialize, Serialize};

/// The manifest's path inside the archive (the archive's last entry).
pub const MANIFEST_PATH: &str = "MANIFEST.json";

/// Version of the manifest layout.
pub const FORMAT_VERSION: u32 = 1;

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
    /// (or truncated) while being archived.
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
    /// before it are left out (it equals [`FileRecord::offset`]). For `shrank`, `deadline` and
    /// `read_error`: the file's bytes from it on are missing and the entry is zero-padded from
    /// there (it equals `offset + size - padding`). When both happened, the padding is reported.
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
}

/// A symbolic link, archived as a link (never followed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SymlinkRecord {
    /// Absolute path of the link on the instance.
    pub path: String,
    /// The link's target, verbatim (relative or absolute, existing or not).
    pub target: String,
}

/// Something found but left out of the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedRecord {
    /// Absolute path on the instance.
    pub path: String,
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
}

/// Something that could not be read; archiving went on without it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorRecord {
    /// Absolute path on the instance (or the configured source).
    pub path: String,
    /// What was being done: `resolve`, `walk`, `stat`, `read_link`, `open`, `read`.
    pub operation: String,
    /// The system's message (`No such file or directory (os error 2)`).
    pub error: String,
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
    /// Entries in `skipped`.
    pub skipped: u64,
    /// Sum of the skipped entries' `size`.
    pub skipped_bytes: u64,
    /// Entries in `errors`.
    pub errors: u64,
    /// Files with `truncated` set.
    pub truncated: u64,
    /// Files with `changed_while_reading`.
    pub changed_while_reading: u64,
    /// The deadline passed before everything planned was archived.
    pub deadline_reached: bool,
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
    /// What would be left out (caps, special files, name conflicts).
    pub skipped: Vec<SkippedRecord>,
    /// What could not be examined.
    pub errors: Vec<ErrorRecord>,
    /// Sum of the files' `size`.
    pub file_bytes: u64,
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SkipReason::MaxTotalBytes => "max_total_bytes",
            SkipReason::Deadline => "deadline",
            SkipReason::SpecialFile => "special_file",
            SkipReason::NameConflict => "name_conflict",
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
            self.skipped.len(),
            self.errors.len()
        )?;
        for source in &self.sources {
            writeln!(f, "  source {}: {} matched", source.source, source.matched)?;
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
        for error in &self.errors {
            writeln!(
                f,
                "  error {}: {}: {}",
                error.path, error.operation, error.error
            )?;
        }
        Ok(())
    }
}

/// A file the archive would hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedFile {
    /// Absolute path on the instance.
    pub path: String,
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
