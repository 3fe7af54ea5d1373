//! Tunnels: pump bytes between an on-ramp stream and an off-ramp stream with timeouts,
//! whatever protocol carried them.

mod client;
pub(crate) mod counted;
mod datagram_buffer;
mod deadlines;
pub(crate) mod flow_socket;
pub mod metrics;
pub mod packet;
pub mod pump;
mod refused;
pub mod sniff;
mod splice;
mod start;
pub mod stream;
pub mod tcp;
pub mod udp;

pub use client::TunnelClient;
pub use refused::TunnelRefused;
