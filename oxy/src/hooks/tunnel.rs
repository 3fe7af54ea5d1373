//! [`TunnelHook`]: watches and steers TCP, UDP and IP tunnels.

use crate::app::OxyExt;
use crate::endpoint::Endpoint;
use crate::hooks::{Target, Transport};
use async_trait::async_trait;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Facts about a tunnel whose off-ramp is connected.
pub struct TunnelContext<App: OxyExt> {
    /// The endpoint the tunnel came in on.
    pub endpoint: Arc<Endpoint<App>>,
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
}

/// What to do with a tunnel about to start pumping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelAction {
    /// Pump bytes both ways with the endpoint's timeouts.
    Continue,
    /// Close both sides; the reason is logged and counted.
    Block(String),
    /// Close the connection to the target and connect to this one instead (through the
    /// egress policy, without running the egress hook again).
    Redirect(Target),
    /// Pump with these timeouts instead of the endpoint's.
    SetTimeouts {
        /// Close after this long without traffic either way.
        idle: Duration,
        /// Close after this long in any case.
        max_lifetime: Duration,
    },
    /// Feed the client's bytes to Oxy's HTTP server instead of pumping them to the
    /// target (TCP only): each request inside goes through the request hook, the body
    /// taps and the egress hook and policy, then to the tunnel's target as plain HTTP.
    /// The bytes must be plain HTTP/1.1 or HTTP/2 (TLS inside is not intercepted). A
    /// UDP flow is refused with reason `decapsulation unavailable`.
    Decapsulate,
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

    /// Runs once when a tunnel has closed. The default does nothing.
    async fn on_tunnel_end(&self, cx: &mut TunnelContext<App>, summary: &TunnelSummary) {
        let _ = (cx, summary);
    }
}
