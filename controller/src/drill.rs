//! Scale-in drills: terminate instances of a group through its lifecycle hook, follow each
//! drain to its end, check each archive in S3, and report what was lost.

pub mod api;
pub mod aws;
pub mod command;
pub mod follow;
pub mod html;
pub mod plan;
pub mod report;
pub mod run;
pub mod verify;
#[cfg(test)]
mod verify_tests;
