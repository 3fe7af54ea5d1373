//! Off-ramps: how traffic leaves Oxy, and the policy it leaves under.

pub mod happy_eyeballs;
pub mod ip;
pub mod policy;
pub mod proxy_header;
pub mod resolve;
pub mod route;
pub mod tcp;
pub mod tun;
pub mod udp;
pub mod upstream_proxy;
