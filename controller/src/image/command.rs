//! `lifeguard-controller image bake|resume|prune|status`: the pipeline run from an operator's
//! machine, with a live line while it waits and `--dry-run` printing the calls it would make.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::api::{ImageApi, ImageState, TemplateView};
use super::dry_run::DryRun;
use super::pipeline::{Pipeline, Stage, humanize};
use super::prune::prune;
use super::roll::Roll;
use super::run::refuse_start;
use super::run::{Progress, drive, write_record};
pub use super::start::{BakeFrom, BakeRequest, ConfigurationRequest, MAX_AVAILABLE_WITHIN_SECS};
use super::start::{bake_pipeline, configuration_pipeline, resolve_version, roll_pipeline};
use crate::fleet::FleetError;

/// How a command ended, for the exit code.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    Done,
    /// The pipeline failed; the reason was printed.
    Failed,
    /// Not started: another pipeline holds the template, or the request cannot be met.
    Refused(String),
}

/// Terminal: one line rewritten in place while waiting. Otherwise: plain lines, a waiting line
/// at most once a minute.
pub struct Display {
    started: Instant,
    terminal: bool,
    last_wait_line: Option<Instant>,
    pending_line: bool,
}

impl Display {
    pub fn new() -> Self {
        Display {
            started: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
            last_wait_line: None,
            pending_line: false,
        }
    }

    fn line(&mut self, text: &str) {
        let mut err = std::io::stderr().lock();
        if self.pending_line {
            let _ = write!(err, "\r\x1b[2K");
            self.pending_line = false;
        }
        let _ = writeln!(err, "[{:>6}] {text}", humanize_std(self.started.elapsed()));
    }
}

impl Default for Display {
    fn default() -> Self {
        Display::new()
    }
}

fn humanize_std(elapsed: Duration) -> String {
    humanize(time::Duration::try_from(elapsed).unwrap_or(time::Duration::ZERO))
}

impl Progress for Display {
    fn event(&mut self, pipeline: &Pipeline, what: &str) {
        let next = if pipeline.stage.is_running() {
            format!(" (next: {})", pipeline.stage.as_str())
        } else {
            String::new()
        };
        self.line(&format!("{}: {what}{next}", pipeline.id));
    }

    fn waiting(&mut self, pipeline: &Pipeline, elapsed: time::Duration, detail: &str) {
        let text = format!(
            "{} {}: waiting {} ({detail})",
            pipeline.id,
            pipeline.stage.as_str(),
            humanize(elapsed)
        );
        if self.terminal {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K{text}");
            let _ = err.flush();
            self.pending_line = true;
        } else if self
            .last_wait_line
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(60))
        {
            self.last_wait_line = Some(Instant::now());
            self.line(&text);
        }
    }
}

async fn find_template<A: ImageApi>(api: &A, name_or_id: &str) -> Result<TemplateView, Ended> {
    match api.template(name_or_id).await {
        Ok(Some(template)) => Ok(template),
        Ok(None) => Err(Ended::Refused(format!("no launch template {name_or_id:?}"))),
        Err(error) => Err(Ended::Refused(error.to_string())),
    }
}

/// Starts a pipeline that bakes from an instance, and drives it to its end.
pub async fn bake<A: ImageApi>(api: &A, request: &BakeRequest) -> Result<Ended, FleetError> {
    let template = match find_template(api, &request.template).await {
        Ok(template) => template,
        Err(ended) => return Ok(ended),
    };
    let pipeline = match bake_pipeline(&template, request, OffsetDateTime::now_utc()) {
        Ok(pipeline) => pipeline,
        Err(why) => return Ok(Ended::Refused(why)),
    };
    run_to_end(api, pipeline, request.poll, request.dry_run).await
}

/// Starts a pipeline for a group that launches from a launch configuration, and drives it to
/// its end.
pub async fn bake_group<A: ImageApi>(
    api: &A,
    group: &ConfigurationRequest,
    request: &BakeRequest,
) -> Result<Ended, FleetError> {
    let found = match api.group_configuration(&group.group).await? {
        Some(found) => found,
        None => return Ok(Ended::Refused(format!("no group {:?}", group.group))),
    };
    let pipeline = match configuration_pipeline(&found, group, request, OffsetDateTime::now_utc()) {
        Ok(pipeline) => pipeline,
        Err(why) => return Ok(Ended::Refused(why)),
    };
    run_to_end(api, pipeline, request.poll, request.dry_run).await
}

/// Where a pipeline to resume is recorded.
pub enum Holder<'a> {
    Template(&'a str),
    Group(&'a str),
}

/// Drives the pipeline recorded on the template (or group) from where it stopped.
pub async fn resume<A: ImageApi>(
    api: &A,
    holder: Holder<'_>,
    poll: Duration,
    dry_run: bool,
) -> Result<Ended, FleetError> {
    let (name, id, recorded) = match holder {
        Holder::Template(template) => {
            let template = match find_template(api, template).await {
                Ok(template) => template,
                Err(ended) => return Ok(ended),
            };
            let recorded = Pipeline::from_tags(&template.id, &template.tags);
            (template.name, template.id, recorded)
        }
        Holder::Group(group) => match api.group_configuration(group).await? {
            Some(found) => {
                let recorded = Pipeline::from_group_tags(&found.name, &found.tags);
                (found.name.clone(), found.name, recorded)
            }
            None => return Ok(Ended::Refused(format!("no group {group:?}"))),
        },
    };
    match recorded {
        Ok(Some(pipeline)) if pipeline.stage.is_running() => {
            run_to_end(api, pipeline, poll, dry_run).await
        }
        // Nothing left to do: said as the run that ended it would have said it, so a resume
        // racing another one ends the same way.
        Ok(Some(pipeline)) if pipeline.stage == Stage::Done => {
            eprintln!(
                "lifeguard-controller: image pipeline {} on {} is already done",
                pipeline.id, name
            );
            Ok(Ended::Done)
        }
        Ok(Some(pipeline)) => {
            eprintln!(
                "lifeguard-controller: image pipeline {} on {} failed: {}",
                pipeline.id,
                name,
                pipeline.reason.as_deref().unwrap_or("no reason recorded")
            );
            Ok(Ended::Failed)
        }
        Ok(None) => Ok(Ended::Refused(format!("no pipeline on {}", name))),
        Err(why) => Ok(Ended::Refused(format!(
            "the lifeguard:image:* tags of {} do not read as a pipeline: {why}",
            id
        ))),
    }
}

async fn run_to_end<A: ImageApi>(
    api: &A,
    pipeline: Pipeline,
    poll: Duration,
    dry_run: bool,
) -> Result<Ended, FleetError> {
    let mut display = Display::new();
    // The record first: a run killed before CreateImage answers leaves a pipeline that
    // `image resume` (or the service's reconcile) finds and finishes.
    let ended = if dry_run {
        let dry = DryRun::new(api);
        write_record(&dry, &pipeline).await?;
        let ended = drive(&dry, pipeline, poll, &mut display).await?;
        print_calls(&dry.calls());
        ended
    } else {
        write_record(api, &pipeline).await?;
        drive(api, pipeline, poll, &mut display).await?
    };
    Ok(match ended.stage {
        Stage::Done => Ended::Done,
        _ => {
            eprintln!(
                "lifeguard-controller: image pipeline {} failed: {}",
                ended.id,
                ended.reason.as_deref().unwrap_or("no reason recorded")
            );
            Ended::Failed
        }
    })
}

fn print_calls(calls: &[String]) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "dry run: the calls that would change something, in order:"
    );
    for call in calls {
        let _ = writeln!(out, "  {call}");
    }
}

/// Makes `version` the default once its image is available, and publishes its AMI id.
pub async fn promote<A: ImageApi>(
    api: &A,
    template: &str,
    version: &str,
    parameter: Option<&str>,
    dry_run: bool,
) -> Result<Ended, FleetError> {
    let template = match find_template(api, template).await {
        Ok(template) => template,
        Err(ended) => return Ok(ended),
    };
    match refuse_start(&template) {
        Ok(None) => {}
        Ok(Some(why)) | Err(why) => return Ok(Ended::Refused(why)),
    }
    let number = match resolve_version(&template, version) {
        Ok(number) => number,
        Err(why) => return Ok(Ended::Refused(why)),
    };
    let versions = api.versions(&template.id).await?;
    let Some(image_id) = versions
        .iter()
        .find(|v| v.number == number)
        .and_then(|v| v.image_id.clone())
    else {
        return Ok(Ended::Refused(format!(
            "version {number} of {} names no image",
            template.name
        )));
    };
    match api.image(&image_id).await? {
        Some(image) if image.state == ImageState::Available => {}
        Some(image) => {
            return Ok(Ended::Refused(format!(
                "version {number} names {image_id}, which is {}: a template's default never \
                 names an image that is not available",
                image.state.as_str()
            )));
        }
        None => {
            return Ok(Ended::Refused(format!(
                "version {number} names {image_id}, which no longer exists"
            )));
        }
    }
    if dry_run {
        let dry = DryRun::new(api);
        publish(&dry, &template.id, number, parameter, &image_id).await?;
        print_calls(&dry.calls());
        return Ok(Ended::Done);
    }
    publish(api, &template.id, number, parameter, &image_id).await?;
    println!(
        "{}: version {number} ({image_id}) is the default{}",
        template.name,
        parameter
            .map(|p| format!("; {p} = {image_id}"))
            .unwrap_or_default()
    );
    Ok(Ended::Done)
}

async fn publish<B: ImageApi>(
    api: &B,
    template_id: &str,
    version: i64,
    parameter: Option<&str>,
    image_id: &str,
) -> Result<(), FleetError> {
    api.set_default_version(template_id, version).await?;
    if let Some(parameter) = parameter {
        api.put_parameter(parameter, image_id).await?;
    }
    Ok(())
}

/// Refreshes every group on the template onto its default version, and follows the refreshes
/// to their end.
pub async fn roll<A: ImageApi>(
    api: &A,
    template: &str,
    preferences: Roll,
    poll: Duration,
    dry_run: bool,
) -> Result<Ended, FleetError> {
    let template = match find_template(api, template).await {
        Ok(template) => template,
        Err(ended) => return Ok(ended),
    };
    let image_id = api
        .versions(&template.id)
        .await?
        .into_iter()
        .find(|v| v.number == template.default_version)
        .and_then(|v| v.image_id);
    match roll_pipeline(&template, preferences, image_id, OffsetDateTime::now_utc()) {
        Ok(pipeline) => run_to_end(api, pipeline, poll, dry_run).await,
        Err(why) => Ok(Ended::Refused(why)),
    }
}

/// Prunes the template's versions now.
pub async fn prune_now<A: ImageApi>(
    api: &A,
    template: &str,
    keep: u32,
    deregister: bool,
    dry_run: bool,
) -> Result<Ended, FleetError> {
    let template = match find_template(api, template).await {
        Ok(template) => template,
        Err(ended) => return Ok(ended),
    };
    let pruned = if dry_run {
        let dry = DryRun::new(api);
        let pruned = prune(&dry, &template, keep, deregister).await?;
        print_calls(&dry.calls());
        pruned
    } else {
        prune(api, &template, keep, deregister).await?
    };
    if !dry_run {
        println!(
            "{}: deleted versions {:?}; deregistered {:?}; deleted snapshots {:?}",
            template.name, pruned.versions, pruned.images, pruned.snapshots
        );
    }
    for (version, why) in &pruned.refused {
        eprintln!("lifeguard-controller: EC2 kept version {version}: {why}");
    }
    Ok(Ended::Done)
}

/// The template's versions and its pipeline, as JSON.
pub async fn status<A: ImageApi>(api: &A, template: &str) -> Result<serde_json::Value, Ended> {
    let template = find_template(api, template).await?;
    let versions = api
        .versions(&template.id)
        .await
        .map_err(|e| Ended::Refused(e.to_string()))?;
    let pipeline = Pipeline::from_tags(&template.id, &template.tags);
    Ok(serde_json::json!({
        "template_id": template.id,
        "template_name": template.name,
        "default_version": template.default_version,
        "latest_version": template.latest_version,
        "versions": versions.iter().map(|v| serde_json::json!({
            "number": v.number,
            "image_id": v.image_id,
        })).collect::<Vec<_>>(),
        "pipeline": match pipeline {
            Ok(Some(p)) => serde_json::json!({
                "id": p.id,
                "stage": p.stage.as_str(),
                "image_id": p.image_id,
                "source_version": p.source_version,
                "new_version": p.new_version,
                "started_at": crate::marks::format_time(p.started_at),
                "available_by": crate::marks::format_time(p.available_by),
                "reason": p.reason,
            }),
            Ok(None) => serde_json::Value::Null,
            Err(why) => serde_json::json!({ "unreadable": why }),
        },
    }))
}
