//! The agent's state file: the drain in progress ([`DrainRecord`], written atomically after
//! every stage, so an agent restarted mid-drain resumes it instead of running it twice), and
//! the notices already drained for (so a notice that stays readable in IMDS, such as a
//! rebalance recommendation, drains once, across restarts too).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::{Mode, OFlags};
use serde::{Deserialize, Serialize};

use crate::drain::machine::DrainRecord;

/// Format 1 held a bare drain record; it is set aside, not trusted.
const FORMAT: u32 = 2;
/// Notices remembered; older ones are forgotten first (they are long gone from IMDS).
const HANDLED_KEPT: usize = 64;

/// What the state file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    pub format: u32,
    pub instance_id: String,
    /// The drain in progress, or the last one of a leaving instance (finished: the agent only
    /// waits to be stopped).
    pub drain: Option<DrainRecord>,
    /// [`crate::watch::Trigger::notice_key`]s of notices already drained for, oldest first.
    #[serde(default)]
    pub handled: Vec<String>,
}

/// This boot's id, from the kernel.
pub fn current_boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|id| id.trim().to_string())
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("writing the state file {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading the state file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The state file of this agent, written through.
pub struct StateStore {
    path: PathBuf,
    state: Mutex<AgentState>,
}

impl StateStore {
    /// Opens the state file for `instance_id`. A file of another instance (baked into the
    /// image) or a drain from an earlier boot (the event has passed) is not resumed; the
    /// notices already handled are kept either way.
    pub fn open(path: &Path, instance_id: &str) -> Result<StateStore, StateError> {
        let mut state = load(path)?.unwrap_or_else(|| AgentState {
            format: FORMAT,
            instance_id: instance_id.to_string(),
            drain: None,
            handled: Vec::new(),
        });
        if state.instance_id != instance_id {
            tracing::warn!(%instance_id, recorded = %state.instance_id, "state file of another instance ignored");
            state = AgentState {
                format: FORMAT,
                instance_id: instance_id.to_string(),
                drain: None,
                handled: Vec::new(),
            };
        }
        if let Some(drain) = &state.drain
            && drain.boot_id.is_some()
            && drain.boot_id != current_boot_id()
        {
            tracing::info!(%instance_id, reason = drain.trigger().reason(),
                "drain record from an earlier boot set aside");
            state.drain = None;
        }
        Ok(StateStore {
            path: path.to_path_buf(),
            state: Mutex::new(state),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, AgentState> {
        // Held only for copies and assignments; a panic cannot leave it half-written.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn drain(&self) -> Option<DrainRecord> {
        self.state().drain.clone()
    }

    pub fn handled(&self) -> Vec<String> {
        self.state().handled.clone()
    }

    /// Records the drain's progress. Losing it only risks redoing work after a restart, so a
    /// failed write is logged and the drain goes on.
    pub fn save_drain(&self, record: &DrainRecord) {
        let snapshot = {
            let mut state = self.state();
            state.drain = Some(record.clone());
            state.clone()
        };
        self.write(&snapshot);
    }

    /// The drain of a notice is over and the instance stays: forget the drain, remember the
    /// notice so that it does not drain again while it stays readable.
    pub fn drain_over(&self, notice: Option<String>) {
        let snapshot = {
            let mut state = self.state();
            state.drain = None;
            if let Some(notice) = notice
                && !state.handled.contains(&notice)
            {
                state.handled.push(notice);
                let excess = state.handled.len().saturating_sub(HANDLED_KEPT);
                state.handled.drain(..excess);
            }
            state.clone()
        };
        self.write(&snapshot);
    }

    fn write(&self, state: &AgentState) {
        if let Err(error) = save(&self.path, state) {
            tracing::error!(%error, "state file not saved");
        }
    }
}

/// Creates the temporary file, which must be new: `O_CREAT | O_EXCL | O_NOFOLLOW` fails on
/// whatever is at its path, a symbolic link included, rather than writing through it (the
/// agent runs as root: a link planted there would have it overwrite any file). What is there
/// is a leftover of a write cut short, or planted: it is removed (`unlink` removes a link, not
/// what it points at) and the creation tried once more. Something planted again in between
/// fails the save, which is logged; the next save tries again.
fn create_temporary(path: &Path) -> std::io::Result<std::fs::File> {
    let create = || {
        rustix::fs::open(
            path,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map(std::fs::File::from)
        .map_err(std::io::Error::from)
    };
    match create() {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(path)?;
            create()
        }
        created => created,
    }
}

/// The stored state, if any. A file that cannot be parsed (a torn disk, an older format) is
/// moved aside and reported, so it is neither trusted nor lost.
pub fn load(path: &Path) -> Result<Option<AgentState>, StateError> {
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
    match serde_json::from_str::<AgentState>(&text) {
        Ok(state) if state.format == FORMAT => Ok(Some(state)),
        Ok(state) => {
            set_aside(path, &format!("format {}", state.format));
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
    tracing::error!(path = %path.display(), aside = %aside.display(), why, "state file unreadable; set aside");
    let _ = std::fs::rename(path, aside);
}

/// Writes the state atomically: a crash leaves the old file or the new one, never half.
///
/// The new state goes to a temporary file beside the state file, created for this write and
/// readable by the agent's user only, then renamed over the state file.
pub fn save(path: &Path, state: &AgentState) -> Result<(), StateError> {
    let failed = |source| StateError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    let temporary = path.with_extension("tmp");
    let body = serde_json::to_vec_pretty(state).map_err(|e| failed(std::io::Error::other(e)))?;
    let mut file = create_temporary(&temporary).map_err(|source| StateError::Write {
        path: temporary.clone(),
        source,
    })?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::Trigger;

    fn now() -> time::OffsetDateTime {
        time::macros::datetime!(2026-11-22 10:00:00 UTC)
    }

    #[test]
    fn round_trip_missing_and_another_instance() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/agent-state.json");
        assert_eq!(load(&path).unwrap(), None);
        let store = StateStore::open(&path, "i-0abc").unwrap();
        let mut record = DrainRecord::new("i-0abc", &Trigger::Terminate, None, now());
        record.next_seq();
        store.save_drain(&record);
        let reopened = StateStore::open(&path, "i-0abc").unwrap();
        assert_eq!(reopened.drain(), Some(record));
        let baked = StateStore::open(&path, "i-0other").unwrap();
        assert_eq!(baked.drain(), None);
    }

    #[test]
    fn handled_notices_outlive_the_drain_and_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent-state.json");
        let store = StateStore::open(&path, "i-0abc").unwrap();
        let trigger = Trigger::Rebalance {
            noticed: Some("2026-11-22T09:00:00Z".into()),
        };
        store.save_drain(&DrainRecord::new("i-0abc", &trigger, None, now()));
        store.drain_over(trigger.notice_key());
        let reopened = StateStore::open(&path, "i-0abc").unwrap();
        assert_eq!(reopened.drain(), None);
        assert_eq!(
            reopened.handled(),
            vec!["rebalance:2026-11-22T09:00:00Z".to_string()]
        );
        for i in 0..100 {
            reopened.drain_over(Some(format!("rebalance:{i}")));
        }
        let handled = StateStore::open(&path, "i-0abc").unwrap().handled();
        assert_eq!(handled.len(), HANDLED_KEPT);
        assert_eq!(handled.last().map(String::as_str), Some("rebalance:99"));
    }

    #[test]
    fn a_drain_of_an_earlier_boot_is_not_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent-state.json");
        let store = StateStore::open(&path, "i-0abc").unwrap();
        let record = DrainRecord::new(
            "i-0abc",
            &Trigger::Terminate,
            Some("an-earlier-boot".into()),
            now(),
        );
        store.save_drain(&record);
        store.drain_over(Some("spot:stop:x".into()));
        store.save_drain(&record);
        let reopened = StateStore::open(&path, "i-0abc").unwrap();
        assert_eq!(reopened.drain(), None);
        assert_eq!(reopened.handled(), vec!["spot:stop:x".to_string()]);
    }

    #[test]
    fn a_link_planted_at_the_temporary_path_is_not_written_through() {
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent-state.json");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"the victim's bytes").unwrap();
        std::os::unix::fs::symlink(&victim, path.with_extension("tmp")).unwrap();
        let store = StateStore::open(&path, "i-0abc").unwrap();
        let record = DrainRecord::new("i-0abc", &Trigger::Terminate, None, now());
        store.save_drain(&record);
        assert_eq!(std::fs::read(&victim).unwrap(), b"the victim's bytes");
        assert!(!path.is_symlink(), "the state file is a file of its own");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            StateStore::open(&path, "i-0abc").unwrap().drain(),
            Some(record)
        );
        assert!(!path.with_extension("tmp").exists());
        // A temporary file left by a write cut short is replaced too.
        std::fs::write(path.with_extension("tmp"), b"half a state").unwrap();
        store.drain_over(None);
        assert_eq!(StateStore::open(&path, "i-0abc").unwrap().drain(), None);
    }

    #[test]
    fn garbage_and_older_formats_are_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent-state.json");
        std::fs::write(&path, "{\"format\": 2, \"instance_").unwrap();
        assert_eq!(load(&path).unwrap(), None);
        assert!(!path.exists());
        assert!(dir.path().join("agent-state.unreadable").exists());
        std::fs::write(
            &path,
            "{\"format\": 1, \"instance_id\": \"i-0abc\", \"drain\": null}",
        )
        .unwrap();
        assert_eq!(load(&path).unwrap(), None);
    }
}
