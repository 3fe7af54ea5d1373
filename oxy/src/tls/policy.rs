//! Compliance policies: the sets of TLS algorithms a connection is held to, on BoringSSL
//! connections (both directions) and, as far as rustls allows, on QUIC.

use crate::settings::{TlsPolicy, TlsVersion};
use boring::error::ErrorStack;
use boring::ssl::{CompliancePolicy, SslContextBuilder, SslRef, SslVersion};
use rustls::crypto::CryptoProvider;
use rustls::crypto::ring::{cipher_suite, kx_group};

impl TlsPolicy {
    /// The name in settings and in the TLS facts hooks see.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsPolicy::Default => "default",
            TlsPolicy::Fips202205 => "fips_202205",
            TlsPolicy::Wpa3_192_202304 => "wpa3_192_202304",
        }
    }

    fn compliance(self) -> Option<CompliancePolicy> {
        match self {
            TlsPolicy::Default => None,
            TlsPolicy::Fips202205 => Some(CompliancePolicy::FIPS_202205),
            TlsPolicy::Wpa3_192_202304 => Some(CompliancePolicy::WPA3_192_202304),
        }
    }

    /// Holds one connection to this policy. A policy replaces the versions, ciphers,
    /// groups and signature algorithms set before it, so `min_version` is applied again.
    pub fn apply(self, ssl: &mut SslRef, min_version: TlsVersion) -> Result<(), ErrorStack> {
        let Some(policy) = self.compliance() else {
            return Ok(());
        };
        ssl.set_compliance_policy(policy)?;
        if min_version == TlsVersion::Tls1_3 {
            ssl.set_min_proto_version(Some(SslVersion::TLS1_3))?;
        }
        Ok(())
    }

    /// Holds every connection of a context to this policy.
    pub fn apply_to_context(self, context: &mut SslContextBuilder) -> Result<(), ErrorStack> {
        match self.compliance() {
            Some(policy) => context.set_compliance_policy(policy),
            None => Ok(()),
        }
    }

    /// `provider` with only the TLS 1.3 suites and groups this policy allows, for QUIC:
    /// AES-GCM with P-256 or P-384 (FIPS), AES-256-GCM with P-384 (WPA3 192-bit).
    pub fn restrict_quic(self, mut provider: CryptoProvider) -> CryptoProvider {
        match self {
            TlsPolicy::Default => {}
            TlsPolicy::Fips202205 => {
                provider.cipher_suites = vec![
                    cipher_suite::TLS13_AES_128_GCM_SHA256,
                    cipher_suite::TLS13_AES_256_GCM_SHA384,
                ];
                provider.kx_groups = vec![kx_group::SECP256R1, kx_group::SECP384R1];
            }
            TlsPolicy::Wpa3_192_202304 => {
                provider.cipher_suites = vec![cipher_suite::TLS13_AES_256_GCM_SHA384];
                provider.kx_groups = vec![kx_group::SECP384R1];
            }
        }
        provider
    }
}
