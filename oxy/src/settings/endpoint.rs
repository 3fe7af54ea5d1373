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
    /// Addresses to listen on (`127.0.0.1:8080`, `[::1]:8080`): TCP, or UDP for `udp`.
    #[serde(default = "default_listen")]
    pub listen: Vec<SocketAddr>,
    /// What the endpoint serves: `http` (HTTP/1.1 and HTTP/2 with prior knowledge: a
    /// forward proxy with CONNECT, and a reverse proxy through hooks or `http.upstream`),
    /// `tcp` (each connection forwarded to a target: port forwarding, an L4 firewall) or
    /// `udp` (each client's datagrams forwarded to a target as one flow).
    pub protocol: EndpointProtocol,
    /// Settings of `protocol: http`.
    pub http: HttpSettings,
    /// Settings of `protocol: tcp`.
    pub tcp: TcpForwardSettings,
    /// Settings of `protocol: udp`.
    pub udp: UdpForwardSettings,
    /// Timeouts of the tunnels this endpoint opens; the tunnel hook can change them.
    pub tunnel: TunnelSettings,
    /// IP packets: CONNECT-IP streams of an `http` endpoint, or a `tun` endpoint's device.
    pub ip: super::IpSettings,
    /// TLS termination for this endpoint.
    pub tls: TlsSettings,
    /// TLS interception inside tunnels the tunnel hook decapsulates.
    pub tls_interception: super::TlsInterceptionSettings,
    /// PROXY protocol headers from load balancers in front of this endpoint (TCP).
    pub proxy_protocol: ProxyProtocolSettings,
    /// Limits that protect the process.
    pub limits: EndpointLimits,
    /// Where this endpoint's traffic may go, beside (or instead of) the top-level
    /// `egress` policy: a reverse proxy can reach a private backend that the forward
    /// proxy endpoints may not.
    pub egress: super::EndpointEgressSettings,
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
    /// Forward each client's UDP datagrams to `udp.target` (or where the egress hook
    /// says), one flow per client address.
    Udp,
    /// Read IP packets from the TUN device `ip.tun` (`listen` is not used): each new
    /// flow runs the IP flow hook, then the user-space off-ramp. Needs CAP_NET_ADMIN.
    Tun,
}

impl<E> EndpointSettings<E> {
    /// Whether the endpoint serves HTTP/3: `http.h3.enabled` on an `http` endpoint.
    pub fn serves_h3(&self) -> bool {
        self.http.h3.enabled && self.protocol == EndpointProtocol::Http
    }
}

impl EndpointProtocol {
    /// Whether the endpoint reads a TUN device instead of listening on sockets.
    pub fn is_tun(self) -> bool {
        self == EndpointProtocol::Tun
    }

    /// Whether the endpoint listens on UDP rather than TCP.
    pub fn is_udp(self) -> bool {
        self == EndpointProtocol::Udp
    }

    /// The name the settings use: `http`, `tcp`, `udp` or `tun`.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointProtocol::Http => "http",
            EndpointProtocol::Tcp => "tcp",
            EndpointProtocol::Udp => "udp",
            EndpointProtocol::Tun => "tun",
        }
    }
}

/// The `udp:` section of an endpoint.
#[oxy_app_settings]
pub struct UdpForwardSettings {
    /// Where each client's datagrams go (`host:port`); empty means the egress hook must
    /// choose, and datagrams are dropped when it does not.
    pub target: String,
    /// A flow ends after this long without a datagram either way (also CONNECT-UDP
    /// flows of an `http` endpoint).
    #[serde(with = "humantime_serde", default = "default_udp_idle_timeout")]
    pub idle_timeout: Duration,
    /// Datagrams queued per flow each way; more are dropped and counted (also
    /// CONNECT-UDP flows).
    #[serde(default = "default_udp_queue")]
    pub queue: usize,
}

fn default_udp_idle_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_udp_queue() -> usize {
    128
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

/// The `proxy_protocol:` section of an endpoint.
#[oxy_app_settings]
pub struct ProxyProtocolSettings {
    /// `off`, `optional` (a v1 or v2 header is used when present) or `required`.
    pub mode: ProxyProtocolMode,
    /// Networks allowed to send a PROXY header; a header from anyone else closes the
    /// connection (a spoofed client address is a security bug). Needed unless `off`.
    pub trusted: Vec<ipnet::IpNet>,
    /// Time allowed for the header to arrive (TCP).
    #[serde(with = "humantime_serde", default = "default_header_timeout")]
    pub header_timeout: Duration,
    /// On `udp` endpoints (v2 only): `per_datagram` (every datagram starts with a header;
    /// flows are told apart by the original client) or `first_datagram` (only the first
    /// datagram of each flow does).
    pub udp: UdpProxyHeader,
}

/// Where PROXY v2 headers sit on a UDP endpoint.
#[oxy_app_settings]
pub enum UdpProxyHeader {
    /// In front of every datagram.
    #[default]
    PerDatagram,
    /// In front of the first datagram of each flow.
    FirstDatagram,
}

/// Whether connections start with a PROXY header.
#[oxy_app_settings]
pub enum ProxyProtocolMode {
    /// No header is read.
    #[default]
    Off,
    /// A header is used when the connection starts with one.
    Optional,
    /// Every connection must start with a header.
    Required,
}

fn default_header_timeout() -> Duration {
    Duration::from_secs(5)
}

/// The `tls:` section of an endpoint.
#[oxy_app_settings]
pub struct TlsSettings {
    /// Terminate TLS (BoringSSL) on this endpoint, with ALPN `h2` and `http/1.1` on HTTP
    /// endpoints; needs at least one certificate.
    pub enabled: bool,
    /// Certificate chains with their private keys; the first is the default, the others
    /// are chosen by SNI from their `server_names`.
    pub certificates: Vec<CertificateSettings>,
    /// Oldest TLS version accepted: `tls1_2` or `tls1_3`.
    pub min_version: TlsVersion,
    /// TLS 1.2 cipher suites (BoringSSL cipher list syntax); empty keeps BoringSSL's
    /// defaults. TLS 1.3 suites are not configurable.
    pub cipher_list: String,
    /// Key exchange groups, `:`-separated (`X25519:P-256`); empty keeps the defaults.
    pub curves: String,
    /// Offer session tickets for resumption.
    #[serde(default = "yes")]
    pub session_tickets: bool,
    /// Client certificates (mTLS): `none`, `optional` (verified when sent) or `required`.
    pub client_auth: ClientAuth,
    /// PEM bundle of the CAs client certificates must chain to (for `client_auth`).
    pub client_ca: PathBuf,
    /// PEM private key whose public key the endpoint presents as a raw public key (RFC
    /// 7250) to clients that ask for one, beside its certificates, or alone (then
    /// `certificates` may be empty).
    pub raw_public_key: PathBuf,
    /// SHA-256 pins (hex) of the keys (SubjectPublicKeyInfo) of clients accepted by raw
    /// public key, with `client_auth` `optional` or `required`; clients with
    /// certificates are still checked against `client_ca` if it is set. Session
    /// resumption is off on such an endpoint, so every connection shows its key.
    pub client_pins: Vec<String>,
    /// Time allowed for the TLS handshake.
    #[serde(with = "humantime_serde", default = "default_handshake_timeout")]
    pub handshake_timeout: Duration,
    /// The algorithms TLS may use: `default`, `fips_202205` or `wpa3_192_202304`
    /// (BoringSSL's compliance policies). The ingress hook can choose another for one
    /// connection (`IngressConnectionContext::tls_policy`). On HTTP/3, the policy
    /// restricts QUIC's TLS 1.3 suites and groups the same way, for the whole endpoint.
    pub policy: TlsPolicy,
}

/// A set of TLS algorithms a connection is held to.
#[oxy_app_settings]
pub enum TlsPolicy {
    /// BoringSSL's defaults (and the settings' cipher and curve lists).
    #[default]
    Default,
    /// FIPS 140-3 approved algorithms as of 2022-05 (`ssl_compliance_policy_fips_202205`):
    /// TLS 1.2 and 1.3, AES-GCM suites with ECDHE, groups P-256 and P-384 (and their
    /// post-quantum hybrids), RSA and ECDSA signatures with SHA-256 or better. This
    /// restricts algorithms; it does not make BoringSSL a FIPS-validated module (that
    /// needs a `fips` build of boring).
    #[serde(rename = "fips_202205")]
    Fips202205,
    /// WPA3-Enterprise 192-bit mode (`ssl_compliance_policy_wpa3_192_202304`): TLS 1.2
    /// and 1.3 with AES-256-GCM, P-384, and RSA-3072+ or ECDSA P-384 signatures.
    #[serde(rename = "wpa3_192_202304")]
    Wpa3_192_202304,
}

/// A TLS protocol version.
#[oxy_app_settings]
pub enum TlsVersion {
    /// TLS 1.2.
    #[default]
    Tls1_2,
    /// TLS 1.3.
    Tls1_3,
}

/// Whether clients present certificates.
#[oxy_app_settings]
pub enum ClientAuth {
    /// No client certificates are asked for.
    #[default]
    None,
    /// A certificate is asked for and verified when the client sends one.
    Optional,
    /// Connections without a valid client certificate fail the handshake.
    Required,
}

fn yes() -> bool {
    true
}

fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
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
