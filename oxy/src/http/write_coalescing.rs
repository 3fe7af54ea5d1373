//! Gathers the writes an HTTP/2 connection makes between two flushes into one write
//! of the stream beneath (one TLS record, one system call).
//!
//! The h2 crate writes a frame's payload apart from the frames buffered before it (a
//! 1 KiB response is its HEADERS frame and DATA frame head, then its payload), and over
//! TLS every write is a record of its own and a `send(2)`. Buffered here up to one
//! record's worth, the frames of one flush leave together: one `send` per response
//! instead of two.
//!
//! A flush is also put off once, behind the tasks ready to run: h2 flushes after every
//! response it is handed, and the responses of the other streams, whose upstream
//! answers arrived in the same instant, then join the same write. Under load that is
//! several responses per `send`; idle, it costs one more poll and no wait.

use crate::spare_buffers::RECORD_BUFFERS;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes gathered before they are written on: a TLS record's largest plaintext.
const GATHER_LIMIT: usize = 16 * 1024;

/// A stream whose writes are gathered until the next flush (or `GATHER_LIMIT` bytes).
/// Reads pass straight through.
pub struct WriteCoalescing<S> {
    inner: S,
    /// Bytes accepted but not yet written on; empty (without an allocation: the
    /// buffer goes back to the thread's spares) once written, so an idle connection
    /// holds nothing here.
    gathered: Vec<u8>,
    /// How much of `gathered` has been written on.
    written: usize,
    /// Whether the pending flush has already been put off once.
    deferred: bool,
}

impl<S> WriteCoalescing<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            gathered: Vec::new(),
            written: 0,
            deferred: false,
        }
    }
}

impl<S: AsyncWrite + Unpin> WriteCoalescing<S> {
    /// Writes what is gathered on to the inner stream.
    fn poll_write_gathered(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.gathered.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.gathered[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        RECORD_BUFFERS.give_back(std::mem::take(&mut self.gathered));
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteCoalescing<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteCoalescing<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.gathered.len() >= GATHER_LIMIT {
            ready!(this.poll_write_gathered(cx))?;
        }
        if this.gathered.is_empty() && buf.len() >= GATHER_LIMIT {
            // A whole record's worth: no gain in copying it.
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        if this.gathered.capacity() == 0 {
            // At least `GATHER_LIMIT`.
            this.gathered = RECORD_BUFFERS.take();
            this.gathered.clear();
        }
        let n = buf.len().min(GATHER_LIMIT - this.gathered.len());
        this.gathered.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Half a record gathered is enough to send without waiting for more.
        if !this.deferred
            && this.written == 0
            && (1..GATHER_LIMIT / 2).contains(&this.gathered.len())
        {
            // Woken from within its own poll, the task goes behind the others ready to
            // run (tokio's yield), whose responses may add to this write.
            this.deferred = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        ready!(this.poll_write_gathered(cx))?;
        this.deferred = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_gathered(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Records the size of every write it takes.
    #[derive(Default)]
    struct Writes(Vec<usize>, Vec<u8>);

    impl AsyncWrite for Writes {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            this.0.push(buf.len());
            this.1.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn writes_between_flushes_leave_as_one() -> io::Result<()> {
        let mut stream = WriteCoalescing::new(Writes::default());
        stream.write_all(b"headers").await?;
        stream.write_all(&[7; 1024]).await?;
        stream.write_all(b"more").await?;
        assert!(stream.inner.0.is_empty(), "nothing leaves before the flush");
        stream.flush().await?;
        assert_eq!(stream.inner.0, [7 + 1024 + 4]);
        assert_eq!(
            stream.gathered.capacity(),
            0,
            "the buffer is let go once written"
        );
        assert_eq!(RECORD_BUFFERS.spare(), 1, "and kept for the next writes");
        // Past the limit, what is gathered leaves first; a record's worth goes straight on.
        stream.write_all(&[1; GATHER_LIMIT - 10]).await?;
        stream.write_all(&[2; 20]).await?;
        stream.flush().await?;
        stream.write_all(&[3; GATHER_LIMIT]).await?;
        stream.shutdown().await?;
        assert_eq!(
            stream.inner.0,
            [1035, GATHER_LIMIT, 10, GATHER_LIMIT],
            "writes in order, none lost"
        );
        let bytes = &stream.inner.1;
        assert_eq!(bytes.len(), 1035 + 2 * GATHER_LIMIT + 10);
        assert!(
            bytes[1035..1035 + GATHER_LIMIT - 10]
                .iter()
                .all(|b| *b == 1)
        );
        assert!(
            bytes[1035 + GATHER_LIMIT - 10..1035 + GATHER_LIMIT + 10]
                .iter()
                .all(|b| *b == 2)
        );
        Ok(())
    }

    /// Counts its wakes.
    #[derive(Default)]
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn a_flush_is_put_off_once_behind_the_ready_tasks() {
        let wakes = std::sync::Arc::new(Wakes::default());
        let waker = std::task::Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut stream = WriteCoalescing::new(Writes::default());
        let mut stream = Pin::new(&mut stream);
        assert!(
            matches!(stream.as_mut().poll_flush(&mut cx), Poll::Ready(Ok(()))),
            "nothing to put off"
        );
        assert!(matches!(
            stream.as_mut().poll_write(&mut cx, b"one"),
            Poll::Ready(Ok(3))
        ));
        assert!(stream.as_mut().poll_flush(&mut cx).is_pending());
        assert_eq!(
            wakes.0.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "woken to come back"
        );
        assert!(matches!(
            stream.as_mut().poll_write(&mut cx, b"two"),
            Poll::Ready(Ok(3))
        ));
        assert!(matches!(
            stream.as_mut().poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(stream.inner.0, [6], "both in one write");
        assert!(matches!(
            stream.as_mut().poll_write(&mut cx, b"three"),
            Poll::Ready(Ok(5))
        ));
        assert!(
            stream.as_mut().poll_flush(&mut cx).is_pending(),
            "each flush is put off once"
        );
    }

    #[tokio::test]
    async fn reads_pass_through() -> io::Result<()> {
        let (mut near, far) = tokio::io::duplex(64);
        let mut stream = WriteCoalescing::new(far);
        near.write_all(b"ping").await?;
        let mut got = [0; 4];
        stream.read_exact(&mut got).await?;
        assert_eq!(&got, b"ping");
        Ok(())
    }
}
