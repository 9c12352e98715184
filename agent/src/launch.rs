//! Launch gating: hold a new instance in `Pending:Wait` until its readiness checks pass, then
//! complete the launch action with CONTINUE; ABANDON when they have not passed by the deadline.
//! Auto Scaling keeps a new instance in plain `Pending` while EC2 starts it and only then runs
//! the launch hooks: the gate waits through that, then keeps the action alive with heartbeats
//! while the checks run (a deadline longer than the hook's heartbeat timeout must not let Auto
//! Scaling apply the default result meanwhile), and reports on its own cadence.

use std::sync::Arc;
use std::time::Duration;

use lifeguard_common::message::{AgentReport, ReportPhase, Transition};
use time::OffsetDateTime;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cadence::{Cadence, CadenceSpec, HeartbeatTarget, Progress};
use crate::config::{AgentConfig, CheckConfig, LaunchConfig};
use crate::drain::machine::{self, ActionSeen, COMPLETION_MARGIN};
use crate::drain::{Deps, complete_action, hook_for};
use crate::lifecycle::{AutoScaling, GroupMembership, LifecycleResult};
use crate::report::ReportSink;
use crate::steps::{StepEnv, run_step};

/// How long a new instance may be missing from `DescribeAutoScalingInstances` before the gate
/// takes it for an instance in no group (the listing can lag the launch by a moment).
const NOT_LISTED_LIMIT: Duration = Duration::from_secs(30);

/// Gates this instance's launch: waits for `Pending:Wait`, runs the checks, completes the
/// action. Returns when there is nothing (more) to gate.
pub async fn gate<A, S, R>(
    config: &AgentConfig,
    deps: &Arc<Deps<A, S, R>>,
    instance_id: &str,
    shutdown: &CancellationToken,
) where
    A: AutoScaling + 'static,
    S: Send + Sync + 'static,
    R: ReportSink + 'static,
{
    let Some(membership) = await_launch_action(config, deps, instance_id, shutdown).await else {
        return;
    };
    let asg = membership.asg.clone();
    let hook = match hook_for(config, &deps.autoscaling, &asg, Transition::Launching).await {
        Ok(Some(hook)) => hook,
        Ok(None) => {
            tracing::info!(%instance_id, %asg, "no launch hook to complete");
            return;
        }
        Err(error) => {
            tracing::error!(%instance_id, %asg, %error, "launch hooks not readable; the hook's default result will apply");
            return;
        }
    };
    // The action began when it was first seen waiting (at most a poll ago): its global
    // timeout bounds the checks however long the configured deadline.
    let began = Instant::now();
    let action_ends = began + hook.global_timeout;
    let deadline = (began + Duration::from_secs(config.launch.deadline_secs)).min(
        action_ends
            .checked_sub(COMPLETION_MARGIN * 2)
            .unwrap_or(began),
    );
    let interval = Duration::from_secs(config.report.interval_secs.max(1));
    let mut template = AgentReport::new(ReportPhase::LaunchProgress, instance_id);
    template.asg = Some(asg.clone());
    template.hook = Some(hook.name.clone());
    template.reason = Some("launch".to_string());
    let progress = Progress::starting_at(0, "checks");
    let cadence = Cadence::start(
        deps.clone(),
        CadenceSpec {
            template: template.clone(),
            progress_phase: ReportPhase::LaunchProgress,
            heartbeat_phase: None,
            report_interval: interval,
            heartbeats: Some(HeartbeatTarget {
                asg: asg.clone(),
                hook: hook.name.clone(),
                heartbeat_timeout: hook.heartbeat_timeout,
                until: action_ends,
            }),
            last_heartbeat: None,
        },
        progress.clone(),
    );
    crate::service::notify_status("launching: running readiness checks");
    let mut env = StepEnv::default();
    env.set("INSTANCE_ID", instance_id);
    env.set("ASG", &asg);
    env.set("REASON", "launch");
    let ready = tokio::select! {
        ready = wait_ready(&config.launch, &env, deadline) => ready,
        () = shutdown.cancelled() => {
            // The restarted agent gates again from the start; the action keeps waiting.
            tracing::warn!(%instance_id, "stop signal during readiness checks; left for the restarted agent");
            cadence.stop().await;
            return;
        }
    };
    let (result, phase) = match &ready {
        Ok(()) => (LifecycleResult::Continue, ReportPhase::LaunchReady),
        Err(_) => (LifecycleResult::Abandon, ReportPhase::LaunchFailed),
    };
    tracing::info!(%instance_id, %asg, hook = %hook.name, result = result.as_str(),
        failure = ?ready.as_ref().err(), "readiness decided");
    cadence.stop_heartbeats();
    progress.set_stage("completing");
    let (completion, completion_error) = complete_action(
        &deps.autoscaling,
        &asg,
        &hook.name,
        instance_id,
        result,
        action_ends.checked_sub(COMPLETION_MARGIN).unwrap_or(began),
    )
    .await;
    tracing::info!(%instance_id, ?completion, "launch action completion done");
    cadence.stop().await;
    let mut report = template;
    report.phase = phase;
    report.seq = progress.next_seq();
    progress.stamp(&mut report, interval);
    report.stage = Some("done".to_string());
    report.result = Some(result.as_str().to_string());
    report.completion = Some(completion);
    let errors: Vec<String> = [ready.err(), completion_error]
        .into_iter()
        .flatten()
        .collect();
    report.error = (!errors.is_empty()).then(|| errors.join("; "));
    if let Err(error) = deps.reports.send(&report).await {
        tracing::warn!(%instance_id, %error, "launch report not sent");
    }
}

/// Waits until the group holds this instance in `Pending:Wait` (through plain `Pending`);
/// `None` when no launch action will come.
async fn await_launch_action<A, S, R>(
    config: &AgentConfig,
    deps: &Arc<Deps<A, S, R>>,
    instance_id: &str,
    shutdown: &CancellationToken,
) -> Option<GroupMembership>
where
    A: AutoScaling + 'static,
{
    let started = OffsetDateTime::now_utc();
    let wait_limit = Duration::from_secs(config.lifecycle.action_wait_secs);
    loop {
        let waited =
            Duration::try_from(OffsetDateTime::now_utc() - started).unwrap_or(Duration::ZERO);
        let membership = match deps.autoscaling.membership(instance_id).await {
            Ok(membership) => Some(membership),
            Err(error) => {
                tracing::warn!(%instance_id, %error, "lifecycle state not readable");
                None
            }
        };
        if let Some(membership) = &membership {
            let state = membership.as_ref().map(|m| m.lifecycle_state.as_str());
            match machine::launch_state(state) {
                ActionSeen::Waits => return membership.clone(),
                ActionSeen::Over => {
                    tracing::info!(%instance_id, state, "no launch action waits");
                    return None;
                }
                ActionSeen::NotYet if membership.is_none() && waited >= NOT_LISTED_LIMIT => {
                    tracing::info!(%instance_id, "not in a group; no launch to gate");
                    return None;
                }
                ActionSeen::NotYet => {
                    tracing::debug!(%instance_id, state, "launch action not there yet");
                }
            }
        }
        if waited >= wait_limit {
            tracing::warn!(%instance_id, "no launch action appeared in time; not gating");
            return None;
        }
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(machine::poll_interval(waited)) => {}
        }
    }
}

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
