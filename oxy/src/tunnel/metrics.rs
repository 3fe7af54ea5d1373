//! Tunnel metrics.

use crate::metrics;

/// Tunnels.
#[metrics]
pub mod oxy_tunnel {
    /// Tunnels open now, by endpoint and protocol.
    pub fn active(endpoint: &str, protocol: &str) -> Gauge;

    /// Tunnels started, by endpoint and protocol.
    pub fn started_total(endpoint: &str, protocol: &str) -> Counter;

    /// Tunnels ended, by endpoint and close reason.
    pub fn ended_total(endpoint: &str, reason: &str) -> Counter;

    /// TCP tunnels forwarded zero-copy with `splice(2)` (both sides plain TCP sockets),
    /// by endpoint.
    pub fn zero_copy_total(endpoint: &str) -> Counter;

    /// Bytes carried, by endpoint and direction (`up` is client to target).
    pub fn bytes_total(endpoint: &str, direction: &str) -> Counter;
}
