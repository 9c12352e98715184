//! `lifeguard-agent archive --upload`: the logs of a live instance, to S3, now. The same
//! archive and upload a drain makes (reason `manual`), without steps or lifecycle action; for
//! an operator chasing an incident, and the path the upload benchmark measures.

use std::process::ExitCode;

use lifeguard_common::aws::{instance_sdk_config, s3_client};
use tokio::time::{Duration, Instant};

use crate::cli::{EXIT_CONFIG, EXIT_IO, EXIT_SOFTWARE, EXIT_UNAVAILABLE};
use crate::config::AgentConfig;
use crate::drain::DrainPlan;
use crate::drain::machine::DrainRecord;
use crate::imds::{self, HttpImds};
use crate::lifecycle::{AutoScaling, AwsAutoScaling};
use crate::pack;
use crate::upload::S3Store;
use crate::watch::Trigger;

pub fn upload_now(config: &AgentConfig) -> ExitCode {
    let Some(upload) = &config.upload else {
        eprintln!("lifeguard-agent: archive --upload needs an [upload] table in the configuration");
        return ExitCode::from(EXIT_CONFIG);
    };
    let runtime = match crate::cli::runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let deadline = Instant::now() + Duration::from_secs(upload.timeout_secs);
    runtime.block_on(async {
        let metadata = match HttpImds::new(&config.imds) {
            Ok(metadata) => metadata,
            Err(error) => {
                eprintln!("lifeguard-agent: IMDS client: {error}");
                return ExitCode::from(EXIT_SOFTWARE);
            }
        };
        let instance_id = match imds::instance_id(&metadata).await {
            Ok(id) => id,
            Err(error) => {
                eprintln!("lifeguard-agent: reading the instance id: {error}");
                return ExitCode::from(EXIT_UNAVAILABLE);
            }
        };
        let mut aws = config.aws.clone();
        if aws.region.is_none() {
            match imds::region(&metadata).await {
                Ok(region) => aws.region = Some(region),
                Err(error) => {
                    eprintln!("lifeguard-agent: region unknown (set aws.region): {error}");
                    return ExitCode::from(EXIT_UNAVAILABLE);
                }
            }
        }
        let sdk = instance_sdk_config(&aws, &config.imds.base_url).await;
        let asg = match &config.instance.asg {
            Some(asg) => Some(asg.clone()),
            None => AwsAutoScaling::new(aws_sdk_autoscaling::Client::new(&sdk))
                .membership(&instance_id)
                .await
                .unwrap_or_else(|error| {
                    tracing::warn!(%instance_id, %error, "group unknown; the key says no-group");
                    None
                })
                .map(|membership| membership.asg),
        };
        let plan = DrainPlan {
            instance_id: instance_id.clone(),
            asg,
            trigger: Trigger::Manual,
            hook: None,
            // No steps run, so no step outputs: a directory that does not exist.
            work_dir: pack::work_dir_for(&config.state.path).with_file_name("manual-archive"),
        };
        let record = DrainRecord::new(
            &instance_id,
            &Trigger::Manual,
            None,
            time::OffsetDateTime::now_utc(),
        );
        let store =
            S3Store::new(s3_client(&sdk, &aws)).with_identity(aws_sdk_sts::Client::new(&sdk));
        let writer_id = match pack::writer_id(&store, config).await {
            Ok(id) => id,
            Err(error) => {
                eprintln!("lifeguard-agent: {error}");
                return ExitCode::from(EXIT_UNAVAILABLE);
            }
        };
        let job = pack::PackJob::new(config, &plan, &record, &writer_id);
        match pack::archive_and_upload(&store, job, deadline).await {
            Ok(summary) => {
                println!(
                    "s3://{}/{}: {} bytes, sha256 {}, {} files, {} skipped",
                    summary.bucket,
                    summary.key,
                    summary.bytes,
                    summary.sha256,
                    summary.files,
                    summary.skipped_files
                );
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("lifeguard-agent: {error}");
                ExitCode::from(EXIT_IO)
            }
        }
    })
}
