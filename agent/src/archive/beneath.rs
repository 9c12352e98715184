//! Opening what the walk found, below its source's root, without following any symbolic link.
//!
//! The walk and the reads are seconds apart (minutes for the last files of a large archive),
//! and a local user who owns a log directory can rename anything in it meanwhile. Opened again
//! by its full path, a file would be found through whatever a directory on the way had become:
//! a symbolic link to `/etc` turns `/var/log/app/sub/shadow` into `/etc/shadow`. So each
//! configured root is resolved and opened once ([`Root`]), and everything below it is opened
//! relative to that descriptor, one component at a time, refusing every symbolic link:
//!
//! - with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` (Linux 5.6), which does exactly
//!   that in one call;
//! - where the kernel lacks it (or a seccomp filter refuses it), component by component with
//!   `openat(O_PATH | O_NOFOLLOW)` and a status check of each directory, then the file itself
//!   with `O_NOFOLLOW`.
//!
//! The file opened must then be the one the walk listed: same device and inode ([`FileId`]),
//! or it is refused too (it was replaced since, and what replaced it was never examined).
//! A refusal is not an error of the archive: the file is listed as skipped (`refused`) and
//! `errors` says why.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Set once `openat2` was found missing (ENOSYS): the fallback is used from then on, without
/// asking the kernel again for every file.
static OPENAT2_MISSING: AtomicBool = AtomicBool::new(false);

/// A configured root, resolved once and opened: what is below it is opened relative to this
/// descriptor, so that renaming anything on the way to the root afterwards changes nothing.
#[derive(Debug)]
pub(crate) struct Root {
    /// `O_PATH` descriptor of the directory.
    fd: OwnedFd,
    /// Its resolved path, for names and messages only: never opened again.
    real: PathBuf,
}

impl Root {
    /// Opens the resolved (canonical) directory `real`. Every component of a canonical path is
    /// a directory, not a link, so one that is a link now was swapped in since the resolution:
    /// refused like a link below the root.
    pub fn open(real: &Path, how: Resolve) -> Result<Root, Refusal> {
        let slash = rfs::open(
            "/",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Refusal::Failed(e.into()))?;
        let relative = real
            .strip_prefix("/")
            .map_err(|_| Refusal::Refused(format!("{} is not an absolute path", real.display())))?;
        let fd = if relative.as_os_str().is_empty() {
            slash
        } else {
            let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            open_beneath(slash.as_fd(), relative, flags, how)?
        };
        Ok(Root {
            fd,
            real: real.to_path_buf(),
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The resolved path of the root.
    pub fn real(&self) -> &Path {
        &self.real
    }
}

/// A file the walk found: where it is, below which root, and which file it was.
#[derive(Debug, Clone)]
pub(crate) struct FileAt {
    pub root: Arc<Root>,
    /// Its path below the root: plain names only.
    pub relative: PathBuf,
    pub id: FileId,
}

impl FileAt {
    /// Its resolved path (hooks, messages); never opened.
    pub fn real_path(&self) -> PathBuf {
        self.root.real.join(&self.relative)
    }
}

/// A file's identity: what the walk saw, and what a later open must find again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct FileId {
    pub dev: u64,
    pub ino: u64,
}

/// How a path below a root is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Resolve {
    /// `openat2` where the kernel has it, else component by component.
    #[default]
    Auto,
    /// Component by component, whatever the kernel has (tests of the fallback).
    #[cfg_attr(not(test), allow(dead_code, reason = "only tests force the fallback"))]
    Components,
}

/// Why a path below a root was not opened.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// Opening it would have followed a symbolic link, left the root, or found another file
    /// than the one listed: a message starting with `refused:`.
    Refused(String),
    /// The system said no (missing, permission, I/O...).
    Failed(io::Error),
}

fn refused(why: impl std::fmt::Display) -> Refusal {
    Refusal::Refused(format!("refused: {why}"))
}

/// Why a path with a symbolic link on the way is refused.
fn link_on_the_way(relative: &Path) -> Refusal {
    refused(format_args!(
        "a symbolic link on the way to {} (swapped in since the walk?); links below a source \
         are archived as links, never followed",
        relative.display()
    ))
}

/// Opens `relative` below `root` with `flags` (which must hold `O_NOFOLLOW`), following no
/// symbolic link on the way and never leaving `root`.
pub(crate) fn open_beneath(
    root: BorrowedFd<'_>,
    relative: &Path,
    flags: OFlags,
    how: Resolve,
) -> Result<OwnedFd, Refusal> {
    // Only plain names: the walk makes no other, and `..` could climb out in the fallback.
    if relative.as_os_str().is_empty()
        || !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(refused(format_args!(
            "{} is not a plain relative path",
            relative.display()
        )));
    }
    let fd = open_either_way(root, relative, flags, how)?;
    // With `O_PATH | O_NOFOLLOW` a link at the end is opened as itself rather than refused.
    if flags.contains(OFlags::PATH) {
        let stat = rfs::fstat(&fd).map_err(|e| Refusal::Failed(e.into()))?;
        if FileType::from_raw_mode(stat.st_mode) == FileType::Symlink {
            return Err(link_on_the_way(relative));
        }
    }
    Ok(fd)
}

fn open_either_way(
    root: BorrowedFd<'_>,
    relative: &Path,
    flags: OFlags,
    how: Resolve,
) -> Result<OwnedFd, Refusal> {
    if how == Resolve::Auto && !OPENAT2_MISSING.load(Ordering::Relaxed) {
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS;
        match rfs::openat2(root, relative, flags, Mode::empty(), resolve) {
            Ok(fd) => return Ok(fd),
            Err(Errno::LOOP) => return Err(link_on_the_way(relative)),
            Err(Errno::NOTDIR) if is_link(root, relative) => {
                return Err(link_on_the_way(relative));
            }
            Err(Errno::XDEV) => {
                return Err(refused(format_args!(
                    "resolving {} would leave the source's root",
                    relative.display()
                )));
            }
            Err(Errno::NOSYS) => OPENAT2_MISSING.store(true, Ordering::Relaxed),
            // A seccomp filter that does not know `openat2` (EPERM), a kernel that does not
            // know a flag (EINVAL) or the structure's size (E2BIG): the fallback is as strict.
            Err(Errno::PERM | Errno::INVAL | Errno::TOOBIG) => {}
            Err(e) => return Err(Refusal::Failed(e.into())),
        }
    }
    open_by_components(root, relative, flags)
}

/// The fallback of [`open_beneath`]: each directory on the way opened with `O_PATH` and
/// `O_NOFOLLOW` (a link is then opened as itself, not followed) and checked to be a directory,
/// the last component opened with the caller's flags, `O_NOFOLLOW` among them.
fn open_by_components(
    root: BorrowedFd<'_>,
    relative: &Path,
    flags: OFlags,
) -> Result<OwnedFd, Refusal> {
    let mut names: Vec<&OsStr> = relative.components().map(Component::as_os_str).collect();
    let Some(last) = names.pop() else {
        return Err(refused("an empty path"));
    };
    let mut dir: Option<OwnedFd> = None;
    for name in names {
        let at = dir.as_ref().map_or(root, AsFd::as_fd);
        let next = rfs::openat(
            at,
            name.as_bytes(),
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Refusal::Failed(e.into()))?;
        let stat = rfs::fstat(&next).map_err(|e| Refusal::Failed(e.into()))?;
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::Directory => dir = Some(next),
            FileType::Symlink => return Err(link_on_the_way(relative)),
            _ => return Err(Refusal::Failed(Errno::NOTDIR.into())),
        }
    }
    let at = dir.as_ref().map_or(root, AsFd::as_fd);
    match rfs::openat(at, last.as_bytes(), flags | OFlags::NOFOLLOW, Mode::empty()) {
        Ok(fd) => Ok(fd),
        Err(Errno::LOOP) => Err(link_on_the_way(relative)),
        Err(Errno::NOTDIR) if is_link(at, Path::new(last)) => Err(link_on_the_way(relative)),
        Err(e) => Err(Refusal::Failed(e.into())),
    }
}

/// Whether `relative` names a link: `O_DIRECTORY | O_NOFOLLOW` on a link says "not a
/// directory", and the message should say what it is. Only for the wording: this `stat`
/// opens nothing.
fn is_link(at: BorrowedFd<'_>, relative: &Path) -> bool {
    rfs::statat(at, relative, AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Symlink)
}

/// Checks that the file opened is the one the walk listed; if not, why it is refused.
pub(crate) fn same_file(listed: FileId, opened: FileId) -> Result<(), String> {
    if listed == opened {
        return Ok(());
    }
    Err(format!(
        "refused: not the file the walk listed (device {} inode {} then, device {} inode {} \
         now): it was replaced since, and what replaced it was never examined",
        listed.dev, listed.ino, opened.dev, opened.ino
    ))
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    use super::*;

    const READ: OFlags = OFlags::RDONLY
        .union(OFlags::NOFOLLOW)
        .union(OFlags::CLOEXEC)
        .union(OFlags::NONBLOCK);

    fn read(root: &Root, relative: &str, how: Resolve) -> Result<String, Refusal> {
        let fd = open_beneath(root.fd(), Path::new(relative), READ, how)?;
        let mut text = String::new();
        fs::File::from(fd).read_to_string(&mut text).unwrap();
        Ok(text)
    }

    fn is_refused(result: Result<String, Refusal>, what: &str) -> bool {
        match result {
            Err(Refusal::Refused(why)) => why.starts_with("refused:") && why.contains(what),
            other => panic!("expected a refusal ({what}), got {other:?}"),
        }
    }

    #[test]
    fn both_ways_open_below_the_root_and_refuse_every_link() {
        let dir = tempfile::tempdir().unwrap();
        let base = fs::canonicalize(dir.path()).unwrap();
        fs::create_dir_all(base.join("root/a/b")).unwrap();
        fs::create_dir_all(base.join("outside")).unwrap();
        fs::write(base.join("root/a/b/log"), "inside").unwrap();
        fs::write(base.join("outside/log"), "outside").unwrap();
        symlink(base.join("outside"), base.join("root/a/out")).unwrap();
        symlink("b", base.join("root/a/inner")).unwrap();
        symlink("b/log", base.join("root/a/loglink")).unwrap();
        for how in [Resolve::Auto, Resolve::Components] {
            let root = Root::open(&base.join("root"), how).unwrap();
            assert_eq!(read(&root, "a/b/log", how).unwrap(), "inside");
            // Even a link that stays inside is refused: links are archived as links.
            assert!(is_refused(read(&root, "a/out/log", how), "symbolic link"));
            assert!(is_refused(read(&root, "a/inner/log", how), "symbolic link"));
            assert!(is_refused(read(&root, "a/loglink", how), "symbolic link"));
            assert!(is_refused(read(&root, "../outside/log", how), "plain"));
            assert!(is_refused(read(&root, "/etc/passwd", how), "plain"));
            assert!(matches!(
                read(&root, "a/b/log/x", how),
                Err(Refusal::Failed(e)) if e.raw_os_error() == Some(20)
            ));
            assert!(matches!(
                read(&root, "a/missing", how),
                Err(Refusal::Failed(e)) if e.kind() == io::ErrorKind::NotFound
            ));
            // A root whose own path holds a link now: swapped in after it was resolved.
            assert!(matches!(
                Root::open(&base.join("root/a/out"), how),
                Err(Refusal::Refused(why)) if why.contains("symbolic link")
            ));
        }
    }

    #[test]
    fn a_different_inode_is_refused() {
        let listed = FileId { dev: 1, ino: 2 };
        assert!(same_file(listed, listed).is_ok());
        assert!(matches!(
            same_file(listed, FileId { dev: 1, ino: 3 }),
            Err(why) if why.starts_with("refused:")
                && why.contains("inode 2 then")
                && why.contains("inode 3 now")
        ));
    }
}
