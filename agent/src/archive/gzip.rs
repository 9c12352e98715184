//! Parallel gzip, as pigz does it but simpler.
//!
//! The stream written into a [`ParallelGzip`] is cut into blocks of `block_bytes`; each block
//! is compressed independently, as a complete gzip member (header, raw deflate, CRC-32, length),
//! by a small pool of worker threads, and the members are written to the output in order. A
//! sequence of members is one valid gzip file (RFC 1952, section 2.2): `gzip -d`, `tar xzf`,
//! Python's `gzip` and flate2's `MultiGzDecoder` read it whole. Compressing blocks without the
//! previous block's history costs well under 1% of size at 1 MiB blocks.
//!
//! Memory is bounded: at most [`ParallelGzip::max_in_flight`] blocks are between being handed
//! to the workers and being written out (each holds its input and its compressed output), plus
//! the block being filled; buffers are recycled, so nothing grows with the stream's length. When
//! the bound is reached, `write` waits for the oldest block to be compressed and written, which
//! also passes the output's back-pressure (a slow upload) on to the producer.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use flate2::{Compress, Compression, Crc, FlushCompress, Status};

/// Default size of the blocks compressed independently.
pub const DEFAULT_BLOCK_BYTES: usize = 1024 * 1024;
/// Smallest block accepted; smaller ones would cost ratio and per-member overhead.
pub const MIN_BLOCK_BYTES: usize = 32 * 1024;
/// Largest block accepted; larger ones only cost memory.
pub const MAX_BLOCK_BYTES: usize = 16 * 1024 * 1024;
/// Budget for the blocks in flight (inputs and outputs), which bounds how many there are.
const IN_FLIGHT_BUDGET_BYTES: usize = 16 * 1024 * 1024;

/// Gzip member header: magic, deflate, no flags, no mtime, no extra flags, OS = Unix.
const MEMBER_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];

struct Job {
    seq: u64,
    input: Vec<u8>,
    output: Vec<u8>,
}

struct Done {
    seq: u64,
    input: Vec<u8>,
    output: io::Result<Vec<u8>>,
}

/// The worker threads. Dropping it closes the job queue and joins them.
struct Pool {
    /// `None` once closed: the workers stop when the queue is closed and empty.
    jobs: Option<mpsc::SyncSender<Job>>,
    done: mpsc::Receiver<Done>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    fn start(threads: usize, queue: usize, level: u32) -> io::Result<Pool> {
        let (jobs_tx, jobs_rx) = mpsc::sync_channel::<Job>(queue);
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        let mut pool = Pool {
            jobs: Some(jobs_tx),
            done: done_rx,
            workers: Vec::with_capacity(threads),
        };
        for index in 0..threads {
            let jobs_rx = Arc::clone(&jobs_rx);
            let done_tx = done_tx.clone();
            let worker = std::thread::Builder::new()
                .name(format!("gzip-{index}"))
                .spawn(move || work(&jobs_rx, &done_tx, level))?;
            pool.workers.push(worker);
        }
        Ok(pool)
    }

    fn send(&self, job: Job) -> io::Result<()> {
        match &self.jobs {
            Some(jobs) => jobs.send(job).map_err(|_| stopped()),
            None => Err(stopped()),
        }
    }

    /// Closes the queue and waits for the workers.
    fn shutdown(&mut self) -> io::Result<()> {
        self.jobs = None;
        let mut panicked = false;
        for worker in self.workers.drain(..) {
            panicked |= worker.join().is_err();
        }
        if panicked {
            return Err(io::Error::other("a gzip worker panicked"));
        }
        Ok(())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Errors were reported by `shutdown` when it mattered; here only the threads are reaped.
        let _ = self.shutdown();
    }
}

fn stopped() -> io::Error {
    io::Error::other("the gzip workers have stopped")
}

/// A worker: takes blocks off the shared queue until it is closed.
fn work(jobs: &Mutex<mpsc::Receiver<Job>>, done: &mpsc::Sender<Done>, level: u32) {
    let mut compress = Compress::new(Compression::new(level), false);
    loop {
        // The lock is held only while waiting for a job, not while compressing it.
        let job = match jobs.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        let Ok(Job { seq, input, output }) = job else {
            return;
        };
        let result = catch_unwind(AssertUnwindSafe(|| {
            compress_member(&mut compress, &input, output)
        }));
        let output = match result {
            Ok(output) => output,
            Err(_) => {
                // The deflate state may be inconsistent after a panic: start a new one.
                compress = Compress::new(Compression::new(level), false);
                Err(io::Error::other("compressing a gzip block panicked"))
            }
        };
        if done.send(Done { seq, input, output }).is_err() {
            return;
        }
    }
}

/// Compresses `input` as one complete gzip member into `output` (cleared first).
pub(crate) fn compress_member(
    compress: &mut Compress,
    input: &[u8],
    mut output: Vec<u8>,
) -> io::Result<Vec<u8>> {
    output.clear();
    // Room for incompressible data in one pass (stored blocks cost 5 bytes per 64 KiB).
    output.reserve(MEMBER_HEADER.len() + input.len() + input.len() / 1024 + 64 + 8);
    output.extend_from_slice(&MEMBER_HEADER);
    compress.reset();
    let mut consumed = 0;
    loop {
        if output.capacity() - output.len() < 1024 {
            output.reserve(64 * 1024);
        }
        let (in_before, out_before) = (compress.total_in(), compress.total_out());
        let status = compress
            .compress_vec(&input[consumed..], &mut output, FlushCompress::Finish)
            .map_err(|e| io::Error::other(format!("deflate: {e}")))?;
        let progress = compress.total_in() - in_before;
        consumed += usize::try_from(progress).map_err(io::Error::other)?;
        if status == Status::StreamEnd {
            break;
        }
        if progress == 0 && compress.total_out() == out_before {
            return Err(io::Error::other("deflate made no progress"));
        }
    }
    let mut crc = Crc::new();
    crc.update(input);
    output.extend_from_slice(&crc.sum().to_le_bytes());
    // ISIZE is the input length modulo 2^32 (RFC 1952); blocks are far smaller anyway.
    output.extend_from_slice(&(input.len() as u32).to_le_bytes());
    Ok(output)
}

/// A writer that gzips what it is given on several threads and writes the members, in order,
/// to `W`. Call [`ParallelGzip::finish`] at the end: dropping it stops the workers and loses
/// the blocks not yet written.
pub struct ParallelGzip<W: Write> {
    out: W,
    pool: Pool,
    block_bytes: usize,
    /// The block being filled.
    current: Vec<u8>,
    /// Sequence number of the next block handed out, and of the next one to write.
    next_seq: u64,
    next_write: u64,
    /// Compressed blocks that came back before their predecessors.
    ready: BTreeMap<u64, Vec<u8>>,
    in_flight: usize,
    max_in_flight: usize,
    peak_in_flight: usize,
    free_inputs: Vec<Vec<u8>>,
    free_outputs: Vec<Vec<u8>>,
    buffers_allocated: usize,
    /// A worker or the output failed: the stream is broken and every later call fails.
    failed: bool,
    total_in: u64,
}

impl<W: Write> ParallelGzip<W> {
    /// Starts the workers. `threads` 0 means one per available CPU; `level` is 0–9;
    /// `block_bytes` is clamped to [`MIN_BLOCK_BYTES`]..=[`MAX_BLOCK_BYTES`].
    pub fn new(out: W, level: u32, threads: usize, block_bytes: usize) -> io::Result<Self> {
        if level > 9 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("gzip level {level} is not in 0..=9"),
            ));
        }
        let block_bytes = block_bytes.clamp(MIN_BLOCK_BYTES, MAX_BLOCK_BYTES);
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, usize::from)
        } else {
            threads
        };
        // Twice as many blocks as workers keeps them busy while the oldest is written out;
        // within the memory budget (an input and an output per block); never fewer than 2.
        let max_in_flight = (2 * threads)
            .min(IN_FLIGHT_BUDGET_BYTES / (2 * block_bytes))
            .max(2);
        let pool = Pool::start(threads.min(max_in_flight), max_in_flight, level)?;
        Ok(ParallelGzip {
            out,
            pool,
            block_bytes,
            current: Vec::with_capacity(block_bytes),
            next_seq: 0,
            next_write: 0,
            ready: BTreeMap::new(),
            in_flight: 0,
            max_in_flight,
            peak_in_flight: 0,
            free_inputs: Vec::new(),
            free_outputs: Vec::new(),
            buffers_allocated: 1,
            failed: false,
            total_in: 0,
        })
    }

    /// The most blocks ever handed to the workers and not yet written out.
    pub fn peak_in_flight(&self) -> usize {
        self.peak_in_flight
    }

    /// The bound on blocks in flight.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// How many block buffers (inputs and outputs) were ever allocated.
    pub fn buffers_allocated(&self) -> usize {
        self.buffers_allocated
    }

    /// The block size in use (after clamping).
    pub fn block_bytes(&self) -> usize {
        self.block_bytes
    }

    /// Uncompressed bytes written so far.
    pub fn total_in(&self) -> u64 {
        self.total_in
    }

    /// Runs `step`, marking the stream broken if it fails.
    fn guard<T>(&mut self, step: impl FnOnce(&mut Self) -> io::Result<T>) -> io::Result<T> {
        if self.failed {
            return Err(io::Error::other("the gzip stream failed earlier"));
        }
        let result = step(self);
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    /// Hands the current block to the workers, first waiting for room if needed.
    fn submit_current(&mut self) -> io::Result<()> {
        while self.in_flight >= self.max_in_flight {
            self.wait_one()?;
        }
        let fresh = match self.free_inputs.pop() {
            Some(buffer) => buffer,
            None => {
                self.buffers_allocated += 1;
                Vec::with_capacity(self.block_bytes)
            }
        };
        let input = std::mem::replace(&mut self.current, fresh);
        let output = match self.free_outputs.pop() {
            Some(buffer) => buffer,
            None => {
                self.buffers_allocated += 1;
                Vec::new()
            }
        };
        self.pool.send(Job {
            seq: self.next_seq,
            input,
            output,
        })?;
        self.next_seq += 1;
        self.in_flight += 1;
        self.peak_in_flight = self.peak_in_flight.max(self.in_flight);
        // Write out whatever is already done, without waiting.
        while let Ok(done) = self.pool.done.try_recv() {
            self.accept(done)?;
        }
        self.write_ready()
    }

    /// Waits for one block to come back and writes out what is in order.
    fn wait_one(&mut self) -> io::Result<()> {
        let done = self.pool.done.recv().map_err(|_| stopped())?;
        self.accept(done)?;
        self.write_ready()
    }

    fn accept(&mut self, done: Done) -> io::Result<()> {
        let mut input = done.input;
        input.clear();
        self.free_inputs.push(input);
        let output = done.output?;
        self.ready.insert(done.seq, output);
        Ok(())
    }

    fn write_ready(&mut self) -> io::Result<()> {
        while let Some(output) = self.ready.remove(&self.next_write) {
            self.out.write_all(&output)?;
            self.next_write += 1;
            self.in_flight -= 1;
            self.free_outputs.push(output);
        }
        Ok(())
    }

    /// Compresses the last block, writes every member, stops the workers and returns the output
    /// (not flushed). An empty stream is written as one empty member, so that it is still gzip.
    pub fn finish(mut self) -> io::Result<W> {
        self.guard(|gz| {
            if !gz.current.is_empty() || gz.next_seq == 0 {
                gz.submit_current()?;
            }
            while gz.in_flight > 0 {
                gz.wait_one()?;
            }
            gz.pool.shutdown()
        })?;
        Ok(self.out)
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.guard(|gz| {
            let room = gz.block_bytes - gz.current.len();
            let n = room.min(buf.len());
            gz.current.extend_from_slice(&buf[..n]);
            gz.total_in += n as u64;
            if gz.current.len() == gz.block_bytes {
                gz.submit_current()?;
            }
            Ok(n)
        })
    }

    /// Writes out the blocks already compressed and flushes the output. The block being filled
    /// is not cut short (that would cost ratio); [`ParallelGzip::finish`] ends the stream.
    fn flush(&mut self) -> io::Result<()> {
        self.guard(|gz| {
            while let Ok(done) = gz.pool.done.try_recv() {
                gz.accept(done)?;
            }
            gz.write_ready()?;
            gz.out.flush()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::{GzDecoder, MultiGzDecoder};
    use std::io::Read;

    /// Log-like text: compressible but not trivially.
    fn log_text(bytes: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes + 200);
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let levels = ["INFO", "DEBUG", "WARN", "ERROR"];
        let mut line = 0u64;
        while out.len() < bytes {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            line += 1;
            out.extend_from_slice(
                format!(
                    "2026-11-22T10:{:02}:{:02}.{:03}Z {} req={:016x} user={} path=/api/v1/items/{} took={}ms\n",
                    (line / 60) % 60,
                    line % 60,
                    state % 1000,
                    levels[(state % 4) as usize],
                    state,
                    state % 97,
                    state % 5000,
                    state % 300
                )
                .as_bytes(),
            );
        }
        out.truncate(bytes);
        out
    }

    fn gzip_parallel(data: &[u8], level: u32, threads: usize, block: usize) -> Vec<u8> {
        let mut gz = ParallelGzip::new(Vec::new(), level, threads, block).unwrap();
        // Uneven writes, to cross block boundaries at odd places.
        for chunk in data.chunks(7919) {
            gz.write_all(chunk).unwrap();
        }
        gz.finish().unwrap()
    }

    #[test]
    fn members_decode_in_order() {
        let data = log_text(5 * 1024 * 1024 + 123);
        let compressed = gzip_parallel(&data, 6, 3, 64 * 1024);
        let mut decoded = Vec::new();
        MultiGzDecoder::new(compressed.as_slice())
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(decoded, data);
        // Several members: a single-member decoder stops after the first block.
        let mut first = Vec::new();
        GzDecoder::new(compressed.as_slice())
            .read_to_end(&mut first)
            .unwrap();
        assert_eq!(first.len(), 64 * 1024);
    }

    #[test]
    fn ratio_is_close_to_a_single_stream() {
        let data = log_text(8 * 1024 * 1024);
        let parallel = gzip_parallel(&data, 6, 2, DEFAULT_BLOCK_BYTES);
        let mut single = flate2::write::GzEncoder::new(Vec::new(), Compression::new(6));
        single.write_all(&data).unwrap();
        let single = single.finish().unwrap();
        let ratio = parallel.len() as f64 / single.len() as f64;
        assert!(
            ratio < 1.01,
            "parallel {} vs single {}",
            parallel.len(),
            single.len()
        );
    }

    /// An output that is slow now and then, so that blocks pile up behind it.
    struct SlowSink {
        bytes: Vec<u8>,
        writes: u64,
    }

    impl Write for SlowSink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.writes += 1;
            if self.writes.is_multiple_of(8) {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            self.bytes.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn blocks_in_flight_are_bounded_for_a_64_mib_stream() {
        let block = 256 * 1024;
        let sink = SlowSink {
            bytes: Vec::new(),
            writes: 0,
        };
        let mut gz = ParallelGzip::new(sink, 0, 2, block).unwrap();
        let bound = gz.max_in_flight();
        assert_eq!(bound, 4);
        let chunk = log_text(1024 * 1024);
        for _ in 0..64 {
            gz.write_all(&chunk).unwrap();
            assert!(gz.peak_in_flight() <= bound);
        }
        assert_eq!(gz.total_in(), 64 * 1024 * 1024);
        let peak = gz.peak_in_flight();
        let buffers = gz.buffers_allocated();
        let out = gz.finish().unwrap();
        assert!(peak <= bound, "peak {peak} > bound {bound}");
        assert!(peak >= 2, "the workers were never given two blocks at once");
        // 256 blocks went through, but only a bounded set of buffers was ever allocated.
        assert!(
            buffers <= 2 * bound + 2,
            "{buffers} buffers for a bound of {bound}"
        );
        let mut decoded = MultiGzDecoder::new(out.bytes.as_slice());
        let mut total = 0usize;
        let mut buf = vec![0; 1024 * 1024];
        loop {
            let n = decoded.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            assert_eq!(buf[..n], chunk[total % chunk.len()..][..n]);
            total += n;
        }
        assert_eq!(total, 64 * 1024 * 1024);
    }

    #[test]
    fn bound_respects_the_memory_budget() {
        let gz = ParallelGzip::new(Vec::new(), 6, 64, MAX_BLOCK_BYTES).unwrap();
        assert_eq!(gz.max_in_flight(), 2);
        let gz = ParallelGzip::new(Vec::new(), 6, 64, DEFAULT_BLOCK_BYTES).unwrap();
        assert_eq!(gz.max_in_flight(), 8);
        let gz = ParallelGzip::new(Vec::new(), 6, 1, 1).unwrap();
        assert_eq!(gz.block_bytes(), MIN_BLOCK_BYTES);
    }

    #[test]
    fn empty_stream_is_valid_gzip() {
        let out = ParallelGzip::new(Vec::new(), 6, 2, DEFAULT_BLOCK_BYTES)
            .unwrap()
            .finish()
            .unwrap();
        let mut decoded = Vec::new();
        MultiGzDecoder::new(out.as_slice())
            .read_to_end(&mut decoded)
            .unwrap();
        assert!(decoded.is_empty());
        assert!(!out.is_empty());
    }

    #[test]
    fn incompressible_data_round_trips() {
        let mut state: u32 = 1;
        let data: Vec<u8> = (0..3_000_000)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 24) as u8
            })
            .collect();
        let compressed = gzip_parallel(&data, 9, 2, 100_000);
        let mut decoded = Vec::new();
        MultiGzDecoder::new(compressed.as_slice())
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(decoded, data);
    }

    #[test]
    fn bad_level_is_refused() {
        assert!(ParallelGzip::new(Vec::new(), 10, 1, DEFAULT_BLOCK_BYTES).is_err());
    }

    /// An output that fails after some bytes.
    struct FailingSink(usize);

    impl Write for FailingSink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.0 < buf.len() {
                return Err(io::Error::other("disk full"));
            }
            self.0 -= buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn output_failure_breaks_the_stream() {
        let mut gz = ParallelGzip::new(FailingSink(10_000), 1, 2, MIN_BLOCK_BYTES).unwrap();
        let data = log_text(4 * 1024 * 1024);
        let result = data.chunks(65536).try_for_each(|c| gz.write_all(c));
        let failed = result.is_err() || gz.finish().is_err();
        assert!(failed);
    }
}
