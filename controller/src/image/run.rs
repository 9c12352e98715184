//! Drives a pipeline to its end for an operator's command: each step's effect is recorded in the
//! template's tags before the next, so a run that is killed can be resumed where it stopped.

use std::time::Duration;

use time::OffsetDateTime;

use super::api::{CreateImage, ImageApi, TemplateView};
use super::pipeline::{
    IMAGE_PIPELINE_TAG, IMAGE_TEMPLATE_TAG, Pipeline, Stage, Step, Target, decide, humanize,
};
use super::prune::prune;
use super::roll::{GroupRoll, RollStep, next};
use super::run_builder::builder_step;
use super::run_configuration;
use crate::fleet::FleetError;

/// Transient AWS errors in a row before the run gives up (the record stays where it was, to be
/// resumed).
const MAX_TRANSIENT_IN_A_ROW: u32 = 10;

/// What the run tells whoever watches it.
pub trait Progress {
    /// A stage began or a step was done.
    fn event(&mut self, pipeline: &Pipeline, what: &str);
    /// Still waiting for the image: its state and its snapshots' progress.
    fn waiting(&mut self, pipeline: &Pipeline, elapsed: time::Duration, detail: &str);
}

/// Runs `pipeline` until it is done or failed, sleeping through its waits (an operator's
/// command); returns its final record. An error is a call that kept failing: the record in the
/// template's tags says where to resume.
pub async fn drive<A: ImageApi>(
    api: &A,
    mut pipeline: Pipeline,
    poll: Duration,
    progress: &mut impl Progress,
) -> Result<Pipeline, FleetError> {
    let mut transient_in_a_row = 0;
    loop {
        match advance(api, &mut pipeline, poll, progress).await {
            Ok(Advanced::Ended) => return Ok(pipeline),
            Ok(Advanced::Moved) => transient_in_a_row = 0,
            Ok(Advanced::Wait(wait)) => {
                transient_in_a_row = 0;
                tokio::time::sleep(wait).await;
            }
            Err(error) if error.transient && transient_in_a_row < MAX_TRANSIENT_IN_A_ROW => {
                transient_in_a_row += 1;
                progress.event(&pipeline, &format!("{error}; trying again"));
                tokio::time::sleep(poll).await;
            }
            Err(error) if error.transient => return Err(error),
            Err(error) => {
                // A refusal (permissions, a bad id, a limit) does not heal by itself: the
                // pipeline ends and says why.
                fail(api, &mut pipeline, error.to_string()).await?;
                progress.event(&pipeline, "failed");
                return Ok(pipeline);
            }
        }
    }
}

/// Takes `pipeline` as far as it goes without waiting (the service: a later event or reconcile
/// pass goes on from the record). A transient error is returned for the caller to try later; a
/// refusal fails the pipeline.
pub async fn settle<A: ImageApi>(
    api: &A,
    mut pipeline: Pipeline,
    progress: &mut impl Progress,
) -> Result<Pipeline, FleetError> {
    loop {
        match advance(api, &mut pipeline, Duration::ZERO, progress).await {
            Ok(Advanced::Moved) => {}
            Ok(Advanced::Ended | Advanced::Wait(_)) => return Ok(pipeline),
            Err(error) if error.transient => return Err(error),
            Err(error) => {
                fail(api, &mut pipeline, error.to_string()).await?;
                progress.event(&pipeline, "failed");
                return Ok(pipeline);
            }
        }
    }
}

/// What one step did.
pub(super) enum Advanced {
    Moved,
    /// Nothing to do before this much time has passed.
    Wait(Duration),
    Ended,
}

/// One step.
async fn advance<A: ImageApi>(
    api: &A,
    pipeline: &mut Pipeline,
    poll: Duration,
    progress: &mut impl Progress,
) -> Result<Advanced, FleetError> {
    let image = match (&pipeline.image_id, pipeline.stage) {
        (Some(id), _) => api.image(id).await?,
        (None, Stage::Bake) => api.image_named(&pipeline.image_name()).await?,
        (None, _) => None,
    };
    let now = OffsetDateTime::now_utc();
    let poll_for = time::Duration::try_from(poll).unwrap_or(time::Duration::MINUTE);
    match decide(pipeline, image.as_ref(), now, poll_for) {
        Step::CreateImage => {
            let Some(instance_id) = pipeline.instance_id.clone() else {
                return Err(refused(pipeline, "CreateImage", "no instance to image"));
            };
            let request = CreateImage {
                instance_id: instance_id.clone(),
                name: pipeline.image_name(),
                description: format!(
                    "lifeguard image pipeline {} for {}",
                    pipeline.id,
                    pipeline.key()
                ),
                no_reboot: pipeline.no_reboot,
                tags: vec![
                    (IMAGE_TEMPLATE_TAG.to_string(), pipeline.key().to_string()),
                    (IMAGE_PIPELINE_TAG.to_string(), pipeline.id.clone()),
                ],
            };
            let image_id = api.create_image(&request).await?;
            pipeline.image_id = Some(image_id.clone());
            save(api, pipeline, Stage::AwaitAvailable).await?;
            progress.event(
                pipeline,
                &format!("image {image_id} of {instance_id} requested"),
            );
        }
        Step::AdoptImage { image_id } => {
            pipeline.image_id = Some(image_id.clone());
            save(api, pipeline, Stage::AwaitAvailable).await?;
            progress.event(pipeline, &format!("image {image_id} found by its name"));
        }
        Step::Wait { until } => {
            let detail = match &image {
                Some(image) => {
                    let snapshots = api.snapshots(&image.snapshot_ids).await?;
                    let mut detail = format!("{} {}", image.id, image.state.as_str());
                    for snapshot in snapshots {
                        detail.push_str(&format!(
                            ", {} {}",
                            snapshot.id,
                            snapshot.progress.as_deref().unwrap_or(&snapshot.state)
                        ));
                    }
                    detail
                }
                None => String::new(),
            };
            progress.waiting(pipeline, now - pipeline.started_at, &detail);
            let wait = (until - now).max(time::Duration::ZERO);
            return Ok(Advanced::Wait(Duration::try_from(wait).unwrap_or(poll)));
        }
        Step::CreateVersion { image_id } => {
            if pipeline.stage != Stage::Version {
                save(api, pipeline, Stage::Version).await?;
                progress.event(pipeline, &format!("image {image_id} available"));
            }
            let template_id = match pipeline.target.clone() {
                Target::Template(id) => id,
                Target::Configuration(target) => {
                    run_configuration::copy(api, pipeline, &target, &image_id, progress).await?;
                    return Ok(Advanced::Moved);
                }
            };
            let version = api
                .create_version(
                    &template_id,
                    pipeline.source_version,
                    &image_id,
                    &pipeline.id,
                    &format!("lifeguard: {image_id} (pipeline {})", pipeline.id),
                )
                .await?;
            pipeline.new_version = Some(version);
            save(api, pipeline, Stage::Promote).await?;
            progress.event(
                pipeline,
                &format!(
                    "version {version} from version {} with image {image_id}",
                    pipeline.source_version
                ),
            );
        }
        Step::Promote { version, image_id } => {
            let (template_id, version) = match (pipeline.target.clone(), version) {
                (Target::Template(id), Some(version)) => (id, version),
                (Target::Configuration(target), _) => {
                    run_configuration::switch(api, pipeline, &target, &image_id, progress).await?;
                    return Ok(Advanced::Moved);
                }
                (Target::Template(_), None) => {
                    return Err(refused(pipeline, "ModifyLaunchTemplate", "no new version"));
                }
            };
            if pipeline.previous_default.is_none() {
                // A record from before pipelines noted it at their start. Recorded before the
                // change, so a retry after it must not take the new version for the old one;
                // and never the new version itself (another actor promoted it already).
                let current = template_of(api, pipeline).await?.default_version;
                if current != version {
                    pipeline.previous_default = Some(current);
                    save(api, pipeline, Stage::Promote).await?;
                }
            }
            api.set_default_version(&template_id, version).await?;
            if let Some(parameter) = &pipeline.parameter {
                api.put_parameter(parameter, &image_id).await?;
            }
            let next = if pipeline.roll.is_some() {
                pipeline.roll_started = Some(OffsetDateTime::now_utc());
                Stage::Roll
            } else {
                Stage::Prune
            };
            save(api, pipeline, next).await?;
            progress.event(
                pipeline,
                &match &pipeline.parameter {
                    Some(parameter) => {
                        format!("version {version} is the default; {parameter} = {image_id}")
                    }
                    None => format!("version {version} is the default"),
                },
            );
        }
        Step::Builder => return builder_step(api, pipeline, poll, progress).await,
        Step::RetireBuilder => {
            save(api, pipeline, Stage::RetireBuilder).await?;
            progress.event(pipeline, "image available");
        }
        Step::Roll => return roll_step(api, pipeline, poll, progress).await,
        Step::Prune if pipeline.keep == super::start::KEEP_ALL => {
            save(api, pipeline, Stage::Done).await?;
            progress.event(
                pipeline,
                &format!(
                    "done in {}",
                    humanize(OffsetDateTime::now_utc() - pipeline.started_at)
                ),
            );
        }
        Step::Prune => {
            if let Target::Configuration(target) = pipeline.target.clone() {
                run_configuration::retire_source(api, pipeline, &target, progress).await?;
                return Ok(Advanced::Moved);
            }
            let template = template_of(api, pipeline).await?;
            let pruned = prune(api, &template, pipeline.keep, pipeline.deregister).await?;
            save(api, pipeline, Stage::Done).await?;
            progress.event(
                pipeline,
                &format!(
                    "pruned versions {:?}, images {:?}, snapshots {:?}{}; done in {}",
                    pruned.versions,
                    pruned.images,
                    pruned.snapshots,
                    if pruned.refused.is_empty() {
                        String::new()
                    } else {
                        format!(" (EC2 kept {:?})", pruned.refused)
                    },
                    humanize(OffsetDateTime::now_utc() - pipeline.started_at)
                ),
            );
        }
        Step::Fail { reason } => {
            fail(api, pipeline, reason).await?;
            progress.event(pipeline, "failed");
            return Ok(Advanced::Ended);
        }
        Step::Finished => return Ok(Advanced::Ended),
    }
    Ok(Advanced::Moved)
}

/// One step of the roll: start the next group's refresh, wait for those running, or end.
async fn roll_step<A: ImageApi>(
    api: &A,
    pipeline: &mut Pipeline,
    poll: Duration,
    progress: &mut impl Progress,
) -> Result<Advanced, FleetError> {
    let Some(roll) = pipeline.roll.clone() else {
        save(api, pipeline, Stage::Prune).await?;
        return Ok(Advanced::Moved);
    };
    let template = template_of(api, pipeline).await?;
    // A refresh started a little before the recorded start (clocks differ) still counts.
    let since = pipeline.roll_started.unwrap_or(pipeline.started_at) - time::Duration::minutes(5);
    let mut groups = Vec::new();
    for (group, version) in api.groups_of_template(&template).await? {
        let refresh = api
            .latest_refresh(&group)
            .await?
            .filter(|r| r.started_at.is_none_or(|at| at >= since));
        groups.push(GroupRoll {
            group,
            pinned: version.and_then(|v| v.parse().ok()),
            refresh,
        });
    }
    match next(&groups) {
        RollStep::Start { group, pinned } => {
            let version = pipeline.new_version.unwrap_or(template.latest_version);
            let desired = pinned.then_some((template.id.as_str(), version));
            let id = api.start_refresh(&group, &roll, desired).await?;
            progress.event(
                pipeline,
                &format!(
                    "instance refresh {id} of {group} started{}",
                    if pinned {
                        format!(" to version {version}, rolling back on failure")
                    } else {
                        String::new()
                    }
                ),
            );
            Ok(Advanced::Moved)
        }
        RollStep::Wait { detail } => {
            let now = OffsetDateTime::now_utc();
            progress.waiting(pipeline, now - pipeline.started_at, &detail);
            Ok(Advanced::Wait(poll))
        }
        RollStep::Done => {
            save(api, pipeline, Stage::Prune).await?;
            progress.event(
                pipeline,
                &format!("{} group(s) rolled onto the new version", groups.len()),
            );
            Ok(Advanced::Moved)
        }
        RollStep::Fail { mut reason } => {
            // The new version did not prove itself: new launches go back to what the template
            // launched before (groups pinned to a number were rolled back by Auto Scaling).
            if let Some(previous) = pipeline.previous_default
                && template.default_version != previous
            {
                api.set_default_version(&template.id, previous).await?;
                reason.push_str(&format!(
                    "; the template's default is back at version {previous}{}",
                    match &pipeline.parameter {
                        Some(parameter) => format!(" ({parameter} still names the new image)"),
                        None => String::new(),
                    }
                ));
            }
            fail(api, pipeline, reason).await?;
            progress.event(pipeline, "failed");
            Ok(Advanced::Ended)
        }
    }
}

pub(super) async fn save<A: ImageApi>(
    api: &A,
    pipeline: &mut Pipeline,
    stage: Stage,
) -> Result<(), FleetError> {
    pipeline.stage = stage;
    write_record(api, pipeline).await
}

/// The pipeline's record, where it lives: the template's tags, or the group's.
pub async fn write_record<A: ImageApi>(api: &A, pipeline: &Pipeline) -> Result<(), FleetError> {
    match &pipeline.target {
        Target::Template(id) => api.tag_template(id, &pipeline.to_tags()).await,
        Target::Configuration(target) => api.tag_group(&target.group, &pipeline.to_tags()).await,
    }
}

pub(super) async fn fail<A: ImageApi>(
    api: &A,
    pipeline: &mut Pipeline,
    reason: String,
) -> Result<(), FleetError> {
    super::run_builder::retire_builder_of_failed(api, pipeline).await?;
    pipeline.reason = Some(reason);
    save(api, pipeline, Stage::Failed).await
}

async fn template_of<A: ImageApi>(
    api: &A,
    pipeline: &Pipeline,
) -> Result<TemplateView, FleetError> {
    let Some(template_id) = pipeline.template_id() else {
        return Err(refused(
            pipeline,
            "DescribeLaunchTemplates",
            "a launch-configuration pipeline has no template",
        ));
    };
    api.template(template_id)
        .await?
        .ok_or_else(|| refused(pipeline, "DescribeLaunchTemplates", "the template is gone"))
}

fn refused(pipeline: &Pipeline, operation: &'static str, message: &str) -> FleetError {
    FleetError {
        operation,
        subject: pipeline.key().to_string(),
        message: message.to_string(),
        transient: false,
        code: None,
    }
}

/// Why a new pipeline may not start on this template now, if it may not.
pub fn refuse_start(template: &TemplateView) -> Result<Option<String>, String> {
    match Pipeline::from_tags(&template.id, &template.tags)? {
        Some(running) if running.stage.is_running() => Ok(Some(format!(
            "pipeline {} on {} ({}) is at stage {} since {}; resume it with `image resume --template {}`",
            running.id,
            template.name,
            template.id,
            running.stage.as_str(),
            crate::marks::format_time(running.started_at),
            template.name
        ))),
        _ => Ok(None),
    }
}
