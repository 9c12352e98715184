//! Which command message a group is running, in the group's tags, so that a command runs once
//! even with several replicas on one queue.
//!
//! A replica working on a message keeps it invisible (its visibility is extended while it
//! works), so the message comes back only if that replica stopped, or, rarely, when SQS
//! delivers it twice. The claim tells the two apart from the one that receives it again: the
//! claim names the message, the replica and when it began; the ids of the last commands run
//! to their end are kept too, so a late duplicate is recognised and dropped.

use std::collections::HashMap;

pub const CLAIM: &str = "lifeguard:command:claim";
pub const DONE: &str = "lifeguard:command:done";
/// A tag value holds 256 characters: six message ids (36 each) with their separators.
const DONE_KEPT: usize = 6;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub message_id: String,
    pub replica: String,
    /// Unix seconds.
    pub since: i64,
}

impl Claim {
    pub fn new(message_id: &str, replica: &str, since: i64) -> Claim {
        Claim {
            message_id: tag_safe(message_id, 80),
            replica: tag_safe(replica, 100),
            since,
        }
    }

    pub fn to_tag(&self) -> String {
        format!("{} {} {}", self.message_id, self.replica, self.since)
    }

    fn parse(text: &str) -> Option<Claim> {
        let mut parts = text.split(' ');
        let claim = Claim {
            message_id: parts.next()?.to_string(),
            replica: parts.next()?.to_string(),
            since: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(claim)
    }
}

/// What a group's tags say about commands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    /// `None` also for a claim that does not parse (anyone can write tags): it holds nothing.
    pub holder: Option<Claim>,
    pub done: Vec<String>,
}

impl Claims {
    pub fn read(tags: &HashMap<String, String>) -> Claims {
        Claims {
            holder: tags.get(CLAIM).and_then(|t| Claim::parse(t)),
            done: tags
                .get(DONE)
                .map(|d| {
                    d.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// The done list with `message_id` first, as a tag value.
    pub fn done_with(&self, message_id: &str) -> String {
        let mut ids = vec![tag_safe(message_id, 80)];
        ids.extend(self.done.iter().filter(|d| *d != message_id).cloned());
        let mut value = String::new();
        for id in ids.into_iter().take(DONE_KEPT) {
            if value.len() + id.len() + 1 > 256 {
                break;
            }
            if !value.is_empty() {
                value.push(',');
            }
            value.push_str(&id);
        }
        value
    }
}

/// What to do with a command message given the group's claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Claim it and run it.
    Run,
    /// Run to its end already: a duplicate.
    AlreadyDone,
    /// This message was being run by a replica that stopped (it came back): take over.
    Interrupted(Claim),
    /// Another command holds the group.
    Busy(Claim),
}

/// A claim older than `stale_after` seconds holds nothing: its replica stopped long ago and
/// its command was never seen again.
pub fn verdict(claims: &Claims, message_id: &str, now: i64, stale_after: i64) -> Verdict {
    if claims.done.iter().any(|d| d == message_id) {
        return Verdict::AlreadyDone;
    }
    match &claims.holder {
        Some(claim) if claim.message_id == message_id => Verdict::Interrupted(claim.clone()),
        Some(claim) if now.saturating_sub(claim.since) <= stale_after => {
            Verdict::Busy(claim.clone())
        }
        _ => Verdict::Run,
    }
}

/// Printable ASCII without separators, at most `max` characters.
fn tag_safe(text: &str, max: usize) -> String {
    text.chars()
        .filter(|c| c.is_ascii_graphic() && *c != ',')
        .take(max)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(claim: Option<&str>, done: Option<&str>) -> HashMap<String, String> {
        let mut tags = HashMap::new();
        if let Some(c) = claim {
            tags.insert(CLAIM.to_string(), c.to_string());
        }
        if let Some(d) = done {
            tags.insert(DONE.to_string(), d.to_string());
        }
        tags
    }

    #[test]
    fn a_command_runs_once_and_a_returning_one_is_taken_over() {
        let now = 1_000_000;
        assert_eq!(
            verdict(&Claims::read(&tags(None, None)), "m1", now, 60),
            Verdict::Run
        );
        let claim = Claim::new("m1", "replica-a", now - 30);
        let claimed = Claims::read(&tags(Some(&claim.to_tag()), None));
        assert_eq!(claimed.holder, Some(claim.clone()));
        assert_eq!(
            verdict(&claimed, "m1", now, 60),
            Verdict::Interrupted(claim.clone())
        );
        assert_eq!(verdict(&claimed, "m2", now, 60), Verdict::Busy(claim));
        // A claim left by a replica long gone holds nothing.
        assert_eq!(verdict(&claimed, "m2", now + 3600, 60), Verdict::Run);
        let done = Claims::read(&tags(None, Some("m0,m1")));
        assert_eq!(verdict(&done, "m1", now, 60), Verdict::AlreadyDone);
    }

    #[test]
    fn the_done_list_keeps_the_latest_and_fits_in_a_tag() {
        let mut claims = Claims::default();
        for n in 0..20 {
            let id = format!("{n:0>36}");
            claims.done = Claims::read(&tags(None, Some(&claims.done_with(&id)))).done;
        }
        assert_eq!(claims.done.len(), DONE_KEPT);
        assert_eq!(claims.done[0], format!("{:0>36}", 19));
        assert!(claims.done_with("x").len() <= 256);
    }

    #[test]
    fn a_forged_claim_holds_nothing_and_values_stay_plain() {
        for forged in ["", "m1", "m1 a notanumber", "m1 a 5 extra"] {
            assert_eq!(
                Claims::read(&tags(Some(forged), None)).holder,
                None,
                "{forged}"
            );
        }
        let claim = Claim::new("m1,\n", "host name\twith spaces", 5);
        assert_eq!(claim.to_tag(), "m1 hostnamewithspaces 5");
    }
}
