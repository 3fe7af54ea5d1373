//! One request's bookkeeping: the active-requests gauge, then its count, duration and
//! access-log line (`oxy::access`), or its cancellation.

use super::metrics::{method_label, oxy_http, version_label};
use crate::hooks::HttpBody;
use http::{Method, Request, StatusCode, Version};
use std::sync::Arc;
use std::time::Instant;

/// One request's bookkeeping: the active-requests gauge while it runs, then its count
/// and access-log line, written when it is answered or, if it never is (the client went
/// away and the request's future was dropped), as cancelled.
pub(super) struct RequestRecord {
    pub(super) endpoint: String,
    pub(super) method: Method,
    pub(super) version: Version,
    pub(super) uri: String,
    pub(super) started: Instant,
    pub(super) active: prometheus::IntGauge,
    pub(super) answered: bool,
    /// The decapsulated tunnel the request came in.
    pub(super) tunnel_id: Option<Arc<str>>,
    /// The request's user, once the request hook has run.
    pub(super) user: Option<String>,
}

impl RequestRecord {
    pub(super) fn start(endpoint: &str, request: &Request<HttpBody>) -> Self {
        let method = request.method().clone();
        let uri = match request.uri().authority() {
            Some(authority) if method == Method::CONNECT => authority.to_string(),
            _ => request.uri().to_string(),
        };
        let active = oxy_http::active_requests(endpoint);
        active.inc();
        RequestRecord {
            endpoint: endpoint.to_string(),
            method,
            version: request.version(),
            uri,
            started: Instant::now(),
            active,
            answered: false,
            tunnel_id: None,
            user: None,
        }
    }

    pub(super) fn answered(&mut self, status: StatusCode) {
        self.answered = true;
        let elapsed = self.started.elapsed();
        let (name, method, version) = (&self.endpoint, &self.method, self.version);
        let status = status.as_u16();
        oxy_http::request_duration_seconds(name).observe(elapsed.as_secs_f64());
        oxy_http::requests_total(name, version_label(version), method_label(method), status).inc();
        tracing::info!(
            target: "oxy::access",
            %method,
            uri = %self.uri,
            version = version_label(version),
            status,
            duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            tunnel_id = self.tunnel_id.as_deref(),
            "request"
        );
    }
}

impl Drop for RequestRecord {
    fn drop(&mut self) {
        self.active.dec();
        if self.answered {
            return;
        }
        let (name, method, version) = (&self.endpoint, &self.method, self.version);
        oxy_http::cancelled_total(name, version_label(version), method_label(method)).inc();
        tracing::info!(
            target: "oxy::access",
            %method,
            uri = %self.uri,
            version = version_label(version),
            reason = "cancelled",
            duration_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            tunnel_id = self.tunnel_id.as_deref(),
            "request cancelled by the client"
        );
    }
}
