//! `lifeguard-controller drill`: the configuration and flags become a [`DrillRequest`]; the
//! report goes to standard output (text or JSON) and, if asked, to an HTML file.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use super::api::DrillApi;
use super::aws::AwsDrill;
use super::plan::Pick;
use super::run::{DrillRequest, Drilled, Live, drill};
use crate::cli::{DrillArgs, DrillOutput};
use crate::config::ControllerConfig;
use crate::fleet::{AwsFleet, FleetError};

/// Something was lost, or an action ended by its timeout.
pub const EXIT_LOSS: u8 = 1;
/// Not started: the group or the request does not allow it (EX_TEMPFAIL).
pub const EXIT_REFUSED: u8 = 75;

pub async fn run(config: &ControllerConfig, args: &DrillArgs) -> Result<ExitCode, FleetError> {
    let settings = config.aws_settings();
    let sdk = lifeguard_common::aws::sdk_config(&settings, None).await;
    let api = AwsDrill::new(
        &sdk,
        &settings,
        AwsFleet::paced(
            &sdk,
            &config.agentless.document,
            std::sync::Arc::new(crate::pace::Pacer::new(config.pacing.rates())),
        ),
    );
    let bucket = match &args.bucket {
        Some(bucket) => bucket.clone(),
        None => match bucket_of(&api, config, &args.group).await? {
            Ok(bucket) => bucket,
            Err(why) => return Ok(refuse(&why)),
        },
    };
    let request = DrillRequest {
        group: args.group.clone(),
        pick: match args.count {
            Some(count) => Pick::Count(count as usize),
            None => Pick::Named(args.instances.clone()),
        },
        keep_capacity: args.keep_capacity,
        timeout: Duration::from_secs(args.timeout),
        bucket,
        prefix: args.archive_prefix.clone(),
        poll: Duration::from_secs(args.poll_secs),
        dry_run: args.dry_run,
    };
    let mut out = std::io::stdout().lock();
    match drill(&api, &request, &mut Live::new()).await? {
        Drilled::Refused(why) => Ok(refuse(&why)),
        Drilled::DryRun(calls) => {
            let _ = writeln!(
                out,
                "dry run: the calls that would change something, in order:"
            );
            for call in calls {
                let _ = writeln!(out, "  {call}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Drilled::Report(report) => {
            let printed = match args.output {
                DrillOutput::Text => super::report::text(&report),
                DrillOutput::Json => serde_json::to_string_pretty(&report).unwrap_or_default(),
            };
            let _ = writeln!(out, "{printed}");
            if let Some(path) = &args.report
                && let Err(error) = std::fs::write(path, super::html::page(&report))
            {
                eprintln!(
                    "lifeguard-controller: drill: writing {}: {error}",
                    path.display()
                );
                return Ok(ExitCode::from(crate::cli::EXIT_SOFTWARE));
            }
            Ok(if report.failed() {
                ExitCode::from(EXIT_LOSS)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

fn refuse(why: &str) -> ExitCode {
    eprintln!("lifeguard-controller: drill: {why}");
    ExitCode::from(EXIT_REFUSED)
}

/// The bucket the group's archives go to, as the controller's policy for it says.
pub(crate) async fn bucket_of<A: DrillApi>(
    api: &A,
    config: &ControllerConfig,
    group: &str,
) -> Result<Result<String, String>, FleetError> {
    let Some(found) = api.group(group).await? else {
        return Ok(Err(format!("no group {group:?}")));
    };
    let policy = match config.policy_for(group, &found.tags) {
        Ok(policy) => policy,
        Err(why) => return Ok(Err(why)),
    };
    Ok(policy.agentless_archive.map(|a| a.bucket).ok_or_else(|| {
        format!(
            "no archive bucket for {group}: give --bucket, or set the group's archive bucket \
             (configuration or the lifeguard:archive-bucket tag)"
        )
    }))
}
