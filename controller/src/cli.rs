//! Command line. Exit codes follow sysexits(3) so scripts can tell bad input from a bad call.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::explain::{self, MAX_INPUT_BYTES, Origin};

/// Input was read but is not a message lifeguard understands (EX_DATAERR).
pub const EXIT_BAD_MESSAGE: u8 = 65;
/// The input could not be read (EX_NOINPUT).
pub const EXIT_NO_INPUT: u8 = 66;
/// Output could not be written (EX_IOERR).
pub const EXIT_IO: u8 = 74;
/// The configuration is wrong (EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;

#[derive(Debug, Parser)]
#[command(
    name = "lifeguard-controller",
    version,
    about = "Watches over every drain of the EC2 Auto Scaling groups it manages"
)]
pub struct Cli {
    /// Configuration file (a missing default file is fine when the environment configures
    /// the queue).
    #[arg(long, short, global = true, default_value = crate::config::DEFAULT_PATH, env = "LIFEGUARD_CONTROLLER_CONFIG")]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller: consume the queue, watch every drain of the managed groups, take
    /// over from silent agents, and serve /healthz, /readyz and /metrics.
    Run,
    /// Print the drains in progress and their recent outcomes, read from AWS.
    Status(StatusArgs),
    /// Check the configuration (file and environment) and exit: 0 if valid, 78 with the file,
    /// line and key if not.
    Validate,
    /// Ask the running controller's health port (the container's health check): exit 0 on
    /// `200 OK`, 1 otherwise, with the answer on standard output.
    Probe {
        /// Address of the health port [default: the configuration's `http.listen`, on
        /// loopback when it binds every interface].
        #[arg(long)]
        address: Option<std::net::SocketAddr>,
        #[arg(long, default_value = "/healthz")]
        path: String,
        #[arg(long, default_value_t = 5)]
        timeout_secs: u64,
    },
    /// Print one JSON object saying what lifeguard understands of a message, and why it would
    /// act on it or ignore it.
    Explain(ExplainArgs),
    /// A scale-in drill: terminate instances of a group through its lifecycle hook, follow
    /// each drain, check each archive in S3, and report what was lost (exit 1 if anything was,
    /// or an action ended by its timeout).
    Drill(DrillArgs),
    /// Replace named instances of a group with named new ones, its scaling processes held:
    /// the new ones in service and healthy first, the old ones drained through the terminate
    /// hook, sizes and processes as before at the end (exit 1 if rolled back).
    Swap(SwapArgs),
    /// The image pipeline: bake an image, move a launch template onto it once it is
    /// available, prune old versions.
    #[command(subcommand)]
    Image(ImageCommand),
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Image an instance, wait until the image is available, add a template version that
    /// changes only its image, make it the default, publish the AMI id, prune.
    Bake(Box<BakeArgs>),
    /// Make a version the default once its image is available, and publish its AMI id (also
    /// the way back to an earlier version).
    Promote(PromoteArgs),
    /// An instance refresh of every group on the template onto its default version, followed
    /// to its end; each replaced instance drains through the terminate hook.
    Roll(RollArgs),
    /// Go on with the pipeline recorded on a template, from where it stopped.
    Resume(ResumeArgs),
    /// Delete old versions (never the default, the latest or one a group or refresh pins).
    Prune(PruneArgs),
    /// The template's versions and its pipeline, as JSON.
    Status(TemplateArg),
}

#[derive(Debug, Args)]
pub struct TemplateArg {
    /// Launch template name or id (`lt-…`).
    #[arg(long)]
    pub template: String,
}

/// A template, or a group that launches from a launch configuration.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct TargetArgs {
    /// Launch template name or id (`lt-…`).
    #[arg(long)]
    pub template: Option<String>,
    /// A group that launches from a launch configuration: the pipeline copies the
    /// configuration with the new image and switches the group to the copy.
    #[arg(long)]
    pub group: Option<String>,
}

#[derive(Debug, Args)]
pub struct BakeArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// With --group: delete the configuration the group leaves once it uses the copy (only a
    /// copy lifeguard made; never one another group uses).
    #[arg(long)]
    pub delete_old_configuration: bool,
    /// The instance to image (a golden instance).
    #[arg(long, required_unless_present = "builder", conflicts_with = "builder")]
    pub instance: Option<String>,
    /// Builder mode: launch a builder from the source version, patch it with an SSM
    /// document, stop it and image it; it is terminated once the image is available or the
    /// pipeline fails.
    #[arg(long)]
    pub builder: bool,
    /// The SSM document that patches the builder [default: AWS-RunPatchBaseline with
    /// Operation=Install, RebootOption=NoReboot].
    #[arg(long, requires = "builder")]
    pub patch_document: Option<String>,
    /// A parameter of the patch document, `NAME=VALUE` (repeat; a name given twice is a list).
    #[arg(long, requires = "builder", value_parser = parse_parameter)]
    pub patch_parameter: Vec<(String, String)>,
    /// Launch the builder into this subnet instead of the template's.
    #[arg(long, requires = "builder")]
    pub builder_subnet: Option<String>,
    /// The version the new one copies: `$Default`, `$Latest` or a number.
    #[arg(long, default_value = "$Default")]
    pub source_version: String,
    /// Image without rebooting the instance. EC2 cannot then guarantee the file system's
    /// integrity in the image: only for instances whose disks are quiet.
    #[arg(long)]
    pub no_reboot: bool,
    #[command(flatten)]
    pub prune: PruneOptions,
    /// SSM parameter that gets the new AMI id (data type `aws:ec2:image`).
    #[arg(long)]
    pub ssm_parameter: Option<String>,
    /// Fail if the image is not available within this many seconds of the start (at most
    /// 48 h); in builder mode this includes the launch, the patch and the stop.
    #[arg(long, default_value_t = 14_400, value_parser = clap::value_parser!(u64).range(60..=crate::image::command::MAX_AVAILABLE_WITHIN_SECS))]
    pub available_within_secs: u64,
    /// After promote, an instance refresh of every group that launches from the template; each
    /// replaced instance leaves through the terminate hook, so its agent drains and archives.
    #[arg(long)]
    pub roll: bool,
    #[command(flatten)]
    pub roll_preferences: RollPreferences,
    #[command(flatten)]
    pub run: RunOptions,
}

#[derive(Debug, Args)]
pub struct RollPreferences {
    /// Percentage of the group kept in service during the roll.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub min_healthy_percentage: u8,
    /// Seconds a new instance warms up before it counts as healthy.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(0..=86_400))]
    pub instance_warmup_secs: u32,
    /// A checkpoint percentage (repeat; ascending, the last 100).
    #[arg(long)]
    pub checkpoint: Vec<u8>,
}

impl RollPreferences {
    fn roll(&self) -> crate::image::roll::Roll {
        crate::image::roll::Roll {
            min_healthy_percentage: self.min_healthy_percentage,
            instance_warmup_secs: self.instance_warmup_secs,
            checkpoints: self.checkpoint.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    #[command(flatten)]
    pub template: TemplateArg,
    /// The version to make the default: a number, or `$Latest`. Its image must be available.
    #[arg(long)]
    pub version: String,
    /// SSM parameter that gets the version's AMI id (data type `aws:ec2:image`).
    #[arg(long)]
    pub ssm_parameter: Option<String>,
    /// Print the calls that would change something instead of making them.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct RollArgs {
    #[command(flatten)]
    pub template: TemplateArg,
    #[command(flatten)]
    pub preferences: RollPreferences,
    #[command(flatten)]
    pub run: RunOptions,
}

#[derive(Debug, Args)]
pub struct PruneOptions {
    /// Versions kept (the newest), besides the default, the latest and pinned ones.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub keep: u32,
    /// Also deregister images this template's pipeline made that no remaining version or
    /// launch configuration uses, and delete their snapshots.
    #[arg(long)]
    pub deregister: bool,
}

#[derive(Debug, Args)]
pub struct RunOptions {
    /// Seconds between looks at a pending image.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=900))]
    pub poll_secs: u64,
    /// Print the calls that would change something instead of making them.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub run: RunOptions,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub template: TemplateArg,
    #[command(flatten)]
    pub prune: PruneOptions,
    /// Print the calls that would change something instead of making them.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["count", "instances"])))]
pub struct DrillArgs {
    /// The group to drill.
    #[arg(long)]
    pub group: String,
    /// How many instances, spread across availability zones.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub count: Option<u32>,
    /// These instances.
    #[arg(long, num_args = 1..)]
    pub instances: Vec<String>,
    /// Keep the desired capacity: the group launches replacements.
    #[arg(long)]
    pub keep_capacity: bool,
    /// Follow the drains this long at most (default: 300 s of deregistration delay and a
    /// 3600 s hook).
    #[arg(long, default_value_t = 3_900, value_parser = clap::value_parser!(u64).range(1..=172_800))]
    pub timeout: u64,
    /// The archive bucket [default: the group's agentless archive bucket, from the
    /// configuration or its `lifeguard:archive-bucket` tag].
    #[arg(long)]
    pub bucket: Option<String>,
    /// The agents' `upload.prefix`.
    #[arg(long, default_value = "lifeguard")]
    pub archive_prefix: String,
    #[arg(long, value_enum, default_value_t = DrillOutput::Text)]
    pub output: DrillOutput,
    /// Also write the report as a self-contained HTML page with a timeline.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Seconds between looks.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub poll_secs: u64,
    /// Print the terminations the drill would make instead of making them.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["retire", "recover"])))]
pub struct SwapArgs {
    #[arg(long)]
    pub group: String,
    /// The instances to replace; each drains through the terminate hook.
    #[arg(long, num_args = 1.., requires = "attach")]
    pub retire: Vec<String>,
    /// Running instances, in no group, to replace them with (one for each).
    #[arg(long, num_args = 1.., requires = "retire")]
    pub attach: Vec<String>,
    /// Finish the swap recorded on the group, or roll it back if it had not begun retiring.
    #[arg(long, conflicts_with_all = ["retire", "attach", "dry_run"])]
    pub recover: bool,
    /// Roll back if the attached instances are not in service and healthy (in every target
    /// group too) within this many seconds.
    #[arg(long, default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub healthy_timeout: u64,
    /// Follow the retired instances out of the group this long at most (default: 300 s of
    /// deregistration delay and a 3600 s hook).
    #[arg(long, default_value_t = 3_900, value_parser = clap::value_parser!(u64).range(1..=172_800))]
    pub timeout: u64,
    /// Seconds between looks.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub poll_secs: u64,
    /// Print the calls the swap would make instead of making them.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DrillOutput {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this group's drains.
    #[arg(long)]
    pub group: Option<String>,
    #[arg(long, value_enum, default_value_t = StatusOutput::Table)]
    pub output: StatusOutput,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusOutput {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// File holding one message body; `-` reads standard input.
    #[arg(default_value = "-")]
    pub input: PathBuf,
    /// What kind of input it is.
    #[arg(long, value_enum, default_value_t = Origin::Auto)]
    pub from: Origin,
    /// Indent the JSON output.
    #[arg(long)]
    pub pretty: bool,
}

/// An internal failure: the runtime or the service could not start (EX_SOFTWARE).
pub const EXIT_SOFTWARE: u8 = 70;
/// AWS could not be reached or refused a call (EX_UNAVAILABLE).
pub const EXIT_UNAVAILABLE: u8 = 69;

fn environment() -> std::collections::HashMap<String, String> {
    std::env::vars().collect()
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| fail(EXIT_SOFTWARE, format_args!("starting the runtime: {e}")))
}

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Explain(args) => run_explain(&args),
        Command::Run => {
            let config = match crate::config::ControllerConfig::load(&cli.config, &environment()) {
                Ok(config) => config,
                Err(error) => return fail(EXIT_CONFIG, format_args!("{error}")),
            };
            lifeguard_common::logging::init(config.log.format, &config.log.level);
            let runtime = match runtime() {
                Ok(runtime) => runtime,
                Err(code) => return code,
            };
            match runtime.block_on(crate::service::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(%error, "lifeguard-controller stopped on an error");
                    fail(EXIT_SOFTWARE, format_args!("{error}"))
                }
            }
        }
        Command::Status(args) => run_status(&cli.config, &args),
        Command::Image(command) => run_image(&cli.config, command),
        Command::Drill(args) => run_drill(&cli.config, &args),
        Command::Swap(args) => run_swap(&cli.config, &args),
        Command::Probe {
            address,
            path,
            timeout_secs,
        } => run_probe(&cli.config, address, &path, timeout_secs),
        Command::Validate => {
            match crate::config::ControllerConfig::load(&cli.config, &environment()) {
                Ok(_) => {
                    println!("{}: valid", cli.config.display());
                    ExitCode::SUCCESS
                }
                Err(error) => fail(EXIT_CONFIG, format_args!("{error}")),
            }
        }
    }
}

fn run_probe(
    config: &std::path::Path,
    address: Option<std::net::SocketAddr>,
    path: &str,
    timeout_secs: u64,
) -> ExitCode {
    let address = match address {
        Some(address) => address,
        None => match crate::config::ControllerConfig::load(config, &environment()) {
            Ok(config) => match config.http.listen.parse() {
                Ok(listen) => crate::probe::local_address(listen),
                // Validation refuses such a value; nothing to ask.
                Err(error) => return fail(EXIT_CONFIG, format_args!("http.listen: {error}")),
            },
            Err(error) => return fail(EXIT_CONFIG, format_args!("{error}")),
        },
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(1, format_args!("starting the runtime: {error}")),
    };
    let timeout = std::time::Duration::from_secs(timeout_secs.clamp(1, 300));
    match runtime.block_on(crate::probe::probe(address, path, timeout)) {
        Ok(body) => {
            println!("{body}");
            ExitCode::SUCCESS
        }
        Err(error) => fail(1, format_args!("{error}")),
    }
}

fn fail(code: u8, message: std::fmt::Arguments<'_>) -> ExitCode {
    // A one-line error: newlines inside the message would split it for log collectors.
    let line = message.to_string().replace('\n', " ");
    eprintln!("lifeguard-controller: {line}");
    ExitCode::from(code)
}

/// What an operator's command against AWS needs: the configuration (no queue required) and a
/// runtime.
fn operator_setup(
    config_path: &std::path::Path,
) -> Result<(crate::config::ControllerConfig, tokio::runtime::Runtime), ExitCode> {
    let config = crate::config::ControllerConfig::load_without_queue(config_path, &environment())
        .map_err(|error| fail(EXIT_CONFIG, format_args!("{error}")))?;
    Ok((config, runtime()?))
}

fn run_drill(config_path: &std::path::Path, args: &DrillArgs) -> ExitCode {
    let (config, runtime) = match operator_setup(config_path) {
        Ok(pair) => pair,
        Err(code) => return code,
    };
    match runtime.block_on(crate::drill::command::run(&config, args)) {
        Ok(code) => code,
        Err(error) => fail(EXIT_UNAVAILABLE, format_args!("drill: {error}")),
    }
}

fn run_swap(config_path: &std::path::Path, args: &SwapArgs) -> ExitCode {
    let (config, runtime) = match operator_setup(config_path) {
        Ok(pair) => pair,
        Err(code) => return code,
    };
    match runtime.block_on(crate::swap::command::run(&config, args)) {
        Ok(code) => code,
        Err(error) => fail(
            EXIT_UNAVAILABLE,
            format_args!(
                "swap: {error}; a swap recorded on the group is finished or rolled back by `swap --recover`"
            ),
        ),
    }
}

fn run_status(config_path: &std::path::Path, args: &StatusArgs) -> ExitCode {
    use crate::fleet::Fleet;
    let (config, runtime) = match operator_setup(config_path) {
        Ok(pair) => pair,
        Err(code) => return code,
    };
    let found = runtime.block_on(async {
        let sdk = lifeguard_common::aws::sdk_config(&config.aws_settings(), None).await;
        let fleet = crate::fleet::AwsFleet::new(&sdk, &config.agentless.document);
        fleet.marked_instances(args.group.as_deref()).await
    });
    let instances = match found {
        Ok(instances) => instances,
        Err(error) => return fail(EXIT_UNAVAILABLE, format_args!("status: {error}")),
    };
    let rows = crate::status::rows(&instances);
    let rendered = match args.output {
        StatusOutput::Table => Ok(crate::status::table(&rows, crate::tracker::now())),
        StatusOutput::Json => serde_json::to_string_pretty(&rows).map(|json| json + "\n"),
    };
    let written = rendered
        .map_err(std::io::Error::other)
        .and_then(|text| std::io::stdout().lock().write_all(text.as_bytes()));
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(EXIT_IO, format_args!("status: writing the result: {e}")),
    }
}

/// A pipeline that ended failed (the reason was printed).
pub const EXIT_FAILED: u8 = 1;
/// Not started now: another pipeline holds the template, or the request cannot be met
/// (EX_TEMPFAIL).
pub const EXIT_REFUSED: u8 = 75;

fn run_image(config_path: &std::path::Path, command: ImageCommand) -> ExitCode {
    use crate::image::command::{self, BakeRequest, Ended};
    let (config, runtime) = match operator_setup(config_path) {
        Ok(pair) => pair,
        Err(code) => return code,
    };
    let outcome = runtime.block_on(async {
        let sdk = lifeguard_common::aws::sdk_config(&config.aws_settings(), None).await;
        let api = crate::image::aws::AwsImages::new(&sdk);
        let poll = |run: &RunOptions| std::time::Duration::from_secs(run.poll_secs);
        match command {
            ImageCommand::Bake(args) => {
                let from = match args.instance {
                    Some(instance) => command::BakeFrom::Instance(instance),
                    None => command::BakeFrom::Builder(builder_spec(
                        args.patch_document,
                        &args.patch_parameter,
                        args.builder_subnet,
                    )),
                };
                let request = BakeRequest {
                    template: args
                        .target
                        .template
                        .clone()
                        .or_else(|| args.target.group.clone())
                        .unwrap_or_default(),
                    from,
                    source_version: args.source_version,
                    no_reboot: args.no_reboot,
                    keep: args.prune.keep,
                    parameter: args.ssm_parameter,
                    deregister: args.prune.deregister,
                    available_within: std::time::Duration::from_secs(args.available_within_secs),
                    roll: args.roll.then(|| args.roll_preferences.roll()),
                    poll: poll(&args.run),
                    dry_run: args.run.dry_run,
                };
                match (&args.target.group, args.delete_old_configuration) {
                    (Some(group), delete_source) => {
                        let group = command::ConfigurationRequest {
                            group: group.clone(),
                            delete_source,
                        };
                        command::bake_group(&api, &group, &request).await
                    }
                    (None, true) => Ok(Ended::Refused(
                        "--delete-old-configuration is for --group".into(),
                    )),
                    (None, false) => command::bake(&api, &request).await,
                }
            }
            ImageCommand::Promote(args) => {
                command::promote(
                    &api,
                    &args.template.template,
                    &args.version,
                    args.ssm_parameter.as_deref(),
                    args.dry_run,
                )
                .await
            }
            ImageCommand::Roll(args) => {
                command::roll(
                    &api,
                    &args.template.template,
                    args.preferences.roll(),
                    poll(&args.run),
                    args.run.dry_run,
                )
                .await
            }
            ImageCommand::Resume(args) => {
                let holder = match (&args.target.template, &args.target.group) {
                    (Some(template), _) => command::Holder::Template(template),
                    (None, Some(group)) => command::Holder::Group(group),
                    (None, None) => return Ok(Ended::Refused("--template or --group".into())),
                };
                command::resume(&api, holder, poll(&args.run), args.run.dry_run).await
            }
            ImageCommand::Prune(args) => {
                command::prune_now(
                    &api,
                    &args.template.template,
                    args.prune.keep,
                    args.prune.deregister,
                    args.dry_run,
                )
                .await
            }
            ImageCommand::Status(args) => match command::status(&api, &args.template).await {
                Ok(json) => {
                    let text = serde_json::to_string_pretty(&json).unwrap_or_default();
                    match writeln!(std::io::stdout().lock(), "{text}") {
                        Ok(()) => Ok(Ended::Done),
                        Err(e) => Ok(Ended::Refused(format!("writing the status: {e}"))),
                    }
                }
                Err(ended) => Ok(ended),
            },
        }
    });
    match outcome {
        Ok(Ended::Done) => ExitCode::SUCCESS,
        Ok(Ended::Failed) => ExitCode::from(EXIT_FAILED),
        Ok(Ended::Refused(why)) => fail(EXIT_REFUSED, format_args!("image: {why}")),
        Err(error) => fail(EXIT_UNAVAILABLE, format_args!("image: {error}")),
    }
}

fn parse_parameter(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("{text:?}: NAME=VALUE")),
    }
}

fn builder_spec(
    document: Option<String>,
    pairs: &[(String, String)],
    subnet: Option<String>,
) -> crate::image::builder::BuilderSpec {
    let mut parameters = std::collections::BTreeMap::<String, Vec<String>>::new();
    for (name, value) in pairs {
        parameters
            .entry(name.clone())
            .or_default()
            .push(value.clone());
    }
    crate::image::builder::BuilderSpec::new(
        document,
        (!parameters.is_empty()).then_some(parameters),
        subnet,
    )
}

fn read_input(path: &PathBuf) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let limit = MAX_INPUT_BYTES + 1;
    if path.as_os_str() == "-" {
        std::io::stdin().lock().take(limit).read_to_end(&mut body)?;
    } else {
        std::fs::File::open(path)?
            .take(limit)
            .read_to_end(&mut body)?;
    }
    Ok(body)
}

fn run_explain(args: &ExplainArgs) -> ExitCode {
    let name = if args.input.as_os_str() == "-" {
        "standard input".to_string()
    } else {
        args.input.display().to_string()
    };
    let body = match read_input(&args.input) {
        Ok(body) => body,
        Err(e) => return fail(EXIT_NO_INPUT, format_args!("explain: reading {name}: {e}")),
    };
    if body.len() as u64 > MAX_INPUT_BYTES {
        return fail(
            EXIT_BAD_MESSAGE,
            format_args!(
                "explain: {name}: larger than {MAX_INPUT_BYTES} bytes, not a queue message"
            ),
        );
    }
    let explanation = match explain::explain(&body, args.from) {
        Ok(explanation) => explanation,
        Err(e) => return fail(EXIT_BAD_MESSAGE, format_args!("explain: {name}: {e}")),
    };
    let rendered = if args.pretty {
        serde_json::to_string_pretty(&explanation)
    } else {
        serde_json::to_string(&explanation)
    };
    let written = rendered
        .map_err(std::io::Error::other)
        .and_then(|json| writeln!(std::io::stdout().lock(), "{json}"));
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(EXIT_IO, format_args!("explain: writing the result: {e}")),
    }
}
