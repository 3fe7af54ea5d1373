//! The egress hook's decision, applied in one place for TCP tunnels, forwarded HTTP
//! requests and UDP flows: which route traffic to a target takes.

use crate::app::OxyExt;
use crate::hooks::{EgressAction, EgressContext, InternalService, UpstreamProxy};
use crate::offramp::tcp::{ConnectError, oxy_offramp};
use crate::services::Services;
use std::net::IpAddr;

/// How traffic to a target leaves, as the egress hook chose. A tunnel hook's redirect
/// keeps it and changes only the target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EgressRoute {
    /// Straight to the target, from this local address when one is given.
    Direct {
        /// The local address to connect from.
        bind: Option<IpAddr>,
    },
    /// Through this HTTP proxy with CONNECT.
    Proxy(UpstreamProxy),
    /// To the target behind a PROXY header for this internal service.
    Internal(InternalService),
}

/// Runs the egress hook on `cx`: the route it chose, with `cx.target` rewritten where
/// the hook said so (an internal service becomes the target too). A denial is counted
/// and is an error. Every off-ramp applies [`EgressAction`] through this one function.
pub async fn egress_route<App: OxyExt>(
    services: &Services<App>,
    cx: &mut EgressContext<App>,
) -> Result<EgressRoute, ConnectError> {
    let Some(hook) = &services.hooks.egress else {
        return Ok(EgressRoute::Direct { bind: None });
    };
    Ok(match hook.on_egress(cx).await {
        EgressAction::Allow => EgressRoute::Direct { bind: None },
        EgressAction::Rewrite(target) => {
            cx.target = Some(target);
            EgressRoute::Direct { bind: None }
        }
        EgressAction::BindTo(ip) => EgressRoute::Direct { bind: Some(ip) },
        EgressAction::InternalService(service) => {
            cx.target = Some(service.target.clone());
            EgressRoute::Internal(service)
        }
        EgressAction::UpstreamProxy(proxy) => EgressRoute::Proxy(proxy),
        EgressAction::Deny(reason) => {
            oxy_offramp::egress_denied_total("hook").inc();
            oxy_offramp::connect_failures_total("denied").inc();
            return Err(ConnectError::DeniedByHook(reason));
        }
    })
}
