//! The image pipeline: bake an AMI, wait until it is `available`, add a launch template version
//! that differs from its source only in `ImageId`, make it the default, publish the AMI id, and
//! prune what nobody uses any more.
//!
//! Like the drain watch, the pipeline is a typed record with a pure step function
//! ([`pipeline::decide`]); the record lives in `lifeguard:image:*` tags on the launch template,
//! so a pipeline survives the process that started it, and every stage is idempotent: the image
//! is found again by its name, the version by its client token.

pub mod api;
pub mod aws;
mod aws_builder;
mod aws_configuration;
pub mod builder;
pub mod command;
pub mod configuration;
pub mod dry_run;
pub mod pipeline;
pub mod prune;
pub mod roll;
pub mod run;
mod run_builder;
mod run_configuration;
pub mod service;
pub mod start;

#[cfg(test)]
mod builder_tests;
#[cfg(test)]
mod configuration_tests;
#[cfg(test)]
mod tests;

pub use api::{ImageApi, ImageState, ImageView, SnapshotView, TemplateView, VersionView};
pub use pipeline::{Pipeline, Stage, Step};
