//! The pipeline's record, kept in `lifeguard:image:*` tags on its launch template, and the pure
//! step function that says what to do next.

use std::collections::HashMap;

use time::OffsetDateTime;

use super::api::{ImageState, ImageView};
use super::builder::BuilderSpec;
use super::roll::Roll;
use crate::marks::{format_time, parse_time};

pub const TAG_PREFIX: &str = "lifeguard:image:";
/// On the image: the template whose pipeline made it (prune deregisters only such images).
pub const IMAGE_TEMPLATE_TAG: &str = "lifeguard:image:template";
/// On the image: the pipeline that made it.
pub const IMAGE_PIPELINE_TAG: &str = "lifeguard:image:pipeline";
/// EC2 tag values are at most 256 characters.
const MAX_TAG_VALUE: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    LaunchBuilder,
    Patch,
    StopBuilder,
    Bake,
    AwaitAvailable,
    RetireBuilder,
    Version,
    Promote,
    Roll,
    Prune,
    Done,
    Failed,
}

impl Stage {
    const ALL: [Stage; 12] = [
        Stage::LaunchBuilder,
        Stage::Patch,
        Stage::StopBuilder,
        Stage::Bake,
        Stage::AwaitAvailable,
        Stage::RetireBuilder,
        Stage::Version,
        Stage::Promote,
        Stage::Roll,
        Stage::Prune,
        Stage::Done,
        Stage::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::LaunchBuilder => "launch-builder",
            Stage::Patch => "patch",
            Stage::StopBuilder => "stop-builder",
            Stage::Bake => "bake",
            Stage::AwaitAvailable => "await-available",
            Stage::RetireBuilder => "retire-builder",
            Stage::Version => "version",
            Stage::Promote => "promote",
            Stage::Roll => "roll",
            Stage::Prune => "prune",
            Stage::Done => "done",
            Stage::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether a pipeline in this stage still holds its template.
    pub fn is_running(self) -> bool {
        !matches!(self, Stage::Done | Stage::Failed)
    }
}

/// What a pipeline moves onto its new image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A launch template (`lt-…`): a new version, made the default. The record is in the
    /// template's tags.
    Template(String),
    /// A group that launches from a launch configuration (which cannot be versioned): a copy
    /// of the configuration with the new image, and the group switched to it. The record is in
    /// the group's tags.
    Configuration(ConfigurationTarget),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigurationTarget {
    pub group: String,
    /// The configuration the group used when the pipeline started: the copy's source.
    pub source: String,
    /// Delete the source once the group has left it (and no other group uses it).
    pub delete_source: bool,
}

/// One pipeline: everything needed to resume it after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pipeline {
    /// `YYYYMMDDTHHMMSSZ-xxxx`: names the image and is the version's client token.
    pub id: String,
    pub target: Target,
    pub stage: Stage,
    /// The instance to image: the one named (bake from an instance) or the builder.
    pub instance_id: Option<String>,
    /// Builder mode: what patches the builder.
    pub builder: Option<BuilderSpec>,
    /// The template's default before promote: a failed roll puts it back.
    pub previous_default: Option<i64>,
    pub no_reboot: bool,
    /// The version the new one is made from.
    pub source_version: i64,
    pub image_id: Option<String>,
    pub new_version: Option<i64>,
    pub started_at: OffsetDateTime,
    /// `await-available` fails after this.
    pub available_by: OffsetDateTime,
    /// Versions kept by prune (the newest; the default, `$Latest` and pinned ones always).
    pub keep: u32,
    /// SSM parameter that gets the AMI id.
    pub parameter: Option<String>,
    /// Whether prune deregisters images no version or launch configuration uses any more.
    pub deregister: bool,
    /// Instance refresh of the template's groups after promote, if asked for.
    pub roll: Option<Roll>,
    /// When the roll began: refreshes since then are the roll's.
    pub roll_started: Option<OffsetDateTime>,
    /// Why the pipeline failed.
    pub reason: Option<String>,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    CreateImage,
    /// An image of the pipeline's name exists (a run stopped between `CreateImage` and writing
    /// the record): take it.
    AdoptImage {
        image_id: String,
    },
    /// Look again no later than this.
    Wait {
        until: OffsetDateTime,
    },
    CreateVersion {
        image_id: String,
    },
    /// Make the new version the default (a template), or switch the group to the copy (a
    /// launch configuration); publish the AMI id.
    Promote {
        version: Option<i64>,
        image_id: String,
    },
    /// A builder stage: [`super::builder::decide_builder`] says what.
    Builder,
    /// The image is available: terminate the builder before the version is made.
    RetireBuilder,
    Roll,
    Prune,
    Finished,
    Fail {
        reason: String,
    },
}

impl Pipeline {
    /// The template's id, or the group's name: names the image and tags what the pipeline
    /// made.
    pub fn key(&self) -> &str {
        match &self.target {
            Target::Template(id) => id,
            Target::Configuration(c) => &c.group,
        }
    }

    /// The launch template, for a template pipeline.
    pub fn template_id(&self) -> Option<&str> {
        match &self.target {
            Target::Template(id) => Some(id),
            Target::Configuration(_) => None,
        }
    }

    /// The copy of the launch configuration: its source's name with the pipeline's id (at
    /// most 255 characters), so a retry finds the copy the first attempt made.
    pub fn configuration_copy_name(&self) -> Option<String> {
        let Target::Configuration(c) = &self.target else {
            return None;
        };
        let suffix = format!("-lifeguard-{}", self.id);
        let mut base = c.source.clone();
        // A source that is itself a copy keeps its original name, not a chain of suffixes.
        if let Some(at) = base.find("-lifeguard-") {
            base.truncate(at);
        }
        truncate_to(&mut base, 255 - suffix.chars().count());
        Some(format!("{base}{suffix}"))
    }

    /// The image's name: unique per account and region, so `CreateImage` cannot succeed twice
    /// for one pipeline.
    pub fn image_name(&self) -> String {
        format!("lifeguard-{}-{}", self.key(), self.id)
    }

    pub fn to_tags(&self) -> Vec<(String, String)> {
        let key = |name: &str| format!("{TAG_PREFIX}{name}");
        let mut tags = vec![
            (key("pipeline"), self.id.clone()),
            (key("stage"), self.stage.as_str().to_string()),
            (key("source-version"), self.source_version.to_string()),
            (key("started"), format_time(self.started_at)),
            (key("available-by"), format_time(self.available_by)),
            (key("keep"), self.keep.to_string()),
            (key("no-reboot"), self.no_reboot.to_string()),
            (key("deregister"), self.deregister.to_string()),
            (
                key("instance"),
                self.instance_id.clone().unwrap_or_default(),
            ),
            (key("image"), self.image_id.clone().unwrap_or_default()),
            (
                key("version"),
                self.new_version.map(|v| v.to_string()).unwrap_or_default(),
            ),
            (key("parameter"), self.parameter.clone().unwrap_or_default()),
            (
                key("roll"),
                self.roll.as_ref().map(Roll::encode).unwrap_or_default(),
            ),
            (
                key("roll-started"),
                self.roll_started.map(format_time).unwrap_or_default(),
            ),
            (
                key("previous-default"),
                self.previous_default
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
            ),
            (key("reason"), self.reason.clone().unwrap_or_default()),
        ];
        // Written empty without a builder: a pipeline's record replaces every key of the
        // previous one on the template.
        let builder = self.builder.as_ref();
        tags.extend([
            (
                key("builder-document"),
                builder.map(|b| b.document.clone()).unwrap_or_default(),
            ),
            (
                key("builder-parameters"),
                builder
                    .map(BuilderSpec::encode_parameters)
                    .unwrap_or_default(),
            ),
            (
                key("builder-subnet"),
                builder.and_then(|b| b.subnet.clone()).unwrap_or_default(),
            ),
            (
                key("builder-command"),
                builder
                    .and_then(|b| b.command_id.clone())
                    .unwrap_or_default(),
            ),
        ]);
        if let Target::Configuration(c) = &self.target {
            tags.extend([
                (key("configuration-source"), c.source.clone()),
                (
                    key("configuration-delete-source"),
                    c.delete_source.to_string(),
                ),
            ]);
        }
        for (_, value) in &mut tags {
            truncate_to(value, MAX_TAG_VALUE);
        }
        tags
    }

    /// The record in a template's tags; `None` if no pipeline ever ran on it.
    pub fn from_tags(
        template_id: &str,
        tags: &HashMap<String, String>,
    ) -> Result<Option<Pipeline>, String> {
        Pipeline::parse(Target::Template(template_id.to_string()), tags)
    }

    /// The record in the tags of a group on a launch configuration; `None` if no pipeline ever
    /// ran on it.
    pub fn from_group_tags(
        group: &str,
        tags: &HashMap<String, String>,
    ) -> Result<Option<Pipeline>, String> {
        let get = |name: &str| {
            tags.get(&format!("{TAG_PREFIX}{name}"))
                .filter(|v| !v.is_empty())
        };
        let Some(source) = get("configuration-source") else {
            return match get("pipeline") {
                None => Ok(None),
                Some(_) => Err(format!("{TAG_PREFIX}configuration-source missing")),
            };
        };
        let target = Target::Configuration(ConfigurationTarget {
            group: group.to_string(),
            source: source.clone(),
            delete_source: get("configuration-delete-source").map(String::as_str) == Some("true"),
        });
        Pipeline::parse(target, tags)
    }

    fn parse(target: Target, tags: &HashMap<String, String>) -> Result<Option<Pipeline>, String> {
        let get = |name: &str| {
            tags.get(&format!("{TAG_PREFIX}{name}"))
                .map(String::as_str)
                .filter(|v| !v.is_empty())
        };
        let Some(id) = get("pipeline") else {
            return Ok(None);
        };
        let need = |name: &str| get(name).ok_or_else(|| format!("{TAG_PREFIX}{name} missing"));
        let number = |name: &str| -> Result<i64, String> {
            need(name)?
                .parse()
                .map_err(|_| format!("{TAG_PREFIX}{name} is not a number"))
        };
        let time = |name: &str| -> Result<OffsetDateTime, String> {
            parse_time(need(name)?).ok_or_else(|| format!("{TAG_PREFIX}{name} is not a time"))
        };
        let stage = need("stage")?;
        let builder = match get("builder-document") {
            Some(document) => Some(BuilderSpec {
                document: document.to_string(),
                parameters: BuilderSpec::decode_parameters(
                    get("builder-parameters").unwrap_or("{}"),
                )?,
                subnet: get("builder-subnet").map(str::to_string),
                command_id: get("builder-command").map(str::to_string),
            }),
            None => None,
        };
        Ok(Some(Pipeline {
            id: id.to_string(),
            target,
            stage: Stage::parse(stage).ok_or_else(|| format!("unknown stage {stage:?}"))?,
            instance_id: get("instance").map(str::to_string),
            builder,
            previous_default: get("previous-default").and_then(|v| v.parse().ok()),
            no_reboot: get("no-reboot") == Some("true"),
            source_version: number("source-version")?,
            image_id: get("image").map(str::to_string),
            new_version: get("version").and_then(|v| v.parse().ok()),
            started_at: time("started")?,
            available_by: time("available-by")?,
            keep: u32::try_from(number("keep")?).map_err(|_| "keep out of range".to_string())?,
            parameter: get("parameter").map(str::to_string),
            deregister: get("deregister") == Some("true"),
            roll: get("roll").map(Roll::decode).transpose()?,
            roll_started: get("roll-started").and_then(parse_time),
            reason: get("reason").map(str::to_string),
        }))
    }
}

fn truncate_to(value: &mut String, max_chars: usize) {
    if let Some((cut, _)) = value.char_indices().nth(max_chars) {
        value.truncate(cut);
    }
}

/// What the pipeline does next, from its record, what EC2 says of its image (by id once known;
/// by the pipeline's name while baking) and the time. `poll` is how long a wait may last before
/// looking again.
pub fn decide(
    pipeline: &Pipeline,
    image: Option<&ImageView>,
    now: OffsetDateTime,
    poll: time::Duration,
) -> Step {
    match pipeline.stage {
        Stage::Bake => match image {
            Some(found) => Step::AdoptImage {
                image_id: found.id.clone(),
            },
            None if pipeline.instance_id.is_some() => Step::CreateImage,
            None => Step::Fail {
                reason: "nothing to bake from: no instance".into(),
            },
        },
        Stage::AwaitAvailable => match image {
            None => Step::Fail {
                reason: format!(
                    "image {} no longer exists",
                    pipeline.image_id.as_deref().unwrap_or("?")
                ),
            },
            Some(image) => match &image.state {
                ImageState::Available if pipeline.builder.is_some() => Step::RetireBuilder,
                ImageState::Available => Step::CreateVersion {
                    image_id: image.id.clone(),
                },
                ImageState::Pending if now >= pipeline.available_by => Step::Fail {
                    reason: format!(
                        "image {} still pending at the deadline ({} after the start)",
                        image.id,
                        humanize(pipeline.available_by - pipeline.started_at)
                    ),
                },
                ImageState::Pending => Step::Wait {
                    until: (now + poll).min(pipeline.available_by),
                },
                other => Step::Fail {
                    reason: format!(
                        "image {} is {}{}",
                        image.id,
                        other.as_str(),
                        image
                            .reason
                            .as_deref()
                            .map(|r| format!(": {r}"))
                            .unwrap_or_default()
                    ),
                },
            },
        },
        // Checked again right before the version is made: a template never names an image
        // that is not available.
        Stage::Version => match image {
            Some(image) if image.state == ImageState::Available => Step::CreateVersion {
                image_id: image.id.clone(),
            },
            Some(image) => Step::Fail {
                reason: format!(
                    "image {} is {}, not available",
                    image.id,
                    image.state.as_str()
                ),
            },
            None => Step::Fail {
                reason: "the image no longer exists".into(),
            },
        },
        Stage::Promote => match (&pipeline.target, pipeline.new_version, &pipeline.image_id) {
            (Target::Template(_), Some(version), Some(image_id)) => Step::Promote {
                version: Some(version),
                image_id: image_id.clone(),
            },
            (Target::Configuration(_), _, Some(image_id)) => Step::Promote {
                version: None,
                image_id: image_id.clone(),
            },
            _ => Step::Fail {
                reason: "promote without a new version".into(),
            },
        },
        Stage::LaunchBuilder | Stage::Patch | Stage::StopBuilder | Stage::RetireBuilder => {
            Step::Builder
        }
        Stage::Roll => Step::Roll,
        Stage::Prune => Step::Prune,
        Stage::Done | Stage::Failed => Step::Finished,
    }
}

/// `2 h 5 min`, `45 s`.
pub fn humanize(duration: time::Duration) -> String {
    let secs = duration.whole_seconds().max(0);
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min {} s", secs / 60, secs % 60),
        _ => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
    }
}
