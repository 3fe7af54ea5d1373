//! Raw public keys (RFC 7250): an endpoint, or the upstream client, presenting a key
//! without a certificate, and peers accepted by the SHA-256 pin of their key's
//! SubjectPublicKeyInfo instead of a certificate chain.

use boring::ex_data::Index;
use boring::hash::{MessageDigest, hash};
use boring::pkey::{HasPublic, PKey, PKeyRef, Private};
use boring::ssl::{Ssl, SslAlert, SslCredential, SslRef, SslVerifyError};
use boring::x509::X509StoreContext;
use boring::x509::store::X509Store;
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// A SHA-256 pin of a SubjectPublicKeyInfo.
pub type Pin = [u8; 32];

/// The pin in `text`: 64 hex digits (colons allowed between bytes).
pub fn parse_pin(text: &str) -> Result<Pin, String> {
    let digits: String = text.chars().filter(|c| *c != ':').collect();
    let mut pin = [0u8; 32];
    if digits.len() != 64 {
        return Err(format!("{text:?} is not a SHA-256 pin (64 hex digits)"));
    }
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{text:?} is not a SHA-256 pin (64 hex digits)"));
    }
    for (i, byte) in pin.iter_mut().enumerate() {
        let pair = digits.get(2 * i..2 * i + 2).unwrap_or_default();
        *byte = u8::from_str_radix(pair, 16)
            .map_err(|_| format!("{text:?} is not a SHA-256 pin (64 hex digits)"))?;
    }
    Ok(pin)
}

/// Every pin in `texts`.
pub fn parse_pins(texts: &[String]) -> Result<Vec<Pin>, String> {
    texts.iter().map(|t| parse_pin(t)).collect()
}

/// The pin of `key`.
pub fn spki_pin<T: HasPublic>(key: &PKeyRef<T>) -> Option<Pin> {
    let spki = key.public_key_to_der().ok()?;
    let digest = hash(MessageDigest::sha256(), &spki).ok()?;
    digest.as_ref().try_into().ok()
}

/// The PEM private key in `path`, whose public key is presented raw.
pub fn read_key(path: &Path) -> Result<PKey<Private>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    PKey::private_key_from_pem(&pem)
        .map_err(|e| format!("{} holds no valid PEM private key: {e}", path.display()))
}

/// A raw-public-key credential for the PEM private key in `path`.
pub fn credential(path: &Path) -> Result<SslCredential, String> {
    let key = read_key(path)?;
    let mut builder = SslCredential::new_raw_public_key().map_err(|e| e.to_string())?;
    builder.set_private_key(&key).map_err(|e| e.to_string())?;
    builder.set_spki_bytes(None).map_err(|e| e.to_string())?;
    Ok(builder.build())
}

/// What the verify callback learnt of the peer's raw public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPin {
    /// The key's pin, lowercase hex.
    pub sha256: String,
    /// Whether one of the configured pins matched.
    pub accepted: bool,
}

fn peer_pin_index() -> Option<Index<Ssl, PeerPin>> {
    static INDEX: OnceLock<Option<Index<Ssl, PeerPin>>> = OnceLock::new();
    *INDEX.get_or_init(|| Ssl::new_ex_index().ok())
}

/// The peer's raw public key as the verify callback saw it (accepted or not), if the
/// peer presented one.
pub fn peer_pin(ssl: &SslRef) -> Option<&PeerPin> {
    ssl.ex_data(peer_pin_index()?)
}

/// A custom verify callback: a peer with a raw public key must match one of `pins`; a
/// peer with a certificate must chain to `x509` (refused when there is none).
pub fn verifier(
    pins: Arc<Vec<Pin>>,
    x509: Option<Arc<X509Store>>,
) -> impl Fn(&mut SslRef) -> Result<(), SslVerifyError> + Send + Sync + 'static {
    move |ssl: &mut SslRef| {
        let refuse = Err(SslVerifyError::Invalid(SslAlert::BAD_CERTIFICATE));
        if let Some(cert) = ssl.peer_certificate() {
            let Some(store) = &x509 else { return refuse };
            let chain = ssl.peer_cert_chain();
            let verified = X509StoreContext::new().and_then(|mut context| match chain {
                Some(chain) => context.init(store, &cert, chain, |c| c.verify_cert()),
                None => {
                    let empty = boring::stack::Stack::new()?;
                    context.init(store, &cert, &empty, |c| c.verify_cert())
                }
            });
            return match verified {
                Ok(true) => Ok(()),
                _ => refuse,
            };
        }
        let Some(pin) = ssl.peer_pubkey().and_then(spki_pin) else {
            return Err(SslVerifyError::Invalid(SslAlert::CERTIFICATE_REQUIRED));
        };
        let accepted = pins.contains(&pin);
        if let Some(index) = peer_pin_index() {
            let seen = PeerPin {
                sha256: super::hex(&pin),
                accepted,
            };
            ssl.set_ex_data(index, seen);
        }
        if accepted { Ok(()) } else { refuse }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_with_or_without_colons() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let pin = parse_pin(hex).unwrap();
        assert_eq!(crate::tls::hex(&pin), hex);
        let colons: Vec<String> = (0..32).map(|i| hex[2 * i..2 * i + 2].to_string()).collect();
        assert_eq!(parse_pin(&colons.join(":")).unwrap(), pin);
        assert!(parse_pin("abc").is_err());
        // A sign is no hex digit, though u8::from_str_radix takes one.
        assert!(parse_pin(&format!("+{}", &hex[1..])).is_err());
        assert!(parse_pin(&"zz".repeat(32)).is_err());
    }
}
