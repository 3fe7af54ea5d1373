//! IP → ICMP echo: echo requests found in IP packets are sent to their destination from
//! an ICMP socket (a ping socket where `net.ipv4.ping_group_range` allows it, else a raw
//! socket, which needs CAP_NET_RAW), and the replies go back to the client with the
//! client's identifier.

use crate::tunnel::packet::craft;
use crate::tunnel::packet::flows::FlowKey;
use crate::tunnel::packet::{FirstPacket, ToClient};
use bytes::Bytes;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// Identifiers for raw-socket echo flows, which share the host's ICMP traffic.
static NEXT_RAW_ID: AtomicU16 = AtomicU16::new(0x4f00);

/// An ICMP socket connected to one destination.
struct EchoSocket {
    socket: UdpSocket,
    /// `Some(id)` for a raw socket: the identifier Oxy chose, which replies must carry.
    /// A ping socket gets only its own replies, with the kernel's identifier.
    raw_id: Option<u16>,
    v6: bool,
}

impl EchoSocket {
    fn open(destination: IpAddr) -> io::Result<Self> {
        let v6 = destination.is_ipv6();
        let (domain, protocol) = if v6 {
            (Domain::IPV6, Protocol::ICMPV6)
        } else {
            (Domain::IPV4, Protocol::ICMPV4)
        };
        let (socket, raw_id) = match Socket::new(domain, Type::DGRAM, Some(protocol)) {
            Ok(socket) => (socket, None),
            Err(e) if matches!(e.kind(), io::ErrorKind::PermissionDenied) => {
                let id = NEXT_RAW_ID.fetch_add(1, Ordering::Relaxed);
                (Socket::new(domain, Type::RAW, Some(protocol))?, Some(id))
            }
            Err(e) => return Err(e),
        };
        socket.set_nonblocking(true)?;
        socket.connect(&SocketAddr::new(destination, 0).into())?;
        let socket = UdpSocket::from_std(std::net::UdpSocket::from(socket))?;
        Ok(Self { socket, raw_id, v6 })
    }

    async fn send(&self, id: u16, seq: u16, data: &[u8]) -> io::Result<()> {
        let id = self.raw_id.unwrap_or(id);
        let message = craft::echo_request_message(self.v6, (id, seq), data);
        self.socket.send(&message).await.map(|_| ())
    }

    /// The next echo reply for this socket: its sequence number and data.
    async fn recv(&self, buf: &mut [u8]) -> io::Result<(u16, Bytes)> {
        loop {
            let n = self.socket.recv(buf).await?;
            let mut message = &buf[..n];
            // A raw IPv4 socket receives the IP header too.
            if self.raw_id.is_some() && !self.v6 {
                let header = usize::from(message.first().map_or(0, |b| b & 0x0f)) * 4;
                message = message.get(header..).unwrap_or_default();
            }
            let reply_type = if self.v6 { 129 } else { 0 };
            let (Some(&kind), Some(id), Some(seq)) =
                (message.first(), message.get(4..6), message.get(6..8))
            else {
                continue;
            };
            let id = u16::from_be_bytes([id[0], id[1]]);
            if kind != reply_type || self.raw_id.is_some_and(|ours| ours != id) {
                continue;
            }
            let data = Bytes::copy_from_slice(message.get(8..).unwrap_or_default());
            return Ok((u16::from_be_bytes([seq[0], seq[1]]), data));
        }
    }
}

/// Starts an echo flow for `key` (the client's identifier in `key.source_port`), whose
/// destination the egress policy allowed: returns where its requests go. A destination
/// without an ICMP socket is answered with host unreachable.
pub fn start(
    key: FlowKey,
    first: FirstPacket,
    to_client: ToClient,
    idle: Duration,
    queue: usize,
    drain: &crate::drain::Drain,
) -> mpsc::Sender<(u16, Bytes)> {
    let (tx, mut rx) = mpsc::channel::<(u16, Bytes)>(queue);
    let stopping = drain.clone();
    drain.spawn_connection(async move {
        let socket = match EchoSocket::open(key.destination) {
            Ok(socket) => socket,
            Err(e) => {
                tracing::info!(error = %e, destination = %key.destination, "no ICMP socket for echo");
                to_client.icmp_error(&first, craft::IcmpError::HostUnreachable);
                return;
            }
        };
        // Replies larger than the client's link could not be sent anyway (a raw IPv4
        // socket also reads the IP header).
        let mut buf = vec![0u8; usize::from(to_client.mtu()) + 60];
        loop {
            tokio::select! {
                _ = stopping.stopping() => return,
                request = tokio::time::timeout(idle, rx.recv()) => match request {
                    Ok(Some((seq, data))) => {
                        if let Err(e) = socket.send(key.source_port, seq, &data).await {
                            tracing::debug!(error = %e, "echo request not sent");
                        }
                    }
                    _ => return,
                },
                reply = socket.recv(&mut buf) => match reply {
                    Ok((seq, data)) => {
                        let reply = craft::echo_reply(
                            key.destination,
                            key.source,
                            (key.source_port, seq),
                            &data,
                        );
                        if let Some(reply) = reply {
                            let _ = to_client.send(reply.into());
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "echo reply not received"),
                },
            }
        }
    });
    tx
}
