//! The real binaries as processes: the agent pointed at one simulated instance of the emulator
//! (its IMDS, and the emulator's AWS endpoint with static test credentials), the controller at
//! the emulator's queue and groups.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Emulator, REGION};

/// A binary of this workspace, from the same build as the running test, or from
/// `LIFEGUARD_E2E_BIN_DIR` when set (to run the scenarios against another build, such as the
/// previous release, and see which of them it fails).
pub fn workspace_binary(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("LIFEGUARD_E2E_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let me = std::env::current_exe().unwrap();
    // Tests run from target/debug/deps/, the demo from target/debug/: binaries are in the latter.
    let mut dir = me.parent().unwrap();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().unwrap();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built (cargo build --workspace)",
        path.display()
    );
    path
}

/// Sends a signal by name (`TERM`, `KILL`, `HUP`) to a process.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

/// A configuration for one simulated instance; `extra` is appended verbatim (steps, archive,
/// upload, ...).
pub fn config_for(emulator: &Emulator, instance_id: &str, state_dir: &Path, extra: &str) -> String {
    config_with_aws(emulator, instance_id, state_dir, "", extra)
}

/// As [`config_for`], with `aws_extra` added to the `[aws]` table.
pub fn config_with_aws(
    emulator: &Emulator,
    instance_id: &str,
    state_dir: &Path,
    aws_extra: &str,
    extra: &str,
) -> String {
    format!(
        r#"[aws]
region = "{REGION}"
endpoint_url = "{endpoint}"
max_attempts = 2
connect_timeout_ms = 1000
{aws_extra}

[imds]
base_url = "{imds}"
request_timeout_ms = 1000
read_deadline_ms = 3000

[watch]
poll_interval_ms = 200

[state]
path = "{state}"

[log]
format = "json"
level = "info,lifeguard_agent=debug"

{extra}
"#,
        endpoint = emulator.endpoint(),
        imds = emulator.imds_url(instance_id),
        state = state_dir.join("agent-state.json").display(),
    )
}

/// A lifeguard program running as a service (`PROGRAM --config FILE run`), with static test
/// credentials, its output in a log file next to its configuration; killed when dropped.
pub struct ServiceProcess {
    program: &'static str,
    child: Option<Child>,
    log: PathBuf,
    config: PathBuf,
    env: Vec<(String, String)>,
    /// A command the program runs under (`setpriv ...`), as its first arguments.
    wrapper: Vec<String>,
}

/// The agent as a process.
pub type AgentProcess = ServiceProcess;

impl ServiceProcess {
    /// Writes `config` into `dir` and starts `lifeguard-agent run` with it.
    pub fn start(dir: &Path, config: &str) -> ServiceProcess {
        Self::launch("lifeguard-agent", dir, "agent", config, &[])
    }

    /// As [`ServiceProcess::start`], with `env` added to the agent's environment (its own
    /// credentials, a test seam).
    pub fn start_with_env(dir: &Path, config: &str, env: &[(&str, &str)]) -> ServiceProcess {
        Self::launch("lifeguard-agent", dir, "agent", config, env)
    }

    /// As [`ServiceProcess::start_with_env`], run under `wrapper` (a command and its
    /// arguments, such as the `setpriv` that applies the agent unit's confinement).
    pub fn start_wrapped(
        dir: &Path,
        config: &str,
        env: &[(&str, &str)],
        wrapper: &[String],
    ) -> ServiceProcess {
        let path = dir.join("agent.toml");
        std::fs::write(&path, config).unwrap();
        let env = env
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        Self::start_with("lifeguard-agent", &path, env, wrapper.to_vec())
    }

    /// Writes `config` into `dir` as `NAME.toml` and starts `lifeguard-controller run` with it,
    /// logging to `NAME.log`; `env` is added to its environment.
    pub fn controller(
        dir: &Path,
        name: &str,
        config: &str,
        env: &[(&str, &str)],
    ) -> ServiceProcess {
        Self::launch("lifeguard-controller", dir, name, config, env)
    }

    fn launch(
        program: &'static str,
        dir: &Path,
        name: &str,
        config: &str,
        env: &[(&str, &str)],
    ) -> ServiceProcess {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config).unwrap();
        let env = env
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        Self::start_with(program, &path, env, Vec::new())
    }

    /// Starts the program again on the same configuration and log (after a kill).
    pub fn restart(&mut self) {
        self.kill9();
        *self = Self::start_with(
            self.program,
            &self.config,
            std::mem::take(&mut self.env),
            std::mem::take(&mut self.wrapper),
        );
    }

    fn start_with(
        program: &'static str,
        config: &Path,
        env: Vec<(String, String)>,
        wrapper: Vec<String>,
    ) -> ServiceProcess {
        let log = config.with_extension("log");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut command = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut command = Command::new(first);
                command.args(rest).arg(workspace_binary(program));
                command
            }
            None => Command::new(workspace_binary(program)),
        };
        if program == "lifeguard-agent" {
            // As on an instance: the role's credentials from the instance's IMDS, so what the
            // agent sends to the queue carries its instance's SenderId.
            command
                .env_remove("AWS_ACCESS_KEY_ID")
                .env_remove("AWS_SECRET_ACCESS_KEY")
                .env_remove("AWS_SESSION_TOKEN")
                .env("AWS_CONFIG_FILE", "/nonexistent/lifeguard-e2e")
                .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/lifeguard-e2e");
        } else {
            command
                .env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing");
        }
        let child = command
            .arg("--config")
            .arg(config)
            .arg("run")
            .env_remove("AWS_PROFILE")
            .env_remove("RUST_LOG")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        ServiceProcess {
            program,
            child: Some(child),
            log,
            config: config.to_path_buf(),
            env,
            wrapper,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The JSON log lines.
    pub fn log_events(&self) -> Vec<serde_json::Value> {
        self.log()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Waits until a log line's `message` contains `text`.
    pub async fn wait_for_log(&self, text: &str, timeout: Duration) {
        let started = Instant::now();
        loop {
            if self
                .log_events()
                .iter()
                .any(|e| e["message"].as_str().is_some_and(|m| m.contains(text)))
            {
                return;
            }
            assert!(
                started.elapsed() < timeout,
                "{} did not log {text:?} within {timeout:?}:\n{}",
                self.program,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn terminate(&self) {
        signal(self.pid(), "TERM");
    }

    /// Waits for the process to exit; its exit code.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let started = Instant::now();
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                started.elapsed() < timeout,
                "{} did not exit within {timeout:?}:\n{}",
                self.program,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}
