//! IP → TCP: a user-space TCP/IP stack (netstack-smoltcp) that terminates a session's
//! TCP connections into byte streams for the ordinary TCP tunnel path.

use crate::tunnel::packet::ToClient;
use futures_util::{SinkExt, StreamExt};
use netstack_smoltcp::{StackBuilder, TcpListener, TcpStream};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Each connection's receive and send window in the stack (the stack holds four buffers
/// of this size per connection, from its SYN on).
const TCP_BUFFER: u32 = 128 * 1024;

/// The TCP stack of one packet session.
pub struct TcpStack {
    to_stack: mpsc::Sender<Vec<u8>>,
    listener: TcpListener,
    tasks: Vec<JoinHandle<()>>,
    /// Cancelled when the stack goes, which ends its streams.
    ended: CancellationToken,
}

/// A connection of the stack: it reads end of stream, and writes fail, once the stack
/// is gone (its session ended), so the tunnel carrying it closes and is audited.
pub struct StackStream {
    inner: TcpStream,
    ended: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl StackStream {
    fn stack_gone(&mut self, cx: &mut Context<'_>) -> bool {
        self.ended.as_mut().poll(cx).is_ready()
    }
}

impl AsyncRead for StackStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.stack_gone(cx) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for StackStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.stack_gone(cx) {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.stack_gone(cx) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.stack_gone(cx) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl TcpStack {
    /// A stack for links of `mtu` whose outgoing packets go to `to_client`; `queue`
    /// packets wait to enter it.
    pub fn new(mtu: u16, to_client: ToClient, queue: usize) -> io::Result<Self> {
        let (stack, runner, _, listener) = StackBuilder::default()
            .enable_tcp(true)
            .mtu(usize::from(mtu))
            .tcp_recv_buffer_size(TCP_BUFFER)
            .tcp_send_buffer_size(TCP_BUFFER)
            .build()?;
        let (Some(runner), Some(listener)) = (runner, listener) else {
            return Err(io::Error::other("the TCP stack has no TCP listener"));
        };
        let (mut stack_in, mut stack_out) = stack.split();
        let (to_stack, mut from_session) = mpsc::channel::<Vec<u8>>(queue);
        let tasks = vec![
            tokio::spawn(async move {
                if let Err(e) = runner.await {
                    tracing::debug!(error = %e, "user-space TCP stack stopped");
                }
            }),
            tokio::spawn(async move {
                while let Some(packet) = from_session.recv().await {
                    if stack_in.send(packet).await.is_err() {
                        return;
                    }
                }
            }),
            tokio::spawn(async move {
                while let Some(Ok(packet)) = stack_out.next().await {
                    let _ = to_client.send(packet.into());
                }
            }),
        ];
        Ok(Self {
            to_stack,
            listener,
            tasks,
            ended: CancellationToken::new(),
        })
    }

    /// Hands a TCP packet from the client to the stack without waiting; an `Err` names
    /// why it was dropped.
    pub fn input(&self, packet: &[u8]) -> Result<(), &'static str> {
        self.to_stack
            .try_send(packet.to_vec())
            .map_err(|_| "queue_full")
    }

    /// The next connection the stack accepted: the stream, the client's address and
    /// the destination's.
    pub async fn accept(&mut self) -> Option<(StackStream, SocketAddr, SocketAddr)> {
        let (inner, client, destination) = self.listener.next().await?;
        let ended = Box::pin(self.ended.clone().cancelled_owned());
        Some((StackStream { inner, ended }, client, destination))
    }
}

impl Drop for TcpStack {
    fn drop(&mut self) {
        self.ended.cancel();
        for task in &self.tasks {
            task.abort();
        }
    }
}
