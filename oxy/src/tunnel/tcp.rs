//! TCP tunnels: open the off-ramp for a target (egress hook and policy, DNS, happy
//! eyeballs, tunnel hook), then pump a client stream through it and audit the result.
//! Used by `protocol: tcp` endpoints and by CONNECT, whatever HTTP version carried it.

use crate::app::OxyExt;
use crate::drain::Drain;
use crate::endpoint::Endpoint;
use crate::hooks::{EgressContext, Target, Transport, TunnelAction, TunnelContext, TunnelSummary};
use crate::offramp::tcp::{self as offramp_tcp, ConnectError};
use crate::services::Services;
use crate::telemetry::audit::{AuditStart, Traffic};
use crate::tunnel::TunnelRefused;
use crate::tunnel::metrics::oxy_tunnel;
use crate::tunnel::pump::{CloseReason, PumpLimits, pump_tcp};
use crate::tunnel::stream::TunnelStream;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// A tunnel whose off-ramp is connected, ready to pump.
pub struct TcpTunnel<App: OxyExt> {
    services: Arc<Services<App>>,
    cx: TunnelContext<App>,
    server: TcpStream,
    limits: PumpLimits,
    audit: AuditStart,
}

/// Connects the off-ramp for `target` (which the egress hook may change) and runs the
/// tunnel hook. A refusal is counted and audited here.
pub async fn open<App: OxyExt>(
    services: &Arc<Services<App>>,
    endpoint: &Arc<Endpoint<App>>,
    peer_addr: SocketAddr,
    original_client: Option<SocketAddr>,
    local_addr: SocketAddr,
    target: Option<Target>,
    drain: &Drain,
) -> Result<TcpTunnel<App>, TunnelRefused> {
    let client_addr = original_client.unwrap_or(peer_addr);
    let audit = AuditStart::now(endpoint.name(), "tcp", peer_addr, original_client);
    let mut egress = EgressContext {
        endpoint: endpoint.clone(),
        client_addr,
        local_addr,
        transport: Transport::Tcp,
        target,
    };
    let refuse = |target: Option<&Target>, resolved, e: TunnelRefused| {
        tracing::info!(target = ?target.map(ToString::to_string), reason = %e, "tunnel refused");
        oxy_tunnel::ended_total(endpoint.name(), e.label()).inc();
        let target = target.map(ToString::to_string).unwrap_or_default();
        services
            .audit
            .write(&audit.record(target, resolved, Traffic::default(), e.to_string()));
        e
    };
    let connected = tokio::select! {
        connected = offramp_tcp::connect(services, &mut egress) => connected,
        _ = drain.force_closing() => return Err(refuse(egress.target.as_ref(), None, TunnelRefused::Shutdown)),
    };
    let (mut server, mut peer) = match connected {
        Ok(connected) => connected,
        Err(e) => return Err(refuse(egress.target.as_ref(), None, e.into())),
    };
    let Some(target) = egress.target.clone() else {
        return Err(refuse(None, None, ConnectError::NoTarget.into()));
    };

    let settings = &endpoint.settings.tunnel;
    let mut limits = limits_of(settings.idle_timeout, settings.max_lifetime);
    let mut cx = TunnelContext {
        endpoint: endpoint.clone(),
        client_addr,
        transport: Transport::Tcp,
        target,
        peer_addr: peer,
    };
    if let Some(hook) = &services.hooks.tunnel {
        match hook.on_tunnel_start(&mut cx).await {
            TunnelAction::Continue => {}
            TunnelAction::SetTimeouts { idle, max_lifetime } => {
                limits = limits_of(idle, max_lifetime);
            }
            TunnelAction::Block(reason) => {
                return Err(refuse(
                    Some(&cx.target),
                    Some(peer),
                    TunnelRefused::Blocked(reason),
                ));
            }
            TunnelAction::Decapsulate => {
                return Err(refuse(
                    Some(&cx.target),
                    Some(peer),
                    TunnelRefused::DecapsulationUnavailable,
                ));
            }
            TunnelAction::Redirect(redirect) => {
                drop(server);
                egress.target = Some(redirect.clone());
                match offramp_tcp::connect_without_hook(services, &egress, None).await {
                    Ok((redirected, addr)) => {
                        (server, peer) = (redirected, addr);
                        cx.target = redirect;
                        cx.peer_addr = peer;
                    }
                    Err(e) => return Err(refuse(Some(&redirect), None, e.into())),
                }
            }
        }
    }
    Ok(TcpTunnel {
        services: services.clone(),
        cx,
        server,
        limits,
        audit,
    })
}

fn limits_of(idle: Duration, max_lifetime: Duration) -> PumpLimits {
    PumpLimits {
        idle,
        max_lifetime: (max_lifetime > Duration::ZERO).then_some(max_lifetime),
    }
}

impl<App: OxyExt> TcpTunnel<App> {
    /// The address the off-ramp connected to.
    pub fn peer_addr(&self) -> SocketAddr {
        self.cx.peer_addr
    }

    /// Pumps `client` through the tunnel until it ends, then runs the tunnel-end hook,
    /// counts and audits it.
    pub async fn pump(mut self, client: TunnelStream, drain: &Drain) -> CloseReason {
        let endpoint = self.cx.endpoint.name().to_string();
        oxy_tunnel::started_total(&endpoint, "tcp").inc();
        let active = oxy_tunnel::active(&endpoint, "tcp");
        active.inc();
        let (target, peer) = (self.cx.target.clone(), self.cx.peer_addr);
        tracing::debug!(%target, %peer, "tunnel open");
        let (outcome, zero_copy) =
            pump_tcp(client, self.server, self.limits, drain.force_closing()).await;
        active.dec();
        if zero_copy {
            oxy_tunnel::zero_copy_total(&endpoint).inc();
        }
        oxy_tunnel::bytes_total(&endpoint, "up").inc_by(outcome.bytes_up);
        oxy_tunnel::bytes_total(&endpoint, "down").inc_by(outcome.bytes_down);
        oxy_tunnel::ended_total(&endpoint, outcome.reason.label()).inc();
        tracing::info!(
            %target,
            %peer,
            up = outcome.bytes_up,
            down = outcome.bytes_down,
            reason = %outcome.reason,
            "tunnel closed"
        );
        let summary = TunnelSummary {
            bytes_up: outcome.bytes_up,
            bytes_down: outcome.bytes_down,
            packets_up: 0,
            packets_down: 0,
            duration: self.audit.elapsed(),
            close_reason: outcome.reason.to_string(),
        };
        if let Some(hook) = &self.services.hooks.tunnel {
            hook.on_tunnel_end(&mut self.cx, &summary).await;
        }
        let traffic = Traffic {
            bytes_up: outcome.bytes_up,
            bytes_down: outcome.bytes_down,
            ..Traffic::default()
        };
        let record = self.audit.record(
            target.to_string(),
            Some(peer),
            traffic,
            summary.close_reason,
        );
        self.services.audit.write(&record);
        outcome.reason
    }
}
