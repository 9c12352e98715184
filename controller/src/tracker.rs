//! The drain watch of a running controller: which lifecycle actions of the managed groups are
//! open, what is known of each (from events, agents' reports and the marks other replicas left),
//! and when each must be looked at again. Messages and the reconcile loop feed it; the
//! supervisor ([`act`]) carries out the decisions of [`crate::watch::decide`].
//!
//! The map here is a cache of AWS: everything in it can be rebuilt from the groups' waiting
//! instances and the marks on them, which is what a restarted replica does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use lifeguard_common::message::{LifecycleAction, Message, Parsed, ReportPhase, Transition};
use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::config::ControllerConfig;
use crate::fleet::{Fleet, FleetError, GroupView, HookInfo};
use crate::marks::{self, ActionMark, Marks};
use crate::metrics::Metrics;
use crate::queue::{Handled, Handler, Observation, Received};
use crate::watch::{AgentState, GroupPolicy, Takeover, Watch};

pub mod act;
mod reconcile;
mod report;

/// How long what is known of a group (managed or not, its policy, its hooks) is trusted
/// between reconciles, for events of groups the last reconcile did not see.
const GROUP_CACHE: Duration = Duration::from_secs(60);
/// Groups remembered at most; far more than any account's managed groups.
const MAX_CACHED_GROUPS: usize = 4096;

/// A group the controller manages.
#[derive(Debug, Clone)]
pub struct ManagedGroup {
    pub policy: GroupPolicy,
    pub hooks: Vec<HookInfo>,
}

#[derive(Debug, Clone)]
struct CachedGroup {
    /// `None`: the group does not exist or is not managed.
    managed: Option<ManagedGroup>,
    fetched_at: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub watch: Watch,
    pub policy: GroupPolicy,
    /// When to look at it again.
    pub due: OffsetDateTime,
    /// Counts what changed the entry outside the supervisor's round (a report, an earlier
    /// start, a message that made it due): a round that took its copy before such a change
    /// must not put the look it asked for later.
    revision: u64,
}

impl Entry {
    /// Something outside the round changed the action: look at it again by `at`.
    fn poke(&mut self, at: OffsetDateTime) {
        self.due = self.due.min(at);
        self.revision = self.revision.wrapping_add(1);
    }
}

#[derive(Default)]
struct State {
    watches: HashMap<String, Entry>,
    groups: HashMap<String, CachedGroup>,
    last_reconcile: Option<OffsetDateTime>,
    last_poll: Option<OffsetDateTime>,
    failed_task: Option<&'static str>,
}

pub struct Tracker<F> {
    pub(crate) fleet: Arc<F>,
    pub(crate) config: Arc<ControllerConfig>,
    /// This replica's name in takeover marks.
    pub(crate) replica: String,
    pub metrics: Arc<Metrics>,
    state: Mutex<State>,
    /// Woken when an entry becomes due earlier than the supervisor planned.
    pub(crate) wake: Notify,
}

/// Health as `/healthz` reports it.
#[derive(Debug, Clone, Copy)]
pub struct Health {
    pub last_reconcile: Option<OffsetDateTime>,
    pub last_poll: Option<OffsetDateTime>,
    pub watching: usize,
    /// A task of the service that ended while it should have run: the service is going down.
    pub failed_task: Option<&'static str>,
}

pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn std_to_time(duration: Duration) -> time::Duration {
    time::Duration::try_from(duration).unwrap_or(time::Duration::MAX)
}

impl<F: Fleet> Tracker<F> {
    pub fn new(
        fleet: Arc<F>,
        config: Arc<ControllerConfig>,
        replica: String,
        metrics: Arc<Metrics>,
    ) -> Self {
        Tracker {
            fleet,
            config,
            replica,
            metrics,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock would be a bug in a few lines of bookkeeping; the
        // map stays usable, and the next reconcile rebuilds it from AWS anyway.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn health(&self) -> Health {
        let state = self.state();
        Health {
            last_reconcile: state.last_reconcile,
            last_poll: state.last_poll,
            watching: state.watches.len(),
            failed_task: state.failed_task,
        }
    }

    /// Records that `task` ended on its own: health turns red at once.
    pub fn task_failed(&self, task: &'static str) {
        self.state().failed_task.get_or_insert(task);
    }

    /// The managed group `name`, from the cache or from AWS.
    pub async fn managed_group(&self, name: &str) -> Result<Option<ManagedGroup>, FleetError> {
        let at = now();
        if let Some(cached) = self.state().groups.get(name)
            && at - cached.fetched_at < std_to_time(GROUP_CACHE)
        {
            return Ok(cached.managed.clone());
        }
        let view = self.fleet.group(name).await?;
        let managed = view.and_then(|view| self.managed_from(&view));
        let mut state = self.state();
        // Names come from messages: bounded, so no stream of made-up names can grow the map.
        if state.groups.len() >= MAX_CACHED_GROUPS {
            state
                .groups
                .retain(|_, g| at - g.fetched_at < std_to_time(GROUP_CACHE));
        }
        if state.groups.len() < MAX_CACHED_GROUPS {
            state.groups.insert(
                name.to_string(),
                CachedGroup {
                    managed: managed.clone(),
                    fetched_at: at,
                },
            );
        }
        drop(state);
        Ok(managed)
    }

    fn managed_from(&self, view: &GroupView) -> Option<ManagedGroup> {
        if !self.config.manages(&view.name, &view.tags) {
            return None;
        }
        let policy = match self.config.policy_for(&view.name, &view.tags) {
            Ok(policy) => policy,
            Err(problem) => {
                tracing::warn!(asg = %view.name, %problem, "group tag ignored; the configured policy applies");
                self.config
                    .policy_for(&view.name, &HashMap::new())
                    .unwrap_or_else(|_| crate::config::PolicyConfig::default().resolve())
            }
        };
        Some(ManagedGroup {
            policy,
            hooks: view.hooks.clone(),
        })
    }

    /// Starts watching an action the fleet shows waiting, unless it is watched already.
    /// Returns whether it was new.
    pub(crate) fn watch_action(
        &self,
        instance_id: &str,
        asg: &str,
        hook: &HookInfo,
        policy: &GroupPolicy,
        began_at: OffsetDateTime,
        found: &Marks,
    ) -> bool {
        let mut state = self.state();
        if let Some(entry) = state.watches.get(instance_id)
            && entry.watch.transition == hook.transition
        {
            return false;
        }
        let mut watch = Watch {
            instance_id: instance_id.to_string(),
            asg: asg.to_string(),
            hook: hook.name.clone(),
            transition: hook.transition,
            began_at,
            heartbeat_timeout: hook.heartbeat_timeout,
            last_heartbeat_at: None,
            agent: AgentState::Silent,
            takeover: Takeover::None,
        };
        merge_marks(&mut watch, found);
        tracing::info!(instance_id, asg, hook = %hook.name, transition = %hook.transition,
            began_at = %marks::format_time(began_at), "watching lifecycle action");
        state.watches.insert(
            instance_id.to_string(),
            Entry {
                watch,
                policy: policy.clone(),
                due: now(),
                revision: 0,
            },
        );
        self.metrics.drains_active.set(state.watches.len() as i64);
        drop(state);
        self.wake.notify_one();
        true
    }

    pub(crate) fn forget(&self, instance_id: &str) -> Option<Entry> {
        let mut state = self.state();
        let removed = state.watches.remove(instance_id);
        self.metrics.drains_active.set(state.watches.len() as i64);
        removed
    }

    /// The entries due by `at` (at most `limit`), and when the next one after them is due.
    pub(crate) fn due(
        &self,
        at: OffsetDateTime,
        limit: usize,
    ) -> (Vec<Entry>, Option<OffsetDateTime>) {
        let state = self.state();
        let mut due: Vec<Entry> = state
            .watches
            .values()
            .filter(|e| e.due <= at)
            .cloned()
            .collect();
        due.sort_by_key(|e| e.due);
        due.truncate(limit);
        let next = state
            .watches
            .values()
            .filter(|e| e.due > at)
            .map(|e| e.due)
            .min();
        (due, next)
    }

    /// Stores what acting on an entry changed, unless the entry was replaced meanwhile.
    pub(crate) fn update(&self, entry: Entry) {
        let mut state = self.state();
        if let Some(known) = state.watches.get_mut(&entry.watch.instance_id)
            && known.watch.transition == entry.watch.transition
        {
            // Reports taken in meanwhile stay: keep the newer agent state, and the earliest
            // start an event has shown.
            let agent = newer_agent(known.watch.agent, entry.watch.agent);
            let began_at = known.watch.began_at.min(entry.watch.began_at);
            let last_heartbeat_at = known
                .watch
                .last_heartbeat_at
                .max(entry.watch.last_heartbeat_at);
            // Changed since the round took its copy: what the round decided predates the
            // change, so the earlier of the two looks stands.
            let due = if known.revision == entry.revision {
                entry.due
            } else {
                entry.due.min(known.due)
            };
            let revision = known.revision;
            *known = entry;
            known.due = due;
            known.revision = revision;
            known.watch.agent = agent;
            known.watch.began_at = began_at;
            known.watch.last_heartbeat_at = last_heartbeat_at;
        }
    }

    pub(crate) fn is_watched(&self, instance_id: &str, transition: Transition) -> bool {
        self.state()
            .watches
            .get(instance_id)
            .is_some_and(|e| e.watch.transition == transition)
    }

    /// The group of the watched action of `transition` on the instance, if one is watched.
    fn watched_group(&self, instance_id: &str, transition: Transition) -> Option<String> {
        self.state()
            .watches
            .get(instance_id)
            .filter(|e| e.watch.transition == transition)
            .map(|e| e.watch.asg.clone())
    }

    fn began_at(&self, instance_id: &str) -> Option<OffsetDateTime> {
        self.state()
            .watches
            .get(instance_id)
            .map(|e| e.watch.began_at)
    }

    /// The action began earlier than the watch thought: every deadline moves with it.
    fn move_start(&self, instance_id: &str, began_at: OffsetDateTime) {
        let mut state = self.state();
        if let Some(entry) = state.watches.get_mut(instance_id)
            && began_at < entry.watch.began_at
        {
            entry.watch.began_at = began_at;
            entry.poke(now());
        }
        drop(state);
        self.wake.notify_one();
    }

    pub(crate) fn watched_ids(&self) -> Vec<String> {
        self.state().watches.keys().cloned().collect()
    }

    pub(crate) fn make_due(&self, instance_ids: &[String], at: OffsetDateTime) {
        let mut state = self.state();
        for id in instance_ids {
            if let Some(entry) = state.watches.get_mut(id) {
                entry.poke(at);
            }
        }
        drop(state);
        self.wake.notify_one();
    }

    pub(crate) fn cache_groups(&self, groups: HashMap<String, Option<ManagedGroup>>) {
        let at = now();
        let mut state = self.state();
        // A reconcile lists every managed group: what it did not list and has expired goes.
        state.groups.retain(|name, g| {
            groups.contains_key(name) || at - g.fetched_at < std_to_time(GROUP_CACHE)
        });
        for (name, managed) in groups {
            state.groups.insert(
                name,
                CachedGroup {
                    managed,
                    fetched_at: at,
                },
            );
        }
        state.last_reconcile = Some(at);
    }

    async fn on_lifecycle_action(&self, action: &LifecycleAction) -> Handled {
        let id = action.instance_id.as_str();
        let group = match self.managed_group(&action.asg).await {
            Ok(Some(group)) => group,
            Ok(None) => {
                tracing::info!(instance_id = id, asg = %action.asg, "event of a group lifeguard does not manage; deleted");
                return Handled::Done;
            }
            Err(error) => return retry(&error),
        };
        let Some(hook) = group
            .hooks
            .iter()
            .find(|h| h.name == action.hook && h.transition == action.transition)
        else {
            tracing::info!(instance_id = id, asg = %action.asg, hook = %action.hook, "event of a hook the group no longer has; deleted");
            return Handled::Done;
        };
        let event_time = action.time.as_deref().and_then(|t| {
            OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        });
        if self.is_watched(id, action.transition) {
            // A duplicate, or the event of an action first seen by a reconcile (after a restart,
            // say): the event knows when the action really began, and the grace counts from
            // there.
            if let Some(event_time) = event_time
                && let Some(began_at) = self.began_at(id)
                && event_time < began_at
            {
                let mark = ActionMark {
                    transition: action.transition,
                    began_at: event_time,
                    hook: Some(hook.name.clone()),
                };
                if let Err(error) = self.fleet.set_marks(id, &[marks::action_tag(&mark)]).await {
                    return retry(&error);
                }
                self.move_start(id, event_time);
                tracing::info!(instance_id = id, began_at = %marks::format_time(event_time),
                    "lifecycle action began earlier than first seen: its event says so");
            } else {
                tracing::debug!(
                    instance_id = id,
                    "lifecycle action already watched (duplicate delivery)"
                );
            }
            return Handled::Done;
        }
        // The event may be late, repeated, or about an action already over.
        let (state, found) = match self.look(id).await {
            Ok(found) => found,
            Err(error) => return retry(&error),
        };
        // The event's group must be the instance's: a forged event cannot point an instance at
        // another group's hook or policy.
        if !state
            .as_ref()
            .is_some_and(|s| s.waits_for(action.transition) && s.asg == action.asg)
        {
            tracing::info!(instance_id = id, asg = %action.asg, state = ?state.map(|s| s.lifecycle_state),
                "lifecycle action no longer waiting; nothing to do");
            return Handled::Done;
        }
        let began_at = match self
            .ensure_action_mark(id, action.transition, Some(&hook.name), event_time, &found)
            .await
        {
            Ok(began_at) => began_at,
            Err(error) => return retry(&error),
        };
        self.watch_action(id, &action.asg, hook, &group.policy, began_at, &found);
        Handled::Done
    }

    /// The instance's lifecycle state and marks.
    pub(crate) async fn look(
        &self,
        instance_id: &str,
    ) -> Result<(Option<crate::fleet::InstanceState>, Marks), FleetError> {
        let ids = [instance_id.to_string()];
        let mut states = self.fleet.states(&ids).await?;
        let mut found = self.fleet.marks(&ids).await?;
        Ok((
            states.remove(instance_id),
            found.remove(instance_id).unwrap_or_default(),
        ))
    }

    /// When the action began, writing the mark that says so if no replica has yet.
    pub(crate) async fn ensure_action_mark(
        &self,
        instance_id: &str,
        transition: Transition,
        hook: Option<&str>,
        seen_at: Option<OffsetDateTime>,
        found: &Marks,
    ) -> Result<OffsetDateTime, FleetError> {
        // A mark from before the longest an action can last belongs to no action of now, however
        // it came to be written.
        if let Some(mark) = &found.action
            && mark.transition == transition
            && found.outcome.as_ref().is_none_or(|o| o.at < mark.began_at)
            && seen_at.is_none_or(|seen| seen >= mark.began_at)
            && now() - mark.began_at <= std_to_time(crate::watch::MAX_GLOBAL_TIMEOUT)
        {
            return Ok(mark.began_at);
        }
        // No mark, or one written from a later first sight (a reconcile after a restart) than
        // the event's own time: the earliest known start stands.
        let began_at = seen_at.unwrap_or_else(now).min(now());
        let mark = ActionMark {
            transition,
            began_at,
            hook: hook.map(str::to_string),
        };
        self.fleet
            .set_marks(instance_id, &[marks::action_tag(&mark)])
            .await?;
        Ok(began_at)
    }
}

fn newer_agent(a: AgentState, b: AgentState) -> AgentState {
    match (a, b) {
        (AgentState::Finished { .. }, _) => a,
        (_, AgentState::Finished { .. }) => b,
        (
            AgentState::Reporting {
                last_at: at_x,
                seq: x,
                ..
            },
            AgentState::Reporting {
                last_at: at_y,
                seq: y,
                ..
            },
        ) => {
            if (at_x, x) >= (at_y, y) {
                a
            } else {
                b
            }
        }
        (AgentState::Reporting { .. }, AgentState::Silent) => a,
        _ => b,
    }
}

/// Folds what other replicas (or an earlier life of this one) wrote into a watch. Marks older
/// than the action belong to an earlier action of the same instance and are left out.
pub(crate) fn merge_marks(watch: &mut Watch, found: &Marks) {
    let began = watch.began_at;
    if let Some(agent) = found.agent
        && agent.at >= began
        && report_transition(agent.phase) == watch.transition
    {
        let heard = agent.heard();
        let newer = match watch.agent {
            AgentState::Silent => true,
            AgentState::Reporting {
                last_at,
                seq: known,
                ..
            } => (heard.at, heard.seq) > (last_at, known) || heard.phase.is_final(),
            AgentState::Finished { .. } => false,
        };
        if newer {
            watch.on_report(&heard);
        }
    }
    if let Some(heartbeat) = found.heartbeat
        && heartbeat >= began
    {
        watch.on_heartbeat_sent(heartbeat);
    }
    if let Some(archive) = &found.archive
        && archive.at >= began
        && watch.takeover == Takeover::None
    {
        watch.takeover = Takeover::Archiving { since: archive.at };
    }
}

pub(crate) fn report_transition(phase: ReportPhase) -> Transition {
    if phase.is_launch() {
        Transition::Launching
    } else {
        Transition::Terminating
    }
}

pub(crate) fn retry(error: &FleetError) -> Handled {
    tracing::warn!(%error, "message left for a later attempt");
    Handled::Retry {
        reason: error.to_string(),
    }
}

impl<F: Fleet> Tracker<F> {
    /// Whether the message's sender may say what it says (`senders::admit`); a refusal is
    /// logged and counted.
    pub fn admit(&self, parsed: &Parsed, received: &Received) -> bool {
        match crate::senders::admit(
            &self.config.reports,
            &parsed.message,
            received.sender_id.as_deref(),
        ) {
            Ok(()) => true,
            Err(refusal) => {
                tracing::warn!(kind = parsed.message.kind(), sender_id = ?received.sender_id,
                    message_id = %received.message_id, %refusal,
                    "message refused: its sender may not say this; deleted");
                self.metrics.refused(parsed.message.kind(), refusal.reason);
                false
            }
        }
    }
}

impl<F: Fleet> Handler for Tracker<F> {
    async fn handle(&self, parsed: &Parsed, received: &Received) -> Handled {
        if !self.admit(parsed, received) {
            return Handled::Done;
        }
        match &parsed.message {
            Message::LifecycleAction(action) => self.on_lifecycle_action(action).await,
            Message::AgentReport(report) => self.on_report(report, received.sent_at).await,
            Message::Command(command)
                if command.name == lifeguard_common::message::CommandName::Reconcile =>
            {
                match self.reconcile().await {
                    Ok(()) => Handled::Done,
                    Err(error) => retry(&error),
                }
            }
            Message::Command(command) => {
                tracing::warn!(
                    command = command.name.name(),
                    "command not handled by this version; deleted"
                );
                Handled::Done
            }
            other => {
                tracing::debug!(kind = other.kind(), "nothing to do for this message");
                Handled::Done
            }
        }
    }

    fn observe(&self, what: Observation, kind: &str) {
        if matches!(what, Observation::Polled) {
            self.state().last_poll = Some(now());
        }
        self.metrics.observe_queue(what, kind);
    }
}

#[cfg(test)]
mod tests;
