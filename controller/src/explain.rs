//! `lifeguard-controller explain`: what lifeguard understands of one message, so an operator
//! can see why a message was acted on or ignored.

use lifeguard_common::message::{self, Explanation, ParseError};

/// The queue's largest message is 256 KiB; anything much larger is not a queue message and is
/// refused before it is read whole.
pub const MAX_INPUT_BYTES: u64 = 1024 * 1024;

/// Where the message is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Origin {
    /// A queue message; failing that, an IMDS body.
    Auto,
    /// A queue message (EventBridge event, hook notification, SNS envelope, CloudTrail record,
    /// agent report, command).
    Queue,
    /// A body read from the instance metadata service.
    Imds,
}

pub fn explain(body: &[u8], origin: Origin) -> Result<Explanation, ParseError> {
    let imds = || {
        std::str::from_utf8(body)
            .ok()
            .and_then(Explanation::of_imds_body)
    };
    match origin {
        Origin::Queue => message::parse(body).map(|parsed| Explanation::of(&parsed)),
        Origin::Imds => imds().ok_or_else(|| ParseError {
            location: String::new(),
            problem: "not an IMDS body lifeguard reads (target-lifecycle-state, spot \
                      instance-action or termination-time, rebalance, scheduled maintenance)"
                .to_string(),
        }),
        Origin::Auto => match message::parse(body) {
            Ok(parsed) => Ok(Explanation::of(&parsed)),
            Err(queue_error) => imds().ok_or(queue_error),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_falls_back_to_imds_and_keeps_the_queue_error_otherwise() {
        let imds = explain(b"Terminated\n", Origin::Auto).unwrap();
        assert_eq!((imds.kind, imds.format), ("lifecycle_terminate", "imds"));
        let err = explain(b"{\"hello\": 1}", Origin::Auto).unwrap_err();
        assert!(err.to_string().starts_with("unrecognised message"), "{err}");
        assert!(explain(b"Terminated", Origin::Queue).is_err());
        assert!(explain(b"{\"hello\": 1}", Origin::Imds).is_err());
    }
}
