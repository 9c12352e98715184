//! Streaming the tar: extras, links, files in priority order, then the manifest.
//!
//! Each file is opened relative to its source's root, following no link on the way nor at the
//! end ([`super::beneath`]: a directory or file swapped for a link after the walk is not read
//! through it), and without blocking (a file swapped for a FIFO does not hang the drain), then
//! stat'ed: a file whose device and inode are not those the walk listed is refused (skipped as
//! `refused`, with the why in `errors`); otherwise that length, capped, is the entry's size,
//! written in the header before any content. The content is then read in fixed-size chunks and hashed on the way; whatever
//! cannot be read up to that size (the file shrank, a read failed, the deadline passed, a read
//! stalled) is written as zeros, so the tar stays valid and the manifest says what happened.
//!
//! Those calls (open, fstat, read) are made on a reader thread ([`super::reader`]) and each
//! answer is awaited for at most the stall timeout and never past the deadline: a call stuck in
//! the kernel (a hung NFS mount) costs that thread and that file, never the archive.

use std::collections::{HashSet, VecDeque};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use tar::{Builder, EntryType, Header};

use super::beneath::Resolve;
use super::compress::Sink;
use super::error::ArchiveError;
use super::manifest::{
    ErrorRecord, ExtraRecord, FORMAT_VERSION, FileRecord, Listed, MANIFEST_PATH, Manifest,
    SkipReason, SkippedRecord, Totals, TruncateReason, Truncation, WalkStop, octal_mode, rfc3339,
};
#[cfg(debug_assertions)]
use super::reader::Hang;
use super::reader::{Caps, Opened, Reader, Reply, Request, Stop, Waited};
use super::select::{SelectedFile, SelectedLink, WalkLimits, select, walk_deadline};
use super::{ArchiveOutcome, ArchiveSpec, Compression, ExtraEntry, stall_timeout};

/// Debug builds only: a file whose name (last path component) is this variable's value has
/// its reads hang in the reader thread, as on a hung mount (for end-to-end tests of the agent).
#[cfg(debug_assertions)]
pub const STALL_READ_ENV: &str = "LIFEGUARD_TEST_STALL_READ";

/// How long a read hangs under [`STALL_READ_ENV`]: for ever, as far as the archive can tell.
#[cfg(debug_assertions)]
const HANG_FOR_EVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Files the reader may be asked for ahead of the one being copied: enough for a directory of
/// small files to be opened and read while the writer compresses, so that the two threads
/// rarely wait for each other.
const READ_AHEAD_FILES: usize = 8;

/// Zeros for padding.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// Which file's calls hang, and how (debug builds).
#[cfg(debug_assertions)]
pub(crate) type HangHook<'a> = &'a dyn Fn(&Path) -> Option<Hang>;

/// Test hooks: let a test change a file at a precise moment, or make calls hang.
#[derive(Default)]
pub(crate) struct Hooks<'a> {
    /// Called with the path to read just before a file is opened.
    pub before_open: Option<&'a dyn Fn(&Path)>,
    /// Called once a file is opened and its size taken, before its content is read.
    pub after_open: Option<&'a dyn Fn(&Path)>,
    /// Replaces the stall timeout ([`stall_timeout`]).
    pub stall_timeout: Option<Duration>,
    /// Makes the reader hang on a file (debug builds).
    #[cfg(debug_assertions)]
    pub hang: Option<HangHook<'a>>,
    /// How paths below a source's root are resolved (tests force the fallback).
    pub resolve: Resolve,
    /// Makes the walk hang this long before reading this directory (debug builds).
    #[cfg(debug_assertions)]
    pub hang_walk: Option<(PathBuf, Duration)>,
    /// Runs on the walker thread before it reads a directory (debug builds).
    #[cfg(debug_assertions)]
    pub walk_entering: Option<super::select::EnterHook>,
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

fn mtime_secs(meta: &std::fs::Metadata) -> u64 {
    u64::try_from(meta.mtime()).unwrap_or(0)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Counts the bytes written through it.
struct Count(usize);

impl Write for Count {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The manifest's JSON, in a buffer of its exact size: with a hundred thousand files it is
/// tens of megabytes, and a growing buffer would hold up to twice that while it is copied.
fn manifest_json(manifest: &Manifest) -> Result<Vec<u8>, ArchiveError> {
    let failed = |source| ArchiveError::Manifest {
        path: MANIFEST_PATH,
        source,
    };
    let mut count = Count(0);
    serde_json::to_writer_pretty(&mut count, manifest).map_err(failed)?;
    let mut json = Vec::with_capacity(count.0);
    serde_json::to_writer_pretty(&mut json, manifest).map_err(failed)?;
    Ok(json)
}

/// The message of an `errors` entry for a call that did not return.
pub(crate) fn stalled_message(waited: Duration, what: &str) -> String {
    format!(
        "stalled: no answer after {:.1} s (a hung filesystem?); {what}",
        waited.as_secs_f64()
    )
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

/// How reading a file's content ended before its entry was full.
enum Cut {
    Shrank,
    Failed(io::Error),
    Deadline,
    Stalled(Duration),
}

/// What [`ArchiveWriter::copy_content`] got of a file.
struct Copied {
    /// Bytes of the file copied; the rest of the entry is zeros.
    read: u64,
    cut: Option<Cut>,
    /// The file's status after reading; `None` when it did not come.
    after: Option<io::Result<std::fs::Metadata>>,
}

/// The archive being written, with the manifest being built.
struct ArchiveWriter<'h, W: Write> {
    tar: Builder<Sink<W>>,
    manifest: Manifest,
    skipped: Listed<SkippedRecord>,
    errors: Listed<ErrorRecord>,
    /// Files cut short or left out by a stall.
    stalled: u64,
    walk_incomplete: bool,
    deadline: Option<Instant>,
    stall_timeout: Duration,
    hooks: &'h Hooks<'h>,
    /// The current reader thread; `None` until needed, and after one was abandoned.
    reader: Option<Reader>,
    /// The files (their indices in the queue) the reader was asked for and has not answered
    /// yet, in order: the next ones are asked for while the current one is copied, so that the
    /// reader is not idle between files.
    requested: VecDeque<usize>,
    /// [`STALL_READ_ENV`]'s value.
    #[cfg(debug_assertions)]
    hang_name: Option<std::ffi::OsString>,
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
    let stall_timeout = hooks
        .stall_timeout
        .unwrap_or_else(|| stall_timeout(started, deadline));
    let limits = WalkLimits {
        deadline: deadline.map(|d| walk_deadline(started, d)),
        stall_timeout,
        #[cfg(debug_assertions)]
        hang: hooks.hang_walk.clone(),
        #[cfg(debug_assertions)]
        before_entering: hooks.walk_entering.clone(),
    };
    let selection = select(spec, &limits)?;
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
            skipped: Vec::new(),
            errors: Vec::new(),
            totals: Totals::default(),
        },
        skipped: selection.skipped,
        errors: selection.errors,
        stalled: 0,
        walk_incomplete: selection.walk_incomplete,
        deadline,
        stall_timeout,
        hooks,
        reader: None,
        requested: VecDeque::new(),
        #[cfg(debug_assertions)]
        hang_name: std::env::var_os(STALL_READ_ENV).filter(|v| !v.is_empty()),
    };

    // The walk stopped by its share of the deadline: the deadline cut the archive.
    writer.manifest.totals.deadline_reached = writer.manifest.sources.iter().any(|s| {
        s.incomplete
            .as_ref()
            .is_some_and(|i| i.reason == WalkStop::Deadline)
    });
    for extra in extras {
        writer.write_extra(extra)?;
    }
    for link in selection.links {
        if extra_names.contains(&link.archive_name) {
            writer.skip(
                link.record.path,
                link.record.path_base64,
                0,
                SkipReason::NameConflict,
            );
        } else if is_past(deadline) {
            writer.skip(
                link.record.path,
                link.record.path_base64,
                0,
                SkipReason::Deadline,
            );
        } else {
            writer.write_link(link)?;
        }
    }
    let mut files = selection.files;
    let queue = Queue::new(spec, &files, &extra_names, planned_bytes);
    let mut written: u64 = 0;
    for index in 0..files.len() {
        let reason = if queue.conflicts[index] {
            Some(SkipReason::NameConflict)
        } else if is_past(deadline) {
            Some(SkipReason::Deadline)
        } else {
            None
        };
        if let Some(reason) = reason {
            if writer.requested.contains(&index) {
                // Its answers would come next: the reader is of no more use.
                writer.abandon();
            }
            writer.skip_file(&files[index], reason);
        } else {
            written += writer.write_file(&queue, &files, index, written)?;
        }
        // Done with it: what it holds goes now rather than when the manifest is written.
        files[index] = SelectedFile::default();
    }
    writer.finish(started)
}

/// What each file to archive may take, and which are skipped for their name.
struct Queue {
    /// For each file, whether its name is an extra's (it is skipped).
    conflicts: Vec<bool>,
    /// For each file, the planned bytes of the files after it: what the total cap still owes
    /// them, so that a file that grew since planning cannot take it.
    owed_after: Vec<u64>,
    max_total_bytes: Option<u64>,
    max_file_bytes: Option<u64>,
}

impl Queue {
    fn new(
        spec: &ArchiveSpec,
        files: &[SelectedFile],
        extra_names: &HashSet<PathBuf>,
        planned_bytes: u64,
    ) -> Queue {
        let mut owed = planned_bytes;
        let owed_after = files
            .iter()
            .map(|f| {
                owed -= f.planned.size;
                owed
            })
            .collect();
        Queue {
            conflicts: files
                .iter()
                .map(|f| extra_names.contains(&f.archive_name))
                .collect(),
            owed_after,
            max_total_bytes: spec.max_total_bytes,
            max_file_bytes: spec.max_file_bytes,
        }
    }

    /// The caps of a file once `written` bytes of content are in the archive.
    fn caps(&self, index: usize, written: u64) -> Caps {
        Caps {
            max_file_bytes: self.max_file_bytes,
            budget: self
                .max_total_bytes
                .map(|cap| cap.saturating_sub(written.saturating_add(self.owed_after[index]))),
        }
    }

    /// The file archived after this one.
    fn next(&self, index: usize) -> Option<usize> {
        (index + 1..self.conflicts.len()).find(|&i| !self.conflicts[i])
    }

    /// How many files the reader may be asked for ahead of the one being copied. A file's
    /// budget under `max_total_bytes` depends on the sizes of those before it, known only once
    /// they are opened: then one.
    fn read_ahead(&self) -> usize {
        if self.max_total_bytes.is_some() {
            1
        } else {
            READ_AHEAD_FILES
        }
    }
}

/// What waiting for a reader's answer gave.
enum Answer {
    Reply(Reply),
    /// No answer after `waited` from this `operation`, and the reader abandoned. `deadline`:
    /// the wait was cut by the deadline before the stall timeout.
    Stalled {
        operation: &'static str,
        waited: Duration,
        deadline: bool,
    },
    /// The reader is gone (it panicked, or could not be started).
    Gone,
}

impl<W: Write> ArchiveWriter<'_, W> {
    fn skip(&mut self, path: String, path_base64: Option<String>, size: u64, reason: SkipReason) {
        match reason {
            SkipReason::Deadline => self.manifest.totals.deadline_reached = true,
            SkipReason::Stalled => self.stalled += 1,
            _ => {}
        }
        self.skipped.push(
            SkippedRecord {
                path,
                path_base64,
                size,
                reason,
            },
            size,
        );
    }

    fn skip_file(&mut self, file: &SelectedFile, reason: SkipReason) {
        self.skip(
            file.planned.path.clone(),
            file.planned.path_base64.clone(),
            file.planned.original_size,
            reason,
        );
    }

    fn error(&mut self, file: &SelectedFile, operation: &str, error: String) {
        self.errors.push(
            ErrorRecord {
                path: file.planned.path.clone(),
                path_base64: file.planned.path_base64.clone(),
                operation: operation.to_string(),
                error,
            },
            0,
        );
    }

    /// Leaves the reader to itself: stuck in a call, or with answers no longer wanted.
    fn abandon(&mut self) {
        self.reader = None;
        self.requested.clear();
    }

    /// The reader thread, started when there is none.
    fn reader(&mut self) -> io::Result<&Reader> {
        match &mut self.reader {
            Some(reader) => Ok(reader),
            slot @ None => Ok(slot.insert(Reader::start()?)),
        }
    }

    /// Waits for the reader's next answer: for at most the stall timeout, and never past the
    /// deadline. A reader that does not answer is abandoned.
    fn answer(&mut self) -> Answer {
        let Some(reader) = &self.reader else {
            return Answer::Gone;
        };
        let asked = Instant::now();
        let stall_at = asked + self.stall_timeout;
        let (until, deadline) = match self.deadline {
            Some(deadline) if deadline < stall_at => (deadline, true),
            _ => (stall_at, false),
        };
        match reader.wait(until) {
            Waited::Reply(reply) => Answer::Reply(reply),
            Waited::Stalled(operation) => {
                // It stays blocked in the kernel with its file; it holds nothing else, and
                // ends by itself if the call ever returns.
                self.abandon();
                Answer::Stalled {
                    operation,
                    waited: asked.elapsed(),
                    deadline,
                }
            }
            Waited::Gone => {
                self.abandon();
                Answer::Gone
            }
        }
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
        let status = &link.status;
        let mut header = Header::new_gnu();
        header.set_entry_type(EntryType::Symlink);
        header.set_size(0);
        header.set_mode(status.mode & 0o7777);
        header.set_mtime(u64::try_from(status.mtime).unwrap_or(0));
        header.set_uid(u64::from(status.uid));
        header.set_gid(u64::from(status.gid));
        self.tar
            .append_link(&mut header, &link.archive_name, &link.target)
            .map_err(|source| ArchiveError::WriteEntry {
                path: link.record.path.clone(),
                source,
            })?;
        self.manifest.symlinks.push(link.record);
        Ok(())
    }

    #[cfg(debug_assertions)]
    fn hang_for(&self, path: &Path) -> Option<Hang> {
        if let Some(hook) = self.hooks.hang
            && let Some(hang) = hook(path)
        {
            return Some(hang);
        }
        let name = self.hang_name.as_deref()?;
        (path.file_name() == Some(name)).then_some(Hang::Read {
            after: 0,
            duration: HANG_FOR_EVER,
        })
    }

    /// Asks the reader for a file (starting a reader if there is none); why not, when there is
    /// no reader to ask.
    fn request(
        &mut self,
        queue: &Queue,
        files: &[SelectedFile],
        index: usize,
        written: u64,
    ) -> Result<(), String> {
        let file = &files[index];
        // Only a file the writer is done with has none, and it is not asked for again.
        let at = file.at.as_ref().ok_or("no longer known where it is")?;
        if let Some(hook) = self.hooks.before_open {
            hook(&at.real_path());
        }
        #[cfg(debug_assertions)]
        let hang = self.hang_for(&at.real_path());
        #[cfg(not(debug_assertions))]
        let hang = ();
        let request = Request {
            at: at.clone(),
            resolve: self.hooks.resolve,
            caps: queue.caps(index, written),
            pause: self.hooks.after_open.is_some(),
            hang,
        };
        let sent = self
            .reader()
            .map_err(|e| format!("starting a reader thread: {e}"))?
            .request(request);
        if !sent {
            self.abandon();
            return Err("the reader thread ended".to_string());
        }
        self.requested.push_back(index);
        Ok(())
    }

    /// Archives the file at `index` once `written` bytes of content are in the archive;
    /// returns the entry's size (0 when none was written). Only a failure of the output is an
    /// `Err`; a file that cannot be read is recorded in the manifest.
    fn write_file(
        &mut self,
        queue: &Queue,
        files: &[SelectedFile],
        index: usize,
        written: u64,
    ) -> Result<u64, ArchiveError> {
        let file = &files[index];
        let path = &file.planned.path;
        if self.requested.front() != Some(&index) {
            // Answers for other files would come first (there are none in the normal course).
            if !self.requested.is_empty() {
                self.abandon();
            }
            if let Err(error) = self.request(queue, files, index, written) {
                self.error(file, "open", error);
                return Ok(0);
            }
        }
        self.requested.pop_front();
        let Opened {
            meta: opened,
            size,
            offset,
            cap,
        } = match self.answer() {
            Answer::Reply(Reply::Opened(Ok(opened))) => opened,
            Answer::Reply(Reply::Opened(Err((operation, e)))) => {
                self.error(file, operation, e.to_string());
                return Ok(0);
            }
            Answer::Reply(Reply::Refused(why)) => {
                self.error(file, "open", why);
                self.skip_file(file, SkipReason::Refused);
                return Ok(0);
            }
            Answer::Stalled { deadline: true, .. } => {
                self.skip_file(file, SkipReason::Deadline);
                return Ok(0);
            }
            Answer::Stalled {
                operation, waited, ..
            } => {
                let message = stalled_message(waited, "the file was left out");
                self.error(file, operation, message);
                self.skip_file(file, SkipReason::Stalled);
                return Ok(0);
            }
            Answer::Reply(_) | Answer::Gone => {
                self.abandon();
                self.error(file, "open", "the reader thread ended".to_string());
                return Ok(0);
            }
        };

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
        if let Some(hook) = self.hooks.after_open
            && let Some(at) = &file.at
        {
            hook(&at.real_path());
            if let Some(reader) = &self.reader {
                // A reader that is gone is found out by the wait that follows.
                let _ = reader.go();
            }
        }
        // The next files' requests go now: the reader opens them as soon as it has read this
        // one, while the writer is still hashing and compressing.
        let mut last = self.requested.back().copied().unwrap_or(index);
        while self.requested.len() < queue.read_ahead()
            && self.reader.is_some()
            && !is_past(self.deadline)
            && let Some(next) = queue.next(last)
        {
            // Only with a total cap do the caps depend on what is written, and then only one
            // file is asked ahead, once this one's size is known.
            if self
                .request(queue, files, next, written.saturating_add(size))
                .is_err()
            {
                // Found again, and recorded, when that file's turn comes.
                break;
            }
            last = next;
        }

        let mut hasher = Sha256::new();
        let copied = self
            .copy_content(file, size, &mut hasher)
            .map_err(write_error)?;
        let read = copied.read;
        let mut padding = size - read;
        while padding > 0 {
            let n = usize::try_from(padding).map_or(ZEROS.len(), |p| p.min(ZEROS.len()));
            hasher.update(&ZEROS[..n]);
            self.tar
                .get_mut()
                .write_all(&ZEROS[..n])
                .map_err(write_error)?;
            padding -= n as u64;
        }
        let tar_padding = (512 - size % 512) % 512;
        self.tar
            .get_mut()
            .write_all(&ZEROS[..tar_padding as usize])
            .map_err(write_error)?;

        let changed_while_reading = match (&copied.cut, &copied.after) {
            // Not checked: the reader was abandoned.
            (Some(Cut::Deadline | Cut::Stalled(_)), _) => false,
            (_, Some(Ok(after))) => {
                after.len() != opened.len() || after.modified().ok() != opened.modified().ok()
            }
            // A status that cannot be had counts as a change.
            (_, Some(Err(_)) | None) => true,
        };
        let from_offset = offset + read;
        let truncated = match &copied.cut {
            Some(Cut::Shrank) => Some((TruncateReason::Shrank, from_offset)),
            Some(Cut::Failed(_)) => Some((TruncateReason::ReadError, from_offset)),
            Some(Cut::Deadline) => Some((TruncateReason::Deadline, from_offset)),
            Some(Cut::Stalled(_)) => Some((TruncateReason::Stalled, from_offset)),
            None => cap.map(|reason| (reason, offset)),
        }
        .map(|(reason, from_offset)| Truncation {
            reason,
            from_offset,
        });
        match copied.cut {
            Some(Cut::Deadline) => self.manifest.totals.deadline_reached = true,
            Some(Cut::Stalled(waited)) => {
                self.stalled += 1;
                let what = format!("the entry is zero-padded from offset {from_offset}");
                self.error(file, "read", stalled_message(waited, &what));
            }
            Some(Cut::Failed(e)) => self.error(file, "read", e.to_string()),
            Some(Cut::Shrank) | None => {}
        }
        self.manifest.files.push(FileRecord {
            path: path.clone(),
            path_base64: file.planned.path_base64.clone(),
            size,
            original_size: opened.len(),
            offset,
            padding: size - read,
            mtime: rfc3339(opened.modified().unwrap_or(SystemTime::UNIX_EPOCH)),
            mode: octal_mode(opened.permissions().mode()),
            sha256: hex::encode(hasher.finalize()),
            changed_while_reading,
            truncated,
        });
        Ok(size)
    }

    /// Copies up to `size` bytes of the file into the tar, hashing them, as the reader delivers
    /// them. Only an output failure is an `Err`.
    fn copy_content(
        &mut self,
        file: &SelectedFile,
        size: u64,
        hasher: &mut Sha256,
    ) -> io::Result<Copied> {
        let mut read: u64 = 0;
        let ended = |read, cut, after| Ok(Copied { read, cut, after });
        loop {
            // Once the content is whole only the end is left: nothing more to cut.
            let whole = read >= size;
            if !whole && is_past(self.deadline) {
                self.abandon();
                return ended(read, Some(Cut::Deadline), None);
            }
            match self.answer() {
                Answer::Reply(Reply::Chunk { buffer, len }) => {
                    let chunk = &buffer[..len];
                    hasher.update(chunk);
                    let written = self.tar.get_mut().write_all(chunk);
                    if let Some(reader) = &self.reader {
                        reader.give_back(buffer);
                    }
                    written?;
                    read += len as u64;
                }
                Answer::Reply(Reply::End { stop, after }) => {
                    let cut = stop.map(|stop| match stop {
                        Stop::Shrank => Cut::Shrank,
                        Stop::Failed(e) => Cut::Failed(e),
                    });
                    return ended(read, cut, Some(after));
                }
                Answer::Stalled { deadline: true, .. } if whole => {
                    return ended(read, None, None);
                }
                Answer::Stalled {
                    operation, waited, ..
                } if whole => {
                    let what = "the content is whole; whether it changed while read is unknown";
                    self.error(file, operation, stalled_message(waited, what));
                    return ended(read, None, None);
                }
                Answer::Stalled { deadline: true, .. } => {
                    return ended(read, Some(Cut::Deadline), None);
                }
                Answer::Stalled { waited, .. } => {
                    return ended(read, Some(Cut::Stalled(waited)), None);
                }
                Answer::Reply(Reply::Opened(_) | Reply::Refused(_)) | Answer::Gone => {
                    self.abandon();
                    let gone = io::Error::other("the reader thread ended");
                    return ended(read, Some(Cut::Failed(gone)), None);
                }
            }
        }
    }

    fn finish(mut self, started: Instant) -> Result<ArchiveOutcome, ArchiveError> {
        let m = &mut self.manifest;
        m.totals.skipped_unlisted = self.skipped.unlisted();
        m.totals.errors_unlisted = self.errors.unlisted();
        m.skipped = std::mem::take(&mut self.skipped.records);
        m.errors = std::mem::take(&mut self.errors.records);
        let totals = &mut m.totals;
        totals.files = m.files.len() as u64;
        totals.file_bytes = m.files.iter().map(|f| f.size).sum();
        totals.symlinks = m.symlinks.len() as u64;
        totals.extras = m.extras.len() as u64;
        totals.extra_bytes = m.extras.iter().map(|e| e.size).sum();
        totals.skipped = self.skipped.count;
        totals.skipped_bytes = self.skipped.bytes;
        totals.errors = self.errors.count;
        totals.truncated = m.files.iter().filter(|f| f.truncated.is_some()).count() as u64;
        totals.changed_while_reading =
            m.files.iter().filter(|f| f.changed_while_reading).count() as u64;
        totals.stalled = self.stalled;
        totals.walk_incomplete = self.walk_incomplete;
        totals.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);

        let json = manifest_json(&self.manifest)?;
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
            manifest_json: json,
            manifest: self.manifest,
            compressed_bytes,
        })
    }
}
