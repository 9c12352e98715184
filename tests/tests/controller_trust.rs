//! Any instance can send to the queue. The real controller against the emulator, whose SQS sets
//! `SenderId` from the role credentials each instance's IMDS hands out, as SQS does: reports an
//! instance sends about others change nothing, its own agent's reports are followed.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use lifeguard_common::message::{AgentReport, CompletionReport, ReportPhase};
use lifeguard_e2e::controller::{Scene, scene, status_row};
use lifeguard_e2e::drain::{GROUP, HOOK};
use lifeguard_e2e::{ACCOUNT, REGION, eventually};

const WAIT: Duration = Duration::from_secs(60);

fn report(about: &str, phase: ReportPhase, seq: u64) -> String {
    let mut report = AgentReport::new(phase, about);
    report.asg = Some(GROUP.to_string());
    report.hook = Some(HOOK.to_string());
    report.reason = Some("scale_in".into());
    report.seq = seq;
    report.report_interval_secs = Some(3600);
    if phase.is_final() {
        report.result = Some("CONTINUE".into());
        report.completion = Some(CompletionReport::Completed);
    }
    report
        .to_event(
            &format!("forged-{seq}"),
            "2026-12-03T10:00:00Z",
            REGION,
            ACCOUNT,
        )
        .to_string()
}

async fn drain_tags(scene: &Scene, instance_id: &str) -> Vec<(String, String)> {
    let tags = scene
        .stage
        .clients
        .ec2
        .describe_tags()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("resource-id")
                .values(instance_id)
                .build(),
        )
        .send()
        .await
        .unwrap();
    tags.tags()
        .iter()
        .filter(|t| t.key().unwrap_or_default().starts_with("lifeguard:drain:"))
        .map(|t| {
            (
                t.key().unwrap_or_default().to_string(),
                t.value().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_an_instance_forges_about_others_change_nothing_and_its_own_agent_is_followed() {
    // The hook's default heartbeat timeout, as AWS creates it.
    let scene = scene(3, 3600, &[]).await;
    let stage = &scene.stage;
    let (attacker, victim, bystander) = (
        stage.instances[0].clone(),
        stage.instances[1].clone(),
        stage.instances[2].clone(),
    );
    // A short grace, so the victim's fallback comes within the test; the configured fallback
    // is ABANDON, and only a believed forgery could make it CONTINUE.
    let controller = scene.start_controller(
        "ctl",
        "agent_grace_secs = 8\nreport_silence_secs = 8\nfallback_result = \"ABANDON\"",
    );
    controller.wait_ready().await;

    // A start mark for an instance in service, which a real termination days later would take
    // for its start.
    scene
        .send_as(&attacker, &report(&bystander, ReportPhase::DrainStarted, 1))
        .await;
    // The victim leaves without an agent; the attacker speaks for it: a heartbeat whose counter
    // would make every later report look stale, and a finished drain that would end the watch
    // with CONTINUE.
    stage.terminate(&victim).await;
    scene.wait_for_action(&victim, WAIT).await;
    for (seq, phase) in [
        (u64::MAX, ReportPhase::DrainHeartbeat),
        (u64::MAX, ReportPhase::DrainFinished),
    ] {
        scene.send_as(&attacker, &report(&victim, phase, seq)).await;
    }
    stage.wait_terminated(&victim, WAIT).await;

    assert_eq!(
        stage.completions(&victim).await,
        vec![(200, "ABANDON".to_string())],
        "the controller's fallback, not the forged CONTINUE"
    );
    let status = controller.status();
    let row = status_row(&status, &victim);
    assert_eq!(row["ended_by"], "controller", "{row}");
    assert!(
        drain_tags(&scene, &bystander).await.is_empty(),
        "no mark on an instance in service: {:?}",
        drain_tags(&scene, &bystander).await
    );
    let refused = controller
        .metric("lifeguard_messages_refused_total{kind=\"agent_report\",reason=\"other_instance\"}")
        .await;
    assert_eq!(refused, 3.0);
    let log = controller.process.log();
    assert!(log.contains("message refused"), "{log}");

    // The attacker's own agent, signing with its instance's role, is followed: it drains,
    // completes, and the controller records the agent's outcome.
    let agent = stage
        .start_agent(&attacker, &stage.archive_config(), &[])
        .await;
    stage.terminate(&attacker).await;
    agent.wait_for_log("drain finished", WAIT).await;
    stage.wait_terminated(&attacker, WAIT).await;
    let row = eventually("the agent's outcome", WAIT, || async {
        let status = controller.status();
        status
            .iter()
            .find(|r| r["instance_id"] == attacker && r["ended_by"] == "agent")
            .cloned()
    })
    .await;
    assert_eq!(row["outcome"], "CONTINUE", "{row}");
    assert_eq!(
        stage.completions(&attacker).await,
        vec![(200, "CONTINUE".to_string())]
    );
}
