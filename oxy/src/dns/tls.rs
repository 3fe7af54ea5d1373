//! The TLS client configuration (rustls, as hickory uses it) for DNS over TLS and
//! HTTPS: the roots from `dns.ca_file`, or the system's.

use super::DnsSetupError;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::path::Path;
use std::sync::Arc;

/// A client configuration trusting the certificates in `ca_file` (PEM), or the system's
/// roots when it is empty.
pub(super) fn client_config(ca_file: &Path) -> Result<rustls::ClientConfig, DnsSetupError> {
    let mut roots = RootCertStore::empty();
    if ca_file.as_os_str().is_empty() {
        for cert in rustls_native_certs::load_native_certs().certs {
            // A system root rustls cannot use is skipped, as browsers do.
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            return Err(DnsSetupError(
                "no system CA certificates for DNS over TLS/HTTPS: set dns.ca_file".into(),
            ));
        }
    } else {
        let unreadable = |e: &dyn std::fmt::Display| {
            DnsSetupError(format!("dns.ca_file {}: {e}", ca_file.display()))
        };
        for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| unreadable(&e))? {
            let cert = cert.map_err(|e| unreadable(&e))?;
            roots.add(cert).map_err(|e| unreadable(&e))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DnsSetupError(format!("TLS for DNS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
