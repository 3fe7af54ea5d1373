//! Reads ahead beneath TLS: one `recv(2)` takes whatever the socket holds, and the
//! TLS library's small reads are served from it.
//!
//! BoringSSL reads a record's 5-byte header and then its body, two system calls per
//! record, and its read-ahead switch does nothing. A client that sends several records
//! at once (HTTP/2 requests) costs one `recv` here instead of two per record.

use crate::spare_buffers::RECORD_BUFFERS;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most read at once: a whole TLS record (16 KiB of plaintext, 256 bytes of
/// expansion, the 5-byte header) and some more: a [`RECORD_BUFFERS`] buffer.
const READ_AHEAD: usize = 17 * 1024;

/// A stream whose small reads are served from one larger read. Writes pass through.
pub struct ReadAhead<S> {
    inner: S,
    /// Read; without an allocation when all is taken (the buffer goes back to the
    /// thread's spares), so an idle connection holds nothing here.
    ahead: Vec<u8>,
    /// How much of `ahead` has been taken.
    taken: usize,
}

impl<S> ReadAhead<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            ahead: Vec::new(),
            taken: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(())); // nothing asked, nothing read ahead
        }
        if this.ahead.is_empty() {
            if buf.remaining() >= READ_AHEAD {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut ahead = RECORD_BUFFERS.take();
            ahead.clear();
            let read = tokio_util::io::poll_read_buf(Pin::new(&mut this.inner), cx, &mut ahead);
            if !matches!(read, Poll::Ready(Ok(1..))) {
                // Waiting (an idle connection), failed or ended: hold no buffer.
                RECORD_BUFFERS.give_back(ahead);
                return read.map_ok(|_| ()); // Ok(0): the end of the stream
            }
            this.ahead = ahead;
            this.taken = 0;
        }
        let n = buf.remaining().min(this.ahead.len() - this.taken);
        buf.put_slice(&this.ahead[this.taken..this.taken + n]);
        this.taken += n;
        if this.taken == this.ahead.len() {
            RECORD_BUFFERS.give_back(std::mem::take(&mut this.ahead));
            this.taken = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Counts the reads that reach it.
    struct CountedReads<S> {
        inner: S,
        reads: usize,
    }

    impl<S: AsyncRead + Unpin> AsyncRead for CountedReads<S> {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            this.reads += 1;
            Pin::new(&mut this.inner).poll_read(cx, buf)
        }
    }

    #[tokio::test]
    async fn small_reads_are_served_from_one_read_ahead() -> io::Result<()> {
        let (mut near, far) = tokio::io::duplex(64 * 1024);
        let records: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        near.write_all(&records).await?;
        drop(near);
        let mut stream = ReadAhead::new(CountedReads {
            inner: far,
            reads: 0,
        });
        let mut got = Vec::new();
        // A record header, then its body, as the TLS library asks.
        while got.len() < records.len() {
            let mut header = [0u8; 5];
            stream.read_exact(&mut header).await?;
            got.extend_from_slice(&header);
            let mut body = vec![0u8; 95.min(records.len() - got.len())];
            stream.read_exact(&mut body).await?;
            got.extend_from_slice(&body);
        }
        assert_eq!(got, records, "every byte, in order");
        assert_eq!(stream.inner.reads, 1, "one read beneath for 60 small ones");
        assert_eq!(
            stream.ahead.capacity(),
            0,
            "the buffer is let go once taken"
        );
        assert_eq!(RECORD_BUFFERS.spare(), 1, "and kept for the next read");
        assert_eq!(
            stream.read(&mut [0u8; 8]).await?,
            0,
            "the end of the stream"
        );
        Ok(())
    }

    #[test]
    fn a_waiting_read_holds_no_buffer() {
        let (_near, far) = tokio::io::duplex(64);
        let mut stream = ReadAhead::new(far);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut header = [0u8; 5];
        let mut buf = ReadBuf::new(&mut header);
        assert!(
            Pin::new(&mut stream)
                .poll_read(&mut cx, &mut buf)
                .is_pending()
        );
        assert_eq!(
            stream.ahead.capacity(),
            0,
            "an idle connection holds nothing"
        );
    }

    #[tokio::test]
    async fn large_reads_go_straight_through() -> io::Result<()> {
        let (mut near, far) = tokio::io::duplex(64 * 1024);
        near.write_all(&[9; 100]).await?;
        let mut stream = ReadAhead::new(far);
        let mut big = vec![0u8; READ_AHEAD];
        assert_eq!(stream.read(&mut big).await?, 100);
        assert_eq!(stream.ahead.capacity(), 0);
        Ok(())
    }
}
