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
//! - An exclude pattern with a `/` is matched against the full path (the configured one and the
//!   resolved one); without a `/`, against the file name (`*.gz`). An excluded directory is not
//!   entered.
//! - An entry found through several sources is taken once (by its resolved path).
//! - Files are ordered newest first by mtime (ties: path), so that a deadline cuts the oldest.
//!   `max_file_bytes` keeps the tail of a larger file, then `max_total_bytes` is filled greedily
//!   in that order: a file that does not fit is skipped and a smaller, older one may still fit.

use std::collections::HashSet;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use glob::{MatchOptions, Pattern};
use walkdir::WalkDir;

use super::ArchiveSpec;
use super::error::ArchiveError;
use super::manifest::{
    ErrorRecord, MANIFEST_PATH, Plan, PlannedFile, SkipReason, SkippedRecord, SourceRecord,
    SymlinkRecord, octal_mode, rfc3339,
};

/// `*` and `?` stay within one path component; `**` crosses them.
const MATCH: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// The selection with what the writer needs beyond the public plan.
#[derive(Debug)]
pub(crate) struct Selection {
    pub sources: Vec<SourceRecord>,
    /// In archive order, caps applied.
    pub files: Vec<SelectedFile>,
    /// By path.
    pub links: Vec<SelectedLink>,
    pub skipped: Vec<SkippedRecord>,
    pub errors: Vec<ErrorRecord>,
}

#[derive(Debug)]
pub(crate) struct SelectedFile {
    pub planned: PlannedFile,
    /// Where to read it (a configured root's symbolic links resolved).
    pub real_path: PathBuf,
    /// Its name inside the archive: the configured path without the leading `/`.
    pub archive_name: PathBuf,
}

#[derive(Debug)]
pub(crate) struct SelectedLink {
    pub record: SymlinkRecord,
    pub archive_name: PathBuf,
    pub target: PathBuf,
    pub metadata: Metadata,
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
            skipped: self.skipped,
            errors: self.errors,
            file_bytes,
        }
    }
}

/// Expands the sources, stats everything, orders and applies the caps. Reads no file contents.
pub(crate) fn select(spec: &ArchiveSpec) -> Result<Selection, ArchiveError> {
    let excludes = spec
        .exclude
        .iter()
        .map(|p| Exclude::parse(p))
        .collect::<Result<Vec<_>, _>>()?;
    let sources = spec
        .sources
        .iter()
        .map(|s| Source::parse(s))
        .collect::<Result<Vec<_>, _>>()?;

    let mut collector = Collector {
        excludes: &excludes,
        seen: HashSet::new(),
        matched: 0,
        files: Vec::new(),
        links: Vec::new(),
        skipped: Vec::new(),
        errors: Vec::new(),
    };
    let mut records = Vec::with_capacity(sources.len());
    for (text, source) in spec.sources.iter().zip(&sources) {
        let before = collector.matched;
        match source {
            Source::Path(path) => collector.collect_path(path),
            Source::Glob {
                root,
                pattern,
                depth,
            } => collector.collect_glob(root, pattern, *depth),
        }
        records.push(SourceRecord {
            source: text.clone(),
            matched: collector.matched - before,
        });
    }
    Ok(collector.finish(spec, records))
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

struct Collector<'a> {
    excludes: &'a [Exclude],
    /// Resolved paths already taken.
    seen: HashSet<PathBuf>,
    /// Entries matched so far (duplicates included), for [`SourceRecord::matched`].
    matched: u64,
    files: Vec<(SelectedFile, i128)>,
    links: Vec<SelectedLink>,
    skipped: Vec<SkippedRecord>,
    errors: Vec<ErrorRecord>,
}

fn lossy(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

impl Collector<'_> {
    fn error(&mut self, path: &Path, operation: &str, error: &io::Error) {
        self.errors.push(ErrorRecord {
            path: lossy(path),
            operation: operation.to_string(),
            error: error.to_string(),
        });
    }

    fn excluded(&self, logical: &Path, real: &Path) -> bool {
        self.excludes.iter().any(|e| e.matches(logical, real))
    }

    /// Resolves a configured root's symbolic links once. `None` when it does not exist (nothing
    /// to archive, not an error) or cannot be resolved (recorded).
    fn resolve(&mut self, root: &Path) -> Option<PathBuf> {
        match fs::canonicalize(root) {
            Ok(real) => Some(real),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // A dangling link as a root is worth reporting; a missing path is not.
                if fs::symlink_metadata(root).is_ok() {
                    self.error(root, "resolve", &e);
                }
                None
            }
            Err(e) => {
                self.error(root, "resolve", &e);
                None
            }
        }
    }

    fn collect_path(&mut self, path: &Path) {
        let Some(real) = self.resolve(path) else {
            return;
        };
        if self.excluded(path, &real) {
            return;
        }
        match fs::metadata(&real) {
            Ok(meta) if meta.is_dir() => self.walk_dir(path, &real),
            Ok(meta) => self.add(path.to_path_buf(), real, meta),
            Err(e) => self.error(path, "stat", &e),
        }
    }

    fn collect_glob(&mut self, root: &Path, pattern: &Pattern, depth: Option<usize>) {
        let Some(real_root) = self.resolve(root) else {
            return;
        };
        if !fs::metadata(&real_root).is_ok_and(|m| m.is_dir()) {
            return;
        }
        let mut walker = WalkDir::new(&real_root)
            .follow_links(false)
            .min_depth(1)
            .sort_by_file_name();
        if let Some(depth) = depth {
            walker = walker.max_depth(depth);
        }
        let mut entries = walker.into_iter();
        while let Some(next) = entries.next() {
            let entry = match next {
                Ok(entry) => entry,
                Err(e) => {
                    self.walk_error(root, &real_root, &e);
                    continue;
                }
            };
            let logical = logical_path(root, &real_root, entry.path());
            let is_dir = entry.file_type().is_dir();
            if self.excluded(&logical, entry.path()) {
                if is_dir {
                    entries.skip_current_dir();
                }
                continue;
            }
            if !pattern.matches_path_with(&logical, MATCH) {
                continue;
            }
            if is_dir {
                entries.skip_current_dir();
                self.walk_dir(&logical, entry.path());
            } else {
                self.add_walked(logical, entry);
            }
        }
    }

    /// Everything below a directory, without following links.
    fn walk_dir(&mut self, logical_root: &Path, real_root: &Path) {
        let mut entries = WalkDir::new(real_root)
            .follow_links(false)
            .min_depth(1)
            .sort_by_file_name()
            .into_iter();
        while let Some(next) = entries.next() {
            let entry = match next {
                Ok(entry) => entry,
                Err(e) => {
                    self.walk_error(logical_root, real_root, &e);
                    continue;
                }
            };
            let logical = logical_path(logical_root, real_root, entry.path());
            let is_dir = entry.file_type().is_dir();
            if self.excluded(&logical, entry.path()) {
                if is_dir {
                    entries.skip_current_dir();
                }
                continue;
            }
            if !is_dir {
                self.add_walked(logical, entry);
            }
        }
    }

    fn walk_error(&mut self, logical_root: &Path, real_root: &Path, e: &walkdir::Error) {
        let path = e.path().map_or_else(
            || logical_root.to_path_buf(),
            |p| logical_path(logical_root, real_root, p),
        );
        let error = match e.io_error() {
            Some(io) => io.to_string(),
            None => e.to_string(),
        };
        self.errors.push(ErrorRecord {
            path: lossy(&path),
            operation: "walk".to_string(),
            error,
        });
    }

    fn add_walked(&mut self, logical: PathBuf, entry: walkdir::DirEntry) {
        // Without following links this is an lstat: a link is seen as a link.
        match entry.metadata() {
            Ok(meta) => self.add(logical, entry.into_path(), meta),
            Err(e) => {
                let error = match e.io_error() {
                    Some(io) => io.to_string(),
                    None => e.to_string(),
                };
                self.errors.push(ErrorRecord {
                    path: lossy(&logical),
                    operation: "stat".to_string(),
                    error,
                });
            }
        }
    }

    /// One entry found: a file, a link or something else (never a directory).
    fn add(&mut self, logical: PathBuf, real: PathBuf, meta: Metadata) {
        self.matched += 1;
        if !self.seen.insert(real.clone()) {
            return;
        }
        let file_type = meta.file_type();
        let archive_name = logical
            .strip_prefix("/")
            .map_or_else(|_| logical.clone(), Path::to_path_buf);
        let path = lossy(&logical);
        if file_type.is_file() {
            let mtime = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            let mtime_ns = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
            let planned = PlannedFile {
                path,
                size: meta.len(),
                original_size: meta.len(),
                offset: 0,
                mtime: rfc3339(mtime),
                mode: octal_mode(meta.permissions().mode()),
            };
            self.files.push((
                SelectedFile {
                    planned,
                    real_path: real,
                    archive_name,
                },
                mtime_ns,
            ));
        } else if file_type.is_symlink() {
            match fs::read_link(&real) {
                Ok(target) => self.links.push(SelectedLink {
                    record: SymlinkRecord {
                        path,
                        target: lossy(&target),
                    },
                    archive_name,
                    target,
                    metadata: meta,
                }),
                Err(e) => self.error(&logical, "read_link", &e),
            }
        } else {
            self.skipped.push(SkippedRecord {
                path,
                size: 0,
                reason: SkipReason::SpecialFile,
            });
        }
    }

    /// Orders the files newest first and applies the caps.
    fn finish(mut self, spec: &ArchiveSpec, sources: Vec<SourceRecord>) -> Selection {
        self.files.sort_by(|(a, a_mtime), (b, b_mtime)| {
            b_mtime
                .cmp(a_mtime)
                .then_with(|| a.planned.path.cmp(&b.planned.path))
        });
        self.links.sort_by(|a, b| a.record.path.cmp(&b.record.path));

        let mut files = Vec::with_capacity(self.files.len());
        let mut total: u64 = 0;
        for (mut file, _) in self.files {
            if file.archive_name == Path::new(MANIFEST_PATH) {
                self.skipped.push(SkippedRecord {
                    path: file.planned.path,
                    size: file.planned.original_size,
                    reason: SkipReason::NameConflict,
                });
                continue;
            }
            let original = file.planned.original_size;
            let size = spec
                .max_file_bytes
                .map_or(original, |cap| original.min(cap));
            if let Some(cap) = spec.max_total_bytes
                && total.saturating_add(size) > cap
            {
                self.skipped.push(SkippedRecord {
                    path: file.planned.path,
                    size: original,
                    reason: SkipReason::MaxTotalBytes,
                });
                continue;
            }
            total += size;
            file.planned.size = size;
            file.planned.offset = original - size;
            files.push(file);
        }
        let mut links = Vec::with_capacity(self.links.len());
        for link in self.links {
            if link.archive_name == Path::new(MANIFEST_PATH) {
                self.skipped.push(SkippedRecord {
                    path: link.record.path,
                    size: 0,
                    reason: SkipReason::NameConflict,
                });
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
        }
    }
}

/// The configured name of an entry found below a resolved root.
fn logical_path(logical_root: &Path, real_root: &Path, found: &Path) -> PathBuf {
    // Walked entries are always below the root they were walked from; the fallback keeps the
    // resolved path rather than inventing one.
    match found.strip_prefix(real_root) {
        Ok(relative) if relative.as_os_str().is_empty() => logical_root.to_path_buf(),
        Ok(relative) => logical_root.join(relative),
        Err(_) => found.to_path_buf(),
    }
}
