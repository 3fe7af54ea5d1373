//! Why a TLS or QUIC handshake failed, as one type for logs, metrics and hooks.

/// Why a client's handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeFailure {
    /// It did not finish within `tls.handshake_timeout`.
    #[error("timed out")]
    TimedOut,
    /// The endpoint requires a client certificate and none was presented.
    #[error("client certificate: none presented")]
    NoClientCertificate,
    /// The client's certificate was refused (it does not chain to `client_ca`, it has
    /// expired, ...), with the verifier's reason.
    #[error("client certificate: {0}")]
    ClientCertificate(String),
    /// The client's raw public key matches none of `tls.client_pins` (its pin).
    #[error("client raw public key {0} matches no pin")]
    ClientPin(String),
    /// Anything else (a protocol error, an unsupported version, a closed connection).
    #[error("{0}")]
    Other(String),
}

impl HandshakeFailure {
    /// The reason as a metric label: `timeout`, `client_certificate`, `client_pin` or
    /// `handshake`.
    pub fn as_label(&self) -> &'static str {
        match self {
            HandshakeFailure::TimedOut => "timeout",
            HandshakeFailure::NoClientCertificate | HandshakeFailure::ClientCertificate(_) => {
                "client_certificate"
            }
            HandshakeFailure::ClientPin(_) => "client_pin",
            HandshakeFailure::Other(_) => "handshake",
        }
    }
}
