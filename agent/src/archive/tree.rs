//! A directory tree walked through descriptors, never through paths.
//!
//! A walk by full paths (as `walkdir` does: `opendir("/var/log/app/sub")`, `lstat` of each
//! entry by its path) resolves every path again, following whatever links it meets on the way:
//! a directory swapped for a link to `/etc` between being listed and being read is read
//! through the link, and the walk lists `/etc` as if it were below the source. Here each
//! directory is opened relative to its parent's descriptor with `O_NOFOLLOW | O_DIRECTORY`,
//! and each entry is examined relative to its directory's descriptor (`fstatat` without
//! following, `readlinkat`): a swapped-in link is never entered, only refused, and nothing
//! outside the root is ever listed.
//!
//! Entries come depth first, a directory before its contents, in the order the filesystem
//! lists them; a directory is entered only when the walker asks ([`Tree::enter`]), right after
//! it was listed. One descriptor is open per level of depth being walked.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustix::fs::{self as rfs, AtFlags, Dir, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::beneath::{FileId, Root};

/// An entry's status, taken without following a link: what the archive needs of it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Status {
    pub kind: FileType,
    pub size: u64,
    /// Modification time: seconds and nanoseconds since the epoch.
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// `st_mode`: type and permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub id: FileId,
}

impl Status {
    pub fn of(stat: &rfs::Stat) -> Status {
        Status {
            kind: FileType::from_raw_mode(stat.st_mode),
            // Negative only for a corrupt inode: taken as empty.
            size: u64::try_from(stat.st_size).unwrap_or(0),
            mtime: stat.st_mtime,
            // Always below 10⁹ when the kernel fills it.
            mtime_nsec: u32::try_from(stat.st_mtime_nsec).unwrap_or(0),
            mode: stat.st_mode,
            uid: stat.st_uid,
            gid: stat.st_gid,
            id: identity(stat),
        }
    }

    /// The modification time (the epoch if it cannot be represented).
    pub fn modified(&self) -> SystemTime {
        let nanos = Duration::from_nanos(u64::from(self.mtime_nsec));
        let time = match u64::try_from(self.mtime) {
            Ok(secs) => SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs) + nanos),
            Err(_) => SystemTime::UNIX_EPOCH
                .checked_sub(Duration::from_secs(self.mtime.unsigned_abs()))
                .and_then(|t| t.checked_add(nanos)),
        };
        time.unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

/// A file's device and inode, as `stat` gives them.
pub(crate) fn identity(stat: &rfs::Stat) -> FileId {
    FileId {
        dev: stat.st_dev,
        ino: stat.st_ino,
    }
}

/// One directory being listed.
struct Level {
    dir: Dir,
    /// Its path relative to the root (empty for the root).
    relative: PathBuf,
    /// The depth of its entries: 1 for the root's.
    depth: usize,
}

/// An entry listed, not yet examined.
pub(crate) struct Node {
    /// Its path relative to the root.
    pub relative: PathBuf,
    /// 1 for the root's entries.
    pub depth: usize,
    /// Its type as the directory listing gives it (`Unknown` on some filesystems).
    listed: FileType,
    /// The level of the directory it is in.
    level: usize,
}

impl Node {
    fn name(&self) -> &OsStr {
        // Built by joining a name that is neither `.` nor `..` and has no `/`: there is one.
        self.relative.file_name().unwrap_or_default()
    }
}

/// The walk of one root.
pub(crate) struct Tree {
    levels: Vec<Level>,
}

impl Tree {
    /// Starts listing the root.
    pub fn open(root: &Root) -> io::Result<Tree> {
        let fd = rfs::openat(
            root.fd(),
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Tree {
            levels: vec![Level {
                dir: Dir::new(fd)?,
                relative: PathBuf::new(),
                depth: 1,
            }],
        })
    }

    /// The next entry, or a directory that could not be listed (its relative path and why).
    pub fn next(&mut self) -> Option<Result<Node, (PathBuf, io::Error)>> {
        loop {
            let level = self.levels.len().checked_sub(1)?;
            let top = &mut self.levels[level];
            match top.dir.read() {
                None => {
                    self.levels.pop();
                }
                Some(Err(e)) => {
                    let relative = std::mem::take(&mut top.relative);
                    self.levels.pop();
                    return Some(Err((relative, e.into())));
                }
                Some(Ok(entry)) => {
                    let name = entry.file_name().to_bytes();
                    if name == b"." || name == b".." {
                        continue;
                    }
                    return Some(Ok(Node {
                        relative: top.relative.join(OsStr::from_bytes(name)),
                        depth: top.depth,
                        listed: entry.file_type(),
                        level,
                    }));
                }
            }
        }
    }

    /// The directory `node` is in, while it is the one being listed: from the call to
    /// [`Tree::next`] that gave `node` until the next call or [`Tree::enter`].
    fn parent(&self, node: &Node) -> io::Result<&Dir> {
        match self.levels.last() {
            Some(level) if node.level + 1 == self.levels.len() => Ok(&level.dir),
            _ => Err(io::Error::other(
                "the walk is no longer in this entry's directory",
            )),
        }
    }

    /// The entry's status, not following a link.
    pub fn lstat(&self, node: &Node) -> io::Result<Status> {
        let dir = self.parent(node)?.fd()?;
        let stat = rfs::statat(dir, node.name(), AtFlags::SYMLINK_NOFOLLOW)?;
        Ok(Status::of(&stat))
    }

    /// Whether the entry is a directory (as listed; examined when the listing does not say).
    pub fn is_dir(&self, node: &Node) -> bool {
        match node.listed {
            FileType::Directory => true,
            FileType::Unknown => self
                .lstat(node)
                .is_ok_and(|s| s.kind == FileType::Directory),
            _ => false,
        }
    }

    /// A link's target, verbatim.
    pub fn read_link(&self, node: &Node) -> io::Result<PathBuf> {
        let dir = self.parent(node)?.fd()?;
        let target = rfs::readlinkat(dir, node.name(), Vec::new())?;
        Ok(PathBuf::from(OsString::from_vec(target.into_bytes())))
    }

    /// Goes into the directory `node`, the last entry [`Tree::next`] gave: its entries come
    /// next. Opened without following a link: an entry listed as a directory and swapped for
    /// a link since fails with [`Errno::LOOP`] or [`Errno::NOTDIR`] ([`is_swapped`]).
    pub fn enter(&mut self, node: &Node) -> io::Result<()> {
        let dir = self.parent(node)?.fd()?;
        let fd = rfs::openat(
            dir,
            node.name(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        self.levels.push(Level {
            dir: Dir::new(fd)?,
            relative: node.relative.clone(),
            depth: node.depth + 1,
        });
        Ok(())
    }
}

/// Whether entering a directory failed because it is no longer one: a link (or a file) took
/// its place after it was listed.
pub(crate) fn is_swapped(error: &io::Error) -> bool {
    let code = error.raw_os_error();
    code == Some(Errno::LOOP.raw_os_error()) || code == Some(Errno::NOTDIR.raw_os_error())
}

/// The configured name of an entry at `relative` below a root configured as `logical_root`.
pub(crate) fn logical_path(logical_root: &Path, relative: &Path) -> PathBuf {
    if relative.as_os_str().is_empty() {
        logical_root.to_path_buf()
    } else {
        logical_root.join(relative)
    }
}
