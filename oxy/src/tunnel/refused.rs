//! Why a tunnel (TCP or UDP) was not opened, with a stable label for metrics.

use crate::offramp::tcp::ConnectError;

/// Why a tunnel was not opened.
#[derive(Debug, thiserror::Error)]
pub enum TunnelRefused {
    /// The off-ramp could not connect (denied, DNS, refused, timeout, no target).
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The tunnel hook blocked it.
    #[error("blocked: {0}")]
    Blocked(String),
    /// The egress hook chose a CONNECT proxy for UDP, which cannot carry it.
    #[error("UDP cannot go through the CONNECT proxy {0}")]
    UdpViaProxy(String),
    /// Oxy is shutting down.
    #[error("shutting down")]
    Shutdown,
}

impl TunnelRefused {
    /// A short, stable label for metrics.
    pub fn as_label(&self) -> &'static str {
        match self {
            TunnelRefused::Connect(e) => e.as_label(),
            TunnelRefused::Blocked(_) => "blocked",
            TunnelRefused::UdpViaProxy(_) => "upstream_proxy",
            TunnelRefused::Shutdown => "shutdown",
        }
    }
}
