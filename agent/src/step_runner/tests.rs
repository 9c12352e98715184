// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use lifeguard_common::config::parse_toml;

use super::*;

fn config(steps: &str) -> AgentConfig {
    let path = Path::new("/etc/lifeguard/agent.toml");
    let config: AgentConfig = parse_toml(path, steps).unwrap();
    config.validate(path).unwrap();
    config
}

fn request(index: usize, name: &str, env: &[(&str, &str)]) -> StepRequest {
    StepRequest {
        index,
        name: name.into(),
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect(),
        timeout_ms: 10_000,
    }
}

/// `check` every 50 ms until it gives a value, for at most `limit`.
async fn poll_until<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let until = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= until {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The agent's side against the runner's, over an in-memory connection.
async fn ask(
    config: &AgentConfig,
    request: &StepRequest,
) -> (Result<StepAnswer, String>, Result<(), String>) {
    let (agent, runner) = tokio::io::duplex(64 * 1024);
    let (input, output) = tokio::io::split(runner);
    tokio::join!(exchange(agent, request), serve(config, input, output))
}

#[tokio::test]
async fn the_runner_runs_the_configured_step_with_the_agents_variables_only() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&format!(
        "[[drain.steps]]\nname = \"flush\"\nshell = \"echo asg=$LIFEGUARD_ASG; touch {}; exit 3\"\n",
        dir.path().join("ran").display()
    ));
    let (answer, served) = ask(&config, &request(0, "flush", &[("LIFEGUARD_ASG", "web")])).await;
    served.unwrap();
    let answer = answer.unwrap();
    assert_eq!(
        (answer.outcome, answer.exit_code),
        (StepOutcome::Failed, Some(3))
    );
    assert_eq!(BASE64.decode(answer.output).unwrap(), b"asg=web\n");
    assert!(dir.path().join("ran").exists());
}

#[tokio::test]
async fn a_request_naming_another_step_or_setting_other_variables_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran");
    let config = config(&format!(
        "[[drain.steps]]\nname = \"flush\"\nrun = [\"touch\", \"{}\"]\n",
        ran.display()
    ));
    for (bad, why) in [
        (request(0, "other", &[]), "different files"),
        (request(1, "flush", &[]), "no step 1"),
        (request(0, "flush", &[("PATH", "/tmp/evil")]), "refused"),
        (request(0, "flush", &[("LIFEGUARD_X;", "1")]), "refused"),
        (
            request(0, "flush", &[("LD_PRELOAD", "/tmp/x.so")]),
            "refused",
        ),
        (request(0, "flush", &[("LIFEGUARD_X", "a\0b")]), "NUL"),
    ] {
        let (answer, served) = ask(&config, &bad).await;
        let error = served.unwrap_err();
        assert!(error.contains(why), "{bad:?}: {error}");
        // The agent is told the runner gave no answer, so the step fails.
        assert!(answer.unwrap_err().contains("without an answer"));
    }
    assert!(!ran.exists());
}

#[tokio::test]
async fn a_garbled_or_endless_request_is_refused() {
    let config = config("[[drain.steps]]\nname = \"flush\"\nrun = [\"true\"]\n");
    let garbled =
        b"{\"index\": 0, \"name\": \"flush\", \"env\": [], \"timeout_ms\": 1, \"run\": [\"sh\"]}\n";
    let served = serve(&config, &garbled[..], tokio::io::sink()).await;
    assert!(served.unwrap_err().contains("unknown field"));
    let endless = vec![b'x'; 70 * 1024];
    let served = serve(&config, &endless[..], tokio::io::sink()).await;
    assert!(served.unwrap_err().contains("64 KiB"));
}

#[tokio::test]
async fn the_agent_hanging_up_stops_the_steps_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let config = config(&format!(
        "[[drain.steps]]\nname = \"slow\"\nshell = \"sleep 30 & echo $! > {}; wait\"\n",
        pid_file.display()
    ));
    let (agent, runner) = tokio::io::duplex(64 * 1024);
    let (input, output) = tokio::io::split(runner);
    let served = tokio::spawn(async move { serve(&config, input, output).await });
    let asking = tokio::spawn(async move { exchange(agent, &request(0, "slow", &[])).await });
    let pid = poll_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
    })
    .await
    .expect("the step started its sleep");
    asking.abort();
    let error = served.await.unwrap().unwrap_err();
    assert!(error.contains("hung up"), "{error}");
    // SIGTERM went to the group: the grandchild sleep is gone too.
    let gone = poll_until(Duration::from_secs(10), || {
        (!Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z ")))
        .then_some(())
    })
    .await;
    assert!(gone.is_some(), "sleep {pid} still running");
}

#[tokio::test]
async fn an_unreachable_runner_fails_the_step_and_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("missing.sock");
    let config = config("[[drain.steps]]\nname = \"flush\"\nrun = [\"true\"]\n");
    let result = run_step_via(
        &socket,
        0,
        &config.drain.steps[0],
        &StepEnv::default(),
        Instant::now() + Duration::from_secs(5),
    )
    .await;
    assert_eq!(result.outcome, StepOutcome::Failed);
    let output = String::from_utf8_lossy(&result.output);
    assert!(
        output.contains("connecting to the step runner") && output.contains("missing.sock"),
        "{output}"
    );
}
