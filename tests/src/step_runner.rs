//! What systemd does for `lifeguard-step.socket` (`Accept=yes`), done by the test: listen on
//! a Unix socket with the unit's owner and mode, and start `lifeguard-agent step-exec` for each
//! connection with the connection as its standard input and output. And the agent's unit's
//! identity and capabilities, applied with `setpriv` as systemd would apply them.

use std::collections::{BTreeSet, HashMap};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::agent::workspace_binary;
use crate::repo_root;

/// The uid and gid the confined agent runs as in tests (`nobody`: the unit's `lifeguard` user
/// does not exist on a test machine).
pub const CONFINED_ID: u32 = 65534;

/// A unit file's settings: each key with its values in order (a key may repeat).
pub fn unit_settings(name: &str) -> HashMap<String, Vec<String>> {
    let text = std::fs::read_to_string(repo_root().join("systemd").join(name)).unwrap();
    let mut settings: HashMap<String, Vec<String>> = HashMap::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with('[') {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            settings
                .entry(key.trim().to_string())
                .or_default()
                .push(value.trim().to_string());
        }
    }
    settings
}

/// `setpriv` arguments giving a process what the agent's unit gives it: its own unprivileged
/// identity, exactly the unit's capability bounding and ambient sets, and no new privileges.
pub fn confinement_of_agent_unit() -> Vec<String> {
    let unit = unit_settings("lifeguard-agent.service");
    let caps = |key: &str| -> String {
        let names: Vec<String> = unit
            .get(key)
            .unwrap_or_else(|| panic!("{key} in the agent's unit"))
            .iter()
            .flat_map(|v| v.split_whitespace())
            .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
            .collect();
        format!("-all,{}", names.join(","))
    };
    assert_eq!(
        unit.get("NoNewPrivileges").map(Vec::as_slice),
        Some(&["yes".to_string()][..])
    );
    vec![
        "setpriv".into(),
        format!("--reuid={CONFINED_ID}"),
        format!("--regid={CONFINED_ID}"),
        "--clear-groups".into(),
        format!("--bounding-set={}", caps("CapabilityBoundingSet")),
        format!("--inh-caps={}", caps("AmbientCapabilities")),
        format!("--ambient-caps={}", caps("AmbientCapabilities")),
        "--no-new-privs".into(),
    ]
}

/// The system calls the agent's unit lets through: its `SystemCallFilter=` allow list less the
/// groups its `~` line denies, each group expanded by `systemd-analyze syscall-filter` as
/// systemd expands it.
pub fn syscalls_allowed_by_agent_unit() -> BTreeSet<String> {
    let unit = unit_settings("lifeguard-agent.service");
    let (mut allowed, mut denied) = (BTreeSet::new(), BTreeSet::new());
    for line in &unit["SystemCallFilter"] {
        let (into, names) = match line.strip_prefix('~') {
            Some(names) => (&mut denied, names),
            None => (&mut allowed, line.as_str()),
        };
        for name in names.split_whitespace() {
            expand_syscalls(name, into);
        }
    }
    allowed.difference(&denied).cloned().collect()
}

fn expand_syscalls(name: &str, into: &mut BTreeSet<String>) {
    if !name.starts_with('@') {
        into.insert(name.to_string());
        return;
    }
    let out = Command::new("systemd-analyze")
        .args(["syscall-filter", name])
        .output()
        .expect("systemd-analyze (scripts/system-tools.sh installs it)");
    assert!(
        out.status.success(),
        "systemd-analyze syscall-filter {name}"
    );
    for member in String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        expand_syscalls(member, into);
    }
}

/// `strace` arguments that write every system call of a process tree into `log`.
pub fn traced_into(log: &Path) -> Vec<String> {
    vec![
        "strace".into(),
        "-f".into(),
        "-qq".into(),
        "-o".into(),
        log.display().to_string(),
    ]
}

/// The system calls an `strace -f` log shows from the successful `execve` of `program` on:
/// what systemd's filter, applied at that exec, would have seen.
pub fn syscalls_after_exec(trace: &str, program: &Path) -> BTreeSet<String> {
    let exec = format!("execve(\"{}\"", program.display());
    let Some(start) = trace
        .lines()
        .position(|l| l.contains(&exec) && l.trim_end().ends_with("= 0"))
    else {
        panic!("no execve of {} in the trace", program.display());
    };
    trace
        .lines()
        .skip(start + 1)
        .filter_map(|line| {
            // `PID name(args) = result`; resumptions, signals and exits name no new call.
            let (_, call) = line.split_once(' ')?;
            let call = call.trim_start();
            let end = call.find('(')?;
            let name = &call[..end];
            (!name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
            .then(|| name.to_string())
        })
        .collect()
}

/// A socket-activated step runner; stops accepting and kills its runners when dropped.
pub struct StepRunner {
    pub socket: PathBuf,
    log: PathBuf,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    children: Arc<Mutex<Vec<Child>>>,
    thread: Option<JoinHandle<()>>,
}

impl StepRunner {
    /// Listens on `dir/step.sock`, owned by root and `group` with mode 0660 as the socket
    /// unit says; each runner reads `config` and gets `env` added to its environment.
    pub fn start(dir: &Path, config: &Path, group: u32, env: &[(&str, &str)]) -> StepRunner {
        let unit = unit_settings("lifeguard-step.socket");
        assert_eq!(unit["SocketMode"], ["0660"]);
        assert_eq!(unit["Accept"], ["yes"]);
        let socket = dir.join("step.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o660)).unwrap();
        std::os::unix::fs::chown(&socket, Some(0), Some(group)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let log = dir.join("step-runner.log");
        let (connections, stop, children) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
            Arc::new(Mutex::new(Vec::new())),
        );
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        let thread = {
            let (connections, stop, children, log, config) = (
                connections.clone(),
                stop.clone(),
                children.clone(),
                log.clone(),
                config.to_path_buf(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let Ok((stream, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    connections.fetch_add(1, Ordering::SeqCst);
                    stream.set_nonblocking(false).unwrap();
                    let output: OwnedFd = stream.try_clone().unwrap().into();
                    let input: OwnedFd = stream.into();
                    let errors = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&log)
                        .unwrap();
                    let child = Command::new(workspace_binary("lifeguard-agent"))
                        .arg("--config")
                        .arg(&config)
                        .arg("step-exec")
                        .envs(env.iter().map(|(k, v)| (k, v)))
                        .stdin(Stdio::from(input))
                        .stdout(Stdio::from(output))
                        .stderr(errors)
                        .spawn()
                        .unwrap();
                    children.lock().unwrap().push(child);
                }
            })
        };
        StepRunner {
            socket,
            log,
            connections,
            stop,
            children,
            thread: Some(thread),
        }
    }

    /// Connections accepted so far: one per step the agent handed over.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// What the runners wrote to standard error (systemd's journal, on an instance).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for StepRunner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        for child in self.children.lock().unwrap().iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
