//! The swap's driver: each stage's calls, the record written after each stage, and a roll
//! back on any failure before the first retired instance is terminated. After that the old
//! instances are leaving and cannot be brought back: the swap goes on, restores the sizes and
//! processes, and says what it could not finish.

use std::time::{Duration, Instant};

use super::api::{SwapApi, SwapGroup};
use super::plan::{plan, room_for};
use super::record::{KEYS, LAUNCH, Stage, SwapRecord};
use crate::fleet::FleetError;

#[derive(Debug, Clone, Copy)]
pub struct SwapOptions {
    /// The longest to wait for the attached instances to be healthy before rolling back.
    pub healthy_timeout: Duration,
    /// The longest to follow the retired instances out of the group.
    pub drain_timeout: Duration,
    pub poll: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Swapped {
    /// Restored; `unfinished` says what did not go as asked (a retired instance still in the
    /// group at the deadline, a termination refused).
    Done {
        record: SwapRecord,
        unfinished: Option<String>,
    },
    RolledBack {
        record: SwapRecord,
        reason: String,
    },
    Refused(String),
    /// `--dry-run`: the calls the swap would make.
    DryRun(Vec<String>),
}

/// Progress lines for the operator or the service's log.
pub type Say<'a> = dyn FnMut(&str) + Send + 'a;

pub async fn swap<A: SwapApi>(
    api: &A,
    group: &str,
    retire: &[String],
    attach: &[String],
    dry_run: bool,
    options: SwapOptions,
    say: &mut Say<'_>,
) -> Result<Swapped, FleetError> {
    let Some(found) = api.group(group).await? else {
        return Ok(Swapped::Refused(format!("no group {group:?}")));
    };
    let unattachable = api.unattachable(attach).await?;
    let hooked = api.has_terminate_hook(group).await?;
    let id = super::record::swap_id(time::OffsetDateTime::now_utc());
    let record = match plan(&found, retire, attach, &unattachable, hooked, id) {
        Ok(record) => record,
        Err(why) => return Ok(Swapped::Refused(why)),
    };
    if dry_run {
        return Ok(Swapped::DryRun(planned_calls(&found, &record)));
    }
    api.write_record(group, &record.to_tags()).await?;
    say(&format!(
        "swap {}: {} for {} in {}; recorded min {} max {} desired {}, suspended before: {}",
        record.id,
        record.attach.join(","),
        record.retire.join(","),
        group,
        record.sizes.min,
        record.sizes.max,
        record.sizes.desired,
        list_or_none(&record.suspended_before)
    ));
    drive(api, group, record, options, say).await
}

/// Finishes the swap recorded on `group`, or rolls it back if it had not begun retiring.
pub async fn recover<A: SwapApi>(
    api: &A,
    group: &str,
    options: SwapOptions,
    say: &mut Say<'_>,
) -> Result<Swapped, FleetError> {
    let Some(found) = api.group(group).await? else {
        return Ok(Swapped::Refused(format!("no group {group:?}")));
    };
    let mut record = match SwapRecord::from_tags(&found.tags) {
        Ok(Some(record)) => record,
        Ok(None) => return Ok(Swapped::Refused(format!("no swap is recorded on {group}"))),
        Err(why) => {
            return Ok(Swapped::Refused(format!(
                "{group}: {why}; fix or delete the tags"
            )));
        }
    };
    if matches!(
        record.stage,
        Stage::Suspend | Stage::Attach | Stage::AwaitHealthy
    ) {
        // Whether the attached instances became healthy while nobody watched is unknown;
        // the operator runs the swap again.
        record.reason = Some(format!(
            "interrupted at {}: rolled back by --recover",
            record.stage.as_str()
        ));
        record.stage = Stage::RollBack;
        api.write_record(group, &record.to_tags()).await?;
    }
    say(&format!(
        "swap {}: recovering {} from stage {}",
        record.id,
        group,
        record.stage.as_str()
    ));
    drive(api, group, record, options, say).await
}

async fn drive<A: SwapApi>(
    api: &A,
    group: &str,
    mut record: SwapRecord,
    options: SwapOptions,
    say: &mut Say<'_>,
) -> Result<Swapped, FleetError> {
    loop {
        let next = match record.stage {
            Stage::Suspend => suspend(api, group, &record, say)
                .await
                .map(|()| Stage::Attach),
            Stage::Attach => attach(api, group, &record, say)
                .await
                .map(|()| Stage::AwaitHealthy),
            Stage::AwaitHealthy => await_healthy(api, group, &record.attach, options, say)
                .await
                .map(|()| Stage::Retire),
            Stage::Retire => {
                record.reason = retire(api, group, &record.retire, options, say).await;
                Ok(Stage::Restore)
            }
            Stage::Restore => {
                restore(api, group, &record, say).await?;
                return Ok(Swapped::Done {
                    unfinished: record.reason.clone(),
                    record,
                });
            }
            Stage::RollBack => {
                roll_back(api, group, &record, say).await?;
                restore(api, group, &record, say).await?;
                return Ok(Swapped::RolledBack {
                    reason: record.reason.clone().unwrap_or_default(),
                    record,
                });
            }
        };
        match next {
            Ok(stage) => record.stage = stage,
            Err(reason) => {
                say(&format!("rolling back: {reason}"));
                record.reason = Some(reason);
                record.stage = Stage::RollBack;
            }
        }
        api.write_record(group, &record.to_tags()).await?;
    }
}

async fn suspend<A: SwapApi>(
    api: &A,
    group: &str,
    record: &SwapRecord,
    say: &mut Say<'_>,
) -> Result<(), String> {
    let now: Vec<String> = record
        .suspended_by_swap
        .iter()
        .filter(|p| *p != LAUNCH)
        .cloned()
        .collect();
    if !now.is_empty() {
        api.suspend(group, &now).await.map_err(|e| e.to_string())?;
        say(&format!("suspended {}", now.join(",")));
    }
    if let Some(max) = room_for(record.sizes, record.attach.len()) {
        api.set_sizes(group, None, Some(max), None)
            .await
            .map_err(|e| e.to_string())?;
        say(&format!("raised the maximum size to {max} for the swap"));
    }
    Ok(())
}

/// Attaches, then holds `Launch`: Auto Scaling refuses to attach while `Launch` is
/// suspended (User Guide, "Suspend and resume processes": "while Launch is suspended, you
/// can't attach new instances to the group"). Until then nothing asks the group to launch:
/// attaching raises the desired capacity with the instances, and the processes that would
/// raise it are already held.
async fn attach<A: SwapApi>(
    api: &A,
    group: &str,
    record: &SwapRecord,
    say: &mut Say<'_>,
) -> Result<(), String> {
    api.attach(group, &record.attach)
        .await
        .map_err(|e| e.to_string())?;
    say(&format!("attached {}", record.attach.join(",")));
    if record.suspended_by_swap.iter().any(|p| p == LAUNCH) {
        api.suspend(group, &[LAUNCH.to_string()])
            .await
            .map_err(|e| e.to_string())?;
        say("suspended Launch");
    }
    Ok(())
}

/// Until every attached instance is `InService` and `Healthy`, and `healthy` in each of the
/// group's target groups.
async fn await_healthy<A: SwapApi>(
    api: &A,
    group: &str,
    attach: &[String],
    options: SwapOptions,
    say: &mut Say<'_>,
) -> Result<(), String> {
    let deadline = Instant::now() + options.healthy_timeout;
    let mut last = String::new();
    loop {
        let found = api
            .group(group)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{group} is gone"))?;
        let waiting = match not_ready(&found, attach) {
            Err(gone) => return Err(gone),
            Ok(waiting) if waiting.is_empty() && !found.target_groups.is_empty() => api
                .target_health(&found.target_groups, attach)
                .await
                .map_err(|e| e.to_string())?
                .into_iter()
                .filter(|t| t.state != "healthy")
                .map(|t| {
                    format!(
                        "{} {} in {}{}",
                        t.instance_id,
                        t.state,
                        target_group_name(&t.target_group),
                        t.reason.map(|r| format!(" ({r})")).unwrap_or_default()
                    )
                })
                .collect(),
            Ok(waiting) => waiting,
        };
        if waiting.is_empty() {
            say(&format!("{} in service and healthy", attach.join(",")));
            return Ok(());
        }
        let now = waiting.join("; ");
        if Instant::now() >= deadline {
            return Err(format!(
                "not healthy after {} s: {now}",
                options.healthy_timeout.as_secs()
            ));
        }
        if now != last {
            say(&format!("waiting: {now}"));
            last = now;
        }
        tokio::time::sleep(options.poll).await;
    }
}

/// The attached instances not yet in service and healthy; `Err` if one has left the group.
fn not_ready(found: &SwapGroup, attach: &[String]) -> Result<Vec<String>, String> {
    let mut waiting = Vec::new();
    for id in attach {
        let Some(member) = found.member(id) else {
            return Err(format!("{id} left {} before it was healthy", found.name));
        };
        if member.lifecycle_state.starts_with("Terminat") || member.lifecycle_state == "Detached" {
            return Err(format!(
                "{id} is {} before it was healthy",
                member.lifecycle_state
            ));
        }
        if member.lifecycle_state != "InService" || member.health != "Healthy" {
            waiting.push(format!("{id} {} {}", member.lifecycle_state, member.health));
        }
    }
    Ok(waiting)
}

/// Terminates each retired instance through the hook and follows it out of the group. Says
/// what did not go as asked, if anything.
async fn retire<A: SwapApi>(
    api: &A,
    group: &str,
    retire: &[String],
    options: SwapOptions,
    say: &mut Say<'_>,
) -> Option<String> {
    let mut problems = Vec::new();
    // A recovered swap may find some already leaving: only those still in service are
    // terminated (Auto Scaling refuses the others).
    match api.group(group).await {
        Ok(Some(found)) => {
            for id in retire {
                if found
                    .member(id)
                    .is_some_and(|m| m.lifecycle_state == "InService")
                {
                    match api.terminate(id).await {
                        Ok(()) => say(&format!("retiring {id} through the terminate hook")),
                        Err(error) => problems.push(format!("{id} not terminated: {error}")),
                    }
                }
            }
        }
        Ok(None) => return Some(format!("{group} is gone")),
        Err(error) => problems.push(error.to_string()),
    }
    let deadline = Instant::now() + options.drain_timeout;
    let mut last = String::new();
    loop {
        let staying: Vec<String> = match api.group(group).await {
            Ok(Some(found)) => retire
                .iter()
                .filter_map(|id| {
                    let member = found.member(id)?;
                    (member.lifecycle_state != "Terminated")
                        .then(|| format!("{id} {}", member.lifecycle_state))
                })
                .collect(),
            Ok(None) => Vec::new(),
            Err(error) => {
                // Looked at again next time, until the deadline.
                if Instant::now() >= deadline {
                    problems.push(error.to_string());
                    break;
                }
                tokio::time::sleep(options.poll).await;
                continue;
            }
        };
        let now = staying.join("; ");
        if staying.is_empty() {
            say(&format!("{} left the group", retire.join(",")));
            break;
        }
        if Instant::now() >= deadline {
            problems.push(format!(
                "still in the group after {} s: {now}",
                options.drain_timeout.as_secs()
            ));
            break;
        }
        if now != last {
            say(&format!("draining: {now}"));
            last = now;
        }
        tokio::time::sleep(options.poll).await;
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

/// Detaches whatever of the attached instances is still in the group; they keep running.
async fn roll_back<A: SwapApi>(
    api: &A,
    group: &str,
    record: &SwapRecord,
    say: &mut Say<'_>,
) -> Result<(), FleetError> {
    let Some(found) = api.group(group).await? else {
        return Ok(());
    };
    let (detachable, other): (Vec<_>, Vec<_>) = record
        .attach
        .iter()
        .filter_map(|id| found.member(id))
        .partition(|m| matches!(m.lifecycle_state.as_str(), "InService" | "Standby"));
    let ids: Vec<String> = detachable.iter().map(|m| m.id.clone()).collect();
    if !ids.is_empty() {
        api.detach(group, &ids).await?;
        say(&format!("detached {} (still running)", ids.join(",")));
    }
    for member in other {
        say(&format!(
            "{} is {} and was left in the group",
            member.id, member.lifecycle_state
        ));
    }
    Ok(())
}

async fn restore<A: SwapApi>(
    api: &A,
    group: &str,
    record: &SwapRecord,
    say: &mut Say<'_>,
) -> Result<(), FleetError> {
    let sizes = record.sizes;
    api.set_sizes(group, Some(sizes.min), Some(sizes.max), Some(sizes.desired))
        .await?;
    if !record.suspended_by_swap.is_empty() {
        api.resume(group, &record.suspended_by_swap).await?;
    }
    api.delete_record(group, &KEYS).await?;
    say(&format!(
        "restored min {} max {} desired {}; resumed {}; still suspended: {}",
        sizes.min,
        sizes.max,
        sizes.desired,
        list_or_none(&record.suspended_by_swap),
        list_or_none(&record.suspended_before)
    ));
    Ok(())
}

fn planned_calls(found: &SwapGroup, record: &SwapRecord) -> Vec<String> {
    let group = &found.name;
    let sizes = record.sizes;
    let mut calls = vec![format!(
        "autoscaling CreateOrUpdateTags {group} lifeguard:swap:* (min {} max {} desired {})",
        sizes.min, sizes.max, sizes.desired
    )];
    if !record.suspended_by_swap.is_empty() {
        calls.push(format!(
            "autoscaling SuspendProcesses {group} {}",
            record.suspended_by_swap.join(",")
        ));
    }
    if let Some(max) = room_for(sizes, record.attach.len()) {
        calls.push(format!(
            "autoscaling UpdateAutoScalingGroup {group} MaxSize={max}"
        ));
    }
    calls.push(format!(
        "autoscaling AttachInstances {group} {}",
        record.attach.join(",")
    ));
    let targets = if found.target_groups.is_empty() {
        String::new()
    } else {
        format!(
            " and healthy in {} target group(s)",
            found.target_groups.len()
        )
    };
    calls.push(format!("(wait until InService, Healthy{targets})"));
    for id in &record.retire {
        calls.push(format!(
            "autoscaling TerminateInstanceInAutoScalingGroup InstanceId={id} \
             ShouldDecrementDesiredCapacity=true"
        ));
    }
    calls.push(format!(
        "autoscaling UpdateAutoScalingGroup {group} MinSize={} MaxSize={} DesiredCapacity={}",
        sizes.min, sizes.max, sizes.desired
    ));
    if !record.suspended_by_swap.is_empty() {
        calls.push(format!(
            "autoscaling ResumeProcesses {group} {}",
            record.suspended_by_swap.join(",")
        ));
    }
    calls.push(format!("autoscaling DeleteTags {group} lifeguard:swap:*"));
    calls
}

fn list_or_none(list: &[String]) -> String {
    if list.is_empty() {
        "none".into()
    } else {
        list.join(",")
    }
}

/// `targetgroup/NAME/ID` of an ARN, for a shorter line.
fn target_group_name(arn: &str) -> &str {
    arn.split_once(':')
        .and_then(|_| arn.rsplit(':').next())
        .unwrap_or(arn)
}
