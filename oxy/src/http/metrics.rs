//! HTTP metrics.

use crate::metrics;

/// HTTP requests.
#[metrics]
pub mod oxy_http {
    /// Requests answered, by endpoint, HTTP version, method and status.
    pub fn requests_total(endpoint: &str, version: &str, method: &str, status: u16) -> Counter;

    /// Requests being answered now, by endpoint.
    pub fn active_requests(endpoint: &str) -> Gauge;

    /// Requests whose client went away before they were answered (an HTTP/2 or HTTP/3
    /// stream reset, a closed connection), by endpoint, HTTP version and method.
    pub fn cancelled_total(endpoint: &str, version: &str, method: &str) -> Counter;

    /// How requests were served, by endpoint and kind (`forward`, `reverse`, `connect`,
    /// `local`).
    pub fn routes_total(endpoint: &str, kind: &str) -> Counter;

    /// Upstream HTTP/1.1 connections requests went out on from the endpoint's own pool
    /// (plain-HTTP upstreams, and every upstream when an egress hook chose the route), by
    /// endpoint and whether the connection was `new` or `reused` from the pool.
    pub fn egress_connections_total(endpoint: &str, kind: &str) -> Counter;

    /// Idle connections in the endpoint's own pool (`egress_connections_total`), by
    /// endpoint.
    pub fn egress_idle_connections(endpoint: &str) -> Gauge;

    /// Requests answered with an error by Oxy itself, by endpoint and reason.
    pub fn errors_total(endpoint: &str, reason: &str) -> Counter;

    /// Time from request head to response head, by endpoint.
    #[buckets(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)]
    pub fn request_duration_seconds(endpoint: &str) -> Histogram;
}

/// The metrics every request of an endpoint touches, resolved once for the endpoint
/// (when its first request comes) instead of looked up by label per request.
pub struct EndpointHttpMetrics {
    /// The endpoint's name, for the metrics labelled by more than it.
    pub name: std::sync::Arc<str>,
    /// `oxy_http_active_requests` of the endpoint.
    pub active_requests: prometheus::IntGauge,
    /// `oxy_http_request_duration_seconds` of the endpoint.
    pub request_duration: prometheus::Histogram,
    /// `oxy_http_routes_total` of the endpoint, kinds `reverse` and `forward`, each
    /// made when first counted (so a series appears only for a route taken).
    routed: crate::telemetry::metrics::CounterSlots<2>,
}

impl EndpointHttpMetrics {
    /// The handles of endpoint `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            active_requests: oxy_http::active_requests(name),
            request_duration: oxy_http::request_duration_seconds(name),
            routed: Default::default(),
        }
    }

    /// `oxy_http_routes_total` of the endpoint for a request proxied in reverse (to a
    /// configured or hook-chosen upstream) or, with `forward`, to the URI's own host.
    pub fn routed(&self, forward: bool) -> &prometheus::IntCounter {
        let (slot, kind) = if forward {
            (1, "forward")
        } else {
            (0, "reverse")
        };
        self.routed
            .get(slot, || oxy_http::routes_total(&self.name, kind))
    }
}

/// The method as a metric label: the standard methods, or `other`.
pub fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::CONNECT => "CONNECT",
        http::Method::PATCH => "PATCH",
        http::Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// The version as a metric label.
pub fn version_label(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}
