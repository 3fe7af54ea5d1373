//! Zero-copy forwarding between two plain TCP sockets: `splice(2)` moves bytes from one
//! socket into a pipe and from the pipe into the other socket without copying them
//! through user space. Written on rustix's safe wrappers rather than taken from a splice
//! crate because the pump needs every chunk reported as it passes (byte metrics and the
//! idle timeout), which those crates' whole-connection copies do not offer.

use rustix::net::{RecvFlags, recv};
use rustix::param::page_size;
use rustix::pipe::{PipeFlags, SpliceFlags, fcntl_getpipe_size, pipe_with, splice};
use std::io;
use std::mem::MaybeUninit;
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::task::{Context, Poll, ready};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Bytes moved per `splice(2)`: the default pipe capacity (16 pages).
const CHUNK: usize = 64 * 1024;

const FLAGS: SpliceFlags = SpliceFlags::MOVE.union(SpliceFlags::NONBLOCK);

/// Empty pipes kept for the next chunk of any tunnel: a busy tunnel does not make a pipe
/// per chunk, and an idle one holds none (no file descriptors, no kernel buffers).
static SPARE_PIPES: Mutex<Vec<Pipe>> = Mutex::new(Vec::new());

/// Spare pipes kept at most; more are closed.
const MAX_SPARE_PIPES: usize = 256;

/// A kernel pipe, the buffer `splice(2)` moves pages through.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Buffers (slots) the pipe has: 16 by default, fewer when the user is over the
    /// kernel's soft limit on pipe memory. Each holds at least one byte, so a splice into
    /// this pipe, empty, that moves fewer bytes than this did not fill it (0 if unknown).
    slots: usize,
}

impl Pipe {
    /// A spare empty pipe, or a new one.
    fn take() -> io::Result<Pipe> {
        if let Some(pipe) = spare_pipes().pop() {
            return Ok(pipe);
        }
        let (read, write) = pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
        let slots = fcntl_getpipe_size(&write).map_or(0, |bytes| bytes / page_size());
        Ok(Pipe { read, write, slots })
    }

    /// Keeps this pipe, which must be empty, for reuse.
    fn give_back(self) {
        let mut spare = spare_pipes();
        if spare.len() < MAX_SPARE_PIPES {
            spare.push(self);
        }
    }
}

fn spare_pipes() -> std::sync::MutexGuard<'static, Vec<Pipe>> {
    SPARE_PIPES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One direction of a spliced tunnel: moves bytes from one socket to the other until the
/// first ends, then shuts the other's sending side down (half-close). A state polled by
/// the tunnel's own future rather than an `async fn`, so that an idle tunnel holds only
/// this (a chunk in flight, if any) and not a future per direction.
///
/// Small reads are copied (`recv` into the stack, `send` from there) and splicing starts
/// with the first read that fills [`COPY_LIMIT`], as HAProxy's `splice-auto` does: a
/// pipe costs the kernel more than a copy of a few bytes, and most tunnels' first
/// messages (a TLS handshake, a request) are small. A pipe is held only while a chunk
/// is in it, and a copied chunk only while the other socket cannot take it.
#[derive(Default)]
pub(super) struct Forward {
    chunk: Option<Chunk>,
    /// A read filled [`COPY_LIMIT`]: bulk data, spliced from then on.
    bulk: bool,
}

/// Bytes a read copies at most; a read that fills it starts splicing. HAProxy's default
/// buffer size.
const COPY_LIMIT: usize = 16 * 1024;

/// A chunk read and not yet all written.
enum Chunk {
    /// In a pipe.
    Piped {
        pipe: Pipe,
        /// Bytes read into the pipe.
        read: usize,
        /// Bytes of it still in the pipe.
        left: usize,
    },
    /// Copied: the bytes the other socket did not take yet, of `read`.
    Copied { left: Box<[u8]>, read: usize },
}

impl Forward {
    /// Moves bytes from `from` to `to`; ready once `from` has ended and `to` is shut
    /// down for sending, or with the first error. `moved` is called after each chunk
    /// has been written. Registers for `from`'s read and `to`'s write readiness, so a
    /// socket may be read by one `Forward` and written by another in the same task.
    /// `last`: the other way is done, and both sockets close as soon as this one is:
    /// `to` is then not shut down, as closing it sends the same end of stream.
    pub(super) fn poll_forward(
        &mut self,
        cx: &mut Context<'_>,
        from: &TcpStream,
        to: &TcpStream,
        last: bool,
        mut moved: impl FnMut(usize),
    ) -> Poll<io::Result<()>> {
        loop {
            if let Some(chunk) = &mut self.chunk {
                ready!(chunk.poll_write(cx, to))?;
            }
            match self.chunk.take() {
                Some(Chunk::Piped { pipe, read, .. }) => {
                    pipe.give_back();
                    moved(read);
                }
                Some(Chunk::Copied { read, .. }) => moved(read),
                None => {}
            }
            ready!(from.poll_read_ready(cx))?;
            let read = if self.bulk {
                self.splice_in(from)?
            } else {
                self.copy(from, to, &mut moved)?
            };
            match read {
                Some(0) if last => return Poll::Ready(Ok(())),
                Some(0) => {
                    return Poll::Ready(socket2::SockRef::from(to).shutdown(Shutdown::Write));
                }
                Some(_) | None => {}
            }
        }
    }

    /// Reads what `from` has into a pipe, kept as this direction's chunk: `Some(0)` at
    /// its end, `None` if it had nothing after all.
    fn splice_in(&mut self, from: &TcpStream) -> io::Result<Option<usize>> {
        let pipe = Pipe::take()?;
        let mut read = 0;
        let spliced = from.try_io(Interest::READABLE, || {
            read = splice(from, None, &pipe.write, None, CHUNK, FLAGS)?;
            if 0 < read && read < pipe.slots {
                // The pipe is not full, so the socket is drained: `WouldBlock` makes
                // tokio clear its read readiness (as its own short reads do), and
                // the next splice waits for more bytes or the end instead of
                // failing with EAGAIN first. An end already seen stays ready.
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(read)
        });
        // `Some(0)` at the end; `None` when there was nothing, or drained.
        let spliced = match spliced {
            Ok(n) => Some(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) => return Err(e),
        };
        if read == 0 {
            pipe.give_back();
            return Ok(spliced);
        }
        self.chunk = Some(Chunk::Piped {
            pipe,
            read,
            left: read,
        });
        Ok(Some(read))
    }

    /// Reads what `from` has (up to [`COPY_LIMIT`]) and sends it to `to` at once; what
    /// `to` does not take is kept as this direction's chunk. `Some(0)` at `from`'s end,
    /// `None` if it had nothing after all.
    fn copy(
        &mut self,
        from: &TcpStream,
        to: &TcpStream,
        moved: &mut impl FnMut(usize),
    ) -> io::Result<Option<usize>> {
        // Not zeroed first: `recv` fills what it reports, and only that is sent.
        let mut buffer = [MaybeUninit::<u8>::uninit(); COPY_LIMIT];
        let mut read = 0;
        let mut sent = Ok(());
        let received = from.try_io(Interest::READABLE, || {
            let ((bytes, _), _) = recv(from, &mut buffer[..], RecvFlags::empty())?;
            read = bytes.len();
            if read > 0 {
                sent = self.send(bytes, to, moved);
            }
            if 0 < read && read < COPY_LIMIT {
                // Drained, as in `splice_in`.
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(read)
        });
        sent?;
        // `Some(0)` at the end; `None` when there was nothing, or drained.
        let received = match received {
            Ok(n) => Some(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) => return Err(e),
        };
        if read == 0 {
            return Ok(received);
        }
        self.bulk = read == COPY_LIMIT;
        Ok(Some(read))
    }

    /// Sends `bytes`, just read, to `to` at once; what `to` does not take is kept as this
    /// direction's chunk.
    fn send(
        &mut self,
        bytes: &[u8],
        to: &TcpStream,
        moved: &mut impl FnMut(usize),
    ) -> io::Result<()> {
        let sent = match to.try_write(bytes) {
            Ok(sent) => sent,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        if sent == bytes.len() {
            moved(sent);
        } else {
            self.chunk = Some(Chunk::Copied {
                left: bytes[sent..].into(),
                read: bytes.len(),
            });
        }
        Ok(())
    }
}

impl Chunk {
    /// Writes what is left of the chunk to `to`.
    fn poll_write(&mut self, cx: &mut Context<'_>, to: &TcpStream) -> Poll<io::Result<()>> {
        loop {
            let written = match self {
                Chunk::Piped { left: 0, .. } => return Poll::Ready(Ok(())),
                Chunk::Copied { left, .. } if left.is_empty() => return Poll::Ready(Ok(())),
                Chunk::Piped { pipe, left, .. } => {
                    ready!(to.poll_write_ready(cx))?;
                    to.try_io(Interest::WRITABLE, || {
                        Ok(splice(&pipe.read, None, to, None, *left, FLAGS)?)
                    })
                }
                Chunk::Copied { left, .. } => {
                    ready!(to.poll_write_ready(cx))?;
                    to.try_write(left)
                }
            };
            match written {
                Ok(n) => match self {
                    Chunk::Piped { left, .. } => *left -= n,
                    Chunk::Copied { left, .. } => *left = left[n..].into(),
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Two connected loopback sockets: (ours, the peer's).
    async fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (connected, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (accepted.unwrap().0, connected.unwrap())
    }

    /// Polls `forward` from `from` to `to` until it has moved `bytes` more.
    async fn forward_bytes(forward: &mut Forward, from: &TcpStream, to: &TcpStream, bytes: usize) {
        let mut moved = 0;
        std::future::poll_fn(|cx| {
            let polled = forward.poll_forward(cx, from, to, false, |n| moved += n);
            assert!(polled.is_pending(), "the way ended early: {polled:?}");
            if moved >= bytes {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        assert_eq!(moved, bytes);
    }

    #[tokio::test]
    async fn small_reads_are_copied_and_one_that_fills_the_copy_starts_splicing() {
        let (from, mut from_peer) = socket_pair().await;
        let (to, mut to_peer) = socket_pair().await;
        let mut forward = Forward::default();

        from_peer.write_all(b"hello").await.unwrap();
        forward_bytes(&mut forward, &from, &to, 5).await;
        assert!(!forward.bulk && forward.chunk.is_none());
        let mut got = [0u8; 5];
        to_peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");

        // More than a copy takes, sent while the way forwards.
        let bulk: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let sent = bulk.clone();
        let writing = tokio::spawn(async move {
            from_peer.write_all(&sent).await.unwrap();
            from_peer
        });
        let reading = tokio::spawn(async move {
            let mut got = vec![0u8; bulk.len() + 3];
            to_peer.read_exact(&mut got).await.unwrap();
            assert!(got[..bulk.len()] == bulk[..], "bulk bytes corrupted");
            assert_eq!(&got[bulk.len()..], b"end");
            to_peer
        });
        forward_bytes(&mut forward, &from, &to, 100_000).await;
        let mut from_peer = writing.await.unwrap();
        assert!(
            forward.bulk,
            "a read that filled the copy did not start splicing"
        );
        // Spliced from now on.
        from_peer.write_all(b"end").await.unwrap();
        forward_bytes(&mut forward, &from, &to, 3).await;
        let mut to_peer = reading.await.unwrap();

        from_peer.shutdown().await.unwrap();
        std::future::poll_fn(|cx| forward.poll_forward(cx, &from, &to, false, |_| {}))
            .await
            .unwrap();
        assert_eq!(to_peer.read(&mut [0u8; 1]).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_copied_read_the_other_side_cannot_take_is_kept_and_sent_in_order() {
        let (from, mut from_peer) = socket_pair().await;
        let (to, mut to_peer) = socket_pair().await;
        let mut forward = Forward::default();

        // `to`'s peer reads nothing yet: fill `to` until it takes no more.
        let mut filler = 0;
        loop {
            match to.try_write(&[7u8; 64 * 1024]) {
                Ok(n) => filler += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        from_peer.write_all(b"tail").await.unwrap();
        let kept = std::future::poll_fn(|cx| {
            let polled = forward.poll_forward(cx, &from, &to, false, |_| {});
            assert!(polled.is_pending(), "the way ended early: {polled:?}");
            // Read but not yet taken by `to`: kept as the direction's chunk.
            if forward.chunk.is_some() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        });
        tokio::time::timeout(std::time::Duration::from_secs(10), kept)
            .await
            .expect("the bytes `to` could not take were not kept");
        assert!(matches!(
            &forward.chunk,
            Some(Chunk::Copied { read: 4, .. })
        ));

        let reading = tokio::spawn(async move {
            let mut got = vec![0u8; filler + 4];
            to_peer.read_exact(&mut got).await.unwrap();
            assert!(got[..filler].iter().all(|&b| b == 7));
            assert_eq!(&got[filler..], b"tail");
        });
        forward_bytes(&mut forward, &from, &to, 4).await;
        assert!(forward.chunk.is_none() && !forward.bulk);
        reading.await.unwrap();
    }
}
