//! The client side of a tunnel: a plain TCP socket (which the pump can `splice(2)`) or
//! any other byte stream (TLS, an HTTP/2 stream, ...).

use bytes::{Buf, Bytes};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Any byte stream a tunnel can carry.
pub trait ByteStream: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> ByteStream for T {}

/// The client side of a tunnel.
pub enum TunnelStream {
    /// A plain TCP socket, with bytes already read from it (after a PROXY header, or
    /// what an HTTP server read past a CONNECT request).
    Plain(PrefixedStream<TcpStream>),
    /// Anything else.
    Boxed(Box<dyn ByteStream>),
}

impl TunnelStream {
    /// This stream with `bytes` to be read again before what follows.
    pub fn unread(self, bytes: Bytes) -> Self {
        if bytes.is_empty() {
            return self;
        }
        match self {
            TunnelStream::Plain(PrefixedStream { prefix, inner }) => {
                let prefix = if prefix.is_empty() {
                    bytes
                } else {
                    [bytes, prefix].concat().into()
                };
                TunnelStream::Plain(PrefixedStream::new(prefix, inner))
            }
            TunnelStream::Boxed(inner) => {
                TunnelStream::Boxed(Box::new(PrefixedStream::new(bytes, inner)))
            }
        }
    }
}

impl From<PrefixedStream<TcpStream>> for TunnelStream {
    fn from(stream: PrefixedStream<TcpStream>) -> Self {
        TunnelStream::Plain(stream)
    }
}

impl From<tokio_boring::SslStream<PrefixedStream<TcpStream>>> for TunnelStream {
    fn from(stream: tokio_boring::SslStream<PrefixedStream<TcpStream>>) -> Self {
        TunnelStream::Boxed(Box::new(stream))
    }
}

impl AsyncRead for TunnelStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TunnelStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            TunnelStream::Boxed(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for TunnelStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            TunnelStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            TunnelStream::Boxed(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TunnelStream::Plain(s) => Pin::new(s).poll_flush(cx),
            TunnelStream::Boxed(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TunnelStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            TunnelStream::Boxed(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// A stream that first yields bytes already read from it.
pub struct PrefixedStream<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> PrefixedStream<S> {
    /// `inner`, with `prefix` read first.
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Self { prefix, inner }
    }

    /// The bytes not yet read, and the stream.
    pub fn into_parts(self) -> (Bytes, S) {
        (self.prefix, self.inner)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PrefixedStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.has_remaining() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            if this.prefix.is_empty() {
                // Release the buffer the prefix was cut from (a long tunnel keeps this).
                this.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PrefixedStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
