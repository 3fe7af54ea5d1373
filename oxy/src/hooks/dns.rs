//! [`DnsHook`]: overrides or vetoes DNS answers and tags cache entries.

use crate::app::OxyExt;
use async_trait::async_trait;
use std::net::IpAddr;

/// Facts about one name resolution.
pub struct DnsContext {
    /// The name being resolved.
    pub name: String,
}

/// What to do with a DNS answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsAction {
    /// Use (and cache) the answer as it is.
    Continue,
    /// Use these addresses instead.
    Override(Vec<IpAddr>),
    /// Treat the name as unresolvable, with this reason.
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
