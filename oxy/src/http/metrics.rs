//! HTTP metrics.

use crate::metrics;

/// HTTP requests.
#[metrics]
pub mod oxy_http {
    /// Requests received, by endpoint and kind (`forward`, `reverse`, `connect`, `local`).
    pub fn requests_total(endpoint: &str, kind: &str) -> Counter;

    /// Responses sent, by endpoint and status class (`2xx`, `4xx`, ...).
    pub fn responses_total(endpoint: &str, class: &str) -> Counter;

    /// Requests answered with an error by Oxy itself, by endpoint and reason.
    pub fn errors_total(endpoint: &str, reason: &str) -> Counter;

    /// Time from request head to response head, by endpoint.
    #[buckets(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)]
    pub fn response_seconds(endpoint: &str) -> Histogram;
}
