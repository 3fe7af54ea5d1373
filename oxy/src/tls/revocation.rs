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
/// How long a fetched CRL without a nextUpdate is kept.
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

/// What identifies a certificate as a trust anchor: its subject and key (DER).
type Identity = (Option<Vec<u8>>, Option<Vec<u8>>);

fn identity(cert: &X509Ref) -> Identity {
    let name = cert.subject_name().to_der().ok();
    let key = cert.public_key().and_then(|k| k.public_key_to_der()).ok();
    (name, key)
}

/// The trust anchors, with their identities worked out once (not per connection).
#[derive(Default)]
pub struct Anchors {
    certs: Vec<X509>,
    identities: Vec<Identity>,
}

impl Anchors {
    /// The anchors `certs`.
    pub fn new(certs: Vec<X509>) -> Self {
        let identities = certs.iter().map(|cert| identity(cert)).collect();
        Self { certs, identities }
    }

    /// The anchors' certificates.
    pub fn certs(&self) -> &[X509] {
        &self.certs
    }

    /// Whether `cert` is one of them (by subject and key: a cross-signed copy counts).
    fn contain(&self, cert: &X509Ref) -> bool {
        self.identities.contains(&identity(cert))
    }
}

/// The certificates of a verified chain below its trust anchor, each with its issuer:
/// `sent` is what the upstream sent (leaf first), `fetched` an intermediate completed
/// from AIA, `roots` the trust anchors. An issuer is a candidate that carries the
/// certificate's issuer name and whose key verifies its signature, never merely the next
/// certificate sent.
pub fn links(sent: &[X509], fetched: Option<&X509>, roots: &Anchors) -> Result<Vec<Link>, String> {
    let Some(leaf) = sent.first() else {
        return Ok(Vec::new());
    };
    // The trust anchors first: a server may also send a cross-signed copy of a root.
    let candidates: Vec<&X509> = (roots.certs.iter())
        .chain(fetched)
        .chain(&sent[1..])
        .collect();
    // A self-signed certificate, or one with a root's name and key, ends the walk.
    let is_anchor = |cert: &X509Ref| cert.issued(cert).is_ok() || roots.contain(cert);
    let mut links = Vec::new();
    let mut cert = leaf.clone();
    while !is_anchor(&cert) {
        if links.len() == MAX_DEPTH {
            return Err(format!("the chain is longer than {MAX_DEPTH} certificates"));
        }
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

    /// The status of one certificate and what told it: a CRL file of its issuer that
    /// lists it; else a stapled OCSP response that can be used; else a current CRL file
    /// of its issuer; else the CRLs of its distribution points.
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
        let files: Vec<_> = (self.files.iter())
            .filter(|(_, crl)| crl.signed_by(&link.issuer).is_ok())
            .collect();
        let file_says = |path: &Path| format!("the CRL file {} lists it", path.display());
        // A revocation stays true once listed, even in a CRL past its nextUpdate.
        if let Some((path, _)) = files.iter().find(|(_, crl)| crl.lists(&link.cert)) {
            return (Status::Revoked, file_says(path));
        }
        let mut unknown = Vec::new();
        if let Some(staple) = staple {
            let source = "its stapled OCSP response says so".to_string();
            match ocsp::status(staple, &link.cert, &link.issuer, SystemTime::now()) {
                Ok(Status::Unknown(why)) | Err(why) => {
                    unknown.push(format!("the stapled OCSP response: {why}"));
                }
                Ok(status) => return (status, source),
            }
        }
        for (path, crl) in &files {
            if crl.current() {
                return (Status::Good, file_says(path));
            }
            unknown.push(format!(
                "the CRL file {} is past its nextUpdate",
                path.display()
            ));
        }
        let urls = crl_urls(&link.cert);
        if urls.is_empty() {
            let status = if unknown.is_empty() {
                Status::Good
            } else {
                Status::Unknown(unknown.join("; "))
            };
            return (status, String::new());
        }
        let source = "its issuer's CRL lists it".to_string();
        for url in &urls {
            match self.crl_at(url, &link.issuer, fetch).await {
                Ok(crl) if crl.lists(&link.cert) => return (Status::Revoked, source),
                Ok(_) => return (Status::Good, source),
                Err(e) => unknown.push(format!("the CRL at {url}: {e}")),
            }
        }
        (Status::Unknown(unknown.join("; ")), source)
    }

    /// The current CRL at `url` signed by `issuer`: the one kept, else a fresh one (kept
    /// once its signature verified, so another's cannot stand in for it).
    async fn crl_at<F, Fut>(
        &self,
        url: &str,
        issuer: &X509Ref,
        fetch: &F,
    ) -> Result<Arc<Crl>, String>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<bytes::Bytes, String>>,
    {
        if let Some(crl) = self.fetched.get(url)
            && crl.signed_by(issuer).is_ok()
        {
            return Ok(crl);
        }
        let crl = Arc::new(fetched_crl(&fetch(url.to_string()).await?)?);
        crl.signed_by(issuer)?;
        self.fetched.put(url, crl.clone());
        Ok(crl)
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
pub(crate) fn read_crl_file(path: &Path) -> Result<Crl, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Crl::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// A CRL fetched from a distribution point: current, and kept at most a day.
fn fetched_crl(bytes: &[u8]) -> Result<Crl, String> {
    let mut crl = Crl::parse(bytes)?;
    if !crl.current() {
        return Err("the CRL is past its nextUpdate".into());
    }
    let now = SystemTime::now();
    let until = crl.until.unwrap_or(now + DEFAULT_LIFETIME);
    crl.until = Some(until.min(now + MAX_LIFETIME));
    Ok(crl)
}

/// The `http://` URLs of `cert`'s CRL distribution points.
fn crl_urls(cert: &X509Ref) -> Vec<String> {
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

/// A CRL: the raw serials it lists and until when it holds (its nextUpdate; `None`:
/// it names none). Its signature is checked against an issuer with [`Crl::signed_by`],
/// which remembers the issuers it was checked against.
#[derive(Debug)]
pub(crate) struct Crl {
    der: Vec<u8>,
    revoked: Vec<Vec<u8>>,
    until: Option<SystemTime>,
    /// The issuers (subject and SPKI, DER) this CRL was checked against, and whether it
    /// verified.
    checked: Mutex<Vec<(Vec<u8>, SignatureCheck)>>,
}

/// Whether a CRL's issuer and signature matched one key, and if not, why.
type SignatureCheck = Result<(), String>;

impl Crl {
    /// The CRL in `bytes` (DER or PEM).
    fn parse(bytes: &[u8]) -> Result<Self, String> {
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
        // Partitioned, delta and indirect CRLs mark themselves with critical extensions:
        // applied as complete CRLs they would clear what they do not cover.
        let critical = crl.extensions().iter().any(|e| e.critical)
            || crl
                .iter_revoked_certificates()
                .any(|r| r.extensions().iter().any(|e| e.critical));
        if critical {
            return Err(
                "a partitioned, delta or indirect CRL (a critical extension) is not supported"
                    .into(),
            );
        }
        let until = crl.next_update().map(|next| {
            let seconds = u64::try_from(next.timestamp()).unwrap_or(0);
            UNIX_EPOCH + Duration::from_secs(seconds)
        });
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
    fn signed_by(&self, issuer: &X509Ref) -> Result<(), String> {
        let issuer_der = issuer.to_der().map_err(|e| e.to_string())?;
        let (_, issuer) = x509_parser::parse_x509_certificate(&issuer_der)
            .map_err(|_| "cannot read the issuer".to_string())?;
        let key = [issuer.subject().as_raw(), issuer.public_key().raw].concat();
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

    /// Whether the CRL is before its nextUpdate (or names none).
    fn current(&self) -> bool {
        self.until.is_none_or(|until| until > SystemTime::now())
    }

    /// Whether `cert` is listed.
    fn lists(&self, cert: &X509Ref) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::test_pki::{cert, key};

    #[test]
    fn links_pair_each_certificate_with_what_signed_it_up_to_the_anchor() {
        let (root_key, int_key, leaf_key) = (key(), key(), key());
        let root = cert("Root", 1, &root_key, None, true, false);
        let int = cert(
            "Intermediate",
            2,
            &int_key,
            Some((&root, &root_key)),
            true,
            false,
        );
        let leaf = cert("leaf", 3, &leaf_key, Some((&int, &int_key)), false, false);
        let anchors = Anchors::new(vec![root.clone()]);
        let chain = links(&[leaf.clone(), int.clone()], None, &anchors).unwrap();
        let pairs: Vec<_> = chain
            .iter()
            .map(|l| (subject(&l.cert), subject(&l.issuer)))
            .collect();
        let names = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            pairs,
            [names("leaf", "Intermediate"), names("Intermediate", "Root")]
        );
        // The intermediate fetched from AIA serves as well as one sent.
        assert_eq!(
            links_of(std::slice::from_ref(&leaf), Some(&int), &anchors),
            2
        );
        // Without it, the leaf's issuer is not known.
        let missing = links(std::slice::from_ref(&leaf), None, &anchors)
            .err()
            .unwrap();
        assert_eq!(missing, "the issuer of the certificate is not known");
        // A certificate sent after the leaf that did not sign it is not its issuer.
        let stranger_key = key();
        let stranger = cert(
            "Intermediate",
            4,
            &stranger_key,
            Some((&root, &root_key)),
            true,
            false,
        );
        assert_eq!(
            links_of(&[leaf.clone(), stranger, int.clone()], None, &anchors),
            2
        );
    }

    #[test]
    fn a_cross_signed_copy_of_an_anchor_ends_the_walk() {
        let (old_key, root_key, leaf_key) = (key(), key(), key());
        let old_root = cert("Old Root", 1, &old_key, None, true, false);
        let root = cert("Root", 2, &root_key, None, true, false);
        // The anchor's name and key, issued by an older root the client does not trust.
        let cross = cert(
            "Root",
            3,
            &root_key,
            Some((&old_root, &old_key)),
            true,
            false,
        );
        let leaf = cert("leaf", 4, &leaf_key, Some((&root, &root_key)), false, false);
        let anchors = Anchors::new(vec![root]);
        let chain = links(&[leaf, cross], None, &anchors).unwrap();
        assert_eq!(chain.len(), 1, "only the leaf is checked");
        assert!(anchors.contain(&chain[0].issuer));
    }

    #[test]
    fn a_chain_longer_than_the_limit_is_an_error() {
        let keys: Vec<_> = (0..=MAX_DEPTH + 1).map(|_| key()).collect();
        let mut chain = vec![cert("c0", 1, &keys[0], None, true, false)];
        for (i, k) in keys.iter().enumerate().skip(1) {
            let issuer = (chain.last().unwrap(), &keys[i - 1]);
            let cert = cert(&format!("c{i}"), i as u32 + 1, k, Some(issuer), true, false);
            chain.push(cert);
        }
        let anchors = Anchors::new(vec![chain[0].clone()]);
        chain.reverse();
        let long = links(&chain, None, &anchors).err().unwrap();
        assert_eq!(
            long,
            format!("the chain is longer than {MAX_DEPTH} certificates")
        );
        // One certificate fewer below the anchor is within the limit.
        assert_eq!(links_of(&chain[1..], None, &anchors), MAX_DEPTH);
    }

    fn links_of(sent: &[X509], fetched: Option<&X509>, anchors: &Anchors) -> usize {
        links(sent, fetched, anchors).unwrap().len()
    }

    fn subject(cert: &X509) -> String {
        let entry = cert.subject_name().entries().next().unwrap();
        entry.data().as_utf8().unwrap().to_string()
    }
}
