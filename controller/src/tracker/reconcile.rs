//! Rebuilding the watch from AWS: every instance of a managed group that a hook holds is
//! watched, whatever messages were missed or lost, and whatever this replica forgot in a
//! restart. Also refreshes what is known of each group.

use std::collections::HashMap;

use super::{Tracker, now};
use crate::fleet::{Fleet, FleetError};

impl<F: Fleet> Tracker<F> {
    pub async fn reconcile(&self) -> Result<(), FleetError> {
        let views = self
            .fleet
            .groups(&self.config.groups.tag, &self.config.groups.names)
            .await?;
        let mut groups = HashMap::new();
        let mut new: Vec<(String, String, lifeguard_common::message::Transition)> = Vec::new();
        let mut waiting_ids = Vec::new();
        for view in &views {
            let managed = self.managed_from(view);
            if managed.is_some() {
                for (id, transition) in &view.waiting {
                    waiting_ids.push(id.clone());
                    if !self.is_watched(id, *transition) {
                        new.push((id.clone(), view.name.clone(), *transition));
                    }
                }
            }
            groups.insert(view.name.clone(), managed);
        }

        let ids: Vec<String> = new.iter().map(|(id, ..)| id.clone()).collect();
        let (found, states) = if ids.is_empty() {
            (HashMap::new(), HashMap::new())
        } else {
            // The group listing may be older than an action this replica (or another) has
            // just completed: look again after reading the marks, or an ended action would be
            // taken for a new one and its outcome overwritten.
            let found = self.fleet.marks(&ids).await?;
            (found, self.fleet.states(&ids).await?)
        };
        let mut added = 0usize;
        for (id, asg, transition) in &new {
            let Some(Some(group)) = groups.get(asg) else {
                continue;
            };
            if !states.get(id).is_some_and(|s| s.waits_for(*transition)) {
                continue;
            }
            let marks = found.get(id).cloned().unwrap_or_default();
            let marked_hook = marks
                .action
                .as_ref()
                .filter(|a| a.transition == *transition)
                .and_then(|a| a.hook.clone());
            let view = views.iter().find(|v| &v.name == asg);
            let Some(hook) = view.and_then(|v| {
                v.hook(*transition, marked_hook.as_deref())
                    .or_else(|| v.hook(*transition, None))
            }) else {
                tracing::warn!(instance_id = %id, %asg, %transition,
                    "waiting instance but no single hook of that transition to act on; left to its hooks' timeouts");
                continue;
            };
            let began_at = self
                .ensure_action_mark(id, *transition, Some(&hook.name), None, &marks)
                .await?;
            if self.watch_action(id, asg, hook, &group.policy, began_at, &marks) {
                added += 1;
            }
        }

        // Watched actions no longer waiting are settled at their next look.
        let gone: Vec<String> = self
            .watched_ids()
            .into_iter()
            .filter(|id| !waiting_ids.contains(id))
            .collect();
        self.make_due(&gone, now());
        let managed = groups.values().filter(|g| g.is_some()).count();
        self.cache_groups(groups);
        self.metrics.reconciled();
        tracing::info!(
            groups = managed,
            waiting = waiting_ids.len(),
            added,
            "reconciled"
        );
        Ok(())
    }
}
