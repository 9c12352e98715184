//! Builder mode: the pure decision, and the driver against an in-memory EC2 and SSM.

use std::time::Duration;

use time::OffsetDateTime;
use time::macros::datetime;

use super::builder::*;
use super::pipeline::{Pipeline, Stage};
use super::run::drive;
use super::tests::{FakeEc2, Seen, fresh, pipeline};
use crate::fleet::FleetError;

const T0: OffsetDateTime = datetime!(2026-12-03 10:00:00 UTC);
const POLL: time::Duration = time::Duration::seconds(15);

/// The builder side of the in-memory EC2: one builder at most.
#[derive(Default)]
pub(crate) struct FakeBuilder {
    instance: Option<InstanceView>,
    /// Looks at the invocation before it ends.
    running_looks: u32,
    looks: u32,
    /// The patch fails with this status.
    fails_with: Option<String>,
    command: Option<String>,
    /// Looks at a stopping builder before it is stopped.
    stopping_looks: u32,
}

impl BuilderApi for FakeEc2 {
    async fn builder_of(&self, _pipeline_id: &str) -> Result<Option<InstanceView>, FleetError> {
        let s = self.state.lock().unwrap();
        Ok(s.builder
            .instance
            .clone()
            .filter(|i| i.state != "terminated"))
    }
    async fn instance(&self, instance_id: &str) -> Result<Option<InstanceView>, FleetError> {
        let mut s = self.state.lock().unwrap();
        let b = &mut s.builder;
        if b.instance.as_ref().is_some_and(|i| i.state == "stopping") {
            if b.stopping_looks == 0 {
                b.instance.as_mut().unwrap().state = "stopped".into();
            } else {
                b.stopping_looks -= 1;
            }
        }
        Ok(b.instance.clone().filter(|i| i.id == instance_id))
    }
    async fn launch_builder(&self, request: &LaunchBuilder) -> Result<String, FleetError> {
        let mut s = self.state.lock().unwrap();
        s.calls.push(format!(
            "RunInstances {} {}",
            request.template_id, request.version
        ));
        s.builder.instance = Some(InstanceView {
            id: "i-0b0b0b0b0b0b0b0b0".into(),
            state: "running".into(),
        });
        Ok("i-0b0b0b0b0b0b0b0b0".into())
    }
    async fn command_with_comment(
        &self,
        _instance_id: &str,
        _comment: &str,
    ) -> Result<Option<String>, FleetError> {
        Ok(self.state.lock().unwrap().builder.command.clone())
    }
    async fn send_patch(
        &self,
        instance_id: &str,
        spec: &BuilderSpec,
        _comment: &str,
    ) -> Result<Option<String>, FleetError> {
        let mut s = self.state.lock().unwrap();
        s.calls
            .push(format!("SendCommand {} {instance_id}", spec.document));
        s.builder.command = Some("cmd-1".into());
        Ok(Some("cmd-1".into()))
    }
    async fn invocation(
        &self,
        _command_id: &str,
        _instance_id: &str,
    ) -> Result<Option<Invocation>, FleetError> {
        let mut s = self.state.lock().unwrap();
        let b = &mut s.builder;
        b.looks += 1;
        Ok(Some(if b.looks <= b.running_looks {
            Invocation::Running("InProgress".into())
        } else if let Some(status) = &b.fails_with {
            Invocation::Ended {
                status: status.clone(),
                detail: "exit 1; yum: no space left on device".into(),
            }
        } else {
            Invocation::Succeeded
        }))
    }
    async fn stop_instance(&self, instance_id: &str) -> Result<(), FleetError> {
        let mut s = self.state.lock().unwrap();
        s.calls.push(format!("StopInstances {instance_id}"));
        if let Some(i) = s.builder.instance.as_mut() {
            i.state = "stopping".into();
        }
        Ok(())
    }
    async fn terminate_instance(&self, instance_id: &str) -> Result<(), FleetError> {
        let mut s = self.state.lock().unwrap();
        s.calls.push(format!("TerminateInstances {instance_id}"));
        if let Some(i) = s.builder.instance.as_mut() {
            i.state = "terminated".into();
        }
        Ok(())
    }
}

fn builder_pipeline(stage: Stage) -> Pipeline {
    let mut p = pipeline(stage);
    p.instance_id = None;
    p.builder = Some(BuilderSpec::new(None, None, None));
    p
}

fn running(state: &str) -> InstanceView {
    InstanceView {
        id: "i-0b0b".into(),
        state: state.into(),
    }
}

#[test]
fn the_builder_is_launched_once_and_adopted_after_a_killed_run() {
    let p = builder_pipeline(Stage::LaunchBuilder);
    let spec = p.builder.clone().unwrap();
    assert_eq!(
        decide_builder(&p, &spec, None, None, T0, POLL),
        BuilderStep::Launch
    );
    assert_eq!(
        decide_builder(&p, &spec, Some(&running("pending")), None, T0, POLL),
        BuilderStep::Adopt {
            instance_id: "i-0b0b".into()
        }
    );
}

#[test]
fn the_patch_is_sent_once_the_builder_runs_and_its_failure_says_why() {
    let mut p = builder_pipeline(Stage::Patch);
    let mut spec = p.builder.clone().unwrap();
    assert!(matches!(
        decide_builder(&p, &spec, Some(&running("pending")), None, T0, POLL),
        BuilderStep::Wait { .. }
    ));
    assert_eq!(
        decide_builder(&p, &spec, Some(&running("running")), None, T0, POLL),
        BuilderStep::SendPatch {
            instance_id: "i-0b0b".into()
        }
    );
    spec.command_id = Some("cmd-1".into());
    // Not visible yet, or running: wait.
    assert!(matches!(
        decide_builder(&p, &spec, Some(&running("running")), None, T0, POLL),
        BuilderStep::Wait { .. }
    ));
    let ended = Invocation::Ended {
        status: "Failed".into(),
        detail: "exit 1; no space".into(),
    };
    let BuilderStep::Fail { reason } =
        decide_builder(&p, &spec, Some(&running("running")), Some(&ended), T0, POLL)
    else {
        panic!("a failed patch must fail the pipeline");
    };
    assert!(
        reason.contains("AWS-RunPatchBaseline") && reason.contains("Failed: exit 1; no space"),
        "{reason}"
    );
    assert_eq!(
        decide_builder(
            &p,
            &spec,
            Some(&running("running")),
            Some(&Invocation::Succeeded),
            T0,
            POLL
        ),
        BuilderStep::Patched
    );
    // A builder that stopped or went away mid-patch, or a patch past the deadline, fails.
    assert!(matches!(
        decide_builder(&p, &spec, Some(&running("stopped")), None, T0, POLL),
        BuilderStep::Fail { .. }
    ));
    assert!(matches!(
        decide_builder(&p, &spec, None, None, T0, POLL),
        BuilderStep::Fail { .. }
    ));
    p.available_by = T0;
    assert!(matches!(
        decide_builder(&p, &spec, Some(&running("running")), None, T0, POLL),
        BuilderStep::Fail { .. }
    ));
}

#[test]
fn the_builder_is_imaged_only_once_stopped() {
    let p = builder_pipeline(Stage::StopBuilder);
    let spec = p.builder.clone().unwrap();
    assert!(matches!(
        decide_builder(&p, &spec, Some(&running("running")), None, T0, POLL),
        BuilderStep::Stop { .. }
    ));
    assert!(matches!(
        decide_builder(&p, &spec, Some(&running("stopping")), None, T0, POLL),
        BuilderStep::Wait { .. }
    ));
    assert_eq!(
        decide_builder(&p, &spec, Some(&running("stopped")), None, T0, POLL),
        BuilderStep::Stopped
    );
    assert!(matches!(
        decide_builder(&p, &spec, Some(&running("terminated")), None, T0, POLL),
        BuilderStep::Fail { .. }
    ));
}

#[test]
fn the_builder_spec_survives_the_record_and_refuses_what_a_tag_cannot_hold() {
    let mut p = builder_pipeline(Stage::Patch);
    p.builder.as_mut().unwrap().command_id = Some("cmd-1".into());
    p.builder.as_mut().unwrap().subnet = Some("subnet-0abc".into());
    let tags = p.to_tags().into_iter().collect();
    assert_eq!(Pipeline::from_tags(p.key(), &tags).unwrap(), Some(p));
    // A later pipeline without a builder overwrites the builder's keys.
    let plain = pipeline(Stage::Bake);
    let mut tags: std::collections::HashMap<_, _> = tags;
    tags.extend(plain.to_tags());
    assert_eq!(
        Pipeline::from_tags(plain.key(), &tags)
            .unwrap()
            .unwrap()
            .builder,
        None
    );
    let long = BuilderSpec::new(
        Some("Patch".into()),
        Some([("commands".to_string(), vec!["x".repeat(300)])].into()),
        None,
    );
    assert!(long.check().is_err());
    assert!(
        BuilderSpec::new(Some("no spaces allowed".into()), None, None)
            .check()
            .is_err()
    );
    assert!(
        BuilderSpec::new(None, None, Some("subnet-0a; rm".into()))
            .check()
            .is_err()
    );
}

fn builder_fresh() -> Pipeline {
    let mut p = fresh(Stage::LaunchBuilder);
    p.instance_id = None;
    p.builder = Some(BuilderSpec::new(None, None, None));
    p
}

#[tokio::test]
async fn builder_mode_launches_patches_stops_images_and_terminates_in_order() {
    let ec2 = FakeEc2::new(Some(1));
    {
        let mut s = ec2.state.lock().unwrap();
        s.builder.running_looks = 2;
        s.builder.stopping_looks = 1;
    }
    let mut seen = Seen::default();
    let ended = drive(&ec2, builder_fresh(), Duration::from_millis(1), &mut seen)
        .await
        .unwrap();
    assert_eq!(ended.stage, Stage::Done, "{:?}", seen.events);
    let calls: Vec<String> = ec2
        .calls()
        .into_iter()
        .filter(|c| c != "CreateTags")
        .collect();
    let position = |prefix: &str| {
        calls
            .iter()
            .position(|c| c.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {calls:?}"))
    };
    assert!(position("RunInstances lt-0123456789abcdef0 3") < position("SendCommand"));
    assert!(position("SendCommand AWS-RunPatchBaseline") < position("StopInstances"));
    assert!(position("StopInstances") < position("CreateImage i-0b0b0b0b0b0b0b0b0"));
    // The builder goes once the image is available, before the template changes.
    assert!(position("CreateImage") < position("TerminateInstances"));
    assert!(position("TerminateInstances") < position("CreateLaunchTemplateVersion"));
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.starts_with("RunInstances"))
            .count(),
        1
    );
    let s = ec2.state.lock().unwrap();
    assert_eq!(s.builder.instance.as_ref().unwrap().state, "terminated");
}

#[tokio::test]
async fn a_failed_patch_terminates_the_builder_and_leaves_the_template_untouched() {
    let ec2 = FakeEc2::new(Some(1));
    ec2.state.lock().unwrap().builder.fails_with = Some("Failed".into());
    let mut seen = Seen::default();
    let ended = drive(&ec2, builder_fresh(), Duration::from_millis(1), &mut seen)
        .await
        .unwrap();
    assert_eq!(ended.stage, Stage::Failed);
    assert!(
        ended.reason.as_deref().unwrap().contains("no space left"),
        "{:?}",
        ended.reason
    );
    let calls = ec2.calls();
    assert!(
        calls.iter().any(|c| c.starts_with("TerminateInstances")),
        "{calls:?}"
    );
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with("CreateImage") || c.starts_with("CreateLaunchTemplateVersion")),
        "{calls:?}"
    );
    assert_eq!(ec2.state.lock().unwrap().template.default_version, 3);
}

#[tokio::test]
async fn a_failed_image_of_the_builder_terminates_it() {
    let ec2 = FakeEc2::new(None);
    let mut seen = Seen::default();
    let ended = drive(&ec2, builder_fresh(), Duration::from_millis(1), &mut seen)
        .await
        .unwrap();
    assert_eq!(ended.stage, Stage::Failed);
    let s = ec2.state.lock().unwrap();
    assert_eq!(s.builder.instance.as_ref().unwrap().state, "terminated");
}

#[tokio::test]
async fn a_dry_run_of_builder_mode_shows_every_call_and_makes_none() {
    let ec2 = FakeEc2::new(Some(0));
    let dry = super::dry_run::DryRun::new(&ec2);
    let mut seen = Seen::default();
    let ended = drive(&dry, builder_fresh(), Duration::from_millis(1), &mut seen)
        .await
        .unwrap();
    assert_eq!(ended.stage, Stage::Done, "{:?}", seen.events);
    let shown = dry.calls().join("\n");
    for call in [
        "ec2 RunInstances",
        "ssm SendCommand DocumentName=AWS-RunPatchBaseline",
        "ec2 StopInstances",
        "ec2 CreateImage InstanceId=i-0000000000dryrun",
        "ec2 TerminateInstances",
        "ec2 CreateLaunchTemplateVersion",
    ] {
        assert!(shown.contains(call), "{call} missing from\n{shown}");
    }
    assert!(ec2.calls().is_empty(), "{:?}", ec2.calls());
}
