//! Archive benchmark: builds one archive of a log corpus with `build_archive` and prints what it
//! cost, as one JSON line. `scripts/bench/archive-bench.sh` runs it next to `tar czf` under
//! `/usr/bin/time -v` and prints the comparison.
//!
//! ```text
//! archive CORPUS_DIR OUTPUT_FILE [--gzip LEVEL | --zstd LEVEL | --none] [--threads N]
//!         [--block-bytes N] [--deadline-ms N] [--max-files N]
//! ```
//!
//! `--deadline-ms` sets a deadline that long after the start, to see how far past it the archive
//! ends (the file being read is zero-padded, the rest skipped).
//!
//! Defaults: gzip level 6, 2 threads, 1 MiB blocks. Runs as a plain `main` (a bench target with
//! `harness = false`).

use std::fs::File;
use std::io::BufWriter;
use std::process::ExitCode;
use std::time::Instant;

use lifeguard_agent::archive::{
    ArchiveSpec, Compression, DEFAULT_BLOCK_BYTES, DEFAULT_MAX_FILES, build_archive,
};

struct Options {
    corpus: String,
    output: String,
    compression: Compression,
    deadline_ms: Option<u64>,
    max_files: u64,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut positional = Vec::new();
    let mut kind = "gzip";
    let mut level: i32 = 6;
    let mut threads: usize = 2;
    let mut block_bytes = DEFAULT_BLOCK_BYTES;
    let mut deadline_ms = None;
    let mut max_files = DEFAULT_MAX_FILES;
    let mut iter = args.iter();
    let number = |flag: &str, value: Option<&String>| -> Result<i64, String> {
        value
            .ok_or_else(|| format!("{flag} needs a value"))?
            .parse::<i64>()
            .map_err(|e| format!("{flag}: {e}"))
    };
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--gzip" => {
                kind = "gzip";
                level = i32::try_from(number(arg, iter.next())?).map_err(|e| e.to_string())?;
            }
            "--zstd" => {
                kind = "zstd";
                level = i32::try_from(number(arg, iter.next())?).map_err(|e| e.to_string())?;
            }
            "--none" => kind = "none",
            "--threads" => {
                threads = usize::try_from(number(arg, iter.next())?).map_err(|e| e.to_string())?;
            }
            "--block-bytes" => {
                block_bytes =
                    usize::try_from(number(arg, iter.next())?).map_err(|e| e.to_string())?;
            }
            "--deadline-ms" => {
                deadline_ms =
                    Some(u64::try_from(number(arg, iter.next())?).map_err(|e| e.to_string())?);
            }
            "--max-files" => {
                max_files = u64::try_from(number(arg, iter.next())?).map_err(|e| e.to_string())?;
            }
            // What `cargo bench` passes to every bench target.
            "--bench" => {}
            other if other.starts_with("--") => return Err(format!("unknown option {other}")),
            other => positional.push(other.to_string()),
        }
    }
    let [corpus, output] = <[String; 2]>::try_from(positional)
        .map_err(|_| "usage: archive CORPUS_DIR OUTPUT_FILE [options]".to_string())?;
    let compression = match kind {
        "gzip" => Compression::Gzip {
            level: u32::try_from(level).map_err(|e| e.to_string())?,
            threads,
            block_bytes,
        },
        "zstd" => Compression::Zstd {
            level,
            threads: u32::try_from(threads).map_err(|e| e.to_string())?,
        },
        _ => Compression::None,
    };
    Ok(Options {
        corpus,
        output,
        compression,
        deadline_ms,
        max_files,
    })
}

/// User and system CPU seconds of this process (all threads), from `/proc/self/stat`.
fn cpu_seconds() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line, in clock ticks (100 a second on
    // Linux, whatever the kernel's HZ).
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((user / 100.0, system / 100.0))
}

/// Peak resident set size in KiB, from `/proc/self/status`.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse(&args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let spec = ArchiveSpec {
        sources: vec![options.corpus.clone()],
        exclude: Vec::new(),
        compression: options.compression.clone(),
        max_total_bytes: None,
        max_file_bytes: None,
        max_files: options.max_files,
    };
    let file = match File::create(&options.output) {
        Ok(file) => file,
        Err(e) => {
            eprintln!("creating {}: {e}", options.output);
            return ExitCode::from(1);
        }
    };
    let started = Instant::now();
    let deadline = options
        .deadline_ms
        .map(|ms| started + std::time::Duration::from_millis(ms));
    let outcome = match build_archive(
        &spec,
        &[],
        serde_json::json!({"reason": "benchmark"}),
        deadline,
        BufWriter::with_capacity(256 * 1024, file),
    ) {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("archiving {}: {e}", options.corpus);
            return ExitCode::from(1);
        }
    };
    let wall = started.elapsed().as_secs_f64();
    let (user, system) = cpu_seconds().unwrap_or((f64::NAN, f64::NAN));
    let report = serde_json::json!({
        "compression": format!("{:?}", options.compression),
        "files": outcome.manifest.files.len(),
        "content_bytes": outcome.content_bytes,
        "compressed_bytes": outcome.compressed_bytes,
        "ratio": outcome.compressed_bytes as f64 / outcome.content_bytes.max(1) as f64,
        "wall_s": wall,
        "cpu_user_s": user,
        "cpu_system_s": system,
        "peak_rss_kib": peak_rss_kib(),
        "errors": outcome.manifest.totals.errors,
        "skipped": outcome.manifest.totals.skipped,
        "truncated": outcome.manifest.totals.truncated,
    });
    println!("{report}");
    ExitCode::SUCCESS
}
