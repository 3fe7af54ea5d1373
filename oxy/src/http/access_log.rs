//! One request's bookkeeping: the active-requests gauge, then its count, duration and
//! access-log line (`oxy::access`), or its cancellation.

use super::metrics::{EndpointHttpMetrics, method_label, oxy_http, version_label};
use crate::hooks::HttpBody;
use http::{Method, Request, StatusCode, Uri, Version};
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

/// One request's bookkeeping: the active-requests gauge while it runs, then its count
/// and access-log line, written when it is answered or, if it never is (the client went
/// away and the request's future was dropped), as cancelled.
pub(super) struct RequestRecord<'a> {
    /// The endpoint's per-request metrics (and its name), borrowed: cloning the `Arc`
    /// would write its count, shared by every thread, twice per request.
    metrics: &'a EndpointHttpMetrics,
    pub(super) method: Method,
    pub(super) version: Version,
    /// The request's URI, formatted only for a log line or a hook that wants it.
    uri: Uri,
    pub(super) started: Instant,
    pub(super) answered: bool,
    /// The decapsulated tunnel the request came in.
    pub(super) tunnel_id: Option<Arc<str>>,
    /// The request's user, once the request hook has run.
    pub(super) user: Option<String>,
}

impl<'a> RequestRecord<'a> {
    pub(super) fn start(metrics: &'a EndpointHttpMetrics, request: &Request<HttpBody>) -> Self {
        metrics.active_requests.add(1);
        RequestRecord {
            metrics,
            method: request.method().clone(),
            version: request.version(),
            uri: request.uri().clone(),
            started: Instant::now(),
            answered: false,
            tunnel_id: None,
            user: None,
        }
    }

    /// The request's URI as logged: the authority of a CONNECT, else the whole URI.
    pub(super) fn uri(&self) -> LoggedUri<'_> {
        LoggedUri(&self.method, &self.uri)
    }

    pub(super) fn answered(&mut self, status: StatusCode) {
        self.answered = true;
        let elapsed = self.started.elapsed();
        let (method, version) = (&self.method, self.version);
        let status = status.as_u16();
        self.metrics.request_duration.observe(elapsed.as_secs_f64());
        self.metrics.count_answered(version, method, status);
        tracing::info!(
            target: "oxy::access",
            %method,
            uri = %self.uri(),
            version = version_label(version),
            status,
            duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            tunnel_id = self.tunnel_id.as_deref(),
            "request"
        );
    }
}

impl Drop for RequestRecord<'_> {
    fn drop(&mut self) {
        self.metrics.active_requests.add(-1);
        if self.answered {
            return;
        }
        let (name, method, version) = (&*self.metrics.name, &self.method, self.version);
        oxy_http::cancelled_total(name, version_label(version), method_label(method)).inc();
        tracing::info!(
            target: "oxy::access",
            %method,
            uri = %self.uri(),
            version = version_label(version),
            reason = "cancelled",
            duration_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            tunnel_id = self.tunnel_id.as_deref(),
            "request cancelled by the client"
        );
    }
}

/// A request's URI as the access log and the request's end show it: the authority of a
/// CONNECT, else the whole URI.
pub(super) struct LoggedUri<'a>(&'a Method, &'a Uri);

impl fmt::Display for LoggedUri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1.authority() {
            Some(authority) if *self.0 == Method::CONNECT => authority.fmt(f),
            _ => self.1.fmt(f),
        }
    }
}
