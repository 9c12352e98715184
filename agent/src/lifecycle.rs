//! Auto Scaling, as the agent needs it: the shared lifecycle calls, and which hook of its
//! group the agent completes.

use std::time::Duration;

pub use lifeguard_common::lifecycle::*;
use lifeguard_common::message::Transition;

/// Picks the hook to complete for `transition`: the configured one, else the group's only one.
pub fn choose_hook<'a>(
    hooks: &'a [HookInfo],
    transition: Transition,
    configured: Option<&str>,
) -> Result<Option<&'a HookInfo>, String> {
    let matching: Vec<&HookInfo> = hooks
        .iter()
        .filter(|h| h.transition == transition)
        .collect();
    match configured {
        Some(name) => matching
            .iter()
            .find(|h| h.name == name)
            .copied()
            .map(Some)
            .ok_or_else(|| format!("the group has no {transition} hook named {name:?}")),
        None => match matching.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one)),
            many => Err(format!(
                "the group has {} {transition} hooks ({}); set lifecycle.{} to the one lifeguard completes",
                many.len(),
                many.iter()
                    .map(|h| h.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                match transition {
                    Transition::Launching => "launch_hook",
                    Transition::Terminating => "terminate_hook",
                }
            )),
        },
    }
}

/// When to send the next heartbeat: a third of the hook's heartbeat timeout after the last one,
/// so one lost heartbeat still leaves time for another.
pub fn heartbeat_interval(heartbeat_timeout: Duration) -> Duration {
    (heartbeat_timeout / 3).max(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(name: &str, transition: Transition) -> HookInfo {
        HookInfo {
            name: name.into(),
            transition,
            heartbeat_timeout: Duration::from_secs(60),
            global_timeout: Duration::from_secs(6000),
            default_result: "ABANDON".into(),
        }
    }

    #[test]
    fn hook_choice() {
        let hooks = vec![
            hook("ready", Transition::Launching),
            hook("drain", Transition::Terminating),
        ];
        assert_eq!(
            choose_hook(&hooks, Transition::Terminating, None)
                .unwrap()
                .unwrap()
                .name,
            "drain"
        );
        assert!(choose_hook(&hooks, Transition::Terminating, Some("other")).is_err());
        let two = vec![
            hook("a", Transition::Terminating),
            hook("b", Transition::Terminating),
        ];
        let err = choose_hook(&two, Transition::Terminating, None).unwrap_err();
        assert!(err.contains("lifecycle.terminate_hook"), "{err}");
        assert_eq!(
            choose_hook(&two, Transition::Terminating, Some("b"))
                .unwrap()
                .unwrap()
                .name,
            "b"
        );
        assert!(
            choose_hook(&[], Transition::Terminating, None)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn heartbeats_come_three_times_per_timeout() {
        assert_eq!(
            heartbeat_interval(Duration::from_secs(30)),
            Duration::from_secs(10)
        );
        assert_eq!(
            heartbeat_interval(Duration::from_secs(2)),
            Duration::from_secs(1)
        );
    }
}
