//! Client-side pacing: a token bucket per AWS API, so a burst of thousands of drains spends
//! AWS's request budget at the rate AWS refills it instead of running into `RequestLimitExceeded`
//! and the SDK's backoff.
//!
//! EC2 throttles each API with its own bucket, sized by category ("Request throttling for the
//! Amazon EC2 API"): non-mutating actions hold 100 tokens refilled at 20 a second, mutating
//! actions 50 at 5 a second. Amazon EC2 Auto Scaling shares one bucket across all its APIs
//! for an account and Region and publishes no figures; lifeguard assumes EC2's mutating
//! figures for it, which are the lower, and an operator with a known higher limit sets it
//! (`[aws.pacing]`). Systems Manager and S3 calls are few per action and not paced.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A bucket's size and refill rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub burst: f64,
    pub per_sec: f64,
}

/// Bucket names: Auto Scaling's shared one, EC2's by category.
pub const AUTOSCALING: &str = "autoscaling";
pub const EC2_READS: &str = "ec2-reads";
pub const EC2_WRITES: &str = "ec2-writes";

/// EC2's non-mutating actions (`Describe*`).
pub const EC2_READ: Rate = Rate {
    burst: 100.0,
    per_sec: 20.0,
};
/// EC2's mutating actions (`CreateTags`, ...).
pub const EC2_WRITE: Rate = Rate {
    burst: 50.0,
    per_sec: 5.0,
};

/// A token bucket that hands out reservations: a call takes a token now, or is told how long
/// to wait for the one it has reserved. Tokens may go below zero (the reservations queued),
/// so callers are served in the order they asked and nobody spins.
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: Rate,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            rate,
            tokens: rate.burst,
            at: now,
        }
    }

    /// Takes a token; how long to wait before using it.
    pub fn take(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate.per_sec).min(self.rate.burst);
        self.at = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate.per_sec)
        }
    }
}

/// The buckets of one process, by bucket name.
pub struct Pacer {
    rates: HashMap<&'static str, Rate>,
    buckets: Mutex<HashMap<&'static str, Bucket>>,
}

impl Pacer {
    /// `rates` by bucket name; a name without a rate is not paced.
    pub fn new(rates: HashMap<&'static str, Rate>) -> Pacer {
        Pacer {
            rates,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// No pacing at all (tests with their own clocks, commands of a few calls).
    pub fn unpaced() -> Pacer {
        Pacer::new(HashMap::new())
    }

    /// How long the caller must wait before its call on `bucket`.
    pub fn reserve(&self, bucket: &'static str, now: Instant) -> Duration {
        let Some(rate) = self.rates.get(bucket) else {
            return Duration::ZERO;
        };
        // A poisoned lock means a panic while holding it, in code that cannot panic (the
        // arithmetic above); pacing is then skipped rather than stopping every AWS call.
        match self.buckets.lock() {
            Ok(mut buckets) => buckets
                .entry(bucket)
                .or_insert_with(|| Bucket::full(*rate, now))
                .take(now),
            Err(_) => Duration::ZERO,
        }
    }

    /// Waits for a token of `bucket`.
    pub async fn pace(&self, bucket: &'static str) {
        let wait = self.reserve(bucket, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Lifecycle calls about one instance, each paced on Auto Scaling's bucket.
pub struct PacedAutoScaling<A> {
    pub inner: A,
    pub pacer: std::sync::Arc<Pacer>,
}

impl<A: lifeguard_common::lifecycle::AutoScaling> lifeguard_common::lifecycle::AutoScaling
    for PacedAutoScaling<A>
{
    async fn membership(
        &self,
        instance_id: &str,
    ) -> Result<
        Option<lifeguard_common::lifecycle::GroupMembership>,
        lifeguard_common::lifecycle::LifecycleError,
    > {
        self.pacer.pace(AUTOSCALING).await;
        self.inner.membership(instance_id).await
    }

    async fn hooks(
        &self,
        asg: &str,
    ) -> Result<
        Vec<lifeguard_common::lifecycle::HookInfo>,
        lifeguard_common::lifecycle::LifecycleError,
    > {
        self.pacer.pace(AUTOSCALING).await;
        self.inner.hooks(asg).await
    }

    async fn heartbeat(
        &self,
        asg: &str,
        hook: &str,
        instance_id: &str,
    ) -> Result<bool, lifeguard_common::lifecycle::LifecycleError> {
        self.pacer.pace(AUTOSCALING).await;
        self.inner.heartbeat(asg, hook, instance_id).await
    }

    async fn complete(
        &self,
        asg: &str,
        hook: &str,
        instance_id: &str,
        result: lifeguard_common::message::LifecycleResult,
    ) -> Result<lifeguard_common::lifecycle::Completion, lifeguard_common::lifecycle::LifecycleError>
    {
        self.pacer.pace(AUTOSCALING).await;
        self.inner.complete(asg, hook, instance_id, result).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_served_at_once_then_at_the_refill_rate() {
        let t0 = Instant::now();
        let mut bucket = Bucket::full(EC2_WRITE, t0);
        for _ in 0..50 {
            assert_eq!(bucket.take(t0), Duration::ZERO);
        }
        // The 51st waits one refill (0.2 s), the 60th ten.
        assert_eq!(bucket.take(t0), Duration::from_millis(200));
        for _ in 0..8 {
            bucket.take(t0);
        }
        assert_eq!(bucket.take(t0), Duration::from_secs(2));
        // Ten seconds later the queue of ten is served and 40 tokens are back.
        let later = t0 + Duration::from_secs(10);
        for _ in 0..40 {
            assert_eq!(bucket.take(later), Duration::ZERO);
        }
        assert!(bucket.take(later) > Duration::ZERO);
    }

    #[test]
    fn refill_stops_at_the_burst() {
        let t0 = Instant::now();
        let mut bucket = Bucket::full(EC2_READ, t0);
        bucket.take(t0);
        let much_later = t0 + Duration::from_secs(3600);
        for _ in 0..100 {
            assert_eq!(bucket.take(much_later), Duration::ZERO);
        }
        assert_eq!(bucket.take(much_later), Duration::from_millis(50));
    }

    #[test]
    fn n_calls_take_the_time_the_model_says() {
        // 1000 calls on a 50/5 bucket: 50 at once, 950 at 5 a second.
        let t0 = Instant::now();
        let mut bucket = Bucket::full(EC2_WRITE, t0);
        let last = (0..1000).map(|_| bucket.take(t0)).max().unwrap();
        assert_eq!(last, Duration::from_secs(190));
    }

    #[test]
    fn each_api_has_its_own_bucket_and_unknown_ones_are_not_paced() {
        let pacer = Pacer::new(HashMap::from([("a", EC2_WRITE), ("b", EC2_WRITE)]));
        let t0 = Instant::now();
        for _ in 0..50 {
            pacer.reserve("a", t0);
        }
        assert!(pacer.reserve("a", t0) > Duration::ZERO);
        assert_eq!(pacer.reserve("b", t0), Duration::ZERO);
        for _ in 0..1000 {
            assert_eq!(pacer.reserve("other", t0), Duration::ZERO);
        }
    }
}
