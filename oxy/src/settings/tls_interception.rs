//! The `tls_interception:` section of an endpoint: the CA that signs the certificates
//! Oxy shows clients when it terminates TLS inside a tunnel.

use crate::oxy_app_settings;
use std::path::PathBuf;
use std::time::Duration;

/// TLS interception: when the tunnel hook asks to decapsulate a tunnel whose client
/// starts TLS, Oxy answers the handshake with a certificate it mints for the server name
/// the client asked for, signed by this CA, and serves the HTTP inside through the hooks.
/// Off while `ca_chain` is empty. Clients must trust the CA.
#[oxy_app_settings]
pub struct TlsInterceptionSettings {
    /// PEM file: the interception CA's certificate, then the certificates it chains to
    /// (sent to clients after each minted leaf). It must be a CA (`CA:TRUE`).
    pub ca_chain: PathBuf,
    /// PEM file: the interception CA's private key.
    pub ca_key: PathBuf,
    /// How long a minted certificate is valid (its `notBefore` is one hour in the past,
    /// for clients with slow clocks); never past the CA's own expiry.
    #[serde(with = "humantime_serde", default = "default_leaf_lifetime")]
    pub leaf_lifetime: Duration,
    /// Minted certificates kept per server name, so that a repeat costs no signature;
    /// each is reused for half its lifetime.
    #[serde(default = "default_cache_size")]
    pub cache_size: usize,
}

impl TlsInterceptionSettings {
    /// Whether interception is configured.
    pub fn enabled(&self) -> bool {
        !self.ca_chain.as_os_str().is_empty()
    }
}

fn default_leaf_lifetime() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_cache_size() -> usize {
    1000
}
