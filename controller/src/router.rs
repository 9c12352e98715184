//! Where a queue message goes: the drain watch ([`Tracker`]) or the image pipeline
//! ([`ImageService`]). Every message first passes the sender check.

use std::sync::Arc;

use lifeguard_common::message::Parsed;

use crate::fleet::Fleet;
use crate::image::{ImageApi, service::ImageService};
use crate::queue::{Handled, Handler, Observation, Received};
use crate::tracker::Tracker;

pub struct Router<F: Fleet, A: ImageApi> {
    pub tracker: Arc<Tracker<F>>,
    pub images: Arc<ImageService<A>>,
}

impl<F: Fleet, A: ImageApi + 'static> Handler for Router<F, A> {
    async fn handle(&self, parsed: &Parsed, received: &Received) -> Handled {
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
