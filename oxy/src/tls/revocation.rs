//! Revocation of upstream certificates by CRL: the distribution points a certificate
//! names, the CRLs fetched from them (signature checked against the issuer, kept until
//! their nextUpdate), and whether a serial is listed.

use boring::x509::X509Ref;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};

/// The most bytes read of a fetched CRL.
pub const MAX_CRL_BYTES: usize = 1024 * 1024;
/// CRLs kept, by URL.
const CACHE_SIZE: usize = 64;
/// How long a CRL without a nextUpdate is kept.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// The longest a CRL is kept, whatever its nextUpdate says.
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// What is known of a certificate's revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Not listed in its issuer's current CRL, or it names no distribution point.
    Good,
    /// Listed as revoked.
    Revoked,
    /// Could not be told, and why.
    Unknown(String),
}

/// The `http://` URLs of `cert`'s CRL distribution points.
pub fn crl_urls(cert: &X509Ref) -> Vec<String> {
    let Ok(der) = cert.to_der() else {
        return Vec::new();
    };
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(&der) else {
        return Vec::new();
    };
    let mut urls = Vec::new();
    for extension in parsed.extensions() {
        let ParsedExtension::CRLDistributionPoints(points) = extension.parsed_extension() else {
            continue;
        };
        for point in points.iter() {
            if let Some(DistributionPointName::FullName(names)) = &point.distribution_point {
                for name in names {
                    if let GeneralName::URI(uri) = name
                        && uri.starts_with("http://")
                    {
                        urls.push(uri.to_string());
                    }
                }
            }
        }
    }
    urls
}

/// A CRL whose signature was checked: the raw serials it lists, and until when it holds.
#[derive(Debug)]
pub struct Crl {
    revoked: Vec<Vec<u8>>,
    until: SystemTime,
}

impl Crl {
    /// The CRL in `der` (or PEM), signed by `issuer`.
    pub fn parse(bytes: &[u8], issuer: &X509Ref) -> Result<Self, String> {
        let pem;
        let der = if bytes.starts_with(b"-----") {
            pem = x509_parser::pem::parse_x509_pem(bytes)
                .map_err(|_| "not a CRL".to_string())?
                .1;
            &pem.contents[..]
        } else {
            bytes
        };
        let (_, crl) = x509_parser::parse_x509_crl(der).map_err(|_| "not a CRL".to_string())?;
        let issuer_der = issuer.to_der().map_err(|e| e.to_string())?;
        let (_, issuer) = x509_parser::parse_x509_certificate(&issuer_der)
            .map_err(|_| "cannot read the issuer".to_string())?;
        if crl.issuer() != issuer.subject() {
            return Err("the CRL is not its issuer's".into());
        }
        crl.verify_signature(issuer.public_key())
            .map_err(|_| "the CRL's signature does not verify".to_string())?;
        let until = match crl.next_update() {
            Some(next) => {
                let seconds = u64::try_from(next.timestamp()).unwrap_or(0);
                UNIX_EPOCH + Duration::from_secs(seconds)
            }
            None => SystemTime::now() + DEFAULT_LIFETIME,
        };
        let now = SystemTime::now();
        if until < now {
            return Err("the CRL is past its nextUpdate".into());
        }
        let until = until.min(now + MAX_LIFETIME);
        let revoked = crl
            .iter_revoked_certificates()
            .map(|r| r.raw_serial().to_vec())
            .collect();
        Ok(Self { revoked, until })
    }

    /// Whether `cert` is listed.
    pub fn lists(&self, cert: &X509Ref) -> bool {
        let Ok(der) = cert.to_der() else {
            return false;
        };
        let Ok((_, parsed)) = x509_parser::parse_x509_certificate(&der) else {
            return false;
        };
        self.revoked.iter().any(|s| s == parsed.raw_serial())
    }
}

/// CRLs by URL, kept until their nextUpdate.
#[derive(Default)]
pub struct CrlCache {
    crls: Mutex<Vec<(String, Arc<Crl>)>>,
}

impl CrlCache {
    /// The CRL fetched from `url`, while it holds.
    pub fn get(&self, url: &str) -> Option<Arc<Crl>> {
        let now = SystemTime::now();
        let crls = self.crls.lock().unwrap_or_else(PoisonError::into_inner);
        let found = crls.iter().find(|(u, crl)| u == url && crl.until > now);
        found.map(|(_, crl)| crl.clone())
    }

    /// Keeps `crl`, fetched from `url`.
    pub fn put(&self, url: &str, crl: Arc<Crl>) {
        let mut crls = self.crls.lock().unwrap_or_else(PoisonError::into_inner);
        crls.retain(|(u, _)| u != url);
        if crls.len() >= CACHE_SIZE {
            crls.remove(0);
        }
        crls.push((url.to_string(), crl));
    }
}
