//! The `endpoints[]` entries: listeners with their own TLS, limits and app settings.

use crate::oxy_app_settings;
use std::net::SocketAddr;
use std::path::PathBuf;

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
    /// TLS for connections accepted on this endpoint.
    pub tls: TlsSettings,
    /// Limits that protect the process.
    pub limits: EndpointLimits,
    /// The application's settings for this endpoint.
    pub app: E,
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
