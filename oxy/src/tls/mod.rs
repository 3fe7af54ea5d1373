//! TLS with BoringSSL: certificates and keys.

mod certificate;

pub use certificate::{CertificateError, CertifiedKey};
