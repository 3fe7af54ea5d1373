//! UDP listeners: demultiplex datagrams into flows (one per client, or per original
//! client behind PROXY v2 headers) with bounded queues.

use crate::app::OxyExt;
use crate::drain::Drain;
use crate::endpoint::Endpoint;
use crate::onramp::proxy_protocol::{self, ProxyFacts, oxy_proxy_protocol};
use crate::services::Services;
use crate::settings::{ProxyProtocolMode, UdpProxyHeader};
use crate::tunnel::udp::{FlowStart, oxy_udp};
use bytes::Bytes;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::{Semaphore, mpsc};
use tracing::Instrument;

/// Largest datagram read from a client.
const MAX_DATAGRAM: usize = 65_535;

/// A flow: the sending socket address, and the original client behind a PROXY header.
type FlowKey = (SocketAddr, Option<SocketAddr>);

/// What every new flow of one listener shares.
struct Listener<App: OxyExt> {
    socket: Arc<UdpSocket>,
    local_addr: SocketAddr,
    endpoint: Arc<Endpoint<App>>,
    slots: Option<Arc<Semaphore>>,
    services: Arc<Services<App>>,
    drain: Drain,
    ended: mpsc::UnboundedSender<FlowKey>,
}

/// Receives datagrams on `socket` for `endpoint` until the drain stops accepting.
pub async fn serve<App: OxyExt>(
    socket: UdpSocket,
    endpoint: Arc<Endpoint<App>>,
    slots: Option<Arc<Semaphore>>,
    services: Arc<Services<App>>,
    drain: Drain,
) {
    let name = endpoint.name().to_string();
    let local_addr = match socket.local_addr() {
        Ok(addr) => addr,
        Err(e) => {
            tracing::error!(endpoint = %name, error = %e, "UDP listener has no address");
            return;
        }
    };
    let (ended, mut ended_rx) = mpsc::unbounded_channel::<FlowKey>();
    let listener = Listener {
        socket: Arc::new(socket),
        local_addr,
        endpoint,
        slots,
        services,
        drain,
        ended,
    };
    let proxy = &listener.endpoint.settings.proxy_protocol;
    let mut flows: HashMap<FlowKey, mpsc::Sender<Bytes>> = HashMap::new();
    // Peers whose flow began behind a header (`first_datagram`), and that original client.
    let mut first_headers: HashMap<SocketAddr, Option<SocketAddr>> = HashMap::new();
    let tracked = oxy_udp::listener_flows(&name);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, peer) = tokio::select! {
            _ = listener.drain.stopping() => break,
            Some(ended) = ended_rx.recv() => {
                // A flow started since for the same key keeps its entries.
                if flows.get(&ended).is_none_or(|tx| tx.is_closed()) {
                    flows.remove(&ended);
                    first_headers.remove(&ended.0);
                    tracked.set(gauge_value(flows.len()));
                }
                continue;
            }
            received = listener.socket.recv_from(&mut buf) => match received {
                Ok(received) => received,
                Err(e) => {
                    tracing::debug!(endpoint = %name, error = %e, "UDP receive failed");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            },
        };
        let datagram = &buf[..n];
        let header_expected = proxy.mode != ProxyProtocolMode::Off
            && (proxy.udp == UdpProxyHeader::PerDatagram || !first_headers.contains_key(&peer));
        let (facts, payload) = if header_expected {
            match read_header(datagram, peer, &listener) {
                Ok(split) => split,
                Err(reason) => {
                    oxy_proxy_protocol::errors_total(&name, reason).inc();
                    continue;
                }
            }
        } else {
            (None, datagram)
        };
        let original = match (&facts, proxy.udp) {
            (Some(facts), _) => facts.source,
            (None, UdpProxyHeader::FirstDatagram) => first_headers.get(&peer).copied().flatten(),
            (None, UdpProxyHeader::PerDatagram) => None,
        };
        let key = (peer, original);
        let datagram = Bytes::copy_from_slice(payload);
        let datagram = match flows.get(&key) {
            None => datagram,
            Some(flow) => match flow.try_send(datagram) {
                Ok(()) => continue,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    oxy_udp::dropped_total(&name, "queue_full").inc();
                    continue;
                }
                // The flow just ended: start a new one with this datagram.
                Err(mpsc::error::TrySendError::Closed(datagram)) => {
                    flows.remove(&key);
                    first_headers.remove(&peer);
                    datagram
                }
            },
        };
        // Entries are made only for a flow that starts, so a flood of new sources refused
        // by `max_connections` leaves nothing behind.
        if let Some(tx) = start_flow(&listener, key, facts, datagram) {
            flows.insert(key, tx);
            if proxy.mode != ProxyProtocolMode::Off && proxy.udp == UdpProxyHeader::FirstDatagram {
                first_headers.insert(peer, original);
            }
        }
        tracked.set(gauge_value(flows.len()));
    }
    tracing::debug!(endpoint = %name, "UDP listener closed");
}

/// The header facts and payload of a datagram that should carry a header, or why it is
/// dropped.
fn read_header<'a, App: OxyExt>(
    datagram: &'a [u8],
    peer: SocketAddr,
    listener: &Listener<App>,
) -> Result<(Option<ProxyFacts>, &'a [u8]), &'static str> {
    let settings = &listener.endpoint.settings.proxy_protocol;
    let (facts, header_len) = proxy_protocol::split_datagram(datagram).map_err(|e| e.as_label())?;
    match facts {
        Some(_) if !proxy_protocol::is_trusted(settings, peer) => Err("untrusted"),
        None if settings.mode == ProxyProtocolMode::Required => Err("missing"),
        Some(facts) => {
            oxy_proxy_protocol::headers_total(listener.endpoint.name(), facts.version).inc();
            Ok((Some(facts), &datagram[header_len..]))
        }
        None => Ok((None, datagram)),
    }
}

/// Starts a flow for `key` with its first datagram; its queue's sender, or `None` (the
/// datagram dropped and counted) when the endpoint has no free slot.
fn start_flow<App: OxyExt>(
    listener: &Listener<App>,
    key: FlowKey,
    proxy: Option<ProxyFacts>,
    first: Bytes,
) -> Option<mpsc::Sender<Bytes>> {
    let endpoint = &listener.endpoint;
    let name = endpoint.name();
    let Ok(permit) = super::take_slot(&listener.slots) else {
        oxy_udp::dropped_total(name, "max_connections").inc();
        return None;
    };
    let (tx, rx) = mpsc::channel(endpoint.settings.udp.queue.max(1));
    tx.try_send(first).ok()?;
    let (peer, original) = key;
    let id = super::next_connection_id();
    let span = crate::telemetry::logging::connection_span(id, name, peer);
    if let Some(original) = original {
        crate::telemetry::logging::record_client(&span, original);
    }
    let start = FlowStart {
        peer,
        proxy,
        original_client: original,
        local_addr: listener.local_addr,
        listener: listener.socket.clone(),
        from_client: rx,
        endpoint: endpoint.clone(),
        id,
    };
    let services = listener.services.clone();
    let flow_drain = listener.drain.clone();
    let ended = listener.ended.clone();
    listener.drain.spawn_connection(
        async move {
            if crate::telemetry::panics::contain(crate::tunnel::udp::run(
                start, services, flow_drain,
            ))
            .await
            .is_err()
            {
                tracing::error!("UDP flow panicked");
            }
            let _ = ended.send(key);
            drop(permit);
        }
        .instrument(span),
    );
    Some(tx)
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
