//! The `http:` section of an endpoint: forward and reverse proxying, and HTTP limits.

use crate::oxy_app_settings;
use std::time::Duration;

/// The `http:` section of an endpoint (used with `protocol: http`).
#[oxy_app_settings]
pub struct HttpSettings {
    /// Proxy absolute-form requests (`GET http://host/path`) and HTTP/2 requests to the
    /// authority they name, through the egress policy. Off by default: an endpoint is
    /// not an open proxy unless its settings say so.
    pub forward_proxy: bool,
    /// Accept CONNECT (HTTP/1.1, HTTP/2 and HTTP/3) and tunnel to the requested
    /// authority. Off by default (CONNECT is answered 405).
    pub connect: bool,
    /// UDP proxying over HTTP (CONNECT-UDP, RFC 9298) on HTTP/3, HTTP/2 and HTTP/1.1.
    pub connect_udp: ConnectUdpSettings,
    /// IP proxying over HTTP (CONNECT-IP, RFC 9484) on HTTP/3, HTTP/2 and HTTP/1.1; the
    /// packets are handled as the endpoint's `ip:` section says.
    pub connect_ip: ConnectIpSettings,
    /// HTTP/3 over QUIC, on UDP beside this endpoint's TCP listeners (needs `tls`).
    pub h3: H3Settings,
    /// Where origin-form requests go when no hook routes them (`http://host:port` or
    /// `https://host:port`); empty answers them 404.
    pub upstream: String,
    /// Add `X-Forwarded-For` with the client's address to proxied requests.
    pub x_forwarded_for: bool,
    /// Add a `Forwarded` header (RFC 7239) with the client's address and protocol.
    pub forwarded: bool,
    /// Basic proxy authentication for CONNECT and forward-proxy requests (407 with
    /// `Proxy-Authenticate` otherwise). An application can do its own in its request hook.
    pub proxy_auth: ProxyAuthSettings,
    /// How many tunnels and requests each user may have at once.
    pub user_limits: UserLimitSettings,
    /// Limits that protect the server.
    pub limits: HttpLimits,
    /// How Oxy talks to upstream servers.
    pub client: HttpClientSettings,
}

/// The `connect_udp:` section: UDP proxying over HTTP (RFC 9298). Flows use the
/// endpoint's `udp.idle_timeout` and `udp.queue`, the egress policy and the hooks.
#[oxy_app_settings]
pub struct ConnectUdpSettings {
    /// Accept CONNECT-UDP: extended CONNECT with `:protocol connect-udp` over HTTP/3
    /// (HTTP Datagrams) and HTTP/2 (capsules), or an HTTP/1.1 `Upgrade: connect-udp`.
    /// Off by default.
    pub enabled: bool,
    /// The URI template (RFC 6570 level 1, RFC 9298 §2) whose `{target_host}` and
    /// `{target_port}` name the UDP target; a request path must match it.
    #[serde(default = "default_uri_template")]
    pub uri_template: String,
    /// Largest capsule accepted on HTTP/2 and HTTP/1.1 streams; a larger DATAGRAM
    /// capsule ends the stream.
    #[serde(default = "default_max_capsule_bytes")]
    pub max_capsule_bytes: usize,
}

/// The `connect_ip:` section: IP proxying over HTTP (RFC 9484).
#[oxy_app_settings]
pub struct ConnectIpSettings {
    /// Accept CONNECT-IP: extended CONNECT with `:protocol connect-ip` over HTTP/3
    /// (HTTP Datagrams) and HTTP/2 (capsules), or an HTTP/1.1 `Upgrade: connect-ip`.
    /// Off by default.
    pub enabled: bool,
    /// The URI template (RFC 9484 §3) whose `{target}` (`*`, an address, a prefix such
    /// as `192.0.2.0%2F24`, or a host name) and `{ipproto}` (`*` or a number) give the
    /// stream's scope; a request path must match it.
    #[serde(default = "default_ip_uri_template")]
    pub uri_template: String,
    /// Largest capsule accepted on HTTP/2 and HTTP/1.1 streams; a larger capsule ends
    /// the stream.
    #[serde(default = "default_max_capsule_bytes")]
    pub max_capsule_bytes: usize,
}

fn default_ip_uri_template() -> String {
    "/.well-known/masque/ip/{target}/{ipproto}/".into()
}

fn default_uri_template() -> String {
    "/.well-known/masque/udp/{target_host}/{target_port}/".into()
}

fn default_max_capsule_bytes() -> usize {
    65_536 + 16
}

/// The `h3:` section: HTTP/3 over QUIC (quinn, rustls with the endpoint's certificates).
#[oxy_app_settings]
pub struct H3Settings {
    /// Serve HTTP/3 (ALPN `h3`) with the same pipeline and hooks as HTTP/1.1 and HTTP/2.
    pub enabled: bool,
    /// UDP addresses for QUIC; empty means the endpoint's `listen` addresses.
    pub listen: Vec<std::net::SocketAddr>,
    /// Advertise HTTP/3 with `Alt-Svc` on responses of the TCP listeners.
    #[serde(default = "yes")]
    pub alt_svc: bool,
    /// A QUIC connection closes after this long without a packet.
    #[serde(with = "humantime_serde", default = "default_h3_idle_timeout")]
    pub idle_timeout: Duration,
    /// Most concurrent request streams per connection.
    #[serde(default = "default_h3_max_streams")]
    pub max_concurrent_streams: u32,
    /// Largest UDP payload Oxy accepts and sends (bytes, 1200-65527): the ceiling of
    /// QUIC packets and so of HTTP Datagrams.
    #[serde(default = "default_max_udp_payload")]
    pub max_udp_payload: u16,
    /// Bytes of HTTP Datagrams buffered per connection each way; beyond it QUIC drops
    /// the oldest ones (UDP semantics).
    #[serde(default = "default_datagram_buffer")]
    pub datagram_buffer_bytes: usize,
    /// Validate every client's address with a Retry packet before any handshake work
    /// (costs a round trip). Off, Retry is still sent while more than half of
    /// `max_handshakes` are in progress, so a spoofed flood costs one small packet each.
    pub retry: bool,
    /// Most QUIC handshakes in progress at once on a listener, apart from
    /// `limits.max_connections` (which counts established connections only); more are
    /// refused.
    #[serde(default = "default_max_handshakes")]
    pub max_handshakes: usize,
    /// Accept 0-RTT early data on resumed connections (replayable: off by default).
    pub zero_rtt: bool,
}

impl H3Settings {
    /// The UDP addresses HTTP/3 listens on: `listen`, or the endpoint's `listen` when empty.
    pub fn addresses<'a>(
        &'a self,
        endpoint_listen: &'a [std::net::SocketAddr],
    ) -> &'a [std::net::SocketAddr] {
        if self.listen.is_empty() {
            endpoint_listen
        } else {
            &self.listen
        }
    }
}

fn default_h3_idle_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_max_handshakes() -> usize {
    256
}

fn default_h3_max_streams() -> u32 {
    100
}

fn default_max_udp_payload() -> u16 {
    1472
}

fn default_datagram_buffer() -> usize {
    1 << 20
}

/// Limits of an HTTP endpoint.
#[oxy_app_settings]
pub struct HttpLimits {
    /// Most bytes of a request's header section: the request line and headers on
    /// HTTP/1.1 (more is answered 431), the decoded header list on HTTP/2
    /// (`SETTINGS_MAX_HEADER_LIST_SIZE`) and HTTP/3 (`SETTINGS_MAX_FIELD_SECTION_SIZE`).
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Time allowed for a request's headers to arrive (slowloris protection); also how
    /// long an idle HTTP/1.1 keep-alive connection waits for its next request.
    #[serde(with = "humantime_serde", default = "default_header_read_timeout")]
    pub header_read_timeout: Duration,
    /// An HTTP/2 connection with no open stream (no request, no tunnel) for this long
    /// gets a GOAWAY, and is closed if it has not gone within as long again, so idle
    /// clients cannot hold `max_connections` slots.
    #[serde(with = "humantime_serde", default = "default_h2_idle_timeout")]
    pub h2_idle_timeout: Duration,
    /// How often an HTTP/2 connection is checked with a PING while it is quiet; 0
    /// turns the check off.
    #[serde(with = "humantime_serde", default = "default_h2_keep_alive_interval")]
    pub h2_keep_alive_interval: Duration,
    /// An HTTP/2 connection whose PING is not answered within this long is closed.
    #[serde(with = "humantime_serde", default = "default_h2_keep_alive_timeout")]
    pub h2_keep_alive_timeout: Duration,
    /// Longest wait for the next piece of a request body; past it the request fails
    /// (408 when nothing was answered yet). 0 means no limit.
    #[serde(with = "humantime_serde", default = "default_body_idle_timeout")]
    pub request_body_idle_timeout: Duration,
    /// Most concurrent HTTP/2 streams per connection.
    #[serde(default = "default_max_streams")]
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 flow-control window of each stream, in bytes.
    #[serde(default = "default_stream_window")]
    pub h2_stream_window: u32,
    /// HTTP/2 flow-control window of each connection, in bytes.
    #[serde(default = "default_connection_window")]
    pub h2_connection_window: u32,
    /// Longest request URI; longer ones are answered 414.
    #[serde(default = "default_max_uri_bytes")]
    pub max_uri_bytes: usize,
    /// Largest request body proxied; larger ones are answered 413. 0 means no limit.
    pub max_body_bytes: u64,
}

/// Basic proxy authentication.
#[oxy_app_settings]
pub struct ProxyAuthSettings {
    /// Require credentials on CONNECT and forward-proxy requests.
    pub enabled: bool,
    /// The realm named in `Proxy-Authenticate`.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// Accepted users.
    pub users: Vec<ProxyUser>,
}

/// A user of the proxy.
#[oxy_app_settings]
pub struct ProxyUser {
    /// User name.
    pub name: String,
    /// Password.
    pub password: String,
    /// Tunnels (CONNECT, CONNECT-UDP, CONNECT-IP) this user may have open at once on
    /// the endpoint; past it, 429 with `Retry-After`. 0: `http.user_limits.max_tunnels`.
    pub max_tunnels: usize,
    /// Other requests this user may have at once, each counted from its head until the
    /// answer's head is sent; past it, 429 with `Retry-After`. 0:
    /// `http.user_limits.max_requests`.
    pub max_requests: usize,
}

/// Limits for each user of an endpoint: the user `proxy_auth` authenticated, or the one
/// the request hook names (`cx.proxy_user`). Requests without a user are not limited
/// here.
#[oxy_app_settings]
pub struct UserLimitSettings {
    /// Tunnels each user may have open at once (0: no limit), unless its
    /// `proxy_auth.users` entry says otherwise.
    pub max_tunnels: usize,
    /// Other requests each user may have at once, each counted from its head until the
    /// answer's head is sent (0: no limit), unless its `proxy_auth.users` entry says
    /// otherwise.
    pub max_requests: usize,
    /// What a 429 tells the client to wait (`Retry-After`, whole seconds, at least 1).
    #[serde(with = "humantime_serde", default = "default_retry_after")]
    pub retry_after: Duration,
}

fn default_retry_after() -> Duration {
    Duration::from_secs(1)
}

fn default_realm() -> String {
    "oxy".into()
}

fn default_stream_window() -> u32 {
    1 << 20
}

fn default_connection_window() -> u32 {
    4 << 20
}

fn default_max_uri_bytes() -> usize {
    8 * 1024
}

/// The HTTP client used towards upstreams.
#[oxy_app_settings]
pub struct HttpClientSettings {
    /// Time allowed for the upstream's response headers, counted from when the
    /// request, body included, has been sent; past it the client gets 504. A slow
    /// upload is bounded by `limits.request_body_idle_timeout` instead.
    #[serde(with = "humantime_serde", default = "default_response_timeout")]
    pub response_timeout: Duration,
    /// Longest wait for the next piece of an upstream's response body; past it the
    /// response is cut off (the client sees its stream reset or the connection
    /// closed). 0 means no limit.
    #[serde(with = "humantime_serde", default = "default_body_idle_timeout")]
    pub response_body_idle_timeout: Duration,
    /// Idle pooled connections are closed after this long.
    #[serde(with = "humantime_serde", default = "default_pool_idle_timeout")]
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per upstream (per egress choice under an egress hook, and
    /// per worker thread under `server.scheduling: per_thread`); a connection whose
    /// response ends while this many are idle is closed. Set it at
    /// least to the concurrent requests an upstream gets, or connections churn. 0 keeps
    /// none: every request opens its own connection (HTTP/2 upstreams included).
    #[serde(default = "default_pool_max_idle_per_upstream")]
    pub pool_max_idle_per_upstream: usize,
    /// How often a pooled HTTP/2 connection to an upstream is checked with a PING, in
    /// use or idle; 0 turns the check off. A connection the upstream has silently lost
    /// (a NAT or firewall dropped its state) is found and closed before a request is
    /// sent on it, instead of taking requests until each times out.
    #[serde(with = "humantime_serde", default = "default_h2_keep_alive_interval")]
    pub h2_keep_alive_interval: Duration,
    /// A pooled HTTP/2 connection whose PING is not answered within this long is closed;
    /// its requests fail with 502 and the next ones open a new connection.
    #[serde(with = "humantime_serde", default = "default_h2_keep_alive_timeout")]
    pub h2_keep_alive_timeout: Duration,
    /// PEM bundle of CAs upstream certificates must chain to; empty means the system's
    /// roots. Host names are always verified.
    pub ca_file: std::path::PathBuf,
    /// The algorithms TLS towards upstreams may use (`default`, `fips_202205`,
    /// `wpa3_192_202304`, as for an endpoint's `tls.policy`). The egress hook can choose
    /// another for one request (`EgressContext::tls_policy`; a pooled connection is
    /// reused only for the same policy).
    pub tls_policy: super::TlsPolicy,
    /// SHA-256 pins (hex) of raw public keys (RFC 7250) upstreams must present instead
    /// of certificates: when set, every upstream of the endpoint is asked for a raw
    /// public key and accepted only by these pins (an internal service). The egress
    /// hook can give the pin for one request (`EgressContext::server_pin`).
    pub server_pins: Vec<String>,
    /// PEM private key presented as a raw public key to upstreams that ask for a
    /// client credential.
    pub raw_public_key: std::path::PathBuf,
    /// Revocation of upstream certificates, every certificate of the chain below its
    /// root: the leaf by the OCSP response the upstream staples, then each by the CRL
    /// files below and by the CRLs its distribution points name (fetched through the
    /// off-ramp, kept until their nextUpdate and at most a day). `off`, `soft_fail` (an
    /// unknown status is counted and passes) or `hard_fail` (it is refused).
    pub revocation: Revocation,
    /// CRL files (DER or PEM), read at start: a certificate whose issuer signed one of
    /// them is revoked if it lists it (whatever a stapled OCSP response says), and
    /// otherwise good while the file is before its nextUpdate. Partitioned, delta and
    /// indirect CRLs are refused.
    pub crl_files: Vec<std::path::PathBuf>,
}

/// How upstream certificates' revocation is checked.
#[oxy_app_settings]
pub enum Revocation {
    /// Not checked.
    Off,
    /// A revoked certificate is refused; one whose status cannot be told passes (counted
    /// in `oxy_tls_revocation_unknown_total`).
    #[default]
    SoftFail,
    /// A revoked certificate, or one whose status cannot be told, is refused.
    HardFail,
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

fn default_h2_idle_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_h2_keep_alive_interval() -> Duration {
    Duration::from_secs(30)
}

fn default_h2_keep_alive_timeout() -> Duration {
    Duration::from_secs(20)
}

fn default_body_idle_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_response_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_pool_idle_timeout() -> Duration {
    Duration::from_secs(90)
}

fn default_pool_max_idle_per_upstream() -> usize {
    1024
}
