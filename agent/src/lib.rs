//! lifeguard-agent: notices that its instance is leaving, drains it, archives its logs to S3
//! verified, and completes the lifecycle action. `main.rs` is a thin shell over this library.

pub mod archive;
pub mod cadence;
pub mod cli;
pub mod config;
pub mod connections;
pub mod drain;
pub mod imds;
pub mod keys;
pub mod launch;
pub mod lazy;
pub mod lifecycle;
pub mod manual;
pub mod pack;
pub mod report;
pub mod run;
pub mod service;
pub mod state;
pub mod step_runner;
pub mod steps;
pub mod units;
pub mod upload;
pub mod watch;
