//! Drain steps: the operator's commands and the built-ins people always script (stop a unit,
//! wait for connections to end), each with its own timeout and failure policy. Event data
//! reaches a step only as environment variables, never through a shell line.

use std::process::Stdio;
use std::time::Duration;

use lifeguard_common::message::StepOutcome;
use rustix::process::{Pid, Signal, kill_process_group};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use crate::config::{OnFailure, StepAction, StepConfig};

/// A step's output kept for the archive: the last 1 MiB (the end says why it failed).
pub const OUTPUT_LIMIT: usize = 1024 * 1024;
/// Time a timed-out step's process group gets between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// How long output is still read after the SIGKILL.
const LAST_WORDS_AFTER_KILL: Duration = Duration::from_secs(1);

/// Environment variables given to every step: `LIFEGUARD_INSTANCE_ID`, `LIFEGUARD_ASG`, ...
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepEnv {
    pub vars: Vec<(String, String)>,
}

impl StepEnv {
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.vars.push((format!("LIFEGUARD_{name}"), value.into()));
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepResult {
    pub name: String,
    pub outcome: StepOutcome,
    pub exit_code: Option<i32>,
    pub duration: Duration,
    pub on_failure: OnFailure,
    /// stdout and stderr interleaved as written, at most [`OUTPUT_LIMIT`] bytes (the end).
    pub output: Vec<u8>,
}

impl StepResult {
    pub fn failed(&self) -> bool {
        matches!(self.outcome, StepOutcome::Failed | StepOutcome::TimedOut)
    }
}

/// Runs one step; never fails itself: a step that cannot even start is a failed step.
pub async fn run_step(step: &StepConfig, env: &StepEnv, drain_deadline: Instant) -> StepResult {
    let started = Instant::now();
    let deadline = drain_deadline.min(started + Duration::from_secs(step.timeout_secs));
    let (outcome, exit_code, output) = match step.action() {
        Ok(StepAction::Run(argv)) => run_command(&argv, env, deadline).await,
        Ok(StepAction::Shell(line)) => {
            let argv = vec!["/bin/sh".to_string(), "-c".to_string(), line];
            run_command(&argv, env, deadline).await
        }
        Ok(StepAction::StopUnit(unit)) => stop_unit(&unit, env, deadline).await,
        Ok(StepAction::WaitConnections(ports)) => wait_connections(&ports, deadline).await,
        Err(message) => (StepOutcome::Failed, None, message.into_bytes()),
    };
    StepResult {
        name: step.name.clone(),
        outcome,
        exit_code,
        duration: started.elapsed(),
        on_failure: step.on_failure,
        output,
    }
}

/// Keeps the last `OUTPUT_LIMIT` bytes.
fn keep_tail(buffer: &mut Vec<u8>, more: &[u8]) {
    buffer.extend_from_slice(more);
    if buffer.len() > OUTPUT_LIMIT * 2 {
        let cut = buffer.len() - OUTPUT_LIMIT;
        buffer.drain(..cut);
    }
}

fn finish_output(mut buffer: Vec<u8>) -> Vec<u8> {
    if buffer.len() > OUTPUT_LIMIT {
        let cut = buffer.len() - OUTPUT_LIMIT;
        buffer.drain(..cut);
    }
    buffer
}

async fn run_command(
    argv: &[String],
    env: &StepEnv,
    deadline: Instant,
) -> (StepOutcome, Option<i32>, Vec<u8>) {
    let Some((program, args)) = argv.split_first() else {
        return (StepOutcome::Failed, None, b"empty command".to_vec());
    };
    // One pipe for stdout and stderr keeps their lines in the order they were written.
    let (reader, writer) = match std::io::pipe() {
        Ok(pair) => pair,
        Err(e) => {
            return (
                StepOutcome::Failed,
                None,
                format!("creating a pipe: {e}").into_bytes(),
            );
        }
    };
    let stderr = match writer.try_clone() {
        Ok(w) => w,
        Err(e) => {
            return (
                StepOutcome::Failed,
                None,
                format!("creating a pipe: {e}").into_bytes(),
            );
        }
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .envs(env.vars.iter().map(|(k, v)| (k, v)))
        // The agent's own systemd channel is not the step's to use.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(stderr)
        // Its own process group, so a timeout stops everything the step started.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            return (
                StepOutcome::Failed,
                None,
                format!("starting {program}: {e}").into_bytes(),
            );
        }
    };
    let mut guard = GroupGuard::of(&child);
    // The command holds the write ends now; ours must be gone for the reader to see EOF.
    drop(command);
    let mut reader = match tokio::net::unix::pipe::Receiver::from_owned_fd(reader.into()) {
        Ok(reader) => reader,
        Err(e) => {
            let _ = child.start_kill();
            return (
                StepOutcome::Failed,
                None,
                format!("reading output: {e}").into_bytes(),
            );
        }
    };
    let mut output = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut reading = true;
    let status = loop {
        tokio::select! {
            read = reader.read(&mut chunk), if reading => match read {
                Ok(0) | Err(_) => reading = false,
                Ok(n) => keep_tail(&mut output, &chunk[..n]),
            },
            status = child.wait() => break status,
            () = tokio::time::sleep_until(deadline) => {
                guard.disarm();
                let output = last_words(&mut child, &mut reader, output, reading).await;
                return (StepOutcome::TimedOut, None, finish_output(output));
            }
        }
    };
    // The leader has exited; what it left running in the group is the step's own business.
    guard.disarm();
    // Output still buffered in the pipe, bounded by the time left.
    while reading {
        match tokio::time::timeout_at(
            deadline.max(Instant::now() + Duration::from_millis(200)),
            reader.read(&mut chunk),
        )
        .await
        {
            Ok(Ok(n)) if n > 0 => keep_tail(&mut output, &chunk[..n]),
            _ => reading = false,
        }
    }
    match status {
        Ok(status) if status.success() => {
            (StepOutcome::Succeeded, status.code(), finish_output(output))
        }
        Ok(status) => (StepOutcome::Failed, status.code(), finish_output(output)),
        Err(e) => {
            keep_tail(
                &mut output,
                format!("\n[lifeguard] waiting for the step: {e}\n").as_bytes(),
            );
            (StepOutcome::Failed, None, finish_output(output))
        }
    }
}

/// Stops the step's whole process group if the step is abandoned midway (its future dropped,
/// as when the agent is asked to stop): `kill_on_drop` alone reaches only the direct child.
struct GroupGuard {
    group: Option<Pid>,
}

impl GroupGuard {
    fn of(child: &tokio::process::Child) -> GroupGuard {
        GroupGuard {
            group: child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .and_then(Pid::from_raw),
        }
    }

    fn disarm(&mut self) {
        self.group = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(group) = self.group {
            // SIGTERM lets the step's processes clean up; under systemd, whatever ignores it
            // is killed at the end of the unit's stop timeout.
            let _ = kill_process_group(group, Signal::TERM);
        }
    }
}

/// Stops a timed-out step: SIGTERM to its process group, SIGKILL after [`KILL_GRACE`], and
/// meanwhile its output is still read, so what it prints while shutting down (often why it
/// hung) reaches the archive. Reading ends when every process of the group has closed the
/// pipe, or [`LAST_WORDS_AFTER_KILL`] after the SIGKILL (a process that left the group may
/// hold the pipe for ever).
async fn last_words(
    child: &mut tokio::process::Child,
    reader: &mut tokio::net::unix::pipe::Receiver,
    mut output: Vec<u8>,
    mut reading: bool,
) -> Vec<u8> {
    let group = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(Pid::from_raw);
    if let Some(group) = group {
        let _ = kill_process_group(group, Signal::TERM);
    }
    let kill_at = Instant::now() + KILL_GRACE;
    let mut give_up_at = None;
    let mut exited = false;
    let mut chunk = vec![0u8; 64 * 1024];
    while reading {
        tokio::select! {
            read = reader.read(&mut chunk) => match read {
                Ok(0) | Err(_) => reading = false,
                Ok(n) => keep_tail(&mut output, &chunk[..n]),
            },
            _ = child.wait(), if !exited => exited = true,
            () = tokio::time::sleep_until(kill_at), if give_up_at.is_none() => {
                if let Some(group) = group {
                    let _ = kill_process_group(group, Signal::KILL);
                }
                give_up_at = Some(Instant::now() + LAST_WORDS_AFTER_KILL);
            }
            () = tokio::time::sleep_until(give_up_at.unwrap_or(kill_at)), if give_up_at.is_some() => {
                reading = false;
            }
        }
    }
    keep_tail(
        &mut output,
        if give_up_at.is_some() {
            b"\n[lifeguard] step timed out; its process group got SIGTERM, then SIGKILL\n"
        } else {
            b"\n[lifeguard] step timed out; its process group got SIGTERM and ended\n"
        },
    );
    let _ = child.start_kill();
    let _ = child.wait().await;
    output
}

/// `systemctl stop UNIT` (which waits for the stop job), then confirm the unit is inactive.
async fn stop_unit(
    unit: &str,
    env: &StepEnv,
    deadline: Instant,
) -> (StepOutcome, Option<i32>, Vec<u8>) {
    let stop = vec![
        "systemctl".to_string(),
        "stop".to_string(),
        unit.to_string(),
    ];
    let (outcome, code, mut output) = run_command(&stop, env, deadline).await;
    if outcome != StepOutcome::Succeeded {
        return (outcome, code, output);
    }
    loop {
        let check = vec![
            "systemctl".to_string(),
            "is-active".to_string(),
            unit.to_string(),
        ];
        let (_, _, state) = run_command(&check, env, deadline).await;
        let state = String::from_utf8_lossy(&state).trim().to_string();
        if state != "active" && state != "deactivating" && state != "reloading" {
            output.extend_from_slice(format!("[lifeguard] {unit} is {state}\n").as_bytes());
            return (StepOutcome::Succeeded, code, output);
        }
        if Instant::now() + Duration::from_millis(250) >= deadline {
            output.extend_from_slice(
                format!("[lifeguard] {unit} still {state} at the timeout\n").as_bytes(),
            );
            return (StepOutcome::TimedOut, None, output);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Polls the kernel's TCP tables until no established connection has one of `ports` as its
/// local port.
async fn wait_connections(ports: &[u16], deadline: Instant) -> (StepOutcome, Option<i32>, Vec<u8>) {
    let mut output = Vec::new();
    let mut last = None;
    loop {
        let count = crate::connections::established_on(ports, crate::connections::PROC_TABLES);
        if last != Some(count) {
            output.extend_from_slice(
                format!("[lifeguard] {count} established connection(s) on ports {ports:?}\n")
                    .as_bytes(),
            );
            last = Some(count);
        }
        if count == 0 {
            return (StepOutcome::Succeeded, None, output);
        }
        if Instant::now() + Duration::from_millis(200) >= deadline {
            return (StepOutcome::TimedOut, None, output);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, shell: &str, timeout_secs: u64) -> StepConfig {
        StepConfig {
            name: name.into(),
            run: None,
            shell: Some(shell.into()),
            stop_unit: None,
            wait_connections: None,
            timeout_secs,
            on_failure: OnFailure::Continue,
        }
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[tokio::test]
    async fn output_and_environment() {
        let mut env = StepEnv::default();
        env.set("INSTANCE_ID", "i-0abc");
        let result = run_step(
            &step("echo", "echo out $LIFEGUARD_INSTANCE_ID; echo err >&2", 5),
            &env,
            far(),
        )
        .await;
        assert_eq!(result.outcome, StepOutcome::Succeeded);
        assert_eq!(result.exit_code, Some(0));
        assert_eq!(String::from_utf8_lossy(&result.output), "out i-0abc\nerr\n");
    }

    #[tokio::test]
    async fn event_data_is_not_interpreted_by_a_shell() {
        let mut env = StepEnv::default();
        env.set("ASG", "$(touch /tmp/lifeguard-should-not-exist)");
        let argv = StepConfig {
            run: Some(vec!["printenv".into(), "LIFEGUARD_ASG".into()]),
            shell: None,
            ..step("printenv", "", 5)
        };
        let result = run_step(&argv, &env, far()).await;
        assert_eq!(
            String::from_utf8_lossy(&result.output).trim(),
            "$(touch /tmp/lifeguard-should-not-exist)"
        );
        assert!(!std::path::Path::new("/tmp/lifeguard-should-not-exist").exists());
    }

    #[tokio::test]
    async fn failure_and_missing_program() {
        let result = run_step(&step("fail", "exit 3", 5), &StepEnv::default(), far()).await;
        assert_eq!(
            (result.outcome, result.exit_code),
            (StepOutcome::Failed, Some(3))
        );
        let missing = StepConfig {
            run: Some(vec!["/nonexistent/program".into()]),
            shell: None,
            ..step("missing", "", 5)
        };
        let result = run_step(&missing, &StepEnv::default(), far()).await;
        assert_eq!(result.outcome, StepOutcome::Failed);
        assert!(String::from_utf8_lossy(&result.output).contains("/nonexistent/program"));
    }

    #[tokio::test]
    async fn timeout_stops_the_whole_process_group() {
        let marker = tempfile::NamedTempFile::new().unwrap();
        let path = marker.path().display().to_string();
        let script = format!("(sleep 3; echo late > {path}) & sleep 30");
        let started = Instant::now();
        let result = run_step(&step("slow", &script, 1), &StepEnv::default(), far()).await;
        assert_eq!(result.outcome, StepOutcome::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(8));
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            std::fs::read_to_string(marker.path()).unwrap(),
            "",
            "background child killed too"
        );
    }

    #[tokio::test]
    async fn what_a_timed_out_step_prints_while_stopping_is_kept() {
        // The step says why it hung only once told to stop, as services do on SIGTERM; its
        // child in the same group writes too, a moment later.
        let script = "trap 'echo stopping: flushed 42 requests; sleep 1; echo bye; exit 1' TERM; \
                      (trap 'sleep 0.5; echo child done; exit 0' TERM; while :; do sleep 0.1; done) & \
                      while :; do sleep 0.1; done";
        let result = run_step(&step("hung", script, 1), &StepEnv::default(), far()).await;
        assert_eq!(result.outcome, StepOutcome::TimedOut);
        let output = String::from_utf8_lossy(&result.output);
        assert!(output.contains("stopping: flushed 42 requests"), "{output}");
        assert!(output.contains("bye"), "{output}");
        assert!(output.contains("child done"), "{output}");
        assert!(output.ends_with("got SIGTERM and ended\n"), "{output}");
    }

    #[tokio::test]
    async fn a_step_that_ignores_sigterm_is_killed_and_reading_is_bounded() {
        let started = Instant::now();
        let result = run_step(
            &step(
                "stubborn",
                "trap '' TERM; echo ignoring; while :; do sleep 0.1; done",
                1,
            ),
            &StepEnv::default(),
            far(),
        )
        .await;
        assert_eq!(result.outcome, StepOutcome::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(12));
        let output = String::from_utf8_lossy(&result.output);
        assert!(output.contains("ignoring"), "{output}");
        assert!(output.contains("then SIGKILL"), "{output}");
    }

    #[tokio::test]
    async fn the_drain_deadline_bounds_the_step() {
        let result = run_step(
            &step("slow", "sleep 30", 600),
            &StepEnv::default(),
            Instant::now() + Duration::from_millis(300),
        )
        .await;
        assert_eq!(result.outcome, StepOutcome::TimedOut);
    }

    #[tokio::test]
    async fn output_keeps_the_end() {
        let result = run_step(
            &step(
                "big",
                "head -c 3000000 /dev/zero | tr '\\0' a; echo END",
                10,
            ),
            &StepEnv::default(),
            far(),
        )
        .await;
        assert_eq!(result.output.len(), OUTPUT_LIMIT);
        assert!(result.output.ends_with(b"aEND\n"));
    }

    #[tokio::test]
    async fn waits_for_connections_to_end() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (server_side, _) = listener.accept().unwrap();
        let wait = StepConfig {
            shell: None,
            wait_connections: Some(vec![port]),
            ..step("wait", "", 5)
        };
        let closer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            drop(server_side);
            drop(client);
        });
        let result = run_step(&wait, &StepEnv::default(), far()).await;
        closer.await.unwrap();
        assert_eq!(
            result.outcome,
            StepOutcome::Succeeded,
            "{}",
            String::from_utf8_lossy(&result.output)
        );
        assert!(String::from_utf8_lossy(&result.output).contains("1 established"));
        assert!(result.duration >= Duration::from_millis(400));
    }
}
