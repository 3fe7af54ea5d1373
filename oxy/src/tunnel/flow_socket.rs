//! A UDP socket for quinn made of a flow's datagrams: what the client sent comes from a
//! channel, what quinn sends goes to the flow's client side. Oxy's HTTP/3 server runs on
//! it when it intercepts QUIC inside a UDP flow.

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// Where quinn's datagrams towards the client go; it must not wait (a datagram it
/// cannot take now is dropped, which QUIC recovers from as loss).
pub type Outbound = Box<dyn Fn(&[u8]) + Send + Sync>;

/// A flow as a socket: one peer (`client`), datagrams in from `inbound`, out to
/// `outbound`.
pub struct FlowSocket {
    local: SocketAddr,
    client: SocketAddr,
    inbound: Mutex<mpsc::Receiver<bytes::Bytes>>,
    outbound: Outbound,
}

impl FlowSocket {
    /// A socket at `local` whose only peer is `client`.
    pub fn new(
        local: SocketAddr,
        client: SocketAddr,
        inbound: mpsc::Receiver<bytes::Bytes>,
        outbound: Outbound,
    ) -> Arc<Self> {
        Arc::new(Self {
            local,
            client,
            inbound: Mutex::new(inbound),
            outbound,
        })
    }
}

impl std::fmt::Debug for FlowSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowSocket")
            .field("local", &self.local)
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

/// Always writable: `try_send` never waits, it drops.
#[derive(Debug)]
struct AlwaysWritable;

impl UdpPoller for AlwaysWritable {
    fn poll_writable(self: Pin<&mut Self>, _cx: &mut Context) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncUdpSocket for FlowSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(AlwaysWritable)
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        match transmit.segment_size {
            Some(size) if size > 0 => transmit
                .contents
                .chunks(size)
                .for_each(|datagram| (self.outbound)(datagram)),
            _ => (self.outbound)(transmit.contents),
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let (Some(buf), Some(meta)) = (bufs.first_mut(), meta.first_mut()) else {
            return Poll::Ready(Ok(0));
        };
        let mut inbound = self.inbound.lock().unwrap_or_else(PoisonError::into_inner);
        match inbound.poll_recv(cx) {
            Poll::Ready(Some(datagram)) => {
                let len = datagram.len().min(buf.len());
                buf[..len].copy_from_slice(&datagram[..len]);
                *meta = RecvMeta {
                    addr: self.client,
                    len,
                    stride: len,
                    ecn: None,
                    dst_ip: None,
                };
                Poll::Ready(Ok(1))
            }
            // The client side is gone: nothing more comes (an error would stop quinn's
            // endpoint driver while the connection still closes).
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    /// Datagrams cross a tunnel whose path MTU quinn cannot probe: stay at QUIC's
    /// minimum of 1200 bytes.
    fn may_fragment(&self) -> bool {
        true
    }
}
