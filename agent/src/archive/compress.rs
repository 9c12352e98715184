//! The compressed output stream: gzip (parallel), zstd (multithreaded) or none, over a writer
//! that counts the bytes it passes on.

use std::io::{self, Write};

use zstd::stream::raw::CParameter;

use super::Compression;
use super::error::ArchiveError;
use super::gzip::ParallelGzip;

/// Bytes of input per zstd job (each compressed by one worker).
const ZSTD_JOB_BYTES: u32 = 1024 * 1024;
/// Largest zstd window (2 MiB), applied from level 9 up.
const ZSTD_MAX_WINDOW_LOG: u32 = 21;

/// Counts the bytes written through it.
pub(crate) struct Counting<W: Write> {
    inner: W,
    count: u64,
}

impl<W: Write> Counting<W> {
    pub fn new(inner: W) -> Self {
        Counting { inner, count: 0 }
    }

    pub fn count(&self) -> u64 {
        self.count
    }
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf)?;
        self.count += buf.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Whatever compresses the tar stream.
pub(crate) enum Sink<W: Write> {
    Gzip(ParallelGzip<Counting<W>>),
    Zstd(zstd::stream::write::Encoder<'static, Counting<W>>),
    Plain(Counting<W>),
}

/// The number of CPUs, for `threads = 0`.
fn all_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

impl<W: Write> Sink<W> {
    pub fn new(compression: &Compression, out: W) -> Result<Self, ArchiveError> {
        let out = Counting::new(out);
        match *compression {
            Compression::Gzip {
                level,
                threads,
                block_bytes,
            } => {
                if level > 9 {
                    return Err(ArchiveError::Compression {
                        setting: "gzip level",
                        value: level.to_string(),
                        reason: "must be 0 to 9".to_string(),
                    });
                }
                ParallelGzip::new(out, level, threads, block_bytes)
                    .map(Sink::Gzip)
                    .map_err(|source| ArchiveError::StartCompressor {
                        compression: "gzip",
                        source,
                    })
            }
            Compression::Zstd { level, threads } => {
                let range = zstd::compression_level_range();
                if !range.contains(&level) {
                    return Err(ArchiveError::Compression {
                        setting: "zstd level",
                        value: level.to_string(),
                        reason: format!("must be {} to {}", range.start(), range.end()),
                    });
                }
                let threads = if threads == 0 {
                    u32::try_from(all_cpus()).unwrap_or(1)
                } else {
                    threads
                };
                let start = |out| -> io::Result<_> {
                    let mut encoder = zstd::stream::write::Encoder::new(out, level)?;
                    encoder.include_checksum(true)?;
                    encoder.multithread(threads)?;
                    // Small jobs bound the buffers libzstd keeps per worker (the default is
                    // 4 windows, 8 MiB at level 3: 53 MiB resident with 2 workers, against
                    // 12 MiB with 1 MiB jobs, at the same ratio).
                    encoder.set_parameter(CParameter::JobSize(ZSTD_JOB_BYTES))?;
                    if level >= 9 {
                        // Levels from 9 default to windows of 4 MiB and more, each job then
                        // re-reads an overlap larger than itself; 2 MiB windows cost little ratio
                        // on logs.
                        encoder.window_log(ZSTD_MAX_WINDOW_LOG)?;
                    }
                    Ok(encoder)
                };
                start(out)
                    .map(Sink::Zstd)
                    .map_err(|source| ArchiveError::StartCompressor {
                        compression: "zstd",
                        source,
                    })
            }
            Compression::None => Ok(Sink::Plain(out)),
        }
    }

    /// Ends the compressed stream, flushes the output and returns the compressed byte count.
    pub fn finish(self) -> io::Result<u64> {
        let mut out = match self {
            Sink::Gzip(gz) => gz.finish()?,
            Sink::Zstd(encoder) => encoder.finish()?,
            Sink::Plain(out) => out,
        };
        out.flush()?;
        Ok(out.count())
    }
}

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Gzip(gz) => gz.write(buf),
            Sink::Zstd(encoder) => encoder.write(buf),
            Sink::Plain(out) => out.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Sink::Gzip(gz) => gz.write_all(buf),
            Sink::Zstd(encoder) => encoder.write_all(buf),
            Sink::Plain(out) => out.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Gzip(gz) => gz.flush(),
            Sink::Zstd(encoder) => encoder.flush(),
            Sink::Plain(out) => out.flush(),
        }
    }
}
