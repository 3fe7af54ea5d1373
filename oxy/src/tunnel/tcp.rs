//! TCP tunnels: open the off-ramp for a target (egress hook and policy, DNS, happy
//! eyeballs, tunnel hook), then pump a client stream through it and audit the result.
//! Used by `protocol: tcp` endpoints and by CONNECT, whatever HTTP version carried it.

use crate::app::OxyExt;
use crate::drain::Drain;
use crate::endpoint::Endpoint;
use crate::hooks::{
    EgressContext, InnerAction, InnerProtocol, Inspection, Target, Transport, TunnelContext,
    TunnelSummary,
};
use crate::offramp::tcp::{self as offramp_tcp, ConnectError};
use crate::services::Services;
use crate::telemetry::audit::{AuditStart, Traffic};
use crate::telemetry::distributed_tracing;
use crate::tunnel::counted::Counts;
use crate::tunnel::metrics::oxy_tunnel;
use crate::tunnel::pump::{CloseReason, PumpLimits, PumpOutcome, pump_tcp};
use crate::tunnel::start::{self, Refusal, Start, Timeouts, on_tunnel_start};
use crate::tunnel::stream::TunnelStream;
use crate::tunnel::{TunnelClient, TunnelRefused};
use futures_util::FutureExt;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;
use tracing::Instrument;

/// A tunnel whose off-ramp is connected, ready to pump.
pub struct TcpTunnel<App: OxyExt> {
    record: TunnelRecord<App>,
    /// The target's connection (kept while Oxy looks inside, in case it pumps after all).
    server: TcpStream,
    /// Whether the tunnel hook asked to look inside ([`TunnelAction::Decapsulate`](crate::hooks::TunnelAction::Decapsulate)).
    decapsulate: bool,
    limits: PumpLimits,
    /// The tunnel's span: its connect and its pumping.
    span: tracing::Span,
}

/// What a tunnel's end needs: the tunnel hook's context and the audit record's start.
struct TunnelRecord<App: OxyExt> {
    services: Arc<Services<App>>,
    cx: TunnelContext<App>,
    audit: AuditStart,
}

/// Connects the off-ramp for `target` (which the egress hook may change) and runs the
/// tunnel hook. A refusal is counted and audited here.
pub async fn open<App: OxyExt>(
    services: &Arc<Services<App>>,
    endpoint: &Arc<Endpoint<App>>,
    client: &TunnelClient<App>,
    target: Option<Target>,
    drain: &Drain,
) -> Result<TcpTunnel<App>, TunnelRefused> {
    let mut audit = AuditStart::now(endpoint.name(), "tcp", client);
    let span = match &target {
        Some(target) => distributed_tracing::tunnel_span(target),
        None => distributed_tracing::tunnel_span(&"(the egress hook's)"),
    };
    let mut egress = EgressContext::new(endpoint, client, Transport::Tcp, target);
    let connect = offramp_tcp::connect(services, &mut egress).instrument(span.clone());
    let connected = tokio::select! {
        connected = connect => Some(connected),
        _ = drain.force_closing() => None,
    };
    audit.label = egress.audit_label.clone();
    let refusal = Refusal {
        services,
        endpoint: endpoint.name(),
        audit: &audit,
        what: "tunnel",
    };
    let (server, peer, route) = match connected {
        Some(Ok(connected)) => connected,
        Some(Err(e)) => return Err(refusal.refuse(egress.target.as_ref(), None, e.into())),
        None => {
            let shutdown = TunnelRefused::Shutdown;
            return Err(refusal.refuse(egress.target.as_ref(), None, shutdown));
        }
    };
    let Some(target) = egress.target.clone() else {
        return Err(refusal.refuse(None, None, ConnectError::NoTarget.into()));
    };

    let settings = &endpoint.settings.tunnel;
    let mut timeouts = Timeouts {
        idle: settings.idle_timeout,
        max_lifetime: settings.max_lifetime,
    };
    let mut cx = TunnelContext::after_egress(&mut egress, target, peer);
    let mut server = server;
    let decapsulate = match on_tunnel_start(&mut cx, &mut timeouts, &refusal).await? {
        Start::Pump => false,
        Start::Decapsulate => true,
        // The route the egress hook chose (bind address, upstream proxy, internal
        // service) stays; only the target changes.
        Start::Redirect(target) => {
            drop(server);
            let connect = async |_: &Target, egress: &EgressContext<App>| {
                offramp_tcp::connect_by(services, &route, egress).await
            };
            server = start::redirect(&mut cx, &mut egress, target, &refusal, connect).await?;
            false
        }
    };
    Ok(TcpTunnel {
        record: TunnelRecord {
            services: services.clone(),
            cx,
            audit,
        },
        server,
        decapsulate,
        limits: PumpLimits {
            idle: timeouts.idle,
            max_lifetime: timeouts.lifetime_limit(),
        },
        span,
    })
}

impl<App: OxyExt> TcpTunnel<App> {
    /// The address the off-ramp connected to.
    pub fn peer_addr(&self) -> SocketAddr {
        self.record.cx.peer_addr
    }

    /// Whether the tunnel hook asked Oxy to look inside ([`TunnelAction::Decapsulate`](crate::hooks::TunnelAction::Decapsulate)):
    /// the caller then hands the client's stream to `http::inspect`.
    pub fn decapsulating(&self) -> bool {
        self.decapsulate
    }

    /// The target the tunnel reaches (after any redirect).
    pub fn target(&self) -> &Target {
        &self.record.cx.target
    }

    /// The tunnel's id, as in its audit record.
    pub fn id(&self) -> &str {
        self.record.audit.id()
    }

    /// The user the request that opened the tunnel was authenticated as.
    pub fn proxy_user(&self) -> Option<String> {
        self.record.cx.proxy_user.clone()
    }

    /// Asks the tunnel hook what to do with `found`, the client's first bytes (the
    /// hook's default without one).
    pub async fn inner_action(&mut self, found: &InnerProtocol) -> InnerAction {
        match &self.record.services.hooks.tunnel {
            Some(hook) => hook.on_inner_protocol(&mut self.record.cx, found).await,
            None => found.default_action(),
        }
    }

    /// Records how the contents are handled, for the summary and the audit record.
    pub fn set_inspection(&mut self, inspection: Inspection) {
        self.record.audit.inspection = inspection;
    }

    /// Runs `session`, Oxy's HTTP server on the client's bytes (plain or intercepted), in
    /// place of pumping: closes the target's connection, then runs the tunnel-end hook,
    /// counts and audits the tunnel with the client's traffic in `counts`.
    pub async fn serve_inside<T>(self, session: impl Future<Output = T>, counts: &Counts) -> T {
        let TcpTunnel { record, server, .. } = self;
        drop(server);
        let endpoint = record.cx.endpoint.name().to_string();
        let (ended, traffic) = start::serve_inside(&endpoint, "tcp", session, counts).await;
        record.finish(traffic, "decapsulated".into()).await;
        ended
    }

    /// Ends a tunnel the tunnel hook blocked once it saw inside: counted and audited.
    pub async fn blocked(mut self, reason: &str) {
        let cx = &self.record.cx;
        tracing::info!(destination = %cx.target, %reason, "tunnel blocked");
        oxy_tunnel::ended_total(cx.endpoint.name(), "blocked").inc();
        self.set_inspection(Inspection::Blocked);
        (self.record)
            .finish(Traffic::default(), format!("blocked: {reason}"))
            .await;
    }

    /// Ends a tunnel Oxy could not look inside as asked (the intercepted handshake
    /// failed): counted and audited with `reason`.
    pub async fn abandon(self, reason: &str) {
        oxy_tunnel::ended_total(self.record.cx.endpoint.name(), "inspection_failed").inc();
        (self.record)
            .finish(Traffic::default(), reason.to_string())
            .await;
    }

    /// Pumps `client` through the tunnel until it ends, then runs the tunnel-end hook,
    /// counts and audits it.
    ///
    /// Not an `async fn`: that would keep its arguments (the tunnel, the client's
    /// stream) in its future beside the pump they were moved into, and every idle
    /// tunnel would hold both. The pumping and the end are two stages of one future,
    /// each holding only its own state.
    pub fn pump(
        self,
        client: TunnelStream,
        drain: &Drain,
    ) -> impl Future<Output = CloseReason> + Send {
        let TcpTunnel {
            record,
            server,
            limits,
            span,
            ..
        } = self;
        let metrics = record.cx.endpoint.tcp_tunnel_metrics();
        let active = start::Active::counted(&metrics.started, &metrics.active);
        let (target, peer) = (&record.cx.target, record.cx.peer_addr);
        tracing::debug!(destination = %target, %peer, "tunnel open");
        pump_tcp(client, server, limits, drain.force_closing())
            .instrument(span)
            .then(move |(outcome, zero_copy)| {
                drop(active);
                // Boxed: the end (the tunnel-end hook, the audit record) is a larger
                // state than the pumping, and only a tunnel that ends needs it.
                Box::pin(record.pumped(outcome, zero_copy))
            })
    }

    /// Ends a tunnel whose client stream never came (the upgrade after the 2xx failed):
    /// runs the tunnel-end hook, counts and audits it as `upgrade_failed`.
    pub async fn upgrade_failed(self) {
        oxy_tunnel::ended_total(self.record.cx.endpoint.name(), "upgrade_failed").inc();
        (self.record)
            .finish(Traffic::default(), "upgrade_failed".into())
            .await;
    }
}

impl<App: OxyExt> TunnelRecord<App> {
    /// Counts, logs and ends a tunnel that was pumped until `outcome`.
    async fn pumped(self, outcome: PumpOutcome, zero_copy: bool) -> CloseReason {
        let metrics = self.cx.endpoint.tcp_tunnel_metrics();
        if zero_copy {
            metrics.zero_copy().inc();
        }
        metrics.bytes_up.inc_by(outcome.bytes_up);
        metrics.bytes_down.inc_by(outcome.bytes_down);
        metrics.ended(&outcome.reason).inc();
        tracing::info!(
            destination = %self.cx.target,
            peer = %self.cx.peer_addr,
            up = outcome.bytes_up,
            down = outcome.bytes_down,
            reason = %outcome.reason,
            "tunnel closed"
        );
        let traffic = Traffic {
            bytes_up: outcome.bytes_up,
            bytes_down: outcome.bytes_down,
            ..Traffic::default()
        };
        self.finish(traffic, outcome.reason.to_string()).await;
        outcome.reason
    }

    /// Runs the tunnel-end hook and writes the audit record of a tunnel that closed.
    async fn finish(mut self, traffic: Traffic, close_reason: String) {
        let summary = TunnelSummary {
            bytes_up: traffic.bytes_up,
            bytes_down: traffic.bytes_down,
            packets_up: 0,
            packets_down: 0,
            duration: self.audit.elapsed(),
            close_reason,
            inspection: self.audit.inspection,
        };
        if let Some(hook) = &self.services.hooks.tunnel {
            hook.on_tunnel_end(&mut self.cx, &summary).await;
        }
        let peer = self.cx.peer_addr;
        self.services.audit.write_with(|| {
            let target = self.cx.target.to_string();
            self.audit
                .record(target, Some(peer), traffic, summary.close_reason)
        });
    }
}
