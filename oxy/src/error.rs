//! The framework's error type and the exit codes it maps to.

use crate::settings::ConfigErrors;

/// What can stop an Oxy server from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum OxyError {
    /// The settings file is missing, unreadable, malformed or inconsistent.
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr} (endpoint {endpoint}): {source}")]
    Bind {
        /// The endpoint (or `telemetry`) that owns the address.
        endpoint: String,
        /// The address.
        addr: std::net::SocketAddr,
        /// Why the bind failed.
        source: std::io::Error,
    },
    /// The application's `start` failed.
    #[error("the application failed to start: {0:#}")]
    AppStart(anyhow::Error),
    /// Telemetry (logging, Sentry) could not be set up.
    #[error("telemetry setup failed: {0}")]
    Telemetry(String),
    /// A service the endpoints need (DNS, TLS) could not be set up.
    #[error("{0}")]
    Setup(String),
    /// Any other I/O failure outside a single connection.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl OxyError {
    /// The process exit code for this error: 2 for bad settings, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            OxyError::Config(_) => 2,
            _ => 1,
        }
    }
}

/// `Result` with [`OxyError`].
pub type OxyResult<T> = Result<T, OxyError>;
