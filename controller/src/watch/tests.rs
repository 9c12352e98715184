use time::macros::datetime;

use super::*;

const T0: OffsetDateTime = datetime!(2026-11-22 10:00:00 UTC);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn at(n: i64) -> OffsetDateTime {
    T0 + time::Duration::seconds(n)
}

fn policy() -> GroupPolicy {
    GroupPolicy {
        fallback_result: LifecycleResult::Abandon,
        launch_fallback_result: LifecycleResult::Continue,
        agent_grace: secs(60),
        report_silence: secs(120),
        heartbeat_while_waiting: true,
        agentless_archive: None,
        agentless_archive_timeout: secs(300),
    }
}

/// A report of an agent that promises one every 30 s.
fn heard(phase: ReportPhase, seq: u64, at: OffsetDateTime) -> Heard {
    Heard {
        phase,
        seq,
        at,
        promise: Some(secs(30)),
        heartbeat_at: None,
        result: None,
        action_done: true,
    }
}

fn terminate(heartbeat_timeout: u64) -> Watch {
    Watch {
        instance_id: "i-0abc".into(),
        asg: "web".into(),
        hook: "drain".into(),
        transition: Transition::Terminating,
        began_at: T0,
        heartbeat_timeout: secs(heartbeat_timeout),
        last_heartbeat_at: None,
        agent: AgentState::Silent,
        takeover: Takeover::None,
    }
}

#[test]
fn a_silent_agent_gets_its_grace_then_the_fallback() {
    let watch = terminate(300);
    assert_eq!(
        decide(&watch, &policy(), at(0)),
        Decision::WaitUntil(at(60))
    );
    assert_eq!(
        decide(&watch, &policy(), at(59)),
        Decision::WaitUntil(at(60))
    );
    assert_eq!(
        decide(&watch, &policy(), at(60)),
        Decision::Complete(LifecycleResult::Abandon)
    );
}

#[test]
fn a_reporting_agent_is_followed_not_overruled() {
    let mut watch = terminate(300);
    watch.on_report(&heard(ReportPhase::DrainStarted, 1, at(5)));
    // Past the first-report grace: the agent is there, nothing to do.
    assert_eq!(
        decide(&watch, &policy(), at(61)),
        Decision::WaitUntil(at(125))
    );
    watch.on_report(&heard(ReportPhase::DrainHeartbeat, 2, at(100)));
    assert_eq!(
        decide(&watch, &policy(), at(200)),
        Decision::WaitUntil(at(220))
    );
    watch.on_report(&heard(ReportPhase::DrainFinished, 3, at(210)));
    assert_eq!(decide(&watch, &policy(), at(400)), Decision::Forget);
}

#[test]
fn silence_is_derived_from_what_the_agent_promises() {
    // An agent promising a report every 10 minutes is dead only after three are missing.
    let mut watch = terminate(3600);
    let mut slow = heard(ReportPhase::DrainStarted, 1, at(5));
    slow.promise = Some(secs(600));
    watch.on_report(&slow);
    assert_eq!(
        decide(&watch, &policy(), at(200)),
        Decision::WaitUntil(at(1805))
    );
    // One promising every 30 s is held to the group's silence (120 s here), never less.
    let mut watch = terminate(3600);
    watch.on_report(&heard(ReportPhase::DrainProgress, 1, at(5)));
    assert_eq!(
        decide(&watch, &policy(), at(100)),
        Decision::WaitUntil(at(125))
    );
    // An agent of the earlier version promises nothing but reports at each lifecycle
    // heartbeat, a third of the heartbeat timeout apart: a one-hour timeout is not taken over
    // after three minutes.
    let mut legacy = heard(ReportPhase::DrainStarted, 1, at(5));
    legacy.promise = None;
    let mut watch = terminate(3600);
    watch.on_report(&legacy);
    assert_eq!(
        watch.silence_limit(&policy(), None),
        secs(3600),
        "three of its heartbeat intervals"
    );
    assert!(matches!(
        decide(&watch, &policy(), at(300)),
        Decision::WaitUntil(_)
    ));
}

#[test]
fn progress_reports_carry_the_agents_heartbeats() {
    let mut watch = terminate(300);
    let mut report = heard(ReportPhase::DrainProgress, 2, at(100));
    report.heartbeat_at = Some(at(90));
    watch.on_report(&report);
    assert_eq!(watch.last_heartbeat_at, Some(at(90)));
    assert_eq!(
        watch.agent,
        AgentState::Reporting {
            last_at: at(100),
            seq: 2,
            promise: Some(secs(30))
        }
    );
    // From the wire: a heartbeat time from the future (a skewed clock) counts as the report's
    // arrival, never later.
    let mut wire =
        lifeguard_common::message::AgentReport::new(ReportPhase::DrainProgress, "i-0abc");
    wire.lifecycle_heartbeat_at = Some("2026-11-22T12:00:00Z".into());
    wire.report_interval_secs = Some(30);
    let from_wire = Heard::from_report(&wire, at(110));
    assert_eq!(from_wire.heartbeat_at, Some(at(110)));
    assert_eq!(from_wire.promise, Some(secs(30)));
}

#[test]
fn a_completion_the_agent_could_not_make_is_made_by_the_controller() {
    let mut watch = terminate(3600);
    watch.on_report(&heard(ReportPhase::DrainStarted, 1, at(5)));
    let mut failed = heard(ReportPhase::DrainFailed, 2, at(40));
    failed.result = Some(LifecycleResult::Continue);
    failed.action_done = false;
    watch.on_report(&failed);
    assert_eq!(
        decide(&watch, &policy(), at(40)),
        Decision::Complete(LifecycleResult::Continue),
        "at once, with the agent's result: the drain was done"
    );
}

#[test]
fn a_finished_drain_still_waiting_is_looked_at_again_then_completed() {
    let mut watch = terminate(3600);
    watch.on_report(&heard(ReportPhase::DrainFinished, 2, at(40)));
    assert_eq!(
        decide(&watch, &policy(), at(41)),
        Decision::WaitUntil(at(50))
    );
    assert_eq!(
        decide(&watch, &policy(), at(50)),
        Decision::Complete(LifecycleResult::Continue)
    );
}

#[test]
fn reports_that_stop_hand_the_action_to_the_controller() {
    let mut watch = terminate(600);
    watch.on_report(&heard(ReportPhase::DrainStarted, 1, at(5)));
    assert_eq!(
        decide(&watch, &policy(), at(125)),
        Decision::Complete(LifecycleResult::Abandon)
    );
}

#[test]
fn duplicate_and_stale_reports_change_nothing() {
    let mut watch = terminate(300);
    watch.on_report(&heard(ReportPhase::DrainStarted, 1, at(5)));
    watch.on_report(&heard(ReportPhase::DrainHeartbeat, 4, at(90)));
    let before = watch.clone();
    watch.on_report(&heard(ReportPhase::DrainStarted, 1, at(5)));
    watch.on_report(&heard(ReportPhase::DrainHeartbeat, 3, at(80)));
    assert_eq!(watch, before);
    // And nothing after the end.
    watch.on_report(&heard(ReportPhase::DrainFinished, 5, at(100)));
    let finished = watch.clone();
    watch.on_report(&heard(ReportPhase::DrainHeartbeat, 6, at(110)));
    assert_eq!(watch, finished);
}

#[test]
fn heartbeats_keep_a_silent_action_alive_while_waiting() {
    // Heartbeat timeout 90 s, grace 200 s: without heartbeats it would expire before the
    // grace ends.
    let mut policy = policy();
    policy.agent_grace = secs(200);
    let mut watch = terminate(90);
    assert_eq!(decide(&watch, &policy, at(0)), Decision::WaitUntil(at(60)));
    assert_eq!(decide(&watch, &policy, at(60)), Decision::Heartbeat);
    watch.on_heartbeat_sent(at(60));
    assert_eq!(watch.expires_at(), at(150));
    assert_eq!(
        decide(&watch, &policy, at(61)),
        Decision::WaitUntil(at(120))
    );
    policy.heartbeat_while_waiting = false;
    assert_eq!(
        decide(&watch, &policy, at(61)),
        Decision::WaitUntil(at(150))
    );
}

#[test]
fn nothing_is_done_after_the_action_expired() {
    let mut policy = policy();
    policy.heartbeat_while_waiting = false;
    policy.agent_grace = secs(600);
    let watch = terminate(60);
    assert_eq!(decide(&watch, &policy, at(60)), Decision::Forget);
}

#[test]
fn no_heartbeat_can_outlast_the_global_timeout() {
    let mut watch = terminate(60);
    assert_eq!(watch.global_deadline(), at(6000));
    watch.on_heartbeat_sent(at(5950));
    assert_eq!(watch.expires_at(), at(6000));
    let mut policy = policy();
    policy.agent_grace = secs(10_000);
    // Due by the usual rule, but useless: no heartbeat, wait for the end.
    assert_eq!(
        decide(&watch, &policy, at(5990)),
        Decision::WaitUntil(at(6000))
    );
    assert_eq!(decide(&watch, &policy, at(6000)), Decision::Forget);
    // 48 hours at most.
    let long = terminate(7200);
    assert_eq!(long.global_deadline(), at(48 * 3600));
}

#[test]
fn the_agentless_archive_comes_before_the_fallback_for_terminations() {
    let mut policy = policy();
    policy.agentless_archive = Some(AgentlessArchive {
        bucket: "logs".into(),
        paths: vec!["/var/log".into()],
    });
    let mut watch = terminate(300);
    assert_eq!(
        decide(&watch, &policy, at(60)),
        Decision::StartAgentlessArchive
    );
    watch.takeover = Takeover::Archiving { since: at(60) };
    assert_eq!(
        decide(&watch, &policy, at(61)),
        Decision::WaitUntil(at(200))
    );
    assert_eq!(decide(&watch, &policy, at(200)), Decision::Heartbeat);
    watch.on_heartbeat_sent(at(200));
    // The archive's time is up (or it ended): complete.
    assert_eq!(
        decide(&watch, &policy, at(360)),
        Decision::Complete(LifecycleResult::Abandon)
    );
    watch.takeover = Takeover::Archived;
    assert_eq!(
        decide(&watch, &policy, at(210)),
        Decision::Complete(LifecycleResult::Abandon)
    );
    watch.takeover = Takeover::Completed {
        result: LifecycleResult::Abandon,
    };
    assert_eq!(decide(&watch, &policy, at(211)), Decision::Forget);
}

#[test]
fn launches_fall_back_to_their_own_result_without_an_archive() {
    let mut policy = policy();
    policy.agentless_archive = Some(AgentlessArchive {
        bucket: "logs".into(),
        paths: vec!["/var/log".into()],
    });
    let mut watch = terminate(300);
    watch.transition = Transition::Launching;
    // No heartbeats for a launch, and no fallback before its deadline (300 s, less 50 s).
    assert_eq!(
        decide(&watch, &policy, at(60)),
        Decision::WaitUntil(at(250))
    );
    assert_eq!(
        decide(&watch, &policy, at(250)),
        Decision::Complete(LifecycleResult::Continue)
    );
    // Reported ready but still waiting: its completion is carried through.
    watch.on_report(&heard(ReportPhase::LaunchReady, 1, at(30)));
    assert_eq!(
        decide(&watch, &policy, at(60)),
        Decision::Complete(LifecycleResult::Continue)
    );
    // A failed launch still waiting is not let in by the group's launch fallback.
    let mut failed = terminate(300);
    failed.transition = Transition::Launching;
    failed.on_report(&heard(ReportPhase::LaunchFailed, 1, at(30)));
    assert_eq!(
        decide(&failed, &policy, at(60)),
        Decision::Complete(LifecycleResult::Abandon)
    );
    // An agent that was checking and went silent: fallback after its silence, not at the
    // hook's deadline.
    let mut quiet = terminate(3600);
    quiet.transition = Transition::Launching;
    quiet.on_report(&heard(ReportPhase::LaunchProgress, 1, at(10)));
    assert_eq!(
        decide(&quiet, &policy, at(20)),
        Decision::WaitUntil(at(130))
    );
    assert_eq!(
        decide(&quiet, &policy, at(130)),
        Decision::Complete(LifecycleResult::Continue)
    );
}

#[test]
fn an_action_still_waiting_past_its_known_expiry_gets_a_heartbeat_not_given_up() {
    // A restarted controller knows when the action began but not of the heartbeats sent
    // before its restart; Auto Scaling still shows the action waiting.
    let mut watch = terminate(30);
    assert_eq!(decide(&watch, &policy(), at(45)), Decision::Forget);
    watch.seen_waiting(at(45));
    assert_eq!(decide(&watch, &policy(), at(45)), Decision::Heartbeat);
    watch.on_heartbeat_sent(at(45));
    assert_eq!(
        decide(&watch, &policy(), at(46)),
        Decision::WaitUntil(at(60))
    );
}

#[test]
fn an_agent_late_with_its_heartbeat_gets_one_from_the_controller_until_the_takeover() {
    let mut watch = terminate(30);
    watch.on_report(&heard(ReportPhase::DrainStarted, 1, at(1)));
    watch.on_report(&heard(ReportPhase::DrainHeartbeat, 2, at(10)));
    // The agent's heartbeat at 10 s makes the next one due at 30 s; the agent is quiet.
    assert_eq!(
        decide(&watch, &policy(), at(11)),
        Decision::WaitUntil(at(30))
    );
    assert_eq!(decide(&watch, &policy(), at(30)), Decision::Heartbeat);
    watch.on_heartbeat_sent(at(30));
    // Silence runs out at 130 s (120 s after the last report); heartbeats until then.
    assert_eq!(
        decide(&watch, &policy(), at(31)),
        Decision::WaitUntil(at(50))
    );
}

#[test]
fn no_duration_from_a_policy_a_hook_or_a_report_can_make_a_decision_panic() {
    let mut huge = policy();
    huge.agent_grace = Duration::MAX;
    huge.report_silence = Duration::MAX;
    huge.agentless_archive_timeout = Duration::MAX;
    let mut watch = terminate(u64::MAX);
    assert!(matches!(
        decide(&watch, &huge, at(0)),
        Decision::WaitUntil(_) | Decision::Heartbeat
    ));
    watch.agent = AgentState::Reporting {
        last_at: at(0),
        seq: 1,
        promise: Some(Duration::MAX),
    };
    decide(&watch, &huge, at(10));
    watch.seen_waiting(at(20));
    let report = AgentReport {
        report_interval_secs: Some(u64::MAX),
        ..AgentReport::new(ReportPhase::DrainHeartbeat, "i-0abc")
    };
    assert_eq!(
        Heard::from_report(&report, at(0)).promise,
        Some(secs(MAX_PROMISE_SECS))
    );
}
