//! The drain record on disk: what a drain has done so far, written atomically after every
//! step, so an agent restarted mid-drain resumes it instead of running it twice (and never
//! uploads or completes twice).

use std::io::Write;
use std::path::{Path, PathBuf};

use lifeguard_common::message::{ArchiveSummary, StepReport};
use serde::{Deserialize, Serialize};

const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainRecord {
    pub format: u32,
    pub instance_id: String,
    /// `scale_in`, `spot_interruption`, ...
    pub reason: String,
    pub asg: Option<String>,
    pub hook: Option<String>,
    /// When the drain started, RFC 3339: deadlines are counted from here after a restart.
    pub started_at: String,
    /// The kernel's boot id when the drain started: a record from an earlier boot belongs to
    /// an event that has passed (the instance was stopped and started again).
    #[serde(default)]
    pub boot_id: Option<String>,
    /// The spot interruption time, when the drain is racing one.
    #[serde(default)]
    pub spot_time: Option<String>,
    /// The spot action (`terminate`, `stop`, `hibernate`), when the drain is racing one.
    #[serde(default)]
    pub spot_action: Option<String>,
    /// The last report's sequence number.
    pub seq: u64,
    /// Steps that have run, in order.
    pub steps: Vec<StepReport>,
    /// A step marked `abandon` failed: the action is completed with ABANDON.
    pub abandon: bool,
    /// The key an upload was started for; a restarted agent aborts what it left there.
    pub upload_key: Option<String>,
    /// The uploaded archive.
    pub archive: Option<ArchiveSummary>,
    /// Why the archive could not be made or uploaded, if it could not.
    pub archive_error: Option<String>,
    /// Set once the lifecycle action is completed, or known to need no completion.
    pub lifecycle_done: bool,
    /// Set once the final report is sent: nothing is left to do.
    pub finished: bool,
}

impl DrainRecord {
    pub fn new(instance_id: &str, reason: &str, started_at: String) -> Self {
        DrainRecord {
            format: FORMAT,
            instance_id: instance_id.to_string(),
            reason: reason.to_string(),
            asg: None,
            hook: None,
            started_at,
            boot_id: current_boot_id(),
            spot_time: None,
            spot_action: None,
            seq: 0,
            steps: Vec::new(),
            abandon: false,
            upload_key: None,
            archive: None,
            archive_error: None,
            lifecycle_done: false,
            finished: false,
        }
    }

    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }
}

/// This boot's id, from the kernel.
pub fn current_boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|id| id.trim().to_string())
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("writing the drain record {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading the drain record {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The stored record, if any. A record that cannot be parsed (a torn disk, an older format)
/// is moved aside and reported, so it is neither trusted nor lost.
pub fn load(path: &Path) -> Result<Option<DrainRecord>, StateError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    match serde_json::from_str::<DrainRecord>(&text) {
        Ok(record) if record.format == FORMAT => Ok(Some(record)),
        Ok(record) => {
            set_aside(path, &format!("format {}", record.format));
            Ok(None)
        }
        Err(e) => {
            set_aside(path, &e.to_string());
            Ok(None)
        }
    }
}

fn set_aside(path: &Path, why: &str) {
    let aside = path.with_extension("unreadable");
    tracing::error!(path = %path.display(), aside = %aside.display(), why, "drain record unreadable; set aside");
    let _ = std::fs::rename(path, aside);
}

/// Writes the record atomically: a crash leaves the old record or the new one, never half.
pub fn save(path: &Path, record: &DrainRecord) -> Result<(), StateError> {
    let failed = |source| StateError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    let temporary = path.with_extension("tmp");
    let body = serde_json::to_vec_pretty(record).map_err(|e| failed(std::io::Error::other(e)))?;
    let mut file = std::fs::File::create(&temporary).map_err(failed)?;
    file.write_all(&body).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(failed)?;
    if let Some(dir) = path.parent() {
        // The rename is durable only once the directory is synced.
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

/// Now, as records store it.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/agent-state.json");
        assert_eq!(load(&path).unwrap(), None);
        let mut record = DrainRecord::new("i-0abc", "scale_in", "2026-11-22T10:00:00Z".into());
        record.next_seq();
        save(&path, &record).unwrap();
        assert_eq!(load(&path).unwrap(), Some(record));
    }

    #[test]
    fn garbage_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent-state.json");
        std::fs::write(&path, "{\"format\": 1, \"instance_").unwrap();
        assert_eq!(load(&path).unwrap(), None);
        assert!(!path.exists());
        assert!(dir.path().join("agent-state.unreadable").exists());
    }
}
