//! A command message's parameters, checked: anyone allowed to send to the queue can write
//! them.

use std::time::Duration;

use lifeguard_common::message::{Command, CommandName};
use serde_json::Value;

use crate::drill::plan::Pick;
use crate::drill::run::DrillRequest;
use crate::fleet::is_instance_id;
use crate::swap::run::SwapOptions;

pub enum Work {
    /// `bucket` empty: the group's archive bucket.
    Drill(DrillRequest),
    Swap {
        retire: Vec<String>,
        attach: Vec<String>,
        recover: bool,
        options: SwapOptions,
    },
}

const POLL: Duration = Duration::from_secs(2);

pub fn parse(command: &Command) -> Result<Work, String> {
    let group = command.asg.clone().unwrap_or_default();
    match command.name {
        CommandName::Drill => {
            let pick = match (
                number(command, "count", 1, 10_000)?,
                command.instance_ids.len(),
            ) {
                (Some(count), 0) => Pick::Count(usize::try_from(count).unwrap_or(usize::MAX)),
                (None, 1..) => Pick::Named(instances(&command.instance_ids, "instance_ids")?),
                _ => return Err("give either count or instance_ids".into()),
            };
            let prefix = text(command, "archive_prefix")?.unwrap_or_else(|| "lifeguard".into());
            if prefix.is_empty()
                || prefix.len() > 200
                || !prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/_.-".contains(&b))
            {
                return Err(format!(
                    "archive_prefix {prefix:?} is not a plain key prefix"
                ));
            }
            let bucket = text(command, "bucket")?.unwrap_or_default();
            if !bucket.is_empty() && !crate::config::is_bucket_name(&bucket) {
                return Err(format!("{bucket:?} is not an S3 bucket name"));
            }
            Ok(Work::Drill(DrillRequest {
                group,
                pick,
                keep_capacity: flag(command, "keep_capacity")?,
                timeout: Duration::from_secs(
                    number(command, "timeout_secs", 1, 172_800)?.unwrap_or(3_900),
                ),
                bucket,
                prefix,
                poll: POLL,
                dry_run: false,
            }))
        }
        CommandName::Swap => {
            let recover = flag(command, "recover")?;
            let retire = list(command, "retire")?;
            let attach = list(command, "attach")?;
            if recover != (retire.is_empty() && attach.is_empty()) {
                return Err("give retire and attach, or recover".into());
            }
            Ok(Work::Swap {
                retire,
                attach,
                recover,
                options: SwapOptions {
                    healthy_timeout: Duration::from_secs(
                        number(command, "healthy_timeout_secs", 1, 86_400)?.unwrap_or(900),
                    ),
                    drain_timeout: Duration::from_secs(
                        number(command, "timeout_secs", 1, 172_800)?.unwrap_or(3_900),
                    ),
                    poll: POLL,
                },
            })
        }
        other => Err(format!("{} is not an operator command", other.name())),
    }
}

fn number(command: &Command, key: &str, min: u64, max: u64) -> Result<Option<u64>, String> {
    match command.params.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_u64()
            .filter(|n| (min..=max).contains(n))
            .map(Some)
            .ok_or_else(|| format!("{key} must be a whole number from {min} to {max}")),
    }
}

fn flag(command: &Command, key: &str) -> Result<bool, String> {
    match command.params.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(format!("{key} must be true or false")),
    }
}

fn text(command: &Command, key: &str) -> Result<Option<String>, String> {
    match command.params.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{key} must be a string")),
    }
}

fn list(command: &Command, key: &str) -> Result<Vec<String>, String> {
    match command.params.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => {
            let ids: Option<Vec<String>> = items
                .iter()
                .map(|i| i.as_str().map(str::to_string))
                .collect();
            instances(
                &ids.ok_or_else(|| format!("{key} must list instance ids"))?,
                key,
            )
        }
        Some(_) => Err(format!("{key} must list instance ids")),
    }
}

fn instances(ids: &[String], key: &str) -> Result<Vec<String>, String> {
    if ids.len() > 10_000 {
        return Err(format!("{key}: too many"));
    }
    match ids.iter().find(|id| !is_instance_id(id)) {
        Some(bad) => Err(format!("{key}: {bad:?} is not an instance id")),
        None => Ok(ids.to_vec()),
    }
}
