//! [`IpFlowHook`]: decides what happens to IP flows from CONNECT-IP and TUN devices.

use crate::app::OxyExt;
use crate::endpoint::Endpoint;
use async_trait::async_trait;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Facts about a new IP flow (the first packet of a 5-tuple).
pub struct IpFlowContext<App: OxyExt> {
    /// The endpoint the flow came in on.
    pub endpoint: Arc<Endpoint<App>>,
    /// The client's address: the CONNECT-IP client's socket address (the original
    /// client behind a PROXY header), or the flow's source on a TUN device.
    pub client_addr: SocketAddr,
    /// The user the CONNECT-IP request was authenticated as; `None` on a TUN device.
    pub proxy_user: Option<String>,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, ...).
    pub protocol: u8,
    /// Source address of the flow.
    pub source: IpAddr,
    /// Destination address of the flow.
    pub destination: IpAddr,
    /// UDP or TCP source port (for ICMP echo, `None`).
    pub source_port: Option<u16>,
    /// UDP or TCP destination port.
    pub destination_port: Option<u16>,
    /// The application's state for this IP tunnel (one CONNECT-IP stream or TUN
    /// device): the same value for every flow of the tunnel.
    pub app: App::IpTunnelContext,
}

/// What to do with an IP flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpFlowAction {
    /// Send it on through the endpoint's IP off-ramp (`ip.offramp`): with `userspace`
    /// (the default), UDP and TCP are terminated as for the two upgrades below and ICMP
    /// echo is answered through an echo socket; other protocols get ICMP protocol
    /// unreachable. With `tun`, its packets are written to the TUN device as they are
    /// (TTL decremented), once the egress policy has allowed the flow's destination.
    ///
    /// A flow refused on the way is answered with ICMP administratively prohibited (the
    /// egress hook or policy, the tunnel hook), port unreachable (a UDP port that
    /// refuses) or host unreachable (anything else), or, for a TCP port that refuses,
    /// a reset.
    Forward,
    /// Drop its packets silently: nothing is sent back to the client. The reason is
    /// logged once and the packets counted (`oxy_ip_dropped_total{reason="hook"}`); the
    /// flow's audit record names the action `drop`.
    Drop(String),
    /// Terminate it as a UDP flow: its datagrams run through the UDP tunnel path (the
    /// egress hook and policy, the tunnel hook, audit) and the replies come back as UDP
    /// packets; refusals are answered as for [`IpFlowAction::Forward`]. A flow that is
    /// not UDP is dropped silently (`oxy_ip_dropped_total{reason="upgrade_mismatch"}`).
    UpgradeToUdp,
    /// Terminate it as a TCP connection in a user-space TCP/IP stack: the byte stream
    /// runs through the TCP tunnel path, where the tunnel hook can also decapsulate the
    /// HTTP inside; refusals are answered as for [`IpFlowAction::Forward`]. A flow that
    /// is not TCP is dropped silently (`oxy_ip_dropped_total{reason="upgrade_mismatch"}`).
    UpgradeToTcp,
}

/// Decides what happens to IP flows.
#[async_trait]
pub trait IpFlowHook<App: OxyExt>: Send + Sync + 'static {
    /// Runs on the first packet of each new flow (a new 5-tuple, or a new ICMP echo
    /// identifier) of a CONNECT-IP stream or a TUN device, after the packet passed the
    /// session's checks (well-formed, checksums, the client's assigned source address,
    /// the request's scope, the MTU, TTL > 1) and before anything leaves Oxy. The
    /// default returns [`IpFlowAction::Forward`].
    async fn on_flow(&self, cx: &mut IpFlowContext<App>) -> IpFlowAction {
        let _ = cx;
        IpFlowAction::Forward
    }
}
