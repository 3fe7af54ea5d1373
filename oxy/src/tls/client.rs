//! The upstream TLS client, in one place: how Oxy speaks TLS to upstreams (roots or a
//! configured CA, ALPN, compliance policy, raw public keys) and what it refuses beyond
//! BoringSSL's chain and name checks, as a browser does: TLS below 1.2, SHA-1 signatures
//! and small keys in the chain.

use super::revocation::Anchors;
use super::session_cache::SessionCache;
use super::{aia, raw_public_key};
use crate::hooks::Target;
use crate::settings::{HttpClientSettings, TlsPolicy, TlsVersion};
use crate::tls::server::{ClientCertificate, certificate_facts, oxy_tls};
use boring::error::ErrorStack;
use boring::nid::Nid;
use boring::pkey::Id;
use boring::ssl::{
    CertificateType, SslConnector, SslConnectorBuilder, SslMethod, SslRef, SslSessionCacheMode,
    SslVerifyMode, SslVersion,
};
use boring::x509::store::{X509Store, X509StoreBuilder};
use boring::x509::{X509, X509Ref, X509VerifyError};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// The smallest RSA key accepted in an upstream's chain, in bits.
const MIN_RSA_BITS: u32 = 2048;
/// The smallest elliptic-curve key accepted in an upstream's chain, in bits.
const MIN_EC_BITS: u32 = 256;

/// What one upstream TLS connection is held to beyond the client's settings.
#[derive(Default, Clone, Copy)]
pub struct Overrides<'a> {
    /// Application protocols offered instead of `h2` and `http/1.1` (wire format).
    pub alpn: Option<&'a [u8]>,
    /// The compliance policy, instead of `http.client.tls_policy`.
    pub policy: Option<TlsPolicy>,
    /// The pin (hex) of the raw public key the upstream must present.
    pub pin: Option<&'a str>,
    /// The verify store of an intermediate fetched from the caIssuers URL of the
    /// certificate the upstream sent, to complete its chain (it must still end at a
    /// trusted root).
    pub completion: Option<&'a X509Store>,
    /// Whether a chain that lacks an issuer with a caIssuers URL is answered with
    /// [`TlsConnectError::MissingIssuer`] (the caller fetches it and tries again) rather
    /// than refused.
    pub may_fetch_issuer: bool,
}

/// What an upstream's TLS showed once verified, for the response hook: it is in the
/// extensions of every response that came over TLS, shared by the responses of one
/// connection (`response.extensions.get::<Arc<UpstreamTlsFacts>>()` in `on_response`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTlsFacts {
    /// The protocol version (`TLSv1.3`).
    pub version: String,
    /// The cipher suite.
    pub cipher: String,
    /// The negotiated application protocol (`h2`, `http/1.1`).
    pub alpn: Option<String>,
    /// The upstream's certificate, verified against the roots or `ca_file` and past the
    /// browser checks (`None` for a raw public key).
    pub certificate: Option<ClientCertificate>,
    /// SHA-256 (hex) of the raw public key the upstream presented, accepted by a pin.
    pub pin: Option<String>,
    /// Whether the connection resumed a session of an earlier one (its chain was
    /// verified then; its dates, key sizes, signatures and, unless `revocation: off`,
    /// revocation are checked again now).
    pub resumed: bool,
}

impl UpstreamTlsFacts {
    /// The facts of a verified connection.
    pub fn of(ssl: &SslRef) -> Self {
        Self {
            version: ssl.version_str().to_string(),
            cipher: ssl
                .current_cipher()
                .map(|c| c.name().to_string())
                .unwrap_or_default(),
            alpn: ssl
                .selected_alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            certificate: ssl.peer_certificate().map(|cert| certificate_facts(&cert)),
            pin: raw_public_key::peer_pin(ssl)
                .filter(|pin| pin.accepted)
                .map(|pin| pin.sha256.clone()),
            resumed: ssl.session_reused(),
        }
    }
}

/// Why TLS with an upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsConnectError {
    /// The handshake failed for a reason other than the upstream's credentials.
    #[error("TLS with the upstream failed: {0}")]
    Handshake(String),
    /// The upstream's chain lacks an intermediate that its certificate says can be
    /// fetched from `url` (nothing counted yet: the caller fetches it and tries again).
    #[error("certificate verification failed for {host}: its issuer is at {url}")]
    MissingIssuer {
        /// The upstream, as `host:port`.
        host: String,
        /// The caIssuers URL.
        url: String,
    },
    /// The upstream's certificate or raw public key was refused.
    #[error("certificate verification failed for {host}: {reason}")]
    Refused {
        /// The upstream, as `host:port`.
        host: String,
        /// Why, in words.
        reason: String,
    },
}

/// An endpoint's upstream TLS client: its BoringSSL connector, its sessions and where
/// its roots are.
pub struct UpstreamConnector {
    ssl: SslConnector,
    /// Sessions for resumption (`None`: not resumed, with raw public keys pinned).
    sessions: Option<Arc<SessionCache>>,
    /// `http.client.ca_file` (empty: the system's roots).
    ca_file: PathBuf,
    /// The roots themselves, read when first needed (to complete a chain, or to find
    /// the root that issued a certificate).
    roots: tokio::sync::OnceCell<Arc<Anchors>>,
}

impl UpstreamConnector {
    /// The roots, read once off the async threads (none, logged, when they cannot be).
    pub async fn roots(&self) -> Arc<Anchors> {
        let read = || async {
            let ca_file = self.ca_file.clone();
            let loaded = tokio::task::spawn_blocking(move || load_roots(&ca_file)).await;
            match loaded.map_err(io::Error::other).and_then(|roots| roots) {
                Ok(roots) => Arc::new(Anchors::new(roots)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the upstream client's roots");
                    Arc::default()
                }
            }
        };
        self.roots.get_or_init(read).await.clone()
    }

    /// The completion made of the roots and `issuer`, an intermediate fetched to complete
    /// a chain. The fetched certificate comes from a URL an unverified certificate named,
    /// so it is used only if it is a CA that itself verifies against the roots: a
    /// self-signed or foreign certificate never becomes trusted this way.
    pub async fn completion(&self, issuer: X509) -> Result<aia::Completion, String> {
        let roots = self.roots().await;
        let store = |extra: Option<&X509>| -> Result<X509Store, ErrorStack> {
            let mut store = X509StoreBuilder::new()?;
            for root in roots.certs() {
                store.add_cert(root.clone())?;
            }
            if let Some(extra) = extra {
                store.add_cert(extra.clone())?;
            }
            Ok(store.build())
        };
        let only_roots = store(None).map_err(|e| e.to_string())?;
        if issuer.issued(&issuer).is_ok() {
            return Err("it is self-signed, not an intermediate".into());
        }
        if let Some(problem) = crate::tls::ca_problem(&issuer) {
            return Err(problem);
        }
        let verified = (|| -> Result<bool, ErrorStack> {
            let chain = boring::stack::Stack::new()?;
            let mut context = boring::x509::X509StoreContext::new()?;
            context.init(&only_roots, &issuer, &chain, |c| c.verify_cert())
        })();
        if !matches!(verified, Ok(true)) {
            return Err("it does not chain to a trusted root".into());
        }
        let store = store(Some(&issuer)).map_err(|e| e.to_string())?;
        Ok(aia::Completion { issuer, store })
    }
}

/// The roots in `ca_file`, or the system's.
fn load_roots(ca_file: &Path) -> io::Result<Vec<X509>> {
    if !ca_file.as_os_str().is_empty() {
        let pem = std::fs::read(ca_file)?;
        return X509::stack_from_pem(&pem).map_err(io::Error::other);
    }
    let native = rustls_native_certs::load_native_certs();
    Ok(native
        .certs
        .iter()
        .filter_map(|der| X509::from_der(der).ok())
        .collect())
}

/// The connector of an endpoint's upstream client, from its `http.client` settings.
pub fn connector(settings: &HttpClientSettings) -> io::Result<UpstreamConnector> {
    let mut tls = SslConnector::builder(SslMethod::tls()).map_err(io::Error::other)?;
    if settings.ca_file.as_os_str().is_empty() {
        tls.set_default_verify_paths().map_err(io::Error::other)?;
    } else {
        tls.set_ca_file(&settings.ca_file)
            .map_err(|e| io::Error::other(format!("{}: {e}", settings.ca_file.display())))?;
    }
    tls.set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(io::Error::other)?;
    tls.set_alpn_protos(b"\x02h2\x08http/1.1")
        .map_err(io::Error::other)?;
    if settings.revocation != crate::settings::Revocation::Off {
        tls.enable_ocsp_stapling();
    }
    settings
        .tls_policy
        .apply_to_context(&mut tls)
        .map_err(io::Error::other)?;
    if !settings.raw_public_key.as_os_str().is_empty() {
        let credential =
            raw_public_key::credential(&settings.raw_public_key).map_err(io::Error::other)?;
        tls.add_credential(&credential).map_err(io::Error::other)?;
    }
    let sessions = if settings.server_pins.is_empty() {
        let sessions = Arc::new(SessionCache::default());
        tls.set_session_cache_mode(SslSessionCacheMode::CLIENT | SslSessionCacheMode::NO_INTERNAL);
        let keep = sessions.clone();
        tls.set_new_session_callback(move |ssl, session| keep.keep(ssl, session));
        Some(sessions)
    } else {
        let pins = raw_public_key::parse_pins(&settings.server_pins).map_err(io::Error::other)?;
        expect_raw_public_key(&mut tls, pins).map_err(io::Error::other)?;
        None
    };
    Ok(UpstreamConnector {
        ssl: tls.build(),
        sessions,
        ca_file: settings.ca_file.clone(),
        roots: tokio::sync::OnceCell::new(),
    })
}

/// Counts `label` for `endpoint` and makes the refusal.
pub fn refused(
    endpoint: &str,
    label: &'static str,
    target: &Target,
    reason: String,
) -> TlsConnectError {
    oxy_tls::upstream_verification_failures_total(endpoint, label).inc();
    TlsConnectError::Refused {
        host: target.to_string(),
        reason,
    }
}

/// Asks upstreams for a raw public key and accepts only `pins`.
fn expect_raw_public_key(
    tls: &mut SslConnectorBuilder,
    pins: Vec<raw_public_key::Pin>,
) -> Result<(), ErrorStack> {
    tls.set_server_certificate_types(&[CertificateType::RAW_PUBLIC_KEY])?;
    let verify = raw_public_key::verifier(Arc::new(pins), None);
    tls.set_custom_verify_callback(SslVerifyMode::PEER, verify);
    Ok(())
}

/// TLS to `target` over `stream` with `connector`: the target's name as SNI and as the
/// name its certificate must carry, then the browser checks on the chain. A refusal is
/// counted for `endpoint` by reason; no byte of a request has been sent then.
pub async fn connect<S>(
    connector: &UpstreamConnector,
    endpoint: &str,
    target: &Target,
    stream: S,
    overrides: Overrides<'_>,
) -> Result<tokio_boring::SslStream<S>, TlsConnectError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let handshake = |e: &dyn std::fmt::Display| TlsConnectError::Handshake(e.to_string());
    let mut config = connector.ssl.configure().map_err(|e| handshake(&e))?;
    if let Some(alpn) = overrides.alpn {
        config.set_alpn_protos(alpn).map_err(|e| handshake(&e))?;
    }
    if let Some(policy) = overrides.policy {
        policy
            .apply(&mut config, TlsVersion::Tls1_2)
            .map_err(|e| handshake(&e))?;
    }
    if let Some(pin) = overrides.pin {
        let pin = raw_public_key::parse_pin(pin).map_err(|e| handshake(&e))?;
        config
            .set_server_certificate_types(&[CertificateType::RAW_PUBLIC_KEY])
            .map_err(|e| handshake(&e))?;
        let verify = raw_public_key::verifier(Arc::new(vec![pin]), None);
        config.set_custom_verify_callback(SslVerifyMode::PEER, verify);
    }
    if let Some(store) = overrides.completion {
        config
            .set_verify_cert_store(store.clone())
            .map_err(|e| handshake(&e))?;
    }
    // A session is offered only to the upstream and under the terms it was made with;
    // a raw public key is checked afresh on every connection.
    if let Some(sessions) = connector
        .sessions
        .as_ref()
        .filter(|_| overrides.pin.is_none())
    {
        let key = format!("{target} {:?} {:?}", overrides.alpn, overrides.policy);
        if let Some(session) = sessions.offer(&key) {
            // SAFETY: `session` was made by a connection of `connector.ssl`'s context,
            // the context of `config`: the cache belongs to this connector alone.
            #[allow(unsafe_code)]
            unsafe {
                config.set_session(&session).map_err(|e| handshake(&e))?;
            }
        }
        SessionCache::mark(&mut config, key);
    }
    let refuse = |label: &'static str, reason: String| refused(endpoint, label, target, reason);
    let host = target.host.to_string();
    let host = host.trim_matches(['[', ']']);
    let stream = match tokio_boring::connect(config, host, stream).await {
        Ok(stream) => stream,
        Err(e) => {
            if let Some(pin) = e.ssl().and_then(raw_public_key::peer_pin)
                && !pin.accepted
            {
                let reason = format!("raw public key {} matches no pin", pin.sha256);
                return Err(refuse("pin_mismatch", reason));
            }
            let failed = e.ssl().and_then(|ssl| ssl.verify_result().err());
            let failed = failed.filter(|v| *v != X509VerifyError::INVALID_CALL);
            if failed == Some(X509VerifyError::UNABLE_TO_GET_ISSUER_CERT_LOCALLY)
                && overrides.may_fetch_issuer
                && let Some(url) = e.ssl().and_then(missing_issuer_url)
            {
                return Err(TlsConnectError::MissingIssuer {
                    host: target.to_string(),
                    url,
                });
            }
            return Err(match failed {
                Some(failed) => refuse(verification_label(failed), failed.to_string()),
                None => handshake(&e),
            });
        }
    };
    if let Some((label, reason)) = weakness(stream.ssl()) {
        return Err(refuse(label, reason));
    }
    // A resumed session skips verification: its certificate must still be in date.
    if stream.ssl().session_reused() && expired(stream.ssl()) {
        return Err(refuse("expired", "certificate has expired".into()));
    }
    Ok(stream)
}

/// The caIssuers URL of the last certificate the upstream sent (the one whose issuer
/// is missing).
fn missing_issuer_url(ssl: &SslRef) -> Option<String> {
    let chain = ssl.peer_cert_chain()?;
    let last = chain.iter().next_back()?;
    aia::ca_issuers_url(last)
}

/// What a browser would refuse in the chain the upstream sent (its own self-signed
/// root aside): a SHA-1 signature, or an RSA key under 2048 bits or an EC key under 256.
fn weakness(ssl: &SslRef) -> Option<(&'static str, String)> {
    let chain = ssl.peer_cert_chain()?;
    for cert in chain {
        let self_signed = cert.issued(cert).is_ok();
        let signature = cert.signature_algorithm().object().nid();
        let sha1 = [
            Nid::SHA1WITHRSAENCRYPTION,
            Nid::ECDSA_WITH_SHA1,
            Nid::DSAWITHSHA1,
            Nid::SHA1WITHRSA,
        ];
        if !self_signed && sha1.contains(&signature) {
            return Some(("sha1", format!("{} is signed with SHA-1", subject(cert))));
        }
        if let Ok(key) = cert.public_key() {
            let bits = key.bits();
            let weak = match key.id() {
                Id::RSA => bits < MIN_RSA_BITS,
                Id::EC => bits < MIN_EC_BITS,
                _ => false,
            };
            if weak {
                let reason = format!("{} has a {bits}-bit key", subject(cert));
                return Some(("weak_key", reason));
            }
        }
    }
    None
}

/// Whether the upstream's certificate is past its notAfter.
fn expired(ssl: &SslRef) -> bool {
    let Some(leaf) = ssl.peer_certificate() else {
        return false;
    };
    let now = boring::asn1::Asn1Time::days_from_now(0);
    now.and_then(|now| leaf.not_after().compare(&now))
        .is_ok_and(|order| order == std::cmp::Ordering::Less)
}

/// A certificate's subject, for messages.
pub(crate) fn subject(cert: &X509Ref) -> String {
    let names: Vec<String> = cert
        .subject_name()
        .entries()
        .filter_map(|entry| entry.data().as_utf8().ok().map(|v| v.to_string()))
        .collect();
    match names.last() {
        Some(name) => format!("the certificate of {name}"),
        None => "a certificate".into(),
    }
}

/// The metric label of a certificate verification failure.
fn verification_label(e: X509VerifyError) -> &'static str {
    match e {
        X509VerifyError::UNABLE_TO_GET_ISSUER_CERT
        | X509VerifyError::UNABLE_TO_GET_ISSUER_CERT_LOCALLY
        | X509VerifyError::UNABLE_TO_VERIFY_LEAF_SIGNATURE => "unknown_issuer",
        X509VerifyError::CERT_HAS_EXPIRED => "expired",
        X509VerifyError::CERT_NOT_YET_VALID => "not_yet_valid",
        X509VerifyError::HOSTNAME_MISMATCH | X509VerifyError::IP_ADDRESS_MISMATCH => {
            "hostname_mismatch"
        }
        X509VerifyError::DEPTH_ZERO_SELF_SIGNED_CERT
        | X509VerifyError::SELF_SIGNED_CERT_IN_CHAIN => "self_signed",
        X509VerifyError::INVALID_PURPOSE => "key_usage",
        X509VerifyError::PERMITTED_VIOLATION
        | X509VerifyError::EXCLUDED_VIOLATION
        | X509VerifyError::NAME_CONSTRAINTS_WITHOUT_SANS => "name_constraints",
        X509VerifyError::INVALID_CA | X509VerifyError::PATH_LENGTH_EXCEEDED => "invalid_ca",
        _ => "other",
    }
}
