//! Builder mode: launch a builder from the template's current version, patch it through an SSM
//! Run Command document, stop it, image it, and terminate it once the image is available (or
//! the pipeline fails). The decision is pure, like [`super::pipeline::decide`]; the calls are
//! behind [`BuilderApi`].

use std::collections::BTreeMap;

use time::OffsetDateTime;

use super::pipeline::{Pipeline, Stage};
use crate::fleet::FleetError;

/// On a builder instance: the template whose pipeline launched it. The controller may stop,
/// terminate and run its patch document only on instances carrying it.
pub const BUILDER_TAG: &str = "lifeguard:image:builder";

/// AWS's own patching document: installs what the instance's patch baseline approves.
pub const DEFAULT_PATCH_DOCUMENT: &str = "AWS-RunPatchBaseline";

/// What builder mode runs, kept in the pipeline's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuilderSpec {
    /// The SSM document that patches the builder (`AWS-RunPatchBaseline`, or the operator's).
    pub document: String,
    pub parameters: BTreeMap<String, Vec<String>>,
    /// Launch the builder into this subnet instead of the template's.
    pub subnet: Option<String>,
    /// The Run Command, once sent.
    pub command_id: Option<String>,
}

impl BuilderSpec {
    /// Without a document: `AWS-RunPatchBaseline` installing what the baseline approves
    /// (its default parameters only when no document is named).
    pub fn new(
        document: Option<String>,
        parameters: Option<BTreeMap<String, Vec<String>>>,
        subnet: Option<String>,
    ) -> Self {
        let parameters = match (&document, parameters) {
            (_, Some(given)) => given,
            (None, None) => BTreeMap::from([
                ("Operation".to_string(), vec!["Install".to_string()]),
                ("RebootOption".to_string(), vec!["NoReboot".to_string()]),
            ]),
            (Some(_), None) => BTreeMap::new(),
        };
        BuilderSpec {
            document: document.unwrap_or_else(|| DEFAULT_PATCH_DOCUMENT.to_string()),
            parameters,
            subnet,
            command_id: None,
        }
    }

    /// The parameters as the record keeps them (JSON; at most one tag value).
    pub fn encode_parameters(&self) -> String {
        serde_json::to_string(&self.parameters).unwrap_or_default()
    }

    pub fn decode_parameters(text: &str) -> Result<BTreeMap<String, Vec<String>>, String> {
        serde_json::from_str(text).map_err(|e| format!("builder parameters: {e}"))
    }

    /// Refuses what cannot be kept in the record or sent to SSM.
    pub fn check(&self) -> Result<(), String> {
        let valid_name = |name: &str| {
            (3..=128).contains(&name.len())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        };
        if !valid_name(&self.document) {
            return Err(format!(
                "patch document {:?}: 3 to 128 letters, digits, '_', '-' or '.'",
                self.document
            ));
        }
        if self.encode_parameters().chars().count() > 256 {
            return Err(
                "patch parameters: at most 256 characters as JSON (they are kept in a tag); \
                 put longer input in the document"
                    .into(),
            );
        }
        if let Some(subnet) = &self.subnet
            && !(subnet.starts_with("subnet-")
                && subnet.len() <= 32
                && subnet
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-'))
        {
            return Err(format!("builder subnet {subnet:?} is not a subnet id"));
        }
        Ok(())
    }
}

/// An instance as the builder stages see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceView {
    pub id: String,
    /// EC2's state name: `pending`, `running`, `stopping`, `stopped`, `shutting-down`,
    /// `terminated`.
    pub state: String,
}

/// Where the patch's Run Command invocation stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// `Pending`, `InProgress`, `Delayed`, `Cancelling`.
    Running(String),
    Succeeded,
    /// Any other end (`Failed`, `TimedOut`, `Cancelled`, `Undeliverable`, `Terminated`): the
    /// status and what the command said.
    Ended {
        status: String,
        detail: String,
    },
}

/// `RunInstances` as the builder stage makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchBuilder {
    pub template_id: String,
    pub version: i64,
    pub subnet: Option<String>,
    /// The pipeline id: a retry returns the instance the first call launched.
    pub client_token: String,
    pub tags: Vec<(String, String)>,
}

pub trait BuilderApi: Send + Sync {
    /// A builder of this pipeline that is not terminated (found by its tag), if any.
    fn builder_of(
        &self,
        pipeline_id: &str,
    ) -> impl Future<Output = Result<Option<InstanceView>, FleetError>> + Send;

    fn instance(
        &self,
        instance_id: &str,
    ) -> impl Future<Output = Result<Option<InstanceView>, FleetError>> + Send;

    /// The builder's instance id.
    fn launch_builder(
        &self,
        request: &LaunchBuilder,
    ) -> impl Future<Output = Result<String, FleetError>> + Send;

    /// A command already sent to the instance with this comment (a run killed after
    /// `SendCommand` answered), if any.
    fn command_with_comment(
        &self,
        instance_id: &str,
        comment: &str,
    ) -> impl Future<Output = Result<Option<String>, FleetError>> + Send;

    /// The command id; `None` while SSM does not know the instance yet (its agent registers
    /// a little after boot).
    fn send_patch(
        &self,
        instance_id: &str,
        spec: &BuilderSpec,
        comment: &str,
    ) -> impl Future<Output = Result<Option<String>, FleetError>> + Send;

    /// `None` while SSM has no invocation to show yet.
    fn invocation(
        &self,
        command_id: &str,
        instance_id: &str,
    ) -> impl Future<Output = Result<Option<Invocation>, FleetError>> + Send;

    fn stop_instance(
        &self,
        instance_id: &str,
    ) -> impl Future<Output = Result<(), FleetError>> + Send;

    /// Terminating an instance that is already gone is not an error.
    fn terminate_instance(
        &self,
        instance_id: &str,
    ) -> impl Future<Output = Result<(), FleetError>> + Send;
}

/// What the builder stages do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuilderStep {
    Launch,
    /// A builder of this pipeline runs already (a run stopped between `RunInstances` and the
    /// record): take it.
    Adopt {
        instance_id: String,
    },
    SendPatch {
        instance_id: String,
    },
    /// The patch succeeded: stop the builder.
    Patched,
    Stop {
        instance_id: String,
    },
    /// Stopped: image it.
    Stopped,
    Terminate,
    Wait {
        until: OffsetDateTime,
        detail: String,
    },
    Fail {
        reason: String,
    },
}

/// The comment that marks the pipeline's Run Command (at most 100 characters).
pub fn command_comment(pipeline: &Pipeline) -> String {
    format!("lifeguard image pipeline {}", pipeline.id)
}

/// The next builder step from the record, the builder as EC2 shows it (found by the recorded
/// id, or by its tag while launching) and the patch's invocation.
pub fn decide_builder(
    pipeline: &Pipeline,
    spec: &BuilderSpec,
    builder: Option<&InstanceView>,
    invocation: Option<&Invocation>,
    now: OffsetDateTime,
    poll: time::Duration,
) -> BuilderStep {
    let wait = |detail: String| BuilderStep::Wait {
        until: (now + poll).min(pipeline.available_by),
        detail,
    };
    let late = |what: &str| BuilderStep::Fail {
        reason: format!(
            "{what} at the deadline ({} after the start)",
            super::pipeline::humanize(pipeline.available_by - pipeline.started_at)
        ),
    };
    match pipeline.stage {
        Stage::LaunchBuilder => match builder {
            Some(found) => BuilderStep::Adopt {
                instance_id: found.id.clone(),
            },
            None => BuilderStep::Launch,
        },
        Stage::Patch => {
            let Some(builder) = builder else {
                return BuilderStep::Fail {
                    reason: "the builder instance no longer exists".into(),
                };
            };
            match (builder.state.as_str(), &spec.command_id, invocation) {
                (_, _, Some(Invocation::Ended { status, detail })) => BuilderStep::Fail {
                    reason: format!(
                        "patch {} on builder {}: {status}{}",
                        spec.document,
                        builder.id,
                        if detail.is_empty() {
                            String::new()
                        } else {
                            format!(": {detail}")
                        }
                    ),
                },
                (_, _, Some(Invocation::Succeeded)) => BuilderStep::Patched,
                _ if now >= pipeline.available_by => late("the patch still runs"),
                ("pending", _, _) => wait(format!("builder {} pending", builder.id)),
                ("running", None, _) => BuilderStep::SendPatch {
                    instance_id: builder.id.clone(),
                },
                ("running", Some(command), running) => wait(format!(
                    "patch {command} {}",
                    match running {
                        Some(Invocation::Running(status)) => status.as_str(),
                        _ => "not visible yet",
                    }
                )),
                (state, _, _) => BuilderStep::Fail {
                    reason: format!(
                        "builder {} is {state} before its patch finished",
                        builder.id
                    ),
                },
            }
        }
        Stage::StopBuilder => {
            let Some(builder) = builder else {
                return BuilderStep::Fail {
                    reason: "the builder instance no longer exists".into(),
                };
            };
            match builder.state.as_str() {
                "stopped" => BuilderStep::Stopped,
                _ if now >= pipeline.available_by => late("the builder is not stopped"),
                "pending" | "running" => BuilderStep::Stop {
                    instance_id: builder.id.clone(),
                },
                "stopping" => wait(format!("builder {} stopping", builder.id)),
                state => BuilderStep::Fail {
                    reason: format!("builder {} is {state}, it cannot be imaged", builder.id),
                },
            }
        }
        Stage::RetireBuilder => BuilderStep::Terminate,
        _ => BuilderStep::Fail {
            reason: format!("stage {} is not a builder stage", pipeline.stage.as_str()),
        },
    }
}
