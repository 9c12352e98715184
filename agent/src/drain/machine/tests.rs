use super::*;
use crate::watch::Trigger;
use lifeguard_common::message::{ArchiveSummary, SpotAction, StepOutcome, StepReport, Transition};
use time::macros::datetime;

const NOTICED: OffsetDateTime = datetime!(2026-11-22 10:00:00 UTC);
const HOUR: Duration = Duration::from_secs(3600);

fn hook(heartbeat_secs: u64) -> HookInfo {
    HookInfo {
        name: "drain".into(),
        transition: Transition::Terminating,
        heartbeat_timeout: Duration::from_secs(heartbeat_secs),
        global_timeout: Duration::from_secs((heartbeat_secs * 100).min(172_800)),
        default_result: "ABANDON".into(),
    }
}

fn scale_in() -> DrainRecord {
    DrainRecord::new("i-0abc", &Trigger::Terminate, None, NOTICED)
}

fn steps() -> Vec<String> {
    vec!["stop-app".to_string(), "flush".to_string()]
}

fn facts(steps: &[String]) -> Facts<'_> {
    Facts {
        steps,
        archive: true,
        stopping: false,
    }
}

fn step(name: &str, outcome: StepOutcome) -> StepReport {
    StepReport {
        name: name.into(),
        outcome,
        exit_code: None,
        duration_ms: 10,
    }
}

fn summary() -> ArchiveSummary {
    ArchiveSummary {
        bucket: "logs".into(),
        key: "k".into(),
        bytes: 1,
        sha256: "00".repeat(32),
        files: 1,
        skipped_files: 0,
        manifest_sha256: None,
    }
}

#[test]
fn a_termination_awaits_its_action_through_plain_terminating() {
    let mut record = scale_in();
    assert_eq!(record.stage, Stage::AwaitingAction);
    assert_eq!(next(&record, &facts(&steps())), Next::LookForAction);

    // Load balancers deregister the instance for five minutes: the drain keeps waiting.
    let mut at = NOTICED;
    for _ in 0..300 {
        at += time::Duration::seconds(1);
        let decision = on_action_lookup(
            &mut record,
            terminate_state(Some("Terminating")),
            Some(&hook(3600)),
            HOUR,
            at,
        );
        assert!(matches!(decision, AwaitDecision::LookAgainIn(_)), "{at}");
    }
    assert_eq!(record.stage, Stage::AwaitingAction);
    assert_eq!(
        record.drain_started_at, None,
        "the drain's clock has not started"
    );

    let began = NOTICED + time::Duration::seconds(301);
    let decision = on_action_lookup(
        &mut record,
        terminate_state(Some("Terminating:Wait")),
        Some(&hook(3600)),
        HOUR,
        began,
    );
    assert_eq!(decision, AwaitDecision::Begin);
    assert!(record.action_confirmed);
    assert_eq!(record.drain_started_at, Some(began));
    assert_eq!(record.hook.as_ref().unwrap().name, "drain");
    assert_eq!(next(&record, &facts(&steps())), Next::RunStep(0));

    // The action's global timeout counts from the action, not from the IMDS notice.
    let d = deadlines(&record, Duration::from_secs(900), Duration::ZERO, began);
    // 100 heartbeat timeouts, at most 48 hours.
    assert_eq!(
        d.action,
        Some(began + Duration::from_secs(48 * 3600) - COMPLETION_MARGIN)
    );
    assert_eq!(d.archive, began + Duration::from_secs(900));
}

#[test]
fn the_wait_for_an_action_is_bounded_and_gets_sparser() {
    let mut record = scale_in();
    let late = NOTICED + HOUR;
    assert_eq!(
        on_action_lookup(
            &mut record,
            ActionSeen::NotYet,
            Some(&hook(3600)),
            HOUR,
            late
        ),
        AwaitDecision::Begin
    );
    assert!(!record.action_confirmed);
    assert!(record.hook.is_some(), "the completion will still try");
    assert_eq!(
        poll_interval(Duration::from_secs(1)),
        Duration::from_secs(1)
    );
    assert_eq!(
        poll_interval(Duration::from_secs(30)),
        Duration::from_secs(2)
    );
    assert_eq!(
        poll_interval(Duration::from_secs(600)),
        Duration::from_secs(5)
    );
    // Never past the limit.
    let mut record = scale_in();
    let almost = NOTICED + HOUR - time::Duration::seconds(1);
    assert_eq!(
        on_action_lookup(
            &mut record,
            ActionSeen::NotYet,
            Some(&hook(3600)),
            HOUR,
            almost
        ),
        AwaitDecision::LookAgainIn(Duration::from_secs(1))
    );
}

#[test]
fn no_hook_means_no_wait_and_no_completion_claimed() {
    let mut record = scale_in();
    let at = NOTICED + time::Duration::seconds(1);
    assert_eq!(
        on_action_lookup(
            &mut record,
            terminate_state(Some("Terminating")),
            None,
            HOUR,
            at
        ),
        AwaitDecision::Begin
    );
    let none: Vec<String> = Vec::new();
    let mut f = facts(&none);
    f.archive = false;
    assert_eq!(
        next(&record, &f),
        Next::SkipCompletion(CompletionReport::NoHook)
    );
    record.completed(CompletionReport::NoHook, None);
    assert_eq!(next(&record, &f), Next::Report(ReportPhase::DrainFinished));
}

#[test]
fn states_that_end_the_wait() {
    assert_eq!(terminate_state(Some("Terminating:Wait")), ActionSeen::Waits);
    assert_eq!(terminate_state(Some("Terminating")), ActionSeen::NotYet);
    assert_eq!(
        terminate_state(Some("Terminating:Proceed")),
        ActionSeen::Over
    );
    assert_eq!(terminate_state(None), ActionSeen::Over);
    assert_eq!(launch_state(Some("Pending:Wait")), ActionSeen::Waits);
    assert_eq!(launch_state(Some("Pending")), ActionSeen::NotYet);
    assert_eq!(launch_state(None), ActionSeen::NotYet);
    assert_eq!(launch_state(Some("InService")), ActionSeen::Over);
}

#[test]
fn steps_then_archive_then_completion_then_report() {
    let names = steps();
    let mut record = scale_in();
    on_action_lookup(
        &mut record,
        ActionSeen::Waits,
        Some(&hook(60)),
        HOUR,
        NOTICED,
    );
    assert_eq!(next(&record, &facts(&names)), Next::RunStep(0));
    record.step_done(step("stop-app", StepOutcome::Failed), true);
    assert_eq!(next(&record, &facts(&names)), Next::RunStep(1));
    record.step_done(step("flush", StepOutcome::Succeeded), false);
    assert_eq!(next(&record, &facts(&names)), Next::Archive);
    record.archive_started("k");
    record.archive_finished(Ok(summary()));
    assert_eq!(
        next(&record, &facts(&names)),
        Next::Complete(LifecycleResult::Abandon),
        "a failed abandon step"
    );
    record.completed(CompletionReport::Completed, None);
    assert_eq!(
        next(&record, &facts(&names)),
        Next::Report(ReportPhase::DrainFinished)
    );
    record.reported();
    assert_eq!(next(&record, &facts(&names)), Next::Done);
}

#[test]
fn a_failed_completion_is_reported_as_a_failure() {
    let mut record = scale_in();
    on_action_lookup(
        &mut record,
        ActionSeen::Waits,
        Some(&hook(60)),
        HOUR,
        NOTICED,
    );
    record.archive_finished(Ok(summary()));
    record.completed(
        CompletionReport::Failed,
        Some("CompleteLifecycleAction: AccessDenied".into()),
    );
    assert_eq!(record.final_phase(), ReportPhase::DrainFailed);
    let none: Vec<String> = Vec::new();
    assert_eq!(
        next(&record, &facts(&none)),
        Next::Report(ReportPhase::DrainFailed)
    );
}

#[test]
fn a_stop_mid_drain_secures_the_logs_and_leaves_the_rest() {
    let names = steps();
    let mut record = scale_in();
    on_action_lookup(
        &mut record,
        ActionSeen::Waits,
        Some(&hook(60)),
        HOUR,
        NOTICED,
    );
    record.step_done(step("stop-app", StepOutcome::Succeeded), false);
    let stopping = Facts {
        stopping: true,
        ..facts(&names)
    };
    assert_eq!(next(&record, &stopping), Next::Archive);
    record.archive_started("k");
    record.archive_finished(Ok(summary()));
    assert_eq!(next(&record, &stopping), Next::Leave, "one step left");
    // The restarted agent runs the step, then completes with the archive it has.
    assert_eq!(next(&record, &facts(&names)), Next::RunStep(1));
    record.step_done(step("flush", StepOutcome::Succeeded), false);
    assert_eq!(
        next(&record, &facts(&names)),
        Next::Complete(LifecycleResult::Continue)
    );
    // A stop while awaiting the action leaves at once.
    assert_eq!(next(&scale_in(), &stopping), Next::Leave);
}

#[test]
fn archive_attempts_are_counted_and_given_up_after_a_few() {
    let none: Vec<String> = Vec::new();
    let mut record = DrainRecord::new("i-0abc", &Trigger::Manual, None, NOTICED);
    for attempt in 1..=MAX_ARCHIVE_ATTEMPTS {
        assert_eq!(next(&record, &facts(&none)), Next::Archive, "{attempt}");
        // Killed mid-archive: the attempt was counted before it began; nothing else changed.
        record.archive_started("k");
    }
    assert_eq!(next(&record, &facts(&none)), Next::GiveUpArchive);
    record.archive_given_up();
    assert!(
        record
            .archive_error
            .as_deref()
            .unwrap()
            .contains("3 attempts")
    );
    assert_eq!(
        next(&record, &facts(&none)),
        Next::SkipCompletion(CompletionReport::NotNeeded)
    );
    record.completed(CompletionReport::NotNeeded, None);
    assert_eq!(
        next(&record, &facts(&none)),
        Next::Report(ReportPhase::DrainFailed)
    );
}

#[test]
fn a_spot_interruption_bounds_everything() {
    let at = NOTICED + time::Duration::seconds(120);
    let trigger = Trigger::Spot {
        action: SpotAction::Terminate,
        at: Some(at),
    };
    let record = DrainRecord::new("i-0abc", &trigger, None, NOTICED);
    assert_eq!(record.stage, Stage::Draining, "no action to wait for");
    let d = deadlines(
        &record,
        Duration::from_secs(900),
        Duration::from_secs(20),
        NOTICED,
    );
    assert_eq!(d.archive, at - time::Duration::seconds(20));
    assert_eq!(d.steps, at - time::Duration::seconds(20));
    assert_eq!(d.action, None);

    // A spot notice while a termination awaits its action: drain now, against the notice.
    let mut record = scale_in();
    record.interrupted(Some(at), NOTICED + time::Duration::seconds(5));
    assert_eq!(record.stage, Stage::Draining);
    assert_eq!(record.must_end_by, Some(at));
}

#[test]
fn the_record_survives_the_state_file_and_keeps_its_trigger() {
    let mut record = DrainRecord::new(
        "i-0abc",
        &Trigger::Rebalance {
            noticed: Some("2026-11-22T09:59:00Z".into()),
        },
        Some("boot".into()),
        NOTICED,
    );
    record.last_heartbeat_at = Some(NOTICED);
    let text = serde_json::to_string(&record).unwrap();
    let back: DrainRecord = serde_json::from_str(&text).unwrap();
    assert_eq!(back, record);
    assert_eq!(
        back.trigger().notice_key().as_deref(),
        Some("rebalance:2026-11-22T09:59:00Z")
    );
    assert_eq!(back.stage_label(&steps()), "step:stop-app");
}
