//! The `endpoints[]` entries: listeners with their own TLS, limits and app settings.

use super::HttpSettings;
use crate::oxy_app_settings;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// One endpoint: a named set of listen addresses served with the same settings.
#[oxy_app_settings]
pub struct EndpointSettings<E> {
    /// Unique name; it labels the endpoint's metrics and log lines
    /// (letters, digits, `-` and `_`).
    #[serde(default = "default_name")]
    pub name: String,
    /// TCP addresses to listen on (`127.0.0.1:8080`, `[::1]:8080`).
    #[serde(default = "default_listen")]
    pub listen: Vec<SocketAddr>,
    /// What the endpoint serves: `http` (HTTP/1.1 and HTTP/2 with prior knowledge: a
    /// forward proxy with CONNECT, and a reverse proxy through hooks or `http.upstream`),
    /// or `tcp` (each connection forwarded to a target: port forwarding, an L4 firewall).
    pub protocol: EndpointProtocol,
    /// Settings of `protocol: http`.
    pub http: HttpSettings,
    /// Settings of `protocol: tcp`.
    pub tcp: TcpForwardSettings,
    /// Timeouts of the tunnels this endpoint opens; the tunnel hook can change them.
    pub tunnel: TunnelSettings,
    /// TLS certificates for this endpoint (checked at load; handshakes are not served yet).
    pub tls: TlsSettings,
    /// Limits that protect the process.
    pub limits: EndpointLimits,
    /// The application's settings for this endpoint.
    pub app: E,
}

/// What an endpoint serves.
#[oxy_app_settings]
pub enum EndpointProtocol {
    /// HTTP/1.1 and HTTP/2: forward proxy, CONNECT, reverse proxy.
    #[default]
    Http,
    /// Forward each TCP connection to `tcp.target` (or where the egress hook says).
    Tcp,
}

/// The `tcp:` section of an endpoint.
#[oxy_app_settings]
pub struct TcpForwardSettings {
    /// Where connections go (`host:port`, `[::1]:80`); empty means the egress hook
    /// must choose, and connections are closed when it does not.
    pub target: String,
}

/// The `tunnel:` section of an endpoint.
#[oxy_app_settings]
pub struct TunnelSettings {
    /// Close a tunnel after this long without a byte either way.
    #[serde(with = "humantime_serde", default = "default_idle_timeout")]
    pub idle_timeout: Duration,
    /// Close a tunnel after this long in any case; 0s means no limit.
    #[serde(with = "humantime_serde", default = "default_max_lifetime")]
    pub max_lifetime: Duration,
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(300)
}

fn default_max_lifetime() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_name() -> String {
    "main".into()
}

fn default_listen() -> Vec<SocketAddr> {
    vec![SocketAddr::from(([127, 0, 0, 1], 8080))]
}

/// The `tls:` section of an endpoint.
#[oxy_app_settings]
pub struct TlsSettings {
    /// Terminate TLS on this endpoint; needs at least one certificate.
    pub enabled: bool,
    /// Certificate chains with their private keys; the first is the default, the others
    /// are chosen by SNI from their `server_names`.
    pub certificates: Vec<CertificateSettings>,
}

/// A certificate chain and its key.
#[oxy_app_settings]
pub struct CertificateSettings {
    /// PEM file with the leaf certificate first, then its intermediates.
    pub chain: PathBuf,
    /// PEM file with the private key of the leaf certificate.
    pub key: PathBuf,
    /// Host names (SNI) this certificate is served for; empty means any.
    pub server_names: Vec<String>,
}

/// The `limits:` section of an endpoint.
#[oxy_app_settings]
pub struct EndpointLimits {
    /// Most connections open at once on this endpoint; beyond it new connections are
    /// closed at once and counted. 0 means no limit.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_max_connections() -> usize {
    10_000
}
