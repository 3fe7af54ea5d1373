//! The packet shape of traffic: a session of whole IP packets (a CONNECT-IP stream, a
//! TUN device) checked, tracked as flows, decided by the IP flow hook and sent on by
//! the IP off-ramp; replies and ICMP errors go back through [`ToClient`].

pub mod craft;
pub mod flows;
pub mod inspect;
mod metrics;
mod session;

pub use metrics::oxy_ip;
pub use session::{PacketSession, SessionEvent, SessionSetup};

use crate::offramp::happy_eyeballs::HappyEyeballsError;
use crate::offramp::tcp::ConnectError;
use crate::tunnel::TunnelRefused;
use bytes::Bytes;
use craft::IcmpError;
use inspect::PacketFacts;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

/// A packet that started a flow, kept to be quoted in an ICMP error if the flow is
/// refused.
#[derive(Debug, Clone)]
pub struct FirstPacket {
    /// The packet.
    pub packet: Bytes,
    /// What it says about itself.
    pub facts: PacketFacts,
}

/// Packets towards the client of a session: a bounded queue the carrier drains (HTTP
/// Datagrams, capsules, a TUN device). Sending never waits: a full queue or a packet
/// larger than the link drops the packet and counts it.
#[derive(Clone)]
pub struct ToClient {
    tx: mpsc::Sender<Bytes>,
    mtu: usize,
    endpoint: Arc<str>,
    /// `oxy_ip_packets_total` and `oxy_ip_bytes_total` towards the client, resolved once.
    metrics: [prometheus::IntCounter; 2],
    counts: Arc<DownCounts>,
    /// The flow's own counts, on a flow's copy ([`ToClient::for_flow`]).
    flow_counts: Option<Arc<DownCounts>>,
}

/// Packets and bytes sent towards the client.
#[derive(Debug, Default)]
pub struct DownCounts {
    /// Packets.
    pub packets: AtomicU64,
    /// Bytes.
    pub bytes: AtomicU64,
}

impl ToClient {
    /// A queue of `capacity` packets for a link of `mtu`, and its receiving end.
    pub fn new(capacity: usize, mtu: u16, endpoint: &str) -> (Self, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let to_client = Self {
            tx,
            mtu: usize::from(mtu),
            endpoint: endpoint.into(),
            metrics: [
                oxy_ip::packets_total(endpoint, "down"),
                oxy_ip::bytes_total(endpoint, "down"),
            ],
            counts: Arc::default(),
            flow_counts: None,
        };
        (to_client, rx)
    }

    /// Queues `packet`; an `Err` names why it was dropped (also counted).
    pub fn send(&self, packet: Bytes) -> Result<(), &'static str> {
        let len = packet.len();
        let result = if len > self.mtu {
            Err("too_large")
        } else {
            match self.tx.try_send(packet) {
                Ok(()) => Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => Err("queue_full"),
                Err(mpsc::error::TrySendError::Closed(_)) => Err("closed"),
            }
        };
        match result {
            Ok(()) => {
                for counts in std::iter::once(&self.counts).chain(&self.flow_counts) {
                    counts.packets.fetch_add(1, Ordering::Relaxed);
                    counts.bytes.fetch_add(len as u64, Ordering::Relaxed);
                }
                let [packets, bytes] = &self.metrics;
                packets.inc();
                bytes.inc_by(len as u64);
            }
            Err(reason) => oxy_ip::dropped_total(&self.endpoint, reason).inc(),
        }
        result
    }

    /// Sends an ICMP error of `kind` about `first` (nothing for an ICMP error or a
    /// fragment), and counts it.
    pub fn icmp_error(&self, first: &FirstPacket, kind: IcmpError) {
        let Some(error) = craft::icmp_error(&first.packet, &first.facts, kind) else {
            return;
        };
        if self.send(error.into()).is_ok() {
            oxy_ip::icmp_generated_total(&self.endpoint, kind.as_label()).inc();
        }
    }

    /// A copy for one flow that also counts what the flow sends, in the returned counts.
    pub fn for_flow(&self) -> (Self, Arc<DownCounts>) {
        let counts = Arc::new(DownCounts::default());
        let mut copy = self.clone();
        copy.flow_counts = Some(counts.clone());
        (copy, counts)
    }

    /// Whether `other` feeds the same client queue.
    pub fn same_queue(&self, other: &ToClient) -> bool {
        self.tx.same_channel(&other.tx)
    }

    /// What has been sent so far.
    pub fn counts(&self) -> &DownCounts {
        &self.counts
    }

    /// The link's MTU.
    pub fn mtu(&self) -> u16 {
        u16::try_from(self.mtu).unwrap_or(u16::MAX)
    }
}

/// The ICMP error that answers a flow whose off-ramp was refused: prohibited for a
/// policy, hook or tunnel-hook refusal, port unreachable for a refused UDP or TCP port
/// (`None` for TCP: the caller sends a reset), host unreachable otherwise.
pub fn icmp_for_refusal(refused: &TunnelRefused, tcp: bool) -> Option<IcmpError> {
    match refused {
        TunnelRefused::Connect(ConnectError::Denied(_) | ConnectError::DeniedByHook(_))
        | TunnelRefused::Blocked(_) => Some(IcmpError::Prohibited),
        TunnelRefused::Connect(ConnectError::Connect(HappyEyeballsError::AllFailed {
            source,
            ..
        })) if source.kind() == std::io::ErrorKind::ConnectionRefused => {
            (!tcp).then_some(IcmpError::PortUnreachable)
        }
        _ => Some(IcmpError::HostUnreachable),
    }
}
