//! The `http:` section of an endpoint: forward and reverse proxying, and HTTP limits.

use crate::oxy_app_settings;
use std::time::Duration;

/// The `http:` section of an endpoint (used with `protocol: http`).
#[oxy_app_settings]
pub struct HttpSettings {
    /// Proxy absolute-form requests (`GET http://host/path`) and HTTP/2 requests to the
    /// authority they name, through the egress policy.
    #[serde(default = "yes")]
    pub forward_proxy: bool,
    /// Accept CONNECT (HTTP/1.1 and HTTP/2) and tunnel to the requested authority.
    #[serde(default = "yes")]
    pub connect: bool,
    /// Where origin-form requests go when no hook routes them (`http://host:port` or
    /// `https://host:port`); empty answers them 404.
    pub upstream: String,
    /// Add `X-Forwarded-For` with the client's address to proxied requests.
    pub x_forwarded_for: bool,
    /// Limits that protect the server.
    pub limits: HttpLimits,
    /// How Oxy talks to upstream servers.
    pub client: HttpClientSettings,
}

/// Limits of an HTTP endpoint.
#[oxy_app_settings]
pub struct HttpLimits {
    /// Most bytes of request line and headers (HTTP/1.1); more is answered 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Time allowed for a request's headers to arrive (slowloris protection).
    #[serde(with = "humantime_serde", default = "default_header_read_timeout")]
    pub header_read_timeout: Duration,
    /// Most concurrent HTTP/2 streams per connection.
    #[serde(default = "default_max_streams")]
    pub h2_max_concurrent_streams: u32,
}

/// The HTTP client used towards upstreams.
#[oxy_app_settings]
pub struct HttpClientSettings {
    /// Time allowed for the upstream's response headers, after the request is sent;
    /// past it the client gets 504.
    #[serde(with = "humantime_serde", default = "default_response_timeout")]
    pub response_timeout: Duration,
    /// Idle pooled connections are closed after this long.
    #[serde(with = "humantime_serde", default = "default_pool_idle_timeout")]
    pub pool_idle_timeout: Duration,
}

fn yes() -> bool {
    true
}

fn default_max_header_bytes() -> usize {
    64 * 1024
}

fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_max_streams() -> u32 {
    200
}

fn default_response_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_pool_idle_timeout() -> Duration {
    Duration::from_secs(90)
}
