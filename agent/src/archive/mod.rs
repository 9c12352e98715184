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
//! # Hung filesystems
//!
//! A call on a hung mount (NFS whose server is gone: `open`, `stat`, `read`, `readdir`) blocks
//! in the kernel and cannot be interrupted. The archive never makes such a call on its own
//! thread: the walk runs on a thread per source and the files are read on a reader thread, and
//! each answer is awaited for at most the stall timeout ([`stall_timeout`]), never past the
//! deadline. A call that does not answer costs its thread (left blocked; it holds nothing the
//! archive needs) and that file or that source, not the archive:
//!
//! - a read that stalls after the header was written: the entry is zero-padded, its
//!   `truncated.reason` is `stalled`, and `errors` says which operation stalled; the next file
//!   is read by a new reader thread;
//! - an open or stat that stalls: the file is listed as skipped (`stalled`) and in `errors`;
//! - a walk that stalls: what it found is kept, the source is marked `incomplete` with the
//!   directory it was in, and the next source is walked. The walk as a whole gets a quarter of
//!   the time to the deadline.
//!
//! The archive thus ends by its deadline plus at most the time to write what is left (the
//! padding of the file being read and the manifest) whatever the filesystems do.
//!
//! # Selection
//!
//! Sources are absolute paths (a file, or a directory archived recursively) or glob patterns
//! (`*`, `?`, `[...]`, `**`); a configured root that is a symbolic link is resolved once, and
//! nothing below the roots is followed, neither by the walk nor when a file is read: each root
//! is opened once, and everything below it is reached from that descriptor without following
//! any link (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, or component by component
//! on older kernels). A file reached through a link swapped in since the walk, or that is no
//! longer the file the walk listed (device and inode), is not read: it is listed as skipped,
//! `refused`, with the why in `errors`. Excludes with a `/` match full paths, others file names.
//! Files are ordered newest first; `max_file_bytes` keeps a larger file's tail,
//! `max_total_bytes` is filled greedily in that order.
//!
//! # Memory
//!
//! Bounded whatever the size of the logs: two 256 KiB read buffers (and the few small files read
//! ahead, 16 KiB at most each), and for gzip at most `2 × threads` blocks in flight (no more
//! than 16 MiB of buffers) plus the one being filled, each with its compressed copy. Archiving
//! 512 MB with gzip on 2 threads peaks at about 11 MiB resident for the whole process. zstd
//! runs 1 MiB jobs: about 12 MiB at level 3, 15 MiB at level 6; higher levels need much more for
//! their match tables (30 MiB at 9, 200 MiB at 19).
//! The selection and the manifest grow with the number of files (a few hundred bytes each), not
//! with their size, and that number is capped: the newest `max_files` files (and as many
//! symbolic links) are kept, and `skipped` and `errors` list at most [`MAX_LISTED`] records each,
//! the totals counting the rest. A file costs about 380 bytes of manifest JSON and, at the peak
//! (the manifest's records and its JSON both in memory), about 1.1 KiB: at the default of
//! [`DEFAULT_MAX_FILES`], a manifest of some 19 MB and 55 MiB resident, measured on 100000
//! small files with 40-byte paths. Files past the cap cost nothing but their count.

mod beneath;
mod compress;
mod error;
mod gzip;
mod manifest;
mod reader;
mod select;
mod tree;
mod writer;

#[cfg(test)]
mod tests;

use std::io::Write;
use std::time::{Duration, Instant};

pub use error::ArchiveError;
pub use gzip::{DEFAULT_BLOCK_BYTES, MAX_BLOCK_BYTES, MIN_BLOCK_BYTES, ParallelGzip};
pub use manifest::{
    ErrorRecord, ExtraRecord, FORMAT_VERSION, FileRecord, IncompleteWalk, MANIFEST_PATH,
    MAX_LISTED, Manifest, Plan, PlannedFile, SkipReason, SkippedRecord, SourceRecord,
    SymlinkRecord, Totals, TruncateReason, Truncation, WalkStop,
};
#[cfg(debug_assertions)]
pub use writer::STALL_READ_ENV;

/// The longest one filesystem call (opening a file, its status, one chunk of reading, one step
/// of the walk) may go unanswered before it is taken for stuck. Healthy storage answers in
/// milliseconds, a throttled volume in well under a second; a call still blocked after this long
/// is on a filesystem that stopped answering, and waiting longer would only spend the time the
/// other files need.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The shortest stall timeout, whatever the deadline: several hundred times what a healthy
/// read of a chunk takes.
pub const MIN_STALL_TIMEOUT: Duration = Duration::from_millis(500);

/// The stall timeout of an archive started at `started`: [`STALL_TIMEOUT`], or a quarter of
/// the time to the deadline when that is shorter (but not under [`MIN_STALL_TIMEOUT`]), so that
/// a stuck call costs at most a quarter of the archive's time and the files after it still go
/// in.
pub fn stall_timeout(started: Instant, deadline: Option<Instant>) -> Duration {
    match deadline {
        None => STALL_TIMEOUT,
        Some(deadline) => (deadline.saturating_duration_since(started) / 4)
            .clamp(MIN_STALL_TIMEOUT, STALL_TIMEOUT),
    }
}

/// Default of [`ArchiveSpec::max_files`]: far more files than a log directory holds, few
/// enough that the selection and the manifest stay within tens of megabytes (see "Memory").
pub const DEFAULT_MAX_FILES: u64 = 50_000;

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
    /// Cap on the number of files: the newest are kept, the rest listed as skipped
    /// (`max_files`). Symbolic links are capped at the same number. Bounds the memory of the
    /// selection and the size of the manifest ([`DEFAULT_MAX_FILES`]).
    pub max_files: u64,
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
    /// The `MANIFEST.json` bytes in the archive, for storing beside it.
    pub manifest_json: Vec<u8>,
    /// Bytes written to the output (compressed).
    pub compressed_bytes: u64,
    /// File content bytes archived (uncompressed, without extras and manifest): what
    /// `max_total_bytes` caps.
    pub content_bytes: u64,
}

/// Builds the archive into `out`, a blocking writer (the caller may run this on a blocking
/// thread and stream `out` to S3). `drain` is embedded in the manifest as `"drain"`. Past the
/// `deadline` no more file content is read, nor waited for (see "Hung filesystems"): what is
/// left is listed as skipped and the archive is ended properly. `out` is flushed at the end,
/// not closed.
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
    select::select(spec, &select::WalkLimits::without_deadline()).map(select::Selection::into_plan)
}
