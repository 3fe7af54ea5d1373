//! TLS termination with BoringSSL: contexts per certificate chosen by SNI, ALPN, version
//! and cipher policy, session tickets, optional or required client certificates, and the
//! facts of a finished handshake for hooks.

use super::CertifiedKey;
use super::HandshakeFailure;
use super::raw_public_key;
use crate::settings::{ClientAuth, TlsPolicy, TlsSettings, TlsVersion};
use boring::error::ErrorStack;
use boring::hash::MessageDigest;
use boring::ssl::{
    AlpnError, CertificateType, NameType, SniError, Ssl, SslContext, SslContextBuilder,
    SslCredential, SslMethod, SslOptions, SslRef, SslSessionCacheMode, SslVerifyMode, SslVersion,
    select_next_proto,
};
use boring::x509::store::X509StoreBuilder;
use boring::x509::{X509, X509Ref, X509VerifyError};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// What a finished TLS handshake tells about the client.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsFacts {
    /// The server name the client asked for (SNI).
    pub sni: Option<String>,
    /// The negotiated application protocol (`h2`, `http/1.1`).
    pub alpn: Option<String>,
    /// The protocol version (`TLSv1.3`).
    pub version: String,
    /// The cipher suite (empty on QUIC connections: quinn does not report it).
    pub cipher: String,
    /// The client's certificate, when one was presented and verified.
    pub client_certificate: Option<ClientCertificate>,
    /// Whether Oxy answered this TLS inside a tunnel with a certificate it minted (TLS
    /// interception): the facts are the inner connection's, not the outer one's.
    pub intercepted: bool,
    /// The compliance policy the connection was held to (`tls.policy`, or the ingress
    /// hook's choice).
    pub policy: TlsPolicy,
    /// SHA-256 (lowercase hex) of the raw public key the client was accepted by
    /// (`tls.client_pins`), when it presented one instead of a certificate.
    pub client_pin: Option<String>,
}

/// Facts of a verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// Subject, as `CN=client,O=Example`.
    pub subject: String,
    /// Subject alternative names, as `DNS:name`, `IP:address`, `email:address` and
    /// `URI:uri`.
    pub sans: Vec<String>,
    /// SHA-256 of the DER certificate, lowercase hex.
    pub sha256: String,
}

/// Why a TLS server context could not be built; `field` names the setting.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TlsSetupError {
    /// The endpoint's section at fault: `tls` or `tls_interception`.
    pub section: &'static str,
    /// The setting in `section` at fault (`certificates`, `cipher_list`, ...).
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

/// A [`TlsSetupError`] for the setting `field`.
pub(crate) fn setup_error(field: &'static str, e: impl std::fmt::Display) -> TlsSetupError {
    TlsSetupError {
        section: "tls",
        field,
        message: e.to_string(),
    }
}

/// Accepts TLS connections for one endpoint.
#[derive(Clone)]
pub struct TlsAcceptor {
    default: SslContext,
    min_version: TlsVersion,
}

impl TlsAcceptor {
    /// Builds the contexts from settings; `alpn` lists the protocols offered, in order of
    /// preference, in wire format (`b"\x02h2\x08http/1.1"`).
    pub fn new(settings: &TlsSettings, alpn: &'static [u8]) -> Result<Self, TlsSetupError> {
        let keys = settings
            .certificates
            .iter()
            .map(|cert| CertifiedKey::load(&cert.chain, &cert.key))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| setup_error("certificates", e))?;
        let raw = if settings.raw_public_key.as_os_str().is_empty() {
            None
        } else {
            let credential = raw_public_key::credential(&settings.raw_public_key)
                .map_err(|e| setup_error("raw_public_key", e))?;
            Some(credential)
        };
        if keys.is_empty() && raw.is_none() {
            return Err(setup_error(
                "certificates",
                "TLS needs at least one certificate or a raw_public_key",
            ));
        }
        let mut named = Vec::new();
        for (cert, key) in settings.certificates.iter().zip(&keys).skip(1) {
            let context = builder(settings, Some(key), None, alpn)?.build();
            for name in &cert.server_names {
                named.push((name.to_ascii_lowercase(), context.clone()));
            }
        }
        // The default context answers unless the SNI callback swaps in a named one.
        let mut default = builder(settings, keys.first(), raw.as_ref(), alpn)?;
        let named = Arc::new(named);
        default.set_servername_callback(move |ssl, _alert| {
            select_by_sni(ssl, &named);
            Ok::<(), SniError>(())
        });
        Ok(Self {
            default: default.build(),
            min_version: settings.min_version,
        })
    }

    /// Runs the server handshake on `stream`, held to `policy`.
    pub async fn accept<S>(
        &self,
        stream: S,
        policy: TlsPolicy,
    ) -> Result<tokio_boring::SslStream<S>, HandshakeFailure>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let other = |e: ErrorStack| HandshakeFailure::Other(e.to_string());
        let mut ssl = Ssl::new(&self.default).map_err(other)?;
        policy.apply(&mut ssl, self.min_version).map_err(other)?;
        tokio_boring::SslStreamBuilder::new(ssl, stream)
            .accept()
            .await
            .map_err(|e| {
                if let Some(pin) = e.ssl().and_then(raw_public_key::peer_pin)
                    && !pin.accepted
                {
                    return HandshakeFailure::ClientPin(pin.sha256.clone());
                }
                if let Some(refused) = e
                    .ssl()
                    .and_then(|ssl| ssl.verify_result().err())
                    .filter(|v| *v != X509VerifyError::INVALID_CALL)
                {
                    return HandshakeFailure::ClientCertificate(refused.to_string());
                }
                // tokio-boring keeps BoringSSL's error stack to itself, so its reason
                // (SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) is read from the message.
                let text = e.to_string();
                if text.contains("PEER_DID_NOT_RETURN_A_CERTIFICATE") {
                    return HandshakeFailure::NoClientCertificate;
                }
                HandshakeFailure::Other(text)
            })
    }
}

/// Swaps in the context whose server names match the SNI (exact, or `*.` wildcard).
fn select_by_sni(ssl: &mut SslRef, named: &[(String, SslContext)]) {
    let Some(sni) = ssl
        .servername(NameType::HOST_NAME)
        .map(str::to_ascii_lowercase)
    else {
        return;
    };
    let found = named.iter().find(|(pattern, _)| sni_matches(pattern, &sni));
    if let Some((_, context)) = found
        && let Err(e) = ssl.set_ssl_context(context)
    {
        tracing::warn!(%sni, error = %e, "cannot switch to the SNI certificate");
    }
}

/// Whether a lowercase `server_names` entry (exact, or `*.` wildcard for one label)
/// matches a lowercase SNI.
pub(crate) fn sni_matches(pattern: &str, sni: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => sni.split_once('.').is_some_and(|(_, rest)| rest == suffix),
        None => pattern == sni,
    }
}

fn builder(
    settings: &TlsSettings,
    key: Option<&CertifiedKey>,
    raw: Option<&SslCredential>,
    alpn: &'static [u8],
) -> Result<SslContextBuilder, TlsSetupError> {
    let mut b =
        SslContext::builder(SslMethod::tls()).map_err(|e| setup_error("certificates", e))?;
    if let Some(raw) = raw {
        b.add_credential(raw)
            .map_err(|e| setup_error("raw_public_key", e))?;
    }
    if let Some(key) = key {
        let Some(leaf) = key.chain.first() else {
            return Err(setup_error("certificates", "empty certificate chain"));
        };
        b.set_certificate(leaf)
            .map_err(|e| setup_error("certificates", e))?;
        for intermediate in key.chain.iter().skip(1) {
            b.add_extra_chain_cert(intermediate.clone())
                .map_err(|e| setup_error("certificates", e))?;
        }
        b.set_private_key(&key.key)
            .map_err(|e| setup_error("certificates", e))?;
    }
    let min = match settings.min_version {
        TlsVersion::Tls1_2 => SslVersion::TLS1_2,
        TlsVersion::Tls1_3 => SslVersion::TLS1_3,
    };
    b.set_min_proto_version(Some(min))
        .map_err(|e| setup_error("min_version", e))?;
    if !settings.cipher_list.is_empty() {
        b.set_cipher_list(&settings.cipher_list)
            .map_err(|e| setup_error("cipher_list", format!("not a usable cipher list: {e}")))?;
    }
    if !settings.curves.is_empty() {
        b.set_curves_list(&settings.curves)
            .map_err(|e| setup_error("curves", format!("not a usable curve list: {e}")))?;
    }
    if !settings.session_tickets {
        b.set_options(SslOptions::NO_TICKET);
    }
    b.set_session_id_context(b"oxy")
        .map_err(|e| setup_error("certificates", e))?;
    b.set_alpn_select_callback(move |_ssl, client| {
        select_next_proto(alpn, client).ok_or(AlpnError::NOACK)
    });
    let mut mode = SslVerifyMode::PEER;
    if settings.client_auth == ClientAuth::Required {
        mode |= SslVerifyMode::FAIL_IF_NO_PEER_CERT;
    }
    match settings.client_auth {
        ClientAuth::None => {}
        ClientAuth::Optional | ClientAuth::Required if !settings.client_pins.is_empty() => {
            accept_raw_public_keys(&mut b, settings, mode)?;
        }
        ClientAuth::Optional | ClientAuth::Required => {
            b.set_ca_file(&settings.client_ca).map_err(|e| {
                setup_error(
                    "client_ca",
                    format!("cannot load {}: {e}", settings.client_ca.display()),
                )
            })?;
            b.set_verify(mode);
        }
    }
    Ok(b)
}

/// Clients accepted by raw public key (`client_pins`) and, when `client_ca` is set, by
/// certificate. Resumption is off, so that every connection shows its key.
fn accept_raw_public_keys(
    b: &mut SslContextBuilder,
    settings: &TlsSettings,
    mode: SslVerifyMode,
) -> Result<(), TlsSetupError> {
    let pins = raw_public_key::parse_pins(&settings.client_pins)
        .map_err(|e| setup_error("client_pins", e))?;
    let x509 = if settings.client_ca.as_os_str().is_empty() {
        None
    } else {
        let pem = std::fs::read(&settings.client_ca).map_err(|e| {
            let path = settings.client_ca.display();
            setup_error("client_ca", format!("cannot load {path}: {e}"))
        })?;
        let mut store = X509StoreBuilder::new().map_err(|e| setup_error("client_ca", e))?;
        let cas = X509::stack_from_pem(&pem).map_err(|e| setup_error("client_ca", e))?;
        for ca in cas {
            store
                .add_cert(ca)
                .map_err(|e| setup_error("client_ca", e))?;
        }
        Some(Arc::new(store.build()))
    };
    b.set_server_certificate_types(&[CertificateType::RAW_PUBLIC_KEY, CertificateType::X509])
        .map_err(|e| setup_error("client_pins", e))?;
    b.set_custom_verify_callback(mode, raw_public_key::verifier(Arc::new(pins), x509));
    b.set_options(SslOptions::NO_TICKET);
    b.set_session_cache_mode(SslSessionCacheMode::OFF);
    Ok(())
}

/// The facts of a finished handshake.
pub fn facts(ssl: &SslRef) -> TlsFacts {
    TlsFacts {
        sni: ssl.servername(NameType::HOST_NAME).map(str::to_string),
        alpn: ssl
            .selected_alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
        version: ssl.version_str().to_string(),
        cipher: ssl
            .current_cipher()
            .map(|c| c.name().to_string())
            .unwrap_or_default(),
        client_certificate: ssl.peer_certificate().map(|cert| certificate_facts(&cert)),
        intercepted: false,
        policy: TlsPolicy::Default,
        client_pin: raw_public_key::peer_pin(ssl)
            .filter(|pin| pin.accepted)
            .map(|pin| pin.sha256.clone()),
    }
}

/// The facts hooks see of a verified client certificate.
pub fn certificate_facts(cert: &X509Ref) -> ClientCertificate {
    ClientCertificate {
        subject: cert
            .subject_name()
            .entries()
            .map(|entry| {
                let name = entry.object().nid().short_name().unwrap_or("?");
                let value = entry
                    .data()
                    .as_utf8()
                    .map(|v| v.to_string())
                    .unwrap_or_default();
                format!("{name}={value}")
            })
            .collect::<Vec<_>>()
            .join(","),
        sans: cert
            .subject_alt_names()
            .map(|names| {
                names
                    .iter()
                    .filter_map(|n| {
                        n.dnsname()
                            .map(|d| format!("DNS:{d}"))
                            .or_else(|| n.email().map(|e| format!("email:{e}")))
                            .or_else(|| n.uri().map(|u| format!("URI:{u}")))
                            .or_else(|| n.ipaddress().and_then(ip_text))
                    })
                    .collect()
            })
            .unwrap_or_default(),
        sha256: cert
            .digest(MessageDigest::sha256())
            .map(|d| super::hex(&d))
            .unwrap_or_default(),
    }
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    let ip: std::net::IpAddr = match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok()?.into(),
        16 => <[u8; 16]>::try_from(bytes).ok()?.into(),
        _ => return None,
    };
    Some(format!("IP:{ip}"))
}

/// TLS handshakes.
#[crate::metrics]
pub mod oxy_tls {
    /// TLS handshakes completed, by endpoint and protocol version.
    pub fn handshakes_total(endpoint: &str, version: &str) -> Counter;

    /// TLS handshakes failed, by endpoint and reason (`timeout`, `client_certificate`,
    /// `client_pin`, `handshake`).
    pub fn handshake_failures_total(endpoint: &str, reason: &str) -> Counter;

    /// TLS ClientHellos found in tunnels the tunnel hook decapsulated, by endpoint and
    /// outcome (`intercepted`, `passed`, `blocked`, `handshake_failed`).
    pub fn interceptions_total(endpoint: &str, outcome: &str) -> Counter;

    /// Upstream certificates (or raw public keys) that failed verification, by endpoint
    /// and reason (`unknown_issuer`, `expired`, `not_yet_valid`, `hostname_mismatch`,
    /// `key_usage`, `name_constraints`, `invalid_ca`, `self_signed`, `sha1`, `weak_key`,
    /// `pin_mismatch`, `revoked`, `revocation_unknown`, `other`).
    pub fn upstream_verification_failures_total(endpoint: &str, reason: &str) -> Counter;

    /// Upstream certificates whose revocation status could not be told and that passed
    /// under `http.client.revocation: soft_fail`, by endpoint.
    pub fn revocation_unknown_total(endpoint: &str) -> Counter;
}
