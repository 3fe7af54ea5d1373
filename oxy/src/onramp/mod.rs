//! On-ramps: the listeners that accept traffic for endpoints.

pub mod proxy_protocol;
pub mod quic;
pub mod tcp;
pub mod udp;
