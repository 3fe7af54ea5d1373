//! `#[metrics]`: declared metrics appear in the registry with help text and labels.

#![allow(clippy::unwrap_used, missing_docs)]
use oxy::metrics;
use oxy::telemetry::metrics::{LabelValue, render};
use std::borrow::Cow;

/// A typed label.
#[derive(Clone, Copy)]
pub enum Verdict {
    /// Let through.
    Allowed,
    /// Stopped.
    Denied,
}

impl LabelValue for Verdict {
    fn label_value(&self) -> Cow<'_, str> {
        Cow::Borrowed(match self {
            Verdict::Allowed => "allowed",
            Verdict::Denied => "denied",
        })
    }
}

#[metrics]
mod test_app {
    /// Decisions made,
    /// by endpoint and verdict.
    pub fn decisions_total(endpoint: &str, verdict: Verdict) -> Counter;

    /// Work in flight.
    pub fn in_flight() -> Gauge;

    /// Time to decide.
    #[buckets(0.5, 1.0)]
    pub fn decision_seconds(port: u16) -> Histogram;
}

#[test]
fn declared_metrics_render_with_help_labels_and_buckets() {
    test_app::decisions_total("edge", Verdict::Denied).inc_by(3);
    test_app::decisions_total("edge", Verdict::Allowed).inc();
    test_app::in_flight().set(7);
    test_app::decision_seconds(443).observe(0.7);
    let text = render();
    for line in [
        "# HELP test_app_decisions_total Decisions made, by endpoint and verdict.",
        "# TYPE test_app_decisions_total counter",
        "test_app_decisions_total{endpoint=\"edge\",verdict=\"denied\"} 3",
        "test_app_decisions_total{endpoint=\"edge\",verdict=\"allowed\"} 1",
        "test_app_in_flight 7",
        "test_app_decision_seconds_bucket{port=\"443\",le=\"0.5\"} 0",
        "test_app_decision_seconds_bucket{port=\"443\",le=\"1\"} 1",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}
