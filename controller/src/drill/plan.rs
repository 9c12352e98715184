//! Which instances a drill terminates: the ones named, or `count` spread across availability
//! zones, so a drill also shows how a zone's instances leave.

use std::collections::BTreeMap;

/// A member of the group as the drill sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub zone: String,
    /// Auto Scaling's lifecycle state (`InService`, `Pending`, `Terminating:Wait`, ...).
    pub lifecycle_state: String,
}

/// The group as the drill needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillGroup {
    pub name: String,
    pub min_size: i32,
    pub desired_capacity: i32,
    pub tags: std::collections::HashMap<String, String>,
    pub members: Vec<Member>,
}

/// What to terminate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    Count(usize),
    Named(Vec<String>),
}

/// The instances to terminate, or why the drill cannot run. `decrement`: the desired capacity
/// goes down with each, which Auto Scaling refuses below the minimum size.
pub fn pick(group: &DrillGroup, wanted: &Pick, decrement: bool) -> Result<Vec<Member>, String> {
    let in_service: Vec<&Member> = group
        .members
        .iter()
        .filter(|m| m.lifecycle_state == "InService")
        .collect();
    let chosen: Vec<Member> = match wanted {
        Pick::Named(ids) => {
            let mut chosen = Vec::new();
            for id in ids {
                match group.members.iter().find(|m| &m.id == id) {
                    Some(m) if m.lifecycle_state == "InService" => {
                        if !chosen.iter().any(|c: &Member| &c.id == id) {
                            chosen.push(m.clone());
                        }
                    }
                    Some(m) => {
                        return Err(format!(
                            "{id} is {} in {}, not InService",
                            m.lifecycle_state, group.name
                        ));
                    }
                    None => return Err(format!("{id} is not a member of {}", group.name)),
                }
            }
            chosen
        }
        Pick::Count(count) => {
            if *count == 0 {
                return Err("--count: at least 1".into());
            }
            if *count > in_service.len() {
                return Err(format!(
                    "{} has {} instances in service, fewer than {count}",
                    group.name,
                    in_service.len()
                ));
            }
            spread(&in_service, *count)
        }
    };
    if decrement {
        let left = i64::from(group.desired_capacity) - chosen.len() as i64;
        if left < i64::from(group.min_size) {
            return Err(format!(
                "terminating {} with the desired capacity decremented would take {} below its \
                 minimum size {} (desired {}): use --keep-capacity, or lower the minimum",
                chosen.len(),
                group.name,
                group.min_size,
                group.desired_capacity
            ));
        }
    }
    Ok(chosen)
}

/// `count` members taken one zone at a time in turn (zones and members in id order, so the
/// choice is the same for the same group).
fn spread(members: &[&Member], count: usize) -> Vec<Member> {
    let mut zones: BTreeMap<&str, Vec<&Member>> = BTreeMap::new();
    for member in members {
        zones.entry(member.zone.as_str()).or_default().push(member);
    }
    for list in zones.values_mut() {
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list.reverse();
    }
    let mut chosen = Vec::new();
    while chosen.len() < count {
        let before = chosen.len();
        for list in zones.values_mut() {
            if chosen.len() == count {
                break;
            }
            if let Some(member) = list.pop() {
                chosen.push((*member).clone());
            }
        }
        if chosen.len() == before {
            break;
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(members: &[(&str, &str, &str)]) -> DrillGroup {
        DrillGroup {
            name: "web".into(),
            min_size: 1,
            desired_capacity: members.len() as i32,
            tags: Default::default(),
            members: members
                .iter()
                .map(|(id, zone, state)| Member {
                    id: id.to_string(),
                    zone: zone.to_string(),
                    lifecycle_state: state.to_string(),
                })
                .collect(),
        }
    }

    #[test]
    fn a_count_is_spread_across_zones() {
        let g = group(&[
            ("i-1", "a", "InService"),
            ("i-2", "a", "InService"),
            ("i-3", "a", "InService"),
            ("i-4", "b", "InService"),
            ("i-5", "c", "InService"),
            ("i-6", "c", "Terminating:Wait"),
        ]);
        let ids = |p: Vec<Member>| p.into_iter().map(|m| m.id).collect::<Vec<_>>();
        assert_eq!(
            ids(pick(&g, &Pick::Count(3), false).unwrap()),
            ["i-1", "i-4", "i-5"]
        );
        assert_eq!(
            ids(pick(&g, &Pick::Count(5), false).unwrap()),
            ["i-1", "i-4", "i-5", "i-2", "i-3"]
        );
        assert!(
            pick(&g, &Pick::Count(6), false).is_err(),
            "i-6 is not in service"
        );
        assert!(pick(&g, &Pick::Count(0), false).is_err());
    }

    #[test]
    fn named_instances_must_be_in_service_members() {
        let g = group(&[("i-1", "a", "InService"), ("i-2", "a", "Pending")]);
        assert!(pick(&g, &Pick::Named(vec!["i-9".into()]), false).is_err());
        assert!(pick(&g, &Pick::Named(vec!["i-2".into()]), false).is_err());
        let once = pick(&g, &Pick::Named(vec!["i-1".into(), "i-1".into()]), false).unwrap();
        assert_eq!(once.len(), 1);
    }

    #[test]
    fn decrementing_below_the_minimum_is_refused_up_front() {
        let g = group(&[("i-1", "a", "InService"), ("i-2", "b", "InService")]);
        let why = pick(&g, &Pick::Count(2), true).unwrap_err();
        assert!(why.contains("--keep-capacity"), "{why}");
        assert!(pick(&g, &Pick::Count(1), true).is_ok());
        assert!(pick(&g, &Pick::Count(2), false).is_ok());
    }
}
