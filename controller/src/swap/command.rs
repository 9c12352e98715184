//! `lifeguard-controller swap`: flags to a swap or a recovery; progress on standard error,
//! the outcome on standard output.

use std::process::ExitCode;
use std::time::Duration;

use super::aws::AwsSwap;
use super::run::{SwapOptions, Swapped, recover, swap};
use crate::cli::SwapArgs;
use crate::config::ControllerConfig;
use crate::drill::command::{EXIT_LOSS, EXIT_REFUSED};
use crate::fleet::{AwsFleet, FleetError};

pub async fn run(config: &ControllerConfig, args: &SwapArgs) -> Result<ExitCode, FleetError> {
    let settings = config.aws_settings();
    let sdk = lifeguard_common::aws::sdk_config(&settings, None).await;
    let api = AwsSwap::new(&sdk, AwsFleet::new(&sdk, &config.agentless.document));
    let options = SwapOptions {
        healthy_timeout: Duration::from_secs(args.healthy_timeout),
        drain_timeout: Duration::from_secs(args.timeout),
        poll: Duration::from_secs(args.poll_secs),
    };
    let mut say = |line: &str| {
        tracing::info!(asg = %args.group, "swap: {line}");
        eprintln!("{line}");
    };
    let swapped = if args.recover {
        recover(&api, &args.group, options, &mut say).await?
    } else {
        swap(
            &api,
            &args.group,
            &args.retire,
            &args.attach,
            args.dry_run,
            options,
            &mut say,
        )
        .await?
    };
    let (line, code) = outcome(&swapped);
    println!("{line}");
    Ok(ExitCode::from(code))
}

/// The outcome's line and exit code.
pub fn outcome(swapped: &Swapped) -> (String, u8) {
    match swapped {
        Swapped::Done {
            record,
            unfinished: None,
        } => (
            format!(
                "swapped: {} replaced {} in service; sizes and processes as before",
                record.attach.join(","),
                record.retire.join(",")
            ),
            0,
        ),
        Swapped::Done {
            record,
            unfinished: Some(what),
        } => (
            format!(
                "swap {} finished with problems: {what}; sizes and processes restored",
                record.id
            ),
            EXIT_LOSS,
        ),
        Swapped::RolledBack { record, reason } => (
            format!(
                "swap {} rolled back: {reason}; {} detached, the group as it was",
                record.id,
                record.attach.join(",")
            ),
            EXIT_LOSS,
        ),
        Swapped::Refused(why) => (format!("swap refused: {why}"), EXIT_REFUSED),
        Swapped::DryRun(calls) => {
            let mut text =
                String::from("dry run: the calls that would change something, in order:");
            for call in calls {
                text.push_str("\n  ");
                text.push_str(call);
            }
            (text, 0)
        }
    }
}
