//! The launch-configuration path against an in-memory Auto Scaling.

use std::collections::HashMap;
use std::time::Duration;

use time::OffsetDateTime;

use super::command::BakeFrom;
use super::configuration::*;
use super::pipeline::{Pipeline, Stage, Target};
use super::run::drive;
use super::start::{BakeRequest, ConfigurationRequest, configuration_pipeline};
use super::tests::{FakeEc2, Seen};
use crate::fleet::FleetError;

/// The group `legacy` on configuration `legacy-v1` (image `ami-old`).
pub(crate) struct FakeConfigurations {
    group_configuration: String,
    group_tags: HashMap<String, String>,
    /// Name → image.
    configurations: HashMap<String, String>,
}

impl Default for FakeConfigurations {
    fn default() -> Self {
        FakeConfigurations {
            group_configuration: "legacy-v1".into(),
            group_tags: HashMap::new(),
            configurations: HashMap::from([("legacy-v1".into(), "ami-old".into())]),
        }
    }
}

impl ConfigurationApi for FakeEc2 {
    async fn group_configuration(
        &self,
        group: &str,
    ) -> Result<Option<GroupConfiguration>, FleetError> {
        let s = self.state.lock().unwrap();
        Ok((group == "legacy").then(|| GroupConfiguration {
            name: group.into(),
            configuration: Some(s.configurations.group_configuration.clone()),
            tags: s.configurations.group_tags.clone(),
        }))
    }
    async fn groups_with_pipelines(&self) -> Result<Vec<GroupConfiguration>, FleetError> {
        let s = self.state.lock().unwrap();
        let recorded = s
            .configurations
            .group_tags
            .contains_key("lifeguard:image:configuration-source");
        Ok(recorded
            .then(|| GroupConfiguration {
                name: "legacy".into(),
                configuration: Some(s.configurations.group_configuration.clone()),
                tags: s.configurations.group_tags.clone(),
            })
            .into_iter()
            .collect())
    }
    async fn tag_group(&self, _group: &str, tags: &[(String, String)]) -> Result<(), FleetError> {
        let mut s = self.state.lock().unwrap();
        s.configurations.group_tags.extend(tags.iter().cloned());
        s.calls.push("CreateOrUpdateTags".into());
        Ok(())
    }
    async fn copy_configuration(
        &self,
        source: &str,
        name: &str,
        image_id: &str,
    ) -> Result<(), FleetError> {
        let mut s = self.state.lock().unwrap();
        s.calls.push(format!(
            "CreateLaunchConfiguration {name} from {source} {image_id}"
        ));
        s.configurations
            .configurations
            .insert(name.into(), image_id.into());
        Ok(())
    }
    async fn use_configuration(&self, _group: &str, name: &str) -> Result<(), FleetError> {
        let mut s = self.state.lock().unwrap();
        s.calls.push(format!("UpdateAutoScalingGroup {name}"));
        s.configurations.group_configuration = name.into();
        Ok(())
    }
    async fn delete_configuration(&self, name: &str) -> Result<Deleted, FleetError> {
        let mut s = self.state.lock().unwrap();
        s.calls.push(format!("DeleteLaunchConfiguration {name}"));
        s.configurations.configurations.remove(name);
        Ok(Deleted::Deleted)
    }
}

fn request() -> BakeRequest {
    BakeRequest {
        template: "legacy".into(),
        from: BakeFrom::Instance("i-0123456789abcdef0".into()),
        source_version: "$Default".into(),
        no_reboot: false,
        keep: 5,
        parameter: Some("/fleet/legacy/latestAmi".into()),
        deregister: false,
        available_within: Duration::from_secs(3600),
        roll: None,
        poll: Duration::from_millis(1),
        dry_run: false,
    }
}

async fn group_of(ec2: &FakeEc2) -> GroupConfiguration {
    ec2.group_configuration("legacy").await.unwrap().unwrap()
}

#[tokio::test]
async fn a_launch_configuration_group_ends_on_a_copy_with_the_new_image() {
    let ec2 = FakeEc2::new(Some(1));
    let wanted = ConfigurationRequest {
        group: "legacy".into(),
        delete_source: true,
    };
    let pipeline = configuration_pipeline(
        &group_of(&ec2).await,
        &wanted,
        &request(),
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    let copy = pipeline.configuration_copy_name().unwrap();
    assert_eq!(copy, format!("legacy-v1-lifeguard-{}", pipeline.id));
    let mut seen = Seen::default();
    let ended = drive(&ec2, pipeline, Duration::from_millis(1), &mut seen)
        .await
        .unwrap();
    assert_eq!(ended.stage, Stage::Done, "{:?}", seen.events);
    let calls: Vec<String> = ec2
        .calls()
        .into_iter()
        .filter(|c| c != "CreateOrUpdateTags")
        .collect();
    assert_eq!(
        calls,
        vec![
            "CreateImage i-0123456789abcdef0".to_string(),
            format!("CreateLaunchConfiguration {copy} from legacy-v1 ami-0aaa"),
            format!("UpdateAutoScalingGroup {copy}"),
            "PutParameter /fleet/legacy/latestAmi".to_string(),
        ],
        "the operator's own configuration is kept: {:?}",
        seen.events
    );
    // No template was touched; the record is on the group.
    assert!(!ec2.calls().iter().any(|c| c == "CreateTags"));
    let group = group_of(&ec2).await;
    assert_eq!(group.configuration.as_deref(), Some(copy.as_str()));
    let stored = Pipeline::from_group_tags("legacy", &group.tags)
        .unwrap()
        .unwrap();
    assert_eq!(stored.stage, Stage::Done);
    assert!(matches!(stored.target, Target::Configuration(_)));

    // The next pipeline copies lifeguard's copy, names it after the original, and deletes
    // the copy it leaves.
    let next =
        configuration_pipeline(&group, &wanted, &request(), OffsetDateTime::now_utc()).unwrap();
    let next_copy = next.configuration_copy_name().unwrap();
    assert!(next_copy.starts_with("legacy-v1-lifeguard-"), "{next_copy}");
    drive(&ec2, next, Duration::from_millis(1), &mut seen)
        .await
        .unwrap();
    assert!(
        ec2.calls()
            .contains(&format!("DeleteLaunchConfiguration {copy}")),
        "{:?}",
        ec2.calls()
    );
}

#[tokio::test]
async fn a_launch_configuration_pipeline_refuses_what_only_templates_do() {
    let ec2 = FakeEc2::new(Some(1));
    let group = group_of(&ec2).await;
    let wanted = ConfigurationRequest {
        group: "legacy".into(),
        delete_source: false,
    };
    let now = OffsetDateTime::now_utc();
    let mut builder = request();
    builder.from = BakeFrom::Builder(super::builder::BuilderSpec::new(None, None, None));
    assert!(configuration_pipeline(&group, &wanted, &builder, now).is_err());
    let mut deregister = request();
    deregister.deregister = true;
    assert!(configuration_pipeline(&group, &wanted, &deregister, now).is_err());
    // A running pipeline holds the group.
    let mut held = group.clone();
    let running = configuration_pipeline(&group, &wanted, &request(), now).unwrap();
    held.tags = running.to_tags().into_iter().collect();
    let why = configuration_pipeline(&held, &wanted, &request(), now).unwrap_err();
    assert!(why.contains("image resume --group legacy"), "{why}");
    // A group on a template is sent to --template.
    let mut on_template = group.clone();
    on_template.configuration = None;
    assert!(
        configuration_pipeline(&on_template, &wanted, &request(), now)
            .unwrap_err()
            .contains("--template")
    );
}

#[tokio::test]
async fn the_service_runs_a_launch_configuration_pipeline_from_a_command_and_reconcile() {
    use super::service::ImageService;
    use super::tests::{refresh, triggers};
    use crate::queue::Handled;
    let service = ImageService::new(FakeEc2::new(Some(1)), triggers());
    let command = refresh(serde_json::json!({
        "group": "legacy",
        "instance_id": "i-0123456789abcdef0",
        "delete_old_configuration": true,
    }));
    assert_eq!(service.handle(&command).await, Handled::Done);
    let recorded = |service: &ImageService<FakeEc2>| {
        let s = service.api().state.lock().unwrap();
        Pipeline::from_group_tags("legacy", &s.configurations.group_tags)
            .unwrap()
            .unwrap()
    };
    assert_eq!(recorded(&service).stage, Stage::AwaitAvailable);
    // Redelivered: not started twice.
    assert_eq!(service.handle(&command).await, Handled::Done);
    assert_eq!(service.reconcile().await.unwrap(), 1);
    let done = recorded(&service);
    assert_eq!(done.stage, Stage::Done, "{:?}", done.reason);
    let copy = done.configuration_copy_name().unwrap();
    assert_eq!(
        group_of(service.api()).await.configuration.as_deref(),
        Some(copy.as_str())
    );
    let calls = service.api().calls();
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.starts_with("CreateImage"))
            .count(),
        1,
        "{calls:?}"
    );
    // Both `template` and `group` is refused.
    let both = refresh(serde_json::json!({
        "group": "legacy", "template": "web", "instance_id": "i-0123456789abcdef0",
    }));
    let before = service.api().calls().len();
    assert_eq!(service.handle(&both).await, Handled::Done);
    assert_eq!(service.api().calls().len(), before);
}
