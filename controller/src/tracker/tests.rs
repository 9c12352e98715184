//! The tracker against an in-memory fleet: what several replicas, or a restarted one, do with
//! the same AWS state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lifeguard_common::message::{
    AgentReport, CompletionReport, Format, LifecycleResult, Transition,
};

use super::*;
use crate::marks::{EndedBy, OutcomeMark};
use lifeguard_common::lifecycle::GroupMembership;

use crate::fleet::{AutoScaling, Completion, InstanceState, LifecycleError, MarkedInstance};
use crate::queue::Handler;

const GROUP: &str = "web";
const HOOK: &str = "drain";

/// Auto Scaling and the tags of one group, in memory; records every lifecycle call.
#[derive(Default)]
struct FakeFleet {
    states: Mutex<HashMap<String, String>>,
    tags: Mutex<HashMap<String, HashMap<String, String>>>,
    calls: Mutex<Vec<String>>,
    /// What the group listing shows instead of the states, when set: a listing older than
    /// the states, as Auto Scaling's can be.
    stale_listing: Mutex<Option<Vec<(String, Transition)>>>,
    /// When set, the next marks read takes its answer, then waits here until released: a look
    /// that is still in flight while a message is handled.
    slow_look: Mutex<Option<SlowLook>>,
}

/// A look held between reading and answering.
#[derive(Clone, Default)]
struct SlowLook {
    read: Arc<tokio::sync::Notify>,
    release: Arc<tokio::sync::Notify>,
}

impl FakeFleet {
    fn waiting(ids: &[&str]) -> Arc<Self> {
        let fleet = FakeFleet::default();
        for id in ids {
            fleet
                .states
                .lock()
                .unwrap()
                .insert((*id).to_string(), "Terminating:Wait".into());
        }
        Arc::new(fleet)
    }

    fn calls(&self, what: &str) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.starts_with(what))
            .cloned()
            .collect()
    }

    fn hook() -> HookInfo {
        HookInfo {
            name: HOOK.into(),
            transition: Transition::Terminating,
            heartbeat_timeout: Duration::from_secs(60),
            global_timeout: Duration::from_secs(6000),
            default_result: "ABANDON".into(),
        }
    }
}

impl AutoScaling for FakeFleet {
    async fn membership(&self, id: &str) -> Result<Option<GroupMembership>, LifecycleError> {
        Ok(self
            .states
            .lock()
            .unwrap()
            .get(id)
            .map(|s| GroupMembership {
                asg: GROUP.into(),
                lifecycle_state: s.clone(),
            }))
    }

    async fn hooks(&self, _asg: &str) -> Result<Vec<HookInfo>, LifecycleError> {
        Ok(vec![FakeFleet::hook()])
    }

    async fn heartbeat(&self, _asg: &str, _hook: &str, id: &str) -> Result<bool, LifecycleError> {
        self.calls.lock().unwrap().push(format!("heartbeat {id}"));
        Ok(self.states.lock().unwrap().get(id).map(String::as_str) == Some("Terminating:Wait"))
    }

    async fn complete(
        &self,
        _asg: &str,
        _hook: &str,
        id: &str,
        result: LifecycleResult,
    ) -> Result<Completion, LifecycleError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("complete {id} {}", result.as_str()));
        let mut states = self.states.lock().unwrap();
        match states.get(id).map(String::as_str) {
            Some("Terminating:Wait") => {
                states.insert(id.to_string(), "Terminating:Proceed".into());
                Ok(Completion::Completed)
            }
            Some("Pending:Wait") => {
                states.insert(id.to_string(), "InService".into());
                Ok(Completion::Completed)
            }
            _ => Ok(Completion::NoActiveAction),
        }
    }
}

impl Fleet for FakeFleet {
    type Lifecycle = Self;

    fn lifecycle(&self) -> &Self {
        self
    }
    async fn groups(&self, _tag: &str, _names: &[String]) -> Result<Vec<GroupView>, FleetError> {
        Ok(vec![self.group(GROUP).await?.unwrap()])
    }

    async fn group(&self, name: &str) -> Result<Option<GroupView>, FleetError> {
        let waiting = self
            .stale_listing
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| {
                self.states
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(_, s)| s.as_str() == "Terminating:Wait")
                    .map(|(id, _)| (id.clone(), Transition::Terminating))
                    .collect()
            });
        Ok((name == GROUP).then(|| GroupView {
            name: GROUP.into(),
            tags: HashMap::from([("lifeguard:managed".to_string(), "true".to_string())]),
            hooks: vec![FakeFleet::hook()],
            waiting,
        }))
    }

    async fn states(&self, ids: &[String]) -> Result<HashMap<String, InstanceState>, FleetError> {
        let states = self.states.lock().unwrap();
        Ok(ids
            .iter()
            .filter_map(|id| {
                states.get(id).map(|s| {
                    (
                        id.clone(),
                        InstanceState {
                            asg: GROUP.into(),
                            lifecycle_state: s.clone(),
                        },
                    )
                })
            })
            .collect())
    }

    async fn marks(&self, ids: &[String]) -> Result<HashMap<String, Marks>, FleetError> {
        let answer = {
            let tags = self.tags.lock().unwrap();
            ids.iter()
                .filter_map(|id| tags.get(id).map(|t| (id.clone(), Marks::from_tags(t))))
                .collect()
        };
        let slow = self.slow_look.lock().unwrap().take();
        if let Some(slow) = slow {
            slow.read.notify_one();
            slow.release.notified().await;
        }
        Ok(answer)
    }

    async fn set_marks(&self, id: &str, tags: &[(&'static str, String)]) -> Result<(), FleetError> {
        let mut all = self.tags.lock().unwrap();
        let on = all.entry(id.to_string()).or_default();
        for (key, value) in tags {
            on.insert((*key).to_string(), value.clone());
        }
        Ok(())
    }

    async fn start_archive(
        &self,
        id: &str,
        archive: &crate::fleet::ArchiveCommand,
    ) -> Result<String, FleetError> {
        self.calls.lock().unwrap().push(format!(
            "archive {id} s3://{}/{}/*/{}",
            archive.bucket, archive.directory, archive.name
        ));
        Ok(format!("cmd-{id}"))
    }

    async fn archive_state(
        &self,
        _id: &str,
        _command_id: &str,
    ) -> Result<crate::fleet::ArchiveState, FleetError> {
        Ok(crate::fleet::ArchiveState::Ended {
            succeeded: true,
            status: "Success".into(),
        })
    }

    async fn marked_instances(
        &self,
        _group: Option<&str>,
    ) -> Result<Vec<MarkedInstance>, FleetError> {
        Ok(Vec::new())
    }
}

fn config(defaults: &str) -> Arc<ControllerConfig> {
    let text = format!(
        "[queue]\nurl = \"https://sqs.eu-west-1.amazonaws.com/1/q\"\n[groups.defaults]\n{defaults}\n"
    );
    Arc::new(
        lifeguard_common::config::parse_toml(std::path::Path::new("test.toml"), &text).unwrap(),
    )
}

fn replica(fleet: &Arc<FakeFleet>, name: &str, defaults: &str) -> Arc<Tracker<FakeFleet>> {
    Arc::new(Tracker::new(
        fleet.clone(),
        config(defaults),
        name.into(),
        Arc::new(Metrics::new()),
    ))
}

/// Marks the action on `id` as begun `secs_ago`.
fn began(fleet: &FakeFleet, id: &str, secs_ago: i64) {
    let mark = ActionMark {
        transition: Transition::Terminating,
        began_at: now() - time::Duration::seconds(secs_ago),
        hook: Some(HOOK.into()),
    };
    let (key, value) = marks::action_tag(&mark);
    fleet
        .tags
        .lock()
        .unwrap()
        .entry(id.to_string())
        .or_default()
        .insert(key.to_string(), value);
}

fn report(id: &str, phase: ReportPhase, seq: u64) -> Parsed {
    Parsed {
        format: Format::EventBridge,
        message: Message::AgentReport({
            let mut report = AgentReport::new(phase, id);
            report.asg = Some(GROUP.into());
            report.hook = Some(HOOK.into());
            report.seq = seq;
            report.report_interval_secs = Some(30);
            report
        }),
    }
}

/// A final report whose own completion was denied (the agent's role lacks the permission):
/// its work done with CONTINUE, the action still the controller's to end.
fn completion_denied(id: &str, phase: ReportPhase, seq: u64) -> Parsed {
    let mut parsed = report(id, phase, seq);
    if let Message::AgentReport(report) = &mut parsed.message {
        report.result = Some("CONTINUE".into());
        report.completion = Some(CompletionReport::Failed);
        report.error = Some(format!("CompleteLifecycleAction {id}: AccessDenied"));
    }
    parsed
}

/// A message as SQS delivers what EventBridge sent.
fn received() -> Received {
    Received {
        message_id: "m".into(),
        receipt_handle: "r".into(),
        body: String::new(),
        receive_count: 1,
        sender_id: Some("AIDAEVENTBRIDGE".into()),
        sent_at: Some(now()),
    }
}

/// A message as SQS delivers what an instance sent with its role.
fn sent_by(instance_id: &str) -> Received {
    Received {
        sender_id: Some(format!("AROAAGENTROLE:{instance_id}")),
        ..received()
    }
}

#[tokio::test]
async fn two_replicas_due_at_once_complete_an_action_once() {
    let fleet = FakeFleet::waiting(&["i-1", "i-2"]);
    began(&fleet, "i-1", 600);
    began(&fleet, "i-2", 600);
    let defaults = "agent_grace_secs = 60\nfallback_result = \"CONTINUE\"";
    let a = replica(&fleet, "a", defaults);
    let b = replica(&fleet, "b", defaults);
    a.reconcile().await.unwrap();
    b.reconcile().await.unwrap();
    tokio::join!(a.round(), b.round());
    let completions = fleet.calls("complete");
    assert_eq!(completions.len(), 2, "{completions:?}");
    assert!(completions.contains(&"complete i-1 CONTINUE".to_string()));
    assert!(completions.contains(&"complete i-2 CONTINUE".to_string()));
    let outcome = Marks::from_tags(&fleet.tags.lock().unwrap()["i-1"])
        .outcome
        .unwrap();
    assert_eq!(
        (outcome.result.as_str(), outcome.by),
        ("CONTINUE", EndedBy::Controller)
    );
}

#[tokio::test]
async fn a_report_taken_by_one_replica_holds_back_the_others_fallback() {
    let fleet = FakeFleet::waiting(&["i-1"]);
    began(&fleet, "i-1", 600);
    let defaults = "agent_grace_secs = 60\nreport_silence_secs = 120";
    let a = replica(&fleet, "a", defaults);
    let b = replica(&fleet, "b", defaults);
    // Replica a takes the agent's report; replica b only ever sees AWS.
    a.handle(
        &report("i-1", ReportPhase::DrainStarted, 1),
        &sent_by("i-1"),
    )
    .await;
    b.reconcile().await.unwrap();
    b.round().await;
    assert!(fleet.calls("complete").is_empty(), "{:?}", fleet.calls(""));
    // The agent finishes; neither replica acts.
    a.handle(
        &report("i-1", ReportPhase::DrainFinished, 2),
        &sent_by("i-1"),
    )
    .await;
    b.round().await;
    a.round().await;
    assert!(fleet.calls("complete").is_empty());
    let outcome = Marks::from_tags(&fleet.tags.lock().unwrap()["i-1"])
        .outcome
        .unwrap();
    assert_eq!(outcome.by, EndedBy::Agent);
}

#[tokio::test]
async fn a_restarted_replica_heartbeats_an_action_its_clock_says_expired() {
    // Began 90 s ago with a 60 s heartbeat timeout: only heartbeats this replica no longer
    // remembers kept it waiting. It must heartbeat, not give up or complete early.
    let fleet = FakeFleet::waiting(&["i-1"]);
    began(&fleet, "i-1", 90);
    let tracker = replica(&fleet, "a", "agent_grace_secs = 600");
    tracker.reconcile().await.unwrap();
    tracker.round().await;
    assert_eq!(fleet.calls("heartbeat"), ["heartbeat i-1"]);
    assert!(fleet.calls("complete").is_empty());
    let marked = Marks::from_tags(&fleet.tags.lock().unwrap()["i-1"]);
    assert!(marked.heartbeat.is_some());
    assert_eq!(tracker.health().watching, 1);
}

/// An action on `i-1` begun `secs_ago` that replica `a` watches and Auto Scaling has since
/// ended (someone else completed it); it is due for a look.
async fn ended_behind_a_replicas_back(secs_ago: i64) -> (Arc<FakeFleet>, Arc<Tracker<FakeFleet>>) {
    let fleet = FakeFleet::waiting(&["i-1"]);
    began(&fleet, "i-1", secs_ago);
    let tracker = replica(&fleet, "a", "agent_grace_secs = 600");
    tracker.reconcile().await.unwrap();
    fleet
        .states
        .lock()
        .unwrap()
        .insert("i-1".into(), "Terminating:Proceed".into());
    tracker.make_due(&["i-1".to_string()], now());
    (fleet, tracker)
}

#[tokio::test]
async fn an_action_that_ended_is_settled_and_forgotten() {
    let (fleet, tracker) = ended_behind_a_replicas_back(10).await;
    tracker.round().await;
    assert_eq!(tracker.health().watching, 0);
    assert!(fleet.calls("complete").is_empty());
    let outcome = Marks::from_tags(&fleet.tags.lock().unwrap()["i-1"])
        .outcome
        .unwrap();
    assert_eq!(
        (outcome.result.as_str(), outcome.by),
        ("ENDED", EndedBy::Timeout)
    );
}

#[tokio::test]
async fn a_stale_listing_does_not_revive_an_action_just_completed() {
    // Replica a completes the action; replica b's reconcile lists the group from before that.
    let fleet = FakeFleet::waiting(&["i-1"]);
    began(&fleet, "i-1", 600);
    let a = replica(
        &fleet,
        "a",
        "agent_grace_secs = 60\nfallback_result = \"CONTINUE\"",
    );
    a.reconcile().await.unwrap();
    *fleet.stale_listing.lock().unwrap() = Some(vec![("i-1".into(), Transition::Terminating)]);
    a.round().await;
    assert_eq!(fleet.calls("complete"), ["complete i-1 CONTINUE"]);
    let b = replica(&fleet, "b", "agent_grace_secs = 60");
    b.reconcile().await.unwrap();
    assert_eq!(b.health().watching, 0);
    let marked = Marks::from_tags(&fleet.tags.lock().unwrap()["i-1"]);
    let outcome = marked.outcome.unwrap();
    assert_eq!(
        (outcome.result.as_str(), outcome.by),
        ("CONTINUE", EndedBy::Controller)
    );
    assert!(
        marked.action.unwrap().began_at < outcome.at,
        "no new action mark"
    );
}

#[tokio::test]
async fn a_silent_agents_logs_are_archived_once_before_the_fallback() {
    let fleet = FakeFleet::waiting(&["i-1"]);
    began(&fleet, "i-1", 600);
    let defaults =
        "agent_grace_secs = 60\nfallback_result = \"CONTINUE\"\narchive_bucket = \"fleet-logs\"";
    let a = replica(&fleet, "a", defaults);
    let b = replica(&fleet, "b", defaults);
    a.reconcile().await.unwrap();
    b.reconcile().await.unwrap();
    tokio::join!(a.round(), b.round());
    let archives = fleet.calls("archive");
    assert_eq!(archives.len(), 1, "{archives:?}");
    assert!(
        archives[0].starts_with("archive i-1 s3://fleet-logs/lifeguard/web/i-1/"),
        "{archives:?}"
    );
    assert!(
        fleet.calls("complete").is_empty(),
        "not before the archive ended"
    );
    // The next looks see the archive ended and complete, once.
    a.make_due(&["i-1".to_string()], now());
    b.make_due(&["i-1".to_string()], now());
    tokio::join!(a.round(), b.round());
    assert_eq!(fleet.calls("complete"), ["complete i-1 CONTINUE"]);
    assert_eq!(fleet.calls("archive").len(), 1);
}

#[tokio::test]
async fn a_launch_reported_ready_whose_completion_failed_is_completed_with_continue() {
    let fleet = FakeFleet::waiting(&[]);
    fleet
        .states
        .lock()
        .unwrap()
        .insert("i-1".into(), "Pending:Wait".into());
    let tracker = replica(&fleet, "a", "agent_grace_secs = 60");
    let hook = HookInfo {
        name: "ready".into(),
        transition: Transition::Launching,
        heartbeat_timeout: Duration::from_secs(300),
        global_timeout: Duration::from_secs(30000),
        default_result: "ABANDON".into(),
    };
    let policy = tracker.config.policy_for(GROUP, &HashMap::new()).unwrap();
    tracker.watch_action("i-1", GROUP, &hook, &policy, now(), &Marks::default());
    let ready = completion_denied("i-1", ReportPhase::LaunchReady, 1);
    tracker.handle(&ready, &sent_by("i-1")).await;
    tracker.round().await;
    assert_eq!(fleet.calls("complete"), ["complete i-1 CONTINUE"]);
    assert_eq!(tracker.health().watching, 0);
    // The agent's call did not end it; the controller's did, and the outcome says so.
    let outcome = Marks::from_tags(&fleet.tags.lock().unwrap()["i-1"])
        .outcome
        .unwrap();
    assert_eq!(
        (outcome.result.as_str(), outcome.by),
        ("CONTINUE", EndedBy::Controller)
    );
    assert_eq!(tracker.metrics.fallbacks.get(), 1);
}

#[tokio::test]
async fn a_final_report_taken_while_a_round_looks_is_acted_on_in_the_next_round() {
    // The agent's drain is done but its completion was denied while the supervisor's look at
    // the action was in flight: the round's answer predates the report, and what it decides
    // from it must not push the action's next look past the report.
    let fleet = FakeFleet::waiting(&["i-1"]);
    began(&fleet, "i-1", 10);
    let tracker = replica(
        &fleet,
        "a",
        "agent_grace_secs = 30\nreport_silence_secs = 60\nfallback_result = \"ABANDON\"",
    );
    tracker
        .handle(
            &report("i-1", ReportPhase::DrainStarted, 1),
            &sent_by("i-1"),
        )
        .await;
    let slow = SlowLook::default();
    *fleet.slow_look.lock().unwrap() = Some(slow.clone());
    let round = tokio::spawn({
        let tracker = tracker.clone();
        async move { tracker.round().await }
    });
    slow.read.notified().await;
    let failed = completion_denied("i-1", ReportPhase::DrainFailed, 2);
    tracker.handle(&failed, &sent_by("i-1")).await;
    slow.release.notify_one();
    round.await.unwrap();
    assert!(fleet.calls("complete").is_empty(), "{:?}", fleet.calls(""));
    // The report made the action due; the next round completes it with the agent's result.
    tracker.round().await;
    assert_eq!(fleet.calls("complete"), ["complete i-1 CONTINUE"]);
    assert_eq!(tracker.health().watching, 0);
}

#[tokio::test]
async fn an_outcome_written_while_another_replica_settles_the_action_is_never_overwritten() {
    // Replica b completed the action; replica a's round sees it over, but read the marks
    // before b's outcome was written, and records the action as ended after b's write.
    let (fleet, a) = ended_behind_a_replicas_back(600).await;
    let slow = SlowLook::default();
    *fleet.slow_look.lock().unwrap() = Some(slow.clone());
    let round = tokio::spawn({
        let a = a.clone();
        async move { a.round().await }
    });
    slow.read.notified().await;
    let completed = OutcomeMark {
        result: "CONTINUE".into(),
        by: EndedBy::Controller,
        at: now(),
    };
    fleet
        .set_marks("i-1", &[marks::outcome_tag(&completed)])
        .await
        .unwrap();
    slow.release.notify_one();
    round.await.unwrap();
    assert_eq!(a.health().watching, 0, "settled and forgotten");
    let outcome = Marks::from_tags(&fleet.tags.lock().unwrap()["i-1"])
        .outcome
        .unwrap();
    assert_eq!(
        (outcome.result.as_str(), outcome.by),
        ("CONTINUE", EndedBy::Controller)
    );
}

fn terminate_event(id: &str, time: OffsetDateTime) -> Parsed {
    Parsed {
        format: Format::EventBridge,
        message: Message::LifecycleAction(LifecycleAction {
            transition: Transition::Terminating,
            instance_id: id.into(),
            asg: GROUP.into(),
            hook: HOOK.into(),
            token: "token".into(),
            metadata: None,
            origin: None,
            destination: None,
            account: None,
            time: Some(marks::format_time(time)),
        }),
    }
}

#[tokio::test]
async fn the_grace_counts_from_the_events_time_though_a_reconcile_saw_the_action_first() {
    // Restarted while the action was already waiting: the reconcile sees it first, without a
    // mark, and can only say "now". The event, still on the queue, knows better.
    let fleet = FakeFleet::waiting(&["i-1"]);
    let tracker = replica(&fleet, "a", "agent_grace_secs = 60");
    tracker.reconcile().await.unwrap();
    tracker.round().await;
    assert!(fleet.calls("complete").is_empty(), "grace from first sight");
    tracker
        .handle(
            &terminate_event("i-1", now() - time::Duration::seconds(120)),
            &received(),
        )
        .await;
    let mark = Marks::from_tags(&fleet.tags.lock().unwrap()["i-1"])
        .action
        .unwrap();
    assert!(
        mark.began_at <= now() - time::Duration::seconds(119),
        "{mark:?}"
    );
    tracker.round().await;
    assert_eq!(fleet.calls("complete"), ["complete i-1 ABANDON"]);
    // A later event (a duplicate delivered late) never moves the start forward.
    let fleet = FakeFleet::waiting(&["i-2"]);
    let tracker = replica(&fleet, "a", "agent_grace_secs = 60");
    began(&fleet, "i-2", 30);
    tracker.reconcile().await.unwrap();
    tracker
        .handle(&terminate_event("i-2", now()), &received())
        .await;
    tracker.round().await;
    assert!(fleet.calls("complete").is_empty());
}

#[tokio::test]
async fn actions_due_a_moment_apart_end_in_the_same_round() {
    let fleet = FakeFleet::waiting(&["i-1", "i-2", "i-3"]);
    let tracker = replica(&fleet, "a", "agent_grace_secs = 20");
    // Begun a second apart, as the actions of one scale-in are; the third much later.
    began(&fleet, "i-1", 20);
    began(&fleet, "i-2", 19);
    began(&fleet, "i-3", 5);
    tracker.reconcile().await.unwrap();
    tracker.round().await;
    let mut completed = fleet.calls("complete");
    completed.sort();
    assert_eq!(completed, ["complete i-1 ABANDON", "complete i-2 ABANDON"]);
    assert_eq!(tracker.health().watching, 1);
}

#[tokio::test]
async fn group_names_from_messages_cannot_grow_the_cache_without_bound() {
    let fleet = FakeFleet::waiting(&[]);
    let tracker = replica(&fleet, "a", "");
    for n in 0..(MAX_CACHED_GROUPS + 500) {
        tracker
            .managed_group(&format!("made-up-{n}"))
            .await
            .unwrap();
    }
    assert!(tracker.state().groups.len() <= MAX_CACHED_GROUPS);
}

#[tokio::test]
async fn a_report_about_an_instance_in_service_leaves_no_start_mark() {
    let fleet = FakeFleet::waiting(&[]);
    fleet
        .states
        .lock()
        .unwrap()
        .insert("i-1".into(), "InService".into());
    let tracker = replica(&fleet, "a", "");
    let handled = tracker
        .handle(
            &report("i-1", ReportPhase::DrainStarted, 1),
            &sent_by("i-1"),
        )
        .await;
    assert_eq!(handled, Handled::Done);
    let marks = Marks::from_tags(&fleet.tags.lock().unwrap()["i-1"]);
    assert!(marks.action.is_none(), "{marks:?}");
    assert!(marks.agent.is_some(), "the agent's own mark stays");
    assert_eq!(tracker.health().watching, 0);
}

#[tokio::test]
async fn a_final_report_after_the_instance_is_gone_still_records_the_agents_outcome() {
    let fleet = FakeFleet::waiting(&[]);
    began(&fleet, "i-1", 30);
    let tracker = replica(&fleet, "a", "");
    let mut finished = report("i-1", ReportPhase::DrainFinished, 3);
    if let Message::AgentReport(report) = &mut finished.message {
        report.result = Some("CONTINUE".into());
        report.completion = Some(CompletionReport::Completed);
    }
    tracker.handle(&finished, &sent_by("i-1")).await;
    let outcome = Marks::from_tags(&fleet.tags.lock().unwrap()["i-1"])
        .outcome
        .expect("outcome recorded");
    assert_eq!(outcome.by, EndedBy::Agent);
    assert_eq!(outcome.result, "CONTINUE");
}

#[tokio::test]
async fn a_report_sent_by_another_instance_changes_nothing() {
    let fleet = FakeFleet::waiting(&["i-1"]);
    began(&fleet, "i-1", 30);
    let tracker = replica(&fleet, "a", "");
    let before = fleet.tags.lock().unwrap().clone();
    tracker
        .handle(
            &report("i-1", ReportPhase::DrainFinished, u64::MAX),
            &sent_by("i-2"),
        )
        .await;
    assert_eq!(*fleet.tags.lock().unwrap(), before);
    assert!(
        tracker
            .metrics
            .render()
            .contains("reason=\"other_instance\"")
    );
}
