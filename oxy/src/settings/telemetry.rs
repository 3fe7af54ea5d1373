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
