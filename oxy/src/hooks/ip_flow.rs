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
    /// The client's address (the CONNECT-IP client, or the TUN peer).
    pub client_addr: SocketAddr,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, ...).
    pub protocol: u8,
    /// Source address of the flow.
    pub source: IpAddr,
    /// Destination address of the flow.
    pub destination: IpAddr,
    /// The application's state for this IP tunnel.
    pub app: App::IpTunnelContext,
}

/// What to do with an IP flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpFlowAction {
    /// Forward its packets as they are.
    Forward,
    /// Drop its packets; the reason is logged and counted.
    Drop(String),
    /// Terminate it as a UDP flow and proxy the datagrams.
    UpgradeToUdp,
    /// Terminate it as a TCP connection and proxy the stream.
    UpgradeToTcp,
}

/// Decides what happens to IP flows.
#[async_trait]
pub trait IpFlowHook<App: OxyExt>: Send + Sync + 'static {
    /// Runs on the first packet of each new flow. The default returns
    /// [`IpFlowAction::Forward`].
    async fn on_flow(&self, cx: &mut IpFlowContext<App>) -> IpFlowAction {
        let _ = cx;
        IpFlowAction::Forward
    }
}
