//! The pipeline's step function, its record, prune's choice and the driver against an in-memory
//! EC2.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use time::OffsetDateTime;
use time::macros::datetime;

use super::api::*;
use super::dry_run::{DryRun, STAND_IN_IMAGE};
use super::pipeline::*;
use super::prune::{prunable, prune};
use super::run::{Progress, drive, refuse_start};
use crate::fleet::FleetError;

const T0: OffsetDateTime = datetime!(2026-12-03 10:00:00 UTC);
const POLL: time::Duration = time::Duration::seconds(15);

pub(super) fn pipeline(stage: Stage) -> Pipeline {
    Pipeline {
        id: "20261203T100000Z-beef".into(),
        target: Target::Template("lt-0123456789abcdef0".into()),
        stage,
        instance_id: Some("i-0123456789abcdef0".into()),
        builder: None,
        previous_default: None,
        no_reboot: false,
        source_version: 3,
        image_id: None,
        new_version: None,
        started_at: T0,
        available_by: T0 + time::Duration::hours(4),
        keep: 3,
        parameter: Some("/fleet/web/latestAmi".into()),
        deregister: true,
        roll: None,
        roll_started: None,
        reason: None,
    }
}

fn image(state: ImageState) -> ImageView {
    ImageView {
        id: "ami-0aaa".into(),
        name: "lifeguard-lt-0123456789abcdef0-20261203T100000Z-beef".into(),
        state,
        reason: None,
        snapshot_ids: vec!["snap-1".into()],
        tags: HashMap::new(),
    }
}

#[test]
fn bake_creates_once_and_adopts_an_image_a_killed_run_made() {
    let p = pipeline(Stage::Bake);
    assert_eq!(decide(&p, None, T0, POLL), Step::CreateImage);
    assert_eq!(
        decide(&p, Some(&image(ImageState::Pending)), T0, POLL),
        Step::AdoptImage {
            image_id: "ami-0aaa".into()
        }
    );
}

#[test]
fn a_template_never_gets_an_image_that_is_not_available() {
    let mut p = pipeline(Stage::AwaitAvailable);
    p.image_id = Some("ami-0aaa".into());
    let at = T0 + time::Duration::minutes(20);
    assert_eq!(
        decide(&p, Some(&image(ImageState::Pending)), at, POLL),
        Step::Wait { until: at + POLL }
    );
    assert_eq!(
        decide(&p, Some(&image(ImageState::Available)), at, POLL),
        Step::CreateVersion {
            image_id: "ami-0aaa".into()
        }
    );
    let mut failed = image(ImageState::Failed);
    failed.reason = Some("Client.InternalError".into());
    let Step::Fail { reason } = decide(&p, Some(&failed), at, POLL) else {
        panic!("a failed image must stop the pipeline");
    };
    assert!(reason.contains("failed: Client.InternalError"), "{reason}");
    // At the deadline a pending image fails the pipeline; before it, the wait ends there.
    let late = p.available_by - time::Duration::seconds(5);
    assert_eq!(
        decide(&p, Some(&image(ImageState::Pending)), late, POLL),
        Step::Wait {
            until: p.available_by
        }
    );
    assert!(matches!(
        decide(&p, Some(&image(ImageState::Pending)), p.available_by, POLL),
        Step::Fail { .. }
    ));
    // The version stage checks again.
    p.stage = Stage::Version;
    assert!(matches!(
        decide(
            &p,
            Some(&image(ImageState::Other("deregistered".into()))),
            at,
            POLL
        ),
        Step::Fail { .. }
    ));
    assert!(matches!(decide(&p, None, at, POLL), Step::Fail { .. }));
}

#[test]
fn the_record_survives_a_round_trip_through_tags() {
    let mut p = pipeline(Stage::Promote);
    p.image_id = Some("ami-0aaa".into());
    p.new_version = Some(7);
    p.reason = Some("é".repeat(300));
    let tags: HashMap<String, String> = p.to_tags().into_iter().collect();
    assert!(tags.values().all(|v| v.chars().count() <= 256));
    let back = Pipeline::from_tags(p.key(), &tags).unwrap().unwrap();
    assert_eq!(back.reason.as_deref().map(|r| r.chars().count()), Some(256));
    assert_eq!(
        Pipeline {
            reason: None,
            ..back
        },
        Pipeline { reason: None, ..p }
    );
    assert_eq!(Pipeline::from_tags("lt-1", &HashMap::new()), Ok(None));
    let mut broken = tags.clone();
    broken.insert("lifeguard:image:stage".into(), "sideways".into());
    assert!(Pipeline::from_tags("lt-1", &broken).is_err());
}

fn template(default: i64, latest: i64) -> TemplateView {
    TemplateView {
        id: "lt-0123456789abcdef0".into(),
        name: "web".into(),
        default_version: default,
        latest_version: latest,
        tags: HashMap::new(),
    }
}

fn versions(numbers: impl IntoIterator<Item = i64>) -> Vec<VersionView> {
    numbers
        .into_iter()
        .map(|number| VersionView {
            number,
            image_id: Some(format!("ami-{number}")),
        })
        .collect()
}

#[test]
fn prune_keeps_the_newest_the_default_the_latest_and_the_pinned() {
    let all = versions(1..=10);
    // Default is old (2), a group pins 4: keep 3 newest (10, 9, 8) plus those.
    let doomed = prunable(&all, &template(2, 10), &BTreeSet::from([4]), 3);
    assert_eq!(doomed, vec![1, 3, 5, 6, 7]);
    assert!(prunable(&all, &template(10, 10), &BTreeSet::new(), 10).is_empty());
    assert_eq!(
        prunable(&all, &template(10, 10), &BTreeSet::new(), 1),
        (1..=9).collect::<Vec<_>>()
    );
}

#[test]
fn a_second_pipeline_is_refused_while_one_runs() {
    let mut t = template(1, 1);
    assert_eq!(refuse_start(&t), Ok(None));
    t.tags = pipeline(Stage::AwaitAvailable)
        .to_tags()
        .into_iter()
        .collect();
    let why = refuse_start(&t).unwrap().unwrap();
    assert!(
        why.contains("20261203T100000Z-beef") && why.contains("await-available"),
        "{why}"
    );
    t.tags = pipeline(Stage::Done).to_tags().into_iter().collect();
    assert_eq!(refuse_start(&t), Ok(None));
}

/// EC2 in memory: the image turns available after `pending_looks` looks.
pub(super) struct FakeEc2 {
    pub(super) state: Mutex<FakeState>,
}

pub(super) struct FakeState {
    pub(super) template: TemplateView,
    versions: Vec<VersionView>,
    images: HashMap<String, (ImageView, u32)>,
    /// Looks before a new image is available; `None`: it fails.
    pending_looks: Option<u32>,
    tokens: HashMap<String, i64>,
    parameter: Option<(String, String)>,
    groups: HashMap<String, GroupTemplate>,
    refreshes: HashMap<String, super::roll::RefreshView>,
    pub(super) calls: Vec<String>,
    pub(super) builder: super::builder_tests::FakeBuilder,
    pub(super) configurations: super::configuration_tests::FakeConfigurations,
}

impl FakeState {
    /// Group `web` on the template pinned to version 3, its latest refresh `r-1` in `status`
    /// (started now, `percent` done, a replacement's launch abandoned).
    fn pin_web_with_refresh(&mut self, status: &str, percent: i32) {
        let template_id = self.template.id.clone();
        self.groups.insert(
            "web".into(),
            GroupTemplate {
                tags: HashMap::new(),
                template_id: Some(template_id),
                template_name: None,
                version: Some("3".into()),
            },
        );
        self.refreshes.insert(
            "web".into(),
            super::roll::RefreshView {
                id: "r-1".into(),
                status: status.into(),
                percent: Some(percent),
                reason: Some("a replacement's launch was abandoned".into()),
                started_at: Some(OffsetDateTime::now_utc()),
            },
        );
    }
}

impl FakeEc2 {
    pub(super) fn new(pending_looks: Option<u32>) -> Self {
        FakeEc2 {
            state: Mutex::new(FakeState {
                template: template(3, 3),
                versions: versions(1..=3),
                images: HashMap::new(),
                pending_looks,
                tokens: HashMap::new(),
                parameter: None,
                groups: HashMap::new(),
                refreshes: HashMap::new(),
                calls: Vec::new(),
                builder: Default::default(),
                configurations: Default::default(),
            }),
        }
    }

    pub(super) fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }
}

impl ImageApi for FakeEc2 {
    async fn template(&self, name_or_id: &str) -> Result<Option<TemplateView>, FleetError> {
        let template = self.state.lock().unwrap().template.clone();
        Ok((template.id == name_or_id || template.name == name_or_id).then_some(template))
    }
    async fn templates(&self) -> Result<Vec<TemplateView>, FleetError> {
        Ok(vec![self.state.lock().unwrap().template.clone()])
    }
    async fn versions(&self, _template_id: &str) -> Result<Vec<VersionView>, FleetError> {
        Ok(self.state.lock().unwrap().versions.clone())
    }
    async fn tag_template(
        &self,
        _template_id: &str,
        tags: &[(String, String)],
    ) -> Result<(), FleetError> {
        let mut s = self.state.lock().unwrap();
        s.template.tags.extend(tags.iter().cloned());
        s.calls.push("CreateTags".into());
        Ok(())
    }
    async fn image(&self, image_id: &str) -> Result<Option<ImageView>, FleetError> {
        let mut s = self.state.lock().unwrap();
        let pending_looks = s.pending_looks;
        Ok(s.images.get_mut(image_id).map(|(view, looks)| {
            *looks += 1;
            view.state = match pending_looks {
                Some(n) if *looks > n => ImageState::Available,
                Some(_) => ImageState::Pending,
                None => ImageState::Failed,
            };
            view.clone()
        }))
    }
    async fn image_named(&self, name: &str) -> Result<Option<ImageView>, FleetError> {
        let s = self.state.lock().unwrap();
        Ok(s.images
            .values()
            .find(|(v, _)| v.name == name)
            .map(|(v, _)| v.clone()))
    }
    async fn snapshots(&self, ids: &[String]) -> Result<Vec<SnapshotView>, FleetError> {
        Ok(ids
            .iter()
            .map(|id| SnapshotView {
                id: id.clone(),
                state: "pending".into(),
                progress: Some("40%".into()),
            })
            .collect())
    }
    async fn create_image(&self, request: &CreateImage) -> Result<String, FleetError> {
        let mut s = self.state.lock().unwrap();
        s.calls.push(format!("CreateImage {}", request.instance_id));
        let mut view = image(ImageState::Pending);
        view.name = request.name.clone();
        view.tags = request.tags.iter().cloned().collect();
        s.images.insert(view.id.clone(), (view, 0));
        Ok("ami-0aaa".into())
    }
    async fn create_version(
        &self,
        _template_id: &str,
        source_version: i64,
        image_id: &str,
        client_token: &str,
        _description: &str,
    ) -> Result<i64, FleetError> {
        let mut s = self.state.lock().unwrap();
        s.calls.push(format!(
            "CreateLaunchTemplateVersion {source_version} {image_id}"
        ));
        if let Some(number) = s.tokens.get(client_token) {
            return Ok(*number);
        }
        let number = s.template.latest_version + 1;
        s.template.latest_version = number;
        s.versions.push(VersionView {
            number,
            image_id: Some(image_id.into()),
        });
        s.tokens.insert(client_token.into(), number);
        Ok(number)
    }
    async fn set_default_version(&self, _t: &str, version: i64) -> Result<(), FleetError> {
        let mut s = self.state.lock().unwrap();
        s.calls.push(format!("ModifyLaunchTemplate {version}"));
        s.template.default_version = version;
        Ok(())
    }
    async fn put_parameter(&self, name: &str, image_id: &str) -> Result<(), FleetError> {
        let mut s = self.state.lock().unwrap();
        s.calls.push(format!("PutParameter {name}"));
        s.parameter = Some((name.into(), image_id.into()));
        Ok(())
    }
    async fn pinned_versions(&self, _t: &TemplateView) -> Result<BTreeSet<i64>, FleetError> {
        Ok(BTreeSet::new())
    }
    async fn delete_versions(
        &self,
        _t: &str,
        versions: &[i64],
    ) -> Result<Vec<(i64, String)>, FleetError> {
        let mut s = self.state.lock().unwrap();
        s.calls
            .push(format!("DeleteLaunchTemplateVersions {versions:?}"));
        s.versions.retain(|v| !versions.contains(&v.number));
        Ok(Vec::new())
    }
    async fn launch_configuration_images(&self) -> Result<BTreeSet<String>, FleetError> {
        Ok(BTreeSet::new())
    }
    async fn groups_of_template(
        &self,
        _template: &TemplateView,
    ) -> Result<Vec<(String, Option<String>)>, FleetError> {
        let s = self.state.lock().unwrap();
        Ok(s.groups
            .iter()
            .map(|(name, g)| (name.clone(), g.version.clone()))
            .collect())
    }
    async fn latest_refresh(
        &self,
        group: &str,
    ) -> Result<Option<super::roll::RefreshView>, FleetError> {
        let s = self.state.lock().unwrap();
        Ok(s.refreshes.get(group).cloned())
    }
    async fn start_refresh(
        &self,
        group: &str,
        _roll: &super::roll::Roll,
        desired: Option<(&str, i64)>,
    ) -> Result<String, FleetError> {
        let mut s = self.state.lock().unwrap();
        s.calls.push(format!(
            "StartInstanceRefresh {group} {}",
            desired.map(|(_, v)| v.to_string()).unwrap_or_default()
        ));
        s.refreshes.insert(
            group.to_string(),
            super::roll::RefreshView {
                id: format!("r-{group}"),
                status: "Successful".into(),
                percent: Some(100),
                reason: None,
                started_at: Some(OffsetDateTime::now_utc()),
            },
        );
        Ok(format!("r-{group}"))
    }
    async fn group(&self, name: &str) -> Result<Option<GroupTemplate>, FleetError> {
        let s = self.state.lock().unwrap();
        Ok(s.groups.get(name).cloned())
    }
    async fn use_template_version(
        &self,
        group: &str,
        _template_id: &str,
        version: &str,
    ) -> Result<(), FleetError> {
        let mut s = self.state.lock().unwrap();
        s.calls
            .push(format!("UpdateAutoScalingGroup {group} {version}"));
        if let Some(g) = s.groups.get_mut(group) {
            g.version = Some(version.to_string());
        }
        Ok(())
    }
    async fn deregister_image(&self, image_id: &str) -> Result<(), FleetError> {
        self.state
            .lock()
            .unwrap()
            .calls
            .push(format!("DeregisterImage {image_id}"));
        Ok(())
    }
    async fn delete_snapshot(&self, id: &str) -> Result<(), FleetError> {
        self.state
            .lock()
            .unwrap()
            .calls
            .push(format!("DeleteSnapshot {id}"));
        Ok(())
    }
}

#[derive(Default)]
pub(super) struct Seen {
    pub(super) events: Vec<String>,
    pub(super) waits: Vec<String>,
}

impl Progress for Seen {
    fn event(&mut self, pipeline: &Pipeline, what: &str) {
        self.events
            .push(format!("{}: {what}", pipeline.stage.as_str()));
    }
    fn waiting(&mut self, _pipeline: &Pipeline, _elapsed: time::Duration, detail: &str) {
        self.waits.push(detail.to_string());
    }
}

pub(super) fn fresh(stage: Stage) -> Pipeline {
    let mut p = pipeline(stage);
    p.started_at = OffsetDateTime::now_utc();
    p.available_by = p.started_at + time::Duration::hours(1);
    p.keep = 2;
    p.deregister = false;
    p
}

#[tokio::test]
async fn the_driver_bakes_waits_versions_promotes_and_prunes_in_order() {
    let ec2 = FakeEc2::new(Some(2));
    let mut seen = Seen::default();
    let ended = drive(
        &ec2,
        fresh(Stage::Bake),
        Duration::from_millis(1),
        &mut seen,
    )
    .await
    .unwrap();
    assert_eq!(ended.stage, Stage::Done, "{:?}", seen.events);
    assert_eq!(ended.new_version, Some(4));
    let calls: Vec<String> = ec2
        .calls()
        .into_iter()
        .filter(|c| c != "CreateTags")
        .collect();
    assert_eq!(
        calls,
        vec![
            "CreateImage i-0123456789abcdef0",
            "CreateLaunchTemplateVersion 3 ami-0aaa",
            "ModifyLaunchTemplate 4",
            "PutParameter /fleet/web/latestAmi",
            "DeleteLaunchTemplateVersions [1, 2]",
        ]
    );
    assert_eq!(seen.waits.len(), 2, "{:?}", seen.waits);
    assert!(seen.waits[0].contains("snap-1 40%"), "{:?}", seen.waits);
    let s = ec2.state.lock().unwrap();
    assert_eq!(s.template.default_version, 4);
    let stored = Pipeline::from_tags(&s.template.id, &s.template.tags)
        .unwrap()
        .unwrap();
    assert_eq!(stored.stage, Stage::Done);
}

#[tokio::test]
async fn a_failed_image_leaves_the_template_untouched() {
    let ec2 = FakeEc2::new(None);
    let mut seen = Seen::default();
    let ended = drive(
        &ec2,
        fresh(Stage::Bake),
        Duration::from_millis(1),
        &mut seen,
    )
    .await
    .unwrap();
    assert_eq!(ended.stage, Stage::Failed);
    assert!(ended.reason.as_deref().unwrap().contains("failed"));
    let calls = ec2.calls();
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with("CreateLaunchTemplateVersion")
                || c.starts_with("ModifyLaunchTemplate")
                || c.starts_with("PutParameter")),
        "{calls:?}"
    );
    assert_eq!(ec2.state.lock().unwrap().template.default_version, 3);
}

#[tokio::test]
async fn a_resumed_version_stage_reuses_the_version_its_token_made() {
    let ec2 = FakeEc2::new(Some(0));
    let mut seen = Seen::default();
    // A first run made the version and was killed before recording it.
    let mut p = fresh(Stage::Bake);
    drive(&ec2, p.clone(), Duration::from_millis(1), &mut seen)
        .await
        .unwrap();
    p.stage = Stage::Version;
    p.image_id = Some("ami-0aaa".into());
    let ended = drive(&ec2, p, Duration::from_millis(1), &mut seen)
        .await
        .unwrap();
    assert_eq!(ended.new_version, Some(4));
    assert_eq!(ec2.state.lock().unwrap().template.latest_version, 4);
}

#[tokio::test]
async fn a_dry_run_changes_nothing_and_lists_every_change() {
    let ec2 = FakeEc2::new(Some(1));
    let dry = DryRun::new(&ec2);
    let mut seen = Seen::default();
    let ended = drive(
        &dry,
        fresh(Stage::Bake),
        Duration::from_millis(1),
        &mut seen,
    )
    .await
    .unwrap();
    assert_eq!(ended.stage, Stage::Done);
    assert!(ec2.calls().is_empty(), "{:?}", ec2.calls());
    let planned = dry.calls();
    let kinds: Vec<&str> = planned
        .iter()
        .map(|c| c.split_whitespace().nth(1).unwrap_or_default())
        .filter(|k| *k != "CreateTags")
        .collect();
    assert_eq!(
        kinds,
        vec![
            "CreateImage",
            "CreateLaunchTemplateVersion",
            "ModifyLaunchTemplate",
            "PutParameter",
            "DeleteLaunchTemplateVersions"
        ]
    );
    assert!(planned.iter().any(|c| c.contains(STAND_IN_IMAGE)));
}

#[tokio::test]
async fn prune_deregisters_only_images_lifeguard_made_for_the_template() {
    let ec2 = FakeEc2::new(Some(0));
    {
        let mut s = ec2.state.lock().unwrap();
        for (id, ours) in [("ami-1", true), ("ami-2", false)] {
            let mut view = image(ImageState::Available);
            view.id = id.into();
            view.snapshot_ids = vec![format!("snap-{id}")];
            if ours {
                view.tags
                    .insert(IMAGE_TEMPLATE_TAG.into(), s.template.id.clone());
            }
            s.images.insert(id.into(), (view, 0));
        }
    }
    let t = ec2.state.lock().unwrap().template.clone();
    let pruned = prune(&ec2, &t, 1, true).await.unwrap();
    assert_eq!(pruned.versions, vec![1, 2]);
    assert_eq!(pruned.images, vec!["ami-1".to_string()]);
    assert_eq!(pruned.snapshots, vec!["snap-ami-1".to_string()]);
}

pub(super) fn refresh(params: serde_json::Value) -> lifeguard_common::message::Message {
    let params = params.as_object().cloned().unwrap_or_default();
    lifeguard_common::message::Message::Command(lifeguard_common::message::Command {
        name: lifeguard_common::message::CommandName::RefreshImage,
        asg: None,
        instance_ids: Vec::new(),
        params,
    })
}

#[tokio::test]
async fn the_service_starts_on_a_command_and_finishes_on_reconcile_without_waiting() {
    use super::service::ImageService;
    use crate::queue::Handled;
    let service = ImageService::new(FakeEc2::new(Some(1)), triggers());
    let command = refresh(serde_json::json!({
        "template": "web",
        "instance_id": "i-0123456789abcdef0",
        "ssm_parameter": "/lifeguard/web/latestAmi",
        "keep": 2,
    }));
    assert!(ImageService::<FakeEc2>::handles(&command));
    assert_eq!(service.handle(&command).await, Handled::Done);
    let stage = |service: &ImageService<FakeEc2>| {
        let s = service.api().state.lock().unwrap();
        Pipeline::from_tags(&s.template.id, &s.template.tags)
            .unwrap()
            .unwrap()
            .stage
    };
    assert_eq!(stage(&service), Stage::AwaitAvailable);
    // Delivered again (SQS is at least once): the running pipeline is not started twice.
    assert_eq!(service.handle(&command).await, Handled::Done);
    assert_eq!(service.reconcile().await.unwrap(), 1);
    assert_eq!(stage(&service), Stage::Done);
    assert_eq!(service.reconcile().await.unwrap(), 0);
    let calls = service.api().calls();
    let count = |prefix: &str| calls.iter().filter(|c| c.starts_with(prefix)).count();
    assert_eq!(count("CreateImage"), 1, "{calls:?}");
    assert_eq!(count("ModifyLaunchTemplate"), 1, "{calls:?}");
    assert_eq!(
        service.api().state.lock().unwrap().parameter,
        Some(("/lifeguard/web/latestAmi".into(), "ami-0aaa".into()))
    );
}

#[tokio::test]
async fn a_bad_refresh_command_is_dropped_without_touching_aws() {
    use super::service::ImageService;
    use crate::queue::Handled;
    let service = ImageService::new(FakeEc2::new(Some(0)), triggers());
    for params in [
        serde_json::json!({ "instance_id": "i-0123456789abcdef0" }),
        serde_json::json!({ "template": "web" }),
        serde_json::json!({ "template": "web", "instance_id": "i-0123; reboot" }),
        serde_json::json!({ "template": "web", "instance_id": "i-0123456789abcdef0", "keep": 0 }),
        serde_json::json!({ "template": "web", "instance_id": "i-0123456789abcdef0",
            "available_within_secs": 999_999_999_u64 }),
    ] {
        assert_eq!(service.handle(&refresh(params)).await, Handled::Done);
    }
    assert!(
        service.api().calls().is_empty(),
        "{:?}",
        service.api().calls()
    );
}

pub(super) fn triggers() -> super::service::Triggers {
    super::service::Triggers {
        images: crate::config::ImagesConfig::default(),
        managed_tag: "lifeguard:managed".into(),
        managed_groups: Vec::new(),
    }
}

fn managed(ec2: &FakeEc2) {
    ec2.state
        .lock()
        .unwrap()
        .template
        .tags
        .insert("lifeguard:managed".into(), "true".into());
}

fn create_image_call(
    tags: &[(&str, &str)],
    description: Option<&str>,
) -> lifeguard_common::message::Message {
    lifeguard_common::message::Message::CreateImageCall(
        lifeguard_common::message::CreateImageCall {
            image_id: Some("ami-0aaa".into()),
            instance_id: Some("i-0123456789abcdef0".into()),
            name: Some("release-42".into()),
            description: description.map(str::to_string),
            tags: tags
                .iter()
                .map(|(k, v)| lifeguard_common::message::Tag {
                    key: (*k).into(),
                    value: (*v).into(),
                })
                .collect(),
            region: None,
            account: None,
        },
    )
}

#[tokio::test]
async fn an_image_made_with_the_marker_is_taken_from_await_available_and_others_are_not() {
    use super::service::ImageService;
    let ec2 = FakeEc2::new(Some(0));
    managed(&ec2);
    // The image exists (someone else made it); the pipeline does not create one.
    {
        let mut s = ec2.state.lock().unwrap();
        let view = image(ImageState::Pending);
        s.images.insert(view.id.clone(), (view, 0));
    }
    let service = ImageService::new(ec2, triggers());
    for ignored in [
        create_image_call(&[], None),
        create_image_call(&[("team", "web")], Some("nightly build")),
        create_image_call(&[("lifeguard:release", "no-such-template")], None),
    ] {
        service.handle(&ignored).await;
    }
    assert!(
        service.api().calls().is_empty(),
        "{:?}",
        service.api().calls()
    );
    service
        .handle(&create_image_call(
            &[],
            Some("release lifeguard:release=web"),
        ))
        .await;
    let calls = service.api().calls();
    assert!(
        !calls.iter().any(|c| c.starts_with("CreateImage")),
        "{calls:?}"
    );
    assert!(
        calls.iter().any(|c| c == "ModifyLaunchTemplate 4"),
        "{calls:?}"
    );
}

#[tokio::test]
async fn a_new_group_pinned_to_a_managed_template_moves_to_latest() {
    use super::service::ImageService;
    let ec2 = FakeEc2::new(Some(0));
    managed(&ec2);
    let group = |version: &str, managed: bool| GroupTemplate {
        tags: if managed {
            HashMap::from([("lifeguard:managed".to_string(), "true".to_string())])
        } else {
            HashMap::new()
        },
        template_id: Some("lt-0123456789abcdef0".into()),
        template_name: None,
        version: Some(version.into()),
    };
    {
        let mut s = ec2.state.lock().unwrap();
        s.groups.insert("pinned".into(), group("2", true));
        s.groups.insert("unmanaged".into(), group("2", false));
        s.groups.insert("follows".into(), group("$Latest", true));
    }
    let service = ImageService::new(ec2, triggers());
    for (asg, version) in [("pinned", "2"), ("unmanaged", "2"), ("follows", "$Latest")] {
        let call = lifeguard_common::message::Message::CreateAutoScalingGroupCall(
            lifeguard_common::message::CreateAutoScalingGroupCall {
                asg: asg.into(),
                launch_template: Some(lifeguard_common::message::LaunchTemplateRef {
                    id: Some("lt-0123456789abcdef0".into()),
                    name: None,
                    version: Some(version.into()),
                }),
                launch_configuration: None,
                region: None,
                account: None,
            },
        );
        service.handle(&call).await;
    }
    assert_eq!(
        service.api().calls(),
        vec!["UpdateAutoScalingGroup pinned $Latest".to_string()]
    );
}

#[tokio::test]
async fn a_roll_refreshes_every_group_of_the_template_pinned_ones_to_the_new_version() {
    let ec2 = FakeEc2::new(Some(0));
    {
        let mut s = ec2.state.lock().unwrap();
        let template_id = s.template.id.clone();
        for (name, version) in [("follows", "$Latest"), ("pinned", "3")] {
            s.groups.insert(
                name.into(),
                GroupTemplate {
                    tags: HashMap::new(),
                    template_id: Some(template_id.clone()),
                    template_name: None,
                    version: Some(version.into()),
                },
            );
        }
    }
    let mut p = fresh(Stage::Bake);
    p.roll = Some(super::roll::Roll {
        min_healthy_percentage: 50,
        instance_warmup_secs: 0,
        checkpoints: Vec::new(),
    });
    let mut seen = Seen::default();
    let ended = drive(&ec2, p, Duration::from_millis(1), &mut seen)
        .await
        .unwrap();
    assert_eq!(ended.stage, Stage::Done, "{:?}", seen.events);
    let mut refreshes: Vec<String> = ec2
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("StartInstanceRefresh"))
        .collect();
    refreshes.sort();
    assert_eq!(
        refreshes,
        vec![
            "StartInstanceRefresh follows ".to_string(),
            "StartInstanceRefresh pinned 4".to_string()
        ]
    );
    // The roll comes before prune: rollback needs the old versions.
    let calls = ec2.calls();
    let last_refresh = calls
        .iter()
        .rposition(|c| c.starts_with("StartInstanceRefresh"))
        .unwrap();
    let prune = calls
        .iter()
        .position(|c| c.starts_with("DeleteLaunchTemplateVersions"))
        .unwrap();
    assert!(last_refresh < prune, "{calls:?}");
}

/// The EventBridge Scheduler example sends a Refresh Image command the service accepts.
#[test]
fn the_schedule_example_sends_a_refresh_the_service_accepts() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging/scheduler/refresh-image-weekly.json");
    let schedule: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let input = schedule["Target"]["Input"].as_str().unwrap();
    let parsed = lifeguard_common::message::parse(input.as_bytes()).unwrap();
    let lifeguard_common::message::Message::Command(command) = parsed.message else {
        panic!("not a command: {input}");
    };
    assert_eq!(
        command.name,
        lifeguard_common::message::CommandName::RefreshImage
    );
    let request = super::service::bake_request(&command).unwrap();
    assert_eq!(request.template, "web");
    assert_eq!(request.roll.unwrap().checkpoints, vec![50, 100]);
    let super::start::BakeFrom::Builder(builder) = request.from else {
        panic!("the weekly example patches a builder");
    };
    assert_eq!(builder.document, "AWS-RunPatchBaseline");
    assert_eq!(builder.parameters["Operation"], vec!["Install".to_string()]);
}

#[tokio::test]
async fn a_refresh_event_moves_a_rolling_pipeline_on_and_a_rolled_back_refresh_fails_it() {
    use super::service::ImageService;
    use lifeguard_common::message::{InstanceRefreshEvent, Message, RefreshStage};
    for (ending, expected) in [
        ("Successful", Stage::Done),
        ("RollbackSuccessful", Stage::Failed),
    ] {
        let ec2 = FakeEc2::new(Some(0));
        {
            let mut s = ec2.state.lock().unwrap();
            s.pin_web_with_refresh("InProgress", 50);
            let mut p = fresh(Stage::Roll);
            p.image_id = Some("ami-0aaa".into());
            p.new_version = Some(4);
            p.roll = Some(super::roll::Roll {
                min_healthy_percentage: 50,
                instance_warmup_secs: 0,
                checkpoints: Vec::new(),
            });
            p.roll_started = Some(OffsetDateTime::now_utc());
            // Promote made version 4 the default; version 3 was before.
            p.previous_default = Some(3);
            s.template.default_version = 4;
            s.template.latest_version = 4;
            s.template.tags = p.to_tags().into_iter().collect();
        }
        let service = ImageService::new(ec2, triggers());
        let event = Message::InstanceRefresh(InstanceRefreshEvent {
            stage: RefreshStage::Succeeded,
            refresh_id: "r-1".into(),
            asg: "web".into(),
            checkpoint_percentage: None,
            checkpoint_delay_secs: None,
        });
        assert!(ImageService::<FakeEc2>::handles(&event));
        service.handle(&event).await;
        let stage = |service: &ImageService<FakeEc2>| {
            let s = service.api().state.lock().unwrap();
            Pipeline::from_tags(&s.template.id, &s.template.tags)
                .unwrap()
                .unwrap()
        };
        assert_eq!(stage(&service).stage, Stage::Roll, "still running: waits");
        service
            .api()
            .state
            .lock()
            .unwrap()
            .refreshes
            .get_mut("web")
            .unwrap()
            .status = ending.into();
        service.handle(&event).await;
        let ended = stage(&service);
        assert_eq!(ended.stage, expected, "{ending}: {:?}", ended.reason);
        if expected == Stage::Done {
            assert_eq!(
                service.api().state.lock().unwrap().template.default_version,
                4
            );
        }
        if expected == Stage::Failed {
            let reason = ended.reason.unwrap();
            assert!(reason.contains("RollbackSuccessful"), "{reason}");
            // The template's default is back where it was before the pipeline.
            assert!(reason.contains("default is back at version 3"), "{reason}");
            assert_eq!(
                service.api().state.lock().unwrap().template.default_version,
                3
            );
            // Prune never ran: the version a rollback returned to is still there.
            assert!(
                !service
                    .api()
                    .calls()
                    .iter()
                    .any(|c| c.starts_with("DeleteLaunchTemplateVersions"))
            );
        }
    }
}

/// The command that started a pipeline and a replica woken by an AMI event both advance it from
/// the record in the template's tags. A replica whose copy predates the other's promote must
/// still know the default from before the pipeline, so a failed roll goes back to that one
/// (`controller_images_roll` failed in CI when the replica took the promoted version for it).
#[tokio::test]
async fn a_late_replica_never_takes_the_promoted_version_for_the_one_to_go_back_to() {
    use super::start::{BakeFrom, BakeRequest, bake_pipeline};
    let ec2 = FakeEc2::new(Some(0));
    let template = ec2.state.lock().unwrap().template.clone();
    assert_eq!(template.default_version, 3);
    let roll = super::roll::Roll {
        min_healthy_percentage: 50,
        instance_warmup_secs: 0,
        checkpoints: Vec::new(),
    };
    let request = BakeRequest {
        template: template.id.clone(),
        from: BakeFrom::Instance("i-0123456789abcdef0".into()),
        source_version: "$Default".into(),
        no_reboot: false,
        keep: 2,
        parameter: None,
        deregister: false,
        available_within: Duration::from_secs(3600),
        roll: Some(roll),
        poll: Duration::from_millis(1),
        dry_run: false,
    };
    let started = bake_pipeline(&template, &request, OffsetDateTime::now_utc()).unwrap();
    // The replica's copy was read when version 4 was made; since then the other actor made
    // version 4 the default.
    let mut late = started;
    late.stage = Stage::Promote;
    late.image_id = Some("ami-0aaa".into());
    late.new_version = Some(4);
    {
        let mut s = ec2.state.lock().unwrap();
        s.template.default_version = 4;
        s.template.latest_version = 4;
        // The group's refresh onto version 4 failed and Auto Scaling rolled it back.
        s.pin_web_with_refresh("RollbackSuccessful", 0);
    }
    let mut seen = Seen::default();
    let ended = drive(&ec2, late, Duration::from_millis(1), &mut seen)
        .await
        .unwrap();
    assert_eq!(ended.stage, Stage::Failed, "{:?}", seen.events);
    assert_eq!(ended.previous_default, Some(3));
    assert!(
        ended
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("default is back at version 3")),
        "{:?}",
        ended.reason
    );
    assert_eq!(ec2.state.lock().unwrap().template.default_version, 3);
}
