//! TLS with BoringSSL: certificates and keys, and TLS termination.

pub mod aia;
mod certificate;
pub mod client;
mod handshake_failure;
pub mod interception;
mod ocsp;
pub mod policy;
pub mod quic;
pub mod quic_raw_public_key;
pub mod raw_public_key;
pub mod read_ahead;
pub mod revocation;
pub mod server;
mod session_cache;
#[cfg(test)]
mod test_pki;

pub use certificate::{CertificateError, CertifiedKey, ca_problem, hex};
pub use handshake_failure::HandshakeFailure;
pub use server::{ClientCertificate, TlsAcceptor, TlsFacts};
