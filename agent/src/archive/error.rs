//! The one error type of the archive module.
//!
//! Only what makes the whole archive impossible is an [`ArchiveError`]: a bad specification, or
//! the output stream failing. A log file that cannot be read is not an error of the archive; it
//! is listed in the manifest's `errors` and archiving goes on.

use std::io;

/// Why an archive could not be planned or built.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A source is not an absolute path or pattern.
    #[error("archive source {source_path:?} is not an absolute path")]
    RelativeSource {
        /// The source as configured.
        source_path: String,
    },
    /// A source or exclude glob pattern does not parse.
    #[error("invalid glob pattern {pattern:?}: {reason}")]
    Pattern {
        /// The pattern as configured.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An extra entry's path is unusable inside the archive.
    #[error("extra archive entry {path:?}: {reason}")]
    ExtraPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A compression setting is out of range.
    #[error("compression {setting} = {value}: {reason}")]
    Compression {
        /// Which setting (`gzip level`, `zstd level`, ...).
        setting: &'static str,
        /// The value given.
        value: String,
        /// What is allowed.
        reason: String,
    },
    /// The compressor (its worker threads, or the zstd context) could not be started.
    #[error("starting the {compression} compressor: {source}")]
    StartCompressor {
        /// `gzip` or `zstd`.
        compression: &'static str,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },
    /// Writing an entry to the output failed (the output stream, or the compressor, failed).
    /// The archive is incomplete and must not be used.
    #[error("writing archive entry {path}: {source}")]
    WriteEntry {
        /// The entry's path inside the archive.
        path: String,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },
    /// Ending the archive (tar trailer, last compressed block, flush) failed.
    #[error("finishing the archive: {source}")]
    Finish {
        /// The underlying failure.
        #[source]
        source: io::Error,
    },
    /// The manifest could not be serialized.
    #[error("serializing {path}: {source}")]
    Manifest {
        /// The manifest's path inside the archive.
        path: &'static str,
        /// The underlying failure.
        #[source]
        source: serde_json::Error,
    },
}
