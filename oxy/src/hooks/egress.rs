//! [`EgressHook`]: chooses where and how traffic leaves Oxy.

use crate::app::OxyExt;
use crate::endpoint::Endpoint;
use crate::hooks::Transport;
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

/// Facts about traffic about to leave Oxy.
pub struct EgressContext<App: OxyExt> {
    /// The endpoint the traffic came in on.
    pub endpoint: Arc<Endpoint<App>>,
    /// The client's address.
    pub client_addr: SocketAddr,
    /// TCP or UDP towards the target.
    pub transport: Transport,
    /// Where the client asked to go.
    pub target: Target,
}

/// How traffic leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressAction {
    /// Go to the requested target, subject to the egress policy.
    Allow,
    /// Go to this target instead, subject to the egress policy.
    Rewrite(Target),
    /// Go to the target from this local address (egress IP selection).
    BindTo(IpAddr),
    /// Refuse; the client gets a clear error with this reason, and it is counted.
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
    async fn on_resolved(&self, cx: &mut EgressContext<App>, addrs: &mut Vec<IpAddr>) {
        let _ = (cx, addrs);
    }
}
