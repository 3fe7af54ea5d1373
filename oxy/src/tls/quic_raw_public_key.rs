//! Raw public keys (RFC 7250) over QUIC, where rustls speaks TLS 1.3: the key an HTTP/3
//! endpoint presents instead of a certificate, and one verifier, by SPKI SHA-256 pin,
//! for clients an endpoint accepts and for the server a client expects.

use super::raw_public_key::{Pin, spki_pin};
use boring::pkey::PKey;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, SubjectPublicKeyInfoDer,
    UnixTime,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError, SignatureScheme,
};
use std::path::Path;
use std::sync::Arc;

/// The raw public key for the PEM private key in `path`, to present with rustls.
pub fn certified_key(
    path: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<rustls::sign::CertifiedKey>, String> {
    let key = super::raw_public_key::read_key(path)?;
    let spki = key.public_key_to_der().map_err(|e| e.to_string())?;
    let pkcs8 = key.private_key_to_der_pkcs8().map_err(|e| e.to_string())?;
    let signing = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8)))
        .map_err(|e| format!("the key is not usable for QUIC: {e}"))?;
    let spki = vec![CertificateDer::from(spki)];
    Ok(Arc::new(rustls::sign::CertifiedKey::new(spki, signing)))
}

/// The pin of a peer's raw public key as rustls hands it over (its SPKI, DER), if it is
/// one.
pub fn pin_of(spki: &[u8]) -> Option<Pin> {
    PKey::public_key_from_der(spki)
        .ok()
        .and_then(|key| spki_pin(&key))
}

/// A peer's raw public key that matches no pin (its pin, hex).
#[derive(thiserror::Error)]
#[error("raw public key {0} matches no pin")]
struct PinRefused(String);

/// As its message: rustls shows the error in handshake failures with `Debug`.
impl std::fmt::Debug for PinRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// The pin of a key [`PinVerifier`] refused, read back from the handshake error that
/// carries the refusal (quinn keeps only its text).
pub fn refused_pin(error: &str) -> Option<String> {
    let (_, rest) = error.split_once("raw public key ")?;
    let (pin, _) = rest.split_once(" matches no pin")?;
    (pin.len() == 64 && pin.bytes().all(|b| b.is_ascii_hexdigit())).then(|| pin.to_string())
}

/// Accepts a peer's raw public key by its pin; asks for nothing else.
#[derive(Debug)]
pub struct PinVerifier {
    pins: Vec<Pin>,
    algorithms: WebPkiSupportedAlgorithms,
    /// For clients: whether one without a key is refused.
    mandatory: bool,
}

impl PinVerifier {
    /// A verifier accepting `pins`, checking signatures with `provider`'s algorithms.
    pub fn new(pins: Vec<Pin>, provider: &CryptoProvider, mandatory: bool) -> Self {
        Self {
            pins,
            algorithms: provider.signature_verification_algorithms,
            mandatory,
        }
    }

    fn check(&self, spki: &CertificateDer<'_>) -> Result<(), Error> {
        match pin_of(spki) {
            Some(pin) if self.pins.contains(&pin) => Ok(()),
            Some(pin) => {
                let refused = PinRefused(super::hex(&pin));
                Err(CertificateError::Other(OtherError(Arc::new(refused))).into())
            }
            None => Err(CertificateError::BadEncoding.into()),
        }
    }

    fn signature(
        &self,
        message: &[u8],
        spki: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let spki = SubjectPublicKeyInfoDer::from(spki.as_ref());
        rustls::crypto::verify_tls13_signature_with_raw_key(message, &spki, dss, &self.algorithms)
    }
}

impl ClientCertVerifier for PinVerifier {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.check(end_entity)
            .map(|_| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(Error::General("raw public keys need TLS 1.3".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.check(end_entity)
            .map(|_| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(Error::General("raw public keys need TLS 1.3".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}
