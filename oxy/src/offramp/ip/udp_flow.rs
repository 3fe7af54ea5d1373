//! IP → UDP: a UDP flow found in IP packets runs through the ordinary UDP tunnel
//! (egress hook and policy, tunnel hook, audit); its replies are re-encapsulated as UDP
//! packets towards the client.

use crate::app::OxyExt;
use crate::drain::Drain;
use crate::endpoint::Endpoint;
use crate::hooks::Target;
use crate::http::inspect_quic::run as run_flow;
use crate::http::pipeline::Handler;
use crate::services::Services;
use crate::tunnel::TunnelClient;
use crate::tunnel::packet::flows::FlowKey;
use crate::tunnel::packet::{FirstPacket, SessionEvent, ToClient, icmp_for_refusal};
use crate::tunnel::udp::{ClientSide, DatagramSink};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::Instrument;

/// What one UDP flow needs.
pub struct UdpFlow<App: OxyExt> {
    /// Shared services.
    pub services: Arc<Services<App>>,
    /// The endpoint.
    pub endpoint: Arc<Endpoint<App>>,
    /// The session's handler; QUIC intercepted inside the flow is served by it, for
    /// this flow's client.
    pub handler: Arc<Handler<App>>,
    /// Who the flow is for.
    pub client: TunnelClient<App>,
    /// The flow.
    pub key: FlowKey,
    /// The packet that started it, answered with an ICMP error if the flow is refused.
    pub first: FirstPacket,
    /// Where replies go.
    pub to_client: ToClient,
    /// Idle timeout of the flow.
    pub idle: Duration,
    /// Told when the flow is refused.
    pub events: mpsc::Sender<SessionEvent<App>>,
}

impl<App: OxyExt> UdpFlow<App> {
    /// Opens the UDP tunnel in a drained task and returns where the flow's payloads go
    /// (at most `queue` wait while it opens).
    pub fn start(self, queue: usize, drain: &Drain) -> mpsc::Sender<Bytes> {
        let (tx, mut rx) = mpsc::channel(queue);
        let drain = drain.clone();
        let task_drain = drain.clone();
        drain.spawn_connection(
            async move {
                let target = Target::from(self.key.destination_addr());
                let opened = crate::tunnel::udp::open(
                    &self.services,
                    &self.endpoint,
                    &self.client,
                    Some(target),
                    self.idle,
                )
                .await;
                match opened {
                    Ok(tunnel) => {
                        let sink = Reencapsulate {
                            key: self.key,
                            to_client: self.to_client,
                        };
                        let client = ClientSide::Sink(Box::new(sink));
                        let handler =
                            (tunnel.decapsulating()).then(|| self.handler.for_client(&self.client));
                        let handler = handler.as_deref();
                        run_flow(tunnel, &mut rx, client, handler, &task_drain).await;
                    }
                    Err(refused) => {
                        if let Some(kind) = icmp_for_refusal(&refused, false) {
                            self.to_client.icmp_error(&self.first, kind);
                        }
                        let refused = SessionEvent::UdpRefused(self.key, refused);
                        let _ = self.events.send(refused).await;
                    }
                }
            }
            .in_current_span(),
        );
        tx
    }
}

/// Replies of a UDP flow, as UDP packets from its destination to the client.
struct Reencapsulate {
    key: FlowKey,
    to_client: ToClient,
}

impl DatagramSink for Reencapsulate {
    fn send(&mut self, datagram: &[u8]) -> Result<(), &'static str> {
        let from = self.key.destination_addr();
        let to = self.key.source_addr();
        let packet = crate::tunnel::packet::craft::udp(from, to, datagram).ok_or("too_large")?;
        self.to_client.send(packet.into())
    }

    /// Answers with ICMP port unreachable, quoting the headers of a datagram of the flow
    /// (what the client's stack matches the error to its socket by).
    fn port_unreachable(&mut self) {
        let quoted = crate::tunnel::packet::craft::udp(
            self.key.source_addr(),
            self.key.destination_addr(),
            &[],
        );
        let Some(packet) = quoted else { return };
        if let Ok(facts) = crate::tunnel::packet::inspect::inspect(&packet) {
            let first = FirstPacket {
                packet: packet.into(),
                facts,
            };
            self.to_client.icmp_error(
                &first,
                crate::tunnel::packet::craft::IcmpError::PortUnreachable,
            );
        }
    }
}
