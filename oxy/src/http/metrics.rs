//! HTTP metrics.

use crate::metrics;
use crate::telemetry::sharded::{ShardedCounters, ShardedGauge, ShardedHistogram};

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

    /// Upstream connections requests went out on from the endpoint's pool, by endpoint
    /// and whether the connection was `new` or `reused` from the pool (an HTTP/2 one
    /// counts as reused by each request that shares it).
    pub fn egress_connections_total(endpoint: &str, kind: &str) -> Counter;

    /// Idle HTTP/1.1 connections in the endpoint's pool (`egress_connections_total`),
    /// by endpoint.
    pub fn egress_idle_connections(endpoint: &str) -> Gauge;

    /// Requests answered with an error by Oxy itself, by endpoint and reason.
    pub fn errors_total(endpoint: &str, reason: &str) -> Counter;

    /// Time from request head to response head, by endpoint.
    #[buckets(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)]
    pub fn request_duration_seconds(endpoint: &str) -> Histogram;
}

/// The metrics every request of an endpoint touches, resolved once for the endpoint
/// (when its first request comes) instead of looked up by label per request, and kept
/// in per-thread shards ([`crate::telemetry::sharded`]) so that worker threads do not
/// write one shared cache line per request.
pub struct EndpointHttpMetrics {
    /// The endpoint's name, for the metrics labelled by more than it.
    pub name: std::sync::Arc<str>,
    /// `oxy_http_active_requests` of the endpoint.
    pub active_requests: ShardedGauge,
    /// `oxy_http_request_duration_seconds` of the endpoint.
    pub request_duration: ShardedHistogram,
    /// `oxy_http_routes_total` of the endpoint by [`Route`], each made when first
    /// counted (so a series appears only for a route taken).
    routed: ShardedCounters<Route>,
    /// `oxy_http_requests_total` of the endpoint by [`answered_key`] (version, method
    /// and status), each series looked up by its labels once per shard.
    answered: ShardedCounters<u32>,
}

/// One number for a version's, a method's and a status's labels.
fn answered_key(version: http::Version, method: &http::Method, status: u16) -> u32 {
    let (version, method) = (version_index(version) as u32, method_index(method) as u32);
    version << 24 | method << 16 | u32::from(status)
}

impl EndpointHttpMetrics {
    /// The handles of endpoint `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            active_requests: ShardedGauge::new(oxy_http::active_requests(name)),
            request_duration: ShardedHistogram::new(&oxy_http::request_duration_seconds(name)),
            routed: Default::default(),
            answered: Default::default(),
        }
    }

    /// Counts a request answered with `status` in `oxy_http_requests_total`.
    pub fn count_answered(&self, version: http::Version, method: &http::Method, status: u16) {
        self.answered
            .inc(answered_key(version, method, status), || {
                oxy_http::requests_total(
                    &self.name,
                    version_label(version),
                    method_label(method),
                    status,
                )
            });
    }

    /// Counts a request served by `route` in `oxy_http_routes_total`.
    pub fn count_routed(&self, route: Route) {
        self.routed.inc(route, || {
            oxy_http::routes_total(&self.name, Route::LABELS[route as usize])
        });
    }
}

/// How a request was served (`oxy_http_routes_total`'s `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// Proxied to a configured or hook-chosen upstream.
    Reverse,
    /// Proxied to the host its absolute URI names.
    Forward,
    /// Answered by Oxy or a hook, without an upstream.
    Local,
    /// A CONNECT tunnel.
    Connect,
    /// A CONNECT-UDP flow.
    ConnectUdp,
    /// A CONNECT-IP session.
    ConnectIp,
}

impl Route {
    /// The labels, in the order of the variants.
    const LABELS: [&str; 6] = [
        "reverse",
        "forward",
        "local",
        "connect",
        "connect_udp",
        "connect_ip",
    ];
}

/// The labels of methods: the standard ones, and `other` for the rest.
const METHOD_LABELS: [&str; 10] = [
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "CONNECT", "PATCH", "TRACE", "other",
];

fn method_index(method: &http::Method) -> usize {
    match *method {
        http::Method::GET => 0,
        http::Method::POST => 1,
        http::Method::PUT => 2,
        http::Method::DELETE => 3,
        http::Method::HEAD => 4,
        http::Method::OPTIONS => 5,
        http::Method::CONNECT => 6,
        http::Method::PATCH => 7,
        http::Method::TRACE => 8,
        _ => 9,
    }
}

/// The method as a metric label: the standard methods, or `other`.
pub fn method_label(method: &http::Method) -> &'static str {
    METHOD_LABELS[method_index(method)]
}

/// The labels of versions.
const VERSION_LABELS: [&str; 5] = ["0.9", "1.0", "1.1", "2", "3"];

fn version_index(version: http::Version) -> usize {
    match version {
        http::Version::HTTP_09 => 0,
        http::Version::HTTP_10 => 1,
        http::Version::HTTP_2 => 3,
        http::Version::HTTP_3 => 4,
        _ => 2,
    }
}

/// The version as a metric label.
pub fn version_label(version: http::Version) -> &'static str {
    VERSION_LABELS[version_index(version)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Method, Version};

    #[test]
    fn answered_requests_count_by_version_method_and_status() {
        let metrics = EndpointHttpMetrics::new("answered-test");
        metrics.count_answered(Version::HTTP_11, &Method::GET, 200);
        metrics.count_answered(Version::HTTP_11, &Method::GET, 200);
        metrics.count_answered(Version::HTTP_2, &Method::GET, 200);
        let extension = Method::from_bytes(b"PURGE").unwrap();
        metrics.count_answered(Version::HTTP_11, &extension, 404);
        crate::telemetry::sharded::flush_all();
        let count = |version, method, status| {
            oxy_http::requests_total("answered-test", version, method, status).get()
        };
        assert_eq!(count("1.1", "GET", 200), 2);
        assert_eq!(count("2", "GET", 200), 1);
        assert_eq!(count("1.1", "other", 404), 1);
        assert_eq!(count("1.1", "GET", 404), 0);
    }

    #[test]
    fn each_route_counts_under_its_own_kind() {
        let metrics = EndpointHttpMetrics::new("route-test");
        let routes = [
            Route::Reverse,
            Route::Forward,
            Route::Local,
            Route::Connect,
            Route::ConnectUdp,
            Route::ConnectIp,
        ];
        for (times, route) in routes.into_iter().enumerate() {
            for _ in 0..=times {
                metrics.count_routed(route);
            }
        }
        crate::telemetry::sharded::flush_all();
        for (times, kind) in Route::LABELS.into_iter().enumerate() {
            let counted = oxy_http::routes_total("route-test", kind).get();
            assert_eq!(counted, times as u64 + 1, "{kind}");
        }
    }
}
