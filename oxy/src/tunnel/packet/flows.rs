//! The flow table of one packet session: flows keyed by 5-tuple (ICMP echo by
//! identifier), bounded, forgotten when idle.

use super::inspect::PacketFacts;
use crate::telemetry::audit::{AuditStart, Traffic};
use bytes::Bytes;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What identifies a flow: protocol, addresses and ports (for ICMP echo, the
/// identifier stands in the source port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// IP protocol number.
    pub protocol: u8,
    /// The client-side address.
    pub source: IpAddr,
    /// The destination address.
    pub destination: IpAddr,
    /// UDP/TCP source port, or ICMP echo identifier.
    pub source_port: u16,
    /// UDP/TCP destination port.
    pub destination_port: u16,
}

impl FlowKey {
    /// The key of the flow `facts` belongs to.
    pub fn of(facts: &PacketFacts) -> Self {
        let echo_id = facts.echo_request.map(|(id, _)| id);
        Self {
            protocol: facts.protocol,
            source: facts.source,
            destination: facts.destination,
            source_port: facts.source_port.or(echo_id).unwrap_or(0),
            destination_port: facts.destination_port.unwrap_or(0),
        }
    }

    /// The client side as a socket address.
    pub fn source_addr(&self) -> SocketAddr {
        SocketAddr::new(self.source, self.source_port)
    }

    /// The destination as a socket address.
    pub fn destination_addr(&self) -> SocketAddr {
        SocketAddr::new(self.destination, self.destination_port)
    }
}

/// Where a flow's packets go.
pub enum FlowRoute {
    /// Dropped (by the hook, or an upgrade that does not fit the protocol).
    Dropped(&'static str),
    /// UDP payloads to a UDP tunnel's pump.
    Udp(mpsc::Sender<Bytes>),
    /// A TCP connection whose off-ramp is being opened: its SYN, and the segments after
    /// it, wait here.
    TcpOpening(super::FirstPacket, Vec<Bytes>),
    /// A TCP connection in the user-space stack.
    Tcp,
    /// A TCP connection whose tunnel ended: its last segments (FIN, ACK) still reach the
    /// stack until this instant, so the stack's socket closes cleanly.
    TcpClosing(Instant),
    /// A flow whose off-ramp was refused: each packet is answered with this ICMP error,
    /// or (TCP) a reset when `None`.
    Refused(Option<super::craft::IcmpError>),
    /// ICMP echo requests (sequence number, data) to an echo socket.
    Echo(mpsc::Sender<(u16, Bytes)>),
    /// Packets written to the TUN off-ramp as they are.
    Tun,
}

/// One flow.
pub struct Flow {
    /// Where its packets go.
    pub route: FlowRoute,
    /// Packets and bytes from the client (the `down` fields are in `down`).
    pub traffic: Traffic,
    /// Packets and bytes sent towards the client for this flow.
    pub down: std::sync::Arc<super::DownCounts>,
    /// When the last packet was seen.
    pub last_seen: Instant,
    /// Its audit record, written when the flow is forgotten.
    pub audit: AuditStart,
    /// The action the hook chose, for the audit record.
    pub action: &'static str,
    /// Why the off-ramp refused the flow, for the audit record.
    pub refusal: Option<String>,
}

/// The flows of one session.
pub struct FlowTable {
    flows: HashMap<FlowKey, Flow>,
    max: usize,
    idle: Duration,
}

impl FlowTable {
    /// A table of at most `max` flows, each forgotten after `idle` without a packet.
    pub fn new(max: usize, idle: Duration) -> Self {
        Self {
            flows: HashMap::new(),
            max,
            idle,
        }
    }

    /// The flow of `key`, if it is tracked.
    pub fn get_mut(&mut self, key: &FlowKey) -> Option<&mut Flow> {
        self.flows.get_mut(key)
    }

    /// How many flows have a route that `kind` picks.
    pub fn count(&self, kind: impl Fn(&FlowRoute) -> bool) -> usize {
        self.flows.values().filter(|flow| kind(&flow.route)).count()
    }

    /// Whether another flow fits.
    pub fn has_room(&self) -> bool {
        self.flows.len() < self.max
    }

    /// Starts tracking a flow.
    pub fn insert(&mut self, key: FlowKey, flow: Flow) {
        self.flows.insert(key, flow);
    }

    /// Stops tracking a flow.
    pub fn remove(&mut self, key: &FlowKey) -> Option<Flow> {
        self.flows.remove(key)
    }

    /// Removes the flows that ended: idle for longer than the table's idle time, a UDP
    /// flow whose tunnel ended (the tunnel's own idle timeout counts both directions),
    /// a closed TCP connection after its grace period. TCP connections in the stack end
    /// with their tunnel instead.
    pub fn expire(&mut self, now: Instant) -> Vec<(FlowKey, Flow)> {
        let idle = self.idle;
        let expired: Vec<FlowKey> = self
            .flows
            .iter()
            .filter(|(_, flow)| match &flow.route {
                FlowRoute::Tcp | FlowRoute::TcpOpening(..) => false,
                FlowRoute::TcpClosing(until) => now > *until,
                FlowRoute::Udp(tx) => tx.is_closed(),
                _ => now.duration_since(flow.last_seen) > idle,
            })
            .map(|(key, _)| *key)
            .collect();
        expired
            .into_iter()
            .filter_map(|key| self.flows.remove(&key).map(|flow| (key, flow)))
            .collect()
    }

    /// Removes every flow (the session ended).
    pub fn drain(&mut self) -> Vec<(FlowKey, Flow)> {
        self.flows.drain().collect()
    }
}
