//! `[images]`: what the service's image pipeline does on its own, from CloudTrail events.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::image::command::MAX_AVAILABLE_WITHIN_SECS;

/// What a new group pinned to a version number of a managed template is switched to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum NewGroupVersion {
    #[default]
    #[serde(rename = "$Latest")]
    Latest,
    #[serde(rename = "$Default")]
    Default,
    /// Leave new groups as they were created.
    #[serde(rename = "unchanged")]
    Unchanged,
}

impl NewGroupVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            NewGroupVersion::Latest => "$Latest",
            NewGroupVersion::Default => "$Default",
            NewGroupVersion::Unchanged => "unchanged",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagesConfig {
    /// A CloudTrail `CreateImage` (EC2's) whose image carries a tag with this key, its value
    /// naming the launch template, or whose description holds `MARKER=TEMPLATE`, starts a
    /// pipeline for that template at `await-available`.
    #[serde(default = "default_marker")]
    pub marker: String,
    /// A CloudTrail `CreateAutoScalingGroup` whose group uses a managed template pinned to a
    /// version number is switched to this (`$Latest`, `$Default` or `unchanged`).
    #[serde(default)]
    pub new_group_version: NewGroupVersion,
    /// Versions prune keeps for pipelines the service starts from events.
    #[serde(default = "default_keep")]
    pub keep: u32,
    /// Whether those pipelines deregister images nothing uses any more.
    #[serde(default)]
    pub deregister: bool,
    #[serde(default = "default_available_within_secs")]
    pub available_within_secs: u64,
    /// Template name → the SSM parameter that gets its new AMI id.
    #[serde(default)]
    pub ssm_parameters: BTreeMap<String, String>,
}

fn default_marker() -> String {
    "lifeguard:release".to_string()
}
fn default_keep() -> u32 {
    5
}
fn default_available_within_secs() -> u64 {
    14_400
}

impl Default for ImagesConfig {
    fn default() -> Self {
        ImagesConfig {
            marker: default_marker(),
            new_group_version: NewGroupVersion::default(),
            keep: default_keep(),
            deregister: false,
            available_within_secs: default_available_within_secs(),
            ssm_parameters: BTreeMap::new(),
        }
    }
}

impl ImagesConfig {
    /// The first bad value: its key and what is wrong.
    pub fn check(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, message: &str| Err((format!("images.{key}"), message.to_string()));
        let marker_ok = (1..=128).contains(&self.marker.len())
            && self
                .marker
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b":._/-".contains(&b));
        if !marker_ok {
            return bad("marker", "1 to 128 of A-Z a-z 0-9 : . _ / -");
        }
        if !(1..=10_000).contains(&self.keep) {
            return bad("keep", "from 1 to 10000");
        }
        if !(60..=MAX_AVAILABLE_WITHIN_SECS).contains(&self.available_within_secs) {
            return bad("available_within_secs", "from 60 to 172800 (48 h)");
        }
        for (template, parameter) in &self.ssm_parameters {
            if !parameter.starts_with('/') || parameter.chars().count() > 256 {
                return bad(
                    &format!("ssm_parameters.{template}"),
                    "a parameter name from the root (`/...`), at most 256 characters",
                );
            }
        }
        Ok(())
    }
}
