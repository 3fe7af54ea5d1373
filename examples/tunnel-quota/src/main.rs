//! Tunnel quotas: a CONNECT proxy whose users (`http.proxy_auth`) may each have only so
//! many tunnels open at once (`http.user_limits`, a framework setting: 429 past it), to
//! the ports the app's settings allow, with a metric per user and a log line per ended
//! tunnel.

use oxy::prelude::*;

/// The `app:` section.
#[oxy_app_settings]
pub struct QuotaSettings {
    /// Ports tunnels may go to; empty allows every port.
    pub allowed_ports: Vec<u16>,
}

#[metrics]
mod tunnel_quota {
    /// Tunnels opened, by user.
    pub fn tunnels_total(user: &str) -> Counter;
    /// Tunnels refused for their port.
    pub fn port_refused_total() -> Counter;
}

#[derive(OxyExt)]
#[oxy(app_settings = QuotaSettings)]
struct TunnelQuota;

/// The hooks, with the allowed ports.
struct Quota {
    allowed_ports: Vec<u16>,
}

#[async_trait]
impl EgressHook<TunnelQuota> for Quota {
    /// Refuses a port not on the list before anything is connected (403 to the client).
    async fn on_egress(&self, cx: &mut EgressContext<TunnelQuota>) -> EgressAction {
        let port = cx.target.as_ref().map_or(0, |t| t.port);
        if self.allowed_ports.is_empty() || self.allowed_ports.contains(&port) {
            return EgressAction::Allow;
        }
        tunnel_quota::port_refused_total().inc();
        EgressAction::Deny(format!("port {port} is not allowed"))
    }
}

#[async_trait]
impl TunnelHook<TunnelQuota> for Quota {
    async fn on_tunnel_start(&self, cx: &mut TunnelContext<TunnelQuota>) -> TunnelAction {
        tunnel_quota::tunnels_total(cx.proxy_user.as_deref().unwrap_or("-")).inc();
        TunnelAction::Continue
    }

    async fn on_tunnel_end(&self, cx: &mut TunnelContext<TunnelQuota>, end: &TunnelSummary) {
        oxy::tracing::info!(
            user = cx.proxy_user.as_deref().unwrap_or("-"),
            target = %cx.target,
            up = end.bytes_up,
            down = end.bytes_down,
            seconds = end.duration.as_secs_f64(),
            reason = %end.close_reason,
            "tunnel ended"
        );
    }
}

#[async_trait]
impl OxyApp for TunnelQuota {
    async fn start(settings: AppServerSettings<Self>, _: ()) -> anyhow::Result<Hooks<Self>> {
        let allowed_ports = settings.app.allowed_ports.clone();
        Ok(Hooks::of(Quota { allowed_ports }).egress().tunnel().into())
    }
}

fn main() -> OxyResult<()> {
    oxy::bootstrap::<TunnelQuota>()
}
