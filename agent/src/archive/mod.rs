//! Log archives: streamed tar with parallel compression and a manifest.
//!
//! [`build_archive`] writes one tar stream, compressed, into any blocking [`std::io::Write`]
//! (a file, or the uploader's part writer so that the upload runs while the archive is built):
//!
//! 1. the extra entries (drain steps' outputs: small and most valuable) first;
//! 2. the symbolic links found, as links;
//! 3. the log files, newest first, each under its absolute path without the leading `/`;
//! 4. `MANIFEST.json` last ([`Manifest`]): every file with its size, mtime, SHA-256 and whether
//!    it changed while being read, and everything skipped or unreadable, with the reason.
//!
//! What goes in is decided first, without reading contents ([`plan`], shown by
//! `drain --dry-run`; see "Selection" below). A deadline stops the archive
//! between files (or inside a large one) and the archive is still whole: the rest is listed as
//! skipped. A file that cannot be read is listed in `errors`; only the output failing aborts.
//!
//! # Selection
//!
//! Sources are absolute paths (a file, or a directory archived recursively) or glob patterns
//! (`*`, `?`, `[...]`, `**`); a configured root that is a symbolic link is resolved once, and
//! nothing below the roots is followed. Excludes with a `/` match full paths, others file names.
//! Files are ordered newest first; `max_file_bytes` keeps a larger file's tail,
//! `max_total_bytes` is filled greedily in that order.
//!
//! # Memory
//!
//! Bounded whatever the size of the logs: one 256 KiB read buffer, and for gzip at most
//! `2 × threads` blocks in flight (no more than 16 MiB of buffers) plus the one being filled,
//! each with its compressed copy. Archiving 512 MB with gzip on 2 threads peaks at about 10 MiB
//! resident for the whole process. zstd runs 1 MiB jobs: about 11 MiB at level 3, 15 MiB at
//! level 6; higher levels need much more for their match tables (30 MiB at 9, 200 MiB at 19).
//! The selection and the manifest grow with the number of files (a few hundred bytes each), not
//! with their size.

mod compress;
mod error;
mod gzip;
mod manifest;
mod select;
mod writer;

#[cfg(test)]
mod tests;

use std::io::Write;
use std::time::Instant;

pub use error::ArchiveError;
pub use gzip::{DEFAULT_BLOCK_BYTES, MAX_BLOCK_BYTES, MIN_BLOCK_BYTES, ParallelGzip};
pub use manifest::{
    ErrorRecord, ExtraRecord, FORMAT_VERSION, FileRecord, MANIFEST_PATH, Manifest, Plan,
    PlannedFile, SkipReason, SkippedRecord, SourceRecord, SymlinkRecord, Totals, TruncateReason,
    Truncation,
};

/// What to archive and how.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchiveSpec {
    /// Absolute paths or glob patterns (`/var/log/app/*.log`; `/var/log/nginx` = a directory,
    /// archived recursively).
    pub sources: Vec<String>,
    /// Glob patterns of paths to leave out: with a `/`, matched against the whole path;
    /// without, against the file name (`*.gz`). An excluded directory is not entered.
    pub exclude: Vec<String>,
    /// How the tar stream is compressed.
    pub compression: Compression,
    /// Cap on the file content bytes archived (uncompressed); `None` = no cap.
    pub max_total_bytes: Option<u64>,
    /// Cap per file: a larger file is archived as its last `max_file_bytes` bytes (logs grow
    /// at the end), marked truncated in the manifest.
    pub max_file_bytes: Option<u64>,
}

/// How the tar stream is compressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compression {
    /// Multi-member gzip compressed in parallel ([`ParallelGzip`]).
    Gzip {
        /// 0–9; 6 is gzip's default.
        level: u32,
        /// Worker threads; 0 = one per available CPU.
        threads: usize,
        /// Bytes of tar stream per gzip member ([`DEFAULT_BLOCK_BYTES`]); clamped to
        /// [`MIN_BLOCK_BYTES`]..=[`MAX_BLOCK_BYTES`].
        block_bytes: usize,
    },
    /// One zstd frame, compressed by libzstd's own worker threads in 1 MiB jobs.
    Zstd {
        /// 1–19 usual (3 is zstd's default); negative levels are faster. From 9 up the window
        /// is capped at 2 MiB, and memory grows with the level (see "Memory" above).
        level: i32,
        /// Worker threads; 0 = one per available CPU.
        threads: u32,
    },
    /// A plain tar (tests, debugging).
    None,
}

impl Default for Compression {
    /// Gzip level 6 on every CPU, 1 MiB blocks.
    fn default() -> Self {
        Compression::Gzip {
            level: 6,
            threads: 0,
            block_bytes: DEFAULT_BLOCK_BYTES,
        }
    }
}

/// An entry that is not a file on disk: a drain step's output, ...
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraEntry {
    /// Path inside the archive, relative (`lifeguard/steps/01-stop-nginx.log`).
    pub path: String,
    /// Its content.
    pub data: Vec<u8>,
}

/// What [`build_archive`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchiveOutcome {
    /// The manifest, as written in the archive.
    pub manifest: Manifest,
    /// SHA-256 (hex) of the `MANIFEST.json` bytes in the archive (for object metadata).
    pub manifest_sha256: String,
    /// Bytes written to the output (compressed).
    pub compressed_bytes: u64,
    /// File content bytes archived (uncompressed, without extras and manifest): what
    /// `max_total_bytes` caps.
    pub content_bytes: u64,
}

/// Builds the archive into `out`, a blocking writer (the caller may run this on a blocking
/// thread and stream `out` to S3). `drain` is embedded in the manifest as `"drain"`. Past the
/// `deadline` no more file content is read: what is left is listed as skipped and the archive
/// is ended properly. `out` is flushed at the end, not closed.
///
/// Errors only when the specification is invalid or the output fails; unreadable files are
/// listed in the manifest's `errors`.
pub fn build_archive<W: Write>(
    spec: &ArchiveSpec,
    extras: &[ExtraEntry],
    drain: serde_json::Value,
    deadline: Option<Instant>,
    out: W,
) -> Result<ArchiveOutcome, ArchiveError> {
    writer::write_archive(
        spec,
        extras,
        drain,
        deadline,
        out,
        &writer::Hooks::default(),
    )
}

/// What would be archived, without reading file contents (for `drain --dry-run`): the
/// selection after caps, in archive order, and what would be skipped.
///
/// Files that change before the archive is built change the outcome: the archive takes sizes
/// when it opens each file.
pub fn plan(spec: &ArchiveSpec) -> Result<Plan, ArchiveError> {
    select::select(spec).map(select::Selection::into_plan)
}
