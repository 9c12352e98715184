//! Instance swaps: replace named instances of a group with named new ones while the group's
//! scaling processes are held, the new ones in service and healthy before the old ones drain
//! out through the terminate hook, and the group's sizes and processes exactly as before at
//! the end. The swap is recorded in the group's tags at every stage, so `swap --recover`
//! finishes or rolls back one that was interrupted.

pub mod api;
pub mod aws;
pub mod command;
pub mod plan;
pub mod record;
pub mod run;
#[cfg(test)]
mod tests;
