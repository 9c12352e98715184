//! lifeguard-controller: the queue-fed half of lifeguard. So far it explains messages; the
//! drain watch, reconcile loop, image pipeline, drills and swaps build on the same model.

pub mod cli;
pub mod config;
pub mod explain;
pub mod queue;
pub mod watch;
