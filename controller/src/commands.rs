//! `Drill` and `Swap` command messages, run by the controller service: once per message even
//! with several replicas (see [`claim`]), the outcome in the log.

pub mod claim;
mod params;

use std::sync::Arc;
use std::time::Duration;

use lifeguard_common::message::{Command, CommandName, Message};
use tokio_util::sync::CancellationToken;

use self::claim::{CLAIM, Claim, Claims, DONE, Verdict, verdict};
use self::params::{Work, parse};
use crate::config::ControllerConfig;
use crate::drill::api::DrillApi;
use crate::drill::run::{Drilled, Live, drill};
use crate::fleet::FleetError;
use crate::queue::Handled;
use crate::swap::api::SwapApi;
use crate::swap::record::SwapRecord;
use crate::swap::run::{Swapped, recover, swap};
use crate::tracker::retry;

/// A claim this old holds nothing: longer than any drill or swap may follow its instances.
const STALE_AFTER_SECS: i64 = 2 * 172_800;

pub struct OperatorCommands<D, S> {
    pub drill: D,
    pub swap: S,
    pub config: Arc<ControllerConfig>,
    pub replica: String,
    pub shutdown: CancellationToken,
    /// How long a replica waits after claiming before it reads the claim back: two replicas
    /// given one message at once both write, and the later write wins.
    pub settle: Duration,
}

impl<D: DrillApi, S: SwapApi> OperatorCommands<D, S> {
    pub fn handles(message: &Message) -> bool {
        matches!(message, Message::Command(c) if matches!(c.name, CommandName::Drill | CommandName::Swap))
    }

    pub async fn handle(&self, command: &Command, message_id: &str) -> Handled {
        let name = command.name.name();
        let Some(group) = command.asg.as_deref() else {
            tracing::warn!(command = name, %message_id, "command without asg; deleted");
            return Handled::Done;
        };
        let work = match parse(command) {
            Ok(work) => work,
            Err(why) => {
                tracing::warn!(command = name, asg = %group, %message_id, %why,
                    "command refused; deleted");
                return Handled::Done;
            }
        };
        let found = match self.swap.group(group).await {
            Ok(Some(found)) => found,
            Ok(None) => {
                tracing::warn!(command = name, asg = %group, %message_id, "no such group; deleted");
                return Handled::Done;
            }
            Err(error) => return retry(&error),
        };
        if !self.config.manages(group, &found.tags) {
            tracing::warn!(command = name, asg = %group, %message_id,
                "the group is not managed by lifeguard; deleted");
            return Handled::Done;
        }
        let claims = Claims::read(&found.tags);
        let interrupted = match verdict(&claims, message_id, unix_now(), STALE_AFTER_SECS) {
            Verdict::AlreadyDone => {
                tracing::info!(command = name, asg = %group, %message_id,
                    "command already run to its end (delivered again); deleted");
                return Handled::Done;
            }
            Verdict::Busy(holder) => {
                tracing::warn!(command = name, asg = %group, %message_id,
                    busy_with = %holder.message_id, replica = %holder.replica,
                    "another command is running on the group; this one is refused and deleted");
                return Handled::Done;
            }
            Verdict::Interrupted(holder) => Some(holder),
            Verdict::Run => None,
        };
        if let Err(error) = self.claim(group, message_id).await {
            return retry(&error);
        }
        match self.held_by_me(group, message_id).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(command = name, asg = %group, %message_id,
                    "another replica claimed this command; left to it");
                return Handled::Done;
            }
            Err(error) => return retry(&error),
        }
        let ran = tokio::select! {
            ran = self.run(group, message_id, work, interrupted) => ran,
            () = self.shutdown.cancelled() => {
                // The claim stays: the message comes back to another replica, which takes
                // over (a swap from its record; a drill's terminations go on through the hooks).
                return Handled::Retry { reason: "shutting down mid-command".into() };
            }
        };
        match ran {
            Ok(()) => match self.finish(group, &claims, message_id).await {
                Ok(()) => Handled::Done,
                Err(error) => retry(&error),
            },
            Err(error) => retry(&error),
        }
    }

    async fn run(
        &self,
        group: &str,
        message_id: &str,
        work: Work,
        interrupted: Option<Claim>,
    ) -> Result<(), FleetError> {
        match work {
            Work::Drill(mut request) => {
                if let Some(holder) = interrupted {
                    // Picking again would drill twice as many: the terminations it made go
                    // on through the hooks, and the agents' reports are on the queue.
                    tracing::warn!(asg = %group, %message_id, replica = %holder.replica,
                        "drill interrupted when its replica stopped; not run again");
                    return Ok(());
                }
                if request.bucket.is_empty() {
                    match crate::drill::command::bucket_of(&self.drill, &self.config, group).await?
                    {
                        Ok(bucket) => request.bucket = bucket,
                        Err(why) => {
                            tracing::warn!(asg = %group, %message_id, %why, "drill refused");
                            return Ok(());
                        }
                    }
                }
                match drill(&self.drill, &request, &mut Live::silent()).await? {
                    Drilled::Report(report) => {
                        for line in crate::drill::report::text(&report).lines() {
                            tracing::info!(asg = %group, %message_id, "drill: {line}");
                        }
                        if report.failed() {
                            tracing::error!(asg = %group, %message_id, lost = report.summary.lost,
                                timed_out = report.summary.timed_out, "drill: something was lost");
                        } else {
                            tracing::info!(asg = %group, %message_id, "drill: nothing lost");
                        }
                    }
                    Drilled::Refused(why) => {
                        tracing::warn!(asg = %group, %message_id, %why, "drill refused");
                    }
                    Drilled::DryRun(_) => {}
                }
                Ok(())
            }
            Work::Swap {
                retire,
                attach,
                recover: asked_recover,
                options,
            } => {
                let mut say = |line: &str| {
                    tracing::info!(asg = %group, %message_id, "swap: {line}");
                };
                // A swap whose replica stopped is recovered from its record, if it wrote one.
                let recorded = interrupted.is_some()
                    && self
                        .swap
                        .group(group)
                        .await?
                        .is_some_and(|g| matches!(SwapRecord::from_tags(&g.tags), Ok(Some(_))));
                let swapped = if asked_recover || recorded {
                    recover(&self.swap, group, options, &mut say).await?
                } else {
                    swap(
                        &self.swap, group, &retire, &attach, false, options, &mut say,
                    )
                    .await?
                };
                let (line, code) = crate::swap::command::outcome(&swapped);
                if code == 0 {
                    tracing::info!(asg = %group, %message_id, "{line}");
                } else if matches!(swapped, Swapped::Refused(_)) {
                    tracing::warn!(asg = %group, %message_id, "{line}");
                } else {
                    tracing::error!(asg = %group, %message_id, "{line}");
                }
                Ok(())
            }
        }
    }

    async fn claim(&self, group: &str, message_id: &str) -> Result<(), FleetError> {
        let claim = Claim::new(message_id, &self.replica, unix_now());
        self.swap
            .write_record(group, &[(CLAIM.to_string(), claim.to_tag())])
            .await
    }

    async fn held_by_me(&self, group: &str, message_id: &str) -> Result<bool, FleetError> {
        tokio::time::sleep(self.settle).await;
        let tags = self
            .swap
            .group(group)
            .await?
            .map(|g| g.tags)
            .unwrap_or_default();
        let mine = Claim::new(message_id, &self.replica, 0);
        Ok(Claims::read(&tags)
            .holder
            .is_some_and(|held| held.message_id == mine.message_id && held.replica == mine.replica))
    }

    async fn finish(
        &self,
        group: &str,
        claims: &Claims,
        message_id: &str,
    ) -> Result<(), FleetError> {
        self.swap
            .write_record(group, &[(DONE.to_string(), claims.done_with(message_id))])
            .await?;
        self.swap.delete_record(group, &[CLAIM]).await
    }
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
