//! Certificates made in tests: EC P-256 keys and X.509 certificates signed by a given
//! issuer.

#![allow(clippy::unwrap_used)]

use boring::asn1::Asn1Time;
use boring::bn::BigNum;
use boring::ec::{EcGroup, EcKey};
use boring::hash::MessageDigest;
use boring::nid::Nid;
use boring::pkey::{PKey, Private};
use boring::x509::extension::{BasicConstraints, ExtendedKeyUsage};
use boring::x509::{X509, X509NameBuilder};

/// A new EC P-256 key.
pub fn key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

/// A certificate for `cn` with `key`, signed by `issuer` (self-signed without one), a CA
/// when `ca`, with the OCSP signing EKU when `ocsp_signing`, valid for two days.
pub fn cert(
    cn: &str,
    serial: u32,
    key: &PKey<Private>,
    issuer: Option<(&X509, &PKey<Private>)>,
    ca: bool,
    ocsp_signing: bool,
) -> X509 {
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    let serial = BigNum::from_u32(serial).unwrap().to_asn1_integer().unwrap();
    b.set_serial_number(&serial).unwrap();
    b.set_subject_name(&name).unwrap();
    let signing_key = match issuer {
        Some((issuer, issuer_key)) => {
            b.set_issuer_name(issuer.subject_name()).unwrap();
            issuer_key
        }
        None => {
            b.set_issuer_name(&name).unwrap();
            key
        }
    };
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(2).unwrap())
        .unwrap();
    if ca {
        let ca = BasicConstraints::new().critical().ca().build().unwrap();
        b.append_extension(&ca).unwrap();
    }
    if ocsp_signing {
        let eku = ExtendedKeyUsage::new()
            .other("OCSPSigning")
            .build()
            .unwrap();
        b.append_extension(&eku).unwrap();
    }
    b.sign(signing_key, MessageDigest::sha256()).unwrap();
    b.build()
}
