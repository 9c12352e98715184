//! Launch gating: hold a new instance in `Pending:Wait` until its readiness checks pass, then
//! complete the launch action with CONTINUE; ABANDON when they have not passed by the deadline.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::{CheckConfig, LaunchConfig};
use crate::steps::{StepEnv, run_step};

/// One round of checks: `Ok` when all pass, else the first failure.
pub async fn check_round(checks: &[CheckConfig], env: &StepEnv) -> Result<(), String> {
    for check in checks {
        let timeout = Duration::from_secs(check.timeout_secs.max(1));
        let passed = if let Some(argv) = &check.run {
            run_command_check(check, argv, env).await
        } else if let Some(url) = &check.http_get {
            http_check(url, timeout).await
        } else if let Some(address) = &check.tcp {
            tcp_check(address, timeout).await
        } else {
            Err("no check configured".to_string())
        };
        passed.map_err(|why| format!("{}: {why}", check.name))?;
    }
    Ok(())
}

async fn run_command_check(
    check: &CheckConfig,
    argv: &[String],
    env: &StepEnv,
) -> Result<(), String> {
    let step = crate::config::StepConfig {
        name: check.name.clone(),
        run: Some(argv.to_vec()),
        shell: None,
        stop_unit: None,
        wait_connections: None,
        timeout_secs: check.timeout_secs.max(1),
        on_failure: crate::config::OnFailure::Continue,
    };
    let result = run_step(
        &step,
        env,
        Instant::now() + Duration::from_secs(check.timeout_secs.max(1)),
    )
    .await;
    if result.failed() {
        let output = String::from_utf8_lossy(&result.output);
        let last_line = output.lines().last().unwrap_or_default().to_string();
        Err(format!(
            "{:?} (exit {:?}) {last_line}",
            result.outcome, result.exit_code
        ))
    } else {
        Ok(())
    }
}

async fn http_check(url: &str, timeout: Duration) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    let response = client.get(url).send().await.map_err(|e| e.to_string())?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {}", response.status()))
    }
}

async fn tcp_check(address: &str, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no connection within {timeout:?}")),
    }
}

/// Runs rounds of checks until all pass or the deadline: `Ok` ready, `Err` the last failure.
pub async fn wait_ready(
    config: &LaunchConfig,
    env: &StepEnv,
    deadline: Instant,
) -> Result<(), String> {
    let interval = Duration::from_millis(config.interval_ms.max(10));
    loop {
        let last = match check_round(&config.checks, env).await {
            Ok(()) => return Ok(()),
            Err(why) => why,
        };
        if Instant::now() + interval >= deadline {
            return Err(last);
        }
        tracing::info!(failing = %last, "not ready yet");
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str) -> CheckConfig {
        CheckConfig {
            name: name.into(),
            run: None,
            http_get: None,
            tcp: None,
            timeout_secs: 1,
        }
    }

    #[tokio::test]
    async fn tcp_and_command_checks() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = CheckConfig {
            tcp: Some(format!("127.0.0.1:{port}")),
            ..check("open")
        };
        let ok = CheckConfig {
            run: Some(vec!["true".into()]),
            ..check("ok")
        };
        assert_eq!(
            check_round(&[open.clone(), ok], &StepEnv::default()).await,
            Ok(())
        );
        drop(listener);
        let err = check_round(&[open], &StepEnv::default()).await.unwrap_err();
        assert!(err.starts_with("open: "), "{err}");
        let bad = CheckConfig {
            run: Some(vec!["false".into()]),
            ..check("bad")
        };
        assert!(
            check_round(&[bad], &StepEnv::default())
                .await
                .unwrap_err()
                .starts_with("bad: ")
        );
    }

    #[tokio::test]
    async fn waits_until_ready_or_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("ready");
        let config = LaunchConfig {
            enabled: true,
            deadline_secs: 5,
            interval_ms: 50,
            checks: vec![CheckConfig {
                run: Some(vec!["test".into(), "-e".into(), flag.display().to_string()]),
                ..check("flag")
            }],
        };
        let never = wait_ready(
            &config,
            &StepEnv::default(),
            Instant::now() + Duration::from_millis(300),
        )
        .await;
        assert!(never.is_err());
        let writer = {
            let flag = flag.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                std::fs::write(flag, "").unwrap();
            })
        };
        let ready = wait_ready(
            &config,
            &StepEnv::default(),
            Instant::now() + Duration::from_secs(5),
        )
        .await;
        writer.await.unwrap();
        assert_eq!(ready, Ok(()));
    }
}
