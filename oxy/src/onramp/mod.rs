//! On-ramps: the listeners that accept traffic for endpoints.

pub mod tcp;
pub mod udp;
