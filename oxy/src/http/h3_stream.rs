//! Adapters between h3 request streams and the pipeline's shapes: a request body, a
//! byte stream for CONNECT and CONNECT-UDP, and HTTP Datagrams routed to their flows.

use super::capsule;
use super::open_streams::StreamGuard;
use crate::tunnel::udp::{DatagramSink, oxy_udp};
use bytes::{Buf, Bytes};
use h3::quic::StreamId;
use h3::server::RequestStream;
use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;

/// The sending half of a request stream.
pub type SendHalf = RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;
/// The receiving half of a request stream.
pub type RecvHalf = RequestStream<h3_quinn::RecvStream, Bytes>;

/// A request body read from an h3 stream: DATA frames, then trailers.
pub struct H3Body {
    recv: RecvHalf,
    data_done: bool,
}

impl H3Body {
    /// The body of the request whose stream half this is.
    pub fn new(recv: RecvHalf) -> Self {
        Self {
            recv,
            data_done: false,
        }
    }
}

impl Drop for H3Body {
    /// A body left unread (a local answer, a blocked request) is declined with
    /// H3_NO_ERROR (RFC 9114 §4.1), not quinn's default code 0.
    fn drop(&mut self) {
        if !self.data_done {
            self.recv.stop_sending(h3::error::Code::H3_NO_ERROR);
        }
    }
}

impl http_body::Body for H3Body {
    type Data = Bytes;
    type Error = h3::error::StreamError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if !self.data_done {
            match ready!(self.recv.poll_recv_data(cx)) {
                Ok(Some(mut data)) => {
                    let bytes = data.copy_to_bytes(data.remaining());
                    return Poll::Ready(Some(Ok(http_body::Frame::data(bytes))));
                }
                Ok(None) => self.data_done = true,
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
        }
        match ready!(self.recv.poll_recv_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }
}

/// The DATA frames of a request stream as a byte stream (CONNECT over HTTP/3). A write
/// is accepted once the stream has sent the previous one, and starts out at once; a
/// flush or shutdown completes once it is sent. Polled through h3's send state (patched
/// in, see `vendor/h3/PATCH.md`), with no future per write.
pub struct H3Stream {
    recv: RecvHalf,
    unread: Bytes,
    read_done: bool,
    send: SendHalf,
    /// The sending side was shut down (the stream finished).
    send_done: bool,
    /// Keeps the connection open (after GOAWAY) while the stream is in use.
    _open: StreamGuard,
}

impl H3Stream {
    /// The byte stream of a request whose response headers were sent; `open` is
    /// dropped with it.
    pub fn new(send: SendHalf, recv: RecvHalf, open: StreamGuard) -> Self {
        Self {
            _open: open,
            recv,
            unread: Bytes::new(),
            read_done: false,
            send,
            send_done: false,
        }
    }

    /// Ready once what was written has been handed to QUIC.
    fn poll_sent(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.send_done {
            return Poll::Ready(Ok(()));
        }
        self.send.poll_send_ready(cx).map_err(io::Error::other)
    }
}

impl AsyncRead for H3Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.unread.is_empty() && !self.read_done {
            match ready!(self.recv.poll_recv_data(cx)) {
                Ok(Some(mut data)) => self.unread = data.copy_to_bytes(data.remaining()),
                Ok(None) => self.read_done = true,
                Err(e) if e.is_h3_no_error() => self.read_done = true,
                Err(e) => return Poll::Ready(Err(io::Error::other(e))),
            }
        }
        let n = self.unread.len().min(buf.remaining());
        buf.put_slice(&self.unread.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H3Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.send_done {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        ready!(self.poll_sent(cx))?;
        // Copied into the DATA frame h3 sends (quinn takes it from there).
        let data = Bytes::copy_from_slice(buf);
        self.send.start_send_data(data).map_err(io::Error::other)?;
        // Start sending now: a writer that waits for its peer's answer before writing
        // or flushing again must not leave these bytes parked.
        if let Poll::Ready(Err(e)) = self.poll_sent(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_sent(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_sent(cx))?;
        if !self.send_done {
            ready!(self.send.poll_finish(cx)).map_err(io::Error::other)?;
            self.send_done = true;
        }
        Poll::Ready(Ok(()))
    }
}

/// The flows of one connection that take HTTP Datagrams, by request stream.
pub type DatagramRoutes = Arc<Mutex<HashMap<StreamId, mpsc::Sender<Bytes>>>>;

/// Delivers the connection's HTTP Datagrams to their flows until the connection ends.
/// Datagrams for a stream without a flow, or with a context ID other than 0, are
/// dropped and counted (RFC 9298 §4, RFC 9297 §2.1).
pub async fn route_datagrams<H>(
    mut reader: h3_datagram::datagram_handler::DatagramReader<H>,
    routes: DatagramRoutes,
    endpoint: String,
) where
    H: h3_datagram::quic_traits::RecvDatagram<Buffer = Bytes>,
{
    while let Ok(datagram) = reader.read_datagram().await {
        if let Err(reason) = deliver_datagram(&routes, datagram) {
            oxy_udp::dropped_total(&endpoint, reason).inc();
        }
    }
}

/// Queues one received HTTP/3 Datagram's UDP payload to its flow; why not (the
/// `reason` label of `oxy_udp_dropped_total`) when it cannot be.
pub fn deliver_datagram(
    routes: &DatagramRoutes,
    datagram: h3_datagram::datagram::Datagram<Bytes>,
) -> Result<(), &'static str> {
    let stream = datagram.stream_id();
    match capsule::udp_payload(&datagram.into_payload()) {
        Ok(Some(payload)) => {
            // try_send never waits, so the lock is held only for the lookup and send.
            let sent = routes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&stream)
                .map(|tx| tx.try_send(payload));
            match sent {
                Some(Ok(())) => Ok(()),
                Some(Err(mpsc::error::TrySendError::Full(_))) => Err("queue_full"),
                Some(Err(mpsc::error::TrySendError::Closed(_))) | None => Err("unknown_stream"),
            }
        }
        Ok(None) => Err("unknown_context"),
        Err(e) => Err(e.as_label()),
    }
}

/// A flow's place in [`DatagramRoutes`]; leaving it (on drop) stops the routing.
pub struct DatagramRoute {
    routes: DatagramRoutes,
    stream: StreamId,
}

impl DatagramRoute {
    /// Routes the datagrams of `stream` to `to_flow`.
    pub fn new(routes: &DatagramRoutes, stream: StreamId, to_flow: mpsc::Sender<Bytes>) -> Self {
        routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(stream, to_flow);
        Self {
            routes: routes.clone(),
            stream,
        }
    }
}

impl Drop for DatagramRoute {
    fn drop(&mut self) {
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.stream);
    }
}

/// Sends a flow's datagrams to the client as HTTP Datagrams (RFC 9297 §2.1): the
/// quarter stream ID of the request, context ID 0, the UDP payload, in one QUIC DATAGRAM.
pub struct H3DatagramSink {
    connection: quinn::Connection,
    stream: u64,
}

impl H3DatagramSink {
    /// A sink for the request on `stream`.
    pub fn new(connection: quinn::Connection, stream: StreamId) -> Self {
        Self {
            connection,
            stream: stream.into_inner(),
        }
    }
}

impl DatagramSink for H3DatagramSink {
    fn send(&mut self, datagram: &[u8]) -> Result<(), &'static str> {
        let datagram = capsule::h3_udp_datagram(self.stream, datagram);
        match self.connection.send_datagram(datagram) {
            Ok(()) => Ok(()),
            Err(quinn::SendDatagramError::TooLarge) => Err("too_large"),
            Err(quinn::SendDatagramError::ConnectionLost(_)) => Err("closed"),
            Err(_) => Err("not_available"),
        }
    }
}
