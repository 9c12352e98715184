//! The builder stages' effects: each is recorded in the template's tags before the next, and
//! each can be repeated (the builder is found again by its tag, the patch by its comment).

use std::time::Duration;

use time::OffsetDateTime;

use super::api::ImageApi;
use super::builder::{
    BUILDER_TAG, BuilderApi, BuilderSpec, BuilderStep, LaunchBuilder, command_comment,
    decide_builder,
};
use super::pipeline::{IMAGE_PIPELINE_TAG, Pipeline, Stage};
use super::run::{Advanced, Progress, fail, save};
use crate::fleet::FleetError;

/// One step of a builder stage.
pub(super) async fn builder_step<A: ImageApi>(
    api: &A,
    pipeline: &mut Pipeline,
    poll: Duration,
    progress: &mut impl Progress,
) -> Result<Advanced, FleetError> {
    let Some(spec) = pipeline.builder.clone() else {
        fail(api, pipeline, "a builder stage without a builder".into()).await?;
        return Ok(Advanced::Ended);
    };
    let builder = match (&pipeline.instance_id, pipeline.stage) {
        (None, Stage::LaunchBuilder) => api.builder_of(&pipeline.id).await?,
        (Some(id), _) => api.instance(id).await?,
        (None, _) => None,
    };
    let invocation = match (&spec.command_id, &builder) {
        (Some(command), Some(builder)) if pipeline.stage == Stage::Patch => {
            api.invocation(command, &builder.id).await?
        }
        _ => None,
    };
    let now = OffsetDateTime::now_utc();
    let poll_for = time::Duration::try_from(poll).unwrap_or(time::Duration::MINUTE);
    match decide_builder(
        pipeline,
        &spec,
        builder.as_ref(),
        invocation.as_ref(),
        now,
        poll_for,
    ) {
        BuilderStep::Launch => {
            let Some(template_id) = pipeline.template_id() else {
                fail(api, pipeline, "builder mode needs a launch template".into()).await?;
                return Ok(Advanced::Ended);
            };
            let request = LaunchBuilder {
                template_id: template_id.to_string(),
                version: pipeline.source_version,
                subnet: spec.subnet.clone(),
                client_token: pipeline.id.clone(),
                tags: builder_tags(pipeline),
            };
            let id = api.launch_builder(&request).await?;
            pipeline.instance_id = Some(id.clone());
            save(api, pipeline, Stage::Patch).await?;
            progress.event(
                pipeline,
                &format!(
                    "builder {id} launched from version {}",
                    pipeline.source_version
                ),
            );
        }
        BuilderStep::Adopt { instance_id } => {
            pipeline.instance_id = Some(instance_id.clone());
            save(api, pipeline, Stage::Patch).await?;
            progress.event(pipeline, &format!("builder {instance_id} found by its tag"));
        }
        BuilderStep::SendPatch { instance_id } => {
            let comment = command_comment(pipeline);
            let command = match api.command_with_comment(&instance_id, &comment).await? {
                Some(sent) => Some(sent),
                None => api.send_patch(&instance_id, &spec, &comment).await?,
            };
            let Some(command) = command else {
                progress.waiting(
                    pipeline,
                    now - pipeline.started_at,
                    &format!("builder {instance_id} not yet registered with SSM"),
                );
                return Ok(Advanced::Wait(poll));
            };
            pipeline.builder = Some(BuilderSpec {
                command_id: Some(command.clone()),
                ..spec
            });
            save(api, pipeline, Stage::Patch).await?;
            progress.event(
                pipeline,
                &format!(
                    "patch {} sent to {instance_id} (command {command})",
                    pipeline
                        .builder
                        .as_ref()
                        .map_or("", |b| b.document.as_str())
                ),
            );
        }
        BuilderStep::Patched => {
            save(api, pipeline, Stage::StopBuilder).await?;
            progress.event(pipeline, "patch succeeded");
        }
        BuilderStep::Stop { instance_id } => {
            api.stop_instance(&instance_id).await?;
            progress.waiting(
                pipeline,
                now - pipeline.started_at,
                &format!("builder {instance_id} asked to stop"),
            );
            return Ok(Advanced::Wait(poll));
        }
        BuilderStep::Stopped => {
            // A stopped instance is imaged as it is: nothing to reboot.
            pipeline.no_reboot = true;
            save(api, pipeline, Stage::Bake).await?;
            progress.event(pipeline, "builder stopped");
        }
        BuilderStep::Terminate => {
            if let Some(id) = pipeline.instance_id.clone() {
                api.terminate_instance(&id).await?;
                progress.event(pipeline, &format!("builder {id} terminated"));
            }
            save(api, pipeline, Stage::Version).await?;
        }
        BuilderStep::Wait { until, detail } => {
            progress.waiting(pipeline, now - pipeline.started_at, &detail);
            let wait = (until - now).max(time::Duration::ZERO);
            return Ok(Advanced::Wait(Duration::try_from(wait).unwrap_or(poll)));
        }
        BuilderStep::Fail { reason } => {
            fail(api, pipeline, reason).await?;
            progress.event(pipeline, "failed");
            return Ok(Advanced::Ended);
        }
    }
    Ok(Advanced::Moved)
}

/// The builder's tags: the policy lets the controller stop, terminate and patch only
/// instances carrying [`BUILDER_TAG`].
fn builder_tags(pipeline: &Pipeline) -> Vec<(String, String)> {
    vec![
        (BUILDER_TAG.to_string(), pipeline.key().to_string()),
        (IMAGE_PIPELINE_TAG.to_string(), pipeline.id.clone()),
    ]
}

/// A failing builder pipeline leaves nothing running: its builder (recorded, or launched by a
/// run that died before recording it) is terminated before the failure is recorded, so a
/// failed termination is tried again.
pub(super) async fn retire_builder_of_failed<A: BuilderApi>(
    api: &A,
    pipeline: &Pipeline,
) -> Result<(), FleetError> {
    if pipeline.builder.is_none() {
        return Ok(());
    }
    let holds_builder = matches!(
        pipeline.stage,
        Stage::LaunchBuilder
            | Stage::Patch
            | Stage::StopBuilder
            | Stage::Bake
            | Stage::AwaitAvailable
            | Stage::RetireBuilder
    );
    if !holds_builder {
        return Ok(());
    }
    let id = match &pipeline.instance_id {
        Some(id) => Some(id.clone()),
        None => api.builder_of(&pipeline.id).await?.map(|b| b.id),
    };
    if let Some(id) = id {
        api.terminate_instance(&id).await?;
    }
    Ok(())
}
