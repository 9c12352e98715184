//! The launch-configuration path's effects, each recorded in the group's tags before the next:
//! copy the configuration with the new image, switch the group to the copy, delete the source
//! if asked.

use super::api::ImageApi;
use super::configuration::{COPY_MARK, Deleted};
use super::pipeline::{ConfigurationTarget, Pipeline, Stage};
use super::run::{Progress, save};
use crate::fleet::FleetError;

/// `version` for a configuration: the copy, named after the pipeline so a retry finds it.
pub(super) async fn copy<A: ImageApi>(
    api: &A,
    pipeline: &mut Pipeline,
    target: &ConfigurationTarget,
    image_id: &str,
    progress: &mut impl Progress,
) -> Result<(), FleetError> {
    let Some(name) = pipeline.configuration_copy_name() else {
        return Ok(());
    };
    api.copy_configuration(&target.source, &name, image_id)
        .await?;
    save(api, pipeline, Stage::Promote).await?;
    progress.event(
        pipeline,
        &format!(
            "launch configuration {name}: {} with image {image_id}",
            target.source
        ),
    );
    Ok(())
}

/// `promote` for a configuration: the group launches from the copy from now on.
pub(super) async fn switch<A: ImageApi>(
    api: &A,
    pipeline: &mut Pipeline,
    target: &ConfigurationTarget,
    image_id: &str,
    progress: &mut impl Progress,
) -> Result<(), FleetError> {
    let Some(name) = pipeline.configuration_copy_name() else {
        return Ok(());
    };
    api.use_configuration(&target.group, &name).await?;
    if let Some(parameter) = &pipeline.parameter {
        api.put_parameter(parameter, image_id).await?;
    }
    save(api, pipeline, Stage::Prune).await?;
    progress.event(
        pipeline,
        &match &pipeline.parameter {
            Some(parameter) => format!(
                "{} launches from {name}; {parameter} = {image_id}",
                target.group
            ),
            None => format!("{} launches from {name}", target.group),
        },
    );
    Ok(())
}

/// `prune` for a configuration: the source goes if asked and nothing else uses it.
pub(super) async fn retire_source<A: ImageApi>(
    api: &A,
    pipeline: &mut Pipeline,
    target: &ConfigurationTarget,
    progress: &mut impl Progress,
) -> Result<(), FleetError> {
    let outcome = if target.delete_source && !target.source.contains(COPY_MARK) {
        format!(
            "kept launch configuration {}: lifeguard deletes only its own copies (named \
             …{COPY_MARK}…)",
            target.source
        )
    } else if target.delete_source {
        match api.delete_configuration(&target.source).await? {
            Deleted::Deleted => format!("deleted launch configuration {}", target.source),
            Deleted::Kept(why) => format!("kept launch configuration {}: {why}", target.source),
        }
    } else {
        format!("kept launch configuration {}", target.source)
    };
    save(api, pipeline, Stage::Done).await?;
    progress.event(
        pipeline,
        &format!(
            "{outcome}; done in {}",
            super::pipeline::humanize(time::OffsetDateTime::now_utc() - pipeline.started_at)
        ),
    );
    Ok(())
}
