//! Mints the leaf certificate Oxy shows a client whose TLS it intercepts: the server name
//! the client asked for, signed by the interception CA.

use super::ClientHello;
use crate::hooks::{Target, TargetHost};
use crate::tls::CertifiedKey;
use boring::asn1::{Asn1Time, Asn1TimeRef};
use boring::bn::{BigNum, MsbOption};
use boring::error::ErrorStack;
use boring::hash::MessageDigest;
use boring::pkey::{PKeyRef, Private};
use boring::stack::Stack;
use boring::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use boring::x509::store::X509StoreBuilder;
use boring::x509::{X509, X509NameBuilder, X509StoreContext};
use std::cmp::Ordering;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How far in the past a leaf's `notBefore` is, for clients whose clocks are behind.
const BACKDATE: Duration = Duration::from_secs(3600);

/// The name a leaf is minted for: the client's SNI, or the tunnel's target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LeafName {
    /// A DNS name, lowercase.
    Dns(String),
    /// An IP address (a client that sent no SNI to an address).
    Ip(IpAddr),
}

impl LeafName {
    /// What a leaf shown to `hello` names: its server name, else the tunnel's `target`.
    pub fn of(hello: &ClientHello, target: &Target) -> Self {
        match (&hello.sni, &target.host) {
            (Some(sni), _) => LeafName::Dns(sni.clone()),
            (None, TargetHost::Ip(ip)) => LeafName::Ip(*ip),
            (None, TargetHost::Name(host)) => LeafName::Dns(host.to_ascii_lowercase()),
        }
    }
}

impl std::fmt::Display for LeafName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeafName::Dns(name) => f.write_str(name),
            LeafName::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// A leaf for `name` with `leaf_key`, valid from an hour ago for `lifetime` (never past
/// the CA's own `notAfter`): the name as its only SAN, `serverAuth`, not a CA.
pub fn mint(
    ca: &CertifiedKey,
    leaf_key: &PKeyRef<Private>,
    name: &LeafName,
    lifetime: Duration,
) -> Result<X509, ErrorStack> {
    let Some(issuer) = ca.chain.first() else {
        return Err(ErrorStack::get());
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let unix = |t: Duration| Asn1Time::from_unix(i64::try_from(t.as_secs()).unwrap_or(i64::MAX));
    let not_before = unix(now.saturating_sub(BACKDATE))?;
    let mut not_after = unix(now + lifetime)?;
    if issuer.not_after().compare(&not_after)? == Ordering::Less {
        not_after = later_copy(issuer.not_after())?;
    }

    let mut builder = X509::builder()?;
    builder.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
    let serial = serial.to_asn1_integer()?;
    builder.set_serial_number(&serial)?;
    let mut subject = X509NameBuilder::new()?;
    subject.append_entry_by_text("O", "Oxy TLS interception")?;
    let text = name.to_string();
    if text.len() <= 64 {
        subject.append_entry_by_text("CN", &text)?;
    }
    let subject = subject.build();
    builder.set_subject_name(&subject)?;
    builder.set_issuer_name(issuer.subject_name())?;
    builder.set_not_before(&not_before)?;
    builder.set_not_after(&not_after)?;
    builder.set_pubkey(leaf_key)?;
    let basic = BasicConstraints::new().critical().build()?;
    builder.append_extension(&basic)?;
    let usage = KeyUsage::new().critical().digital_signature().build()?;
    builder.append_extension(&usage)?;
    let extended = ExtendedKeyUsage::new().server_auth().build()?;
    builder.append_extension(&extended)?;
    let mut san = SubjectAlternativeName::new();
    match name {
        LeafName::Dns(dns) => san.dns(dns),
        LeafName::Ip(ip) => san.ip(&ip.to_string()),
    };
    let san = san.build(&builder.x509v3_context(Some(issuer), None))?;
    builder.append_extension(&san)?;
    let ski = SubjectKeyIdentifier::new().build(&builder.x509v3_context(Some(issuer), None))?;
    builder.append_extension(&ski)?;
    let aki = AuthorityKeyIdentifier::new()
        .keyid(false)
        .build(&builder.x509v3_context(Some(issuer), None))?;
    builder.append_extension(&aki)?;
    builder.sign(&ca.key, MessageDigest::sha256())?;
    Ok(builder.build())
}

/// A copy of `time` (boring has no `Clone` for ASN.1 times).
fn later_copy(time: &Asn1TimeRef) -> Result<Asn1Time, ErrorStack> {
    let epoch = Asn1Time::from_unix(0)?;
    let diff = epoch.diff(time)?;
    let seconds = i64::from(diff.days) * 86_400 + i64::from(diff.secs);
    Asn1Time::from_unix(seconds)
}

/// Checks that `ca` can sign server certificates that chain to it: mints one and
/// verifies it the way a client that trusts the CA would. The error says why not.
pub fn check_ca(ca: &CertifiedKey, leaf_key: &PKeyRef<Private>) -> Result<(), String> {
    let Some(first) = ca.chain.first() else {
        return Err("the CA chain is empty".into());
    };
    if let Some(problem) = crate::tls::ca_problem(first) {
        return Err(format!(
            "the first certificate cannot sign certificates: {problem}"
        ));
    }
    let name = LeafName::Dns("interception-check.oxy.invalid".into());
    let leaf = mint(ca, leaf_key, &name, Duration::from_secs(3600))
        .map_err(|e| format!("cannot sign a certificate with this CA: {e}"))?;
    let Some(root) = ca.chain.last() else {
        return Err("the CA chain is empty".into());
    };
    let verify = || -> Result<Result<(), String>, ErrorStack> {
        let mut store = X509StoreBuilder::new()?;
        store.add_cert(root)?;
        let store = store.build();
        let mut chain = Stack::new()?;
        for cert in &ca.chain {
            chain.push(cert.clone())?;
        }
        let mut context = X509StoreContext::new()?;
        context.init(&store, &leaf, &chain, |c| {
            Ok(match c.verify_cert()? {
                true => Ok(()),
                false => Err(c
                    .verify_result()
                    .err()
                    .map_or_else(|| "verification failed".to_string(), |e| e.to_string())),
            })
        })
    };
    match verify() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(reason)) => Err(format!(
            "certificates it signs do not verify ({reason}): is it a CA (basicConstraints CA:TRUE, keyCertSign)?"
        )),
        Err(e) => Err(format!("cannot verify a certificate it signed: {e}")),
    }
}
