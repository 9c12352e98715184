//! Lifecycle-hook notifications sent straight to a queue or through SNS, and the SNS envelopes.

use std::collections::BTreeMap;

use serde_json::Value;

use super::fields::{Object, json_type, optional_str, required_str};
use super::{
    AmiState, AmiStateChange, Format, Ignored, LifecycleAction, LifecycleEndpoint, Message,
    ParseError, Parsed, RegionalImage, TestNotification, Transition, parse_at_depth,
};

const AUTO_SCALING_SERVICE: &str = "AWS Auto Scaling";
const TEST_NOTIFICATION_EVENT: &str = "autoscaling:TEST_NOTIFICATION";

/// An Auto Scaling notification's fields, all strings (JSON form) or as written (key/value form).
pub(crate) type NotificationFields = BTreeMap<String, String>;

pub(crate) fn is_auto_scaling_notification(object: &Object) -> bool {
    object.get("Service").and_then(Value::as_str) == Some(AUTO_SCALING_SERVICE)
        || object.contains_key("LifecycleTransition")
        || object.get("Event").and_then(Value::as_str) == Some(TEST_NOTIFICATION_EVENT)
}

/// The string-valued fields of a JSON notification; other values are kept as their JSON text so
/// a wrong type still produces a readable error where the field is required.
pub(crate) fn string_fields(object: &Object) -> NotificationFields {
    object
        .iter()
        .map(|(key, value)| {
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (key.clone(), text)
        })
        .collect()
}

/// Reads the `Key: Value` lines an SNS target renders (the form the user guide shows). Returns
/// `None` unless every line has that shape and the text names the Auto Scaling service.
pub(crate) fn key_value_fields(text: &str) -> Option<NotificationFields> {
    let mut fields = NotificationFields::new();
    for line in text.lines().map(str::trim).filter(|line| !line.is_empty()) {
        let (key, value) = line.split_once(':')?;
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return None;
        }
        fields.insert(key.to_string(), value.trim().to_string());
    }
    (fields.get("Service").map(String::as_str) == Some(AUTO_SCALING_SERVICE)).then_some(fields)
}

fn required<'a>(fields: &'a NotificationFields, key: &str) -> Result<&'a str, ParseError> {
    match fields.get(key).map(|value| value.trim()) {
        None => Err(ParseError::new(key, "missing")),
        Some("") => Err(ParseError::new(key, "empty")),
        Some(value) => Ok(value),
    }
}

fn optional(fields: &NotificationFields, key: &str) -> Option<String> {
    fields
        .get(key)
        .map(|value| value.trim())
        .filter(|value| !value.is_empty())
        .map(str::to_string)
}

pub(crate) fn parse_auto_scaling_notification(
    fields: &NotificationFields,
) -> Result<Message, ParseError> {
    if let Some(event) = optional(fields, "Event") {
        if event == TEST_NOTIFICATION_EVENT {
            return Ok(Message::TestNotification(TestNotification {
                asg: required(fields, "AutoScalingGroupName")?.to_string(),
                asg_arn: optional(fields, "AutoScalingGroupARN"),
                account: optional(fields, "AccountId"),
                time: optional(fields, "Time"),
            }));
        }
        if !fields.contains_key("LifecycleTransition") {
            return Ok(Message::Ignored(Ignored::because(format!(
                "Auto Scaling notification `{event}` is not a lifecycle action"
            ))));
        }
    }
    let transition_text = required(fields, "LifecycleTransition")?;
    let transition = Transition::from_aws_str(transition_text).ok_or_else(|| {
        ParseError::new(
            "LifecycleTransition",
            format!(
                "expected {} or {}, found {transition_text:?}",
                Transition::LAUNCHING,
                Transition::TERMINATING
            ),
        )
    })?;
    Ok(Message::LifecycleAction(LifecycleAction {
        transition,
        instance_id: required(fields, "EC2InstanceId")?.to_string(),
        asg: required(fields, "AutoScalingGroupName")?.to_string(),
        hook: required(fields, "LifecycleHookName")?.to_string(),
        token: required(fields, "LifecycleActionToken")?.to_string(),
        metadata: optional(fields, "NotificationMetadata"),
        origin: optional(fields, "Origin").map(|v| LifecycleEndpoint::parse(&v)),
        destination: optional(fields, "Destination").map(|v| LifecycleEndpoint::parse(&v)),
        account: optional(fields, "AccountId"),
        time: optional(fields, "Time"),
    }))
}

/// An SNS notification as SQS receives it from a subscription without raw delivery.
pub(crate) fn is_sns_envelope(object: &Object) -> bool {
    object.contains_key("Type")
        && (object.contains_key("TopicArn") || object.contains_key("Message"))
}

pub(crate) fn parse_sns_envelope(object: &Object, depth: usize) -> Result<Parsed, ParseError> {
    let kind = required_str(object, "", "Type")?;
    if kind != "Notification" {
        return Ok(Parsed {
            format: Format::Sns,
            message: Message::Ignored(Ignored::because(format!(
                "SNS message of type `{kind}` carries no notification"
            ))),
        });
    }
    let inner = required_str(object, "", "Message")?;
    parse_sns_message(inner, depth).map_err(|e| e.within("Message (SNS)"))
}

/// An SNS notification as Lambda receives it: `{"Records": [{"Sns": {...}}]}`.
pub(crate) fn is_lambda_sns_event(object: &Object) -> bool {
    object
        .get("Records")
        .and_then(Value::as_array)
        .and_then(|records| records.first())
        .and_then(|record| record.get("Sns"))
        .is_some()
}

pub(crate) fn parse_lambda_sns_event(object: &Object, depth: usize) -> Result<Parsed, ParseError> {
    let records = object
        .get("Records")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let [record] = records else {
        return Err(ParseError::new(
            "Records",
            format!("expected exactly one SNS record, found {}", records.len()),
        ));
    };
    let Some(Value::Object(sns)) = record.get("Sns") else {
        return Err(ParseError::new(
            "Records[0].Sns",
            format!(
                "expected an object, found {}",
                record.get("Sns").map_or("nothing", json_type)
            ),
        ));
    };
    parse_sns_envelope(sns, depth).map_err(|e| e.within("Records[0].Sns"))
}

/// The `Message` of an SNS notification: any message lifeguard understands, in JSON or the
/// key/value form, or an Image Builder image notification.
fn parse_sns_message(inner: &str, depth: usize) -> Result<Parsed, ParseError> {
    if let Ok(Value::Object(object)) = serde_json::from_str::<Value>(inner)
        && is_image_builder_image(&object)
    {
        return Ok(Parsed {
            format: Format::Sns,
            message: parse_image_builder_image(&object)?,
        });
    }
    let parsed = parse_at_depth(inner.as_bytes(), depth + 1)?;
    Ok(Parsed {
        format: Format::Sns,
        message: parsed.message,
    })
}

fn is_image_builder_image(object: &Object) -> bool {
    object
        .get("arn")
        .and_then(Value::as_str)
        .is_some_and(|arn| arn.contains(":imagebuilder:") && arn.contains(":image/"))
        && object.contains_key("state")
}

fn parse_image_builder_image(object: &Object) -> Result<Message, ParseError> {
    let arn = required_str(object, "", "arn")?.to_string();
    let state = super::fields::required_object(object, "", "state")?;
    let status = required_str(state, "state", "status")?;
    let amis = object
        .get("outputResources")
        .and_then(|resources| resources.get("amis"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut images = Vec::with_capacity(amis.len());
    for (index, ami) in amis.iter().enumerate() {
        let location = format!("outputResources.amis[{index}]");
        let Value::Object(ami) = ami else {
            return Err(ParseError::new(
                location,
                format!("expected an object, found {}", json_type(ami)),
            ));
        };
        images.push(RegionalImage {
            image_id: required_str(ami, &location, "image")?.to_string(),
            region: optional_str(ami, &location, "region")?,
        });
    }
    if images.is_empty() {
        return Ok(Message::Ignored(Ignored::because(format!(
            "Image Builder image {arn} ({status}) lists no AMI"
        ))));
    }
    Ok(Message::AmiStateChange(AmiStateChange {
        images,
        state: AmiState::parse(status),
        error_message: optional_str(state, "state", "reason")?,
        image_builder_arn: Some(arn),
    }))
}
