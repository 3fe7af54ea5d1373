//! [`TunnelHook`]: watches and steers TCP, UDP and IP tunnels.

use crate::app::OxyExt;
use crate::endpoint::Endpoint;
use crate::hooks::{Target, Transport};
use crate::tls::interception::ClientHello;
use async_trait::async_trait;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Facts about a tunnel whose off-ramp is connected.
pub struct TunnelContext<App: OxyExt> {
    /// The endpoint the tunnel came in on.
    pub endpoint: Arc<Endpoint<App>>,
    /// The connection the tunnel came on: its id and the ingress hook's state for it.
    pub connection: crate::hooks::Connection<App>,
    /// The client's address (the original client behind a PROXY header).
    pub client_addr: SocketAddr,
    /// The user the HTTP request that opened the tunnel was authenticated as (see
    /// [`EgressContext::proxy_user`](crate::hooks::EgressContext)); `None` on L4 endpoints.
    pub proxy_user: Option<String>,
    /// TCP or UDP.
    pub transport: Transport,
    /// The destination as requested.
    pub target: Target,
    /// The address actually connected to.
    pub peer_addr: SocketAddr,
    /// The application's state for this tunnel: what the egress hook left in
    /// [`EgressContext::app`](crate::hooks::EgressContext), kept until `on_tunnel_end`.
    pub app: App::TunnelContext,
}

impl<App: OxyExt> TunnelContext<App> {
    /// The context of a tunnel to `target` whose egress `egress` decided (its state
    /// becomes the tunnel's) and whose off-ramp connected to `peer_addr`.
    pub(crate) fn after_egress(
        egress: &mut crate::hooks::EgressContext<App>,
        target: Target,
        peer_addr: SocketAddr,
    ) -> Self {
        Self {
            endpoint: egress.endpoint.clone(),
            connection: egress.connection.clone(),
            client_addr: egress.client_addr,
            proxy_user: egress.proxy_user.clone(),
            transport: egress.transport,
            target,
            peer_addr,
            app: std::mem::take(&mut egress.app),
        }
    }
}

/// What to do with a tunnel about to start pumping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelAction {
    /// Pump bytes both ways with the endpoint's timeouts.
    Continue,
    /// Refuse the tunnel before a byte is pumped: close the target's connection and
    /// refuse the client. Logged, counted in `oxy_tunnel_ended_total{reason="blocked"}`
    /// and audited with the close reason `blocked: REASON`;
    /// [`TunnelHook::on_tunnel_end`] does not run. The client sees:
    ///
    /// - CONNECT and CONNECT-UDP (not answered yet): 403 with the plain-text body
    ///   `blocked: REASON`.
    /// - A `tcp` endpoint: the connection closed (after the TLS handshake, on a TLS
    ///   endpoint).
    /// - A `udp` endpoint: no answer; its datagrams are dropped until it has been quiet
    ///   for `udp.idle_timeout`.
    /// - An IP flow: ICMP administratively prohibited.
    Block(String),
    /// Close the connection to the target and connect to this one instead (through the
    /// egress policy, without running the egress hook's `on_egress` again; its
    /// `on_resolved` sees the new target). The route the egress hook chose (bind
    /// address, upstream proxy, internal service) stays. When this connection fails, the
    /// tunnel is refused with that failure, as if the client had asked for this target.
    Redirect(Target),
    /// Pump with these timeouts instead of the endpoint's.
    SetTimeouts {
        /// Close after this long without traffic either way.
        idle: Duration,
        /// Close after this long in any case; `Duration::ZERO` means no limit.
        max_lifetime: Duration,
    },
    /// Look inside: Oxy reads the client's first bytes and tells
    /// [`TunnelHook::on_inner_protocol`] what they are. Plain HTTP/1.1 or HTTP/2 is fed
    /// to Oxy's HTTP server: each request goes through the request hook, the body taps
    /// and the egress hook and policy, then to the tunnel's target. A TLS ClientHello is
    /// intercepted when the endpoint has `tls_interception`: Oxy answers the handshake
    /// with a certificate minted for the server name, serves the HTTP inside the same
    /// way and sends each request to the target over TLS, verifying the target's
    /// certificate. On a UDP flow, a QUIC Initial is intercepted the same way: Oxy's
    /// HTTP/3 server answers with a minted certificate and each request goes to the
    /// target over HTTP/2 or HTTP/1.1 with TLS (TCP, same port). Anything else is
    /// pumped untouched by default. The audit record and [`TunnelSummary`] count the
    /// client's bytes (and datagrams) when Oxy serves them itself.
    Decapsulate,
}

/// What the client's first bytes in a tunnel being decapsulated are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InnerProtocol {
    /// Plain HTTP/1.1 or HTTP/2.
    Http,
    /// A TLS ClientHello.
    Tls(ClientHello),
    /// A QUIC Initial (v1 or v2) on a UDP flow, with the ClientHello inside it (empty
    /// when it did not fit in the first four datagrams).
    Quic(ClientHello),
    /// Something else (or nothing before the endpoint's `header_read_timeout`).
    Unknown,
}

impl InnerProtocol {
    /// What [`TunnelHook::on_inner_protocol`] does by default: inspect HTTP, and TLS or
    /// QUIC that offers HTTP (ALPN `h2`/`http/1.1`, `h3`) or no protocol at all; pass
    /// anything else (IMAPS, DNS over QUIC, ... which Oxy's HTTP servers cannot serve).
    pub fn default_action(&self) -> InnerAction {
        let offers = |hello: &ClientHello, http: &[&str]| {
            hello.alpn.is_empty() || hello.alpn.iter().any(|p| http.contains(&p.as_str()))
        };
        let inspect = match self {
            InnerProtocol::Http => true,
            InnerProtocol::Tls(hello) => offers(hello, &["h2", "http/1.1"]),
            InnerProtocol::Quic(hello) => offers(hello, &["h3"]),
            InnerProtocol::Unknown => false,
        };
        if inspect {
            InnerAction::Inspect
        } else {
            InnerAction::Pass
        }
    }
}

/// What to do with the bytes inside a tunnel being decapsulated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InnerAction {
    /// Serve the HTTP inside through the hooks: plain HTTP as it is, TLS and QUIC
    /// intercepted (pumped untouched when the endpoint has no `tls_interception`).
    /// Unknown bytes on TCP are fed to the HTTP server, which answers 400 and closes;
    /// on UDP they are pumped.
    Inspect,
    /// Pump the bytes untouched to the target, as for [`TunnelAction::Continue`]: for
    /// pinned applications and banking sites whose TLS must not be intercepted.
    Pass,
    /// Close both sides. The client was already answered (a CONNECT's 200, a
    /// CONNECT-UDP's 200 or 101), so it sees its tunnel close with nothing served: the
    /// TCP connection or the request's stream ends; a `udp` endpoint's flow ends, and a
    /// later datagram from the client starts a new flow; an IP flow's TCP connection is
    /// closed, or its later UDP packets are dropped. Logged, counted in
    /// `oxy_tunnel_ended_total{reason="blocked"}` (and, for TLS or QUIC,
    /// `oxy_tls_interceptions_total{outcome="blocked"}`) and audited with the inspection
    /// `blocked`; [`TunnelHook::on_tunnel_end`] runs.
    Block(String),
}

/// How a tunnel's contents were handled, for [`TunnelSummary`] and the audit record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Inspection {
    /// The tunnel was pumped; nobody asked to look inside.
    #[default]
    None,
    /// Plain HTTP inside was served through the hooks.
    Http,
    /// TLS (or QUIC) inside was intercepted and its HTTP served through the hooks.
    Intercepted,
    /// Oxy was asked to look inside but pumped the bytes untouched: the hook passed
    /// them, or they were TLS or QUIC without an interception CA, or a UDP flow that is
    /// not QUIC.
    Passed,
    /// The hook blocked the tunnel once it saw what was inside.
    Blocked,
}

impl Inspection {
    /// The label in audit records: `none`, `http`, `intercepted`, `passed`, `blocked`.
    pub fn as_str(self) -> &'static str {
        match self {
            Inspection::None => "none",
            Inspection::Http => "http",
            Inspection::Intercepted => "intercepted",
            Inspection::Passed => "passed",
            Inspection::Blocked => "blocked",
        }
    }
}

/// What is known about a tunnel once it has ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelSummary {
    /// Bytes from client to target.
    pub bytes_up: u64,
    /// Bytes from target to client.
    pub bytes_down: u64,
    /// Datagrams or packets from client to target (0 for TCP).
    pub packets_up: u64,
    /// Datagrams or packets from target to client (0 for TCP).
    pub packets_down: u64,
    /// How long the tunnel lived.
    pub duration: Duration,
    /// Why it closed, in words.
    pub close_reason: String,
    /// Whether Oxy looked inside, and what it did.
    pub inspection: Inspection,
}

/// Watches and steers tunnels.
#[async_trait]
pub trait TunnelHook<App: OxyExt>: Send + Sync + 'static {
    /// Runs when both sides of a tunnel are connected, before any byte is pumped.
    /// The default returns [`TunnelAction::Continue`].
    async fn on_tunnel_start(&self, cx: &mut TunnelContext<App>) -> TunnelAction {
        let _ = cx;
        TunnelAction::Continue
    }

    /// Runs after [`TunnelHook::on_tunnel_start`] chose [`TunnelAction::Decapsulate`],
    /// once the client's first bytes are in (a whole TLS ClientHello, with its server
    /// name and ALPN list; on UDP, the first datagrams: a QUIC Initial or not), before
    /// anything is served or pumped. The default ([`InnerProtocol::default_action`])
    /// inspects HTTP, and TLS or QUIC offering HTTP (or no protocol), and passes anything
    /// else.
    async fn on_inner_protocol(
        &self,
        cx: &mut TunnelContext<App>,
        found: &InnerProtocol,
    ) -> InnerAction {
        let _ = cx;
        found.default_action()
    }

    /// Runs once when a tunnel has closed. The default does nothing.
    async fn on_tunnel_end(&self, cx: &mut TunnelContext<App>, summary: &TunnelSummary) {
        let _ = (cx, summary);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(alpn: &[&str]) -> ClientHello {
        ClientHello {
            sni: Some("example.com".into()),
            alpn: alpn.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn by_default_only_http_is_inspected() {
        let inspect = |found: InnerProtocol| found.default_action() == InnerAction::Inspect;
        assert!(inspect(InnerProtocol::Http));
        assert!(inspect(InnerProtocol::Tls(hello(&[]))));
        assert!(inspect(InnerProtocol::Tls(hello(&["h2", "http/1.1"]))));
        assert!(!inspect(InnerProtocol::Tls(hello(&["imap"]))));
        assert!(inspect(InnerProtocol::Quic(hello(&["h3"]))));
        assert!(!inspect(InnerProtocol::Quic(hello(&["doq"]))));
        assert!(!inspect(InnerProtocol::Unknown));
    }
}
