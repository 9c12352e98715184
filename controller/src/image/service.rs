//! The image pipeline in the running service. A `Refresh Image` command starts one; every
//! `EC2 AMI State Change` event and every reconcile pass takes each running pipeline as far as
//! it goes without waiting. Nothing waits in memory: the record in the template's tags is the
//! state, so a restarted controller, or another replica, goes on from it, and every stage is
//! idempotent, so two replicas advancing one pipeline make one image and one version.

use std::collections::HashMap;
use std::time::Duration;

use lifeguard_common::message::{
    AmiStateChange, Command, CreateAutoScalingGroupCall, CreateImageCall, Message,
};
use serde_json::Value;
use time::OffsetDateTime;

use super::api::ImageApi;
use super::builder::BuilderSpec;
use super::pipeline::{Pipeline, Stage};
use super::run::{Progress, settle, write_record};
use super::start::{
    BakeFrom, BakeRequest, ConfigurationRequest, MAX_AVAILABLE_WITHIN_SECS, bake_pipeline,
    configuration_pipeline,
};
use crate::config::{ImagesConfig, NewGroupVersion};
use crate::fleet::FleetError;
use crate::queue::Handled;

const DEFAULT_KEEP: u32 = 5;
const DEFAULT_AVAILABLE_WITHIN_SECS: u64 = 14_400;

pub struct ImageService<A> {
    api: A,
    triggers: Triggers,
}

/// What the service starts on its own, from CloudTrail events.
#[derive(Debug, Clone)]
pub struct Triggers {
    pub images: ImagesConfig,
    /// The tag that marks managed groups and templates (`groups.tag`).
    pub managed_tag: String,
    /// Groups managed by name (`groups.names`).
    pub managed_groups: Vec<String>,
}

impl Triggers {
    fn managed(&self, tags: &HashMap<String, String>) -> bool {
        tags.get(&self.managed_tag)
            .is_some_and(|value| !value.trim().eq_ignore_ascii_case("false"))
    }
}

/// Progress goes to the log, with the pipeline and template as fields.
struct Logged;

impl Progress for Logged {
    fn event(&mut self, pipeline: &Pipeline, what: &str) {
        tracing::info!(pipeline = %pipeline.id, target = %pipeline.key(),
            stage = pipeline.stage.as_str(), image_id = ?pipeline.image_id, "{what}");
    }

    fn waiting(&mut self, pipeline: &Pipeline, elapsed: time::Duration, detail: &str) {
        tracing::debug!(pipeline = %pipeline.id, target = %pipeline.key(),
            stage = pipeline.stage.as_str(), elapsed_secs = elapsed.whole_seconds(), %detail,
            "image pipeline waiting");
    }
}

fn retry(error: &FleetError) -> Handled {
    Handled::Retry {
        reason: error.to_string(),
    }
}

impl<A: ImageApi> ImageService<A> {
    pub fn new(api: A, triggers: Triggers) -> Self {
        ImageService { api, triggers }
    }

    pub fn api(&self) -> &A {
        &self.api
    }

    /// Whether the message is the image pipeline's to handle.
    pub fn handles(message: &Message) -> bool {
        match message {
            Message::Command(command) => {
                command.name == lifeguard_common::message::CommandName::RefreshImage
            }
            Message::AmiStateChange(_)
            | Message::InstanceRefresh(_)
            | Message::CreateImageCall(_)
            | Message::CreateAutoScalingGroupCall(_) => true,
            _ => false,
        }
    }

    pub async fn handle(&self, message: &Message) -> Handled {
        match message {
            Message::Command(command) => self.on_refresh(command).await,
            Message::AmiStateChange(change) => self.on_ami_state(change).await,
            // A refresh started, reached a checkpoint or ended: rolls go on at once rather
            // than at the next reconcile pass.
            Message::InstanceRefresh(event) => {
                tracing::debug!(asg = %event.asg, refresh_id = %event.refresh_id,
                    "instance refresh event; rolling pipelines looked at");
                match self.advance_running(|p| p.stage == Stage::Roll).await {
                    Ok(_) => Handled::Done,
                    Err(error) => retry(&error),
                }
            }
            Message::CreateImageCall(call) => self.on_create_image(call).await,
            Message::CreateAutoScalingGroupCall(call) => self.on_new_group(call).await,
            _ => Handled::Done,
        }
    }

    /// An image someone made with the marker: the pipeline takes it from `await-available`.
    async fn on_create_image(&self, call: &CreateImageCall) -> Handled {
        let marker = &self.triggers.images.marker;
        let named = call
            .tags
            .iter()
            .find(|t| &t.key == marker)
            .map(|t| t.value.trim().to_string())
            .or_else(|| {
                call.description.as_deref().and_then(|d| {
                    d.split_whitespace()
                        .find_map(|word| word.strip_prefix(&format!("{marker}=")))
                        .map(str::to_string)
                })
            });
        let (Some(template_name), Some(image_id)) = (named, call.image_id.clone()) else {
            tracing::debug!(image_id = ?call.image_id, %marker, "CreateImage without the marker; nothing to do");
            return Handled::Done;
        };
        let template = match self.api.template(&template_name).await {
            Ok(Some(template)) if self.triggers.managed(&template.tags) => template,
            Ok(_) => {
                tracing::warn!(%image_id, template = %template_name,
                    "CreateImage names a template that does not exist or is not managed; ignored");
                return Handled::Done;
            }
            Err(error) => return retry(&error),
        };
        if let Ok(Some(running)) = Pipeline::from_tags(&template.id, &template.tags)
            && running.image_id.as_deref() == Some(image_id.as_str())
        {
            // The same event again (EventBridge delivers at least once).
            return Handled::Done;
        }
        let images = &self.triggers.images;
        let request = BakeRequest {
            template: template.id.clone(),
            from: BakeFrom::Instance(call.instance_id.clone().unwrap_or_default()),
            source_version: "$Default".into(),
            no_reboot: false,
            keep: images.keep,
            parameter: images.ssm_parameters.get(&template.name).cloned(),
            deregister: images.deregister,
            available_within: Duration::from_secs(images.available_within_secs),
            roll: None,
            poll: Duration::from_secs(15),
            dry_run: false,
        };
        let mut pipeline = match bake_pipeline(&template, &request, OffsetDateTime::now_utc()) {
            Ok(pipeline) => pipeline,
            Err(why) => {
                tracing::warn!(%image_id, template = %template.name, %why,
                    "image from CloudTrail not taken; deleted");
                return Handled::Done;
            }
        };
        pipeline.instance_id = call.instance_id.clone();
        pipeline.image_id = Some(image_id.clone());
        pipeline.stage = Stage::AwaitAvailable;
        self.start(pipeline).await
    }

    /// A new group pinned to a version number of a managed template: moved to the configured
    /// alias, so it follows the pipeline's new versions.
    async fn on_new_group(&self, call: &CreateAutoScalingGroupCall) -> Handled {
        let target = self.triggers.images.new_group_version;
        if target == NewGroupVersion::Unchanged {
            return Handled::Done;
        }
        let Some(spec) = &call.launch_template else {
            return Handled::Done;
        };
        // Only a number is a pin: no version (`$Default`) or an alias already follows.
        if !spec
            .version
            .as_deref()
            .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        {
            return Handled::Done;
        }
        let Some(name_or_id) = spec.id.as_deref().or(spec.name.as_deref()) else {
            return Handled::Done;
        };
        let template = match self.api.template(name_or_id).await {
            Ok(Some(template)) if self.triggers.managed(&template.tags) => template,
            Ok(_) => return Handled::Done,
            Err(error) => return retry(&error),
        };
        let group = match self.api.group(&call.asg).await {
            Ok(Some(group)) => group,
            Ok(None) => return Handled::Done,
            Err(error) => return retry(&error),
        };
        let managed = self.triggers.managed_groups.iter().any(|g| g == &call.asg)
            || self.triggers.managed(&group.tags);
        let names_template = group.template_id.as_deref() == Some(template.id.as_str())
            || group.template_name.as_deref() == Some(template.name.as_str());
        let still_pinned = group
            .version
            .as_deref()
            .is_some_and(|v| v.bytes().all(|b| b.is_ascii_digit()));
        if !managed || !names_template || !still_pinned {
            tracing::info!(asg = %call.asg, managed, names_template, still_pinned,
                "new group left as it is");
            return Handled::Done;
        }
        match self
            .api
            .use_template_version(&call.asg, &template.id, target.as_str())
            .await
        {
            Ok(()) => {
                tracing::info!(asg = %call.asg, template = %template.name,
                    from = ?group.version, to = target.as_str(),
                    "new group moved off its pinned template version");
                Handled::Done
            }
            Err(error) if error.transient => retry(&error),
            Err(error) => {
                tracing::warn!(asg = %call.asg, %error, "new group not moved; deleted");
                Handled::Done
            }
        }
    }

    /// Writes the record, then takes the pipeline as far as it goes.
    async fn start(&self, pipeline: Pipeline) -> Handled {
        // The record first: from here on a reconcile pass finds the pipeline even if this
        // replica stops before the next call.
        if let Err(error) = write_record(&self.api, &pipeline).await {
            return retry(&error);
        }
        tracing::info!(pipeline = %pipeline.id, target = %pipeline.key(),
            stage = pipeline.stage.as_str(), image_id = ?pipeline.image_id,
            instance_id = ?pipeline.instance_id, "image pipeline started");
        if let Err(error) = settle(&self.api, pipeline, &mut Logged).await {
            // The record is written: reconcile goes on with it.
            tracing::warn!(%error, "image pipeline paused on an AWS error; reconcile goes on");
        }
        Handled::Done
    }

    async fn on_refresh(&self, command: &Command) -> Handled {
        let request = match bake_request(command) {
            Ok(request) => request,
            Err(why) => {
                tracing::warn!(%why, "Refresh Image command refused; deleted");
                return Handled::Done;
            }
        };
        if let Some(group) = configuration_request(command) {
            return self.on_refresh_group(&group, &request).await;
        }
        let template = match self.api.template(&request.template).await {
            Ok(Some(template)) => template,
            Ok(None) => {
                tracing::warn!(template = %request.template,
                    "Refresh Image for a launch template that does not exist; deleted");
                return Handled::Done;
            }
            Err(error) => return retry(&error),
        };
        let pipeline = match bake_pipeline(&template, &request, OffsetDateTime::now_utc()) {
            Ok(pipeline) => pipeline,
            Err(why) => {
                // A redelivered command finds its own pipeline running: nothing more to do.
                tracing::warn!(template = %template.name, %why, "Refresh Image not started; deleted");
                return Handled::Done;
            }
        };
        self.start(pipeline).await
    }

    async fn on_refresh_group(
        &self,
        group: &ConfigurationRequest,
        request: &BakeRequest,
    ) -> Handled {
        let found = match self.api.group_configuration(&group.group).await {
            Ok(Some(found)) => found,
            Ok(None) => {
                tracing::warn!(asg = %group.group,
                    "Refresh Image for a group that does not exist; deleted");
                return Handled::Done;
            }
            Err(error) => return retry(&error),
        };
        match configuration_pipeline(&found, group, request, OffsetDateTime::now_utc()) {
            Ok(pipeline) => self.start(pipeline).await,
            Err(why) => {
                tracing::warn!(asg = %group.group, %why, "Refresh Image not started; deleted");
                Handled::Done
            }
        }
    }

    async fn on_ami_state(&self, change: &AmiStateChange) -> Handled {
        let images: Vec<&str> = change.images.iter().map(|i| i.image_id.as_str()).collect();
        match self
            .advance_running(|p| p.image_id.as_deref().is_some_and(|id| images.contains(&id)))
            .await
        {
            Ok(_) => Handled::Done,
            Err(error) => retry(&error),
        }
    }

    /// Takes every running pipeline as far as it goes; how many there were.
    pub async fn reconcile(&self) -> Result<usize, FleetError> {
        self.advance_running(|_| true).await
    }

    async fn advance_running(
        &self,
        wanted: impl Fn(&Pipeline) -> bool,
    ) -> Result<usize, FleetError> {
        let mut advanced = 0;
        let mut last_error = None;
        let mut records = Vec::new();
        for template in self.api.templates().await? {
            records.push((
                template.id.clone(),
                Pipeline::from_tags(&template.id, &template.tags),
            ));
        }
        for group in self.api.groups_with_pipelines().await? {
            records.push((
                group.name.clone(),
                Pipeline::from_group_tags(&group.name, &group.tags),
            ));
        }
        for (holder, record) in records {
            let pipeline = match record {
                Ok(Some(pipeline)) if pipeline.stage.is_running() && wanted(&pipeline) => pipeline,
                Ok(_) => continue,
                Err(why) => {
                    tracing::warn!(%holder, %why,
                        "lifeguard:image:* tags do not read as a pipeline; left alone");
                    continue;
                }
            };
            advanced += 1;
            if let Err(error) = settle(&self.api, pipeline, &mut Logged).await {
                tracing::warn!(%holder, %error, "image pipeline paused");
                last_error = Some(error);
            }
        }
        match last_error {
            Some(error) => Err(error),
            None => Ok(advanced),
        }
    }
}

/// The command's parameters: `template` (name or id) and the instance (`instance_ids[0]` or
/// `instance_id`) are required; the rest default as `image bake` does.
pub(crate) fn bake_request(command: &Command) -> Result<BakeRequest, String> {
    let params = &command.params;
    let text = |key: &str| params.get(key).and_then(Value::as_str).map(str::to_string);
    let flag = |key: &str| params.get(key).and_then(Value::as_bool).unwrap_or(false);
    // A launch-configuration group is named by `group`, which then stands in for the template.
    let template = text("template")
        .or_else(|| text("group"))
        .ok_or("no `template` (or `group`)")?;
    if params.get("template").is_some() && params.get("group").is_some() {
        return Err("`template` or `group`, not both".into());
    }
    let from = match (
        params.get("builder"),
        command
            .instance_ids
            .first()
            .cloned()
            .or_else(|| text("instance_id")),
    ) {
        (Some(_), Some(_)) => {
            return Err("an instance to image or a `builder`, not both".into());
        }
        (Some(builder), None) => BakeFrom::Builder(builder_spec(builder)?),
        (None, Some(instance_id)) => {
            if !crate::fleet::is_instance_id(&instance_id) {
                return Err(format!("{instance_id:?} is not an instance id"));
            }
            BakeFrom::Instance(instance_id)
        }
        (None, None) => {
            return Err("nothing to image: `instance_ids`, `instance_id` or a `builder`".into());
        }
    };
    let keep = match params.get("keep") {
        None => DEFAULT_KEEP,
        Some(value) => value
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| (1..=10_000).contains(n))
            .ok_or("`keep`: a number from 1 to 10000")?,
    };
    let within = match params.get("available_within_secs") {
        None => DEFAULT_AVAILABLE_WITHIN_SECS,
        Some(value) => value
            .as_u64()
            .filter(|n| (60..=MAX_AVAILABLE_WITHIN_SECS).contains(n))
            .ok_or("`available_within_secs`: 60 to 172800")?,
    };
    let roll = match params.get("roll") {
        None | Some(Value::Null) => None,
        Some(Value::Object(roll)) => {
            let number = |key: &str, default: u64| -> Result<u64, String> {
                match roll.get(key) {
                    None => Ok(default),
                    Some(v) => v.as_u64().ok_or(format!("`roll.{key}`: a number")),
                }
            };
            let small = |n: u64, key: &str| u8::try_from(n).map_err(|_| format!("`roll.{key}`"));
            let checkpoints = match roll.get("checkpoints") {
                None => Vec::new(),
                Some(list) => list
                    .as_array()
                    .ok_or("`roll.checkpoints`: a list")?
                    .iter()
                    .map(|c| {
                        c.as_u64()
                            .and_then(|c| u8::try_from(c).ok())
                            .ok_or("`roll.checkpoints`: percentages".to_string())
                    })
                    .collect::<Result<_, _>>()?,
            };
            let roll = super::roll::Roll {
                min_healthy_percentage: small(
                    number("min_healthy_percentage", 90)?,
                    "min_healthy_percentage",
                )?,
                instance_warmup_secs: u32::try_from(number("instance_warmup_secs", 300)?)
                    .map_err(|_| "`roll.instance_warmup_secs`".to_string())?,
                checkpoints,
            };
            roll.check()?;
            Some(roll)
        }
        Some(_) => return Err("`roll`: an object".into()),
    };
    Ok(BakeRequest {
        roll,
        template,
        from,
        source_version: text("source_version").unwrap_or_else(|| "$Default".into()),
        no_reboot: flag("no_reboot"),
        keep,
        parameter: text("ssm_parameter"),
        deregister: flag("deregister"),
        available_within: Duration::from_secs(within),
        poll: Duration::from_secs(15),
        dry_run: false,
    })
}

/// With `group` (a group on a launch configuration): the group, and whether the configuration
/// it leaves is deleted (`delete_old_configuration`).
fn configuration_request(command: &Command) -> Option<ConfigurationRequest> {
    let group = command.params.get("group")?.as_str()?.to_string();
    let delete_source = command
        .params
        .get("delete_old_configuration")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Some(ConfigurationRequest {
        group,
        delete_source,
    })
}

/// `builder`: `{"document": …, "parameters": {"name": ["value"]}, "subnet": …}`, every key
/// optional (`AWS-RunPatchBaseline` with `Operation=Install`).
fn builder_spec(value: &Value) -> Result<BuilderSpec, String> {
    let Value::Object(builder) = value else {
        return Err("`builder`: an object".into());
    };
    if let Some(unknown) = builder
        .keys()
        .find(|k| !["document", "parameters", "subnet"].contains(&k.as_str()))
    {
        return Err(format!("`builder.{unknown}`: unknown"));
    }
    let text = |key: &str| -> Result<Option<String>, String> {
        match builder.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("`builder.{key}`: a string")),
        }
    };
    let document = text("document")?;
    let parameters = match builder.get("parameters") {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => Some(
            map.iter()
                .map(|(name, values)| {
                    let values = match values {
                        Value::String(one) => vec![one.clone()],
                        Value::Array(list) => list
                            .iter()
                            .map(|v| v.as_str().map(str::to_string))
                            .collect::<Option<Vec<_>>>()
                            .ok_or(format!("`builder.parameters.{name}`: strings"))?,
                        _ => return Err(format!("`builder.parameters.{name}`: strings")),
                    };
                    Ok((name.clone(), values))
                })
                .collect::<Result<_, String>>()?,
        ),
        Some(_) => return Err("`builder.parameters`: an object".into()),
    };
    let spec = BuilderSpec::new(document, parameters, text("subnet")?);
    spec.check()?;
    Ok(spec)
}
