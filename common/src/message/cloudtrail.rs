//! CloudTrail records of the API calls lifeguard reacts to, raw or inside an EventBridge event.

use serde_json::Value;

use super::fields::{Object, optional_object, optional_str, required_str};
use super::{
    CreateAutoScalingGroupCall, CreateImageCall, Ignored, LaunchTemplateRef, Message, ParseError,
    Tag,
};

const EC2_SOURCE: &str = "ec2.amazonaws.com";
const AUTO_SCALING_SOURCE: &str = "autoscaling.amazonaws.com";

/// A raw CloudTrail record (not wrapped by EventBridge).
pub(crate) fn is_record(object: &Object) -> bool {
    object.contains_key("eventSource") && object.contains_key("eventName")
}

/// Envelope facts that an EventBridge wrapper adds around a record.
pub(crate) struct Wrapper<'a> {
    pub location: &'a str,
    pub account: Option<String>,
}

/// Reads a CloudTrail record. `wrapper` is set when the record is an EventBridge event's detail.
pub(crate) fn parse_record(
    record: &Object,
    wrapper: Option<Wrapper<'_>>,
) -> Result<Message, ParseError> {
    let location = wrapper.as_ref().map_or("", |w| w.location);
    let source = required_str(record, location, "eventSource")?;
    let name = required_str(record, location, "eventName")?;
    let call = format!("{source} {name}");
    let (is_create_image, is_create_group) = (
        source == EC2_SOURCE && name == "CreateImage",
        source == AUTO_SCALING_SOURCE && name == "CreateAutoScalingGroup",
    );
    if !is_create_image && !is_create_group {
        return Ok(Message::Ignored(Ignored::because(format!(
            "CloudTrail call {call} is not one lifeguard acts on"
        ))));
    }
    if let Some(code) = optional_str(record, location, "errorCode")? {
        return Ok(Message::Ignored(Ignored::because(format!(
            "CloudTrail call {call} failed with {code}"
        ))));
    }
    let region = optional_str(record, location, "awsRegion")?;
    let account = match optional_str(record, location, "recipientAccountId")? {
        Some(account) => Some(account),
        None => wrapper.and_then(|w| w.account),
    };
    let request_location = sub(location, "requestParameters");
    let request = optional_object(record, location, "requestParameters")?;
    if is_create_image {
        let response = optional_object(record, location, "responseElements")?;
        let empty = Object::new();
        let request = request.unwrap_or(&empty);
        return Ok(Message::CreateImageCall(CreateImageCall {
            image_id: match response {
                Some(response) => {
                    optional_str(response, &sub(location, "responseElements"), "imageId")?
                }
                None => None,
            },
            instance_id: optional_str(request, &request_location, "instanceId")?,
            name: optional_str(request, &request_location, "name")?,
            description: optional_str(request, &request_location, "description")?,
            tags: image_tags(request, &request_location)?,
            region,
            account,
        }));
    }
    let Some(request) = request else {
        return Err(ParseError::new(request_location, "missing"));
    };
    Ok(Message::CreateAutoScalingGroupCall(
        CreateAutoScalingGroupCall {
            asg: required_str(request, &request_location, "autoScalingGroupName")?.to_string(),
            launch_template: launch_template(request, &request_location)?,
            launch_configuration: optional_str(
                request,
                &request_location,
                "launchConfigurationName",
            )?,
            region,
            account,
        },
    ))
}

fn sub(location: &str, key: &str) -> String {
    if location.is_empty() {
        key.to_string()
    } else {
        format!("{location}.{key}")
    }
}

/// The launch template of `CreateAutoScalingGroup`, given directly or in a mixed instances policy.
fn launch_template(
    request: &Object,
    location: &str,
) -> Result<Option<LaunchTemplateRef>, ParseError> {
    let direct_location = sub(location, "launchTemplate");
    let spec = match optional_object(request, location, "launchTemplate")? {
        Some(spec) => Some((spec, direct_location)),
        None => {
            let policy_location = sub(location, "mixedInstancesPolicy");
            let nested = optional_object(request, location, "mixedInstancesPolicy")?
                .and_then(|policy| policy.get("launchTemplate"))
                .and_then(|template| template.get("launchTemplateSpecification"))
                .and_then(Value::as_object);
            nested.map(|spec| {
                (
                    spec,
                    format!("{policy_location}.launchTemplate.launchTemplateSpecification"),
                )
            })
        }
    };
    let Some((spec, spec_location)) = spec else {
        return Ok(None);
    };
    Ok(Some(LaunchTemplateRef {
        id: optional_str(spec, &spec_location, "launchTemplateId")?,
        name: optional_str(spec, &spec_location, "launchTemplateName")?,
        version: match spec.get("version") {
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => optional_str(spec, &spec_location, "version")?,
        },
    }))
}

/// Tags requested for the image: CloudTrail records `TagSpecification` as
/// `tagSpecificationSet.items[].tags[]` with `key`/`value`; only image specifications count.
fn image_tags(request: &Object, location: &str) -> Result<Vec<Tag>, ParseError> {
    let items = request
        .get("tagSpecificationSet")
        .and_then(|set| set.get("items"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut tags = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let resource_type = item.get("resourceType").and_then(Value::as_str);
        if resource_type.is_some_and(|kind| kind != "image") {
            continue;
        }
        let entries = item
            .get("tags")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (tag_index, entry) in entries.iter().enumerate() {
            let entry_location =
                format!("{location}.tagSpecificationSet.items[{index}].tags[{tag_index}]");
            let Some(entry) = entry.as_object() else {
                return Err(ParseError::new(entry_location, "expected an object"));
            };
            tags.push(Tag {
                key: required_str(entry, &entry_location, "key")?.to_string(),
                value: optional_str(entry, &entry_location, "value")?.unwrap_or_default(),
            });
        }
    }
    Ok(tags)
}
