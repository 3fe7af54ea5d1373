//! The version-agnostic HTTP pipeline: servers (HTTP/1.1 and HTTP/2 with hyper, HTTP/3
//! with h3), forward and reverse proxy, CONNECT, CONNECT-UDP, and the upstream client.
//! Only the servers know which implementation carried a request.

mod access_log;
mod answer;
pub mod authority;
pub mod body;
pub mod body_tap;
pub mod capsule;
pub mod capsule_writer;
pub mod client;
pub mod connect;
pub mod connect_ip;
pub mod connect_udp;
pub mod form;
mod forward;
pub mod guarded_body;
pub mod h1_connect;
pub(crate) mod h1_exchange;
pub(crate) mod h1_fields;
mod h1_server;
pub mod h3;
pub mod h3_stream;
pub mod headers;
pub mod inspect;
pub(crate) mod inspect_quic;
pub mod metrics;
pub mod open_streams;
pub mod path;
pub mod pipeline;
pub mod proxy_auth;
pub(crate) mod request_end;
pub mod server;
pub mod stream_search;
pub mod upgrade;
pub(crate) mod upstream_pool;
pub mod uri_template;
pub mod user_limits;
pub mod write_coalescing;
