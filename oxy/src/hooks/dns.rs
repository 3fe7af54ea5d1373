//! [`DnsHook`]: overrides or vetoes DNS answers and tags cache entries.

use crate::app::OxyExt;
use async_trait::async_trait;
use std::net::IpAddr;

/// Facts about one name resolution.
pub struct DnsContext {
    /// The name being resolved.
    pub name: String,
}

/// What to do with a DNS answer (for one address family: IPv4 and IPv6 are looked up,
/// and answered, apart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsAction {
    /// Use (and cache) the answer as it is.
    Continue,
    /// Use (and cache) these addresses instead.
    Override(Vec<IpAddr>),
    /// Treat the name as unresolvable in this family, with this reason: nothing is
    /// cached, so the next lookup asks the resolvers, and the hook, again. Counted in
    /// `oxy_dns_failures_total{kind="vetoed"}`. When the other family gives no address
    /// either, the connection fails as for a name that does not resolve: a CONNECT,
    /// CONNECT-UDP or proxied HTTP request gets 502 with the body
    /// `resolving NAME was refused: REASON`; a `tcp` endpoint's connection is closed; a
    /// `udp` endpoint's datagrams are dropped until it is quiet; an IP flow gets ICMP
    /// host unreachable; a CONNECT-IP scope naming it gets 502.
    Veto(String),
}

/// Overrides or vetoes DNS answers.
#[async_trait]
pub trait DnsHook<App: OxyExt>: Send + Sync + 'static {
    /// Runs when an answer arrives from a resolver, before it is cached.
    /// The default returns [`DnsAction::Continue`].
    async fn on_answer(&self, cx: &mut DnsContext, addrs: &[IpAddr]) -> DnsAction {
        let _ = (cx, addrs);
        DnsAction::Continue
    }

    /// Makes the application's item stored with a cache entry. The default is
    /// `DnsCacheItem::default()`.
    fn cache_item(&self, cx: &DnsContext, addrs: &[IpAddr]) -> App::DnsCacheItem {
        let _ = (cx, addrs);
        App::DnsCacheItem::default()
    }
}
