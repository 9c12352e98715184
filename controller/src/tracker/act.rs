//! The supervisor: looks at each due action against AWS (its lifecycle state and marks, in
//! batches), decides, and acts. Acting is guarded so several replicas produce one outcome:
//! nothing is done to an action Auto Scaling no longer shows waiting; heartbeats are marked so
//! others skip theirs; and a fallback completion is claimed with a mark, read back after a
//! pause, and carried out only by the replica whose claim stands.

use std::sync::Arc;
use std::time::Duration;

use lifeguard_common::message::LifecycleResult;
use time::OffsetDateTime;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Entry, Tracker, merge_marks, now, std_to_time};
use crate::fleet::{ArchiveCommand, ArchiveState, AutoScaling, Completion, Fleet};
use crate::marks::{self, EndedBy, Marks, OutcomeMark};
use crate::watch::{AgentState, Decision, Takeover, decide};

/// How long a replica's takeover claim keeps the others off.
const CLAIM_HOLD: Duration = Duration::from_secs(120);
/// Between writing a claim and reading it back: longer than a tag takes to be seen by every
/// reader, so of two replicas claiming at once both read the same (last) claim.
const CLAIM_SETTLE: Duration = Duration::from_millis(1500);
/// Actions looked at per round; the rest wait for the next. Large rounds share one claim pause
/// and batch their looks: at 500 actions at once, rounds of 100 finished 35% later than one.
const ROUND: usize = 500;
/// Lifecycle calls in flight at once.
const PARALLEL: usize = 16;
/// Retry delay after a failed look or call.
const RETRY_AFTER: Duration = Duration::from_secs(3);
/// How often a running agentless archive is looked at.
const ARCHIVE_POLL: Duration = Duration::from_secs(5);
/// After a wake-up (a message made an action due), how long the supervisor waits for the
/// messages handled alongside it: the events of one scale-in arrive together and are acted on
/// in one round.
const GATHER: Duration = Duration::from_millis(250);

/// What a replica takes an action over for.
#[derive(Debug, Clone, Copy)]
enum Step {
    Archive,
    Complete(LifecycleResult),
}

impl<F: Fleet> Tracker<F> {
    /// Acts on due actions until `shutdown`.
    pub async fn supervise(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let next = self.round().await;
            let pause = next
                .map(|next| {
                    let left = next - now();
                    Duration::try_from(left).unwrap_or(Duration::ZERO)
                })
                .unwrap_or(Duration::from_secs(5))
                .min(Duration::from_secs(5));
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.notified() => tokio::time::sleep(GATHER).await,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// One round over the due actions; when the next one is due.
    pub async fn round(self: &Arc<Self>) -> Option<OffsetDateTime> {
        let at = now();
        // Actions due within the claim's pause join this round if they are due for a takeover:
        // their completion comes after the pause, when they are due, instead of a round later.
        // Actions of one scale-in, due a moment apart, so end together rather than in
        // stragglers.
        let horizon = at + std_to_time(CLAIM_SETTLE);
        let (due, next) = self.due(horizon, ROUND);
        if due.is_empty() {
            return next;
        }
        let ids: Vec<String> = due.iter().map(|e| e.watch.instance_id.clone()).collect();
        let looked = async {
            let states = self.fleet.states(&ids).await?;
            let found = self.fleet.marks(&ids).await?;
            Ok::<_, crate::fleet::FleetError>((states, found))
        }
        .await;
        let (states, found) = match looked {
            Ok(looked) => looked,
            Err(error) => {
                tracing::warn!(%error, actions = ids.len(), "could not look at due actions; trying again shortly");
                self.metrics
                    .api_error(error.operation, error.code.as_deref());
                for mut entry in due {
                    entry.due = at + std_to_time(RETRY_AFTER);
                    self.update(entry);
                }
                return Some(at + std_to_time(RETRY_AFTER));
            }
        };

        let mut heartbeats = Vec::new();
        let mut takeovers = Vec::new();
        for mut entry in due {
            let id = entry.watch.instance_id.clone();
            let marks = found.get(&id).cloned().unwrap_or_default();
            let waiting = states
                .get(&id)
                .is_some_and(|s| s.waits_for(entry.watch.transition));
            if !waiting {
                self.settle_ended(entry, &marks).await;
                continue;
            }
            merge_marks(&mut entry.watch, &marks);
            entry.watch.seen_waiting(at);
            if let (Takeover::Archiving { .. }, Some(archive)) =
                (entry.watch.takeover, &marks.archive)
            {
                self.follow_archive(&mut entry, &archive.command_id).await;
            }
            let mut decision = decide(&entry.watch, &entry.policy, at);
            if let Decision::WaitUntil(when) = decision
                && when <= horizon
                && let Decision::Complete(result) = decide(&entry.watch, &entry.policy, when)
            {
                // Due for a takeover before the claim's pause is over: claimed now, completed
                // after the pause, when it is due.
                decision = Decision::Complete(result);
            }
            tracing::debug!(instance_id = %id, ?decision, agent = ?entry.watch.agent,
                last_heartbeat_at = ?entry.watch.last_heartbeat_at, "decided");
            match decision {
                Decision::WaitUntil(when) => {
                    entry.due = match entry.watch.takeover {
                        Takeover::Archiving { .. } => when.min(at + std_to_time(ARCHIVE_POLL)),
                        _ => when,
                    };
                    self.update(entry);
                }
                Decision::Forget => {
                    tracing::debug!(instance_id = %id, "nothing more to do for this action");
                    self.forget(&id);
                }
                Decision::Heartbeat => heartbeats.push(entry),
                Decision::Complete(result) => {
                    takeovers.push((entry, Step::Complete(result), marks))
                }
                Decision::StartAgentlessArchive => takeovers.push((entry, Step::Archive, marks)),
            }
        }
        self.send_heartbeats(heartbeats).await;
        self.take_over(takeovers).await;
        self.due(now(), 0).1
    }

    async fn send_heartbeats(self: &Arc<Self>, entries: Vec<Entry>) {
        self.for_each(entries, |this, mut entry| async move {
            let w = &entry.watch;
            let sent = this.fleet.lifecycle().heartbeat(&w.asg, &w.hook, &w.instance_id).await;
            let at = now();
            match sent {
                Ok(true) => {
                    tracing::info!(instance_id = %w.instance_id, asg = %w.asg, "heartbeat sent on the agent's behalf");
                    this.metrics.heartbeats.inc();
                    if let Err(error) = this
                        .fleet
                        .set_marks(&w.instance_id, &[marks::heartbeat_tag(at)])
                        .await
                    {
                        // Others may send one more heartbeat than needed; nothing worse.
                        tracing::warn!(%error, "heartbeat not marked");
                    }
                    entry.watch.on_heartbeat_sent(at);
                    entry.due = at;
                    this.update(entry);
                }
                Ok(false) => {
                    // The action ended meanwhile; the next look settles it.
                    entry.due = at;
                    this.update(entry);
                }
                Err(error) => {
                    tracing::warn!(%error, "heartbeat failed; trying again shortly");
                    this.metrics
                        .api_error("RecordLifecycleActionHeartbeat", error.code());
                    entry.due = at + std_to_time(RETRY_AFTER);
                    this.update(entry);
                }
            }
            Some(())
        })
        .await;
    }

    /// Claims, confirms the claims, and completes the actions whose claims stand.
    async fn take_over(self: &Arc<Self>, candidates: Vec<(Entry, Step, Marks)>) {
        if candidates.is_empty() {
            return;
        }
        let at = now();
        let mut claimed = Vec::new();
        for (mut entry, result, found) in candidates {
            if let Some(claim) = &found.takeover
                && claim.replica != self.replica
                && claim.at >= entry.watch.began_at
                && at - claim.at < std_to_time(CLAIM_HOLD)
            {
                tracing::debug!(instance_id = %entry.watch.instance_id, by = %claim.replica,
                    "another replica has taken this action over");
                entry.due = claim.at + std_to_time(CLAIM_HOLD);
                self.update(entry);
                continue;
            }
            claimed.push((entry, result));
        }
        let marked = self
            .for_each(claimed, |this, (mut entry, result)| async move {
                let id = entry.watch.instance_id.clone();
                match this
                    .fleet
                    .set_marks(&id, &[marks::takeover_tag(&this.replica, now())])
                    .await
                {
                    Ok(()) => Some((entry, result)),
                    Err(error) => {
                        tracing::warn!(%error, "takeover not claimed; trying again shortly");
                        entry.due = now() + std_to_time(RETRY_AFTER);
                        this.update(entry);
                        None
                    }
                }
            })
            .await;
        if marked.is_empty() {
            return;
        }
        tracing::info!(
            claimed = marked.len(),
            "takeovers claimed; confirming after the pause"
        );
        tokio::time::sleep(CLAIM_SETTLE).await;
        let ids: Vec<String> = marked
            .iter()
            .map(|(e, _)| e.watch.instance_id.clone())
            .collect();
        let confirmed = match self.fleet.marks(&ids).await {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(%error, "takeover claims not read back; trying again shortly");
                for (mut entry, _) in marked {
                    entry.due = now() + std_to_time(RETRY_AFTER);
                    self.update(entry);
                }
                return;
            }
        };
        let ours: Vec<(Entry, Step)> = marked
            .into_iter()
            .filter_map(|(mut entry, result)| {
                let claim = confirmed
                    .get(&entry.watch.instance_id)
                    .and_then(|m| m.takeover.clone());
                if claim.as_ref().is_some_and(|c| c.replica == self.replica) {
                    Some((entry, result))
                } else {
                    tracing::info!(instance_id = %entry.watch.instance_id,
                        by = ?claim.map(|c| c.replica), "another replica's claim stands; leaving the action to it");
                    entry.due = now() + std_to_time(CLAIM_HOLD);
                    self.update(entry);
                    None
                }
            })
            .collect();
        self.for_each(ours, |this, (entry, step)| async move {
            match step {
                Step::Complete(result) => this.complete(entry, result).await,
                Step::Archive => this.start_archive(entry).await,
            }
            Some(())
        })
        .await;
    }

    /// Sends the agentless archive; the action is completed once it ends or runs out of time.
    async fn start_archive(self: &Arc<Self>, mut entry: Entry) {
        let Some(archive) = entry.policy.agentless_archive.clone() else {
            return;
        };
        let at = now();
        let w = &entry.watch;
        let group: String = w
            .asg
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let stamp = marks::format_time(at).replace([':', '-'], "");
        let command = ArchiveCommand {
            bucket: archive.bucket,
            directory: format!("lifeguard/{group}/{}", w.instance_id),
            name: format!("{stamp}-agentless.tar.gz"),
            paths: archive.paths,
            timeout: entry.policy.agentless_archive_timeout,
        };
        match self.fleet.start_archive(&w.instance_id, &command).await {
            Ok(command_id) => {
                tracing::warn!(instance_id = %w.instance_id, asg = %w.asg, %command_id,
                    bucket = %command.bucket, directory = %command.directory, name = %command.name,
                    "no agent: archiving the logs through SSM Run Command before the fallback");
                if let Err(error) = self
                    .fleet
                    .set_marks(&w.instance_id, &[marks::archive_tag(&command_id, at)])
                    .await
                {
                    tracing::warn!(%error, "agentless archive not marked");
                }
                entry.watch.takeover = Takeover::Archiving { since: at };
                entry.due = at + std_to_time(ARCHIVE_POLL);
            }
            Err(error) => {
                tracing::warn!(%error, "agentless archive not started; trying again shortly");
                self.metrics
                    .api_error(error.operation, error.code.as_deref());
                entry.due = at + std_to_time(RETRY_AFTER);
            }
        }
        self.update(entry);
    }

    /// Looks at a running agentless archive; marks the takeover archived once it ended.
    async fn follow_archive(&self, entry: &mut Entry, command_id: &str) {
        let id = entry.watch.instance_id.clone();
        match self.fleet.archive_state(&id, command_id).await {
            Ok(ArchiveState::Running) => {}
            Ok(ArchiveState::Ended { succeeded, status }) => {
                if succeeded {
                    tracing::info!(instance_id = %id, %command_id, "agentless archive done");
                } else {
                    tracing::warn!(instance_id = %id, %command_id, %status,
                        "agentless archive ended without success; completing anyway");
                }
                entry.watch.takeover = Takeover::Archived;
            }
            Err(error) => {
                tracing::warn!(%error, "agentless archive not looked at; its timeout still applies");
            }
        }
    }

    async fn complete(self: &Arc<Self>, mut entry: Entry, result: LifecycleResult) {
        let w = &entry.watch;
        let why = match w.agent {
            AgentState::Silent => "no report from the agent",
            AgentState::Reporting { .. } => "the agent's reports stopped",
            AgentState::Finished {
                action_done: false, ..
            } => "the agent's own completion failed",
            AgentState::Finished { .. } => {
                "the agent said it was over but Auto Scaling still shows it waiting"
            }
        };
        // Completing after an agent that says its own completion went through only carries
        // that through: not a fallback.
        let fallback = !matches!(
            w.agent,
            AgentState::Finished {
                action_done: true,
                ..
            }
        );
        match self
            .fleet
            .lifecycle()
            .complete(&w.asg, &w.hook, &w.instance_id, result)
            .await
        {
            Ok(Completion::Completed) => {
                let at = now();
                tracing::warn!(instance_id = %w.instance_id, asg = %w.asg, hook = %w.hook,
                    result = result.as_str(), reason = why, "lifecycle action completed by the controller");
                let outcome = OutcomeMark {
                    result: result.as_str().to_string(),
                    by: EndedBy::Controller,
                    at,
                };
                // Counted when it happened; the mark may wait a moment to be written with others.
                if fallback {
                    self.metrics.fallbacks.inc();
                }
                self.metrics.record_outcome(&outcome, Some(at - w.began_at));
                // Whoever's call ended the action is who the outcome names.
                if let Err(error) = self
                    .fleet
                    .set_marks(&w.instance_id, &[marks::outcome_tag(&outcome)])
                    .await
                {
                    tracing::warn!(%error, "outcome not marked");
                }
                entry.watch.takeover = Takeover::Completed { result };
                self.forget(&entry.watch.instance_id);
            }
            Ok(Completion::NoActiveAction) => {
                tracing::info!(instance_id = %w.instance_id, "action ended before the controller's completion");
                self.forget(&entry.watch.instance_id);
            }
            Err(error) => {
                tracing::warn!(%error, "completion failed; trying again shortly");
                self.metrics
                    .api_error("CompleteLifecycleAction", error.code());
                entry.due = now() + std_to_time(RETRY_AFTER);
                self.update(entry);
            }
        }
    }

    /// The action is no longer waiting: record how it ended if nobody has.
    async fn settle_ended(&self, entry: Entry, found: &Marks) {
        let w = &entry.watch;
        let recorded = found.outcome.as_ref().is_some_and(|o| o.at >= w.began_at);
        let agent_may_still_say = matches!(w.agent, AgentState::Reporting { .. });
        if !recorded && !agent_may_still_say {
            let outcome = OutcomeMark {
                result: "ENDED".into(),
                by: EndedBy::Timeout,
                at: now(),
            };
            // The instance may already be gone; its outcome is then simply not shown. Its own
            // key: an outcome another replica writes meanwhile is never overwritten.
            if self
                .fleet
                .set_marks(&w.instance_id, &[marks::ended_tag(outcome.at)])
                .await
                .is_ok()
            {
                self.metrics
                    .record_outcome(&outcome, Some(outcome.at - w.began_at));
            }
        }
        tracing::info!(instance_id = %w.instance_id, asg = %w.asg, "lifecycle action over; no longer watched");
        self.forget(&w.instance_id);
    }

    /// Runs `work` on each item, at most [`PARALLEL`] at once; the `Some` results.
    async fn for_each<T, R, Fut>(
        self: &Arc<Self>,
        items: Vec<T>,
        work: impl Fn(Arc<Self>, T) -> Fut,
    ) -> Vec<R>
    where
        T: Send + 'static,
        R: Send + 'static,
        Fut: std::future::Future<Output = Option<R>> + Send + 'static,
    {
        let limit = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
        let mut calls = JoinSet::new();
        for item in items {
            let task = work(self.clone(), item);
            let limit = limit.clone();
            calls.spawn(async move {
                let _permit = limit.acquire().await;
                task.await
            });
        }
        let mut out = Vec::new();
        while let Some(done) = calls.join_next().await {
            if let Ok(Some(result)) = done {
                out.push(result);
            }
        }
        out
    }
}
