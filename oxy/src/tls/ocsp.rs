//! Stapled OCSP responses (RFC 6960) for an upstream's certificate: the response is
//! parsed, its signature checked against the issuer or a responder the issuer authorised
//! for OCSP, its times checked, and the certificate's status read from it.

use super::revocation::Status;
use boring::hash::{MessageDigest, hash};
use boring::pkey::{PKey, Public};
use boring::sign::Verifier;
use boring::x509::{X509, X509Ref};
use der::{Decode, Encode};
use std::time::{Duration, SystemTime};
use x509_ocsp::{BasicOcspResponse, CertStatus, OcspResponse, OcspResponseStatus};

/// The response type of a basic OCSP response (RFC 6960 §4.2.1).
const BASIC_RESPONSE: &str = "1.3.6.1.5.5.7.48.1.1";
/// The extended key usage of a delegated OCSP responder (RFC 6960 §4.2.2.2).
const OCSP_SIGNING: &str = "1.3.6.1.5.5.7.3.9";
/// How far a response's thisUpdate may be ahead of this clock.
const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);
/// How long a response without a nextUpdate is taken as current after its thisUpdate.
const LIFETIME_WITHOUT_NEXT_UPDATE: Duration = Duration::from_secs(24 * 3600);

/// The status of `cert` in the stapled OCSP `response`, checked against `issuer` (the
/// certificate that signed `cert`) at `now`. An error says why the response cannot be
/// used: it is malformed, not signed by the issuer or a responder the issuer authorised,
/// out of date, or about another certificate.
pub fn status(
    response: &[u8],
    cert: &X509Ref,
    issuer: &X509Ref,
    now: SystemTime,
) -> Result<Status, String> {
    let response = OcspResponse::from_der(response).map_err(|_| "it is not an OCSP response")?;
    if response.response_status != OcspResponseStatus::Successful {
        return Err(format!("its status is {:?}", response.response_status));
    }
    let bytes = response.response_bytes.ok_or("it has no response")?;
    if bytes.response_type.to_string() != BASIC_RESPONSE {
        return Err("it is not a basic OCSP response".into());
    }
    let basic_der = bytes.response.as_bytes();
    let basic =
        BasicOcspResponse::from_der(basic_der).map_err(|_| "its basic response is malformed")?;
    verify_signature(&basic, basic_der, issuer)?;

    let id = CertIdentity::of(cert, issuer)?;
    let single = basic
        .tbs_response_data
        .responses
        .iter()
        .find(|single| id.matches(&single.cert_id))
        .ok_or("it is about another certificate")?;
    let this_update = single.this_update.0.to_system_time();
    if this_update > now + CLOCK_SKEW {
        return Err("its thisUpdate is in the future".into());
    }
    let until = match &single.next_update {
        Some(next) => next.0.to_system_time(),
        None => this_update + LIFETIME_WITHOUT_NEXT_UPDATE,
    };
    if until < now {
        return Err("it is out of date (past its nextUpdate)".into());
    }
    Ok(match single.cert_status {
        CertStatus::Good(_) => Status::Good,
        CertStatus::Revoked(_) => Status::Revoked,
        CertStatus::Unknown(_) => Status::Unknown("the OCSP responder does not know it".into()),
    })
}

/// Checks that `basic` is signed by `issuer`, or by a certificate it carries that
/// `issuer` issued for OCSP signing and that is valid now.
fn verify_signature(
    basic: &BasicOcspResponse,
    basic_der: &[u8],
    issuer: &X509Ref,
) -> Result<(), String> {
    let tbs = signed_part(basic_der).ok_or("its basic response is malformed")?;
    let algorithm = basic.signature_algorithm.oid.to_string();
    let digest = signature_digest(&algorithm)?;
    let signature = basic
        .signature
        .as_bytes()
        .ok_or("its signature is malformed")?;
    let signed_by = |key: &PKey<Public>| verifies(key, digest, &tbs, signature);
    let issuer_key = issuer.public_key().map_err(|e| e.to_string())?;
    if signed_by(&issuer_key) {
        return Ok(());
    }
    for responder in basic.certs.iter().flatten() {
        let Some(responder) = responder
            .to_der()
            .ok()
            .and_then(|d| X509::from_der(&d).ok())
        else {
            continue;
        };
        let authorised = issuer.issued(&responder).is_ok()
            && responder.verify(&issuer_key).unwrap_or(false)
            && ocsp_signer_now(&responder);
        if authorised && responder.public_key().is_ok_and(|key| signed_by(&key)) {
            return Ok(());
        }
    }
    Err("its signature is neither the issuer's nor an authorised responder's".into())
}

/// The DER of `tbsResponseData`, as signed: the first element of the BasicOCSPResponse
/// SEQUENCE, taken from the bytes received rather than encoded again.
fn signed_part(basic_der: &[u8]) -> Option<Vec<u8>> {
    let mut reader = der::SliceReader::new(basic_der).ok()?;
    let outer = der::Header::decode(&mut reader).ok()?;
    if outer.tag != der::Tag::Sequence {
        return None;
    }
    let tbs = der::asn1::AnyRef::decode(&mut reader).ok()?;
    tbs.to_der().ok()
}

/// The digest of an OCSP signature algorithm (`None`: the algorithm has its own, as
/// Ed25519 does). SHA-1 is refused, as it is in certificates.
fn signature_digest(oid: &str) -> Result<Option<MessageDigest>, String> {
    Ok(Some(match oid {
        "1.2.840.113549.1.1.11" | "1.2.840.10045.4.3.2" => MessageDigest::sha256(),
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => MessageDigest::sha384(),
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => MessageDigest::sha512(),
        "1.3.101.112" => return Ok(None),
        "1.2.840.113549.1.1.5" | "1.2.840.10045.4.1" => {
            return Err("it is signed with SHA-1".into());
        }
        other => return Err(format!("its signature algorithm {other} is not supported")),
    }))
}

/// Whether `signature` over `data` verifies with `key`.
fn verifies(
    key: &PKey<Public>,
    digest: Option<MessageDigest>,
    data: &[u8],
    signature: &[u8],
) -> bool {
    let verifier = match digest {
        Some(digest) => Verifier::new(digest, key),
        None => Verifier::new_without_digest(key),
    };
    verifier
        .and_then(|mut v| v.verify_oneshot(signature, data))
        .unwrap_or(false)
}

/// Whether `cert` carries the OCSP signing extended key usage and is within its dates.
fn ocsp_signer_now(cert: &X509Ref) -> bool {
    let Ok(der) = cert.to_der() else {
        return false;
    };
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(&der) else {
        return false;
    };
    let signs_ocsp = matches!(
        parsed.extended_key_usage(),
        Ok(Some(eku)) if eku.value.ocsp_signing
            || eku.value.other.iter().any(|oid| oid.to_id_string() == OCSP_SIGNING)
    );
    signs_ocsp && parsed.validity().is_valid()
}

/// What identifies a certificate in an OCSP response (RFC 6960 §4.1.1): its serial and
/// its issuer's name and key.
struct CertIdentity {
    serial: Vec<u8>,
    issuer_name: Vec<u8>,
    issuer_key: Vec<u8>,
}

impl CertIdentity {
    fn of(cert: &X509Ref, issuer: &X509Ref) -> Result<Self, String> {
        let cert_der = cert.to_der().map_err(|e| e.to_string())?;
        let issuer_der = issuer.to_der().map_err(|e| e.to_string())?;
        let (_, cert) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|_| "cannot read the certificate")?;
        let (_, issuer) = x509_parser::parse_x509_certificate(&issuer_der)
            .map_err(|_| "cannot read the issuer")?;
        Ok(Self {
            serial: cert.raw_serial().to_vec(),
            issuer_name: issuer.subject().as_raw().to_vec(),
            issuer_key: issuer.public_key().subject_public_key.data.to_vec(),
        })
    }

    /// Whether `id` names this certificate, hashed with the algorithm `id` names.
    fn matches(&self, id: &x509_ocsp::CertId) -> bool {
        let digest = match id.hash_algorithm.oid.to_string().as_str() {
            "1.3.14.3.2.26" => MessageDigest::sha1(),
            "2.16.840.1.101.3.4.2.1" => MessageDigest::sha256(),
            "2.16.840.1.101.3.4.2.2" => MessageDigest::sha384(),
            "2.16.840.1.101.3.4.2.3" => MessageDigest::sha512(),
            _ => return false,
        };
        let hashed = |data: &[u8]| hash(digest, data).map(|h| h.to_vec()).unwrap_or_default();
        id.serial_number.as_bytes() == self.serial
            && id.issuer_name_hash.as_bytes() == hashed(&self.issuer_name)
            && id.issuer_key_hash.as_bytes() == hashed(&self.issuer_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::test_pki::{cert, key};
    use boring::pkey::Private;
    use boring::sign::Signer;
    use der::asn1::{BitString, GeneralizedTime, ObjectIdentifier, OctetString};
    use spki::AlgorithmIdentifierOwned;
    use x509_ocsp::{
        CertId, OcspGeneralizedTime, ResponderId, ResponseBytes, ResponseData, RevokedInfo,
        SingleResponse, Version,
    };

    const DAY: Duration = Duration::from_secs(24 * 3600);

    struct Pki {
        ca: X509,
        ca_key: PKey<Private>,
        leaf: X509,
    }

    fn pki() -> Pki {
        let ca_key = key();
        let ca = cert("Oxy OCSP Test CA", 1, &ca_key, None, true, false);
        let leaf = cert("leaf", 0x4242, &key(), Some((&ca, &ca_key)), false, false);
        Pki { ca, ca_key, leaf }
    }

    fn time(t: SystemTime) -> OcspGeneralizedTime {
        OcspGeneralizedTime(GeneralizedTime::from_system_time(t).unwrap())
    }

    fn algorithm(oid: &str) -> AlgorithmIdentifierOwned {
        AlgorithmIdentifierOwned {
            oid: ObjectIdentifier::new_unwrap(oid),
            parameters: None,
        }
    }

    /// The OCSP response for `cert` (issued by `pki.ca`) saying `status`, valid from
    /// `this_update` to `next_update`, signed by `signer` with `digest` (ECDSA) and
    /// carrying `certs`.
    struct Response<'a> {
        cert: &'a X509,
        status: CertStatus,
        this_update: SystemTime,
        next_update: Option<SystemTime>,
        signer: &'a PKey<Private>,
        digest: (MessageDigest, &'static str),
        certs: Vec<&'a X509>,
    }

    impl Response<'_> {
        fn new<'a>(pki: &'a Pki, cert: &'a X509, status: CertStatus) -> Response<'a> {
            let now = SystemTime::now();
            Response {
                cert,
                status,
                this_update: now - Duration::from_secs(60),
                next_update: Some(now + DAY),
                signer: &pki.ca_key,
                digest: (MessageDigest::sha256(), "1.2.840.10045.4.3.2"),
                certs: Vec::new(),
            }
        }

        fn encode(&self, issuer: &X509) -> Vec<u8> {
            let id = CertIdentity::of(self.cert, issuer).unwrap();
            let sha1 =
                |d: &[u8]| OctetString::new(hash(MessageDigest::sha1(), d).unwrap().to_vec());
            let single = SingleResponse {
                cert_id: CertId {
                    hash_algorithm: algorithm("1.3.14.3.2.26"),
                    issuer_name_hash: sha1(&id.issuer_name).unwrap(),
                    issuer_key_hash: sha1(&id.issuer_key).unwrap(),
                    serial_number: x509_cert::serial_number::SerialNumber::new(&id.serial).unwrap(),
                },
                cert_status: self.status,
                this_update: time(self.this_update),
                next_update: self.next_update.map(time),
                single_extensions: None,
            };
            let tbs = ResponseData {
                version: Version::V1,
                responder_id: ResponderId::ByKey(sha1(&id.issuer_key).unwrap()),
                produced_at: time(SystemTime::now()),
                responses: vec![single],
                response_extensions: None,
            };
            let tbs_der = tbs.to_der().unwrap();
            let mut signer = Signer::new(self.digest.0, self.signer).unwrap();
            signer.update(&tbs_der).unwrap();
            let signature = signer.sign_to_vec().unwrap();
            let certs = self
                .certs
                .iter()
                .map(|c| x509_cert::Certificate::from_der(&c.to_der().unwrap()).unwrap())
                .collect::<Vec<_>>();
            let basic = BasicOcspResponse {
                tbs_response_data: tbs,
                signature_algorithm: algorithm(self.digest.1),
                signature: BitString::from_bytes(&signature).unwrap(),
                certs: (!certs.is_empty()).then_some(certs),
            };
            OcspResponse {
                response_status: OcspResponseStatus::Successful,
                response_bytes: Some(ResponseBytes {
                    response_type: ObjectIdentifier::new_unwrap(BASIC_RESPONSE),
                    response: OctetString::new(basic.to_der().unwrap()).unwrap(),
                }),
            }
            .to_der()
            .unwrap()
        }
    }

    fn revoked() -> CertStatus {
        CertStatus::revoked(RevokedInfo {
            revocation_time: time(SystemTime::now() - DAY),
            revocation_reason: None,
        })
    }

    fn check(pki: &Pki, response: &[u8], now: SystemTime) -> Result<Status, String> {
        status(response, &pki.leaf, &pki.ca, now)
    }

    #[test]
    fn good_revoked_and_unknown_are_read() {
        let pki = pki();
        let now = SystemTime::now();
        let good = Response::new(&pki, &pki.leaf, CertStatus::good()).encode(&pki.ca);
        assert_eq!(check(&pki, &good, now), Ok(Status::Good));
        let revoked = Response::new(&pki, &pki.leaf, revoked()).encode(&pki.ca);
        assert_eq!(check(&pki, &revoked, now), Ok(Status::Revoked));
        let unknown = Response::new(&pki, &pki.leaf, CertStatus::unknown()).encode(&pki.ca);
        assert!(matches!(check(&pki, &unknown, now), Ok(Status::Unknown(_))));
    }

    #[test]
    fn times_are_checked() {
        let pki = pki();
        let now = SystemTime::now();
        let good = Response::new(&pki, &pki.leaf, CertStatus::good()).encode(&pki.ca);
        let later = check(&pki, &good, now + 2 * DAY);
        assert_eq!(later, Err("it is out of date (past its nextUpdate)".into()));
        let earlier = check(&pki, &good, now - DAY);
        assert_eq!(earlier, Err("its thisUpdate is in the future".into()));
        // Without a nextUpdate, a response holds a day after its thisUpdate.
        let mut open = Response::new(&pki, &pki.leaf, CertStatus::good());
        open.next_update = None;
        let open = open.encode(&pki.ca);
        assert_eq!(check(&pki, &open, now + DAY / 2), Ok(Status::Good));
        assert!(check(&pki, &open, now + 2 * DAY).is_err());
    }

    #[test]
    fn only_the_issuer_or_an_authorised_responder_signs() {
        let pki = pki();
        let now = SystemTime::now();
        let stranger = key();
        let mut forged = Response::new(&pki, &pki.leaf, revoked());
        forged.signer = &stranger;
        let forged = forged.encode(&pki.ca);
        let refused =
            Err("its signature is neither the issuer's nor an authorised responder's".into());
        assert_eq!(check(&pki, &forged, now), refused);

        let responder_key = key();
        let ca = (&pki.ca, &pki.ca_key);
        for (ocsp_signing, expected) in [(true, Ok(Status::Good)), (false, refused.clone())] {
            let responder = cert(
                "responder",
                7,
                &responder_key,
                Some(ca),
                false,
                ocsp_signing,
            );
            let mut delegated = Response::new(&pki, &pki.leaf, CertStatus::good());
            delegated.signer = &responder_key;
            delegated.certs = vec![&responder];
            assert_eq!(check(&pki, &delegated.encode(&pki.ca), now), expected);
        }

        // A responder with the EKU that another CA issued is no one's responder here.
        let other_key = key();
        let other_ca = cert("Other CA", 2, &other_key, None, true, false);
        let responder = cert(
            "responder",
            8,
            &responder_key,
            Some((&other_ca, &other_key)),
            false,
            true,
        );
        let mut foreign = Response::new(&pki, &pki.leaf, CertStatus::good());
        foreign.signer = &responder_key;
        foreign.certs = vec![&responder];
        assert_eq!(check(&pki, &foreign.encode(&pki.ca), now), refused);
    }

    #[test]
    fn another_certificate_and_sha1_and_garbage_are_refused() {
        let pki = pki();
        let now = SystemTime::now();
        let other = cert(
            "other",
            0x4243,
            &key(),
            Some((&pki.ca, &pki.ca_key)),
            false,
            false,
        );
        let about_other = Response::new(&pki, &other, CertStatus::good()).encode(&pki.ca);
        let expected = Err("it is about another certificate".into());
        assert_eq!(check(&pki, &about_other, now), expected);

        let mut sha1 = Response::new(&pki, &pki.leaf, CertStatus::good());
        sha1.digest = (MessageDigest::sha1(), "1.2.840.10045.4.1");
        let expected = Err("it is signed with SHA-1".into());
        assert_eq!(check(&pki, &sha1.encode(&pki.ca), now), expected);

        let good = Response::new(&pki, &pki.leaf, CertStatus::good()).encode(&pki.ca);
        for cut in [0, 1, 10, good.len() / 2, good.len() - 1] {
            assert!(check(&pki, &good[..cut], now).is_err(), "cut at {cut}");
        }
        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(check(&pki, &flipped, now).is_err());
    }
}
