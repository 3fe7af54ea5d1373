//! The version-agnostic HTTP pipeline: server, forward and reverse proxy, CONNECT, and
//! the upstream client. Only `server.rs` knows the requests came through hyper.

pub mod body;
pub mod body_tap;
pub mod client;
pub mod connect;
pub mod form;
pub mod headers;
pub mod metrics;
pub mod pipeline;
pub mod proxy_auth;
pub mod server;
pub mod upgrade;
