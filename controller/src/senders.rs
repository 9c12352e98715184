//! Who may say what on the queue. Any principal allowed `sqs:SendMessage` can write anything, so
//! a message's content proves nothing; SQS's `SenderId` is what AWS vouches for. An instance
//! profile's session is named after its instance, so a message sent with an instance's role
//! carries `<role id>:<instance id>`: an agent can speak for its own instance, and for nothing
//! else.

use lifeguard_common::message::Message;

use crate::config::ReportsConfig;

/// Why a message was refused, for the log and the `reason` label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub detail: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

/// The instance a role session speaks for: the session name after the role id, when it is an
/// instance id (`i-...`).
fn instance_session(sender_id: &str) -> Option<(&str, &str)> {
    let (role, session) = sender_id.split_once(':')?;
    session.starts_with("i-").then_some((role, session))
}

/// Whether `message`, sent by `sender_id`, may be acted on.
pub fn admit(
    config: &ReportsConfig,
    message: &Message,
    sender_id: Option<&str>,
) -> Result<(), Refusal> {
    if !config.verify_sender {
        return Ok(());
    }
    let session = sender_id.and_then(instance_session);
    match message {
        Message::AgentReport(report) => {
            let Some((role, instance)) = session else {
                return Err(Refusal {
                    reason: "not_an_instance",
                    detail: format!(
                        "a report about {} not sent with an instance's role (sender {:?})",
                        report.instance_id, sender_id
                    ),
                });
            };
            if instance != report.instance_id {
                return Err(Refusal {
                    reason: "other_instance",
                    detail: format!(
                        "instance {instance} sent a report about {}",
                        report.instance_id
                    ),
                });
            }
            if !config.role_ids.is_empty() && !config.role_ids.iter().any(|r| r == role) {
                return Err(Refusal {
                    reason: "role",
                    detail: format!("role {role} of {instance} is not an agent role"),
                });
            }
            Ok(())
        }
        // Lifecycle events, warnings and commands come from EventBridge and operators; from an
        // instance they are forgeries.
        other => match session {
            Some((_, instance)) => Err(Refusal {
                reason: "instance_not_agent_report",
                detail: format!("instance {instance} sent a {} message", other.kind()),
            }),
            None => Ok(()),
        },
    }
}

#[cfg(test)]
mod tests {
    use lifeguard_common::message::{AgentReport, Command, CommandName, ReportPhase};

    use super::*;

    fn report(about: &str) -> Message {
        Message::AgentReport(AgentReport::new(ReportPhase::DrainHeartbeat, about))
    }

    #[test]
    fn an_instance_speaks_for_itself_only() {
        let config = ReportsConfig::default();
        let own = Some("AROAEXAMPLE0000000001:i-0aaa");
        assert_eq!(admit(&config, &report("i-0aaa"), own), Ok(()));
        let refused = admit(&config, &report("i-0bbb"), own).unwrap_err();
        assert_eq!(refused.reason, "other_instance");
        for sender in [None, Some("AIDAIT2UOQQY3AUEKVGXU"), Some("AROAX:alice")] {
            let refused = admit(&config, &report("i-0aaa"), sender).unwrap_err();
            assert_eq!(refused.reason, "not_an_instance", "{sender:?}");
        }
    }

    #[test]
    fn other_messages_from_an_instance_are_forgeries() {
        let config = ReportsConfig::default();
        let command = Message::Command(Command {
            name: CommandName::Reconcile,
            asg: None,
            instance_ids: Vec::new(),
            params: Default::default(),
        });
        let refused = admit(&config, &command, Some("AROAEXAMPLE:i-0aaa")).unwrap_err();
        assert_eq!(refused.reason, "instance_not_agent_report");
        assert_eq!(admit(&config, &command, Some("AIDAOPERATOR")), Ok(()));
    }

    #[test]
    fn role_ids_narrow_who_may_report_and_verification_can_be_turned_off() {
        let config = ReportsConfig {
            verify_sender: true,
            role_ids: vec!["AROAAGENTS".into()],
        };
        assert!(admit(&config, &report("i-1"), Some("AROAAGENTS:i-1")).is_ok());
        assert_eq!(
            admit(&config, &report("i-1"), Some("AROAOTHER:i-1"))
                .unwrap_err()
                .reason,
            "role"
        );
        let off = ReportsConfig {
            verify_sender: false,
            role_ids: Vec::new(),
        };
        assert!(admit(&off, &report("i-1"), None).is_ok());
    }
}
