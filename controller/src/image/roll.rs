//! The optional `roll` stage: an instance refresh of every group that uses the template, so the
//! running instances move onto the new image. Every replaced instance leaves through the
//! group's terminate hook, so its agent drains and archives as in any scale-in.

use time::OffsetDateTime;

/// How a roll replaces instances (Auto Scaling's refresh preferences). Skip-matching is always
/// on: instances already on the new version are left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roll {
    pub min_healthy_percentage: u8,
    pub instance_warmup_secs: u32,
    /// Ascending, the last 100 (AWS's rule); empty: no checkpoints.
    pub checkpoints: Vec<u8>,
}

impl Roll {
    /// `min=90 warmup=300 checkpoints=50,100`, for the record's tag.
    pub fn encode(&self) -> String {
        let checkpoints: Vec<String> = self.checkpoints.iter().map(u8::to_string).collect();
        format!(
            "min={} warmup={} checkpoints={}",
            self.min_healthy_percentage,
            self.instance_warmup_secs,
            checkpoints.join(",")
        )
    }

    pub fn decode(text: &str) -> Result<Roll, String> {
        let mut roll = Roll {
            min_healthy_percentage: 90,
            instance_warmup_secs: 300,
            checkpoints: Vec::new(),
        };
        for word in text.split_whitespace() {
            let (key, value) = word
                .split_once('=')
                .ok_or_else(|| format!("{word:?}: not key=value"))?;
            match key {
                "min" => {
                    roll.min_healthy_percentage =
                        value.parse().map_err(|_| format!("min={value}"))?;
                }
                "warmup" => {
                    roll.instance_warmup_secs =
                        value.parse().map_err(|_| format!("warmup={value}"))?;
                }
                "checkpoints" if value.is_empty() => {}
                "checkpoints" => {
                    roll.checkpoints = value
                        .split(',')
                        .map(|c| c.parse().map_err(|_| format!("checkpoint {c}")))
                        .collect::<Result<_, _>>()?;
                }
                other => return Err(format!("unknown roll setting {other}")),
            }
        }
        roll.check()?;
        Ok(roll)
    }

    /// AWS's rules for the preferences, checked before anything starts.
    pub fn check(&self) -> Result<(), String> {
        if self.min_healthy_percentage > 100 {
            return Err("the minimum healthy percentage is 0 to 100".into());
        }
        if self.instance_warmup_secs > 3600 * 24 {
            return Err("the instance warmup is at most a day".into());
        }
        let ascending = self.checkpoints.windows(2).all(|w| w[0] < w[1]);
        let ends_at_100 = self.checkpoints.last().is_none_or(|last| *last == 100);
        if !ascending || !ends_at_100 || self.checkpoints.iter().any(|c| *c == 0 || *c > 100) {
            return Err("checkpoints ascend from 1 to 100 and the last is 100".into());
        }
        Ok(())
    }
}

/// An instance refresh as the roll needs to see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshView {
    pub id: String,
    pub status: String,
    pub percent: Option<i32>,
    pub reason: Option<String>,
    pub started_at: Option<OffsetDateTime>,
}

/// A group that uses the template: its name, the version number it pins (none for `$Latest`
/// and `$Default`) and the newest refresh it has had since the roll began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRoll {
    pub group: String,
    pub pinned: Option<i64>,
    pub refresh: Option<RefreshView>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollStep {
    /// Start a refresh; pinned groups get the new version as their desired configuration, so
    /// a failed refresh can roll back.
    Start {
        group: String,
        pinned: bool,
    },
    Wait {
        detail: String,
    },
    Done,
    Fail {
        reason: String,
    },
}

const RUNNING: [&str; 5] = [
    "Pending",
    "InProgress",
    "Cancelling",
    "RollbackInProgress",
    "Baking",
];

/// What the roll does next.
pub fn next(groups: &[GroupRoll]) -> RollStep {
    let mut waiting = Vec::new();
    for group in groups {
        match &group.refresh {
            None => {
                return RollStep::Start {
                    group: group.group.clone(),
                    pinned: group.pinned.is_some(),
                };
            }
            Some(refresh) if RUNNING.contains(&refresh.status.as_str()) => {
                waiting.push(format!(
                    "{} {} {}%",
                    group.group,
                    refresh.status,
                    refresh.percent.unwrap_or(0)
                ));
            }
            Some(refresh) if refresh.status == "Successful" => {}
            Some(refresh) => {
                return RollStep::Fail {
                    reason: format!(
                        "instance refresh {} of {} ended {}{}",
                        refresh.id,
                        group.group,
                        refresh.status,
                        refresh
                            .reason
                            .as_deref()
                            .map(|r| format!(": {r}"))
                            .unwrap_or_default()
                    ),
                };
            }
        }
    }
    if waiting.is_empty() {
        RollStep::Done
    } else {
        RollStep::Wait {
            detail: waiting.join(", "),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refresh(status: &str) -> Option<RefreshView> {
        Some(RefreshView {
            id: "r-1".into(),
            status: status.into(),
            percent: Some(50),
            reason: Some("launch abandoned".into()),
            started_at: None,
        })
    }

    fn group(name: &str, pinned: Option<i64>, refresh: Option<RefreshView>) -> GroupRoll {
        GroupRoll {
            group: name.into(),
            pinned,
            refresh,
        }
    }

    #[test]
    fn each_group_is_refreshed_once_and_followed_to_its_end() {
        assert_eq!(
            next(&[
                group("a", None, refresh("Successful")),
                group("b", Some(3), None)
            ]),
            RollStep::Start {
                group: "b".into(),
                pinned: true
            }
        );
        assert!(matches!(
            next(&[group("a", None, refresh("InProgress"))]),
            RollStep::Wait { .. }
        ));
        assert_eq!(
            next(&[group("a", None, refresh("Successful"))]),
            RollStep::Done
        );
        assert_eq!(next(&[]), RollStep::Done);
        let RollStep::Fail { reason } = next(&[group("a", Some(3), refresh("RollbackSuccessful"))])
        else {
            panic!("a rolled-back refresh fails the roll");
        };
        assert!(
            reason.contains("RollbackSuccessful: launch abandoned"),
            "{reason}"
        );
    }

    #[test]
    fn preferences_follow_aws_rules_and_survive_the_tag() {
        let roll = Roll {
            min_healthy_percentage: 50,
            instance_warmup_secs: 60,
            checkpoints: vec![50, 100],
        };
        assert_eq!(Roll::decode(&roll.encode()), Ok(roll));
        for bad in [
            "min=101",
            "checkpoints=50",
            "checkpoints=60,50,100",
            "speed=9",
        ] {
            assert!(Roll::decode(bad).is_err(), "{bad}");
        }
    }
}
