//! The controller's metrics, served at `/metrics` in the OpenMetrics text format that
//! Prometheus scrapes.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::marks::OutcomeMark;
use crate::queue::Observation;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailedLabels {
    kind: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    result: String,
    by: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiErrorLabels {
    operation: String,
    code: String,
}

pub struct Metrics {
    registry: Registry,
    received: Family<KindLabels, Counter>,
    deleted: Family<KindLabels, Counter>,
    failed: Family<FailedLabels, Counter>,
    pub drains_active: Gauge,
    completed: Family<OutcomeLabels, Counter>,
    pub fallbacks: Counter,
    pub heartbeats: Counter,
    api_errors: Family<ApiErrorLabels, Counter>,
    drain_seconds: Histogram,
    reconciles: Counter,
    polls_failed: Counter,
    refused: Family<FailedLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("lifeguard");
        let received = Family::<KindLabels, Counter>::default();
        let deleted = Family::<KindLabels, Counter>::default();
        let failed = Family::<FailedLabels, Counter>::default();
        let drains_active = Gauge::default();
        let completed = Family::<OutcomeLabels, Counter>::default();
        let fallbacks = Counter::default();
        let heartbeats = Counter::default();
        let api_errors = Family::<ApiErrorLabels, Counter>::default();
        // 1 s to about 9 hours.
        let drain_seconds = Histogram::new(exponential_buckets(1.0, 2.0, 16));
        let reconciles = Counter::default();
        let polls_failed = Counter::default();
        let refused = Family::<FailedLabels, Counter>::default();
        registry.register(
            "messages_received",
            "Queue messages received, by kind",
            received.clone(),
        );
        registry.register(
            "messages_deleted",
            "Queue messages deleted after their effect was durable, by kind",
            deleted.clone(),
        );
        registry.register(
            "messages_failed",
            "Queue messages not handled: left for a later attempt, or malformed",
            failed.clone(),
        );
        registry.register(
            "drains_active",
            "Lifecycle actions this replica watches",
            drains_active.clone(),
        );
        registry.register(
            "drains_completed",
            "Lifecycle actions ended, by result and by who ended them",
            completed.clone(),
        );
        registry.register(
            "fallbacks",
            "Lifecycle actions the controller completed itself because the agent was silent",
            fallbacks.clone(),
        );
        registry.register(
            "heartbeats",
            "Heartbeats the controller sent on an agent's behalf",
            heartbeats.clone(),
        );
        registry.register(
            "lifecycle_api_errors",
            "Failed AWS calls, by operation and AWS error code",
            api_errors.clone(),
        );
        registry.register(
            "drain_duration_seconds",
            "Time from a lifecycle action's start to its end",
            drain_seconds.clone(),
        );
        registry.register(
            "reconciles",
            "Completed reconciles with AWS",
            reconciles.clone(),
        );
        registry.register(
            "queue_polls_failed",
            "Receive calls on the queue that failed",
            polls_failed.clone(),
        );
        registry.register(
            "messages_refused",
            "Queue messages refused because their sender may not say what they say, by kind and reason",
            refused.clone(),
        );
        Metrics {
            registry,
            received,
            deleted,
            failed,
            drains_active,
            completed,
            fallbacks,
            heartbeats,
            api_errors,
            drain_seconds,
            reconciles,
            polls_failed,
            refused,
        }
    }

    pub fn refused(&self, kind: &str, reason: &str) {
        self.refused
            .get_or_create(&FailedLabels {
                kind: kind.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn observe_queue(&self, what: Observation, kind: &str) {
        let kind_label = || KindLabels {
            kind: kind.to_string(),
        };
        let failed = |reason: &str| FailedLabels {
            kind: kind.to_string(),
            reason: reason.to_string(),
        };
        match what {
            Observation::Polled => {}
            Observation::PollFailed => {
                self.polls_failed.inc();
            }
            Observation::Received => {
                self.received.get_or_create(&kind_label()).inc();
            }
            Observation::Deleted => {
                self.deleted.get_or_create(&kind_label()).inc();
            }
            Observation::Retried => {
                self.failed.get_or_create(&failed("retry")).inc();
            }
            Observation::Malformed => {
                self.received.get_or_create(&kind_label()).inc();
                self.failed.get_or_create(&failed("malformed")).inc();
            }
            Observation::Ignored => {}
        }
    }

    pub fn record_outcome(&self, outcome: &OutcomeMark, took: Option<time::Duration>) {
        self.completed
            .get_or_create(&OutcomeLabels {
                result: outcome.result.clone(),
                by: outcome.by.as_str().to_string(),
            })
            .inc();
        if let Some(took) = took {
            self.drain_seconds.observe(took.as_seconds_f64().max(0.0));
        }
    }

    pub fn api_error(&self, operation: &str, code: Option<&str>) {
        self.api_errors
            .get_or_create(&ApiErrorLabels {
                operation: operation.to_string(),
                code: code.unwrap_or("none").to_string(),
            })
            .inc();
    }

    pub fn reconciled(&self) {
        self.reconciles.inc();
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an error would only come from a metric's own
        // encoder, and then a partial page is still better than none.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::marks::EndedBy;

    /// Metrics with one value in every family (a family shows a series once it has one).
    fn with_every_family() -> Metrics {
        let metrics = Metrics::new();
        metrics.observe_queue(Observation::Received, "lifecycle_terminate");
        metrics.observe_queue(Observation::Deleted, "lifecycle_terminate");
        metrics.observe_queue(Observation::Malformed, "malformed");
        metrics.refused("agent_report", "sender");
        metrics.api_error("CompleteLifecycleAction", Some("Throttling"));
        metrics.record_outcome(
            &OutcomeMark {
                result: "ABANDON".into(),
                by: EndedBy::Controller,
                at: time::OffsetDateTime::UNIX_EPOCH,
            },
            Some(time::Duration::seconds(3)),
        );
        metrics
    }

    #[test]
    fn what_happens_shows_in_the_exposition() {
        let text = with_every_family().render();
        for line in [
            "lifeguard_messages_received_total{kind=\"lifecycle_terminate\"} 1",
            "lifeguard_messages_deleted_total{kind=\"lifecycle_terminate\"} 1",
            "lifeguard_messages_failed_total{kind=\"malformed\",reason=\"malformed\"} 1",
            "lifeguard_lifecycle_api_errors_total{operation=\"CompleteLifecycleAction\",code=\"Throttling\"} 1",
            "lifeguard_drains_completed_total{result=\"ABANDON\",by=\"controller\"} 1",
            "lifeguard_drain_duration_seconds_count 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    /// The alert rules and the dashboard shipped in `packaging/monitoring/` ask only for series
    /// this exposition has (a renamed metric would leave an alert that never fires), and every
    /// label they group or filter by is one the metric carries.
    #[test]
    fn the_shipped_alerts_and_dashboard_use_only_exported_series_and_labels() {
        let text = with_every_family().render();
        let exported: std::collections::HashSet<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/monitoring");
        for file in ["alerts.yml", "alerts.test.yml", "grafana-dashboard.json"] {
            let shipped = std::fs::read_to_string(dir.join(file)).unwrap();
            let mut used: Vec<&str> = shipped
                .match_indices("lifeguard_")
                .map(|(at, _)| {
                    let rest = &shipped[at..];
                    let end = rest
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(rest.len());
                    &rest[..end]
                })
                .collect();
            used.sort_unstable();
            used.dedup();
            assert!(!used.is_empty(), "{file}");
            for name in used {
                assert!(
                    exported.contains(name),
                    "{file}: {name} is not exported:\n{text}"
                );
            }
        }
        // Labels: `by` and `result` on completions, `kind` and `reason` on failures and
        // refusals, `operation` and `code` on API errors.
        for series in [
            "lifeguard_drains_completed_total{result=",
            "lifeguard_messages_failed_total{kind=\"malformed\",reason=",
            "lifeguard_lifecycle_api_errors_total{operation=",
        ] {
            assert!(text.contains(series), "{series}");
        }
        assert!(text.contains(",by=\"controller\"}"));
    }
}
