//! TLS interception: the interception CA, the leaves minted from it, and the server side
//! of TLS that Oxy speaks to a client inside a tunnel the tunnel hook decapsulates.

mod cache;
mod client_hello;
mod mint;
pub mod quic_initial;

pub use client_hello::{ClientHello, HelloError, parse_client_hello};
pub use mint::LeafName;

use super::CertifiedKey;
use super::server::TlsSetupError;
use crate::settings::{TlsInterceptionSettings, TlsPolicy, TlsVersion};
use boring::ec::{EcGroup, EcKey};
use boring::nid::Nid;
use boring::pkey::{PKey, Private};
use boring::ssl::{AlpnError, Ssl, SslContext, SslMethod, SslVersion, select_next_proto};
use boring::x509::X509;
use cache::LeafCache;
use std::sync::Arc;
use std::time::Duration;

/// The shortest `leaf_lifetime` accepted (leaves are reused for half of it).
const MIN_LIFETIME: Duration = Duration::from_secs(600);
/// The longest `leaf_lifetime` accepted: what browsers accept for any certificate.
const MAX_LIFETIME: Duration = Duration::from_secs(397 * 86_400);

/// Application protocols offered to an intercepted client, in order of preference.
const ALPN: &[u8] = b"\x02h2\x08http/1.1";

/// A [`TlsSetupError`] for the setting `field` under `tls_interception`.
fn setup_error(field: &'static str, e: impl std::fmt::Display) -> TlsSetupError {
    TlsSetupError {
        section: "tls_interception",
        field,
        message: e.to_string(),
    }
}

/// One endpoint's interception CA and its minted leaves.
pub struct Interceptor {
    endpoint: String,
    ca: CertifiedKey,
    /// The key of every minted leaf, made at start (one key, many certificates).
    leaf_key: PKey<Private>,
    lifetime: Duration,
    leaves: LeafCache<X509>,
    context: SslContext,
}

impl Interceptor {
    /// Loads and checks the CA of `settings` for the endpoint `endpoint`. Errors name
    /// the setting under `tls_interception`.
    pub fn new(endpoint: &str, settings: &TlsInterceptionSettings) -> Result<Self, TlsSetupError> {
        let ca = CertifiedKey::load(&settings.ca_chain, &settings.ca_key).map_err(|e| {
            let field = if e.is_about_key() {
                "ca_key"
            } else {
                "ca_chain"
            };
            setup_error(field, e)
        })?;
        if !(MIN_LIFETIME..=MAX_LIFETIME).contains(&settings.leaf_lifetime) {
            return Err(setup_error(
                "leaf_lifetime",
                "must be between 10m and 397 days",
            ));
        }
        if settings.cache_size == 0 {
            return Err(setup_error("cache_size", "must be at least 1"));
        }
        let leaf_key = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)
            .and_then(|group| EcKey::generate(&group))
            .and_then(PKey::from_ec_key)
            .map_err(|e| setup_error("ca_key", format!("cannot make the leaf key: {e}")))?;
        mint::check_ca(&ca, &leaf_key).map_err(|e| setup_error("ca_chain", e))?;
        let context = context().map_err(|e| setup_error("ca_chain", e))?;
        Ok(Self {
            endpoint: endpoint.to_string(),
            ca,
            leaf_key,
            lifetime: settings.leaf_lifetime,
            leaves: LeafCache::new(settings.cache_size, settings.leaf_lifetime / 2),
            context,
        })
    }

    /// The leaf for `name`, minted now or taken from the cache.
    pub async fn leaf(&self, name: &LeafName) -> Result<Arc<X509>, String> {
        let mint = async {
            let leaf = mint::mint(&self.ca, &self.leaf_key, name, self.lifetime)
                .map_err(|e| format!("cannot mint a certificate for {name}: {e}"))?;
            oxy_tls_interception::leaves_minted_total(&self.endpoint).inc();
            Ok(leaf)
        };
        let leaf = self.leaves.get_or_mint(name, mint).await;
        let cached = i64::try_from(self.leaves.len()).unwrap_or(i64::MAX);
        oxy_tls_interception::leaves_cached(&self.endpoint).set(cached);
        leaf
    }

    /// The server side of one intercepted connection, showing `leaf` and the CA chain,
    /// held to `policy`.
    pub fn ssl(&self, leaf: &X509, policy: TlsPolicy) -> Result<Ssl, boring::error::ErrorStack> {
        let mut ssl = Ssl::new(&self.context)?;
        policy.apply(&mut ssl, TlsVersion::Tls1_2)?;
        ssl.set_certificate(leaf)?;
        ssl.set_private_key(&self.leaf_key)?;
        for ca in &self.ca.chain {
            ssl.add_chain_cert(ca)?;
        }
        Ok(ssl)
    }

    /// The QUIC server configuration of one intercepted flow, showing `leaf` and the CA
    /// chain (TLS 1.3, ALPN `h3`), held to `policy`, with the transport knobs of `h3`.
    pub fn quic_config(
        &self,
        leaf: &X509,
        h3: &crate::settings::H3Settings,
        policy: TlsPolicy,
    ) -> Result<quinn::ServerConfig, String> {
        let provider = Arc::new(policy.restrict_quic(rustls::crypto::ring::default_provider()));
        let mut chain = vec![leaf.clone()];
        chain.extend(self.ca.chain.iter().cloned());
        let certified = CertifiedKey {
            chain,
            key: self.leaf_key.clone(),
        };
        let key = crate::tls::quic::rustls_key(&certified, &provider).map_err(|e| e.message)?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(MintedLeaf(key)));
        config.alpn_protocols = vec![b"h3".to_vec()];
        let crypto =
            quinn::crypto::rustls::QuicServerConfig::try_from(config).map_err(|e| e.to_string())?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        crate::tls::quic::apply_transport(&mut server, h3).map_err(|e| e.message)?;
        Ok(server)
    }

    /// The endpoint's name, for metrics.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

/// Answers every QUIC ClientHello of an intercepted flow with the leaf minted for it.
#[derive(Debug)]
struct MintedLeaf(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for MintedLeaf {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The context every intercepted connection starts from: TLS 1.2 and 1.3, ALPN `h2` or
/// `http/1.1` as the client offers them.
fn context() -> Result<SslContext, boring::error::ErrorStack> {
    let mut builder = SslContext::builder(SslMethod::tls())?;
    builder.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    builder.set_session_id_context(b"oxy-interception")?;
    builder.set_alpn_select_callback(|_ssl, client| {
        select_next_proto(ALPN, client).ok_or(AlpnError::NOACK)
    });
    Ok(builder.build())
}

/// TLS interception.
#[crate::metrics]
pub mod oxy_tls_interception {
    /// Certificates minted (one signature each), by endpoint.
    pub fn leaves_minted_total(endpoint: &str) -> Counter;

    /// Server names with a minted certificate in the cache, by endpoint.
    pub fn leaves_cached(endpoint: &str) -> Gauge;
}
