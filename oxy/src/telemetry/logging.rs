//! Log output with `tracing`: text or JSON lines on stderr, level from settings or `RUST_LOG`.

use crate::error::OxyError;
use crate::settings::{LogFormat, LogSettings};
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global log subscriber. `RUST_LOG`, when set, overrides `settings.level`.
pub fn init(settings: &LogSettings) -> Result<(), OxyError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(&directives)
            .map_err(|e| OxyError::Telemetry(format!("RUST_LOG={directives:?}: {e}")))?,
        _ => EnvFilter::try_new(&settings.level)
            .map_err(|e| OxyError::Telemetry(format!("telemetry.log.level: {e}")))?,
    };
    let registry = tracing_subscriber::registry().with(filter);
    let result = match settings.format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    result.map_err(|e| OxyError::Telemetry(format!("cannot install the logger: {e}")))
}
