//! A file's blocking calls on a thread of their own.
//!
//! On a hung NFS mount (or any filesystem whose server stopped answering), `open`, `fstat` and
//! `read` block in the kernel and cannot be interrupted: the thread that made the call is lost
//! until the server comes back. The archive writer therefore never makes those calls itself. A
//! [`Reader`] thread makes them and hands the answers over a channel; the writer waits for each
//! answer with a timeout, and when one does not come it stops waiting, abandons the reader
//! (which holds nothing the archive needs: its file, its buffers and its end of the channels)
//! and starts a new one for the next file. An abandoned reader that wakes up later finds its
//! channels closed and ends.
//!
//! One request per file: the reader opens it below its source's root without following a link
//! ([`super::beneath`]), checks that it is the file the walk listed, takes its status, decides
//! the entry's size (the caps are given with the request) and answers that, then sends the content in chunks of
//! [`CHUNK_BYTES`] and ends with the status after reading. Chunks are read ahead into at most
//! [`CHUNKS_IN_FLIGHT`] buffers that the writer hands back once written: memory stays bounded,
//! reading overlaps hashing and compressing, and a small file costs one exchange each way.

use std::fs::{File, Metadata};
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Instant;

use rustix::fs::{self as rfs, OFlags};

use super::beneath::{FileAt, Refusal, Resolve, open_beneath, same_file};
use super::manifest::TruncateReason;
use super::tree::identity;

/// Bytes read from a file at a time.
pub(crate) const CHUNK_BYTES: usize = 256 * 1024;

/// Chunks a reader may have read ahead of the writer.
const CHUNKS_IN_FLIGHT: usize = 2;

/// A chunk this small (the whole of a small file, or a large file's last bytes) is read into a
/// buffer of its own size rather than a shared one, so that the reader can go on to the next
/// files without waiting for the writer to hand buffers back. Files asked ahead are few, so
/// this stays bounded too.
const SMALL_CHUNK_BYTES: usize = 16 * 1024;

/// How a file is opened: not through a link (a file swapped for one is refused), and without
/// blocking (a file swapped for a FIFO does not hang the drain; the type is checked next).
const OPEN_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NONBLOCK)
    .union(OFlags::CLOEXEC);

/// Debug builds only: makes a file's calls hang in the reader thread, as they would on a hung
/// mount, so that tests can show what the archive does then.
#[cfg(debug_assertions)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hang {
    /// `open` does not return for this long.
    #[cfg_attr(
        not(test),
        allow(dead_code, reason = "only unit tests make an open hang")
    )]
    Open(std::time::Duration),
    /// `read` does not return for this long once `after` bytes of the entry were read.
    Read {
        after: u64,
        duration: std::time::Duration,
    },
}

/// What makes a file's calls hang: a [`Hang`] in debug builds, nothing in release builds.
#[cfg(debug_assertions)]
pub(crate) type HangSeam = Option<Hang>;
#[cfg(not(debug_assertions))]
pub(crate) type HangSeam = ();

/// What makes a read hang (after so many bytes, for so long) in debug builds.
#[cfg(debug_assertions)]
type ReadHang = Option<(u64, std::time::Duration)>;
#[cfg(not(debug_assertions))]
type ReadHang = ();

/// How much of a file goes into its entry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caps {
    /// `max_file_bytes`: keep the tail.
    pub max_file_bytes: Option<u64>,
    /// What `max_total_bytes` leaves for this file.
    pub budget: Option<u64>,
}

/// A file to archive.
pub(crate) struct Request {
    /// The file, as the walk found it.
    pub at: FileAt,
    /// How its path is resolved below the root (tests force the fallback).
    pub resolve: Resolve,
    pub caps: Caps,
    /// Wait for [`Reader::go`] between answering the size and reading (for test hooks that
    /// change the file then).
    pub pause: bool,
    pub hang: HangSeam,
}

enum Order {
    File(Request),
    Go,
}

/// A file opened, its status taken and its entry's extent decided.
pub(crate) struct Opened {
    pub meta: Metadata,
    /// Bytes in the entry, from `offset` in the file.
    pub size: u64,
    pub offset: u64,
    /// Why the entry is not the whole file, when a cap cut it.
    pub cap: Option<TruncateReason>,
}

/// What a reader answers for a file, in order: `Opened`; when it opened, the content as
/// `Chunk`s, then `End`.
pub(crate) enum Reply {
    /// Or what failed: `open` or `stat`, and why.
    Opened(Result<Opened, (&'static str, io::Error)>),
    /// Not opened, or opened and found to be another file than the one listed: why, a
    /// message starting with `refused:`. Nothing of it was read.
    Refused(String),
    /// The next bytes of the entry: `buffer[..len]`. Hand the buffer back with
    /// [`Reader::give_back`].
    Chunk { buffer: Vec<u8>, len: usize },
    /// The file delivered everything asked (`stop` is `None`) or why not, and its status after
    /// reading.
    End {
        stop: Option<Stop>,
        after: io::Result<Metadata>,
    },
}

/// Why a file delivered less than asked.
pub(crate) enum Stop {
    /// End of file first: it became shorter.
    Shrank,
    /// Seeking or reading failed.
    Failed(io::Error),
}

/// How waiting for a reply ended.
pub(crate) enum Waited {
    Reply(Reply),
    /// No reply by the time given: the reader is stuck in a call, this one.
    Stalled(&'static str),
    /// The reader thread is gone (it panicked); nothing more will come.
    Gone,
}

/// The call a reader is in, for naming the one that stalled.
const IN_OPEN: u8 = 0;
const IN_STAT: u8 = 1;
const IN_READ: u8 = 2;

fn operation(stage: u8) -> &'static str {
    match stage {
        IN_OPEN => "open",
        IN_STAT => "stat",
        _ => "read",
    }
}

/// The writer's end of a reader thread.
pub(crate) struct Reader {
    orders: Sender<Order>,
    replies: Receiver<Reply>,
    free: Sender<Vec<u8>>,
    stage: Arc<AtomicU8>,
}

impl Reader {
    /// Starts a reader thread with its buffers.
    pub fn start() -> io::Result<Reader> {
        let (orders, orders_rx) = mpsc::channel();
        let (replies_tx, replies) = mpsc::channel();
        let (free, free_rx) = mpsc::channel();
        for _ in 0..CHUNKS_IN_FLIGHT {
            // Cannot fail: the receiving end is held just above.
            let _ = free.send(vec![0u8; CHUNK_BYTES]);
        }
        let stage = Arc::new(AtomicU8::new(IN_OPEN));
        let thread = Thread {
            orders: orders_rx,
            replies: replies_tx,
            free: free_rx,
            stash: Vec::new(),
            stage: Arc::clone(&stage),
        };
        std::thread::Builder::new()
            .name("archive-read".to_string())
            .spawn(move || thread.serve())?;
        Ok(Reader {
            orders,
            replies,
            free,
            stage,
        })
    }

    /// Asks for a file. `false` when the reader is gone.
    pub fn request(&self, request: Request) -> bool {
        self.orders.send(Order::File(request)).is_ok()
    }

    /// Lets a paused reader read.
    pub fn go(&self) -> bool {
        self.orders.send(Order::Go).is_ok()
    }

    /// The next reply, waiting until `until` at most.
    pub fn wait(&self, until: Instant) -> Waited {
        let timeout = until.saturating_duration_since(Instant::now());
        match self.replies.recv_timeout(timeout) {
            Ok(reply) => Waited::Reply(reply),
            Err(RecvTimeoutError::Timeout) => {
                Waited::Stalled(operation(self.stage.load(Ordering::Relaxed)))
            }
            Err(RecvTimeoutError::Disconnected) => Waited::Gone,
        }
    }

    /// Returns a chunk's buffer for the next read.
    pub fn give_back(&self, buffer: Vec<u8>) {
        // Small chunks have buffers of their own, which go; a reader that has ended needs none.
        if buffer.len() == CHUNK_BYTES {
            let _ = self.free.send(buffer);
        }
    }
}

/// The reader thread's side. Every method returns `None` once the writer is gone.
struct Thread {
    orders: Receiver<Order>,
    replies: Sender<Reply>,
    free: Receiver<Vec<u8>>,
    /// Buffers back from a read that ended early, used before waiting for the writer's.
    stash: Vec<Vec<u8>>,
    stage: Arc<AtomicU8>,
}

impl Thread {
    fn serve(mut self) {
        while let Ok(order) = self.orders.recv() {
            // A `Go` without a paused file has nothing to start.
            if let Order::File(request) = order
                && self.file(request).is_none()
            {
                return;
            }
        }
    }

    fn at(&self, stage: u8) {
        self.stage.store(stage, Ordering::Relaxed);
    }

    fn reply(&self, reply: Reply) -> Option<()> {
        self.replies.send(reply).ok()
    }

    fn file(&mut self, request: Request) -> Option<()> {
        #[cfg(debug_assertions)]
        if let Some(Hang::Open(duration)) = request.hang {
            self.at(IN_OPEN);
            std::thread::sleep(duration);
        }
        self.at(IN_OPEN);
        let at = &request.at;
        let fd = match open_beneath(at.root.fd(), &at.relative, OPEN_FLAGS, request.resolve) {
            Ok(fd) => fd,
            Err(Refusal::Refused(why)) => return self.reply(Reply::Refused(why)),
            Err(Refusal::Failed(e)) => return self.reply(Reply::Opened(Err(("open", e)))),
        };
        self.at(IN_STAT);
        // The identity from the same call the walk made (`stat`), so that both are encoded
        // alike; the status for the entry from std, which the writer works with.
        let opened_id = match rfs::fstat(&fd) {
            Ok(stat) => identity(&stat),
            Err(e) => return self.reply(Reply::Opened(Err(("stat", e.into())))),
        };
        let mut file = File::from(fd);
        let meta = match file.metadata() {
            Ok(meta) => meta,
            Err(e) => return self.reply(Reply::Opened(Err(("stat", e)))),
        };
        if !meta.is_file() {
            let error = io::Error::other("no longer a regular file (replaced since it was listed)");
            return self.reply(Reply::Opened(Err(("open", error))));
        }
        if let Err(why) = same_file(at.id, opened_id) {
            return self.reply(Reply::Refused(why));
        }
        let (size, offset, cap) = extent(meta.len(), request.caps);
        self.reply(Reply::Opened(Ok(Opened {
            meta,
            size,
            offset,
            cap,
        })))?;
        if request.pause {
            match self.orders.recv().ok()? {
                Order::Go => {}
                // The writer gave up on this file and wants another.
                Order::File(next) => return self.file(next),
            }
        }
        #[cfg(debug_assertions)]
        let hang = match request.hang {
            Some(Hang::Read { after, duration }) => Some((after, duration)),
            _ => None,
        };
        #[cfg(not(debug_assertions))]
        let hang = request.hang;
        let stop = self.stream(&mut file, offset, size, hang)?;
        self.at(IN_STAT);
        let after = file.metadata();
        self.reply(Reply::End { stop, after })
    }

    /// Sends `size` bytes of `file` from `offset` as chunks; why it sent fewer, if it did.
    fn stream(
        &mut self,
        file: &mut File,
        offset: u64,
        size: u64,
        hang: ReadHang,
    ) -> Option<Option<Stop>> {
        #[cfg(debug_assertions)]
        let mut hang = hang;
        #[cfg(not(debug_assertions))]
        let () = hang;
        self.at(IN_READ);
        if offset > 0
            && let Err(e) = file.seek(SeekFrom::Start(offset))
        {
            return Some(Some(Stop::Failed(e)));
        }
        let mut sent: u64 = 0;
        while sent < size {
            let left = usize::try_from(size - sent).unwrap_or(usize::MAX);
            let mut buffer = if left <= SMALL_CHUNK_BYTES {
                vec![0u8; left]
            } else {
                match self.stash.pop() {
                    Some(buffer) => buffer,
                    // Waits while the writer holds every buffer.
                    None => self.free.recv().ok()?,
                }
            };
            #[cfg(debug_assertions)]
            if let Some((after, duration)) = hang
                && sent >= after
            {
                std::thread::sleep(duration);
                hang = None;
            }
            let want = left.min(buffer.len());
            let read = loop {
                match file.read(&mut buffer[..want]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    other => break other,
                }
            };
            let stop = match read {
                Ok(0) => Stop::Shrank,
                Ok(len) => {
                    sent += len as u64;
                    self.reply(Reply::Chunk { buffer, len })?;
                    continue;
                }
                Err(e) => Stop::Failed(e),
            };
            if buffer.len() == CHUNK_BYTES {
                self.stash.push(buffer);
            }
            return Some(Some(stop));
        }
        Some(None)
    }
}
/// The entry's size and its offset in a file of `len` bytes, and the cap that cut it: the tail
/// within `max_file_bytes`, then within the budget.
pub(crate) fn extent(len: u64, caps: Caps) -> (u64, u64, Option<TruncateReason>) {
    let mut size = caps.max_file_bytes.map_or(len, |cap| len.min(cap));
    let mut cap = (size < len).then_some(TruncateReason::MaxFileBytes);
    if let Some(budget) = caps.budget
        && budget < size
    {
        size = budget;
        cap = Some(TruncateReason::MaxTotalBytes);
    }
    (size, len - size, cap)
}
