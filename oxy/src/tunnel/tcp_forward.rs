//! `protocol: tcp` endpoints: each connection is forwarded to its target through the
//! egress hook and policy, the off-ramp, the tunnel hook and the pump, then audited.

use crate::app::OxyExt;
use crate::drain::Drain;
use crate::hooks::{
    ConnectionEnd, EgressContext, IngressConnectionContext, Target, Transport, TunnelAction,
    TunnelContext, TunnelSummary,
};
use crate::offramp::tcp as offramp_tcp;
use crate::services::Services;
use crate::telemetry::audit::AuditRecord;
use crate::tunnel::metrics::oxy_tunnel;
use crate::tunnel::pump::{CloseReason, PumpLimits, PumpOutcome, pump};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};
use tokio::net::TcpStream;

/// Forwards one accepted connection and reports how it ended.
pub async fn serve<App: OxyExt>(
    client: TcpStream,
    ingress: &IngressConnectionContext<App>,
    services: &Services<App>,
    drain: &Drain,
) -> ConnectionEnd {
    let audit = Audit {
        services,
        endpoint: ingress.endpoint.name(),
        client: ingress.peer_addr,
        started_at: SystemTime::now(),
        started: Instant::now(),
    };
    let mut egress = EgressContext {
        endpoint: ingress.endpoint.clone(),
        client_addr: ingress.peer_addr,
        transport: Transport::Tcp,
        target: ingress.endpoint.tcp_target.clone(),
    };
    let connected = tokio::select! {
        connected = offramp_tcp::connect(services, &mut egress) => connected,
        _ = drain.force_closing() => return ConnectionEnd::Shutdown,
    };
    let (mut server, mut peer) = match connected {
        Ok(connected) => connected,
        Err(e) => return audit.refused(egress.target.as_ref(), None, &e.to_string(), e.reason()),
    };
    let Some(mut target) = egress.target.clone() else {
        return audit.refused(None, None, "no target", "no_target");
    };

    let settings = &ingress.endpoint.settings.tunnel;
    let mut limits = PumpLimits {
        idle: settings.idle_timeout,
        max_lifetime: (settings.max_lifetime > Duration::ZERO).then_some(settings.max_lifetime),
    };
    let mut tunnel_cx = TunnelContext {
        endpoint: ingress.endpoint.clone(),
        client_addr: ingress.peer_addr,
        transport: Transport::Tcp,
        target: target.clone(),
        peer_addr: peer,
    };
    if let Some(hook) = &services.hooks.tunnel {
        match hook.on_tunnel_start(&mut tunnel_cx).await {
            TunnelAction::Continue => {}
            TunnelAction::SetTimeouts { idle, max_lifetime } => {
                limits = PumpLimits {
                    idle,
                    max_lifetime: (max_lifetime > Duration::ZERO).then_some(max_lifetime),
                };
            }
            TunnelAction::Block(reason) => {
                return audit.refused(
                    Some(&target),
                    Some(peer),
                    &format!("blocked: {reason}"),
                    "blocked",
                );
            }
            TunnelAction::Decapsulate => {
                return audit.refused(
                    Some(&target),
                    Some(peer),
                    "decapsulation unavailable",
                    "decapsulation_unavailable",
                );
            }
            TunnelAction::Redirect(redirect) => {
                drop(server);
                egress.target = Some(redirect.clone());
                match offramp_tcp::connect_without_hook(services, &egress, None).await {
                    Ok((redirected, addr)) => {
                        (server, peer) = (redirected, addr);
                        target = redirect;
                        tunnel_cx.target = target.clone();
                        tunnel_cx.peer_addr = peer;
                    }
                    Err(e) => {
                        return audit.refused(Some(&redirect), None, &e.to_string(), e.reason());
                    }
                }
            }
        }
    }

    let endpoint = ingress.endpoint.name();
    oxy_tunnel::started_total(endpoint, "tcp").inc();
    let active = oxy_tunnel::active(endpoint, "tcp");
    active.inc();
    tracing::debug!(%target, %peer, "tunnel open");
    let outcome = pump(client, server, limits, drain.force_closing()).await;
    active.dec();
    oxy_tunnel::bytes_total(endpoint, "up").inc_by(outcome.bytes_up);
    oxy_tunnel::bytes_total(endpoint, "down").inc_by(outcome.bytes_down);
    oxy_tunnel::ended_total(endpoint, outcome.reason.label()).inc();
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
        duration: audit.started.elapsed(),
        close_reason: outcome.reason.to_string(),
    };
    if let Some(hook) = &services.hooks.tunnel {
        hook.on_tunnel_end(&mut tunnel_cx, &summary).await;
    }
    audit.write(
        Some(&target),
        Some(peer),
        &outcome,
        &outcome.reason.to_string(),
    );
    if outcome.reason == CloseReason::Shutdown {
        ConnectionEnd::Shutdown
    } else {
        ConnectionEnd::Closed
    }
}

/// Writes the audit record of one tunnel.
struct Audit<'a, App: OxyExt> {
    services: &'a Services<App>,
    endpoint: &'a str,
    client: SocketAddr,
    started_at: SystemTime,
    started: Instant,
}

impl<App: OxyExt> Audit<'_, App> {
    fn write(
        &self,
        target: Option<&Target>,
        resolved: Option<SocketAddr>,
        outcome: &PumpOutcome,
        close_reason: &str,
    ) {
        self.services.audit.write(&AuditRecord {
            endpoint: self.endpoint.to_string(),
            protocol: "tcp",
            client: self.client,
            target: target.map(ToString::to_string).unwrap_or_default(),
            resolved,
            bytes_up: outcome.bytes_up,
            bytes_down: outcome.bytes_down,
            packets_up: 0,
            packets_down: 0,
            start: AuditRecord::timestamp(self.started_at),
            duration_ms: AuditRecord::millis(self.started.elapsed()),
            close_reason: close_reason.to_string(),
        });
    }

    /// Records a tunnel that never pumped, and ends the connection.
    fn refused(
        &self,
        target: Option<&Target>,
        resolved: Option<SocketAddr>,
        why: &str,
        label: &'static str,
    ) -> ConnectionEnd {
        tracing::info!(target = ?target.map(ToString::to_string), reason = why, "tunnel refused");
        oxy_tunnel::ended_total(self.endpoint, label).inc();
        let outcome = PumpOutcome {
            bytes_up: 0,
            bytes_down: 0,
            reason: CloseReason::Error(why.to_string()),
        };
        self.write(target, resolved, &outcome, why);
        ConnectionEnd::Closed
    }
}
