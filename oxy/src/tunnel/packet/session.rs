//! One packet session: packets from the client are checked (source, scope, size, TTL),
//! matched to flows, decided by the IP flow hook once per flow, and handed to the
//! off-ramp; the session ends with its client, on shutdown, and leaves audit records.

use super::craft::IcmpError;
use super::flows::{Flow, FlowKey, FlowRoute, FlowTable};
use super::inspect::{decrement_ttl, inspect, is_group_address, protocol};
use super::{FirstPacket, ToClient, icmp_for_refusal, oxy_ip};
use crate::app::OxyExt;
use crate::drain::Drain;
use crate::endpoint::Endpoint;
use crate::hooks::{IpFlowAction, IpFlowContext, Target};
use crate::http::connect_ip::scope::Scope;
use crate::http::pipeline::Handler;
use crate::offramp::ip::tcp_stack::TcpStack;
use crate::offramp::ip::{echo, udp_flow::UdpFlow};
use crate::services::Services;
use crate::telemetry::audit::{AuditStart, FlowTuple, Traffic};
use crate::tunnel::TunnelClient;
use crate::tunnel::TunnelRefused;
use crate::tunnel::stream::TunnelStream;
use crate::tunnel::tcp::TcpTunnel;
use bytes::Bytes;
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::Instrument;

/// Most queued packets handled in one turn of a session's loop.
const BATCH: usize = 64;

/// How long an opened TCP tunnel waits for the stack to accept its connection (the
/// client's SYN could be lost to a full queue) before it is given up.
const TCP_ACCEPT_WAIT: Duration = Duration::from_secs(10);

/// How long the last segments of a closed TCP connection still reach the stack.
const TCP_CLOSING_GRACE: Duration = Duration::from_secs(10);

/// Packets a TCP flow keeps while its off-ramp opens: before the handshake a client
/// sends only its SYN and retransmissions of it, so a few are enough, and a client
/// cannot make Oxy hold more per flow.
const TCP_OPENING_QUEUE: usize = 4;

/// What a session is told while it runs.
pub enum SessionEvent<App: OxyExt> {
    /// The off-ramp of a TCP flow was opened, or refused.
    TcpOpened(FlowKey, Box<Result<TcpTunnel<App>, TunnelRefused>>),
    /// The off-ramp of a UDP flow was refused (its first packet was answered).
    UdpRefused(FlowKey, TunnelRefused),
    /// A TCP flow's tunnel ended.
    TcpClosed(FlowKey),
}

/// How a session is set up.
pub struct SessionSetup<App: OxyExt> {
    /// Shared services.
    pub services: Arc<Services<App>>,
    /// The endpoint.
    pub endpoint: Arc<Endpoint<App>>,
    /// Who the session is for.
    pub client: TunnelClient<App>,
    /// Serves HTTP found inside TCP flows the tunnel hook decapsulates.
    pub handler: Arc<Handler<App>>,
    /// Addresses the client may send from; `None` accepts any source (a TUN device).
    pub sources: Option<Vec<IpNet>>,
    /// Where the client may send.
    pub scope: Scope,
    /// Where packets towards the client go.
    pub to_client: ToClient,
    /// The protocol label of the session's audit record (`connect-ip`, `tun`).
    pub audit_protocol: &'static str,
}

/// A running packet session.
pub struct PacketSession<App: OxyExt> {
    setup: SessionSetup<App>,
    flows: FlowTable,
    app: App::IpTunnelContext,
    events: (
        mpsc::Sender<SessionEvent<App>>,
        mpsc::Receiver<SessionEvent<App>>,
    ),
    tcp: Option<TcpStack>,
    /// TCP tunnels opened, waiting (since when) for the stack to accept their connection.
    tcp_ready: HashMap<FlowKey, (TcpTunnel<App>, Instant)>,
    up: Traffic,
    /// `oxy_ip_packets_total` and `oxy_ip_bytes_total` from the client, resolved once.
    up_metrics: [prometheus::IntCounter; 2],
    /// Where a packet for the TUN off-ramp gets its TTL decremented, reused.
    forward_buf: Vec<u8>,
    audit: AuditStart,
}

impl<App: OxyExt> PacketSession<App> {
    /// A session that has not started.
    pub fn new(setup: SessionSetup<App>) -> Self {
        let ip = &setup.endpoint.settings.ip;
        let flows = FlowTable::new(ip.max_flows, ip.flow_idle_timeout);
        let audit = AuditStart::now(setup.endpoint.name(), setup.audit_protocol, &setup.client);
        Self {
            flows,
            app: App::IpTunnelContext::default(),
            events: mpsc::channel(ip.queue.max(1)),
            tcp: None,
            tcp_ready: HashMap::new(),
            up: Traffic::default(),
            up_metrics: [
                oxy_ip::packets_total(setup.endpoint.name(), "up"),
                oxy_ip::bytes_total(setup.endpoint.name(), "up"),
            ],
            forward_buf: Vec::new(),
            audit,
            setup,
        }
    }

    /// Runs until `from_client` ends, `client_gone` completes (the carrier cannot reach
    /// the client any more) or Oxy stops; then forgets every flow and writes the
    /// session's audit record for `target` (its scope). Returns the close reason.
    pub async fn run(
        mut self,
        mut from_client: mpsc::Receiver<Bytes>,
        client_gone: impl std::future::Future<Output = ()>,
        target: String,
        drain: &Drain,
    ) -> &'static str {
        let name = self.setup.endpoint.name().to_string();
        let sweep_every =
            (self.setup.endpoint.settings.ip.flow_idle_timeout / 2).max(Duration::from_millis(500));
        let mut sweep = tokio::time::interval(sweep_every);
        let stopping = drain.stopping();
        tokio::pin!(stopping);
        tokio::pin!(client_gone);
        let reason = loop {
            tokio::select! {
                packet = from_client.recv() => match packet {
                    Some(packet) => {
                        self.on_packet(packet, &name, drain).await;
                        // Packets already queued are handled without another turn of
                        // the loop (a bounded batch, so events and timers still run).
                        for _ in 0..BATCH {
                            let Ok(packet) = from_client.try_recv() else { break };
                            self.on_packet(packet, &name, drain).await;
                        }
                    }
                    None => break "completed",
                },
                Some(event) = self.events.1.recv() => self.on_event(event),
                Some((stream, client, destination)) = async {
                    match self.tcp.as_mut() {
                        Some(stack) => stack.accept().await,
                        None => std::future::pending().await,
                    }
                } => self.on_tcp_accepted(stream, client, destination, drain),
                _ = sweep.tick() => self.sweep(),
                _ = &mut stopping => break "shutdown",
                () = &mut client_gone => break "client_gone",
            }
        };
        for (key, flow) in self.flows.drain() {
            self.forget(key, flow, reason);
        }
        for (tunnel, _) in std::mem::take(&mut self.tcp_ready).into_values() {
            tunnel.upgrade_failed().await;
        }
        let counts = self.setup.to_client.counts();
        let traffic = Traffic {
            packets_down: counts.packets.load(Ordering::Relaxed),
            bytes_down: counts.bytes.load(Ordering::Relaxed),
            ..self.up
        };
        (self.setup.services.audit)
            .write_with(|| self.audit.record(target, None, traffic, reason.to_string()));
        reason
    }

    async fn on_packet(&mut self, packet: Bytes, endpoint: &str, drain: &Drain) {
        let count_drop = |reason: &'static str| oxy_ip::dropped_total(endpoint, reason).inc();
        let facts = match inspect(&packet) {
            Ok(facts) => facts,
            Err(e) => return count_drop(e.as_label()),
        };
        // Oxy routes neither multicast nor link-local traffic (a TUN device's own router
        // solicitations and MLD reports): dropped without a flow.
        if is_group_address(facts.destination) {
            return count_drop("multicast");
        }
        if matches!(facts.source, std::net::IpAddr::V6(v6) if v6.is_unicast_link_local()) {
            return count_drop("link_local");
        }
        if let Some(sources) = &self.setup.sources
            && !sources.iter().any(|net| net.contains(&facts.source))
        {
            return count_drop("spoofed_source");
        }
        let [packets, bytes] = &self.up_metrics;
        packets.inc();
        bytes.inc_by(packet.len() as u64);
        self.up.packets_up += 1;
        self.up.bytes_up += packet.len() as u64;
        let first = || FirstPacket {
            packet: packet.clone(),
            facts: facts.clone(),
        };
        let to_client = &self.setup.to_client;
        let refusal = if packet.len() > usize::from(to_client.mtu()) {
            let mtu = to_client.mtu();
            Some(("too_large", IcmpError::PacketTooBig { mtu }))
        } else if !self.setup.scope.allows(facts.destination, facts.protocol) {
            Some(("out_of_scope", IcmpError::Prohibited))
        } else if facts.ttl <= 1 {
            Some(("ttl_expired", IcmpError::TimeExceeded))
        } else {
            None
        };
        if let Some((reason, kind)) = refusal {
            count_drop(reason);
            return to_client.icmp_error(&first(), kind);
        }
        if facts.fragment {
            return count_drop("fragment");
        }
        let key = FlowKey::of(&facts);
        if self.flows.get_mut(&key).is_none() {
            // A segment of no connection the user-space stack knows (one that ended).
            // Through a TUN off-ramp the connection lives in the hosts at both ends, so a
            // segment after a quiet spell starts a flow again.
            let tun = self.setup.endpoint.tun_offramp.is_some();
            if facts.protocol == protocol::TCP && !facts.tcp_syn && !tun {
                answer_refused(to_client, &first(), None);
                return count_drop("unknown_connection");
            }
            if !self.flows.has_room() {
                return count_drop("too_many_flows");
            }
            let flow = self.new_flow(&key, first(), drain).await;
            self.flows.insert(key, flow);
        }
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        flow.last_seen = Instant::now();
        flow.traffic.packets_up += 1;
        flow.traffic.bytes_up += packet.len() as u64;
        let dropped = match &mut flow.route {
            FlowRoute::Dropped(reason) => Some(*reason),
            FlowRoute::Udp(tx) => tx
                .try_send(packet.slice(facts.payload.clone()))
                .err()
                .map(|e| match e {
                    mpsc::error::TrySendError::Full(_) => "queue_full",
                    mpsc::error::TrySendError::Closed(_) => "flow_closed",
                }),
            // A SYN again (a retransmission) would make the stack open another socket.
            FlowRoute::Tcp | FlowRoute::TcpOpening(..) if facts.tcp_syn => Some("syn_again"),
            FlowRoute::TcpOpening(_, queued) => {
                if queued.len() < TCP_OPENING_QUEUE {
                    queued.push(packet);
                    None
                } else {
                    Some("queue_full")
                }
            }
            FlowRoute::Tcp | FlowRoute::TcpClosing(_) => match &self.tcp {
                Some(stack) => stack.input(&packet).err(),
                None => Some("no_stack"),
            },
            FlowRoute::Refused(kind) => {
                answer_refused(&self.setup.to_client, &first(), *kind);
                Some("refused")
            }
            FlowRoute::Echo(tx) => match facts.echo_request {
                Some((_, seq)) => tx
                    .try_send((seq, packet.slice(facts.payload.clone())))
                    .err()
                    .map(|_| "queue_full"),
                None => Some("not_echo"),
            },
            FlowRoute::Tun => {
                let forwarded = &mut self.forward_buf;
                forwarded.clear();
                forwarded.extend_from_slice(&packet);
                match &self.setup.endpoint.tun_offramp {
                    Some(tun) if decrement_ttl(forwarded) => tun.send(forwarded).err(),
                    _ => Some("no_tun"),
                }
            }
        };
        if let Some(reason) = dropped {
            count_drop(reason);
        }
    }

    /// Runs the IP flow hook for a new flow and starts its off-ramp.
    async fn new_flow(&mut self, key: &FlowKey, first: FirstPacket, drain: &Drain) -> Flow {
        let setup = &self.setup;
        let endpoint = setup.endpoint.name();
        let facts = &first.facts;
        let action = match &setup.services.hooks.ip_flow {
            Some(hook) => {
                let mut cx = IpFlowContext {
                    endpoint: setup.endpoint.clone(),
                    client_addr: setup.client.addr(),
                    proxy_user: setup.client.proxy_user.clone(),
                    protocol: facts.protocol,
                    source: facts.source,
                    destination: facts.destination,
                    source_port: facts.source_port,
                    destination_port: facts.destination_port,
                    app: std::mem::take(&mut self.app),
                };
                let action = hook.on_flow(&mut cx).await;
                self.app = cx.app;
                action
            }
            None => IpFlowAction::Forward,
        };
        let protocol_label = protocol_label(facts.protocol);
        let action_label = match &action {
            IpFlowAction::Forward => "forward",
            IpFlowAction::Drop(_) => "drop",
            IpFlowAction::UpgradeToUdp => "upgrade_to_udp",
            IpFlowAction::UpgradeToTcp => "upgrade_to_tcp",
        };
        oxy_ip::flows_total(endpoint, protocol_label, action_label).inc();
        let mut audit = AuditStart::now(endpoint, "ip", &setup.client);
        audit.flow = Some(FlowTuple {
            protocol: facts.protocol,
            source: key.source_addr().to_string(),
            destination: key.destination_addr().to_string(),
        });
        let (to_client, down) = setup.to_client.for_flow();
        let mut refusal = None;
        let to_tun = action == IpFlowAction::Forward && setup.endpoint.tun_offramp.is_some();
        let route = match action {
            IpFlowAction::Drop(reason) => {
                tracing::info!(%reason, source = %key.source_addr(), destination = %key.destination_addr(), protocol = facts.protocol, "IP flow dropped by the hook");
                FlowRoute::Dropped("hook")
            }
            IpFlowAction::UpgradeToUdp if facts.protocol != protocol::UDP => {
                FlowRoute::Dropped("upgrade_mismatch")
            }
            IpFlowAction::UpgradeToTcp if facts.protocol != protocol::TCP => {
                FlowRoute::Dropped("upgrade_mismatch")
            }
            IpFlowAction::Forward | IpFlowAction::UpgradeToUdp | IpFlowAction::UpgradeToTcp => {
                // Flows that do not become UDP or TCP tunnels (which apply the egress hook
                // and policy) still answer to the egress policy, once per flow: packets
                // written to the TUN device as they are, and ICMP echo.
                let checked = if to_tun || facts.echo_request.is_some() {
                    let policy = &setup.services.policy;
                    match (facts.protocol, facts.destination_port) {
                        (protocol::TCP | protocol::UDP, Some(_)) => {
                            policy.check(key.destination_addr())
                        }
                        _ => policy.check_ip(key.destination),
                    }
                } else {
                    Ok(())
                };
                match checked {
                    Err(denied) => {
                        tracing::info!(destination = %key.destination_addr(), reason = %denied, "IP flow refused");
                        to_client.icmp_error(&first, IcmpError::Prohibited);
                        refusal = Some(format!("egress denied: {denied}"));
                        FlowRoute::Refused(Some(IcmpError::Prohibited))
                    }
                    Ok(()) if to_tun => FlowRoute::Tun,
                    Ok(()) => self.terminate(key, first, to_client, drain),
                }
            }
        };
        Flow {
            route,
            down,
            traffic: Traffic::default(),
            last_seen: Instant::now(),
            audit,
            action: action_label,
            refusal,
        }
    }

    /// Terminates a flow in Oxy by its protocol (the user-space off-ramp).
    fn terminate(
        &mut self,
        key: &FlowKey,
        first: FirstPacket,
        to_client: ToClient,
        drain: &Drain,
    ) -> FlowRoute {
        let setup = &self.setup;
        let ip = &setup.endpoint.settings.ip;
        match key.protocol {
            protocol::UDP => {
                let flow = UdpFlow {
                    services: setup.services.clone(),
                    endpoint: setup.endpoint.clone(),
                    handler: setup.handler.clone(),
                    client: self.flow_client(key),
                    key: *key,
                    first,
                    to_client,
                    idle: ip.flow_idle_timeout,
                    events: self.events.0.clone(),
                };
                FlowRoute::Udp(flow.start(ip.queue, drain))
            }
            protocol::TCP if first.facts.tcp_syn => {
                let tcp = |route: &FlowRoute| {
                    matches!(
                        route,
                        FlowRoute::Tcp | FlowRoute::TcpOpening(..) | FlowRoute::TcpClosing(_)
                    )
                };
                if self.flows.count(tcp) >= ip.max_tcp_flows {
                    answer_refused(&to_client, &first, None);
                    return FlowRoute::Dropped("too_many_tcp_flows");
                }
                self.open_tcp(key, first, drain)
            }
            // A connection cannot be taken over in the middle (a TUN off-ramp session's
            // flow hook chose to terminate it).
            protocol::TCP => {
                answer_refused(&to_client, &first, None);
                FlowRoute::Dropped("unknown_connection")
            }
            protocol::ICMP | protocol::ICMPV6
                if first.facts.echo_request.is_some()
                    && self.flows.count(|r| matches!(r, FlowRoute::Echo(_)))
                        >= ip.max_echo_flows =>
            {
                FlowRoute::Dropped("too_many_echo_flows")
            }
            protocol::ICMP | protocol::ICMPV6 if first.facts.echo_request.is_some() => {
                let idle = ip.flow_idle_timeout;
                let queue = ip.queue;
                FlowRoute::Echo(echo::start(*key, first, to_client, idle, queue, drain))
            }
            protocol::ICMP | protocol::ICMPV6 => FlowRoute::Dropped("icmp_not_echo"),
            _ => {
                setup
                    .to_client
                    .icmp_error(&first, IcmpError::ProtocolUnreachable);
                FlowRoute::Dropped("unsupported_protocol")
            }
        }
    }

    /// Opens the TCP tunnel of a new connection before the stack answers its SYN, so a
    /// refused destination gets an ICMP error or a reset rather than a handshake.
    /// The stack's packets towards the client are counted for the session only.
    fn open_tcp(&mut self, key: &FlowKey, first: FirstPacket, drain: &Drain) -> FlowRoute {
        let setup = &self.setup;
        if self.tcp.is_none() {
            let ip = &setup.endpoint.settings.ip;
            match TcpStack::new(setup.to_client.mtu(), setup.to_client.clone(), ip.queue) {
                Ok(stack) => self.tcp = Some(stack),
                Err(e) => {
                    tracing::warn!(error = %e, "user-space TCP stack not started");
                    setup
                        .to_client
                        .icmp_error(&first, IcmpError::HostUnreachable);
                    return FlowRoute::Dropped("no_stack");
                }
            }
        }
        let (services, endpoint) = (setup.services.clone(), setup.endpoint.clone());
        let client = self.flow_client(key);
        let events = self.events.0.clone();
        let (key, task_drain) = (*key, drain.clone());
        drain.spawn_connection(
            async move {
                let target = Target::from(key.destination_addr());
                let opened = crate::tunnel::tcp::open(
                    &services,
                    &endpoint,
                    &client,
                    Some(target),
                    &task_drain,
                )
                .await;
                let _ = events
                    .send(SessionEvent::TcpOpened(key, Box::new(opened)))
                    .await;
            }
            .in_current_span(),
        );
        FlowRoute::TcpOpening(first, Vec::new())
    }

    fn on_event(&mut self, event: SessionEvent<App>) {
        match event {
            SessionEvent::TcpOpened(key, opened) => {
                let Some(flow) = self.flows.get_mut(&key) else {
                    return;
                };
                if !matches!(flow.route, FlowRoute::TcpOpening(..)) {
                    return;
                }
                let opening = std::mem::replace(&mut flow.route, FlowRoute::Tcp);
                let FlowRoute::TcpOpening(syn, queued) = opening else {
                    return;
                };
                match *opened {
                    Ok(tunnel) => {
                        self.tcp_ready.insert(key, (tunnel, Instant::now()));
                        if let Some(stack) = &self.tcp {
                            for packet in std::iter::once(&syn.packet).chain(&queued) {
                                if let Err(reason) = stack.input(packet) {
                                    let endpoint = self.setup.endpoint.name();
                                    oxy_ip::dropped_total(endpoint, reason).inc();
                                }
                            }
                        }
                    }
                    Err(refused) => {
                        let kind = icmp_for_refusal(&refused, true);
                        flow.route = FlowRoute::Refused(kind);
                        flow.refusal = Some(refused.to_string());
                        answer_refused(&self.setup.to_client, &syn, kind);
                    }
                }
            }
            SessionEvent::UdpRefused(key, refused) => {
                if let Some(flow) = self.flows.get_mut(&key) {
                    flow.route = FlowRoute::Refused(icmp_for_refusal(&refused, false));
                    flow.refusal = Some(refused.to_string());
                }
            }
            SessionEvent::TcpClosed(key) => {
                if let Some(flow) = self.flows.get_mut(&key) {
                    flow.route = FlowRoute::TcpClosing(Instant::now() + TCP_CLOSING_GRACE);
                }
            }
        }
    }

    /// Pumps (or decapsulates) a connection the stack accepted through its tunnel.
    fn on_tcp_accepted(
        &mut self,
        stream: crate::offramp::ip::tcp_stack::StackStream,
        client: SocketAddr,
        destination: SocketAddr,
        drain: &Drain,
    ) {
        let key = FlowKey {
            protocol: protocol::TCP,
            source: client.ip(),
            destination: destination.ip(),
            source_port: client.port(),
            destination_port: destination.port(),
        };
        let Some((tunnel, _)) = self.tcp_ready.remove(&key) else {
            // The stack saw a SYN this session did not let through: nothing to pump.
            return;
        };
        let stream = TunnelStream::Boxed(Box::new(stream));
        let inspecting = tunnel.decapsulating().then(|| {
            let client = self.flow_client(&key);
            self.setup.handler.for_client(&client)
        });
        let events = self.events.0.clone();
        let task_drain = drain.clone();
        drain.spawn_connection(
            async move {
                match inspecting {
                    Some(handler) => {
                        crate::http::inspect::serve(tunnel, stream, &handler, &task_drain).await;
                    }
                    None => {
                        tunnel.pump(stream, &task_drain).await;
                    }
                }
                let _ = events.send(SessionEvent::TcpClosed(key)).await;
            }
            .in_current_span(),
        );
    }

    /// Forgets the flows that ended, and gives up TCP tunnels the stack never accepted.
    fn sweep(&mut self) {
        let now = Instant::now();
        for (key, flow) in self.flows.expire(now) {
            // A UDP flow ends with its tunnel, which ends when idle both ways.
            let reason = match flow.route {
                FlowRoute::TcpClosing(_) => "closed",
                _ => "idle_timeout",
            };
            self.forget(key, flow, reason);
        }
        let stale: Vec<FlowKey> = self
            .tcp_ready
            .iter()
            .filter(|(_, (_, since))| now.duration_since(*since) > TCP_ACCEPT_WAIT)
            .map(|(key, _)| *key)
            .collect();
        for key in stale {
            if let Some((tunnel, _)) = self.tcp_ready.remove(&key) {
                tokio::spawn(tunnel.upgrade_failed());
            }
            if let Some(flow) = self.flows.remove(&key) {
                self.forget(key, flow, "not_accepted");
            }
        }
    }

    /// Who a flow is for: the session's client behind CONNECT-IP; on a TUN device, the
    /// flow's own source (and its destination as the local address).
    fn flow_client(&self, key: &FlowKey) -> TunnelClient<App> {
        match self.setup.sources {
            Some(_) => self.setup.client.clone(),
            None => TunnelClient {
                connection: self.setup.client.connection.clone(),
                peer_addr: key.source_addr(),
                original_client: None,
                local_addr: key.destination_addr(),
                proxy_user: None,
            },
        }
    }

    /// Writes the audit record of a flow that ended.
    fn forget(&self, key: FlowKey, flow: Flow, reason: &str) {
        let traffic = Traffic {
            packets_down: flow.down.packets.load(Ordering::Relaxed),
            bytes_down: flow.down.bytes.load(Ordering::Relaxed),
            ..flow.traffic
        };
        (self.setup.services.audit).write_with(|| {
            let close = match &flow.refusal {
                Some(refusal) => format!("{}: refused: {refusal}", flow.action),
                None => format!("{}: {reason}", flow.action),
            };
            let target = key.destination_addr().to_string();
            flow.audit.record(target, None, traffic, close)
        });
    }
}

/// Answers a packet of a refused flow: the ICMP error, or (TCP) a reset.
fn answer_refused(to_client: &ToClient, packet: &FirstPacket, kind: Option<IcmpError>) {
    match kind {
        Some(kind) => to_client.icmp_error(packet, kind),
        None => {
            if let Some(reset) = super::craft::tcp_reset(&packet.packet, &packet.facts) {
                let _ = to_client.send(reset.into());
            }
        }
    }
}

/// The metric label of an IP protocol.
fn protocol_label(protocol: u8) -> &'static str {
    match protocol {
        protocol::TCP => "tcp",
        protocol::UDP => "udp",
        protocol::ICMP => "icmp",
        protocol::ICMPV6 => "icmpv6",
        _ => "other",
    }
}
