//! An egress router: a CONNECT and L4 proxy that chooses each tunnel's egress by ingress
//! endpoint, client, proxy user and destination, behind an L4 firewall.

mod destinations;

use destinations::{Destinations, Verdict};
use ipnet::IpNet;
use oxy::prelude::*;
use oxy::settings::SettingError;
use std::net::IpAddr;

/// The `app:` section.
#[oxy_app_settings]
pub struct RouterSettings {
    /// Routes, tried in order: the first whose conditions all hold chooses the egress.
    /// Traffic no route takes leaves directly.
    pub routes: Vec<RouteSettings>,
    /// The L4 firewall, checked before any route.
    pub firewall: FirewallSettings,
}

/// One route. Every condition it sets must hold; within a list, any entry matches.
#[oxy_app_settings]
pub struct RouteSettings {
    /// Name, in the audit record (`label`), logs and the internal service's metadata.
    pub name: String,
    /// Ingress endpoints, by name.
    pub endpoints: Vec<String>,
    /// Client networks (the original client, behind a PROXY header).
    pub clients: Vec<IpNet>,
    /// Users authenticated by the endpoint's `http.proxy_auth`.
    pub users: Vec<String>,
    /// Destinations.
    pub destinations: Destinations,
    /// Leave from this local address.
    pub bind_to: Option<IpAddr>,
    /// Go through this HTTP proxy (`host:port`) with CONNECT.
    pub upstream_proxy: String,
    /// `user:password` for `upstream_proxy`.
    pub upstream_credentials: String,
    /// Go to this internal service (`host:port`) behind a PROXY v2 header whose TLVs
    /// carry the route's name (type 0xE0) and the proxy user (0xE1).
    pub internal_service: String,
}

/// The L4 firewall: which destinations tunnels and forwarded requests may reach.
#[oxy_app_settings]
pub struct FirewallSettings {
    /// Destinations allowed; empty allows all that `deny` does not deny.
    pub allow: Vec<Destinations>,
    /// Destinations denied, whatever `allow` says.
    pub deny: Vec<Destinations>,
}

/// Where a route sends traffic.
enum Via {
    Direct,
    Bind(IpAddr),
    Proxy(UpstreamProxy),
    Internal(Target),
}

struct Route {
    settings: RouteSettings,
    via: Via,
    /// What the route records for each request or tunnel it takes, made once: its
    /// counter (a label look-up per request otherwise) and its audit label.
    taken: Taken,
}

/// A route's counter and audit label (`route=` its name).
struct Taken {
    routed: oxy::telemetry::metrics::Counter,
    audit_label: String,
}

impl Taken {
    fn new(name: &str) -> Self {
        Self {
            routed: egress_router::routed_total(name),
            audit_label: format!("route={name}"),
        }
    }
}

impl Route {
    fn compile(settings: &RouteSettings) -> anyhow::Result<Self> {
        let name = &settings.name;
        anyhow::ensure!(!name.is_empty(), "a route has no name");
        let target = |what: &str, value: &str| {
            value
                .parse::<Target>()
                .map_err(|e| anyhow::anyhow!("route {name}: {what}: {e}"))
        };
        let credentials = settings.upstream_credentials.split_once(':');
        let via = match (
            settings.bind_to,
            settings.upstream_proxy.as_str(),
            settings.internal_service.as_str(),
        ) {
            (None, "", "") => Via::Direct,
            (Some(ip), "", "") => Via::Bind(ip),
            (None, proxy, "") => Via::Proxy(UpstreamProxy {
                address: target("upstream_proxy", proxy)?,
                credentials: credentials.map(|(u, p)| (u.to_string(), p.to_string())),
            }),
            (None, "", service) => Via::Internal(target("internal_service", service)?),
            _ => anyhow::bail!(
                "route {name}: set one of bind_to, upstream_proxy and internal_service"
            ),
        };
        Ok(Route {
            settings: settings.clone(),
            via,
            taken: Taken::new(name),
        })
    }

    /// Whether the route takes this traffic (a destination decided only by networks
    /// counts once the name resolves, so such routes are skipped for names).
    fn takes(&self, cx: &EgressContext<EgressRouter>) -> bool {
        let s = &self.settings;
        let any = |empty: bool, found: bool| empty || found;
        any(
            s.endpoints.is_empty(),
            s.endpoints.iter().any(|e| e == cx.endpoint.name()),
        ) && any(
            s.clients.is_empty(),
            s.clients.iter().any(|n| n.contains(&cx.client_addr.ip())),
        ) && any(
            s.users.is_empty(),
            cx.proxy_user.as_ref().is_some_and(|u| s.users.contains(u)),
        ) && cx
            .target
            .as_ref()
            .is_some_and(|t| s.destinations.check(t) == Verdict::Matches)
    }
}

/// The routes are compiled once, into the app context.
#[derive(OxyExt)]
#[oxy(app_settings = RouterSettings, app_context = Vec<Route>)]
struct EgressRouter;

/// The egress hook: the firewall, then the routes.
struct Router {
    routes: Vec<Route>,
    firewall: FirewallSettings,
    /// Traffic no route takes.
    direct: Taken,
}

#[metrics]
mod egress_router {
    /// Traffic that took each route (`direct` when none matched).
    pub fn routed_total(route: &str) -> Counter;
    /// Targets the L4 firewall denied (or whose resolved addresses, of one family, it
    /// removed).
    pub fn denied_total() -> Counter;
}

#[async_trait]
impl EgressHook<EgressRouter> for Router {
    async fn on_egress(&self, cx: &mut EgressContext<EgressRouter>) -> EgressAction {
        let Some(target) = cx.target.clone() else {
            return EgressAction::Deny("no destination".into());
        };
        let fw = &self.firewall;
        let denied = fw.deny.iter().any(|d| d.check(&target) == Verdict::Matches);
        let allowed = fw.allow.is_empty()
            || fw
                .allow
                .iter()
                .any(|d| d.check(&target) != Verdict::NoMatch);
        if denied || !allowed {
            egress_router::denied_total().inc();
            return EgressAction::Deny(format!("the L4 firewall does not allow {target}"));
        }
        let route = self.routes.iter().find(|r| r.takes(cx));
        let taken = route.map_or(&self.direct, |r| &r.taken);
        taken.routed.inc();
        cx.audit_label = Some(taken.audit_label.clone());
        let Some(route) = route else {
            return EgressAction::Allow;
        };
        match &route.via {
            Via::Direct => EgressAction::Allow,
            Via::Bind(ip) => EgressAction::BindTo(*ip),
            Via::Proxy(proxy) => EgressAction::UpstreamProxy(proxy.clone()),
            Via::Internal(service) => EgressAction::InternalService(InternalService {
                target: service.clone(),
                version: ProxyHeaderVersion::V2,
                tlvs: vec![
                    (0xE0, route.settings.name.as_bytes().to_vec()),
                    (0xE1, cx.proxy_user.clone().unwrap_or_default().into_bytes()),
                ],
            }),
        }
    }

    /// The firewall's networks apply to the addresses a name resolved to.
    async fn on_resolved(
        &self,
        cx: &EgressContext<EgressRouter>,
        addrs: &mut Vec<IpAddr>,
        _dns_item: Option<&()>,
    ) {
        let Some(target) = &cx.target else { return };
        let fw = &self.firewall;
        let allowed_by_name =
            fw.allow.is_empty() || fw.allow.iter().any(|d| d.check(target) == Verdict::Matches);
        let before = addrs.len();
        addrs.retain(|ip| {
            let resolved = Target {
                host: TargetHost::Ip(*ip),
                port: target.port,
            };
            let matches = |d: &Destinations| d.check(&resolved) == Verdict::Matches;
            !fw.deny.iter().any(matches) && (allowed_by_name || fw.allow.iter().any(matches))
        });
        if addrs.len() < before {
            egress_router::denied_total().inc();
        }
    }
}

/// A route's problem, at its place in the settings.
fn at(path: String, e: anyhow::Error) -> anyhow::Error {
    SettingError::at(path, format!("{e:#}")).into()
}

#[async_trait]
impl OxyApp for EgressRouter {
    fn app_context(settings: &AppServerSettings<Self>) -> anyhow::Result<Vec<Route>> {
        let routes = settings.app.routes.iter().enumerate();
        routes
            .map(|(i, route)| Route::compile(route).map_err(|e| at(format!("routes[{i}]"), e)))
            .collect()
    }

    async fn start(
        settings: AppServerSettings<Self>,
        routes: Vec<Route>,
    ) -> anyhow::Result<Hooks<Self>> {
        let firewall = settings.app.firewall.clone();
        let direct = Taken::new("direct");
        Ok(Hooks::of(Router {
            routes,
            firewall,
            direct,
        })
        .egress()
        .into())
    }
}

fn main() -> OxyResult<()> {
    oxy::bootstrap::<EgressRouter>()
}
