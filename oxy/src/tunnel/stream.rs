//! The client side of a tunnel: a plain TCP socket (which the pump can `splice(2)`) or
//! any other byte stream (TLS, an HTTP/2 stream, ...).

use crate::tls::read_ahead::ReadAhead;
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

impl From<tokio_boring::SslStream<ReadAhead<PrefixedStream<TcpStream>>>> for TunnelStream {
    fn from(stream: tokio_boring::SslStream<ReadAhead<PrefixedStream<TcpStream>>>) -> Self {
        TunnelStream::Boxed(Box::new(stream))
    }
}

impl TunnelStream {
    fn io(&self) -> &dyn ByteStream {
        match self {
            TunnelStream::Plain(s) => s,
            TunnelStream::Boxed(s) => s.as_ref(),
        }
    }

    fn io_mut(&mut self) -> &mut dyn ByteStream {
        match self {
            TunnelStream::Plain(s) => s,
            TunnelStream::Boxed(s) => s.as_mut(),
        }
    }
}

delegate_byte_stream!(TunnelStream);

/// Implements `AsyncRead` and `AsyncWrite` (vectored writes included, so hyper can use
/// them) for an enum of streams by forwarding to the `&mut dyn ByteStream` its
/// `io_mut` method returns (and `io` for `is_write_vectored`).
macro_rules! delegate_byte_stream {
    ($type:ty) => {
        impl tokio::io::AsyncRead for $type {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(self.get_mut().io_mut()).poll_read(cx, buf)
            }
        }

        impl tokio::io::AsyncWrite for $type {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(self.get_mut().io_mut()).poll_write(cx, buf)
            }

            fn poll_write_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(self.get_mut().io_mut()).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.io().is_write_vectored()
            }

            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(self.get_mut().io_mut()).poll_flush(cx)
            }

            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(self.get_mut().io_mut()).poll_shutdown(cx)
            }
        }
    };
}
pub(crate) use delegate_byte_stream;

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

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
