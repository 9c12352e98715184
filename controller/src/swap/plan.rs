//! Whether a swap may start, and the record it starts with: decided before anything changes.

use super::api::SwapGroup;
use super::record::{HELD, LAUNCH, MAX_INSTANCES, Sizes, Stage, SwapRecord};
use crate::fleet::is_instance_id;

/// The record a swap of `retire` for `attach` starts with, or why it must not start.
/// `unattachable` is what AWS says of the instances to attach.
pub fn plan(
    group: &SwapGroup,
    retire: &[String],
    attach: &[String],
    unattachable: &[(String, String)],
    has_terminate_hook: bool,
    id: String,
) -> Result<SwapRecord, String> {
    match SwapRecord::from_tags(&group.tags) {
        Ok(None) => {}
        Ok(Some(record)) => {
            return Err(format!(
                "swap {} is in progress on {} (stage {}): finish or roll it back with \
                 `swap --recover --group {}`",
                record.id,
                group.name,
                record.stage.as_str(),
                group.name
            ));
        }
        Err(why) => return Err(format!("{}: {why}; fix or delete the tags", group.name)),
    }
    if retire.is_empty() || retire.len() != attach.len() {
        return Err(format!(
            "a swap replaces one for one: {} to retire, {} to attach",
            retire.len(),
            attach.len()
        ));
    }
    if retire.len() > MAX_INSTANCES {
        return Err(format!(
            "at most {MAX_INSTANCES} instances a swap (the record must fit in a tag); \
             swap the rest in another"
        ));
    }
    let mut all: Vec<&String> = retire.iter().chain(attach).collect();
    if let Some(bad) = all.iter().find(|i| !is_instance_id(i)) {
        return Err(format!("{bad:?} is not an instance id"));
    }
    all.sort();
    if let Some(pair) = all.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("{} is named twice", pair[0]));
    }
    for id in retire {
        match group.member(id) {
            Some(m) if m.lifecycle_state == "InService" => {}
            Some(m) => {
                return Err(format!(
                    "{id} is {} in {}, not InService",
                    m.lifecycle_state, group.name
                ));
            }
            None => return Err(format!("{id} is not in {}", group.name)),
        }
    }
    if let Some((id, why)) = unattachable.first() {
        return Err(format!("{id} cannot be attached: {why}"));
    }
    if !has_terminate_hook {
        return Err(format!(
            "{} has no terminate lifecycle hook: the retired instances would not drain",
            group.name
        ));
    }
    if group.suspended.iter().any(|p| p == LAUNCH) {
        return Err(format!(
            "{} has Launch suspended: Auto Scaling refuses to attach instances while it is; \
             resume Launch first (the swap holds it itself once the new instances are in)",
            group.name
        ));
    }
    if !group.target_groups.is_empty() && group.suspended.iter().any(|p| p == "AddToLoadBalancer") {
        return Err(format!(
            "{} has AddToLoadBalancer suspended: the attached instances would never be \
             registered in its target groups",
            group.name
        ));
    }
    let suspended_by_swap = HELD
        .iter()
        .filter(|p| !group.suspended.iter().any(|s| s == *p))
        .map(|p| p.to_string())
        .collect();
    Ok(SwapRecord {
        id,
        stage: Stage::Suspend,
        sizes: Sizes {
            min: group.min,
            max: group.max,
            desired: group.desired,
        },
        suspended_before: group.suspended.clone(),
        suspended_by_swap,
        retire: retire.to_vec(),
        attach: attach.to_vec(),
        reason: None,
    })
}

/// The maximum size that lets `attach` more instances join `sizes.desired` (AttachInstances
/// refuses to go over the maximum).
pub fn room_for(sizes: Sizes, attach: usize) -> Option<i32> {
    let needed = sizes
        .desired
        .saturating_add(i32::try_from(attach).unwrap_or(i32::MAX));
    (needed > sizes.max).then_some(needed)
}
