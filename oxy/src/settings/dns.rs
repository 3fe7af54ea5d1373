//! The `dns:` section: resolver groups with fallback, cache and timeouts.

use crate::oxy_app_settings;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The `dns:` section.
#[oxy_app_settings]
pub struct DnsSettings {
    /// Resolver groups, tried in order: the first is the primary, each next one is asked
    /// when the previous fails or times out (an authoritative "no such name" is an
    /// answer, not a failure). Empty means the system's resolvers (/etc/resolv.conf).
    pub groups: Vec<DnsGroupSettings>,
    /// Answer names listed in /etc/hosts from that file first.
    #[serde(default = "yes")]
    pub hosts_file: bool,
    /// Time to wait for one answer from one server.
    #[serde(with = "humantime_serde", default = "default_timeout")]
    pub timeout: Duration,
    /// Tries per server before the group counts as failed.
    #[serde(default = "default_attempts")]
    pub attempts: usize,
    /// Most names kept in the cache.
    #[serde(default = "default_cache_size")]
    pub cache_size: usize,
    /// Answers are cached at least this long, whatever their TTL.
    #[serde(with = "humantime_serde")]
    pub min_ttl: Duration,
    /// Answers are cached at most this long, whatever their TTL.
    #[serde(with = "humantime_serde", default = "default_max_ttl")]
    pub max_ttl: Duration,
    /// How long "no such name" and "no address" answers are cached.
    #[serde(with = "humantime_serde", default = "default_negative_ttl")]
    pub negative_ttl: Duration,
    /// CA certificates (PEM) trusted for `tls` and `https` servers; empty means the
    /// system's roots.
    pub ca_file: PathBuf,
}

/// A group of resolvers that answer together.
#[oxy_app_settings]
pub struct DnsGroupSettings {
    /// Name of the group in metrics and logs.
    #[serde(default = "default_group_name")]
    pub name: String,
    /// The group's servers.
    pub servers: Vec<DnsServerSettings>,
}

/// One DNS server.
#[oxy_app_settings]
pub struct DnsServerSettings {
    /// Address and port (`192.0.2.53:53`).
    #[serde(default = "default_server")]
    pub address: SocketAddr,
    /// `udp` (with TCP for truncated answers), `tcp`, `tls` (DNS over TLS, RFC 7858)
    /// or `https` (DNS over HTTPS, RFC 8484, over HTTP/2).
    pub protocol: DnsProtocol,
    /// The name the server's certificate must carry (`tls` and `https` only).
    pub tls_name: String,
    /// The query path of an `https` server.
    #[serde(default = "default_https_path")]
    pub https_path: String,
}

/// How a DNS server is asked.
#[oxy_app_settings]
pub enum DnsProtocol {
    /// UDP, retried over TCP when the answer is truncated.
    #[default]
    Udp,
    /// TCP only.
    Tcp,
    /// DNS over TLS.
    Tls,
    /// DNS over HTTPS (HTTP/2).
    Https,
}

fn yes() -> bool {
    true
}

fn default_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_attempts() -> usize {
    2
}

fn default_cache_size() -> usize {
    4096
}

fn default_max_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_negative_ttl() -> Duration {
    Duration::from_secs(30)
}

fn default_https_path() -> String {
    "/dns-query".into()
}

fn default_group_name() -> String {
    "primary".into()
}

fn default_server() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 53], 53))
}
