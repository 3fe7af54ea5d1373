//! Tunnel metrics, and those every TCP tunnel of an endpoint touches, resolved once.

use super::pump::CloseReason;
use crate::metrics;
use crate::telemetry::metrics::{Counter, CounterSlots, Gauge};
use std::sync::{Arc, OnceLock};

/// The metrics every TCP tunnel of an endpoint touches, resolved once for the endpoint
/// (when its first tunnel opens) instead of looked up by label per tunnel.
pub struct EndpointTcpTunnelMetrics {
    name: Arc<str>,
    /// `oxy_tunnel_started_total{protocol="tcp"}`.
    pub started: Counter,
    /// `oxy_tunnel_active{protocol="tcp"}`.
    pub active: Gauge,
    /// `oxy_tunnel_bytes_total{direction="up"}`.
    pub bytes_up: Counter,
    /// `oxy_tunnel_bytes_total{direction="down"}`.
    pub bytes_down: Counter,
    /// `oxy_tunnel_zero_copy_total`, made when first counted (its absence says no
    /// tunnel of the endpoint was spliced).
    zero_copy: OnceLock<Counter>,
    ended: CounterSlots<{ CloseReason::KINDS }>,
}

impl EndpointTcpTunnelMetrics {
    /// The handles of endpoint `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            started: oxy_tunnel::started_total(name, "tcp"),
            active: oxy_tunnel::active(name, "tcp"),
            bytes_up: oxy_tunnel::bytes_total(name, "up"),
            bytes_down: oxy_tunnel::bytes_total(name, "down"),
            zero_copy: OnceLock::new(),
            ended: CounterSlots::default(),
        }
    }

    /// `oxy_tunnel_zero_copy_total`.
    pub fn zero_copy(&self) -> &Counter {
        self.zero_copy
            .get_or_init(|| oxy_tunnel::zero_copy_total(&self.name))
    }

    /// `oxy_tunnel_ended_total` of a tunnel that ended for `reason`.
    pub fn ended(&self, reason: &CloseReason) -> &Counter {
        self.ended.get(reason.kind(), || {
            oxy_tunnel::ended_total(&self.name, reason.as_label())
        })
    }
}

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
