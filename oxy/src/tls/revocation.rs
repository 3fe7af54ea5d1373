//! Revocation of an upstream's certificates, as a browser-grade client checks it: every
//! certificate of the verified chain below its trust anchor, each against the
//! certificate that signed it; the leaf by its stapled OCSP response first; then by
//! configured CRL files, then by the CRLs its distribution points serve (fetched,
//! signature checked against the issuer, kept until their nextUpdate and at most a day).

use super::ocsp;
use boring::x509::{X509, X509Ref};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};

/// The most bytes read of a fetched CRL.
pub const MAX_CRL_BYTES: usize = 1024 * 1024;
/// CRLs kept, by URL.
const CACHE_SIZE: usize = 64;
/// How long a CRL without a nextUpdate is kept.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// The longest a fetched CRL is kept, whatever its nextUpdate says.
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// The most certificates of a chain checked.
const MAX_DEPTH: usize = 8;

/// What is known of one certificate's revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Not revoked by what was checked (or nothing names a way to check it).
    Good,
    /// Revoked.
    Revoked,
    /// Could not be told, and why.
    Unknown(String),
}

/// What is known of a chain's revocation, with the reason in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No certificate of the chain is revoked.
    Good,
    /// One is revoked: which, and what says so.
    Revoked(String),
    /// The status of one cannot be told, and why.
    Unknown(String),
}

/// A certificate of a verified chain and the certificate that signed it.
pub struct Link {
    /// The certificate checked.
    pub cert: X509,
    /// Its issuer.
    pub issuer: X509,
}

/// The certificates of a verified chain below its trust anchor, each with its issuer:
/// `sent` is what the upstream sent (leaf first), `fetched` an intermediate completed
/// from AIA, `roots` the trust anchors. An issuer is a candidate that carries the
/// certificate's issuer name and whose key verifies its signature, never merely the next
/// certificate sent.
pub fn links(sent: &[X509], fetched: Option<&X509>, roots: &[X509]) -> Result<Vec<Link>, String> {
    let Some(leaf) = sent.first() else {
        return Ok(Vec::new());
    };
    let candidates: Vec<&X509> = sent[1..].iter().chain(fetched).chain(roots).collect();
    let is_root = |cert: &X509Ref| {
        let der = cert.to_der().ok();
        cert.issued(cert).is_ok() || roots.iter().any(|root| root.to_der().ok() == der)
    };
    let mut links = Vec::new();
    let mut cert = leaf.clone();
    while !is_root(&cert) && links.len() < MAX_DEPTH {
        let signed = |issuer: &&&X509| {
            issuer.issued(&cert).is_ok()
                && issuer
                    .public_key()
                    .and_then(|key| cert.verify(&key))
                    .unwrap_or(false)
        };
        let Some(issuer) = candidates.iter().find(signed) else {
            return Err(format!(
                "the issuer of {} is not known",
                who(&cert, links.len())
            ));
        };
        let issuer = (*issuer).clone();
        links.push(Link {
            cert,
            issuer: issuer.clone(),
        });
        cert = issuer;
    }
    Ok(links)
}

/// How a chain's revocation is checked: CRL files read at start, and fetched CRLs.
pub struct Checker {
    files: Vec<(PathBuf, Crl)>,
    fetched: CrlCache,
}

impl Checker {
    /// A checker with the CRLs in `files` (DER or PEM, read now).
    pub fn new(files: &[PathBuf]) -> Result<Self, String> {
        let files = files
            .iter()
            .map(|path| Ok((path.clone(), read_crl_file(path)?)))
            .collect::<Result<_, String>>()?;
        Ok(Self {
            files,
            fetched: CrlCache::default(),
        })
    }

    /// The verdict on `links` (from [`links`]); `staple` is the OCSP response the
    /// upstream stapled for the leaf. `fetch` gets what a CRL URL serves.
    pub async fn verdict<F, Fut>(&self, links: &[Link], staple: Option<&[u8]>, fetch: F) -> Verdict
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<bytes::Bytes, String>>,
    {
        let mut unknown = None;
        for (depth, link) in links.iter().enumerate() {
            let staple = staple.filter(|_| depth == 0);
            let (status, source) = self.status(link, staple, &fetch).await;
            let who = who(&link.cert, depth);
            match status {
                Status::Good => {}
                Status::Revoked => return Verdict::Revoked(format!("{who} is revoked ({source})")),
                Status::Unknown(why) => {
                    let reason = if depth == 0 {
                        format!("its revocation status is unknown: {why}")
                    } else {
                        format!("the revocation status of {who} is unknown: {why}")
                    };
                    unknown.get_or_insert(reason);
                }
            }
        }
        unknown.map_or(Verdict::Good, Verdict::Unknown)
    }

    /// The status of one certificate and what told it: a stapled OCSP response that can
    /// be used decides; then a CRL file of its issuer; then its distribution points.
    async fn status<F, Fut>(
        &self,
        link: &Link,
        staple: Option<&[u8]>,
        fetch: &F,
    ) -> (Status, String)
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<bytes::Bytes, String>>,
    {
        let mut unknown = None;
        if let Some(staple) = staple {
            let source = "its stapled OCSP response says so".to_string();
            match ocsp::status(staple, &link.cert, &link.issuer, SystemTime::now()) {
                Ok(Status::Unknown(why)) | Err(why) => {
                    unknown = Some(format!("the stapled OCSP response: {why}"));
                }
                Ok(status) => return (status, source),
            }
        }
        for (path, crl) in &self.files {
            if crl.signed_by(&link.issuer).is_err() {
                continue;
            }
            let source = format!("the CRL file {} lists it", path.display());
            if crl.lists(&link.cert) {
                return (Status::Revoked, source);
            }
            if crl.current() {
                return (Status::Good, source);
            }
            unknown = Some(format!(
                "the CRL file {} is past its nextUpdate",
                path.display()
            ));
        }
        let urls = crl_urls(&link.cert);
        if urls.is_empty() {
            return (unknown.map_or(Status::Good, Status::Unknown), String::new());
        }
        let source = "its issuer's CRL lists it".to_string();
        let mut why = String::new();
        for url in &urls {
            let crl = match self.fetched.get(url) {
                Some(crl) => crl,
                None => match fetch(url.clone()).await.and_then(|b| fetched_crl(&b)) {
                    Ok(crl) => Arc::new(crl),
                    Err(e) => {
                        why = format!("the CRL at {url}: {e}");
                        continue;
                    }
                },
            };
            // Only a CRL its issuer signed is kept: another's cannot stand in for it.
            if let Err(e) = crl.signed_by(&link.issuer) {
                why = format!("the CRL at {url}: {e}");
                continue;
            }
            self.fetched.put(url, crl.clone());
            return match crl.lists(&link.cert) {
                true => (Status::Revoked, source),
                false => (Status::Good, source),
            };
        }
        (Status::Unknown(unknown.unwrap_or(why)), source)
    }
}

/// `the certificate` (the leaf, at depth 0) or `the certificate of NAME`.
fn who(cert: &X509Ref, depth: usize) -> String {
    if depth == 0 {
        return "the certificate".into();
    }
    crate::tls::client::subject(cert)
}

/// The CRL file at `path`, which must be a CRL.
fn read_crl_file(path: &Path) -> Result<Crl, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Crl::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// A CRL fetched from a distribution point: current, and kept at most a day.
fn fetched_crl(bytes: &[u8]) -> Result<Crl, String> {
    let mut crl = Crl::parse(bytes)?;
    if !crl.current() {
        return Err("the CRL is past its nextUpdate".into());
    }
    crl.until = crl.until.min(SystemTime::now() + MAX_LIFETIME);
    Ok(crl)
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

/// A CRL: the raw serials it lists and until when it holds. Its signature is checked
/// against an issuer with [`Crl::signed_by`], which remembers the keys it was checked
/// with.
#[derive(Debug)]
pub struct Crl {
    der: Vec<u8>,
    revoked: Vec<Vec<u8>>,
    until: SystemTime,
    /// The issuer keys (SPKI DER) this CRL was checked against, and whether it verified.
    checked: Mutex<Vec<(Vec<u8>, SignatureCheck)>>,
}

/// Whether a CRL's issuer and signature matched one key, and if not, why.
type SignatureCheck = Result<(), String>;

impl Crl {
    /// The CRL in `bytes` (DER or PEM).
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
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
        let until = match crl.next_update() {
            Some(next) => {
                let seconds = u64::try_from(next.timestamp()).unwrap_or(0);
                UNIX_EPOCH + Duration::from_secs(seconds)
            }
            None => SystemTime::now() + DEFAULT_LIFETIME,
        };
        let revoked = crl
            .iter_revoked_certificates()
            .map(|r| r.raw_serial().to_vec())
            .collect();
        Ok(Self {
            der: der.to_vec(),
            revoked,
            until,
            checked: Mutex::default(),
        })
    }

    /// Whether `issuer` issued this CRL: it is in the issuer's name and the issuer's
    /// key verifies its signature.
    pub fn signed_by(&self, issuer: &X509Ref) -> Result<(), String> {
        let issuer_der = issuer.to_der().map_err(|e| e.to_string())?;
        let (_, issuer) = x509_parser::parse_x509_certificate(&issuer_der)
            .map_err(|_| "cannot read the issuer".to_string())?;
        let key = issuer.public_key().raw.to_vec();
        let mut checked = self.checked.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, result)) = checked.iter().find(|(k, _)| *k == key) {
            return result.clone();
        }
        let result = (|| {
            let (_, crl) =
                x509_parser::parse_x509_crl(&self.der).map_err(|_| "not a CRL".to_string())?;
            if crl.issuer() != issuer.subject() {
                return Err("the CRL is not its issuer's".to_string());
            }
            crl.verify_signature(issuer.public_key())
                .map_err(|_| "the CRL's signature does not verify".to_string())
        })();
        checked.push((key, result.clone()));
        result
    }

    /// Whether the CRL is before its nextUpdate.
    pub fn current(&self) -> bool {
        self.until > SystemTime::now()
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

/// Fetched CRLs by URL, kept while current.
#[derive(Default)]
struct CrlCache {
    crls: Mutex<Vec<(String, Arc<Crl>)>>,
}

impl CrlCache {
    /// The CRL fetched from `url`, while it holds.
    fn get(&self, url: &str) -> Option<Arc<Crl>> {
        let crls = self.crls.lock().unwrap_or_else(PoisonError::into_inner);
        let found = crls.iter().find(|(u, crl)| u == url && crl.current());
        found.map(|(_, crl)| crl.clone())
    }

    /// Keeps `crl`, fetched from `url`.
    fn put(&self, url: &str, crl: Arc<Crl>) {
        let mut crls = self.crls.lock().unwrap_or_else(PoisonError::into_inner);
        crls.retain(|(u, _)| u != url);
        if crls.len() >= CACHE_SIZE {
            crls.remove(0);
        }
        crls.push((url.to_string(), crl));
    }
}
