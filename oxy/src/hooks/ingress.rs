//! [`IngressHook`]: the first look at every accepted connection.

use crate::app::OxyExt;
use crate::endpoint::Endpoint;
use crate::onramp::proxy_protocol::ProxyFacts;
use crate::tls::TlsFacts;
use async_trait::async_trait;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The transport a connection arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A TCP connection.
    Tcp,
    /// A UDP flow.
    Udp,
    /// A QUIC connection (HTTP/3).
    Quic,
    /// A TUN device (`protocol: tun` endpoints).
    Tun,
}

/// Facts about an accepted connection, and the application's state for it.
pub struct IngressConnectionContext<App: OxyExt> {
    /// Process-unique connection id, also in the connection's log span.
    pub id: u64,
    /// The endpoint that accepted the connection.
    pub endpoint: Arc<Endpoint<App>>,
    /// TCP, UDP or QUIC.
    pub transport: Transport,
    /// The peer's address as the socket sees it (the load balancer, behind one).
    pub peer_addr: SocketAddr,
    /// The client: the original client a trusted PROXY header named, else `peer_addr`.
    /// Hooks, logs, the audit trail and `X-Forwarded-For` use this one.
    pub client_addr: SocketAddr,
    /// What the PROXY header said, when the connection had one.
    pub proxy: Option<ProxyFacts>,
    /// The local address the connection arrived on.
    pub local_addr: SocketAddr,
    /// When the connection was accepted.
    pub accepted_at: Instant,
    /// The TLS handshake's facts, once it has completed on a TLS endpoint.
    pub tls: Option<Arc<TlsFacts>>,
    /// The compliance policy the connection's TLS is held to: `tls.policy` at first.
    /// On TCP the ingress hook runs before the handshake and may choose another for
    /// this connection (a FIPS-only address, a client network); on QUIC the handshake
    /// is done by then and the endpoint's policy applies.
    pub tls_policy: crate::settings::TlsPolicy,
    /// The application's state for this connection, which the ingress hook sets
    /// (`cx.app = Arc::new(state)`). The request, egress and tunnel contexts of the
    /// connection share it as `cx.connection.app`; write to it later through interior
    /// mutability (a `Mutex` or atomics inside the type).
    pub app: Arc<App::IngressConnectionContext>,
    /// The connection's slot under `limits.max_connections` and its place among the
    /// per-thread runtimes; tunnels and upgrades that outlive the connection's task keep
    /// a clone, so they stay counted.
    pub(crate) hold: Option<Arc<crate::onramp::ConnectionHold>>,
}

impl<App: OxyExt> IngressConnectionContext<App> {
    /// The connection as the contexts of its requests, egress decisions and tunnels see
    /// it.
    pub fn connection(&self) -> Connection<App> {
        Connection {
            id: self.id,
            app: self.app.clone(),
        }
    }
}

/// The connection a request, an egress decision or a tunnel came on, as their hooks see
/// it (`cx.connection` in [`RequestContext`](crate::hooks::RequestContext),
/// [`EgressContext`](crate::hooks::EgressContext) and
/// [`TunnelContext`](crate::hooks::TunnelContext)).
pub struct Connection<App: OxyExt> {
    /// The connection's id ([`IngressConnectionContext::id`], in its log lines).
    pub id: u64,
    /// The state the ingress hook left in [`IngressConnectionContext::app`].
    pub app: Arc<App::IngressConnectionContext>,
}

impl<App: OxyExt> Clone for Connection<App> {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            app: self.app.clone(),
        }
    }
}

impl<App: OxyExt> std::fmt::Debug for Connection<App> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// What to do with a new connection (or a new flow of a `udp` endpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngressAction {
    /// Serve the connection as the endpoint is configured to.
    Continue,
    /// Close the connection at once. The reason is logged, never sent: the connection is
    /// counted in `oxy_connections_rejected_total{reason="ingress_hook"}` and
    /// `oxy_connections_closed_total{reason="rejected"}`, and
    /// [`IngressHook::on_connection_end`] sees [`ConnectionEnd::Rejected`].
    ///
    /// The client sees: on TCP, the connection closed with nothing written, before any
    /// TLS handshake; on QUIC, the connection closed with the code H3_NO_ERROR and the
    /// reason `rejected`; on a `udp` endpoint, no answer: the flow drops its datagrams
    /// (`oxy_udp_dropped_total{reason="refused"}`) until the client has been quiet for
    /// `udp.idle_timeout`, and only then ends.
    Reject(String),
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionEnd {
    /// The connection was served and closed normally.
    Closed,
    /// The ingress hook rejected it, with this reason.
    Rejected(String),
    /// Oxy was shutting down and the drain period ran out.
    Shutdown,
    /// The TLS handshake failed, with this reason. (On QUIC a failed handshake is no
    /// connection: it is counted in `oxy_tls_handshake_failures_total` only.)
    HandshakeFailed(String),
    /// The PROXY header was missing, malformed or untrusted, with this reason.
    ProxyHeaderRefused(String),
    /// A hook or handler panicked; the panic was reported.
    Panicked,
    /// An HTTP/2 connection had no open stream for `limits.h2_idle_timeout` and was
    /// closed with GOAWAY, or an HTTP/1.1 connection had no request for
    /// `limits.header_read_timeout` (idle between two, or a head still arriving) and was
    /// closed.
    IdleTimeout,
}

impl ConnectionEnd {
    /// Each kind's label, by [`Self::kind`].
    const LABELS: [&'static str; 7] = [
        "closed",
        "rejected",
        "shutdown",
        "handshake_failed",
        "proxy_header_refused",
        "panic",
        "idle_timeout",
    ];

    /// How many kinds of end there are (see [`Self::kind`]).
    pub(crate) const KINDS: usize = Self::LABELS.len();

    /// The end's kind, below [`Self::KINDS`]: one per label.
    pub(crate) fn kind(&self) -> usize {
        match self {
            ConnectionEnd::Closed => 0,
            ConnectionEnd::Rejected(_) => 1,
            ConnectionEnd::Shutdown => 2,
            ConnectionEnd::HandshakeFailed(_) => 3,
            ConnectionEnd::ProxyHeaderRefused(_) => 4,
            ConnectionEnd::Panicked => 5,
            ConnectionEnd::IdleTimeout => 6,
        }
    }

    /// Why the connection ended, as a metric label.
    pub fn as_label(&self) -> &'static str {
        Self::LABELS[self.kind()]
    }
}

/// What is known about a connection once it has ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionSummary {
    /// How long the connection lived.
    pub duration: Duration,
    /// Why it ended.
    pub end: ConnectionEnd,
}

/// Runs on every connection an endpoint accepts.
#[async_trait]
pub trait IngressHook<App: OxyExt>: Send + Sync + 'static {
    /// Runs once per accepted connection, before any of its requests or tunnels: on TCP
    /// after the PROXY header (when the endpoint reads one, so `cx.client_addr` is the
    /// original client) and before TLS (`cx.tls` is `None`); on QUIC after the
    /// handshake (`cx.tls` is set); on UDP when a client's first datagram opens its flow.
    /// What it leaves in `cx.app` is the connection's state, which the request, egress
    /// and tunnel contexts of the connection reach. The default returns
    /// [`IngressAction::Continue`].
    async fn on_connection(&self, cx: &mut IngressConnectionContext<App>) -> IngressAction {
        let _ = cx;
        IngressAction::Continue
    }

    /// Runs once when a connection has ended, however it ended (except when the process
    /// is killed). The default does nothing.
    async fn on_connection_end(
        &self,
        cx: &mut IngressConnectionContext<App>,
        summary: &ConnectionSummary,
    ) {
        let _ = (cx, summary);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_connection_end_has_a_kind_of_its_own() {
        let ends = [
            ConnectionEnd::Closed,
            ConnectionEnd::Rejected("no".into()),
            ConnectionEnd::Shutdown,
            ConnectionEnd::HandshakeFailed("bad".into()),
            ConnectionEnd::ProxyHeaderRefused("bad".into()),
            ConnectionEnd::Panicked,
            ConnectionEnd::IdleTimeout,
        ];
        let mut kinds: Vec<usize> = ends.iter().map(ConnectionEnd::kind).collect();
        kinds.sort();
        kinds.dedup();
        assert_eq!(kinds, (0..ConnectionEnd::KINDS).collect::<Vec<_>>());
    }
}
