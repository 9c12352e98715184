//! A drain's decisions: pure functions over its [`DrainRecord`] with the clock passed in. The
//! driver ([`super::Drain`]) asks [`next`] what to do, does it (I/O lives there), records the
//! outcome with one of the record's transitions, saves, and asks again; so a drain interrupted
//! anywhere resumes from its record, and every rule here is tested case by case without AWS or
//! a clock.

use std::time::Duration;

use lifeguard_common::lifecycle::HookInfo;
use lifeguard_common::message::{CompletionReport, LifecycleResult, ReportPhase};
use time::OffsetDateTime;

pub use super::record::{DrainRecord, HookRecord, Stage, TriggerRecord};

/// Archive attempts before the drain gives up on the archive and completes without it: an
/// agent killed mid-archive each time (out of memory on a huge log tree, say) must not loop
/// until the hook's global timeout.
pub const MAX_ARCHIVE_ATTEMPTS: u32 = 3;
/// The completion is kept this far inside the action's global timeout.
pub const COMPLETION_MARGIN: Duration = Duration::from_secs(15);
/// The steps' deadline when nothing else bounds the drain (no hook, no spot interruption).
pub const UNBOUNDED_DRAIN: Duration = Duration::from_secs(3600);

/// What Auto Scaling's view of the instance says about the action a drain waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionSeen {
    /// The action waits: `Terminating:Wait` (or `Pending:Wait` for a launch).
    Waits,
    /// Not yet: plain `Terminating` while load balancers deregister the instance (or plain
    /// `Pending` while EC2 starts it), or a view that has not caught up with IMDS yet.
    NotYet,
    /// Past it, or never coming: proceeding, terminated, detached, not in a group.
    Over,
}

/// The view of a terminating instance, from `DescribeAutoScalingInstances`' lifecycle state
/// (`None`: not in a group any more).
pub fn terminate_state(state: Option<&str>) -> ActionSeen {
    match state {
        Some("Terminating:Wait") => ActionSeen::Waits,
        // `InService`: IMDS is ahead of the group's own view for a moment.
        Some("Terminating" | "InService") => ActionSeen::NotYet,
        _ => ActionSeen::Over,
    }
}

/// The view of a launching instance (`None`: not listed in a group yet, or not in one).
pub fn launch_state(state: Option<&str>) -> ActionSeen {
    match state {
        Some("Pending:Wait") => ActionSeen::Waits,
        Some("Pending") | None => ActionSeen::NotYet,
        _ => ActionSeen::Over,
    }
}

/// How long to wait before looking at Auto Scaling again, after `waited`: often at first
/// (most actions come within seconds), then every few seconds for the long deregistrations,
/// so a thousand draining instances do not eat the account's Auto Scaling request rate.
pub fn poll_interval(waited: Duration) -> Duration {
    if waited < Duration::from_secs(10) {
        Duration::from_secs(1)
    } else if waited < Duration::from_secs(60) {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(5)
    }
}

/// After a look at Auto Scaling while awaiting the action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwaitDecision {
    /// Look again after this long.
    LookAgainIn(Duration),
    /// The drain begins (the record says with which hook, confirmed or not).
    Begin,
}

/// Takes in one look at the group while the drain awaits its lifecycle action. `hook` is the
/// group's terminate hook (`None`: it has none, so no action will come); `wait_limit` bounds
/// the wait (it must cover the longest deregistration delay, an hour).
pub fn on_action_lookup(
    record: &mut DrainRecord,
    seen: ActionSeen,
    hook: Option<&HookInfo>,
    wait_limit: Duration,
    now: OffsetDateTime,
) -> AwaitDecision {
    if record.stage != Stage::AwaitingAction {
        return AwaitDecision::Begin;
    }
    let Some(hook) = hook else {
        record.hook = None;
        record.begin(now);
        return AwaitDecision::Begin;
    };
    record.hook = Some(HookRecord::from(hook));
    let waited = Duration::try_from(now - record.noticed_at).unwrap_or(Duration::ZERO);
    match seen {
        ActionSeen::Waits => {
            record.action_confirmed = true;
            record.begin(now);
            AwaitDecision::Begin
        }
        ActionSeen::NotYet if waited < wait_limit => {
            AwaitDecision::LookAgainIn(poll_interval(waited).min(wait_limit - waited))
        }
        // Waited as long as any load balancer can hold an instance, or the action is over:
        // drain anyway (the logs matter most); the completion will learn whether an action
        // waits.
        ActionSeen::NotYet | ActionSeen::Over => {
            record.begin(now);
            AwaitDecision::Begin
        }
    }
}

/// What the driver knows besides the record.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The configured steps' names, in order.
    pub steps: &'a [String],
    /// Whether an upload is configured.
    pub archive: bool,
    /// Whether the agent has been asked to stop.
    pub stopping: bool,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Look at Auto Scaling: does the lifecycle action wait yet?
    LookForAction,
    /// Run the configured step with this index.
    RunStep(usize),
    /// Build and upload the archive.
    Archive,
    /// Stop trying to archive: [`MAX_ARCHIVE_ATTEMPTS`] attempts were cut short.
    GiveUpArchive,
    /// Complete the lifecycle action with this result.
    Complete(LifecycleResult),
    /// No call to make; record this as the completion.
    SkipCompletion(CompletionReport),
    /// Send the final report.
    Report(ReportPhase),
    /// Asked to stop with steps left: the record stays for the restarted agent, the action
    /// waits for it (or for the hook's default result).
    Leave,
    /// Nothing left.
    Done,
}

pub(super) fn first_step_left(record: &DrainRecord, steps: &[String]) -> Option<usize> {
    steps
        .iter()
        .position(|name| !record.steps.iter().any(|done| &done.name == name))
}

/// The next thing to do for `record`.
pub fn next(record: &DrainRecord, facts: &Facts<'_>) -> Next {
    match record.stage {
        Stage::Done => return Next::Done,
        Stage::AwaitingAction if facts.stopping => return Next::Leave,
        Stage::AwaitingAction => return Next::LookForAction,
        Stage::Draining => {}
    }
    let step_left = first_step_left(record, facts.steps);
    if let Some(index) = step_left
        && !facts.stopping
    {
        return Next::RunStep(index);
    }
    // Also when asked to stop mid-drain: the instance may be shutting down, and the logs must
    // be safe before it does.
    if facts.archive && record.archive.is_none() && record.archive_error.is_none() {
        return if record.archive_attempts >= MAX_ARCHIVE_ATTEMPTS {
            Next::GiveUpArchive
        } else {
            Next::Archive
        };
    }
    if step_left.is_some() {
        // Completing now would let the instance go with its drain half done.
        return Next::Leave;
    }
    if record.completion.is_none() {
        let trigger = record.trigger();
        return match (&record.hook, trigger.has_lifecycle_action()) {
            (_, false) => Next::SkipCompletion(CompletionReport::NotNeeded),
            (None, true) => Next::SkipCompletion(CompletionReport::NoHook),
            (Some(_), true) => Next::Complete(record.result()),
        };
    }
    Next::Report(record.final_phase())
}

/// The drain's deadlines, as wall-clock times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// The lifecycle action ends (by its global timeout, less a margin) then: completion
    /// attempts stop there.
    pub action: Option<OffsetDateTime>,
    /// The archive must be uploaded by then.
    pub archive: OffsetDateTime,
    /// Steps are stopped then, whatever their own timeouts.
    pub steps: OffsetDateTime,
}

/// The deadlines of `record` at `now`: counted from when the drain began (not from the notice:
/// a long deregistration before the action must not eat the drain's time), bounded by a spot
/// interruption less `spot_margin` and by the action's global timeout. The archive gets at
/// most `upload_timeout` from now.
pub fn deadlines(
    record: &DrainRecord,
    upload_timeout: Duration,
    spot_margin: Duration,
    now: OffsetDateTime,
) -> Deadlines {
    let began = record.drain_started_at.unwrap_or(record.noticed_at);
    let action = record
        .hook
        .as_ref()
        .map(|hook| began + hook.global_timeout() - COMPLETION_MARGIN);
    let spot = record.must_end_by.map(|at| at - spot_margin);
    let mut archive = now + upload_timeout;
    if let Some(action) = action {
        archive = archive.min(action - COMPLETION_MARGIN);
    }
    if let Some(spot) = spot {
        archive = archive.min(spot);
    }
    let steps = spot.or(action).unwrap_or(began + UNBOUNDED_DRAIN);
    Deadlines {
        action,
        archive,
        steps,
    }
}

#[cfg(test)]
mod tests;
