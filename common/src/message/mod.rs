//! One parser for everything that can arrive on the controller's queue: EventBridge events,
//! lifecycle-hook notifications sent straight to SQS (JSON, or the key/value text of an SNS
//! target), SNS envelopes around either, raw CloudTrail records, and lifeguard's own agent
//! reports and commands. The bodies the agent reads from IMDS have their own parsers in [`imds`].
//!
//! Parsing never panics: malformed input is a [`ParseError`] that says where and what; a
//! well-formed message that lifeguard does not act on is [`Message::Ignored`] with the reason.

mod cloudtrail;
mod eventbridge;
mod explain;
mod fields;
pub mod imds;
mod lifeguard;
mod notification;
mod types;

pub use explain::Explanation;
pub use lifeguard::{
    AGENT_SOURCE, AgentReport, ArchiveSummary, COMMAND_SOURCE, Command, CommandName,
    CompletionReport, ReportPhase, StepOutcome, StepReport,
};
pub use types::*;

use serde_json::Value;

/// How a message reached the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An EventBridge event (`source`, `detail-type`, `detail`).
    EventBridge,
    /// Sent straight to the queue: a lifecycle-hook notification or a raw CloudTrail record.
    Direct,
    /// Inside an SNS notification, or the key/value text an SNS target renders.
    Sns,
    /// A body read from the instance metadata service.
    Imds,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::EventBridge => "eventbridge",
            Format::Direct => "direct",
            Format::Sns => "sns",
            Format::Imds => "imds",
        }
    }
}

/// A message and the envelope it came in.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub format: Format,
    pub message: Message,
}

/// Why a message could not be understood: where in the message, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{problem}", location_prefix(.location))]
pub struct ParseError {
    /// Path of the offending part, e.g. `detail.EC2InstanceId` or `Message (SNS) > detail`.
    pub location: String,
    pub problem: String,
}

fn location_prefix(location: &str) -> String {
    if location.is_empty() {
        String::new()
    } else {
        format!("{location}: ")
    }
}

impl ParseError {
    pub(crate) fn new(location: impl Into<String>, problem: impl Into<String>) -> Self {
        ParseError {
            location: location.into(),
            problem: problem.into(),
        }
    }

    /// Puts `outer` in front of this error's location, for errors inside nested envelopes.
    pub(crate) fn within(mut self, outer: &str) -> Self {
        self.location = if self.location.is_empty() {
            outer.to_string()
        } else {
            format!("{outer} > {}", self.location)
        };
        self
    }
}

/// SNS envelopes can nest a message that is itself an envelope; real deliveries go at most two
/// deep, so anything deeper is rejected rather than followed.
const MAX_ENVELOPE_DEPTH: usize = 3;

/// Parses one queue message body.
pub fn parse(body: &[u8]) -> Result<Parsed, ParseError> {
    parse_at_depth(body, 0)
}

pub(crate) fn parse_at_depth(body: &[u8], depth: usize) -> Result<Parsed, ParseError> {
    if depth > MAX_ENVELOPE_DEPTH {
        return Err(ParseError::new(
            "",
            format!("envelopes nested more than {MAX_ENVELOPE_DEPTH} deep"),
        ));
    }
    let text = std::str::from_utf8(body)
        .map_err(|e| ParseError::new("", format!("message is not UTF-8 text: {e}")))?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(ParseError::new("", "message is empty"));
    }
    if !trimmed.starts_with('{')
        && !trimmed.starts_with('[')
        && !trimmed.starts_with('"')
        && let Some(fields) = notification::key_value_fields(trimmed)
    {
        let message = notification::parse_auto_scaling_notification(&fields)?;
        return Ok(Parsed {
            format: Format::Sns,
            message,
        });
    }
    let value: Value = serde_json::from_str(trimmed)
        .map_err(|e| ParseError::new("", format!("message is not valid JSON: {e}")))?;
    parse_value(&value, depth)
}

fn parse_value(value: &Value, depth: usize) -> Result<Parsed, ParseError> {
    let Value::Object(object) = value else {
        return Err(ParseError::new(
            "",
            format!("expected a JSON object, found {}", fields::json_type(value)),
        ));
    };
    if object.contains_key("detail-type") && object.contains_key("source") {
        return Ok(Parsed {
            format: Format::EventBridge,
            message: eventbridge::parse_event(object)?,
        });
    }
    if notification::is_sns_envelope(object) {
        return notification::parse_sns_envelope(object, depth);
    }
    if notification::is_lambda_sns_event(object) {
        return notification::parse_lambda_sns_event(object, depth);
    }
    if notification::is_auto_scaling_notification(object) {
        let fields = notification::string_fields(object);
        return Ok(Parsed {
            format: Format::Direct,
            message: notification::parse_auto_scaling_notification(&fields)?,
        });
    }
    if cloudtrail::is_record(object) {
        return Ok(Parsed {
            format: Format::Direct,
            message: cloudtrail::parse_record(object, None)?,
        });
    }
    let mut keys: Vec<&str> = object.keys().map(String::as_str).take(8).collect();
    keys.sort_unstable();
    Err(ParseError::new(
        "",
        format!(
            "unrecognised message: not an EventBridge event, SNS notification, Auto Scaling \
             notification or CloudTrail record (top-level keys: {})",
            if keys.is_empty() {
                "none".to_string()
            } else {
                keys.join(", ")
            }
        ),
    ))
}

#[cfg(test)]
mod tests;
