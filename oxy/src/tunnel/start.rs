//! The start of a tunnel, one way for TCP and UDP: refusing it (logged, counted and
//! audited), and what the tunnel hook's [`TunnelAction`] means once the off-ramp is
//! connected.

use crate::app::OxyExt;
use crate::hooks::{EgressContext, Target, TunnelAction, TunnelContext};
use crate::offramp::tcp::ConnectError;
use crate::services::Services;
use crate::telemetry::audit::{AuditStart, Traffic};
use crate::tunnel::TunnelRefused;
use crate::tunnel::metrics::oxy_tunnel;
use std::net::SocketAddr;
use std::time::Duration;

/// Refuses tunnels of one endpoint: logs why (`what`: "tunnel", "UDP flow"), counts it
/// in `oxy_tunnel_ended_total` and writes the audit record.
pub(crate) struct Refusal<'a, App: OxyExt> {
    pub services: &'a Services<App>,
    pub endpoint: &'a str,
    pub audit: &'a AuditStart,
    pub what: &'static str,
}

impl<App: OxyExt> Refusal<'_, App> {
    /// The refusal `e` of a tunnel to `target` (`resolved`: the address connected to,
    /// if any), recorded.
    pub fn refuse(
        &self,
        target: Option<&Target>,
        resolved: Option<SocketAddr>,
        e: TunnelRefused,
    ) -> TunnelRefused {
        let destination = target.map(ToString::to_string);
        tracing::info!(?destination, reason = %e, "{} refused", self.what);
        oxy_tunnel::ended_total(self.endpoint, e.as_label()).inc();
        self.services.audit.write_with(|| {
            self.audit.record(
                destination.unwrap_or_default(),
                resolved,
                Traffic::default(),
                e.to_string(),
            )
        });
        e
    }
}

/// A tunnel's timeouts: idle, and the longest it may live (zero: no limit).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub idle: Duration,
    pub max_lifetime: Duration,
}

impl Timeouts {
    /// The longest the tunnel may live, if it is limited.
    pub fn lifetime_limit(&self) -> Option<Duration> {
        (self.max_lifetime > Duration::ZERO).then_some(self.max_lifetime)
    }
}

/// What a tunnel does once the tunnel hook has seen it.
pub(crate) enum Start {
    /// Pump it.
    Pump,
    /// Look inside it ([`TunnelAction::Decapsulate`]).
    Decapsulate,
    /// Connect to this target instead, with the egress decision kept; then pump.
    Redirect(Target),
}

/// Runs the tunnel hook's `on_tunnel_start` on `cx` and applies what it answers: new
/// `timeouts`, or a block (refused and recorded). Without a tunnel hook the tunnel is
/// pumped as it is.
pub(crate) async fn on_tunnel_start<App: OxyExt>(
    cx: &mut TunnelContext<App>,
    timeouts: &mut Timeouts,
    refusal: &Refusal<'_, App>,
) -> Result<Start, TunnelRefused> {
    let Some(hook) = &refusal.services.hooks.tunnel else {
        return Ok(Start::Pump);
    };
    match hook.on_tunnel_start(cx).await {
        TunnelAction::Continue => Ok(Start::Pump),
        TunnelAction::SetTimeouts { idle, max_lifetime } => {
            *timeouts = Timeouts { idle, max_lifetime };
            Ok(Start::Pump)
        }
        TunnelAction::Block(reason) => {
            let refused = TunnelRefused::Blocked(reason);
            Err(refusal.refuse(Some(&cx.target), Some(cx.peer_addr), refused))
        }
        TunnelAction::Decapsulate => Ok(Start::Decapsulate),
        TunnelAction::Redirect(target) => Ok(Start::Redirect(target)),
    }
}

/// Redirects a tunnel to `target` ([`TunnelAction::Redirect`]): `connect` reaches it
/// with the egress decision kept (the egress hook's `on_resolved` sees the tunnel's
/// state), then `cx` names the new target and peer. A failure is refused and recorded.
pub(crate) async fn redirect<App: OxyExt, T>(
    cx: &mut TunnelContext<App>,
    egress: &mut EgressContext<App>,
    target: Target,
    refusal: &Refusal<'_, App>,
    connect: impl AsyncFnOnce(&Target, &EgressContext<App>) -> Result<(T, SocketAddr), ConnectError>,
) -> Result<T, TunnelRefused> {
    egress.target = Some(target.clone());
    std::mem::swap(&mut egress.app, &mut cx.app);
    let connected = connect(&target, egress).await;
    std::mem::swap(&mut egress.app, &mut cx.app);
    match connected {
        Ok((connection, peer)) => {
            cx.target = target;
            cx.peer_addr = peer;
            Ok(connection)
        }
        Err(e) => Err(refusal.refuse(Some(&target), None, e.into())),
    }
}

/// Runs `session` (Oxy serving what is inside a tunnel) as a tunnel of `transport`
/// (`tcp`, `udp`) on `endpoint`: counted as started, active while it runs, and ended
/// `decapsulated` with the client's traffic in `counts`, which it returns.
pub(crate) async fn serve_inside<T>(
    endpoint: &str,
    transport: &str,
    session: impl std::future::Future<Output = T>,
    counts: &crate::tunnel::counted::Counts,
) -> (T, Traffic) {
    let active = Active::start(endpoint, transport);
    let ended = session.await;
    drop(active);
    let traffic = counts.traffic();
    oxy_tunnel::bytes_total(endpoint, "up").inc_by(traffic.bytes_up);
    oxy_tunnel::bytes_total(endpoint, "down").inc_by(traffic.bytes_down);
    oxy_tunnel::ended_total(endpoint, "decapsulated").inc();
    (ended, traffic)
}

/// Counts a tunnel as started, and in the active gauge while it lives (also when its
/// task is dropped).
pub(crate) struct Active(prometheus::IntGauge);

impl Active {
    /// A tunnel of `transport` (`tcp`, `udp`) on `endpoint` starting to run.
    pub fn start(endpoint: &str, transport: &str) -> Self {
        let started = oxy_tunnel::started_total(endpoint, transport);
        Self::counted(&started, &oxy_tunnel::active(endpoint, transport))
    }

    /// A tunnel starting to run, counted in `started` and in the `active` gauge.
    pub fn counted(started: &prometheus::IntCounter, active: &prometheus::IntGauge) -> Self {
        started.inc();
        active.inc();
        Self(active.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.dec();
    }
}
