//! Where a queue message goes: the drain watch ([`Tracker`]), the image pipeline
//! ([`ImageService`]) or the operator commands ([`OperatorCommands`]). Every message first
//! passes the sender check.

use std::sync::Arc;

use lifeguard_common::message::{Message, Parsed};

use crate::commands::OperatorCommands;
use crate::drill::api::DrillApi;
use crate::swap::api::SwapApi;

use crate::fleet::Fleet;
use crate::image::{ImageApi, service::ImageService};
use crate::queue::{Handled, Handler, Observation, Received};
use crate::tracker::Tracker;

pub struct Router<F: Fleet, A: ImageApi, D, S> {
    pub tracker: Arc<Tracker<F>>,
    pub images: Arc<ImageService<A>>,
    pub commands: Arc<OperatorCommands<D, S>>,
}

impl<F: Fleet, A: ImageApi + 'static, D: DrillApi + 'static, S: SwapApi + 'static> Handler
    for Router<F, A, D, S>
{
    async fn handle(&self, parsed: &Parsed, received: &Received) -> Handled {
        if let Message::Command(command) = &parsed.message
            && OperatorCommands::<D, S>::handles(&parsed.message)
        {
            if !self.tracker.admit(parsed, received) {
                return Handled::Done;
            }
            return self.commands.handle(command, &received.message_id).await;
        }
        if ImageService::<A>::handles(&parsed.message) {
            if !self.tracker.admit(parsed, received) {
                return Handled::Done;
            }
            return self.images.handle(&parsed.message).await;
        }
        self.tracker.handle(parsed, received).await
    }

    fn observe(&self, what: Observation, kind: &str) {
        self.tracker.observe(what, kind);
    }
}
