//! What the IMDS notices mean: a pure function from one poll's observations to a decision.
//! I/O (polling IMDS) lives in `run.rs`; this module only decides, with the clock passed in.

use lifeguard_common::message::SpotAction;
use lifeguard_common::message::imds::{MaintenanceEvent, TargetLifecycleState};
use time::OffsetDateTime;

/// Why the instance drains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// The group is terminating the instance (scale-in, refresh, health): a terminate hook
    /// may hold it in `Terminating:Wait`.
    Terminate,
    /// The group is moving the instance back into its warm pool: drain, but it comes back.
    WarmPool,
    /// EC2 will interrupt the spot instance at `at`.
    Spot {
        action: SpotAction,
        at: Option<OffsetDateTime>,
    },
    /// EC2 recommends replacing the spot instance; `noticed` is the notice's `noticeTime`.
    Rebalance { noticed: Option<String> },
    /// Scheduled maintenance will stop or retire the instance.
    Maintenance {
        code: String,
        not_before: Option<OffsetDateTime>,
        event_id: String,
    },
    /// An operator asked for the logs now (`lifeguard-agent archive --upload`).
    Manual,
}

impl Trigger {
    /// The reason as reports, keys and the drain steps' environment spell it.
    pub fn reason(&self) -> &'static str {
        match self {
            Trigger::Terminate => "scale_in",
            Trigger::WarmPool => "warm_pool",
            Trigger::Spot { .. } => "spot_interruption",
            Trigger::Rebalance { .. } => "rebalance",
            Trigger::Maintenance { .. } => "maintenance",
            Trigger::Manual => "manual",
        }
    }

    /// Whether a lifecycle action may hold the instance and must be completed.
    pub fn has_lifecycle_action(&self) -> bool {
        matches!(self, Trigger::Terminate | Trigger::WarmPool)
    }

    /// Whether the instance is gone for good once drained.
    pub fn ends_instance(&self) -> bool {
        match self {
            Trigger::Terminate | Trigger::Maintenance { .. } => true,
            Trigger::Spot { action, .. } => {
                !matches!(action, SpotAction::Stop | SpotAction::Hibernate)
            }
            Trigger::WarmPool | Trigger::Rebalance { .. } | Trigger::Manual => false,
        }
    }

    /// What identifies the notice behind this trigger, for notices that stay readable in IMDS
    /// after the drain (a rebalance recommendation, a spot stop, a maintenance event): one drain
    /// per notice. `None` for triggers that are transitions, not standing notices.
    pub fn notice_key(&self) -> Option<String> {
        let time = |at: &Option<OffsetDateTime>| {
            at.and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| "unknown".to_string())
        };
        match self {
            Trigger::Spot { action, at } => Some(format!("spot:{}:{}", action.as_str(), time(at))),
            Trigger::Rebalance { noticed } => Some(format!(
                "rebalance:{}",
                noticed.as_deref().unwrap_or("unknown")
            )),
            Trigger::Maintenance {
                code,
                not_before,
                event_id,
            } => Some(if event_id.is_empty() {
                format!("maintenance:{code}:{}", time(not_before))
            } else {
                format!("maintenance:{event_id}")
            }),
            Trigger::Terminate | Trigger::WarmPool | Trigger::Manual => None,
        }
    }
}

/// One poll of IMDS. A field is `None` when it could not be read this time (error logged by
/// the caller): an unreadable answer is never taken as a notice.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    pub target_state: Option<Option<TargetLifecycleState>>,
    pub spot: Option<Option<(SpotAction, Option<OffsetDateTime>)>>,
    /// `Some(Some(noticeTime))` while a rebalance recommendation is readable.
    pub rebalance: Option<Option<String>>,
    pub maintenance: Option<Vec<MaintenanceEvent>>,
}

/// What the watcher remembers between polls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchState {
    /// Seen `InService` since start: a later `Warmed:*` is a return to the warm pool, whereas
    /// `Warmed:*` from the start is an instance launched into the pool.
    pub seen_in_service: bool,
    /// [`Trigger::notice_key`]s of the notices already drained for (kept in the state file, so
    /// a restart does not drain again for a notice that is still readable).
    pub handled: Vec<String>,
}

impl WatchState {
    fn is_handled(&self, trigger: &Trigger) -> bool {
        trigger
            .notice_key()
            .is_some_and(|key| self.handled.contains(&key))
    }
}

/// What the operator asked to react to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchPolicy {
    pub drain_on_rebalance: bool,
    pub drain_on_maintenance: bool,
    /// How long before a maintenance event's `NotBefore` the drain starts.
    pub maintenance_lead_secs: i64,
}

/// Maintenance codes that take the instance away; reboots bring it back and need no drain.
const DRAINING_MAINTENANCE: [&str; 2] = ["instance-stop", "instance-retirement"];

/// The most urgent trigger in this observation that has not been drained for yet, if any. Spot
/// interruptions come first (two minutes of warning), then terminations, then maintenance,
/// then rebalance.
pub fn decide(
    state: &mut WatchState,
    observation: &Observation,
    policy: &WatchPolicy,
    now: OffsetDateTime,
) -> Option<Trigger> {
    if let Some(Some((action, at))) = &observation.spot {
        let trigger = Trigger::Spot {
            action: action.clone(),
            at: *at,
        };
        if !state.is_handled(&trigger) {
            return Some(trigger);
        }
    }
    match &observation.target_state {
        Some(Some(TargetLifecycleState::Terminated)) => return Some(Trigger::Terminate),
        Some(Some(TargetLifecycleState::Warmed(_))) if state.seen_in_service => {
            state.seen_in_service = false;
            return Some(Trigger::WarmPool);
        }
        Some(Some(TargetLifecycleState::InService)) => state.seen_in_service = true,
        _ => {}
    }
    if policy.drain_on_maintenance
        && let Some(events) = &observation.maintenance
        && let Some(trigger) = due_maintenance(events, policy.maintenance_lead_secs, now)
        && !state.is_handled(&trigger)
    {
        return Some(trigger);
    }
    if policy.drain_on_rebalance
        && let Some(Some(noticed)) = &observation.rebalance
    {
        let trigger = Trigger::Rebalance {
            noticed: Some(noticed.clone()),
        };
        if !state.is_handled(&trigger) {
            return Some(trigger);
        }
    }
    None
}

fn due_maintenance(
    events: &[MaintenanceEvent],
    lead_secs: i64,
    now: OffsetDateTime,
) -> Option<Trigger> {
    events
        .iter()
        .filter(|event| DRAINING_MAINTENANCE.contains(&event.code.as_str()))
        .filter(|event| event.state.is_empty() || event.state == "active")
        .find_map(|event| {
            let not_before = parse_maintenance_time(&event.not_before);
            // An unreadable time is taken as "now": the instance is going away, draining early
            // loses less than not draining.
            let due = not_before.is_none_or(|t| (t - now).whole_seconds() <= lead_secs);
            due.then(|| Trigger::Maintenance {
                code: event.code.clone(),
                not_before,
                event_id: event.event_id.clone(),
            })
        })
}

/// IMDS writes maintenance times as `21 Jan 2026 09:00:43 GMT`.
pub fn parse_maintenance_time(text: &str) -> Option<OffsetDateTime> {
    let format = time::macros::format_description!(
        "[day padding:none] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::PrimitiveDateTime::parse(text.trim(), format)
        .ok()
        .map(|t| t.assume_utc())
}

/// Spot and rebalance notices use RFC 3339.
pub fn parse_rfc3339(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-22 10:00:00 UTC);

    fn policy() -> WatchPolicy {
        WatchPolicy {
            drain_on_rebalance: false,
            drain_on_maintenance: true,
            maintenance_lead_secs: 600,
        }
    }

    fn state(target: TargetLifecycleState) -> Observation {
        Observation {
            target_state: Some(Some(target)),
            spot: Some(None),
            rebalance: Some(None),
            maintenance: Some(vec![]),
        }
    }

    #[test]
    fn in_service_is_quiet_and_terminated_triggers() {
        let mut s = WatchState::default();
        assert_eq!(
            decide(
                &mut s,
                &state(TargetLifecycleState::InService),
                &policy(),
                NOW
            ),
            None
        );
        assert!(s.seen_in_service);
        assert_eq!(
            decide(
                &mut s,
                &state(TargetLifecycleState::Terminated),
                &policy(),
                NOW
            ),
            Some(Trigger::Terminate)
        );
    }

    #[test]
    fn unreadable_observations_never_trigger() {
        let mut s = WatchState::default();
        assert_eq!(
            decide(&mut s, &Observation::default(), &policy(), NOW),
            None
        );
    }

    #[test]
    fn spot_comes_first() {
        let mut s = WatchState::default();
        let mut obs = state(TargetLifecycleState::Terminated);
        let at = datetime!(2026-11-22 10:02:00 UTC);
        obs.spot = Some(Some((SpotAction::Terminate, Some(at))));
        let trigger = decide(&mut s, &obs, &policy(), NOW).unwrap();
        assert_eq!(
            trigger,
            Trigger::Spot {
                action: SpotAction::Terminate,
                at: Some(at)
            }
        );
        assert!(trigger.ends_instance());
        assert!(!trigger.has_lifecycle_action());
        let stop = Trigger::Spot {
            action: SpotAction::Stop,
            at: None,
        };
        assert!(!stop.ends_instance());
    }

    #[test]
    fn warm_pool_only_after_in_service() {
        let warmed = || state(TargetLifecycleState::Warmed("Warmed:Stopped".into()));
        let mut launched_into_pool = WatchState::default();
        assert_eq!(
            decide(&mut launched_into_pool, &warmed(), &policy(), NOW),
            None
        );

        let mut s = WatchState::default();
        decide(
            &mut s,
            &state(TargetLifecycleState::InService),
            &policy(),
            NOW,
        );
        let trigger = decide(&mut s, &warmed(), &policy(), NOW).unwrap();
        assert_eq!(trigger, Trigger::WarmPool);
        assert!(trigger.has_lifecycle_action());
        assert!(!trigger.ends_instance());
        assert_eq!(
            decide(&mut s, &warmed(), &policy(), NOW),
            None,
            "once per return"
        );
    }

    #[test]
    fn rebalance_only_when_asked() {
        let mut s = WatchState::default();
        let mut obs = state(TargetLifecycleState::InService);
        obs.rebalance = Some(Some("2026-11-22T09:58:00Z".into()));
        assert_eq!(decide(&mut s, &obs, &policy(), NOW), None);
        let asked = WatchPolicy {
            drain_on_rebalance: true,
            ..policy()
        };
        assert_eq!(
            decide(&mut s, &obs, &asked, NOW),
            Some(Trigger::Rebalance {
                noticed: Some("2026-11-22T09:58:00Z".into())
            })
        );
    }

    #[test]
    fn a_standing_notice_drains_once_and_a_new_one_again() {
        let asked = WatchPolicy {
            drain_on_rebalance: true,
            ..policy()
        };
        let mut obs = state(TargetLifecycleState::InService);
        obs.rebalance = Some(Some("2026-11-22T09:58:00Z".into()));
        let mut s = WatchState::default();
        let first = decide(&mut s, &obs, &asked, NOW).unwrap();
        s.handled.push(first.notice_key().unwrap());
        assert_eq!(decide(&mut s, &obs, &asked, NOW), None, "the same notice");
        obs.rebalance = Some(Some("2026-11-22T11:00:00Z".into()));
        assert!(decide(&mut s, &obs, &asked, NOW).is_some(), "a new notice");

        let stop = Trigger::Spot {
            action: SpotAction::Stop,
            at: Some(datetime!(2026-11-22 10:02:00 UTC)),
        };
        let mut obs = state(TargetLifecycleState::InService);
        obs.spot = Some(Some((
            SpotAction::Stop,
            Some(datetime!(2026-11-22 10:02:00 UTC)),
        )));
        let mut s = WatchState {
            handled: vec![stop.notice_key().unwrap()],
            ..WatchState::default()
        };
        assert_eq!(decide(&mut s, &obs, &policy(), NOW), None);
        obs.target_state = Some(Some(TargetLifecycleState::Terminated));
        assert_eq!(
            decide(&mut s, &obs, &policy(), NOW),
            Some(Trigger::Terminate),
            "a handled spot notice does not hide a termination"
        );
        assert_eq!(Trigger::Terminate.notice_key(), None);
    }

    fn event(code: &str, not_before: &str, state: &str) -> MaintenanceEvent {
        MaintenanceEvent {
            code: code.into(),
            description: String::new(),
            event_id: "instance-event-1".into(),
            not_before: not_before.into(),
            not_after: String::new(),
            state: state.into(),
        }
    }

    #[test]
    fn maintenance_drains_when_due_and_only_for_stop_or_retirement() {
        let mut s = WatchState::default();
        let mut obs = state(TargetLifecycleState::InService);
        obs.maintenance = Some(vec![event(
            "instance-stop",
            "22 Nov 2026 12:00:00 GMT",
            "active",
        )]);
        assert_eq!(
            decide(&mut s, &obs, &policy(), NOW),
            None,
            "two hours ahead"
        );
        obs.maintenance = Some(vec![event(
            "instance-stop",
            "22 Nov 2026 10:05:00 GMT",
            "active",
        )]);
        assert_eq!(
            decide(&mut s, &obs, &policy(), NOW),
            Some(Trigger::Maintenance {
                code: "instance-stop".into(),
                not_before: Some(datetime!(2026-11-22 10:05:00 UTC)),
                event_id: "instance-event-1".into(),
            })
        );
        obs.maintenance = Some(vec![event(
            "system-reboot",
            "22 Nov 2026 10:05:00 GMT",
            "active",
        )]);
        assert_eq!(decide(&mut s, &obs, &policy(), NOW), None);
        obs.maintenance = Some(vec![event("instance-retirement", "soon", "active")]);
        assert!(
            decide(&mut s, &obs, &policy(), NOW).is_some(),
            "unreadable time = now"
        );
        obs.maintenance = Some(vec![event(
            "instance-stop",
            "22 Nov 2026 10:05:00 GMT",
            "canceled",
        )]);
        assert_eq!(decide(&mut s, &obs, &policy(), NOW), None);
    }

    #[test]
    fn times() {
        assert_eq!(
            parse_maintenance_time("5 Dec 2026 09:00:43 GMT"),
            Some(datetime!(2026-12-05 09:00:43 UTC))
        );
        assert_eq!(
            parse_rfc3339("2026-11-22T10:02:00Z"),
            Some(datetime!(2026-11-22 10:02:00 UTC))
        );
        assert_eq!(parse_rfc3339("garbage"), None);
    }
}
