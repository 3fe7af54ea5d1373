//! The root of a settings file and its `server:` section.

use super::{DnsSettings, EgressSettings, EndpointSettings, SecuritySettings, TelemetrySettings};
use crate::oxy_app_settings;
use std::time::Duration;

/// A whole Oxy settings file. `A` is the application's `app:` section and `E` the
/// application's per-endpoint `app:` section. Relative file paths in the framework's
/// sections are relative to the settings file's directory.
#[oxy_app_settings]
pub struct ServerSettings<A, E> {
    /// Process-wide settings: threads, shutdown and restarts.
    pub server: ServerSection,
    /// Hardening: the system call filter and the user to run as.
    pub security: SecuritySettings,
    /// Metrics and health listener, logs, audit records and panic reports.
    pub telemetry: TelemetrySettings,
    /// Name resolution for every off-ramp.
    pub dns: DnsSettings,
    /// Where traffic may go, and how it connects.
    pub egress: EgressSettings,
    /// The listeners: each endpoint is a tenant with its own addresses, TLS, limits and
    /// application settings. Names and addresses must be unique.
    #[serde(default = "default_endpoints")]
    pub endpoints: Vec<EndpointSettings<E>>,
    /// The application's own settings.
    pub app: A,
}

fn default_endpoints<E: Default>() -> Vec<EndpointSettings<E>> {
    vec![EndpointSettings::default()]
}

/// The `server:` section.
#[oxy_app_settings]
pub struct ServerSection {
    /// Runtime worker threads; 0 means one per CPU core.
    pub worker_threads: usize,
    /// How TCP connections are spread over the worker threads.
    pub scheduling: Scheduling,
    /// On SIGTERM or SIGINT, Oxy stops accepting, reports 503 on /health and waits this
    /// long for open connections to finish before it closes them and exits 0.
    /// The same drain follows a graceful restart, once the successor is ready.
    #[serde(with = "humantime_serde", default = "default_shutdown_timeout")]
    pub shutdown_timeout: Duration,
    /// On SIGHUP (or `--restart`), Oxy starts its successor (the binary at the same path,
    /// with the same arguments), hands it every listening socket, and waits this long for
    /// it to be ready. A successor that fails or is late is stopped, and this process
    /// goes on serving.
    #[serde(with = "humantime_serde", default = "default_restart_timeout")]
    pub restart_timeout: Duration,
    /// A file the serving process writes its process id to once it is ready (a successor
    /// overwrites it once it is); empty means none.
    pub pid_file: std::path::PathBuf,
    /// A Unix socket for `--restart`: `oxy --config FILE --restart` asks the process
    /// serving FILE to restart through it and exits 0 once the successor is ready (1 with
    /// the reason otherwise). Empty means no control socket (SIGHUP still works).
    pub control_socket: std::path::PathBuf,
}

/// How TCP connections are spread over the worker threads.
#[oxy_app_settings]
pub enum Scheduling {
    /// Each of the `worker_threads` threads runs a runtime of its own that accepts
    /// connections from every TCP listener and hands each to the thread serving the
    /// fewest connections (itself on a tie): a connection, and every task it starts (its
    /// tunnel, its upstream connections), stays on that thread, so threads neither wake
    /// each other nor move tasks between caches, and a thread serves its connections in
    /// turn. A connection is not moved once placed, so a hook that blocks its thread
    /// delays that thread's other connections; and each thread keeps its own idle
    /// upstream connections (`pool_max_idle_per_upstream` applies per thread, and two
    /// clients of one upstream may each get a connection of their own). UDP, QUIC and
    /// TUN endpoints, telemetry and the control socket run on a work-stealing runtime of
    /// as many threads beside them (`/debug/runtime` reports both kinds).
    #[default]
    PerThread,
    /// One runtime for everything, whose threads take queued tasks from each other: a
    /// busy thread's connections are served by an idle one, and the streams of one
    /// HTTP/2 connection by several threads, and every thread shares one upstream pool.
    /// Its run queues favour the tasks already queued on a thread: with many
    /// connections ready at once, some wait much longer than others (measured: p99 of
    /// 170 ms against 40 ms per thread, 1,000 keep-alive connections on one core).
    WorkStealing,
}

fn default_restart_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}

/// An empty settings section, for applications without `app:` settings.
#[oxy_app_settings]
pub struct NoSettings {}
