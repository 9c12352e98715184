//! Shared by lifeguard's agent and controller: the message model and its parsers, configuration
//! loading, and the AWS client factory. No business logic lives here.

pub mod aws;
pub mod config;
pub mod lifecycle;
pub mod logging;
pub mod message;
pub mod retry;
