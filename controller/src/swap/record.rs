//! A swap's record, kept in the group's tags so that a crashed swap can be finished or rolled
//! back by `swap --recover`, by any operator or replica.
//!
//! Tags are the only store every replica and operator machine already shares, and anyone with
//! `autoscaling:CreateOrUpdateTags` can write them: a record is parsed strictly, and one that
//! does not parse is refused, never acted on.

use std::collections::HashMap;

use crate::fleet::is_instance_id;

pub const PREFIX: &str = "lifeguard:swap:";
const ID: &str = "lifeguard:swap:id";
const STAGE: &str = "lifeguard:swap:stage";
const SIZES: &str = "lifeguard:swap:sizes";
const SUSPENDED_BEFORE: &str = "lifeguard:swap:suspended-before";
const SUSPENDED_BY_SWAP: &str = "lifeguard:swap:suspended-by-swap";
const RETIRE: &str = "lifeguard:swap:retire";
const ATTACH: &str = "lifeguard:swap:attach";
const REASON: &str = "lifeguard:swap:reason";

/// Every key a record may have, for deleting it.
pub const KEYS: [&str; 8] = [
    ID,
    STAGE,
    SIZES,
    SUSPENDED_BEFORE,
    SUSPENDED_BY_SWAP,
    RETIRE,
    ATTACH,
    REASON,
];

/// Auto Scaling's processes (SuspendProcesses).
pub const PROCESSES: [&str; 9] = [
    "Launch",
    "Terminate",
    "AddToLoadBalancer",
    "AlarmNotification",
    "AZRebalance",
    "HealthCheck",
    "InstanceRefresh",
    "ReplaceUnhealthy",
    "ScheduledActions",
];

/// The processes a swap holds while it runs: each would launch, terminate or rebalance
/// instances behind its back (scaling policies through `AlarmNotification`, scheduled
/// actions, zone rebalancing, the replacement of an instance whose health check fails while
/// it starts). `HealthCheck` and `AddToLoadBalancer` keep running: the swap waits on both.
/// `Launch` is held only once the new instances are attached (see `run::attach`).
pub const HELD: [&str; 6] = [
    "Launch",
    "Terminate",
    "AZRebalance",
    "ReplaceUnhealthy",
    "AlarmNotification",
    "ScheduledActions",
];

pub const LAUNCH: &str = "Launch";

/// A tag value holds at most 256 characters: 12 instance ids of 19 with their commas.
pub const MAX_INSTANCES: usize = 12;
const MAX_TAG_VALUE: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Suspend the held processes and make room under the maximum size.
    Suspend,
    Attach,
    /// Until each attached instance is `InService`, healthy, and healthy in every target group.
    AwaitHealthy,
    /// Terminate the retired instances through the hook and follow them out of the group.
    Retire,
    /// Put back the recorded sizes, resume what the swap suspended, delete the record.
    Restore,
    /// Detach what was attached, then restore.
    RollBack,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Suspend => "suspend",
            Stage::Attach => "attach",
            Stage::AwaitHealthy => "await-healthy",
            Stage::Retire => "retire",
            Stage::Restore => "restore",
            Stage::RollBack => "roll-back",
        }
    }

    fn parse(text: &str) -> Option<Stage> {
        [
            Stage::Suspend,
            Stage::Attach,
            Stage::AwaitHealthy,
            Stage::Retire,
            Stage::Restore,
            Stage::RollBack,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Sizes {
    pub min: i32,
    pub max: i32,
    pub desired: i32,
}

impl Sizes {
    fn to_tag(self) -> String {
        format!("min={} max={} desired={}", self.min, self.max, self.desired)
    }

    fn parse(text: &str) -> Option<Sizes> {
        let mut fields = text.split(' ');
        let mut next = |name: &str| -> Option<i32> {
            let value: i32 = fields.next()?.strip_prefix(name)?.parse().ok()?;
            (0..=100_000).contains(&value).then_some(value)
        };
        let sizes = Sizes {
            min: next("min=")?,
            max: next("max=")?,
            desired: next("desired=")?,
        };
        (fields.next().is_none() && sizes.min <= sizes.desired && sizes.desired <= sizes.max)
            .then_some(sizes)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapRecord {
    pub id: String,
    pub stage: Stage,
    /// The group's sizes before the swap: what it ends with.
    pub sizes: Sizes,
    /// Processes suspended before the swap began: they stay suspended.
    pub suspended_before: Vec<String>,
    /// What the swap suspended: exactly what it resumes.
    pub suspended_by_swap: Vec<String>,
    pub retire: Vec<String>,
    pub attach: Vec<String>,
    /// Why the swap is rolling back, or what it could not finish.
    pub reason: Option<String>,
}

impl SwapRecord {
    pub fn to_tags(&self) -> Vec<(String, String)> {
        let mut tags = vec![
            (ID.to_string(), self.id.clone()),
            (STAGE.to_string(), self.stage.as_str().to_string()),
            (SIZES.to_string(), self.sizes.to_tag()),
            (
                SUSPENDED_BEFORE.to_string(),
                self.suspended_before.join(","),
            ),
            (
                SUSPENDED_BY_SWAP.to_string(),
                self.suspended_by_swap.join(","),
            ),
            (RETIRE.to_string(), self.retire.join(",")),
            (ATTACH.to_string(), self.attach.join(",")),
        ];
        if let Some(reason) = &self.reason {
            tags.push((REASON.to_string(), tag_value(reason)));
        }
        tags
    }

    /// The record in a group's tags: `Ok(None)` without one, `Err` for one that does not parse.
    pub fn from_tags(tags: &HashMap<String, String>) -> Result<Option<SwapRecord>, String> {
        let Some(id) = tags.get(ID) else {
            return if tags.keys().any(|k| k.starts_with(PREFIX)) {
                Err(format!("swap tags without {ID}"))
            } else {
                Ok(None)
            };
        };
        let field = |key: &str| {
            tags.get(key)
                .map(String::as_str)
                .ok_or_else(|| format!("swap record {id:?} has no {key}"))
        };
        let bad = |key: &str| format!("swap record {id:?}: {key} does not parse");
        if !is_swap_id(id) {
            return Err(format!("{ID} {id:?} is not a swap id"));
        }
        let stage = Stage::parse(field(STAGE)?).ok_or_else(|| bad(STAGE))?;
        let sizes = Sizes::parse(field(SIZES)?).ok_or_else(|| bad(SIZES))?;
        let processes = |key: &str| -> Result<Vec<String>, String> {
            let list = split(field(key)?);
            if list.iter().all(|p| PROCESSES.contains(&p.as_str())) {
                Ok(list)
            } else {
                Err(bad(key))
            }
        };
        let instances = |key: &str| -> Result<Vec<String>, String> {
            let list = split(field(key)?);
            if list.len() <= MAX_INSTANCES && list.iter().all(|i| is_instance_id(i)) {
                Ok(list)
            } else {
                Err(bad(key))
            }
        };
        Ok(Some(SwapRecord {
            id: id.clone(),
            stage,
            sizes,
            suspended_before: processes(SUSPENDED_BEFORE)?,
            suspended_by_swap: processes(SUSPENDED_BY_SWAP)?,
            retire: instances(RETIRE)?,
            attach: instances(ATTACH)?,
            reason: tags.get(REASON).cloned(),
        }))
    }
}

/// `swap-YYYYMMDDTHHMMSSZ`.
pub fn swap_id(at: time::OffsetDateTime) -> String {
    format!(
        "swap-{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

fn is_swap_id(id: &str) -> bool {
    id.strip_prefix("swap-").is_some_and(|stamp| {
        stamp.len() == 16
            && stamp.bytes().enumerate().all(|(n, b)| match n {
                8 => b == b'T',
                15 => b == b'Z',
                _ => b.is_ascii_digit(),
            })
    })
}

fn split(text: &str) -> Vec<String> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// A printable value that fits in a tag.
fn tag_value(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_TAG_VALUE)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> SwapRecord {
        SwapRecord {
            id: "swap-20261203T150102Z".into(),
            stage: Stage::AwaitHealthy,
            sizes: Sizes {
                min: 1,
                max: 4,
                desired: 2,
            },
            suspended_before: vec!["AZRebalance".into()],
            suspended_by_swap: vec!["Launch".into(), "Terminate".into()],
            retire: vec!["i-0123456789abcdef0".into()],
            attach: vec!["i-0fedcba9876543210".into()],
            reason: None,
        }
    }

    fn tags(record: &SwapRecord) -> HashMap<String, String> {
        record.to_tags().into_iter().collect()
    }

    #[test]
    fn a_record_reads_back_from_its_tags() {
        let mut r = record();
        assert_eq!(SwapRecord::from_tags(&tags(&r)), Ok(Some(r.clone())));
        r.reason = Some("i-0fedcba9876543210 not healthy".into());
        r.suspended_before.clear();
        assert_eq!(SwapRecord::from_tags(&tags(&r)), Ok(Some(r)));
        assert_eq!(SwapRecord::from_tags(&HashMap::new()), Ok(None));
    }

    #[test]
    fn every_value_fits_in_a_tag_at_the_most_instances() {
        let mut r = record();
        r.retire = vec!["i-0123456789abcdef0".into(); MAX_INSTANCES];
        r.suspended_before = PROCESSES.iter().map(|p| p.to_string()).collect();
        r.reason = Some("x\n".repeat(400));
        for (key, value) in r.to_tags() {
            assert!(value.chars().count() <= MAX_TAG_VALUE, "{key}");
            assert!(!value.contains('\n'), "{key}");
        }
    }

    #[test]
    fn a_tampered_record_is_refused_not_acted_on() {
        let cases = [
            (STAGE, "launch-everything"),
            (SIZES, "min=1 max=4 desired=9"),
            (SIZES, "min=-1 max=4 desired=2"),
            (SIZES, "min=1 max=99999999999 desired=2"),
            (SUSPENDED_BY_SWAP, "Launch,Everything"),
            (RETIRE, "i-0123456789abcdef0,../../etc"),
            (ATTACH, "i-0123456789abcdef0;rm -rf /"),
            (ID, "swap-now"),
        ];
        for (key, value) in cases {
            let mut t = tags(&record());
            t.insert(key.into(), value.into());
            assert!(SwapRecord::from_tags(&t).is_err(), "{key}={value}");
        }
        let mut t = tags(&record());
        t.remove(ID);
        assert!(SwapRecord::from_tags(&t).is_err());
        t = tags(&record());
        t.remove(SIZES);
        assert!(SwapRecord::from_tags(&t).is_err());
    }

    #[test]
    fn swap_ids_are_utc_stamps() {
        let at = time::macros::datetime!(2026-12-03 15:01:02 UTC);
        assert_eq!(swap_id(at), "swap-20261203T150102Z");
        assert!(is_swap_id(&swap_id(at)));
    }
}
