//! The blocking side of the stream: a [`std::io::Write`] that cuts bytes into parts.

use std::io;

use bytes::Bytes;
use tokio::sync::mpsc::{self, Receiver, Sender};

/// A bounded channel of parts, for [`PartWriter`] and [`super::ArchiveStore::upload_stream`].
/// `capacity` parts wait in it (at least 1); the writer blocks when it is full.
pub fn part_channel(capacity: usize) -> (Sender<Bytes>, Receiver<Bytes>) {
    mpsc::channel(capacity.max(1))
}

/// A blocking [`io::Write`] that cuts the byte stream into parts of `part_bytes` and sends each
/// one as soon as it is full, waiting while the channel is full (so memory stays bounded).
/// [`PartWriter::finish`] sends the last, partial part and the end marker. Dropping the writer
/// without `finish` (an error, a panic) closes the channel without the marker, and the upload
/// is aborted. Once the receiver is gone, writes fail with [`io::ErrorKind::BrokenPipe`].
///
/// Use it from a blocking thread (`spawn_blocking`, `std::thread`): sending blocks, and doing
/// that inside an async task panics.
#[derive(Debug)]
pub struct PartWriter {
    tx: Sender<Bytes>,
    part_bytes: usize,
    buf: Vec<u8>,
    total: u64,
    broken: bool,
}

impl PartWriter {
    /// `part_bytes` is the size of every part but the last (at least 1; S3 wants at least
    /// [`super::MIN_PART_BYTES`] for a multipart upload).
    pub fn new(tx: Sender<Bytes>, part_bytes: usize) -> Self {
        PartWriter {
            tx,
            part_bytes: part_bytes.max(1),
            buf: Vec::new(),
            total: 0,
            broken: false,
        }
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.total
    }

    /// Sends the last part (if any bytes are left) and the end marker; returns the total
    /// number of bytes written.
    pub fn finish(mut self) -> io::Result<u64> {
        if !self.buf.is_empty() {
            self.send_buffer()?;
        }
        self.send(Bytes::new())?;
        Ok(self.total)
    }

    /// Gives up: the channel closes without the end marker and the upload is aborted. The same
    /// as dropping the writer, said explicitly.
    pub fn abort(self) {}

    fn send_buffer(&mut self) -> io::Result<()> {
        let part = std::mem::take(&mut self.buf);
        self.send(Bytes::from(part))
    }

    fn send(&mut self, part: Bytes) -> io::Result<()> {
        if self.broken || self.tx.blocking_send(part).is_err() {
            self.broken = true;
            return Err(broken_pipe());
        }
        Ok(())
    }
}

fn broken_pipe() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the upload stopped reading parts",
    )
}

impl io::Write for PartWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.broken {
            return Err(broken_pipe());
        }
        if data.is_empty() {
            return Ok(0);
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(self.part_bytes);
        }
        let room = self.part_bytes - self.buf.len();
        let taken = room.min(data.len());
        self.buf.extend_from_slice(&data[..taken]);
        // A usize always fits in a u64 on the targets Rust supports.
        self.total += taken as u64;
        if self.buf.len() == self.part_bytes {
            self.send_buffer()?;
        }
        Ok(taken)
    }

    /// Does not cut a part: parts other than the last must be full.
    fn flush(&mut self) -> io::Result<()> {
        if self.broken {
            return Err(broken_pipe());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// Runs `produce` on a blocking thread and collects everything it sends.
    fn collect(
        part_bytes: usize,
        produce: impl FnOnce(&mut PartWriter) -> io::Result<()> + Send + 'static,
        finish: bool,
    ) -> (io::Result<u64>, Vec<Bytes>) {
        let (tx, mut rx) = part_channel(1);
        let producer = std::thread::spawn(move || {
            let mut writer = PartWriter::new(tx, part_bytes);
            produce(&mut writer)?;
            if finish {
                writer.finish()
            } else {
                Ok(writer.bytes_written())
            }
        });
        let mut parts = Vec::new();
        while let Some(part) = rx.blocking_recv() {
            parts.push(part);
        }
        (producer.join().unwrap(), parts)
    }

    #[test]
    fn cuts_full_parts_then_the_rest_then_the_end_marker() {
        let data: Vec<u8> = (0..2500u32).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        let (total, parts) = collect(
            1000,
            move |w| {
                // Odd-sized writes that straddle part boundaries.
                for chunk in data.chunks(333) {
                    w.write_all(chunk)?;
                }
                w.flush()
            },
            true,
        );
        assert_eq!(total.unwrap(), 2500);
        let sizes: Vec<usize> = parts.iter().map(Bytes::len).collect();
        assert_eq!(sizes, vec![1000, 1000, 500, 0]);
        let joined: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        assert_eq!(joined, expected);
    }

    #[test]
    fn an_exact_multiple_has_no_empty_part_before_the_marker() {
        let (total, parts) = collect(4, |w| w.write_all(b"abcdefgh"), true);
        assert_eq!(total.unwrap(), 8);
        let parts: Vec<&[u8]> = parts.iter().map(|p| p.as_ref()).collect();
        assert_eq!(parts, vec![&b"abcd"[..], b"efgh", b""]);
    }

    #[test]
    fn an_empty_stream_is_only_the_marker() {
        let (total, parts) = collect(4, |_| Ok(()), true);
        assert_eq!(total.unwrap(), 0);
        assert_eq!(parts, vec![Bytes::new()]);
    }

    #[test]
    fn dropping_without_finish_sends_no_marker() {
        let (written, parts) = collect(4, |w| w.write_all(b"abcdef"), false);
        assert_eq!(written.unwrap(), 6);
        // The full part went out; the partial one and the marker did not.
        assert_eq!(parts, vec![Bytes::from_static(b"abcd")]);
    }

    #[test]
    fn writes_fail_with_broken_pipe_once_the_receiver_is_gone() {
        let (tx, rx) = part_channel(1);
        drop(rx);
        let handle = std::thread::spawn(move || {
            let mut writer = PartWriter::new(tx, 4);
            // Fits in the buffer: nothing is sent yet.
            writer.write_all(b"ab").unwrap();
            let first = writer.write_all(b"cdef").unwrap_err();
            let later = writer.write(b"g").unwrap_err();
            let finish = writer.finish().unwrap_err();
            (first.kind(), later.kind(), finish.kind())
        });
        let (first, later, finish) = handle.join().unwrap();
        assert_eq!(first, io::ErrorKind::BrokenPipe);
        assert_eq!(later, io::ErrorKind::BrokenPipe);
        assert_eq!(finish, io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn the_writer_blocks_while_the_channel_is_full() {
        let (tx, mut rx) = part_channel(1);
        let (progress_tx, progress_rx) = std::sync::mpsc::channel();
        let producer = std::thread::spawn(move || {
            let mut writer = PartWriter::new(tx, 2);
            for i in 0..4u8 {
                writer.write_all(&[i, i]).unwrap();
                progress_tx.send(i).unwrap();
            }
            writer.finish().unwrap()
        });
        // One part in the channel; the second send waits for the reader.
        assert_eq!(progress_rx.recv().unwrap(), 0);
        assert!(
            progress_rx
                .recv_timeout(std::time::Duration::from_millis(200))
                .is_err()
        );
        let mut count = 0;
        while let Some(part) = rx.blocking_recv() {
            if !part.is_empty() {
                count += 1;
            }
        }
        assert_eq!(count, 4);
        assert_eq!(producer.join().unwrap(), 8);
    }
}
