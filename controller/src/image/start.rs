//! A new pipeline from a request: the checks every trigger makes before anything is created.

use std::time::Duration;

use time::OffsetDateTime;

use super::api::TemplateView;
use super::builder::BuilderSpec;
use super::configuration::GroupConfiguration;
use super::pipeline::{ConfigurationTarget, Pipeline, Stage, Target};
use super::run::refuse_start;

/// The longest an image may take to become available: the 48 h a whole lifecycle action may
/// last is far beyond any image.
pub const MAX_AVAILABLE_WITHIN_SECS: u64 = 48 * 3600;

/// What `image bake` asks for.
#[derive(Debug, Clone)]
pub struct BakeRequest {
    /// The launch template's name or id (for `bake --group`, the group's name).
    pub template: String,
    pub from: BakeFrom,
    /// `$Default`, `$Latest` or a number.
    pub source_version: String,
    pub no_reboot: bool,
    pub keep: u32,
    pub parameter: Option<String>,
    pub deregister: bool,
    pub available_within: Duration,
    /// Refresh the template's groups after promote.
    pub roll: Option<super::roll::Roll>,
    pub poll: Duration,
    pub dry_run: bool,
}

/// What the image is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BakeFrom {
    /// An instance that runs already (a golden instance).
    Instance(String),
    /// A builder launched from the source version and patched (`command_id` unset).
    Builder(BuilderSpec),
}

/// `YYYYMMDDTHHMMSSZ-xxxx`.
pub fn new_pipeline_id(now: OffsetDateTime) -> String {
    let stamp = crate::marks::format_time(now).replace([':', '-'], "");
    format!("{stamp}-{:04x}", crate::service::random_bits() as u16)
}

pub(super) fn resolve_version(template: &TemplateView, asked: &str) -> Result<i64, String> {
    match asked {
        "$Default" => Ok(template.default_version),
        "$Latest" => Ok(template.latest_version),
        number => number
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=template.latest_version).contains(n))
            .ok_or_else(|| {
                format!(
                    "source version {number:?}: $Default, $Latest or a number from 1 to {}",
                    template.latest_version
                )
            }),
    }
}

/// The record of a new bake pipeline, or why none may start now.
pub fn bake_pipeline(
    template: &TemplateView,
    request: &BakeRequest,
    now: OffsetDateTime,
) -> Result<Pipeline, String> {
    match refuse_start(template) {
        Ok(None) => {}
        Ok(Some(why)) => return Err(why),
        Err(why) => {
            return Err(format!(
                "the lifeguard:image:* tags of {} do not read as a pipeline ({why}); remove them to start afresh",
                template.id
            ));
        }
    }
    let source_version = resolve_version(template, &request.source_version)?;
    if let Some(roll) = &request.roll {
        roll.check()?;
    }
    let (stage, instance_id, builder) = match &request.from {
        BakeFrom::Instance(id) => (Stage::Bake, Some(id.clone()), None),
        BakeFrom::Builder(spec) => {
            spec.check()?;
            let spec = BuilderSpec {
                command_id: None,
                ..spec.clone()
            };
            (Stage::LaunchBuilder, None, Some(spec))
        }
    };
    check_parameter(request)?;
    let mut pipeline = new_pipeline(
        Target::Template(template.id.clone()),
        stage,
        source_version,
        instance_id,
        builder,
        request,
        now,
    );
    // The default a failed roll goes back to, recorded before anything changes: every record
    // written from now on carries it, so a replica advancing from an older copy of the record
    // never takes another's promote for the state before.
    pipeline.previous_default = Some(template.default_version);
    Ok(pipeline)
}

/// `keep` of a pipeline that prunes nothing (`image roll`).
pub const KEEP_ALL: u32 = u32::MAX;

/// The record of a roll alone: the template's groups onto its default version, nothing baked
/// and nothing pruned.
pub fn roll_pipeline(
    template: &TemplateView,
    roll: super::roll::Roll,
    image_id: Option<String>,
    now: OffsetDateTime,
) -> Result<Pipeline, String> {
    if let Some(why) = refuse_start(template)? {
        return Err(why);
    }
    roll.check()?;
    Ok(Pipeline {
        id: new_pipeline_id(now),
        target: Target::Template(template.id.clone()),
        stage: Stage::Roll,
        instance_id: None,
        builder: None,
        previous_default: None,
        no_reboot: false,
        source_version: template.default_version,
        image_id,
        new_version: Some(template.default_version),
        started_at: now,
        available_by: now,
        keep: KEEP_ALL,
        parameter: None,
        deregister: false,
        roll: Some(roll),
        roll_started: Some(now),
        reason: None,
    })
}

/// What `image bake --group` asks for on a group that launches from a launch configuration.
#[derive(Debug, Clone)]
pub struct ConfigurationRequest {
    pub group: String,
    /// Delete the configuration the group leaves (only one lifeguard made).
    pub delete_source: bool,
}

/// The record of a new pipeline for a group on a launch configuration, or why none may start.
pub fn configuration_pipeline(
    group: &GroupConfiguration,
    wanted: &ConfigurationRequest,
    request: &BakeRequest,
    now: OffsetDateTime,
) -> Result<Pipeline, String> {
    let Some(source) = group.configuration.clone() else {
        return Err(format!(
            "{} launches from a launch template: name the template with --template",
            group.name
        ));
    };
    match Pipeline::from_group_tags(&group.name, &group.tags) {
        Ok(Some(running)) if running.stage.is_running() => {
            return Err(format!(
                "pipeline {} on {} is at stage {} since {}; resume it with `image resume --group {}`",
                running.id,
                group.name,
                running.stage.as_str(),
                crate::marks::format_time(running.started_at),
                group.name
            ));
        }
        Ok(_) => {}
        Err(why) => {
            return Err(format!(
                "the lifeguard:image:* tags of {} do not read as a pipeline ({why}); remove them to start afresh",
                group.name
            ));
        }
    }
    let BakeFrom::Instance(instance_id) = &request.from else {
        return Err("builder mode launches from a launch template; image an instance (--instance) for a launch-configuration group".into());
    };
    check_parameter(request)?;
    if request.roll.is_some() || request.deregister {
        return Err("--roll and --deregister are for launch templates; a launch-configuration group is switched to the copy (replace its instances with an instance refresh)".into());
    }
    Ok(new_pipeline(
        Target::Configuration(ConfigurationTarget {
            group: group.name.clone(),
            source,
            delete_source: wanted.delete_source,
        }),
        Stage::Bake,
        0,
        Some(instance_id.clone()),
        None,
        request,
        now,
    ))
}

fn check_parameter(request: &BakeRequest) -> Result<(), String> {
    match &request.parameter {
        Some(parameter) if parameter.chars().count() > 256 => {
            Err("the SSM parameter name: at most 256 characters (it is kept in a tag)".into())
        }
        _ => Ok(()),
    }
}

fn new_pipeline(
    target: Target,
    stage: Stage,
    source_version: i64,
    instance_id: Option<String>,
    builder: Option<BuilderSpec>,
    request: &BakeRequest,
    now: OffsetDateTime,
) -> Pipeline {
    let within = time::Duration::try_from(request.available_within)
        .unwrap_or(time::Duration::HOUR)
        .min(time::Duration::seconds(
            i64::try_from(MAX_AVAILABLE_WITHIN_SECS).unwrap_or(i64::MAX),
        ));
    Pipeline {
        id: new_pipeline_id(now),
        target,
        stage,
        instance_id,
        builder,
        previous_default: None,
        no_reboot: request.no_reboot,
        source_version,
        image_id: None,
        new_version: None,
        started_at: now,
        available_by: now + within,
        keep: request.keep,
        parameter: request.parameter.clone(),
        deregister: request.deregister,
        roll: request.roll.clone(),
        roll_started: None,
        reason: None,
    }
}
