//! Which files go into the archive, in which order, within which caps.
//!
//! - A source without wildcards is a path: a file, or a directory archived recursively. If it
//!   (or a directory above it) is a symbolic link, it is resolved once, here; entries keep the
//!   configured name (`/var/log/app/x.log` even when `/var/log/app` points at `/data/app`).
//! - A source with wildcards (`*`, `?`, `[...]`, and `**` as a whole component for any depth) is
//!   matched against full paths; `*` does not match `/`. The part before the first wildcard is
//!   the root, resolved once like a path; below it nothing is followed. A matching directory is
//!   archived recursively.
//! - Below the roots, symbolic links are never followed: they are archived as links, whatever
//!   they point at. Sockets, FIFOs and devices are listed as skipped.
//! - Each resolved root is opened once ([`Root`]) and walked through descriptors
//!   ([`super::tree`]): a directory swapped for a link while the walk runs is not entered
//!   (`errors`, operation `walk`), so nothing outside the root is ever listed. Each file is
//!   recorded with its root, its path below it and its device and inode ([`FileAt`]), which is
//!   how the writer opens it again and checks it ([`super::beneath`]). The configured root
//!   itself is trusted as configured: its links are followed, once, at the start.
//! - An exclude pattern with a `/` is matched against the full path (the configured one and the
//!   resolved one); without a `/`, against the file name (`*.gz`). An excluded directory is not
//!   entered.
//! - An entry found through several sources is taken once, by the first source that covers it
//!   (decided from the sources' resolved roots, patterns and excludes, so that nothing needs to
//!   remember every path seen).
//! - Files are ordered newest first by mtime (ties: path), so that a deadline cuts the oldest.
//!   Only the newest `max_files` are kept, in a heap of that size: the rest are counted and
//!   listed as skipped (`max_files`), so memory does not grow with the number of files found.
//!   Symbolic links are capped at `max_files` too (the first found). `max_file_bytes` keeps the
//!   tail of a larger file, then `max_total_bytes` is filled greedily in that order: a file that
//!   does not fit is skipped and a smaller, older one may still fit.
//!
//! # A walk that does not end
//!
//! Each source is walked on a thread of its own, which sends what it finds over a channel. On a
//! hung mount, reading a directory or a file's status blocks in the kernel for ever: when no
//! answer comes for the stall timeout, that source's walk is abandoned (its thread stays blocked;
//! it holds nothing the archive needs) with what it found, the source is marked incomplete
//! (`stalled`, with the directory it was in) and the next source is walked. A walk deadline
//! (a share of the archive's deadline) ends the whole walk the same way (`deadline`).

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fs;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering as AtomicOrdering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant, SystemTime};

use glob::{MatchOptions, Pattern};
use rustix::fs::{self as rfs, AtFlags, FileType};

use super::beneath::{FileAt, Refusal, Resolve, Root};
use super::error::ArchiveError;
use super::manifest::{
    ErrorRecord, IncompleteWalk, Listed, MANIFEST_PATH, Plan, PlannedFile, SkipReason,
    SkippedRecord, SourceRecord, SymlinkRecord, WalkStop, manifest_name, octal_mode, rfc3339,
};
use super::tree::{Node, Status, Tree, is_swapped, logical_path};
use super::writer::stalled_message;
use super::{ArchiveSpec, STALL_TIMEOUT};

/// `*` and `?` stay within one path component; `**` crosses them.
const MATCH: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// The walk may take this share of the time to the archive's deadline: enough to list hundreds
/// of thousands of files on healthy storage, while most of the time is left for reading them
/// when a walk gets stuck.
const WALK_SHARE: f64 = 0.25;

/// Findings a walker may send ahead of the collector.
const WALK_CHANNEL: usize = 1024;

/// The instant the walk must end by: its share of the time from `started` to `deadline`.
pub(crate) fn walk_deadline(started: Instant, deadline: Instant) -> Instant {
    started
        + deadline
            .saturating_duration_since(started)
            .mul_f64(WALK_SHARE)
}

/// How long the walk may take.
#[derive(Debug, Clone)]
pub(crate) struct WalkLimits {
    /// The walk stops here and keeps what it found; `None`: no deadline.
    pub deadline: Option<Instant>,
    /// A walk with no news for this long is stuck.
    pub stall_timeout: Duration,
    /// Debug builds: the walk hangs this long before reading this directory (tests).
    #[cfg(debug_assertions)]
    pub hang: Option<(PathBuf, Duration)>,
    /// Debug builds: called with a directory's resolved path just before the walk reads it
    /// (tests swap a directory for a link then).
    #[cfg(debug_assertions)]
    pub before_entering: Option<EnterHook>,
}

/// What a test runs on the walker thread before a directory is read.
#[cfg(debug_assertions)]
#[derive(Clone)]
pub(crate) struct EnterHook(pub Arc<dyn Fn(&Path) + Send + Sync>);

#[cfg(debug_assertions)]
impl std::fmt::Debug for EnterHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnterHook")
    }
}

impl WalkLimits {
    /// No deadline, the usual stall timeout (`drain --dry-run`).
    pub fn without_deadline() -> WalkLimits {
        WalkLimits {
            deadline: None,
            stall_timeout: STALL_TIMEOUT,
            #[cfg(debug_assertions)]
            hang: None,
            #[cfg(debug_assertions)]
            before_entering: None,
        }
    }
}

/// The selection with what the writer needs beyond the public plan.
#[derive(Debug)]
pub(crate) struct Selection {
    pub sources: Vec<SourceRecord>,
    /// In archive order, caps applied.
    pub files: Vec<SelectedFile>,
    /// By path.
    pub links: Vec<SelectedLink>,
    pub skipped: Listed<SkippedRecord>,
    pub errors: Listed<ErrorRecord>,
    /// Some source's walk stopped early.
    pub walk_incomplete: bool,
}

#[derive(Debug, Default)]
pub(crate) struct SelectedFile {
    pub planned: PlannedFile,
    /// Where to read it: below its source's root, as the walk found it. `None` only once the
    /// writer is done with it.
    pub at: Option<FileAt>,
    /// Its name inside the archive: the configured path without the leading `/`.
    pub archive_name: PathBuf,
}

#[derive(Debug)]
pub(crate) struct SelectedLink {
    pub record: SymlinkRecord,
    pub archive_name: PathBuf,
    pub target: PathBuf,
    /// The link's own status.
    pub status: Status,
}

impl Selection {
    pub fn file_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.planned.size).sum()
    }

    pub fn into_plan(self) -> Plan {
        let file_bytes = self.file_bytes();
        Plan {
            sources: self.sources,
            files: self.files.into_iter().map(|f| f.planned).collect(),
            symlinks: self.links.into_iter().map(|l| l.record).collect(),
            skipped_count: self.skipped.count,
            skipped_bytes: self.skipped.bytes,
            error_count: self.errors.count,
            skipped: self.skipped.records,
            errors: self.errors.records,
            file_bytes,
        }
    }
}

/// Expands the sources, stats everything, orders and applies the caps. Reads no file contents.
pub(crate) fn select(spec: &ArchiveSpec, limits: &WalkLimits) -> Result<Selection, ArchiveError> {
    let excludes = Arc::new(
        spec.exclude
            .iter()
            .map(|p| Exclude::parse(p))
            .collect::<Result<Vec<_>, _>>()?,
    );
    let sources = spec
        .sources
        .iter()
        .map(|s| Source::parse(s))
        .collect::<Result<Vec<_>, _>>()?;

    let mut collector = Collector {
        max_files: spec.max_files,
        files: BinaryHeap::new(),
        links: Vec::new(),
        skipped: Listed::default(),
        errors: Listed::default(),
    };
    let mut claims: Vec<Claim> = Vec::new();
    let mut records = Vec::with_capacity(sources.len());
    let mut walk_incomplete = false;
    for (text, source) in spec.sources.iter().zip(sources) {
        let walked = collector.walk(source, &excludes, &claims, limits);
        walk_incomplete |= walked.incomplete.is_some();
        claims.extend(walked.claim);
        records.push(SourceRecord {
            source: text.clone(),
            matched: walked.matched,
            incomplete: walked.incomplete,
        });
    }
    let mut selection = collector.finish(spec, records);
    selection.walk_incomplete = walk_incomplete;
    Ok(selection)
}

/// A parsed source.
enum Source {
    /// No wildcard: a file or a directory, normalized (`.` and `..` resolved lexically).
    Path(PathBuf),
    /// Wildcards below `root` (the components before the first wildcard).
    Glob {
        root: PathBuf,
        pattern: Pattern,
        /// How deep below `root` a match can be; `None` with `**`.
        depth: Option<usize>,
    },
}

fn has_wildcard(component: &str) -> bool {
    component.contains(['*', '?', '['])
}

impl Source {
    /// The configured root: the path itself, or what comes before the first wildcard.
    fn root(&self) -> &Path {
        match self {
            Source::Path(path) => path,
            Source::Glob { root, .. } => root,
        }
    }

    fn parse(text: &str) -> Result<Source, ArchiveError> {
        if !text.starts_with('/') {
            return Err(ArchiveError::RelativeSource {
                source_path: text.to_string(),
            });
        }
        let mut root = PathBuf::from("/");
        let mut rest: Vec<&str> = Vec::new();
        for component in text.split('/') {
            if component.is_empty() || component == "." {
                continue;
            }
            if rest.is_empty() && !has_wildcard(component) {
                if component == ".." {
                    root.pop();
                } else {
                    root.push(component);
                }
            } else if component == ".." {
                return Err(ArchiveError::Pattern {
                    pattern: text.to_string(),
                    reason: "`..` after a wildcard".to_string(),
                });
            } else {
                rest.push(component);
            }
        }
        if rest.is_empty() {
            return Ok(Source::Path(root));
        }
        let full = root.join(rest.join("/"));
        let pattern = Pattern::new(&full.to_string_lossy()).map_err(|e| ArchiveError::Pattern {
            pattern: text.to_string(),
            reason: e.to_string(),
        })?;
        let depth = if rest.iter().any(|c| c.contains("**")) {
            None
        } else {
            Some(rest.len())
        };
        Ok(Source::Glob {
            root,
            pattern,
            depth,
        })
    }
}

/// A parsed exclude pattern.
struct Exclude {
    pattern: Pattern,
    /// Contains a `/`: matched against the whole path, else against the file name.
    whole_path: bool,
}

impl Exclude {
    fn parse(text: &str) -> Result<Exclude, ArchiveError> {
        let trimmed = if text.len() > 1 {
            text.trim_end_matches('/')
        } else {
            text
        };
        let pattern = Pattern::new(trimmed).map_err(|e| ArchiveError::Pattern {
            pattern: text.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Exclude {
            pattern,
            whole_path: trimmed.contains('/'),
        })
    }

    fn matches(&self, logical: &Path, real: &Path) -> bool {
        if self.whole_path {
            self.pattern.matches_path_with(logical, MATCH)
                || self.pattern.matches_path_with(real, MATCH)
        } else {
            logical
                .file_name()
                .is_some_and(|name| self.pattern.matches_with(&name.to_string_lossy(), MATCH))
        }
    }
}

/// What a source covers, for the sources after it: an entry the walk of an earlier source
/// takes is not taken again.
#[derive(Debug, Clone)]
struct Claim {
    logical_root: PathBuf,
    real_root: PathBuf,
    kind: ClaimKind,
}

#[derive(Debug, Clone)]
enum ClaimKind {
    /// A path source that is a file: that file.
    File,
    /// A path source that is a directory: everything below it, excludes applied.
    Dir,
    /// A glob source: what matches below its root, and everything below a matching directory.
    Glob {
        pattern: Pattern,
        depth: Option<usize>,
    },
}

fn excluded(excludes: &[Exclude], logical: &Path, real: &Path) -> bool {
    excludes.iter().any(|e| e.matches(logical, real))
}

impl Claim {
    /// Whether this source's walk takes the entry at `real` (a resolved path, not a directory):
    /// the same decisions as the walk, made on the path's components.
    fn takes(&self, real: &Path, excludes: &[Exclude]) -> bool {
        let (pattern, depth_limit) = match &self.kind {
            ClaimKind::File => return real == self.real_root,
            ClaimKind::Dir => (None, None),
            ClaimKind::Glob { pattern, depth } => (Some(pattern), *depth),
        };
        let Ok(relative) = real.strip_prefix(&self.real_root) else {
            return false;
        };
        let mut matched = pattern.is_none();
        let mut logical = self.logical_root.clone();
        let mut physical = self.real_root.clone();
        for (index, component) in relative.components().enumerate() {
            logical.push(component);
            physical.push(component);
            if excluded(excludes, &logical, &physical) {
                return false;
            }
            if !matched
                && let Some(pattern) = pattern
                && depth_limit.is_none_or(|limit| index < limit)
                && pattern.matches_path_with(&logical, MATCH)
            {
                matched = true;
            }
        }
        matched && !relative.as_os_str().is_empty()
    }
}

/// What a walker thread tells the collector, in order.
enum Walked {
    /// The source's root is resolved and will be walked.
    Claim(Claim),
    /// The walk is now in this directory (its configured name).
    Dir(PathBuf),
    /// A file, link or special file, with its status (not following links).
    Entry(Found),
    /// An entry an earlier source took: it only counts as matched.
    Taken,
    /// Something that could not be examined.
    Error {
        path: PathBuf,
        operation: &'static str,
        error: String,
    },
}

struct Found {
    logical: PathBuf,
    /// Where it is, and which file it is.
    at: FileAt,
    /// Its status, not following a link.
    status: Status,
    /// A link's target, read on the walker thread.
    target: Option<io::Result<PathBuf>>,
}

/// What the walker thread is doing, for naming the call that stalled.
#[derive(Clone, Copy)]
#[repr(u8)]
enum Stage {
    Resolve,
    Stat,
    Walk,
    ReadLink,
}

impl Stage {
    const ALL: [Stage; 4] = [Stage::Resolve, Stage::Stat, Stage::Walk, Stage::ReadLink];

    fn operation(self) -> &'static str {
        match self {
            Stage::Resolve => "resolve",
            Stage::Stat => "stat",
            Stage::Walk => "walk",
            Stage::ReadLink => "read_link",
        }
    }
}

/// One source's walk, on its own thread: makes every blocking call and sends what it finds.
struct Walker {
    excludes: Arc<Vec<Exclude>>,
    earlier: Vec<Claim>,
    tx: SyncSender<Walked>,
    stage: Arc<AtomicU8>,
    #[cfg(debug_assertions)]
    hang: Option<(PathBuf, Duration)>,
    #[cfg(debug_assertions)]
    before_entering: Option<EnterHook>,
}

/// `None`: the collector is gone (it stopped waiting); the walker ends.
type Sent = Option<()>;

impl Walker {
    fn send(&self, event: Walked) -> Sent {
        self.tx.send(event).ok()
    }

    fn at(&self, stage: Stage) {
        self.stage.store(stage as u8, AtomicOrdering::Relaxed);
    }

    fn error(&self, path: &Path, operation: &'static str, error: &io::Error) -> Sent {
        self.send(Walked::Error {
            path: path.to_path_buf(),
            operation,
            error: error.to_string(),
        })
    }

    fn excluded(&self, logical: &Path, real: &Path) -> bool {
        excluded(&self.excludes, logical, real)
    }

    fn taken(&self, real: &Path) -> bool {
        self.earlier.iter().any(|c| c.takes(real, &self.excludes))
    }

    fn run(self, source: Source) -> Sent {
        match source {
            Source::Path(path) => {
                let Some(real) = self.resolve(&path)? else {
                    return Some(());
                };
                if self.excluded(&path, &real) {
                    return Some(());
                }
                self.at(Stage::Stat);
                match fs::metadata(&real) {
                    Ok(meta) if meta.is_dir() => {
                        let Some(root) = self.open_root(&path, &real)? else {
                            return Some(());
                        };
                        self.claim(&path, &real, ClaimKind::Dir)?;
                        self.walk_tree(&root, &path, None)
                    }
                    Ok(_) => {
                        self.claim(&path, &real, ClaimKind::File)?;
                        if self.taken(&real) {
                            return self.send(Walked::Taken);
                        }
                        self.walk_file(path, &real)
                    }
                    Err(e) => self.error(&path, "stat", &e),
                }
            }
            Source::Glob {
                root,
                pattern,
                depth,
            } => {
                let Some(real_root) = self.resolve(&root)? else {
                    return Some(());
                };
                self.at(Stage::Stat);
                if !fs::metadata(&real_root).is_ok_and(|m| m.is_dir()) {
                    return Some(());
                }
                let Some(opened) = self.open_root(&root, &real_root)? else {
                    return Some(());
                };
                let kind = ClaimKind::Glob {
                    pattern: pattern.clone(),
                    depth,
                };
                self.claim(&root, &real_root, kind)?;
                self.walk_tree(&opened, &root, Some((&pattern, depth)))
            }
        }
    }

    fn claim(&self, logical_root: &Path, real_root: &Path, kind: ClaimKind) -> Sent {
        self.send(Walked::Claim(Claim {
            logical_root: logical_root.to_path_buf(),
            real_root: real_root.to_path_buf(),
            kind,
        }))
    }

    /// Resolves a configured root's symbolic links once. `Some(None)` when it does not exist
    /// (nothing to archive, not an error) or cannot be resolved (recorded).
    fn resolve(&self, root: &Path) -> Option<Option<PathBuf>> {
        self.at(Stage::Resolve);
        match fs::canonicalize(root) {
            Ok(real) => Some(Some(real)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // A dangling link as a root is worth reporting; a missing path is not.
                if fs::symlink_metadata(root).is_ok() {
                    self.error(root, "resolve", &e)?;
                }
                Some(None)
            }
            Err(e) => {
                self.error(root, "resolve", &e)?;
                Some(None)
            }
        }
    }

    /// Opens the resolved directory `real` (configured as `logical`), once: everything below
    /// it is reached through this descriptor. `Some(None)` when it cannot be (recorded).
    fn open_root(&self, logical: &Path, real: &Path) -> Option<Option<Arc<Root>>> {
        self.at(Stage::Resolve);
        match Root::open(real, Resolve::Auto) {
            Ok(root) => Some(Some(Arc::new(root))),
            Err(Refusal::Refused(why)) => {
                self.send(Walked::Error {
                    path: logical.to_path_buf(),
                    operation: "resolve",
                    error: format!("{why} (while opening {})", real.display()),
                })?;
                Some(None)
            }
            Err(Refusal::Failed(e)) => {
                self.error(logical, "resolve", &e)?;
                Some(None)
            }
        }
    }

    /// A source that is a file: found in its directory, opened once as the file's root.
    fn walk_file(&self, logical: PathBuf, real: &Path) -> Sent {
        let (Some(dir), Some(name)) = (real.parent(), real.file_name()) else {
            // A resolved path that is not a directory has both.
            return self.error(
                &logical,
                "resolve",
                &io::Error::other("no parent directory"),
            );
        };
        let Some(root) = self.open_root(&logical, dir)? else {
            return Some(());
        };
        self.at(Stage::Stat);
        let relative = PathBuf::from(name);
        let status = match rfs::statat(root.fd(), name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => Status::of(&stat),
            Err(e) => return self.error(&logical, "stat", &e.into()),
        };
        let target = (status.kind == FileType::Symlink).then(|| {
            self.at(Stage::ReadLink);
            rfs::readlinkat(root.fd(), name, Vec::new())
                .map(|t| PathBuf::from(std::ffi::OsString::from_vec(t.into_bytes())))
                .map_err(io::Error::from)
        });
        self.send(Walked::Entry(Found {
            logical,
            at: FileAt {
                root,
                relative,
                id: status.id,
            },
            status,
            target,
        }))
    }

    /// Says which directory the walk is in, before it reads it.
    fn entering(&self, logical: &Path, real: &Path) -> Sent {
        self.send(Walked::Dir(logical.to_path_buf()))?;
        #[cfg(debug_assertions)]
        if let Some(hook) = &self.before_entering {
            (hook.0)(real);
        }
        #[cfg(debug_assertions)]
        if let Some((dir, duration)) = &self.hang
            && dir == real
        {
            self.at(Stage::Walk);
            std::thread::sleep(*duration);
        }
        #[cfg(not(debug_assertions))]
        let _ = real;
        Some(())
    }

    /// Walks below `root` (configured as `logical_root`), without following links: with a
    /// glob (its pattern and how deep a match can be), what matches it and everything below a
    /// matching directory; without, everything.
    fn walk_tree(
        &self,
        root: &Arc<Root>,
        logical_root: &Path,
        glob: Option<(&Pattern, Option<usize>)>,
    ) -> Sent {
        self.entering(logical_root, root.real())?;
        self.at(Stage::Walk);
        let mut tree = match Tree::open(root) {
            Ok(tree) => tree,
            Err(e) => return self.error(logical_root, "walk", &e),
        };
        // Everything below the directory at this depth is taken (the root, without a glob; a
        // directory the glob matched, until the walk leaves it).
        let mut taken_below: Option<usize> = glob.is_none().then_some(0);
        let mut current = PathBuf::new();
        loop {
            self.at(Stage::Walk);
            let node = match tree.next() {
                None => return Some(()),
                Some(Ok(node)) => node,
                Some(Err((dir, e))) => {
                    self.error(&logical_path(logical_root, &dir), "walk", &e)?;
                    continue;
                }
            };
            if glob.is_some() && taken_below.is_some_and(|depth| node.depth <= depth) {
                taken_below = None;
            }
            let logical = logical_path(logical_root, &node.relative);
            let real = root.real().join(&node.relative);
            self.follow(&mut current, logical_root, &node.relative)?;
            let is_dir = tree.is_dir(&node);
            if self.excluded(&logical, &real) {
                continue;
            }
            let taken = taken_below.is_some()
                || glob.is_some_and(|(pattern, _)| pattern.matches_path_with(&logical, MATCH));
            if is_dir {
                if taken && taken_below.is_none() {
                    taken_below = Some(node.depth);
                }
                let deeper = glob.is_some_and(|(_, limit)| limit.is_none_or(|d| node.depth < d));
                if taken || deeper {
                    self.enter(&mut tree, &node, &logical, &real, &mut current)?;
                }
            } else if taken {
                self.add_walked(root, &tree, node, logical, &real)?;
            }
        }
    }

    /// Goes into the directory just listed.
    fn enter(
        &self,
        tree: &mut Tree,
        node: &Node,
        logical: &Path,
        real: &Path,
        current: &mut PathBuf,
    ) -> Sent {
        self.entering(logical, real)?;
        self.at(Stage::Walk);
        match tree.enter(node) {
            Ok(()) => {
                node.relative.clone_into(current);
                Some(())
            }
            Err(e) if is_swapped(&e) => self.send(Walked::Error {
                path: logical.to_path_buf(),
                operation: "walk",
                error: format!(
                    "not entered: no longer a directory (swapped for a symbolic link or a file \
                     since it was listed?); links below a source are never followed: {e}"
                ),
            }),
            Err(e) => self.error(logical, "walk", &e),
        }
    }

    /// When the walk has moved to another directory than `current` (back up, after a
    /// subdirectory), says so.
    fn follow(&self, current: &mut PathBuf, logical_root: &Path, relative: &Path) -> Sent {
        if let Some(parent) = relative.parent()
            && parent != current.as_path()
        {
            parent.clone_into(current);
            self.send(Walked::Dir(logical_path(logical_root, parent)))?;
        }
        Some(())
    }

    fn add_walked(
        &self,
        root: &Arc<Root>,
        tree: &Tree,
        node: Node,
        logical: PathBuf,
        real: &Path,
    ) -> Sent {
        if self.taken(real) {
            return self.send(Walked::Taken);
        }
        self.at(Stage::Stat);
        let status = match tree.lstat(&node) {
            Ok(status) => status,
            Err(e) => return self.error(&logical, "stat", &e),
        };
        let target = (status.kind == FileType::Symlink).then(|| {
            self.at(Stage::ReadLink);
            tree.read_link(&node)
        });
        self.send(Walked::Entry(Found {
            logical,
            at: FileAt {
                root: Arc::clone(root),
                relative: node.relative,
                id: status.id,
            },
            status,
            target,
        }))
    }
}

/// A file found, kept in the heap of the newest ones: only what the archive needs of it.
#[derive(Debug)]
struct Candidate {
    logical: PathBuf,
    at: FileAt,
    size: u64,
    mtime: SystemTime,
    mtime_ns: i128,
    mode: u32,
}

/// Archive order: newest first, ties by path. The heap's top is the file archived last, the
/// first to give up its place.
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        other.mtime_ns.cmp(&self.mtime_ns).then_with(|| {
            self.logical
                .as_os_str()
                .as_bytes()
                .cmp(other.logical.as_os_str().as_bytes())
        })
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Candidate {}

/// What one source's walk gave.
struct SourceWalk {
    matched: u64,
    incomplete: Option<IncompleteWalk>,
    claim: Option<Claim>,
}

/// Gathers what the walkers find, within bounds: the newest `max_files` files, as many links,
/// and counted lists of what is left out.
struct Collector {
    max_files: u64,
    files: BinaryHeap<Candidate>,
    links: Vec<SelectedLink>,
    skipped: Listed<SkippedRecord>,
    errors: Listed<ErrorRecord>,
}

fn incomplete(reason: WalkStop, path: &Path) -> IncompleteWalk {
    let (path, path_base64) = manifest_name(path);
    IncompleteWalk {
        reason,
        path,
        path_base64,
    }
}

impl Collector {
    fn error(&mut self, path: &Path, operation: &str, error: String) {
        self.errors.push_with(0, || {
            let (path, path_base64) = manifest_name(path);
            ErrorRecord {
                path,
                path_base64,
                operation: operation.to_string(),
                error,
            }
        });
    }

    fn skip(&mut self, path: &Path, size: u64, reason: SkipReason) {
        self.skipped
            .push_with(size, || SkippedRecord::of(path, size, reason));
    }

    /// Walks one source on a walker thread, collecting what it finds until it ends, stalls,
    /// or the walk's deadline passes.
    fn walk(
        &mut self,
        source: Source,
        excludes: &Arc<Vec<Exclude>>,
        claims: &[Claim],
        limits: &WalkLimits,
    ) -> SourceWalk {
        let root = source.root().to_path_buf();
        let mut walked = SourceWalk {
            matched: 0,
            incomplete: None,
            claim: None,
        };
        if limits.deadline.is_some_and(|d| Instant::now() >= d) {
            walked.incomplete = Some(incomplete(WalkStop::Deadline, &root));
            return walked;
        }
        let (tx, rx) = mpsc::sync_channel(WALK_CHANNEL);
        let stage = Arc::new(AtomicU8::new(Stage::Resolve as u8));
        let walker = Walker {
            excludes: Arc::clone(excludes),
            earlier: claims.to_vec(),
            tx,
            stage: Arc::clone(&stage),
            #[cfg(debug_assertions)]
            hang: limits.hang.clone(),
            #[cfg(debug_assertions)]
            before_entering: limits.before_entering.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name("archive-walk".to_string())
            .spawn(move || walker.run(source));
        if let Err(e) = spawned {
            self.error(&root, "walk", format!("starting a walker thread: {e}"));
            walked.incomplete = Some(incomplete(WalkStop::Stalled, &root));
            return walked;
        }
        let mut at = root;
        let mut last_news = Instant::now();
        loop {
            let now = Instant::now();
            if limits.deadline.is_some_and(|d| now >= d) {
                walked.incomplete = Some(incomplete(WalkStop::Deadline, &at));
                break;
            }
            let stall_at = last_news + limits.stall_timeout;
            let until = limits.deadline.map_or(stall_at, |d| d.min(stall_at));
            match rx.recv_timeout(until.saturating_duration_since(now)) {
                Ok(event) => {
                    last_news = Instant::now();
                    match event {
                        Walked::Claim(claim) => walked.claim = Some(claim),
                        Walked::Dir(dir) => at = dir,
                        Walked::Taken => walked.matched += 1,
                        Walked::Entry(found) => {
                            walked.matched += 1;
                            self.add(found);
                        }
                        Walked::Error {
                            path,
                            operation,
                            error,
                        } => self.error(&path, operation, error),
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    let waited = last_news.elapsed();
                    if waited < limits.stall_timeout {
                        walked.incomplete = Some(incomplete(WalkStop::Deadline, &at));
                        break;
                    }
                    // The walker stays blocked in the kernel; it ends by itself if the call
                    // ever returns and finds the channel closed.
                    let stage = stage.load(AtomicOrdering::Relaxed);
                    let operation = Stage::ALL
                        .iter()
                        .find(|s| **s as u8 == stage)
                        .map_or("walk", |s| s.operation());
                    let what = "the rest of this source was not searched";
                    self.error(&at, operation, stalled_message(waited, what));
                    walked.incomplete = Some(incomplete(WalkStop::Stalled, &at));
                    break;
                }
            }
        }
        walked
    }

    /// One entry found: a file, a link or something else (never a directory).
    fn add(&mut self, found: Found) {
        let Found {
            logical,
            at,
            status,
            target,
        } = found;
        if status.kind == FileType::RegularFile {
            let mtime_ns = i128::from(status.mtime) * 1_000_000_000 + i128::from(status.mtime_nsec);
            let candidate = Candidate {
                logical,
                at,
                size: status.size,
                mtime: status.modified(),
                mtime_ns,
                mode: status.mode,
            };
            self.offer(candidate);
        } else if status.kind == FileType::Symlink {
            match target {
                Some(Ok(target)) if (self.links.len() as u64) < self.max_files => {
                    let archive_name = archive_name(&logical);
                    let (path, path_base64) = manifest_name(&logical);
                    let (target_text, target_base64) = manifest_name(&target);
                    self.links.push(SelectedLink {
                        record: SymlinkRecord {
                            path,
                            path_base64,
                            target: target_text,
                            target_base64,
                        },
                        archive_name,
                        target,
                        status,
                    });
                }
                Some(Ok(_)) => self.skip(&logical, 0, SkipReason::MaxFiles),
                Some(Err(e)) => self.error(&logical, "read_link", e.to_string()),
                None => self.error(&logical, "read_link", "not read".to_string()),
            }
        } else {
            self.skip(&logical, 0, SkipReason::SpecialFile);
        }
    }

    /// Keeps a file if it is among the newest `max_files` found so far; what gives up its
    /// place (it, or the oldest kept) is skipped.
    fn offer(&mut self, candidate: Candidate) {
        if (self.files.len() as u64) < self.max_files {
            self.files.push(candidate);
            return;
        }
        let left_out = match self.files.peek_mut() {
            Some(mut last) if candidate < *last => std::mem::replace(&mut *last, candidate),
            _ => candidate,
        };
        self.skip(&left_out.logical, left_out.size, SkipReason::MaxFiles);
    }

    /// Orders the files newest first and applies the byte caps.
    fn finish(mut self, spec: &ArchiveSpec, sources: Vec<SourceRecord>) -> Selection {
        // What the walk listed, by path, whatever order the directories were read in.
        self.skipped.records.sort_by(|a, b| a.path.cmp(&b.path));
        self.errors.records.sort_by(|a, b| a.path.cmp(&b.path));
        self.links.sort_by(|a, b| {
            a.archive_name
                .as_os_str()
                .as_bytes()
                .cmp(b.archive_name.as_os_str().as_bytes())
        });

        let candidates = self.files.into_sorted_vec();
        let mut files = Vec::with_capacity(candidates.len());
        let mut total: u64 = 0;
        for candidate in candidates {
            let archive_name = archive_name(&candidate.logical);
            let original = candidate.size;
            if archive_name == Path::new(MANIFEST_PATH) {
                self.skipped.push_with(original, || {
                    SkippedRecord::of(&candidate.logical, original, SkipReason::NameConflict)
                });
                continue;
            }
            let size = spec
                .max_file_bytes
                .map_or(original, |cap| original.min(cap));
            if let Some(cap) = spec.max_total_bytes
                && total.saturating_add(size) > cap
            {
                self.skipped.push_with(original, || {
                    SkippedRecord::of(&candidate.logical, original, SkipReason::MaxTotalBytes)
                });
                continue;
            }
            total += size;
            let (path, path_base64) = manifest_name(&candidate.logical);
            files.push(SelectedFile {
                planned: PlannedFile {
                    path,
                    path_base64,
                    size,
                    original_size: original,
                    offset: original - size,
                    mtime: rfc3339(candidate.mtime),
                    mode: octal_mode(candidate.mode),
                },
                at: Some(candidate.at),
                archive_name,
            });
        }
        let mut links = Vec::with_capacity(self.links.len());
        for link in self.links {
            if link.archive_name == Path::new(MANIFEST_PATH) {
                self.skipped.push(
                    SkippedRecord {
                        path: link.record.path,
                        path_base64: link.record.path_base64,
                        size: 0,
                        reason: SkipReason::NameConflict,
                    },
                    0,
                );
            } else {
                links.push(link);
            }
        }
        Selection {
            sources,
            files,
            links,
            skipped: self.skipped,
            errors: self.errors,
            walk_incomplete: false,
        }
    }
}

/// An entry's name inside the archive: its configured path without the leading `/`.
fn archive_name(logical: &Path) -> PathBuf {
    logical
        .strip_prefix("/")
        .map_or_else(|_| logical.to_path_buf(), Path::to_path_buf)
}
