//! The `telemetry:` section: metrics and health listener, logs, Sentry.

use crate::oxy_app_settings;
use std::net::SocketAddr;

/// The `telemetry:` section.
#[oxy_app_settings]
pub struct TelemetrySettings {
    /// Serve `GET /metrics` (Prometheus text format) and `GET /health` on `listen`.
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// Address of the metrics and health listener. Keep it off the public internet. Port
    /// 0 lets the system pick one: `address_file` and the `telemetry listening` log line
    /// say which, and `GET /endpoints` there lists every endpoint's bound addresses.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// A file to write the listener's bound address to (`127.0.0.1:9090` and a newline)
    /// once it listens, for a supervisor or test harness; empty means none. The file
    /// appears whole (written aside, then renamed).
    pub address_file: std::path::PathBuf,
    /// Logging.
    pub log: LogSettings,
    /// Audit records: one JSON object per tunnel.
    pub audit: AuditSettings,
    /// Panic reports to Sentry.
    pub sentry: SentrySettings,
    /// Heap and CPU profiles and runtime figures on the telemetry listener.
    pub profiling: ProfilingSettings,
    /// Distributed tracing: spans exported over OTLP, W3C trace context propagated.
    pub tracing: TracingSettings,
}

/// The `telemetry.profiling:` section.
#[oxy_app_settings]
pub struct ProfilingSettings {
    /// Serve `GET /debug/pprof/heap` (jemalloc heap profile, gzipped pprof protobuf),
    /// `GET /debug/pprof/profile?seconds=N` (CPU profile, pprof protobuf; `&format=svg`
    /// for a flame graph) and `GET /debug/runtime` (tokio runtime figures, JSON) on the
    /// telemetry listener. Heap sampling runs only while this is on.
    pub enabled: bool,
    /// Answer the profiling paths for clients from any address; by default only clients
    /// on loopback get them (others get 403), even when `listen` is public.
    pub allow_remote: bool,
}

/// The `telemetry.tracing:` section.
#[oxy_app_settings]
pub struct TracingSettings {
    /// Where spans go: an OTLP/HTTP collector's base URL (`http://127.0.0.1:4318`;
    /// spans are posted to `/v1/traces` there as protobuf). Empty means no export, and
    /// no trace context is read or sent.
    pub otlp_endpoint: String,
    /// The share of new traces recorded, from 0 to 1. A request that arrives with a
    /// `traceparent` follows its caller's sampling decision.
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
    /// `service.name` of the exported spans; empty means the application's name.
    pub service_name: String,
}

fn default_sample_ratio() -> f64 {
    1.0
}

/// The `telemetry.audit:` section.
#[oxy_app_settings]
pub struct AuditSettings {
    /// Write an audit record when each tunnel ends.
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// File the records are appended to, one JSON object per line; empty means the log
    /// stream (target `oxy::audit`).
    pub path: std::path::PathBuf,
}

fn enabled() -> bool {
    true
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}

/// The `telemetry.log:` section.
#[oxy_app_settings]
pub struct LogSettings {
    /// `text` for a terminal, `json` (one object per line) for log shippers.
    pub format: LogFormat,
    /// Level or filter directives (`info`, `oxy=debug,warn`); `RUST_LOG`, when set, wins.
    /// Release builds compile `trace` events out (`debug` and above stay); a filter that
    /// asks for them gets a warning on stderr at start.
    #[serde(default = "default_level")]
    pub level: String,
    /// Write clients' addresses in logs (the connection span's `peer` and `client`) and
    /// audit records. Turn off for privacy; hooks still see the addresses.
    #[serde(default = "enabled")]
    pub client_addresses: bool,
}

fn default_level() -> String {
    "info".into()
}

/// How log lines are written.
#[oxy_app_settings]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The `telemetry.sentry:` section.
#[oxy_app_settings]
pub struct SentrySettings {
    /// Sentry DSN (`https://KEY@HOST/PROJECT`); empty means no reports are sent.
    pub dsn: String,
    /// Environment name attached to every report.
    #[serde(default = "default_environment")]
    pub environment: String,
    /// Fraction of events sent, from 0.0 to 1.0.
    #[serde(default = "default_sample_rate")]
    pub sample_rate: f32,
}

fn default_environment() -> String {
    "production".into()
}

fn default_sample_rate() -> f32 {
    1.0
}
