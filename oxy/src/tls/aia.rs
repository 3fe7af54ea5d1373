//! Completing an upstream's chain as browsers do: when a server leaves out an
//! intermediate, the certificate that names it carries the URL it can be fetched from
//! (Authority Information Access, caIssuers). The fetched certificates are kept by URL.

use boring::x509::store::X509Store;
use boring::x509::{X509, X509Ref};
use std::sync::{Mutex, PoisonError};

/// The caIssuers access method (RFC 5280 §4.2.2.1).
const CA_ISSUERS: &str = "1.3.6.1.5.5.7.48.2";
/// The most bytes read of a fetched certificate.
pub const MAX_ISSUER_BYTES: usize = 64 * 1024;
/// Fetched issuers kept, by URL.
const CACHE_SIZE: usize = 256;

/// The first `http://` caIssuers URL of `cert`, if it has one.
pub fn ca_issuers_url(cert: &X509Ref) -> Option<String> {
    let der = cert.to_der().ok()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).ok()?;
    parsed.extensions().iter().find_map(|extension| {
        let x509_parser::extensions::ParsedExtension::AuthorityInfoAccess(aia) =
            extension.parsed_extension()
        else {
            return None;
        };
        aia.iter().find_map(|description| {
            let uri = match &description.access_location {
                x509_parser::extensions::GeneralName::URI(uri) => *uri,
                _ => return None,
            };
            (description.access_method.to_id_string() == CA_ISSUERS && uri.starts_with("http://"))
                .then(|| uri.to_string())
        })
    })
}

/// A fetched issuer: DER (what caIssuers URLs serve) or PEM.
pub fn parse_issuer(bytes: &[u8]) -> Result<X509, String> {
    X509::from_der(bytes)
        .or_else(|_| X509::from_pem(bytes))
        .map_err(|_| "the caIssuers URL did not serve a certificate".to_string())
}

/// An intermediate fetched to complete a chain, with the verify store made of the
/// client's roots and it (built once, shared by every connection that needs it).
#[derive(Clone)]
pub struct Completion {
    /// The fetched intermediate.
    pub issuer: X509,
    /// The roots and `issuer`.
    pub store: X509Store,
}

/// Completions fetched from caIssuers URLs, at most 256, by URL, with the
/// upstream whose chain each completed (so its next connections have it at once).
#[derive(Default)]
pub struct IssuerCache {
    completions: Mutex<Vec<(String, String, Completion)>>,
}

impl IssuerCache {
    /// The completion fetched from `url` before, if any.
    pub fn get(&self, url: &str) -> Option<Completion> {
        let completions = self
            .completions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let found = completions.iter().find(|(u, _, _)| u == url);
        found.map(|(_, _, c)| c.clone())
    }

    /// The completion of `upstream`'s chain last time, if any.
    pub fn for_upstream(&self, upstream: &str) -> Option<Completion> {
        let completions = self
            .completions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let found = completions.iter().rev().find(|(_, u, _)| u == upstream);
        found.map(|(_, _, c)| c.clone())
    }

    /// Keeps `completion`, fetched from `url` for `upstream` (the oldest goes when full).
    pub fn put(&self, url: &str, upstream: &str, completion: Completion) {
        let mut completions = self
            .completions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        completions.retain(|(u, up, _)| u != url || up != upstream);
        if completions.len() >= CACHE_SIZE {
            completions.remove(0);
        }
        completions.push((url.to_string(), upstream.to_string(), completion));
    }
}
