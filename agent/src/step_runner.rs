//! Drain steps outside the agent's sandbox. The hardened unit gives the agent a read-only
//! system, no privileges beyond reading logs, and no way to gain more; the operator's steps
//! (`systemctl stop`, deregistrations, flushes) need whatever their commands need. So the agent
//! asks a runner to run them: `lifeguard-step.socket` accepts on a socket only root and the
//! agent's group can reach, and each connection starts a `lifeguard-step@.service` running
//! `lifeguard-agent step-exec` with the connection as its standard input and output.
//!
//! The agent names a step by its index and name; the runner takes the command from its own
//! reading of the configuration, never from the socket. Only `LIFEGUARD_*` variables cross,
//! as the step's environment. The agent closing the connection (its drain cut short by a stop
//! signal) stops the step's process group, as dropping a step run in-process does.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use lifeguard_common::message::StepOutcome;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::time::Instant;

use crate::config::{AgentConfig, StepConfig};
use crate::steps::{OUTPUT_LIMIT, StepEnv, StepResult, run_step};

/// The longest request line a runner reads: a step's name and its `LIFEGUARD_*` variables.
const REQUEST_LIMIT: u64 = 64 * 1024;
/// The longest answer line an agent reads: the step's output in base64, and the rest.
const ANSWER_LIMIT: u64 = (OUTPUT_LIMIT as u64) * 4 / 3 + 64 * 1024;
/// Beyond the step's own deadline, what the runner may take to stop a timed-out step (its
/// SIGTERM grace, last output) and answer.
const ANSWER_MARGIN: Duration = Duration::from_secs(10);

/// What the agent asks: the configured step at `index`, which must be named `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepRequest {
    pub index: usize,
    pub name: String,
    pub env: Vec<(String, String)>,
    /// Time left for the step: the shorter of its timeout and the drain's deadline.
    pub timeout_ms: u64,
}

/// How the step ended, as the runner saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepAnswer {
    pub outcome: StepOutcome,
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    /// stdout and stderr as the step wrote them, base64.
    pub output: String,
}

/// Runs step `index` of the configuration through the runner listening on `socket`; never
/// fails itself: a runner that cannot be reached or answers nonsense is a failed step.
pub async fn run_step_via(
    socket: &Path,
    index: usize,
    step: &StepConfig,
    env: &StepEnv,
    deadline: Instant,
) -> StepResult {
    let started = Instant::now();
    let deadline = deadline.min(started + Duration::from_secs(step.timeout_secs));
    let request = StepRequest {
        index,
        name: step.name.clone(),
        env: env.vars.clone(),
        timeout_ms: u64::try_from(deadline.saturating_duration_since(started).as_millis())
            .unwrap_or(u64::MAX),
    };
    let asked = tokio::time::timeout_at(deadline + ANSWER_MARGIN, async {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|e| format!("connecting to the step runner at {}: {e}", socket.display()))?;
        exchange(stream, &request).await
    })
    .await;
    let failed = |why: String| StepResult {
        name: step.name.clone(),
        outcome: StepOutcome::Failed,
        exit_code: None,
        duration: started.elapsed(),
        on_failure: step.on_failure,
        output: format!("[lifeguard] {why}\n").into_bytes(),
    };
    let answer = match asked {
        Ok(Ok(answer)) => answer,
        Ok(Err(why)) => return failed(why),
        Err(_) => {
            return StepResult {
                outcome: StepOutcome::TimedOut,
                ..failed(format!(
                    "the step runner did not answer within the step's time and {} s more",
                    ANSWER_MARGIN.as_secs()
                ))
            };
        }
    };
    match BASE64.decode(answer.output.as_bytes()) {
        Ok(output) => StepResult {
            name: step.name.clone(),
            outcome: answer.outcome,
            exit_code: answer.exit_code,
            duration: Duration::from_millis(answer.duration_ms),
            on_failure: step.on_failure,
            output,
        },
        Err(e) => failed(format!("the step runner's answer: output not base64: {e}")),
    }
}

/// Sends the request and reads the answer; dropping this mid-way closes the connection, which
/// stops the step.
async fn exchange<S>(stream: S, request: &StepRequest) -> Result<StepAnswer, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (reader, mut writer) = tokio::io::split(stream);
    let mut line = serde_json::to_vec(request).map_err(|e| format!("encoding the request: {e}"))?;
    line.push(b'\n');
    writer
        .write_all(&line)
        .await
        .map_err(|e| format!("sending the step to the runner: {e}"))?;
    let mut answer = Vec::new();
    BufReader::new(reader)
        .take(ANSWER_LIMIT)
        .read_until(b'\n', &mut answer)
        .await
        .map_err(|e| format!("reading the step runner's answer: {e}"))?;
    if answer.last() != Some(&b'\n') {
        return Err(if answer.is_empty() {
            "the step runner closed the connection without an answer (its journal says why)"
                .to_string()
        } else {
            "the step runner's answer was cut short or too long".to_string()
        });
    }
    serde_json::from_slice(&answer).map_err(|e| format!("the step runner's answer: {e}"))
}

/// The runner's side, for one connection: reads the request from `input`, runs the step the
/// configuration names, writes the answer to `output`. Input ending before the step does
/// stops it.
pub async fn serve<R, W>(config: &AgentConfig, input: R, mut output: W) -> Result<(), String>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut input = BufReader::new(input);
    let mut line = Vec::new();
    (&mut input)
        .take(REQUEST_LIMIT)
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| format!("reading the request: {e}"))?;
    if line.last() != Some(&b'\n') {
        return Err("the request was cut short or longer than 64 KiB".to_string());
    }
    let request: StepRequest =
        serde_json::from_slice(&line).map_err(|e| format!("the request: {e}"))?;
    let step = checked_step(config, &request)?;
    let env = checked_env(&request.env)?;
    let deadline = Instant::now()
        + Duration::from_millis(request.timeout_ms).min(Duration::from_secs(step.timeout_secs));
    tracing::info!(step = %step.name, index = request.index, "running drain step for the agent");
    let result = tokio::select! {
        result = run_step(step, &env, deadline) => result,
        () = hang_up(&mut input) => {
            // Dropping the step stops its process group.
            return Err(format!("the agent hung up during step {}; step stopped", step.name));
        }
    };
    tracing::info!(step = %step.name, outcome = ?result.outcome, exit_code = ?result.exit_code,
        "drain step done");
    let answer = StepAnswer {
        outcome: result.outcome,
        exit_code: result.exit_code,
        duration_ms: u64::try_from(result.duration.as_millis()).unwrap_or(u64::MAX),
        output: BASE64.encode(&result.output),
    };
    let mut line = serde_json::to_vec(&answer).map_err(|e| format!("encoding the answer: {e}"))?;
    line.push(b'\n');
    output
        .write_all(&line)
        .await
        .and(output.flush().await)
        .map_err(|e| format!("answering the agent: {e}"))
}

/// The configured step the request names; the index and the name must both match, so an agent
/// and a runner reading different configurations fail the step instead of running another.
fn checked_step<'a>(
    config: &'a AgentConfig,
    request: &StepRequest,
) -> Result<&'a StepConfig, String> {
    match config.drain.steps.get(request.index) {
        Some(step) if step.name == request.name => Ok(step),
        Some(step) => Err(format!(
            "step {} is {:?} in the runner's configuration, not {:?}: the agent and the runner read different files",
            request.index, step.name, request.name
        )),
        None => Err(format!(
            "no step {} in the runner's configuration ({} steps)",
            request.index,
            config.drain.steps.len()
        )),
    }
}

/// Only `LIFEGUARD_` variables with plain names cross: nothing from the socket can set
/// `PATH`, `LD_PRELOAD` or the like for a command run as root.
fn checked_env(vars: &[(String, String)]) -> Result<StepEnv, String> {
    if vars.len() > 64 {
        return Err(format!("{} variables: at most 64", vars.len()));
    }
    for (name, value) in vars {
        let plain = name.strip_prefix("LIFEGUARD_").is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        });
        if !plain {
            return Err(format!(
                "variable {name:?} refused: only LIFEGUARD_[A-Z0-9_]+"
            ));
        }
        if value.contains('\0') {
            return Err(format!("variable {name} holds a NUL byte"));
        }
    }
    Ok(StepEnv {
        vars: vars.to_vec(),
    })
}

/// Completes when `input` ends (the agent closed its side); what it sends meanwhile is ignored.
async fn hang_up<R: AsyncRead + Unpin>(input: &mut R) {
    let mut sink = [0u8; 512];
    loop {
        match input.read(&mut sink).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests;
