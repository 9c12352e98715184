//! Command line: `run` (the service), `validate` (for `ExecStartPre`), `drain --dry-run` and
//! `archive --output FILE` (what a drain would do and what its archive would hold, without
//! AWS). Exit codes follow sysexits(3).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use lifeguard_common::aws::{AwsSettings, instance_sdk_config, s3_client};

use crate::config::{AgentConfig, DEFAULT_PATH, LogFormat};
use crate::drain::Deps;
use crate::imds::{self, HttpImds};
use crate::lazy::OnFirstUse;
use crate::lifecycle::AwsAutoScaling;
use crate::report::{NoReports, ReportSink, SqsReports};
use crate::run::Agent;
use crate::upload::S3Store;
use crate::{archive, pack, service};

pub const EXIT_SOFTWARE: u8 = 70;
pub const EXIT_UNAVAILABLE: u8 = 69;
pub const EXIT_IO: u8 = 74;
pub const EXIT_CONFIG: u8 = 78;
pub const EXIT_DATAERR: u8 = 65;

#[derive(Debug, Parser)]
#[command(
    name = "lifeguard-agent",
    version,
    about = "Drains an EC2 Auto Scaling instance gracefully before it leaves"
)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, short, global = true, default_value = DEFAULT_PATH, env = "LIFEGUARD_AGENT_CONFIG")]
    pub config: PathBuf,
    /// Log format; default: the configuration's `log.format`.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormatArg>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    Json,
    Compact,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Watch the instance and drain it when it leaves (the systemd service).
    Run,
    /// Check the configuration and exit: 0 if valid, 78 with the file, line and key if not.
    Validate,
    /// Print what a drain would do: the steps in order and the archive's files, without
    /// running anything or calling AWS.
    Drain {
        /// Required: the agent drains only when its instance leaves.
        #[arg(long, required = true)]
        dry_run: bool,
    },
    /// Build the archive a drain would upload: into a local file without AWS (`--output`), or
    /// to the configured bucket now, reason `manual` (`--upload`).
    Archive {
        #[arg(
            long,
            short,
            conflicts_with = "upload",
            required_unless_present = "upload"
        )]
        output: Option<PathBuf>,
        #[arg(long)]
        upload: bool,
    },
    /// Run one drain step for the agent (started by `lifeguard-step@.service`, one per
    /// connection to `lifeguard-step.socket`, the connection as standard input and output).
    StepExec,
    /// Order the units the drain stops after the agent (a drop-in for its unit), so at
    /// shutdown they stop first; run at image-bake time, after the configuration is in place.
    OrderUnits {
        /// Where unit drop-ins go.
        #[arg(long, default_value = "/etc/systemd/system")]
        unit_dir: PathBuf,
    },
}

pub fn main_with(cli: Cli) -> ExitCode {
    let config = match AgentConfig::load(&cli.config) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("lifeguard-agent: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match cli.command {
        Command::Validate => {
            println!("{}: valid", cli.config.display());
            ExitCode::SUCCESS
        }
        Command::Drain { .. } => dry_run(&config),
        Command::Archive {
            output: Some(output),
            ..
        } => archive_to_file(&config, &output),
        Command::Archive { output: None, .. } => {
            lifeguard_common::logging::init(LogFormat::Compact, &config.log.level);
            crate::manual::upload_now(&config)
        }
        Command::OrderUnits { unit_dir } => {
            match crate::units::write(&config, &cli.config, &unit_dir) {
                Ok(done) => {
                    println!("{done}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!(
                        "lifeguard-agent: ordering units under {}: {error}",
                        unit_dir.display()
                    );
                    ExitCode::from(EXIT_IO)
                }
            }
        }
        Command::StepExec => {
            lifeguard_common::logging::init(LogFormat::Compact, &config.log.level);
            step_exec(&config)
        }
        Command::Run => {
            let format = match cli.log_format {
                Some(LogFormatArg::Json) => LogFormat::Json,
                Some(LogFormatArg::Compact) => LogFormat::Compact,
                None => config.log.format,
            };
            lifeguard_common::logging::init(format, &config.log.level);
            match runtime() {
                Ok(runtime) => runtime.block_on(run(config, cli.config)),
                Err(code) => code,
            }
        }
    }
}

/// Serves the one request on the connection systemd handed over as standard input.
fn step_exec(config: &AgentConfig) -> ExitCode {
    use std::os::fd::AsFd;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "starting the runtime");
            return ExitCode::from(EXIT_SOFTWARE);
        }
    };
    // systemd passes the accepted connection as both standard input and output.
    let connection = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map(std::os::unix::net::UnixStream::from)
        .and_then(|stream| {
            stream.set_nonblocking(true)?;
            Ok(stream)
        });
    let served = runtime.block_on(async {
        let stream = connection
            .and_then(tokio::net::UnixStream::from_std)
            .map_err(|e| format!("standard input is not the runner's connection: {e}"))?;
        let (input, output) = stream.into_split();
        crate::step_runner::serve(config, input, output).await
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "drain step not run to its end");
            ExitCode::from(EXIT_DATAERR)
        }
    }
}

/// The agent's runtime: two workers are plenty for its I/O; archiving runs on blocking threads.
pub fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|error| {
            eprintln!("lifeguard-agent: starting the runtime: {error}");
            ExitCode::from(EXIT_SOFTWARE)
        })
}

async fn run(config: AgentConfig, config_path: PathBuf) -> ExitCode {
    let (shutdown, reload) = match service::install_signals() {
        Ok(pair) => pair,
        Err(error) => {
            tracing::error!(%error, "installing signal handlers");
            return ExitCode::from(EXIT_SOFTWARE);
        }
    };
    let metadata = match HttpImds::new(&config.imds) {
        Ok(metadata) => metadata,
        Err(error) => {
            tracing::error!(%error, "IMDS client");
            return ExitCode::from(EXIT_SOFTWARE);
        }
    };
    let mut aws = config.aws.clone();
    if aws.region.is_none() {
        match imds::region(&metadata).await {
            Ok(region) => aws.region = Some(region),
            Err(error) => {
                tracing::error!(%error, "region unknown: set aws.region or make IMDS reachable");
                return ExitCode::from(EXIT_UNAVAILABLE);
            }
        }
    }
    // The SDK is loaded, and its clients built, when a drain or a launch first needs them.
    let sdk = {
        let aws = aws.clone();
        let imds_url = config.imds.base_url.clone();
        Arc::new(OnFirstUse::new(move || {
            let (aws, imds_url) = (aws.clone(), imds_url.clone());
            async move { instance_sdk_config(&aws, &imds_url).await }
        }))
    };
    let store = config.upload.as_ref().map(|_| {
        let (sdk, aws) = (sdk.clone(), aws.clone());
        OnFirstUse::new(move || {
            let (sdk, aws) = (sdk.clone(), aws.clone());
            async move {
                let sdk = sdk.get().await;
                S3Store::new(s3_client(sdk, &aws)).with_identity(aws_sdk_sts::Client::new(sdk))
            }
        })
    });
    let autoscaling = {
        let sdk = sdk.clone();
        OnFirstUse::new(move || {
            let sdk = sdk.clone();
            async move { AwsAutoScaling::new(aws_sdk_autoscaling::Client::new(sdk.get().await)) }
        })
    };
    let outcome = match &config.report.queue_url {
        Some(queue_url) => {
            let account = imds::account_id(&metadata).await.unwrap_or_else(|error| {
                tracing::warn!(%error, "account id unknown; reports carry none");
                String::new()
            });
            let (queue_url, region) = (queue_url.clone(), region_of(&aws));
            let reports = OnFirstUse::new(move || {
                let sdk = sdk.clone();
                let (queue_url, region, account) =
                    (queue_url.clone(), region.clone(), account.clone());
                async move {
                    SqsReports::new(
                        aws_sdk_sqs::Client::new(sdk.get().await),
                        queue_url,
                        region,
                        account,
                    )
                }
            });
            serve(
                config,
                config_path,
                metadata,
                autoscaling,
                store,
                reports,
                shutdown,
                reload,
            )
            .await
        }
        None => {
            serve(
                config,
                config_path,
                metadata,
                autoscaling,
                store,
                NoReports,
                shutdown,
                reload,
            )
            .await
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "lifeguard-agent stopped");
            ExitCode::from(EXIT_UNAVAILABLE)
        }
    }
}

fn region_of(aws: &AwsSettings) -> String {
    aws.region.clone().unwrap_or_default()
}

#[allow(clippy::too_many_arguments)]
async fn serve<R: ReportSink + 'static>(
    config: AgentConfig,
    config_path: PathBuf,
    metadata: HttpImds,
    autoscaling: OnFirstUse<AwsAutoScaling>,
    store: Option<OnFirstUse<S3Store>>,
    reports: R,
    shutdown: tokio_util::sync::CancellationToken,
    reload: Arc<tokio::sync::Notify>,
) -> Result<(), crate::run::AgentError> {
    let mut agent = Agent {
        config,
        config_path,
        imds: metadata,
        deps: Arc::new(Deps {
            autoscaling,
            store,
            reports,
        }),
        shutdown,
        reload,
    };
    agent.run().await
}

fn dry_run(config: &AgentConfig) -> ExitCode {
    let mut out = String::new();
    out.push_str("drain steps, in order:\n");
    if config.drain.steps.is_empty() {
        out.push_str("  (none)\n");
    }
    for (index, step) in config.drain.steps.iter().enumerate() {
        let action = match step.action() {
            Ok(action) => format!("{action:?}"),
            Err(problem) => problem,
        };
        out.push_str(&format!(
            "  {}. {}: {action}, timeout {} s, on failure {:?}\n",
            index + 1,
            step.name,
            step.timeout_secs,
            step.on_failure
        ));
    }
    match &config.upload {
        Some(upload) => out.push_str(&format!(
            "archive upload: s3://{}/{}\n",
            upload.bucket, upload.key_template
        )),
        None => out.push_str("archive upload: none configured\n"),
    }
    match archive::plan(&pack::archive_spec(&config.archive)) {
        Ok(plan) => out.push_str(&format!("{plan}")),
        Err(error) => {
            eprintln!("lifeguard-agent: planning the archive: {error}");
            return ExitCode::from(EXIT_IO);
        }
    }
    print!("{out}");
    ExitCode::SUCCESS
}

fn archive_to_file(config: &AgentConfig, output: &Path) -> ExitCode {
    let file = match std::fs::File::create(output) {
        Ok(file) => file,
        Err(error) => {
            eprintln!("lifeguard-agent: creating {}: {error}", output.display());
            return ExitCode::from(EXIT_IO);
        }
    };
    let drain = serde_json::json!({"reason": "manual", "agent_version": env!("CARGO_PKG_VERSION")});
    let writer = std::io::BufWriter::new(file);
    match archive::build_archive(
        &pack::archive_spec(&config.archive),
        &[],
        drain,
        None,
        writer,
    ) {
        Ok(outcome) => {
            let _ = writeln!(
                std::io::stdout(),
                "{}: {} files, {} bytes of logs, {} bytes compressed, {} skipped, {} errors",
                output.display(),
                outcome.manifest.files.len(),
                outcome.content_bytes,
                outcome.compressed_bytes,
                outcome.manifest.totals.skipped,
                outcome.manifest.totals.errors
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!(
                "lifeguard-agent: archiving into {}: {error}",
                output.display()
            );
            ExitCode::from(EXIT_IO)
        }
    }
}
