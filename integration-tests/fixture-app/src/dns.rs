//! The fixture's DNS hook: overrides or vetoes the answers for names its `app:` settings
//! list, and labels every cache entry with the name it was made for.

use crate::{Fixture, FixtureSettings};
use oxy::prelude::*;
use std::net::IpAddr;

/// Answers steered by `dns_override` and `dns_veto`.
pub struct Answers {
    overridden: Option<(String, IpAddr)>,
    vetoed: String,
}

impl Answers {
    /// The hook for these settings (a malformed `dns_override` overrides nothing).
    pub fn new(settings: &FixtureSettings) -> Self {
        let overridden = settings
            .dns_override
            .split_once('=')
            .and_then(|(name, ip)| Some((name.to_string(), ip.parse().ok()?)));
        Self {
            overridden,
            vetoed: settings.dns_veto.clone(),
        }
    }
}

#[async_trait]
impl DnsHook<Fixture> for Answers {
    async fn on_answer(&self, cx: &mut DnsContext, _addrs: &[IpAddr]) -> DnsAction {
        match &self.overridden {
            Some((name, ip)) if *name == cx.name => DnsAction::Override(vec![*ip]),
            _ if cx.name == self.vetoed => DnsAction::Veto("vetoed by the fixture".into()),
            _ => DnsAction::Continue,
        }
    }

    fn cache_item(&self, cx: &DnsContext, _addrs: &[IpAddr]) -> String {
        format!("item-for-{}", cx.name)
    }
}
