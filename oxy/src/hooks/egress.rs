//! [`EgressHook`]: chooses where and how traffic leaves Oxy.

use crate::app::OxyExt;
use crate::endpoint::Endpoint;
use crate::hooks::Transport;
use crate::hooks::numeric_host::parse_numeric_ipv4;
use crate::tunnel::TunnelClient;
use async_trait::async_trait;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The host part of a destination.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TargetHost {
    /// A DNS name, resolved by Oxy.
    Name(String),
    /// An address.
    Ip(IpAddr),
}

/// A destination: host and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// Name or address.
    pub host: TargetHost,
    /// Port.
    pub port: u16,
}

/// An HTTP proxy that tunnels to targets with CONNECT.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamProxy {
    /// The proxy's address.
    pub address: Target,
    /// Basic credentials (`user`, `password`) sent in `Proxy-Authorization`.
    pub credentials: Option<(String, String)>,
}

/// An internal service that learns who the client is from a PROXY header.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InternalService {
    /// The service's address.
    pub target: Target,
    /// The header version for TCP (UDP datagrams always carry v2).
    pub version: ProxyHeaderVersion,
    /// Type-length-value records for a v2 header (types 0xE0-0xEF are for applications).
    pub tlvs: Vec<(u8, Vec<u8>)>,
}

/// A PROXY protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ProxyHeaderVersion {
    /// The text header (`PROXY TCP4 ...`); carries no TLVs.
    V1,
    /// The binary header, with TLVs.
    #[default]
    V2,
}

/// Facts about traffic about to leave Oxy.
pub struct EgressContext<App: OxyExt> {
    /// The endpoint the traffic came in on.
    pub endpoint: Arc<Endpoint<App>>,
    /// The connection the traffic came on: its id and the ingress hook's state for it.
    pub connection: crate::hooks::Connection<App>,
    /// The client's address (the original client behind a PROXY header).
    pub client_addr: SocketAddr,
    /// The local address the client connected to (the original destination).
    pub local_addr: SocketAddr,
    /// The user the HTTP request was authenticated as: by `http.proxy_auth`, or as the
    /// request hook set [`RequestContext::proxy_user`](crate::hooks::RequestContext).
    /// `None` on L4 endpoints.
    pub proxy_user: Option<String>,
    /// A label the hook attaches to this traffic's audit record (`label`), such as the
    /// name of the route it chose. `None` at first.
    pub audit_label: Option<String>,
    /// TCP or UDP towards the target.
    pub transport: Transport,
    /// What the traffic is: a tunnel (CONNECT, CONNECT-UDP, an L4 endpoint's connection
    /// or flow, an IP flow), or one HTTP request Oxy forwards or reverse-proxies.
    pub purpose: EgressPurpose,
    /// Where the client asked to go; `None` on an L4 endpoint without `tcp.target`,
    /// where the hook must answer [`EgressAction::Rewrite`] or the connection is closed.
    pub target: Option<Target>,
    /// The compliance policy of the TLS Oxy speaks to the target for a forwarded or
    /// reverse-proxied `https` request (`None`: `http.client.tls_policy`). Tunnels carry
    /// the client's own TLS and ignore it.
    pub tls_policy: Option<crate::settings::TlsPolicy>,
    /// For an `https` request: the SHA-256 pin (hex) of the raw public key the upstream
    /// must present instead of a certificate (`None`: `http.client.server_pins`, or a
    /// certificate).
    pub server_pin: Option<String>,
    /// The application's state for this traffic, `Default` at first. For a tunnel it
    /// becomes the tunnel context's `app` (the tunnel hook sees what the egress hook
    /// left); for a forwarded request it ends when the response head is sent.
    pub app: App::TunnelContext,
}

impl<App: OxyExt> EgressContext<App> {
    /// The context of a tunnel for `client` to `target`, before the hook has run.
    pub fn new(
        endpoint: &Arc<Endpoint<App>>,
        client: &TunnelClient<App>,
        transport: Transport,
        target: Option<Target>,
    ) -> Self {
        Self {
            endpoint: endpoint.clone(),
            connection: client.connection.clone(),
            client_addr: client.addr(),
            local_addr: client.local_addr,
            proxy_user: client.proxy_user.clone(),
            audit_label: None,
            transport,
            purpose: EgressPurpose::Tunnel,
            target,
            tls_policy: None,
            server_pin: None,
            app: App::TunnelContext::default(),
        }
    }
}

/// What traffic the egress hook decides for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EgressPurpose {
    /// A tunnel: CONNECT, CONNECT-UDP, a `tcp` or `udp` endpoint's connection or flow,
    /// an IP flow upgraded to a tunnel.
    Tunnel,
    /// One HTTP request Oxy sends to its upstream (forward or reverse proxy), on a
    /// connection pooled by the route chosen and by who asked.
    HttpRequest,
}

/// How traffic leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressAction {
    /// Go to the requested target, subject to the egress policy.
    Allow,
    /// Go to this target instead (or at all, when none was requested), subject to the
    /// egress policy.
    Rewrite(Target),
    /// Go to the target from this local address (egress IP selection). A forwarded
    /// HTTP request goes on a connection from that address (pooled with others bound
    /// there).
    BindTo(IpAddr),
    /// Reach the target through this HTTP proxy with CONNECT (chaining). The egress
    /// policy applies to the proxy's address; the proxy applies its own to the target.
    /// A proxy that does not answer 2xx fails the connection (502 to a CONNECT client).
    /// UDP cannot go this way: a UDP flow is refused (502 to a CONNECT-UDP client,
    /// `UDP cannot go through the CONNECT proxy ADDRESS`).
    UpstreamProxy(UpstreamProxy),
    /// Send the traffic to an internal service, preceded by a PROXY protocol header that
    /// carries the client's and the original destination's addresses (and, in v2, TLVs):
    /// per stream for TCP, per datagram (v2) for UDP.
    InternalService(InternalService),
    /// Refuse, with this reason; counted in `oxy_offramp_egress_denied_total{reason="hook"}`.
    /// The client sees:
    ///
    /// - CONNECT and CONNECT-UDP: 403 with the plain-text body
    ///   `egress denied by the application: REASON`; the tunnel is audited with it.
    /// - A forwarded or reverse-proxied HTTP request: the same 403
    ///   (`oxy_http_errors_total{reason="denied"}`).
    /// - A `tcp` endpoint: the connection closed (after the TLS handshake, on a TLS
    ///   endpoint).
    /// - A `udp` endpoint: no answer; its datagrams are dropped until it has been quiet
    ///   for `udp.idle_timeout`.
    /// - An IP flow: ICMP administratively prohibited.
    Deny(String),
}

/// Chooses the egress of tunnels and forwarded requests.
#[async_trait]
pub trait EgressHook<App: OxyExt>: Send + Sync + 'static {
    /// Runs before the target is resolved. The default returns [`EgressAction::Allow`].
    async fn on_egress(&self, cx: &mut EgressContext<App>) -> EgressAction {
        let _ = cx;
        EgressAction::Allow
    }

    /// Runs after the target is resolved, with the addresses in the order they will be
    /// tried; remove or reorder them here. The default keeps them as they are.
    ///
    /// It runs once per address family (IPv6 and IPv4 are resolved concurrently), before
    /// the egress policy filters the addresses.
    /// For forwarded and reverse-proxied HTTP requests it runs when a connection is made:
    /// a later request that the egress hook sends the same way (same route, target and
    /// TLS settings, from the same client address and proxy user) may reuse an idle
    /// connection, without a new resolution.
    /// `dns_item` is the application's item stored with the DNS cache entry the
    /// addresses came from ([`DnsHook::cache_item`](crate::hooks::DnsHook::cache_item)),
    /// `None` when the target was an IP address.
    async fn on_resolved(
        &self,
        cx: &EgressContext<App>,
        addrs: &mut Vec<IpAddr>,
        dns_item: Option<&App::DnsCacheItem>,
    ) {
        let _ = (cx, addrs, dns_item);
    }
}

impl TargetHost {
    /// The host of a URI (`[2001:db8::1]`, `192.0.2.1`, `Example.COM.`): an address (IPv4
    /// in any form a browser reads, `127.1` too), or a name in lowercase without the
    /// root's trailing dot.
    pub fn from_uri_host(host: &str) -> Self {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Some(Ok(ip)) = parse_numeric_ipv4(host) {
            return TargetHost::Ip(IpAddr::V4(ip));
        }
        match host.parse() {
            Ok(ip) => TargetHost::Ip(ip),
            Err(_) => TargetHost::Name(host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()),
        }
    }
}

/// Whether the host name `host` matches `pattern`: `example.com` (exactly),
/// `.example.com` (it and its subdomains) or `*.example.com` (its subdomains only),
/// in any case and whether or not either ends with the root's dot.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    let pattern = pattern.strip_suffix('.').unwrap_or(pattern);
    let subdomain_of = |domain: &str| {
        let (host, domain) = (host.as_bytes(), domain.as_bytes());
        host.len() > domain.len() + 1
            && host[host.len() - domain.len() - 1] == b'.'
            && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain)
    };
    match (pattern.strip_prefix("*."), pattern.strip_prefix('.')) {
        (Some(domain), _) => subdomain_of(domain),
        (_, Some(domain)) => host.eq_ignore_ascii_case(domain) || subdomain_of(domain),
        _ => host.eq_ignore_ascii_case(pattern),
    }
}

impl std::fmt::Display for TargetHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetHost::Name(name) => f.write_str(name),
            TargetHost::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            TargetHost::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl From<std::net::SocketAddr> for Target {
    /// The target at an address (the destination of an IP flow).
    fn from(addr: std::net::SocketAddr) -> Self {
        Target {
            host: TargetHost::Ip(addr.ip()),
            port: addr.port(),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Why a `host:port` string is not a [`Target`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a host:port target: {0}")]
pub struct TargetParseError(&'static str);

impl std::str::FromStr for Target {
    type Err = TargetParseError;

    /// Parses `name:port`, `192.0.2.1:port` or `[2001:db8::1]:port`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (host, port) = s.rsplit_once(':').ok_or(TargetParseError("no port"))?;
        let port: u16 = port.parse().map_err(|_| TargetParseError("bad port"))?;
        if port == 0 {
            return Err(TargetParseError("port 0"));
        }
        let host = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            TargetHost::Ip(IpAddr::V6(
                v6.parse()
                    .map_err(|_| TargetParseError("bad IPv6 address"))?,
            ))
        } else if let Some(ip) = parse_numeric_ipv4(host) {
            TargetHost::Ip(IpAddr::V4(
                ip.map_err(|_| TargetParseError("bad IPv4 address"))?,
            ))
        } else {
            let host = host.strip_suffix('.').unwrap_or(host);
            let valid = !host.is_empty()
                && host.len() <= 253
                && host.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                });
            if !valid {
                return Err(TargetParseError("bad host name"));
            }
            TargetHost::Name(host.to_ascii_lowercase())
        };
        Ok(Target { host, port })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns_match() {
        for (pattern, host, matches) in [
            ("example.com", "Example.COM.", true),
            ("example.com", "a.example.com", false),
            (".example.com", "example.com", true),
            (".example.com", "a.b.example.com", true),
            (".example.com", "notexample.com", false),
            ("*.example.com", "example.com", false),
            ("*.example.com", "x.Example.com", true),
            ("*.example.com", "é.example.com", true),
            (".example.com", "exampleécom", false),
        ] {
            assert_eq!(host_matches(pattern, host), matches, "{pattern} {host}");
        }
    }

    #[test]
    fn targets_parse_and_print() {
        for (text, shown) in [
            ("example.com:443", "example.com:443"),
            ("Example.COM:80", "example.com:80"),
            ("example.com.:443", "example.com:443"),
            ("192.0.2.1:53", "192.0.2.1:53"),
            ("[2001:db8::1]:8443", "[2001:db8::1]:8443"),
        ] {
            assert_eq!(text.parse::<Target>().unwrap().to_string(), shown);
        }
        for bad in [
            "example.com",
            "example.com:0",
            "example.com:70000",
            "[::1:80",
            ":80",
            "a..b:1",
            "example.com..:1",
            "2001:db8::1:80",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
    }
}
