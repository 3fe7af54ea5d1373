//! The addresses a target may be reached at: resolved (or literal), shown to the egress
//! hook's `on_resolved`, and filtered by the egress policy, one family at a time.

use crate::app::OxyExt;
use crate::dns::{DnsError, Family};
use crate::hooks::{EgressContext, Target, TargetHost};
use crate::offramp::happy_eyeballs::HappyEyeballsError;
use crate::offramp::policy::EgressDenied;
use crate::offramp::tcp::ConnectError;
use crate::services::Services;
use std::net::IpAddr;
use std::sync::Mutex;

/// Resolves a target per family and remembers why addresses were missing.
pub struct AllowedAddresses<'a, App: OxyExt> {
    services: &'a Services<App>,
    target: &'a Target,
    bind: Option<IpAddr>,
    hook_cx: Option<&'a EgressContext<App>>,
    denied: Mutex<Option<EgressDenied>>,
    dns_error: Mutex<Option<DnsError>>,
    /// Set when the egress hook's `on_resolved` removed addresses.
    hook_removed: std::sync::atomic::AtomicBool,
}

impl<'a, App: OxyExt> AllowedAddresses<'a, App> {
    /// Addresses of `target` usable from `bind` (any address when `None`); `hook_cx`,
    /// when given, is what the egress hook's `on_resolved` sees.
    pub fn new(
        services: &'a Services<App>,
        target: &'a Target,
        bind: Option<IpAddr>,
        hook_cx: Option<&'a EgressContext<App>>,
    ) -> Self {
        Self {
            services,
            target,
            bind,
            hook_cx,
            denied: Mutex::new(None),
            dns_error: Mutex::new(None),
            hook_removed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The allowed addresses of one family, in the resolver's order.
    pub async fn family(&self, family: Family) -> Vec<IpAddr> {
        let v6 = family == Family::V6;
        if self.bind.is_some_and(|b| b.is_ipv6() != v6) {
            return Vec::new();
        }
        let (mut addrs, dns_item) = match &self.target.host {
            TargetHost::Ip(ip) if ip.is_ipv6() == v6 => (vec![*ip], None),
            TargetHost::Ip(_) => return Vec::new(),
            TargetHost::Name(name) => match self.services.resolver.lookup(name, family).await {
                Ok((addrs, item)) => (addrs.to_vec(), Some(item)),
                Err(e) => {
                    let mut slot = self.dns_error.lock().unwrap_or_else(|p| p.into_inner());
                    if slot.is_none() || !matches!(e, DnsError::NoAddress(_)) {
                        *slot = Some(e);
                    }
                    return Vec::new();
                }
            },
        };
        if let (Some(hook), Some(cx)) = (&self.services.hooks.egress, self.hook_cx) {
            let before = addrs.len();
            hook.on_resolved(cx, &mut addrs, dns_item.as_ref()).await;
            if addrs.len() < before {
                self.hook_removed
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        addrs.retain(|ip| match self.services.policy.check_ip(*ip) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(destination = %self.target, error = %e, "address refused");
                self.denied
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(e);
                false
            }
        });
        addrs
    }

    /// Why no address was usable: the policy, the egress hook, DNS, or nothing at all.
    pub fn into_error(self) -> ConnectError {
        if let Some(denied) = self.denied.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return ConnectError::Denied(denied);
        }
        if self.hook_removed.into_inner() {
            let reason = format!("the egress hook removed the addresses of {}", self.target);
            return ConnectError::DeniedByHook(reason);
        }
        match self
            .dns_error
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
        {
            Some(e) => ConnectError::Dns(e),
            None => ConnectError::Connect(HappyEyeballsError::NoAddress),
        }
    }
}
