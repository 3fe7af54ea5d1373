//! QUIC server configuration for HTTP/3: rustls (TLS 1.3, ALPN `h3`) with the endpoint's
//! certificates chosen by SNI, optional client certificates, and quinn's transport knobs.

use super::quic_raw_public_key::{self, PinVerifier};
use super::server::{
    ClientCertificate, TlsFacts, TlsSetupError, certificate_facts, setup_error, sni_matches,
};
use super::{CertifiedKey, raw_public_key};
use crate::settings::{ClientAuth, H3Settings, TlsPolicy, TlsSettings};
use quinn::crypto::rustls::{HandshakeData, QuicServerConfig};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{
    AlwaysResolvesServerRawPublicKeys, ClientHello, ResolvesServerCert, WebPkiClientVerifier,
};
use rustls::sign;
use std::sync::Arc;

/// The quinn server configuration of an endpoint with `http.h3.enabled`.
pub fn server_config(
    tls: &TlsSettings,
    h3: &H3Settings,
) -> Result<quinn::ServerConfig, TlsSetupError> {
    let provider = Arc::new(
        tls.policy
            .restrict_quic(rustls::crypto::ring::default_provider()),
    );
    let resolver = resolver(tls, &provider)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| setup_error("min_version", e))?;
    let mut config = match tls.client_auth {
        ClientAuth::None => builder.with_no_client_auth().with_cert_resolver(resolver),
        // Raw public keys only when no CA is set: rustls takes one kind per endpoint.
        ClientAuth::Optional | ClientAuth::Required
            if tls.client_ca.as_os_str().is_empty() && !tls.client_pins.is_empty() =>
        {
            let pins = raw_public_key::parse_pins(&tls.client_pins)
                .map_err(|e| setup_error("client_pins", e))?;
            let mandatory = tls.client_auth == ClientAuth::Required;
            let verifier = PinVerifier::new(pins, &provider, mandatory);
            builder
                .with_client_cert_verifier(Arc::new(verifier))
                .with_cert_resolver(resolver)
        }
        ClientAuth::Optional | ClientAuth::Required => {
            let mut roots = rustls::RootCertStore::empty();
            let pem = std::fs::read(&tls.client_ca).map_err(|e| {
                setup_error(
                    "client_ca",
                    format!("cannot read {}: {e}", tls.client_ca.display()),
                )
            })?;
            let cas = boring::x509::X509::stack_from_pem(&pem)
                .map_err(|e| setup_error("client_ca", e))?;
            for ca in cas {
                let der = ca.to_der().map_err(|e| setup_error("client_ca", e))?;
                roots
                    .add(CertificateDer::from(der))
                    .map_err(|e| setup_error("client_ca", e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if tls.client_auth == ClientAuth::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier.build().map_err(|e| setup_error("client_ca", e))?;
            builder
                .with_client_cert_verifier(verifier)
                .with_cert_resolver(resolver)
        }
    };
    config.alpn_protocols = vec![b"h3".to_vec()];
    config.max_early_data_size = if h3.zero_rtt { u32::MAX } else { 0 };
    let crypto = QuicServerConfig::try_from(config).map_err(|e| setup_error("certificates", e))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    apply_transport(&mut server, h3)?;
    Ok(server)
}

/// What the endpoint presents: its certificates chosen by SNI, or, when it has none, its
/// raw public key (rustls presents one kind per endpoint).
fn resolver(
    tls: &TlsSettings,
    provider: &CryptoProvider,
) -> Result<Arc<dyn ResolvesServerCert>, TlsSetupError> {
    if tls.certificates.is_empty() && !tls.raw_public_key.as_os_str().is_empty() {
        let key = quic_raw_public_key::certified_key(&tls.raw_public_key, provider)
            .map_err(|e| setup_error("raw_public_key", e))?;
        return Ok(Arc::new(AlwaysResolvesServerRawPublicKeys::new(key)));
    }
    let mut keys = Vec::new();
    for cert in &tls.certificates {
        let loaded = CertifiedKey::load(&cert.chain, &cert.key)
            .map_err(|e| setup_error("certificates", e))?;
        keys.push((cert.server_names.clone(), rustls_key(&loaded, provider)?));
    }
    let Some((_, default)) = keys.first().cloned() else {
        return Err(setup_error("certificates", "HTTP/3 needs a certificate"));
    };
    let named = keys
        .into_iter()
        .skip(1)
        .flat_map(|(names, key)| {
            names
                .into_iter()
                .map(move |name| (name.to_ascii_lowercase(), key.clone()))
        })
        .collect();
    Ok(Arc::new(SniResolver { default, named }))
}

/// The QUIC transport knobs of `h3` (idle timeout, streams, datagram buffers).
pub(crate) fn apply_transport(
    server: &mut quinn::ServerConfig,
    h3: &H3Settings,
) -> Result<(), TlsSetupError> {
    let transport = Arc::get_mut(&mut server.transport)
        .ok_or_else(|| setup_error("certificates", "the QUIC transport settings are shared"))?;
    transport
        .max_idle_timeout(quinn::IdleTimeout::try_from(h3.idle_timeout).ok())
        .max_concurrent_bidi_streams(h3.max_concurrent_streams.into())
        .datagram_receive_buffer_size(Some(h3.datagram_buffer_bytes))
        .datagram_send_buffer_size(h3.datagram_buffer_bytes);
    Ok(())
}

/// The certificate and signing key of a BoringSSL-loaded chain, for rustls.
pub(crate) fn rustls_key(
    key: &CertifiedKey,
    provider: &CryptoProvider,
) -> Result<Arc<sign::CertifiedKey>, TlsSetupError> {
    let chain = key
        .chain
        .iter()
        .map(|cert| cert.to_der().map(CertificateDer::from))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| setup_error("certificates", e))?;
    let pkcs8 = key
        .key
        .private_key_to_der_pkcs8()
        .map_err(|e| setup_error("certificates", e))?;
    let signing = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8)))
        .map_err(|e| {
            setup_error(
                "certificates",
                format!("the key is not usable for QUIC: {e}"),
            )
        })?;
    Ok(Arc::new(sign::CertifiedKey::new(chain, signing)))
}

/// Picks the certificate whose `server_names` match the SNI, else the first.
#[derive(Debug)]
struct SniResolver {
    default: Arc<sign::CertifiedKey>,
    named: Vec<(String, Arc<sign::CertifiedKey>)>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<sign::CertifiedKey>> {
        let sni = hello.server_name().map(str::to_ascii_lowercase);
        let named = sni.and_then(|sni| {
            self.named
                .iter()
                .find(|(pattern, _)| sni_matches(pattern, &sni))
        });
        Some(named.map_or(&self.default, |(_, key)| key).clone())
    }
}

/// The TLS facts of an established QUIC connection.
pub fn facts(connection: &quinn::Connection) -> TlsFacts {
    let handshake = connection
        .handshake_data()
        .and_then(|data| data.downcast::<HandshakeData>().ok());
    let leaf = connection
        .peer_identity()
        .and_then(|identity| identity.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|chain| chain.first().cloned());
    let certificate = leaf
        .as_ref()
        .and_then(|leaf| boring::x509::X509::from_der(leaf).ok());
    let client_certificate: Option<ClientCertificate> =
        certificate.as_ref().map(|leaf| certificate_facts(leaf));
    // Not a certificate: a raw public key, which only the pin verifier accepts.
    let client_pin = match (&certificate, &leaf) {
        (None, Some(spki)) => quic_raw_public_key::pin_of(spki).map(|pin| super::hex(&pin)),
        _ => None,
    };
    TlsFacts {
        sni: handshake.as_ref().and_then(|h| h.server_name.clone()),
        alpn: handshake
            .as_ref()
            .and_then(|h| h.protocol.as_ref())
            .map(|p| String::from_utf8_lossy(p).into_owned()),
        version: "TLSv1.3".into(),
        cipher: String::new(),
        client_certificate,
        intercepted: false,
        policy: TlsPolicy::Default,
        client_pin,
    }
}
