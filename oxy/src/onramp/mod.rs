//! On-ramps: the listeners that accept traffic for endpoints.

pub mod bind;
pub mod proxy_protocol;
pub mod quic;
pub mod tcp;
pub mod tun;
pub mod udp;

use crate::app::OxyExt;
use crate::hooks::{ConnectionEnd, ConnectionSummary, IngressConnectionContext};
use crate::per_thread::Placement;
use crate::services::Services;
use crate::telemetry::framework_metrics::oxy_connections;
use crate::telemetry::metrics::{Counter, CounterSlots, Gauge, Histogram};
use crate::telemetry::panics;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

/// One of an endpoint's `max_connections` slots (`Ok(None)` when it has no limit); an
/// error when all are taken.
pub(crate) fn take_slot(
    slots: &Option<Arc<Semaphore>>,
) -> Result<Option<OwnedSemaphorePermit>, TryAcquireError> {
    slots
        .as_ref()
        .map(|slots| slots.clone().try_acquire_owned())
        .transpose()
}

/// What a connection holds for as long as it, or any tunnel or upgrade it started, runs:
/// its `limits.max_connections` slot and its place among the per-thread runtimes.
pub struct ConnectionHold {
    _slot: Option<OwnedSemaphorePermit>,
    _placement: Option<Placement>,
}

impl ConnectionHold {
    /// The hold of `slot` and `placement`; `None` when there is neither.
    pub(crate) fn new(
        slot: Option<OwnedSemaphorePermit>,
        placement: Option<Placement>,
    ) -> Option<Arc<Self>> {
        (slot.is_some() || placement.is_some()).then(|| {
            Arc::new(Self {
                _slot: slot,
                _placement: placement,
            })
        })
    }
}

static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

/// A process-unique id for a new connection or flow.
pub fn next_connection_id() -> u64 {
    NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed)
}

/// The metrics every connection of an endpoint touches, resolved once for the endpoint
/// (when its first connection comes) instead of looked up by label per connection.
pub(crate) struct EndpointConnectionMetrics {
    name: Arc<str>,
    /// `oxy_connections_accepted_total`.
    pub accepted: Counter,
    /// `oxy_connections_active`.
    pub active: Gauge,
    /// `oxy_connections_duration_seconds`.
    pub duration: Histogram,
    closed: CounterSlots<{ ConnectionEnd::KINDS }>,
}

impl EndpointConnectionMetrics {
    /// The handles of endpoint `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            accepted: oxy_connections::accepted_total(name),
            active: oxy_connections::active(name),
            duration: oxy_connections::duration_seconds(name),
            closed: CounterSlots::default(),
        }
    }

    /// `oxy_connections_closed_total` of a connection that ended as `end` says.
    pub fn closed(&self, end: &ConnectionEnd) -> &Counter {
        self.closed.get(end.kind(), || {
            oxy_connections::closed_total(&self.name, end.as_label())
        })
    }
}

/// Counts and logs how a connection ended and runs the ingress hook's
/// `on_connection_end`.
pub(crate) async fn connection_ended<App: OxyExt>(
    cx: &mut IngressConnectionContext<App>,
    end: ConnectionEnd,
    services: &Arc<Services<App>>,
) {
    let endpoint = cx.endpoint.clone();
    let metrics = endpoint.connection_metrics();
    match &end {
        ConnectionEnd::Rejected(reason) => {
            oxy_connections::rejected_total(endpoint.name(), "ingress_hook").inc();
            tracing::info!(%reason, "connection rejected by the ingress hook");
        }
        ConnectionEnd::Panicked => {
            oxy_connections::rejected_total(endpoint.name(), "panic").inc();
        }
        ConnectionEnd::Shutdown => tracing::info!("connection closed: shutdown drain period over"),
        ConnectionEnd::IdleTimeout => tracing::debug!("connection closed: idle"),
        ConnectionEnd::HandshakeFailed(_) | ConnectionEnd::ProxyHeaderRefused(_) => {}
        ConnectionEnd::Closed => {}
    }
    metrics.closed(&end).inc();
    let summary = ConnectionSummary {
        duration: cx.accepted_at.elapsed(),
        end,
    };
    if let Some(ingress) = &services.hooks.ingress
        && panics::contain(ingress.on_connection_end(cx, &summary))
            .await
            .is_err()
    {
        tracing::error!("on_connection_end panicked");
    }
    metrics.duration.observe(summary.duration.as_secs_f64());
    tracing::debug!(duration = ?summary.duration, end = ?summary.end, "connection ended");
}
