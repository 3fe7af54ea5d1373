//! Name resolution: resolver groups with fallback, the answer cache and the DNS hook.

mod cache;
mod metrics;
mod tls;

pub use cache::{Cached, DnsCache};

use crate::app::OxyExt;
use crate::hooks::{DnsAction, DnsContext, DnsHook};
use crate::settings::{DnsProtocol, DnsServerSettings, DnsSettings};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use metrics::oxy_dns;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An address family, for A (`V4`) and AAAA (`V6`) lookups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4 (A records).
    V4,
    /// IPv6 (AAAA records).
    V6,
}

impl Family {
    fn label(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
}

/// Why a name could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The name does not exist, or has no address of the family asked for.
    #[error("{0} has no address")]
    NoAddress(String),
    /// Every resolver group failed or timed out.
    #[error("resolving {name} failed: {reason}")]
    Failed {
        /// The name.
        name: String,
        /// The last group's error.
        reason: String,
    },
    /// The DNS hook refused the answer.
    #[error("resolving {name} was refused: {reason}")]
    Vetoed {
        /// The name.
        name: String,
        /// The hook's reason.
        reason: String,
    },
}

/// How hickory reaches one configured server.
fn name_server(server: &DnsServerSettings) -> NameServerConfig {
    let with_port = |mut connection: ConnectionConfig| {
        connection.port = server.address.port();
        connection
    };
    let tls_name = || Arc::<str>::from(server.tls_name.as_str());
    let connections = match server.protocol {
        DnsProtocol::Udp => vec![
            with_port(ConnectionConfig::udp()),
            with_port(ConnectionConfig::tcp()),
        ],
        DnsProtocol::Tcp => vec![with_port(ConnectionConfig::tcp())],
        DnsProtocol::Tls => vec![with_port(ConnectionConfig::tls(tls_name()))],
        DnsProtocol::Https => vec![with_port(ConnectionConfig::https(
            tls_name(),
            Some(Arc::from(server.https_path.as_str())),
        ))],
    };
    NameServerConfig::new(server.address.ip(), true, connections)
}

/// A resolver that could not be built from the settings.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up DNS: {0}")]
pub struct DnsSetupError(String);

struct Group {
    name: String,
    resolver: TokioResolver,
    deadline: Duration,
}

/// Resolves names through the configured groups, with a cache and the DNS hook.
pub struct DnsResolver<App: OxyExt> {
    groups: Vec<Group>,
    cache: DnsCache<App::DnsCacheItem>,
    hook: Option<Arc<dyn DnsHook<App>>>,
    min_ttl: Duration,
    max_ttl: Duration,
    negative_ttl: Duration,
}

impl<App: OxyExt> DnsResolver<App> {
    /// Builds the resolver groups; with no group configured, the system's resolvers.
    pub fn new(
        settings: &DnsSettings,
        hook: Option<Arc<dyn DnsHook<App>>>,
    ) -> Result<Self, DnsSetupError> {
        let mut options = ResolverOpts::default();
        options.timeout = settings.timeout;
        options.attempts = settings.attempts.max(1);
        options.use_hosts_file = if settings.hosts_file {
            ResolveHosts::Always
        } else {
            ResolveHosts::Never
        };
        // Oxy's own cache applies the TTL clamps; keep hickory's small and within them.
        options.cache_size = 1;
        options.positive_max_ttl = Some(settings.max_ttl);
        options.negative_max_ttl = Some(settings.negative_ttl);
        let deadline = settings.timeout * u32::try_from(options.attempts).unwrap_or(u32::MAX)
            + Duration::from_millis(500);

        let mut groups = Vec::new();
        if settings.groups.is_empty() {
            let mut builder = TokioResolver::builder_tokio()
                .map_err(|e| DnsSetupError(format!("system resolver configuration: {e}")))?;
            let system_options = builder.options_mut();
            system_options.timeout = options.timeout;
            system_options.attempts = options.attempts;
            system_options.use_hosts_file = options.use_hosts_file;
            system_options.cache_size = options.cache_size;
            system_options.positive_max_ttl = options.positive_max_ttl;
            system_options.negative_max_ttl = options.negative_max_ttl;
            let resolver = builder
                .build()
                .map_err(|e| DnsSetupError(format!("system resolver: {e}")))?;
            groups.push(Group {
                name: "system".into(),
                resolver,
                deadline,
            });
        }
        let encrypted = settings
            .groups
            .iter()
            .flat_map(|g| &g.servers)
            .any(|s| matches!(s.protocol, DnsProtocol::Tls | DnsProtocol::Https));
        let tls = if encrypted {
            Some(tls::client_config(&settings.ca_file)?)
        } else {
            None
        };
        for group in &settings.groups {
            let servers = group.servers.iter().map(name_server).collect();
            let mut builder = TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            )
            .with_options(options.clone());
            if let Some(tls) = &tls {
                builder = builder.with_tls_config(tls.clone());
            }
            let resolver = builder
                .build()
                .map_err(|e| DnsSetupError(format!("group {}: {e}", group.name)))?;
            groups.push(Group {
                name: group.name.clone(),
                resolver,
                deadline,
            });
        }
        Ok(Self {
            groups,
            cache: DnsCache::new(settings.cache_size),
            hook,
            min_ttl: settings.min_ttl,
            max_ttl: settings.max_ttl,
            negative_ttl: settings.negative_ttl,
        })
    }

    /// The addresses of `name` in `family`, from the cache or the resolver groups.
    pub async fn lookup(
        &self,
        name: &str,
        family: Family,
    ) -> Result<(Arc<[IpAddr]>, App::DnsCacheItem), DnsError> {
        // Names from targets are already lowercase: a cache hit then allocates nothing.
        let name = name.trim_end_matches('.');
        let name: std::borrow::Cow<str> = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            name.to_ascii_lowercase().into()
        } else {
            name.into()
        };
        oxy_dns::lookups_total(family.label()).inc();
        match self.cache.get(&name, family, Instant::now()) {
            Some(Cached::Addresses(addrs, item)) => {
                oxy_dns::cache_total("hit").inc();
                return Ok((addrs, item));
            }
            Some(Cached::Negative) => {
                oxy_dns::cache_total("hit").inc();
                return Err(DnsError::NoAddress(name.into_owned()));
            }
            None => oxy_dns::cache_total("miss").inc(),
        }
        let span = crate::telemetry::distributed_tracing::dns_span(&name);
        let query = tracing::Instrument::instrument(self.query_groups(&name, family), span);
        let (mut addrs, valid_until) = match query.await {
            Ok(answer) => answer,
            Err(DnsError::NoAddress(_)) => {
                oxy_dns::failures_total("no_address").inc();
                let expires = Instant::now() + self.negative_ttl;
                self.cache.insert(&name, family, Cached::Negative, expires);
                return Err(DnsError::NoAddress(name.into_owned()));
            }
            Err(e) => return Err(e),
        };
        let mut cx = DnsContext {
            name: name.to_string(),
        };
        if let Some(hook) = &self.hook {
            match hook.on_answer(&mut cx, &addrs).await {
                DnsAction::Continue => {}
                DnsAction::Override(replacement) => addrs = replacement,
                DnsAction::Veto(reason) => {
                    oxy_dns::failures_total("vetoed").inc();
                    return Err(DnsError::Vetoed {
                        name: name.into_owned(),
                        reason,
                    });
                }
            }
        }
        let item = match &self.hook {
            Some(hook) => hook.cache_item(&cx, &addrs),
            None => App::DnsCacheItem::default(),
        };
        let now = Instant::now();
        let ttl = valid_until
            .saturating_duration_since(now)
            .clamp(self.min_ttl, self.max_ttl);
        let addrs: Arc<[IpAddr]> = Arc::from(addrs);
        self.cache.insert(
            &name,
            family,
            Cached::Addresses(addrs.clone(), item.clone()),
            now + ttl,
        );
        Ok((addrs, item))
    }

    /// Asks each group in turn until one answers.
    async fn query_groups(
        &self,
        name: &str,
        family: Family,
    ) -> Result<(Vec<IpAddr>, Instant), DnsError> {
        let fqdn = format!("{name}.");
        let mut last = String::from("no resolver group");
        for group in &self.groups {
            let started = Instant::now();
            let query = async {
                match family {
                    Family::V4 => group.resolver.ipv4_lookup(fqdn.as_str()).await,
                    Family::V6 => group.resolver.ipv6_lookup(fqdn.as_str()).await,
                }
            };
            let result = tokio::time::timeout(group.deadline, query).await;
            oxy_dns::lookup_duration_seconds(&group.name).observe(started.elapsed().as_secs_f64());
            match result {
                Ok(Ok(lookup)) => {
                    let addrs: Vec<IpAddr> = lookup
                        .answers()
                        .iter()
                        .filter_map(|record| match &record.data {
                            RData::A(a) if family == Family::V4 => Some(IpAddr::V4(a.0)),
                            RData::AAAA(a) if family == Family::V6 => Some(IpAddr::V6(a.0)),
                            _ => None,
                        })
                        .collect();
                    if addrs.is_empty() {
                        return Err(DnsError::NoAddress(name.to_string()));
                    }
                    return Ok((addrs, lookup.valid_until()));
                }
                Ok(Err(e)) if e.is_no_records_found() || e.is_nx_domain() => {
                    return Err(DnsError::NoAddress(name.to_string()));
                }
                Ok(Err(e)) => {
                    oxy_dns::failures_total("error").inc();
                    tracing::debug!(group = %group.name, %name, error = %e, "resolver group failed");
                    last = format!("group {}: {e}", group.name);
                }
                Err(_) => {
                    oxy_dns::failures_total("timeout").inc();
                    tracing::debug!(group = %group.name, %name, "resolver group timed out");
                    last = format!("group {}: timed out", group.name);
                }
            }
        }
        Err(DnsError::Failed {
            name: name.to_string(),
            reason: last,
        })
    }
}
