//! Loads a PEM certificate chain and its private key, and checks that they belong together.

use boring::pkey::{PKey, Private};
use boring::x509::{X509, X509Ref};
use std::path::{Path, PathBuf};

/// A certificate chain (leaf first) with the leaf's private key.
#[derive(Clone)]
pub struct CertifiedKey {
    /// The leaf certificate, then its intermediates.
    pub chain: Vec<X509>,
    /// The leaf's private key.
    pub key: PKey<Private>,
}

/// Why a certificate chain or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Whether it is the key file (not the chain).
        is_key: bool,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The chain file holds no PEM certificate, or a malformed one.
    #[error("{path} holds no valid PEM certificate: {reason}")]
    BadChain {
        /// The file.
        path: PathBuf,
        /// What BoringSSL reported.
        reason: String,
    },
    /// The key file holds no PEM private key, or a malformed one.
    #[error("{path} holds no valid PEM private key: {reason}")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What BoringSSL reported.
        reason: String,
    },
    /// The key is not the leaf certificate's key.
    #[error("the private key in {key} does not match the first certificate in {chain}")]
    Mismatch {
        /// The chain file.
        chain: PathBuf,
        /// The key file.
        key: PathBuf,
    },
}

impl CertificateError {
    /// Whether the problem is with the key file rather than the chain file.
    pub fn is_about_key(&self) -> bool {
        matches!(
            self,
            CertificateError::Read { is_key: true, .. } | CertificateError::BadKey { .. }
        )
    }
}

impl CertifiedKey {
    /// Reads and checks a PEM chain file and a PEM key file.
    pub fn load(chain_path: &Path, key_path: &Path) -> Result<Self, CertificateError> {
        let read = |path: &Path, is_key| {
            std::fs::read(path).map_err(|source| CertificateError::Read {
                path: path.to_path_buf(),
                is_key,
                source,
            })
        };
        let chain_pem = read(chain_path, false)?;
        let key_pem = read(key_path, true)?;
        let chain = X509::stack_from_pem(&chain_pem).map_err(|e| CertificateError::BadChain {
            path: chain_path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let Some(leaf) = chain.first() else {
            return Err(CertificateError::BadChain {
                path: chain_path.to_path_buf(),
                reason: "the file is empty".into(),
            });
        };
        let key = PKey::private_key_from_pem(&key_pem).map_err(|e| CertificateError::BadKey {
            path: key_path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let matches = leaf
            .public_key()
            .map(|public| public.public_eq(&key))
            .unwrap_or(false);
        if !matches {
            return Err(CertificateError::Mismatch {
                chain: chain_path.to_path_buf(),
                key: key_path.to_path_buf(),
            });
        }
        Ok(Self { chain, key })
    }
}

/// Why `cert` cannot sign certificates, if it cannot: not a CA (basicConstraints
/// CA:TRUE), or a key usage without keyCertSign. BoringSSL takes a trust anchor as it
/// is, so these extensions are read here.
pub fn ca_problem(cert: &X509Ref) -> Option<String> {
    let der = match cert.to_der() {
        Ok(der) => der,
        Err(e) => return Some(e.to_string()),
    };
    let parsed = match x509_parser::parse_x509_certificate(&der) {
        Ok((_, parsed)) => parsed,
        Err(e) => return Some(format!("cannot read the certificate: {e}")),
    };
    if !matches!(parsed.basic_constraints(), Ok(Some(b)) if b.value.ca) {
        return Some("it is not a CA (basicConstraints CA:TRUE)".into());
    }
    match parsed.key_usage() {
        Ok(Some(usage)) if !usage.value.key_cert_sign() => {
            Some("its key usage does not allow keyCertSign".into())
        }
        _ => None,
    }
}

/// Lowercase hex of `bytes` (digests and pins, as hooks and logs show them).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
