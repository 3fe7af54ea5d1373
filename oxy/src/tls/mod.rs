//! TLS with BoringSSL: certificates and keys, and TLS termination.

mod certificate;
pub mod quic;
pub mod server;

pub use certificate::{CertificateError, CertifiedKey};
pub use server::{ClientCertificate, TlsAcceptor, TlsFacts};
