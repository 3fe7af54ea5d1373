//! UDP listeners: demultiplex datagrams by client address into flows with bounded queues.

use crate::app::OxyExt;
use crate::drain::Drain;
use crate::endpoint::Endpoint;
use crate::services::Services;
use crate::tunnel::udp::{FlowStart, oxy_udp};
use bytes::Bytes;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tracing::Instrument;

/// Largest datagram read from a client.
const MAX_DATAGRAM: usize = 65_535;

/// Receives datagrams on `socket` for `endpoint` until the drain stops accepting; each
/// client address is one flow.
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
    let socket = Arc::new(socket);
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<SocketAddr>();
    let mut flows: HashMap<SocketAddr, mpsc::Sender<Bytes>> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, client) = tokio::select! {
            _ = drain.stopping() => break,
            Some(ended) = ended_rx.recv() => {
                if flows.get(&ended).is_some_and(|tx| tx.is_closed()) {
                    flows.remove(&ended);
                }
                continue;
            }
            received = socket.recv_from(&mut buf) => match received {
                Ok(received) => received,
                Err(e) => {
                    tracing::debug!(endpoint = %name, error = %e, "UDP receive failed");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            },
        };
        let datagram = Bytes::copy_from_slice(&buf[..n]);
        if let Some(flow) = flows.get(&client) {
            match flow.try_send(datagram) {
                Ok(()) => continue,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    oxy_udp::dropped_total(&name, "queue_full").inc();
                    continue;
                }
                // The flow just ended: start a new one with this datagram.
                Err(mpsc::error::TrySendError::Closed(datagram)) => {
                    flows.remove(&client);
                    start_flow(
                        &mut flows, datagram, client, local_addr, &socket, &endpoint, &slots,
                        &services, &drain, &ended_tx,
                    );
                }
            }
        } else {
            start_flow(
                &mut flows, datagram, client, local_addr, &socket, &endpoint, &slots, &services,
                &drain, &ended_tx,
            );
        }
    }
    tracing::debug!(endpoint = %name, "UDP listener closed");
}

#[allow(clippy::too_many_arguments)]
fn start_flow<App: OxyExt>(
    flows: &mut HashMap<SocketAddr, mpsc::Sender<Bytes>>,
    first: Bytes,
    client: SocketAddr,
    local_addr: SocketAddr,
    socket: &Arc<UdpSocket>,
    endpoint: &Arc<Endpoint<App>>,
    slots: &Option<Arc<Semaphore>>,
    services: &Arc<Services<App>>,
    drain: &Drain,
    ended: &mpsc::UnboundedSender<SocketAddr>,
) {
    let name = endpoint.name();
    let permit: Option<OwnedSemaphorePermit> = match slots {
        None => None,
        Some(slots) => match slots.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                oxy_udp::dropped_total(name, "max_connections").inc();
                return;
            }
        },
    };
    let (tx, rx) = mpsc::channel(endpoint.settings.udp.queue.max(1));
    if tx.try_send(first).is_err() {
        return;
    }
    flows.insert(client, tx);
    let id = crate::onramp::tcp::next_connection_id();
    let span = tracing::info_span!("connection", id, endpoint = %name, peer = %client);
    let start = FlowStart {
        client,
        local_addr,
        listener: socket.clone(),
        from_client: rx,
        endpoint: endpoint.clone(),
        id,
    };
    let services = services.clone();
    let flow_drain = drain.clone();
    let ended = ended.clone();
    drain.spawn_connection(
        async move {
            if crate::telemetry::panics::contain(crate::tunnel::udp::run(
                start, services, flow_drain,
            ))
            .await
            .is_err()
            {
                tracing::error!("UDP flow panicked");
            }
            let _ = ended.send(client);
            drop(permit);
        }
        .instrument(span),
    );
}
