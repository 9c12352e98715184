//! lifeguard-controller: the queue-fed half of lifeguard. It watches every lifecycle action of
//! the groups it manages, follows the agents' drains, takes over from silent agents, and
//! explains messages; the image pipeline, drills and swaps build on the same model.

pub mod cli;
pub mod commands;
pub mod config;
pub mod drill;
pub mod explain;
pub mod fleet;
pub mod http;
pub mod image;
pub mod marks;
pub mod metrics;
pub mod pace;
pub mod probe;
pub mod queue;
pub mod router;
pub mod senders;
pub mod service;
pub mod status;
pub mod swap;
pub mod tracker;
pub mod watch;
