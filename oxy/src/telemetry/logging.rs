//! Log output with `tracing`: text or JSON lines on stderr, level from settings or `RUST_LOG`.

use crate::error::OxyError;
use crate::settings::{LogFormat, LogSettings, TracingSettings};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::Level;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// Whether clients' addresses are written in logs and audit records.
static CLIENT_ADDRESSES: AtomicBool = AtomicBool::new(true);

/// Whether clients' addresses may be written in logs and audit records
/// (`telemetry.log.client_addresses`).
pub fn client_addresses_shown() -> bool {
    CLIENT_ADDRESSES.load(Ordering::Relaxed)
}

/// The span of one connection or flow: its id, its endpoint and (when addresses are
/// shown) its peer; [`record_client`] adds the original client.
pub fn connection_span(id: u64, endpoint: &str, peer: SocketAddr) -> tracing::Span {
    let span = tracing::info_span!(
        "connection",
        id,
        endpoint = %endpoint,
        peer = tracing::field::Empty,
        client = tracing::field::Empty
    );
    if client_addresses_shown() {
        span.record("peer", tracing::field::display(peer));
    }
    span
}

/// Records the original client a PROXY header named in a [`connection_span`] (unless
/// addresses are hidden).
pub fn record_client(span: &tracing::Span, client: SocketAddr) {
    if client_addresses_shown() {
        span.record("client", tracing::field::display(client));
    }
}

/// `addr`, or `None` when addresses are hidden: for log fields.
pub fn shown(addr: SocketAddr) -> Option<SocketAddr> {
    client_addresses_shown().then_some(addr)
}

/// Installs the global log subscriber: log lines as `settings` says (`RUST_LOG`, when
/// set, overrides `settings.level`), and the `oxy` spans exported as `tracing` says
/// (`telemetry.tracing`), each with its own filter.
pub fn init(
    settings: &LogSettings,
    tracing: &TracingSettings,
    app_name: &str,
) -> Result<(), OxyError> {
    CLIENT_ADDRESSES.store(settings.client_addresses, Ordering::Relaxed);
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(&directives)
            .map_err(|e| OxyError::Telemetry(format!("RUST_LOG={directives:?}: {e}")))?,
        _ => EnvFilter::try_new(&settings.level)
            .map_err(|e| OxyError::Telemetry(format!("telemetry.log.level: {e}")))?,
    };
    let lines: Box<dyn Layer<Registry> + Send + Sync> = match settings.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let registry = tracing_subscriber::registry().with(lines.with_filter(filter));
    let spans =
        super::distributed_tracing::layer(tracing, app_name).map_err(OxyError::Telemetry)?;
    let installed = match spans {
        // Oxy's spans only (decided once per call site): log events stay the log's.
        Some(spans) => registry
            .with(spans.with_filter(filter_fn(|meta| {
                meta.is_span() && meta.target().starts_with("oxy") && *meta.level() <= Level::INFO
            })))
            .try_init(),
        None => registry.try_init(),
    };
    installed.map_err(|e| OxyError::Telemetry(format!("cannot install the logger: {e}")))
}
