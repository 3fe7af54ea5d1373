//! UDP flows, from a `udp` endpoint (one per client address) or from CONNECT-UDP: the
//! egress hook and policy, a connected off-ramp socket and the tunnel hook, then
//! datagrams both ways until the flow is idle, then the tunnel-end hook, metrics and the
//! audit record.

use crate::app::OxyExt;
use crate::drain::Drain;
use crate::endpoint::Endpoint;
use crate::hooks::{
    ConnectionEnd, EgressContext, IngressAction, IngressConnectionContext, InnerAction,
    InnerProtocol, Inspection, Target, Transport, TunnelContext, TunnelSummary,
};
use crate::http::inspect_quic::run as run_flow;
use crate::http::pipeline::Handler;
use crate::offramp::route::{EgressRoute, egress_route};
use crate::offramp::tcp::ConnectError;
use crate::offramp::udp;
use crate::services::Services;
use crate::telemetry::audit::{AuditStart, Traffic};
use crate::tunnel::datagram_buffer::DatagramBuffer;
use crate::tunnel::deadlines::{Deadlines, Expired};
use crate::tunnel::metrics::oxy_tunnel;
use crate::tunnel::start::{self, Refusal, Start, Timeouts, on_tunnel_start};
use crate::tunnel::{TunnelClient, TunnelRefused};
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Datagrams read from a target per wake-up at most, so that the flow's other work
/// (the client's datagrams, the deadlines, the drain) is not held off by a busy target.
const RECEIVE_BATCH: usize = 32;

/// UDP flow metrics.
#[crate::metrics]
pub mod oxy_udp {
    /// Datagrams dropped, by endpoint and reason (`queue_full`, `max_connections`,
    /// `refused`, `send_error`).
    pub fn dropped_total(endpoint: &str, reason: &str) -> Counter;

    /// Flows a UDP listener demultiplexes to now, by endpoint: at most the endpoint's
    /// `max_connections`, and back to 0 when they have ended.
    pub fn listener_flows(endpoint: &str) -> Gauge;
}

/// What a flow needs from its listener.
pub struct FlowStart<App: OxyExt> {
    /// The address datagrams come from and replies go to (a balancer, behind one).
    pub peer: SocketAddr,
    /// The original client a PROXY header named.
    pub original_client: Option<SocketAddr>,
    /// The PROXY header of the flow's first datagram, if any.
    pub proxy: Option<crate::onramp::proxy_protocol::ProxyFacts>,
    /// The listener's local address.
    pub local_addr: SocketAddr,
    /// The listener socket, to answer the client from.
    pub listener: Arc<UdpSocket>,
    /// Datagrams from the client, in order.
    pub from_client: mpsc::Receiver<Bytes>,
    /// The endpoint.
    pub endpoint: Arc<Endpoint<App>>,
    /// Process-unique id of this flow.
    pub id: u64,
}

/// Runs one flow to its end.
pub async fn run<App: OxyExt>(start: FlowStart<App>, services: Arc<Services<App>>, drain: Drain) {
    let FlowStart {
        peer: sender,
        original_client,
        proxy,
        local_addr,
        listener,
        mut from_client,
        endpoint,
        id,
    } = start;
    let name = endpoint.name().to_string();
    let metrics = endpoint.connection_metrics();
    metrics.accepted.inc();
    let active = metrics.active.clone();
    active.inc();
    let idle = endpoint.settings.udp.idle_timeout;
    let mut ingress = IngressConnectionContext {
        id,
        endpoint: endpoint.clone(),
        transport: Transport::Udp,
        peer_addr: sender,
        client_addr: original_client.unwrap_or(sender),
        proxy,
        local_addr,
        accepted_at: std::time::Instant::now(),
        tls: None,
        tls_policy: endpoint.settings.tls.policy,
        app: Default::default(),
        hold: None,
    };
    let end = 'flow: {
        if let Some(hook) = &services.hooks.ingress
            && let IngressAction::Reject(reason) = hook.on_connection(&mut ingress).await
        {
            discard(&mut from_client, idle, &drain, &name).await;
            break 'flow ConnectionEnd::Rejected(reason);
        }
        let target = endpoint.udp_target.clone();
        let client = TunnelClient {
            connection: ingress.connection(),
            peer_addr: sender,
            original_client,
            local_addr,
            proxy_user: None,
        };
        let opened = open(&services, &endpoint, &client, target, idle).await;
        let Ok(tunnel) = opened else {
            discard(&mut from_client, idle, &drain, &name).await;
            break 'flow ConnectionEnd::Closed;
        };
        let client = ClientSide::Socket {
            socket: listener,
            peer: sender,
        };
        let inspecting = tunnel
            .decapsulating()
            .then(|| Handler::for_connection(&ingress, &services, &drain))
            .flatten();
        let handler = inspecting.as_deref();
        let ended = run_flow(tunnel, &mut from_client, client, handler, &drain).await;
        match ended {
            "shutdown" => ConnectionEnd::Shutdown,
            _ => ConnectionEnd::Closed,
        }
    };

    crate::onramp::connection_ended(&mut ingress, end, &services).await;
    active.dec();
}

/// Swallows (and counts) a refused client's datagrams until it goes quiet, so a refused
/// client does not run the hooks again for every datagram.
async fn discard(
    from_client: &mut mpsc::Receiver<Bytes>,
    idle: Duration,
    drain: &Drain,
    endpoint: &str,
) {
    loop {
        tokio::select! {
            datagram = tokio::time::timeout(idle, from_client.recv()) => match datagram {
                Ok(Some(_)) => oxy_udp::dropped_total(endpoint, "refused").inc(),
                _ => return,
            },
            _ = drain.stopping() => return,
        }
    }
}

/// Where a flow's datagrams towards the client go when not to a UDP socket: HTTP
/// Datagrams on a QUIC connection, or capsules queued for a stream.
pub trait DatagramSink: Send {
    /// Sends (or queues) one datagram without waiting; an `Err` names why it was
    /// dropped (`queue_full`, `too_large`, `closed`), for the drop counter.
    fn send(&mut self, datagram: &[u8]) -> Result<(), &'static str>;

    /// The target's port refused a datagram (ICMP port unreachable reached the off-ramp
    /// socket). The default does nothing; an IP flow answers its client in kind.
    fn port_unreachable(&mut self) {}
}

/// The client side of a flow, for datagrams towards the client.
pub enum ClientSide {
    /// A UDP listener socket, answering `peer`.
    Socket {
        /// The listener socket.
        socket: Arc<UdpSocket>,
        /// Where replies go.
        peer: SocketAddr,
    },
    /// A datagram channel of an HTTP request (CONNECT-UDP).
    Sink(Box<dyn DatagramSink>),
}

impl ClientSide {
    /// Sends one datagram without waiting; an `Err` names why it was dropped.
    pub fn try_send(&mut self, datagram: &[u8]) -> Result<(), &'static str> {
        match self {
            ClientSide::Socket { socket, peer } => match socket.try_send_to(datagram, *peer) {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Err("queue_full"),
                Err(_) => Err("send_error"),
            },
            ClientSide::Sink(sink) => sink.send(datagram),
        }
    }

    /// The target's socket reported `e`: an IP flow's client hears of a refused port
    /// (ICMP port unreachable) in kind; the flow goes on.
    fn target_failed(&mut self, e: &std::io::Error) {
        tracing::debug!(error = %e, "receive from the target failed");
        if let (std::io::ErrorKind::ConnectionRefused, ClientSide::Sink(sink)) = (e.kind(), self) {
            sink.port_unreachable();
        }
    }

    async fn send(&mut self, datagram: &[u8]) -> Result<(), &'static str> {
        match self {
            ClientSide::Socket { socket, peer } => match socket.send_to(datagram, *peer).await {
                Ok(_) => Ok(()),
                Err(e) => {
                    tracing::debug!(error = %e, "datagram to the client not sent");
                    Err("send_error")
                }
            },
            ClientSide::Sink(sink) => sink.send(datagram),
        }
    }
}

/// A UDP flow whose off-ramp socket is connected, ready to pump.
pub struct UdpTunnel<App: OxyExt> {
    services: Arc<Services<App>>,
    cx: TunnelContext<App>,
    upstream: UdpSocket,
    /// A PROXY v2 header sent in front of every datagram (internal services).
    prefix: Option<Vec<u8>>,
    idle: Duration,
    max_lifetime: Option<Duration>,
    audit: AuditStart,
    /// Whether the tunnel hook asked to look inside ([`TunnelAction::Decapsulate`](crate::hooks::TunnelAction::Decapsulate)).
    decapsulate: bool,
    /// Datagrams from the client read while looking inside, sent first when pumping.
    unread: Vec<Bytes>,
}

/// Runs the egress hook and policy for `target`, connects the off-ramp socket and runs
/// the tunnel hook. A refusal is counted, logged and audited here. `idle` is the flow's
/// idle timeout unless the tunnel hook sets another.
pub async fn open<App: OxyExt>(
    services: &Arc<Services<App>>,
    endpoint: &Arc<Endpoint<App>>,
    client: &TunnelClient<App>,
    target: Option<Target>,
    idle: Duration,
) -> Result<UdpTunnel<App>, TunnelRefused> {
    let mut audit = AuditStart::now(endpoint.name(), "udp", client);
    let mut egress = EgressContext::new(endpoint, client, Transport::Udp, target);
    let route = egress_route(services, &mut egress).await;
    audit.label = egress.audit_label.clone();
    let refusal = Refusal {
        services,
        endpoint: endpoint.name(),
        audit: &audit,
        what: "UDP flow",
    };
    let (bind, prefix) = match route {
        Ok(EgressRoute::Direct { bind }) => (bind, None),
        Ok(EgressRoute::Internal(service)) => {
            let header = crate::offramp::proxy_header::v2_header(
                client.addr(),
                client.local_addr,
                true,
                &service.tlvs,
            );
            match header {
                Ok(header) => (None, Some(header)),
                Err(e) => {
                    let e = ConnectError::ProxyHeader(std::io::Error::other(e.to_string()));
                    return Err(refusal.refuse(egress.target.as_ref(), None, e.into()));
                }
            }
        }
        Ok(EgressRoute::Proxy(proxy)) => {
            let e = TunnelRefused::UdpViaProxy(proxy.address.to_string());
            return Err(refusal.refuse(egress.target.as_ref(), None, e));
        }
        Err(e) => return Err(refusal.refuse(egress.target.as_ref(), None, e.into())),
    };
    let Some(target) = egress.target.clone() else {
        return Err(refusal.refuse(None, None, ConnectError::NoTarget.into()));
    };
    let (mut upstream, peer) = match udp::connect(services, &target, bind, Some(&egress)).await {
        Ok(connected) => connected,
        Err(e) => return Err(refusal.refuse(Some(&target), None, e.into())),
    };
    let mut cx = TunnelContext::after_egress(&mut egress, target, peer);
    let mut timeouts = Timeouts {
        idle,
        max_lifetime: endpoint.settings.tunnel.max_lifetime,
    };
    let decapsulate = match on_tunnel_start(&mut cx, &mut timeouts, &refusal).await? {
        Start::Pump => false,
        Start::Decapsulate => true,
        // The bind address and PROXY prefix the egress hook chose stay, and
        // `on_resolved` sees the new target.
        Start::Redirect(target) => {
            let connect = async |target: &Target, egress: &EgressContext<App>| {
                udp::connect(services, target, bind, Some(egress)).await
            };
            upstream = start::redirect(&mut cx, &mut egress, target, &refusal, connect).await?;
            false
        }
    };
    Ok(UdpTunnel {
        services: services.clone(),
        cx,
        upstream,
        prefix,
        idle: timeouts.idle,
        max_lifetime: timeouts.lifetime_limit(),
        audit,
        decapsulate,
        unread: Vec::new(),
    })
}

impl<App: OxyExt> UdpTunnel<App> {
    /// The address the off-ramp socket is connected to.
    pub fn peer_addr(&self) -> SocketAddr {
        self.cx.peer_addr
    }

    /// Whether the tunnel hook asked Oxy to look inside ([`TunnelAction::Decapsulate`](crate::hooks::TunnelAction::Decapsulate)):
    /// the caller then hands the flow to `http::inspect_quic`.
    pub fn decapsulating(&self) -> bool {
        self.decapsulate
    }

    /// The target the flow reaches (after any redirect).
    pub fn target(&self) -> &Target {
        &self.cx.target
    }

    /// The tunnel's id, as in its audit record.
    pub fn id(&self) -> &str {
        self.audit.id()
    }

    /// The user the request that opened the flow was authenticated as.
    pub fn proxy_user(&self) -> Option<String> {
        self.cx.proxy_user.clone()
    }

    /// Asks the tunnel hook what to do with `found`, the client's first datagrams (the
    /// hook's default without one).
    pub async fn inner_action(&mut self, found: &InnerProtocol) -> InnerAction {
        match &self.services.hooks.tunnel {
            Some(hook) => hook.on_inner_protocol(&mut self.cx, found).await,
            None => InnerProtocol::default_action(found),
        }
    }

    /// Records how the contents are handled, for the summary and the audit record.
    pub fn set_inspection(&mut self, inspection: Inspection) {
        self.audit.inspection = inspection;
    }

    /// Datagrams already read from the client, sent to the target before the others.
    pub fn unread(&mut self, datagrams: Vec<Bytes>) {
        self.unread = datagrams;
    }

    /// Runs `session`, Oxy's HTTP/3 server on the client's datagrams, in place of
    /// pumping them; then runs the tunnel-end hook, counts and audits the flow with the
    /// client's traffic in `counts`.
    pub async fn serve_inside<T>(
        self,
        session: impl Future<Output = T>,
        counts: &crate::tunnel::counted::Counts,
    ) -> T {
        let name = self.cx.endpoint.name().to_string();
        let (ended, traffic) = start::serve_inside(&name, "udp", session, counts).await;
        self.finish(traffic, "decapsulated").await;
        ended
    }

    /// Ends a flow Oxy was asked to look inside but did not: the hook blocked it
    /// (`blocked`), or interception failed (`inspection_failed`). Counted and audited
    /// with `reason`.
    pub async fn end_unserved(mut self, label: &'static str, reason: &str) {
        if label == "blocked" {
            self.set_inspection(Inspection::Blocked);
        }
        tracing::info!(destination = %self.cx.target, %reason, "UDP flow ended");
        oxy_tunnel::ended_total(self.cx.endpoint.name(), label).inc();
        self.finish(Traffic::default(), reason).await;
    }

    /// Moves datagrams between the client and the target until the flow is idle, too
    /// old, the client side ends (`from_client` closes) or Oxy stops; then runs the
    /// tunnel-end hook, counts and audits the flow. Returns the close reason label.
    pub async fn pump(
        mut self,
        from_client: &mut mpsc::Receiver<Bytes>,
        client: ClientSide,
        drain: &Drain,
    ) -> &'static str {
        let name = self.cx.endpoint.name().to_string();
        let active = start::Active::start(&name, "udp");
        let (counts, reason) = self.exchange(from_client, client, drain, &name).await;
        drop(active);
        oxy_tunnel::bytes_total(&name, "up").inc_by(counts.bytes_up);
        oxy_tunnel::bytes_total(&name, "down").inc_by(counts.bytes_down);
        oxy_tunnel::ended_total(&name, reason).inc();
        let (target, peer) = (self.cx.target.to_string(), self.cx.peer_addr);
        tracing::info!(
            destination = %target,
            %peer,
            up = counts.bytes_up,
            down = counts.bytes_down,
            packets_up = counts.packets_up,
            packets_down = counts.packets_down,
            reason,
            "UDP flow closed"
        );
        self.finish(counts, reason).await;
        reason
    }

    /// Ends a flow whose client stream never came (the upgrade after the 2xx failed):
    /// runs the tunnel-end hook, counts and audits it as `upgrade_failed`.
    pub async fn upgrade_failed(self) {
        oxy_tunnel::ended_total(self.cx.endpoint.name(), "upgrade_failed").inc();
        self.finish(Traffic::default(), "upgrade_failed").await;
    }

    /// Runs the tunnel-end hook and writes the audit record of a flow that ended.
    async fn finish(mut self, counts: Traffic, reason: &str) {
        let summary = TunnelSummary {
            bytes_up: counts.bytes_up,
            bytes_down: counts.bytes_down,
            packets_up: counts.packets_up,
            packets_down: counts.packets_down,
            duration: self.audit.elapsed(),
            close_reason: reason.to_string(),
            inspection: self.audit.inspection,
        };
        if let Some(hook) = &self.services.hooks.tunnel {
            hook.on_tunnel_end(&mut self.cx, &summary).await;
        }
        let peer = self.cx.peer_addr;
        self.services.audit.write_with(|| {
            let target = self.cx.target.to_string();
            self.audit
                .record(target, Some(peer), counts, summary.close_reason)
        });
    }

    async fn exchange(
        &mut self,
        from_client: &mut mpsc::Receiver<Bytes>,
        mut client: ClientSide,
        drain: &Drain,
        endpoint: &str,
    ) -> (Traffic, &'static str) {
        let upstream = &self.upstream;
        let idle = self.idle;
        let mut counts = Traffic::default();
        // With a PROXY header, each datagram is sent as header + payload from one buffer.
        let header_len = self.prefix.as_ref().map_or(0, Vec::len);
        let mut framed = self.prefix.take().unwrap_or_default();
        // The deadlines' timer and the drain's signal are made once: a datagram only
        // moves `last_traffic`.
        let mut last_traffic = Instant::now();
        let deadlines = Deadlines::new(last_traffic, idle, self.max_lifetime);
        let stopping = drain.stopping();
        tokio::pin!(deadlines, stopping);
        for datagram in std::mem::take(&mut self.unread) {
            if send_up(upstream, &mut framed, header_len, &datagram)
                .await
                .is_ok()
            {
                counts.packets_up += 1;
                counts.bytes_up += datagram.len() as u64;
            }
        }
        loop {
            tokio::select! {
                datagram = from_client.recv() => {
                    let Some(datagram) = datagram else { return (counts, "completed") };
                    match send_up(upstream, &mut framed, header_len, &datagram).await {
                        Ok(_) => {
                            counts.packets_up += 1;
                            counts.bytes_up += datagram.len() as u64;
                            last_traffic = Instant::now();
                        }
                        Err(e) => {
                            oxy_udp::dropped_total(endpoint, "send_error").inc();
                            tracing::debug!(error = %e, "datagram to the target not sent");
                        }
                    }
                }
                ready = upstream.ready(RECEIVING) => {
                    let ready = match ready {
                        Ok(ready) => ready,
                        Err(e) => {
                            tracing::debug!(error = %e, "the target's socket failed");
                            return (counts, "error");
                        }
                    };
                    // ICMP errors (port unreachable) surface here; the flow goes on.
                    if ready.is_error() {
                        while let Ok(e) = take_error(upstream) {
                            client.target_failed(&e);
                        }
                    }
                    if !ready.is_readable() {
                        continue;
                    }
                    // What the socket has queued, a bounded batch per wake-up, in a buffer
                    // lent for the batch only.
                    let mut buf = DatagramBuffer::take();
                    for _ in 0..RECEIVE_BATCH {
                        let n = match upstream.try_recv(&mut buf) {
                            Ok(n) => n,
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(e) => {
                                client.target_failed(&e);
                                continue;
                            }
                        };
                        match client.send(&buf[..n]).await {
                            Ok(()) => {
                                counts.packets_down += 1;
                                counts.bytes_down += n as u64;
                                last_traffic = Instant::now();
                            }
                            Err(reason) => oxy_udp::dropped_total(endpoint, reason).inc(),
                        }
                    }
                },
                expired = std::future::poll_fn(|cx| {
                    deadlines.as_mut().poll_expired(cx, || last_traffic)
                }) => return (counts, match expired {
                    Expired::Idle => "idle_timeout",
                    Expired::Lifetime => "max_lifetime",
                }),
                () = &mut stopping => return (counts, "shutdown"),
            }
        }
    }
}

/// What a flow waits for on its off-ramp socket: a datagram, or an error (ICMP port
/// unreachable), as tokio's own `recv` does.
const RECEIVING: Interest = Interest::READABLE.add(Interest::ERROR);

/// The socket's pending error, which clears the error readiness once there is none
/// (`WouldBlock`).
fn take_error(upstream: &UdpSocket) -> std::io::Result<std::io::Error> {
    upstream.try_io(Interest::ERROR, || {
        upstream
            .take_error()?
            .ok_or_else(|| std::io::ErrorKind::WouldBlock.into())
    })
}

/// Sends `datagram` to the target, behind the PROXY header in `framed[..header_len]` if
/// there is one (one buffer, one send).
async fn send_up(
    upstream: &UdpSocket,
    framed: &mut Vec<u8>,
    header_len: usize,
    datagram: &[u8],
) -> std::io::Result<usize> {
    if header_len == 0 {
        return upstream.send(datagram).await;
    }
    framed.truncate(header_len);
    framed.extend_from_slice(datagram);
    upstream.send(framed).await
}
