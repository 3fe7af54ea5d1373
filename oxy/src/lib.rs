//! Oxy: a programmable, multi-protocol proxy framework.
//!
//! An application implements [`OxyApp`] (and a few hook traits when it needs them) and
//! calls [`bootstrap()`]; Oxy does the rest: CLI, YAML settings, telemetry, runtime,
//! listeners and graceful shutdown.
//!
//! Each endpoint of the settings file is one of: an HTTP endpoint (HTTP/1.1, HTTP/2 and
//! HTTP/3; forward and reverse proxy, CONNECT, CONNECT-UDP, CONNECT-IP), a TCP or UDP
//! endpoint that tunnels to a target, or a TUN device. Without hooks, each does what its
//! settings say. The hooks ([`hooks`]) see connections, requests, egress, tunnels, IP
//! flows and DNS answers, and decide on them.
//!
//! # A whole application
//!
//! `examples/client-allowlist` admits, on each endpoint, only clients from the networks
//! that endpoint's settings allow. `#[derive(OxyExt)]` takes the name, version and
//! description from the package's `Cargo.toml` and fills in `()` for every extension
//! type not named; [`Hooks::of`] installs one value as one or several hooks. This is its
//! whole `src/main.rs`; its `Cargo.toml` depends on `oxy`, `anyhow`, `async-trait` and
//! `ipnet`.
//!
//! ```ignore
//! //! An L4 gate: each endpoint admits only clients from the networks its settings allow.
//!
//! use oxy::prelude::*;
//!
//! /// Settings of each endpoint's `app:` section.
//! #[oxy_app_settings]
//! pub struct AllowlistSettings {
//!     /// Networks whose clients may connect to this endpoint (`127.0.0.0/8`, `::1/128`);
//!     /// an empty list admits everyone.
//!     pub allow: Vec<ipnet::IpNet>,
//! }
//!
//! #[metrics]
//! mod client_allowlist {
//!     /// Connections refused because the client is not on the endpoint's allowlist.
//!     pub fn refused_total(endpoint: &str) -> Counter;
//! }
//!
//! #[derive(OxyExt)]
//! #[oxy(endpoint_settings = AllowlistSettings)]
//! struct ClientAllowlist;
//!
//! struct Gate;
//!
//! #[async_trait]
//! impl IngressHook<ClientAllowlist> for Gate {
//!     async fn on_connection(
//!         &self,
//!         cx: &mut IngressConnectionContext<ClientAllowlist>,
//!     ) -> IngressAction {
//!         let client = cx.client_addr.ip();
//!         let allow = &cx.endpoint.app_settings().allow;
//!         if allow.is_empty() || allow.iter().any(|net| net.contains(&client)) {
//!             return IngressAction::Continue;
//!         }
//!         client_allowlist::refused_total(cx.endpoint.name()).inc();
//!         IngressAction::Reject(format!("{client} is not on the allowlist"))
//!     }
//! }
//!
//! #[async_trait]
//! impl OxyApp for ClientAllowlist {
//!     async fn start(_: AppServerSettings<Self>, _: ()) -> anyhow::Result<Hooks<Self>> {
//!         Ok(Hooks::of(Gate).ingress().into())
//!     }
//! }
//!
//! fn main() -> OxyResult<()> {
//!     oxy::bootstrap::<ClientAllowlist>()
//! }
//! ```
//!
//! Each endpoint's `app:` section then holds its `allow` list;
//! `client-allowlist --generate-config` prints a settings file with every option.
//!
//! # Writing hooks
//!
//! The hook traits, like [`OxyApp`], are `#[async_trait]` traits: put `#[async_trait]`
//! (in [`prelude`]) on the `impl` and write the methods as `async fn`, as above. Rustdoc
//! shows them as the macro turns them out, with lifetimes and a return type of
//! `Pin<Box<dyn Future<Output = ...> + Send + 'async_trait>>`; the `async fn` in the
//! trait's source is the one to copy. The body taps (`request_body_tap`,
//! `response_body_tap`) and `DnsHook::cache_item` are plain `fn`s.
//!
//! Implement only the methods that change something: each has a default that does the
//! ordinary proxy thing. A hook method gets a context (`cx`) with the facts known at its
//! step and returns an action. The ingress, request and IP flow contexts also carry the
//! application's own state, `cx.app`, of a type named in `#[oxy(...)]` (`()` when not
//! named).
//!
//! # Where to read next
//!
//! - [`hooks`]: the life of a connection, a request, a tunnel and an IP flow: which hook
//!   runs at which step, what was decided before it and what happens after it.
//! - [`prelude`]: what `use oxy::prelude::*;` brings in.
//! - `README.md` in the repository: what an endpoint does by default, the settings,
//!   the metrics and the example applications (`examples/`).
//! - `ARCHITECTURE.md` in the repository: how the code is laid out and what each part
//!   does.

extern crate self as oxy;

pub mod app;
pub mod bootstrap;
pub(crate) mod boxed;
pub mod cli;
pub mod dns;
pub mod drain;
pub mod endpoint;
pub mod error;
pub mod hooks;
pub mod http;
pub mod offramp;
pub mod onramp;
pub(crate) mod per_thread;
pub(crate) mod restart;
pub(crate) mod security;
pub mod services;
pub mod settings;
pub(crate) mod spare_buffers;
pub mod telemetry;
pub mod tls;
pub mod tun_device;
pub mod tunnel;

pub use app::{Hooks, OxyApp, OxyExt};
pub use bootstrap::bootstrap;
pub use error::{OxyError, OxyResult};
pub use oxy_macros::{OxyExt, metrics, oxy_app_settings};

/// Everything an application usually needs, in one `use oxy::prelude::*;`.
pub mod prelude {
    pub use crate::app::{AppServerSettings, Hooks, OxyApp};
    pub use crate::endpoint::Endpoint;
    pub use crate::error::{OxyError, OxyResult};
    pub use crate::hooks::*;
    pub use crate::settings::{EndpointSettings, NoSettings, ServerSettings, Settings};
    pub use crate::{OxyExt, bootstrap, metrics, oxy_app_settings};
    pub use async_trait::async_trait;
    pub use std::sync::Arc;
}

/// The `http` crate's types (requests, responses, headers, status codes) hooks use.
pub use ::http as http_types;

/// The `bytes` crate's `Bytes`, as body chunks and taps carry them.
pub use ::bytes;

/// The `tracing` crate Oxy logs through: applications log with `oxy::tracing::info!` and
/// the rest, and their lines go where Oxy's do (`telemetry.log`).
pub use ::tracing;

/// Crates that code generated by Oxy's macros refers to, so applications need not
/// depend on them directly.
#[doc(hidden)]
pub mod reexports {
    pub use bytes;
    pub use prometheus;
    pub use serde;
}
