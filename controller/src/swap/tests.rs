use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::api::{Member, SwapApi, SwapGroup, TargetHealth};
use super::record::{HELD, PREFIX, Stage, SwapRecord};
use super::run::{SwapOptions, Swapped, recover, swap};
use crate::fleet::FleetError;

const OLD: [&str; 2] = ["i-0000000000000000a", "i-0000000000000000b"];
const NEW: [&str; 2] = ["i-0000000000000000c", "i-0000000000000000d"];

/// A group in memory: calls change it as Auto Scaling would, and are recorded.
struct Fake {
    group: Mutex<SwapGroup>,
    calls: Mutex<Vec<String>>,
    /// Health of attached instances: Auto Scaling's, then each target group's.
    attached_health: &'static str,
    target_state: &'static str,
    fail_attach: bool,
}

fn fake(suspended: &[&str]) -> Fake {
    Fake {
        group: Mutex::new(SwapGroup {
            name: "web".into(),
            min: 1,
            max: 2,
            desired: 2,
            suspended: suspended.iter().map(|s| s.to_string()).collect(),
            target_groups: vec![
                "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/web/1".into(),
            ],
            members: OLD.iter().map(|id| member(id, "Healthy")).collect(),
            tags: HashMap::new(),
        }),
        calls: Mutex::new(Vec::new()),
        attached_health: "Healthy",
        target_state: "healthy",
        fail_attach: false,
    }
}

fn member(id: &str, health: &str) -> Member {
    Member {
        id: id.into(),
        lifecycle_state: "InService".into(),
        health: health.into(),
    }
}

fn error(operation: &'static str) -> FleetError {
    FleetError {
        operation,
        subject: "web".into(),
        message: "refused".into(),
        transient: false,
        code: Some("ValidationError".into()),
    }
}

impl Fake {
    fn call(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn names(&self) -> Vec<String> {
        self.calls()
            .iter()
            .map(|c| c.split(' ').next().unwrap().to_string())
            .collect()
    }
}

impl SwapApi for Fake {
    async fn group(&self, _: &str) -> Result<Option<SwapGroup>, FleetError> {
        Ok(Some(self.group.lock().unwrap().clone()))
    }
    async fn has_terminate_hook(&self, _: &str) -> Result<bool, FleetError> {
        Ok(true)
    }
    async fn unattachable(&self, _: &[String]) -> Result<Vec<(String, String)>, FleetError> {
        Ok(Vec::new())
    }
    async fn write_record(&self, _: &str, tags: &[(String, String)]) -> Result<(), FleetError> {
        let stage = tags.iter().find(|(k, _)| k.ends_with(":stage")).unwrap();
        self.call(format!("record {}", stage.1));
        self.group.lock().unwrap().tags.extend(tags.iter().cloned());
        Ok(())
    }
    async fn delete_record(&self, _: &str, keys: &[&str]) -> Result<(), FleetError> {
        self.call("delete-record".into());
        let mut group = self.group.lock().unwrap();
        for key in keys {
            group.tags.remove(*key);
        }
        Ok(())
    }
    async fn suspend(&self, _: &str, processes: &[String]) -> Result<(), FleetError> {
        self.call(format!("suspend {}", processes.join(",")));
        let mut group = self.group.lock().unwrap();
        for p in processes {
            if !group.suspended.contains(p) {
                group.suspended.push(p.clone());
            }
        }
        Ok(())
    }
    async fn resume(&self, _: &str, processes: &[String]) -> Result<(), FleetError> {
        self.call(format!("resume {}", processes.join(",")));
        self.group
            .lock()
            .unwrap()
            .suspended
            .retain(|p| !processes.contains(p));
        Ok(())
    }
    async fn set_sizes(
        &self,
        _: &str,
        min: Option<i32>,
        max: Option<i32>,
        desired: Option<i32>,
    ) -> Result<(), FleetError> {
        self.call(format!("sizes {min:?} {max:?} {desired:?}"));
        let mut group = self.group.lock().unwrap();
        group.min = min.unwrap_or(group.min);
        group.max = max.unwrap_or(group.max);
        group.desired = desired.unwrap_or(group.desired);
        Ok(())
    }
    async fn attach(&self, _: &str, ids: &[String]) -> Result<(), FleetError> {
        self.call(format!("attach {}", ids.join(",")));
        let mut group = self.group.lock().unwrap();
        // As Auto Scaling: no attaching while Launch is suspended.
        if self.fail_attach || group.suspended.iter().any(|p| p == "Launch") {
            return Err(error("AttachInstances"));
        }
        assert!(group.desired + ids.len() as i32 <= group.max, "over max");
        group.desired += ids.len() as i32;
        for id in ids {
            group.members.push(member(id, self.attached_health));
        }
        Ok(())
    }
    async fn detach(&self, _: &str, ids: &[String]) -> Result<(), FleetError> {
        self.call(format!("detach {}", ids.join(",")));
        let mut group = self.group.lock().unwrap();
        group.desired -= ids.len() as i32;
        group.members.retain(|m| !ids.contains(&m.id));
        Ok(())
    }
    async fn terminate(&self, id: &str) -> Result<(), FleetError> {
        self.call(format!("terminate {id}"));
        let mut group = self.group.lock().unwrap();
        assert!(
            NEW.iter()
                .all(|n| group.member(n).is_some_and(|m| m.health == "Healthy")),
            "terminated before the new ones were healthy"
        );
        group.desired -= 1;
        group.members.retain(|m| m.id != id);
        Ok(())
    }
    async fn target_health(
        &self,
        target_groups: &[String],
        ids: &[String],
    ) -> Result<Vec<TargetHealth>, FleetError> {
        self.call("target-health".into());
        Ok(ids
            .iter()
            .map(|id| TargetHealth {
                target_group: target_groups[0].clone(),
                instance_id: id.clone(),
                state: self.target_state.into(),
                reason: None,
            })
            .collect())
    }
}

fn options() -> SwapOptions {
    SwapOptions {
        healthy_timeout: Duration::from_millis(50),
        drain_timeout: Duration::from_secs(5),
        poll: Duration::from_millis(5),
    }
}

fn ids(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

async fn run(api: &Fake) -> Swapped {
    swap(
        api,
        "web",
        &ids(&OLD),
        &ids(&NEW),
        false,
        options(),
        &mut |_| {},
    )
    .await
    .unwrap()
}

fn assert_as_before(api: &Fake, suspended: &[&str]) {
    let group = api.group.lock().unwrap();
    assert_eq!((group.min, group.max, group.desired), (1, 2, 2));
    let mut now = group.suspended.clone();
    now.sort();
    assert_eq!(now, ids(suspended));
    assert!(
        !group.tags.keys().any(|k| k.starts_with(PREFIX)),
        "{:?}",
        group.tags
    );
}

#[tokio::test]
async fn a_swap_attaches_and_waits_before_retiring_and_ends_as_it_began() {
    let api = fake(&["AZRebalance"]);
    let swapped = run(&api).await;
    assert!(
        matches!(
            swapped,
            Swapped::Done {
                unfinished: None,
                ..
            }
        ),
        "{swapped:?}"
    );
    let group = api.group.lock().unwrap().clone();
    let mut members: Vec<&str> = group.members.iter().map(|m| m.id.as_str()).collect();
    members.sort();
    assert_eq!(members, NEW);
    assert_as_before(&api, &["AZRebalance"]);
    let names = api.names();
    let at = |name: &str| names.iter().position(|n| n == name).unwrap();
    assert!(at("suspend") < at("attach") && at("attach") < at("target-health"));
    assert!(at("target-health") < at("terminate") && at("terminate") < at("resume"));
    // Launch is held once the new ones are attached (Auto Scaling refuses to attach while
    // it is suspended); the process suspended beforehand is neither suspended nor resumed.
    let calls = api.calls();
    let suspends: Vec<&String> = calls.iter().filter(|c| c.starts_with("suspend")).collect();
    assert_eq!(
        suspends,
        [
            "suspend Terminate,ReplaceUnhealthy,AlarmNotification,ScheduledActions",
            "suspend Launch"
        ]
    );
    assert!(calls.iter().position(|c| c == "suspend Launch").unwrap() > at("attach"));
    let resumed = calls.iter().find(|c| c.starts_with("resume")).unwrap();
    assert_eq!(
        resumed,
        "resume Launch,Terminate,ReplaceUnhealthy,AlarmNotification,ScheduledActions"
    );
    // Room is made under the maximum for the attached pair, then the sizes are restored.
    assert!(
        calls.contains(&"sizes None Some(4) None".to_string()),
        "{calls:?}"
    );
    assert_eq!(calls.last().unwrap(), "delete-record");
}

#[tokio::test]
async fn attached_instances_never_healthy_in_their_target_group_roll_the_swap_back() {
    let mut api = fake(&[]);
    api.target_state = "unhealthy";
    let Swapped::RolledBack { reason, .. } = run(&api).await else {
        panic!("{:?}", api.calls());
    };
    assert!(
        reason.contains("unhealthy in targetgroup/web/1"),
        "{reason}"
    );
    assert!(!api.names().contains(&"terminate".to_string()));
    let group = api.group.lock().unwrap().clone();
    assert_eq!(group.members.len(), 2);
    assert!(group.members.iter().all(|m| OLD.contains(&m.id.as_str())));
    drop(group);
    assert_as_before(&api, &[]);
}

#[tokio::test]
async fn an_instance_unhealthy_in_its_group_or_a_refused_attach_rolls_back() {
    let mut api = fake(&["ScheduledActions"]);
    api.attached_health = "Unhealthy";
    assert!(matches!(run(&api).await, Swapped::RolledBack { .. }));
    assert_as_before(&api, &["ScheduledActions"]);

    let mut api = fake(&[]);
    api.fail_attach = true;
    let Swapped::RolledBack { reason, .. } = run(&api).await else {
        panic!()
    };
    assert!(reason.contains("AttachInstances"), "{reason}");
    assert!(!api.names().contains(&"detach".to_string()));
    assert_as_before(&api, &[]);
}

/// The record as a swap interrupted at `stage` left it, the group changed up to that stage.
fn interrupted(stage: Stage) -> Fake {
    let api = fake(&[]);
    let record = SwapRecord {
        id: "swap-20261203T150102Z".into(),
        stage,
        sizes: super::record::Sizes {
            min: 1,
            max: 2,
            desired: 2,
        },
        suspended_before: Vec::new(),
        suspended_by_swap: HELD.iter().map(|p| p.to_string()).collect(),
        retire: ids(&OLD),
        attach: ids(&NEW),
        reason: None,
    };
    let mut group = api.group.lock().unwrap();
    group.tags = record.to_tags().into_iter().collect();
    group.suspended = record.suspended_by_swap.clone();
    group.max = 4;
    group.desired = 4;
    group
        .members
        .extend(NEW.iter().map(|id| member(id, "Healthy")));
    if stage == Stage::Retire {
        // Killed after the first termination.
        group.members.retain(|m| m.id != OLD[0]);
        group.desired = 3;
    }
    drop(group);
    api
}

#[tokio::test]
async fn recover_rolls_back_a_swap_that_had_not_begun_retiring() {
    let api = interrupted(Stage::AwaitHealthy);
    let swapped = recover(&api, "web", options(), &mut |_| {}).await.unwrap();
    let Swapped::RolledBack { reason, .. } = swapped else {
        panic!("{swapped:?}")
    };
    assert!(reason.contains("interrupted at await-healthy"), "{reason}");
    assert!(api.calls().contains(&format!("detach {}", NEW.join(","))));
    assert_as_before(&api, &[]);
}

#[tokio::test]
async fn recover_finishes_a_swap_that_was_retiring() {
    let api = interrupted(Stage::Retire);
    let swapped = recover(&api, "web", options(), &mut |_| {}).await.unwrap();
    assert!(
        matches!(
            swapped,
            Swapped::Done {
                unfinished: None,
                ..
            }
        ),
        "{swapped:?}"
    );
    // Only the one still in service is terminated again.
    let terminated: Vec<String> = api
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("terminate"))
        .collect();
    assert_eq!(terminated, vec![format!("terminate {}", OLD[1])]);
    assert_as_before(&api, &[]);
    let refused = recover(&api, "web", options(), &mut |_| {}).await.unwrap();
    assert!(matches!(refused, Swapped::Refused(_)), "{refused:?}");
}

#[tokio::test]
async fn a_swap_is_refused_before_any_change_when_it_cannot_be_done_safely() {
    let cases: [(&[&str], &[&str], &str); 5] = [
        (&OLD, &NEW[..1], "one for one"),
        (&[OLD[0], "i-0000000000000000e"], &NEW, "not in web"),
        (&OLD, &[NEW[0], NEW[0]], "named twice"),
        (&OLD, &[NEW[0], "i-bad"], "not an instance id"),
        (&[], &[], "one for one"),
    ];
    for (retire, attach, why) in cases {
        let api = fake(&[]);
        let swapped = swap(
            &api,
            "web",
            &ids(retire),
            &ids(attach),
            false,
            options(),
            &mut |_| {},
        )
        .await
        .unwrap();
        let Swapped::Refused(reason) = swapped else {
            panic!("{retire:?} {attach:?}: {swapped:?}")
        };
        assert!(reason.contains(why), "{reason}");
        assert!(api.calls().is_empty(), "{:?}", api.calls());
    }
    // Launch suspended beforehand: Auto Scaling would refuse the attach.
    let api = fake(&["Launch"]);
    let Swapped::Refused(reason) = run(&api).await else {
        panic!()
    };
    assert!(reason.contains("resume Launch first"), "{reason}");
    // A load balancer process suspended beforehand would never register the new instances.
    let api = fake(&["AddToLoadBalancer"]);
    let Swapped::Refused(reason) = run(&api).await else {
        panic!()
    };
    assert!(reason.contains("AddToLoadBalancer"), "{reason}");
    // A swap already recorded is recovered, not overrun.
    let api = interrupted(Stage::Attach);
    let Swapped::Refused(reason) = run(&api).await else {
        panic!()
    };
    assert!(reason.contains("--recover"), "{reason}");
    // A dry run lists the calls and makes none.
    let api = fake(&[]);
    let swapped = swap(
        &api,
        "web",
        &ids(&OLD),
        &ids(&NEW),
        true,
        options(),
        &mut |_| {},
    )
    .await
    .unwrap();
    let Swapped::DryRun(calls) = swapped else {
        panic!()
    };
    assert!(
        calls.iter().any(|c| c.contains("AttachInstances")),
        "{calls:?}"
    );
    assert!(api.calls().is_empty());
}
