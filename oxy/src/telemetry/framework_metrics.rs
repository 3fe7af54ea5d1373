//! The framework's own metrics, declared with the same macro applications use.

use crate::metrics;

/// Process-wide facts.
#[metrics]
pub mod oxy {
    /// Always 1; the labels say what is running.
    pub fn build_info(oxy_version: &str, app: &str, app_version: &str) -> Gauge;

    /// Panics caught in hooks, connection tasks or anywhere else in the process.
    pub fn panics_total() -> Counter;
}

/// The process itself.
#[metrics]
pub mod oxy_process {
    /// Seconds since the process started.
    pub fn uptime_seconds() -> Gauge;
}

/// Connections accepted by endpoints.
#[metrics]
pub mod oxy_connections {
    /// Connections accepted, by endpoint.
    pub fn accepted_total(endpoint: &str) -> Counter;

    /// Connections open now, by endpoint.
    pub fn active(endpoint: &str) -> Gauge;

    /// Connections closed without being served, by endpoint and reason
    /// (`max_connections`, `ingress_hook`, `panic`, `thread_handoff`: a connection
    /// could not be registered with the per-thread runtime it was handed to).
    pub fn rejected_total(endpoint: &str, reason: &str) -> Counter;

    /// Connections that ended, by endpoint and why (`closed`, `idle_timeout`,
    /// `shutdown`, `handshake_failed`, `proxy_header_refused`, `rejected`, `panic`).
    pub fn closed_total(endpoint: &str, reason: &str) -> Counter;

    /// Errors from accept(2), by endpoint.
    pub fn accept_errors_total(endpoint: &str) -> Counter;

    /// How long connections lived, by endpoint.
    #[buckets(0.001, 0.01, 0.1, 1.0, 10.0, 60.0, 600.0, 3600.0)]
    pub fn duration_seconds(endpoint: &str) -> Histogram;
}

/// The system call filter (`security.seccomp`).
#[metrics]
pub mod oxy_seccomp {
    /// Forbidden system calls refused with EPERM, by name.
    pub fn violations_total(syscall: &str) -> Counter;
}

/// Graceful restarts (SIGHUP, `--restart`).
#[metrics]
pub mod oxy_restarts {
    /// Restarts asked of this process, by result (`succeeded`, `failed`).
    pub fn total(result: &str) -> Counter;
}
