//! Zero-copy forwarding between two plain TCP sockets: `splice(2)` moves bytes from one
//! socket into a pipe and from the pipe into the other socket without copying them
//! through user space. Written on rustix's safe wrappers rather than taken from a splice
//! crate because the pump needs every chunk reported as it passes (byte metrics and the
//! idle timeout), which those crates' whole-connection copies do not offer.

use rustix::param::page_size;
use rustix::pipe::{PipeFlags, SpliceFlags, fcntl_getpipe_size, pipe_with, splice};
use std::io;
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
/// this (a chunk in flight, if any) and not a future per direction. A pipe is held only
/// while a chunk is in it.
#[derive(Default)]
pub(super) struct Forward {
    chunk: Option<Chunk>,
}

/// A chunk read into a pipe and not yet all written.
struct Chunk {
    pipe: Pipe,
    /// Bytes read into the pipe.
    read: usize,
    /// Bytes of it still in the pipe.
    left: usize,
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
                while chunk.left > 0 {
                    ready!(to.poll_write_ready(cx))?;
                    match to.try_io(Interest::WRITABLE, || {
                        Ok(splice(&chunk.pipe.read, None, to, None, chunk.left, FLAGS)?)
                    }) {
                        Ok(written) => chunk.left -= written,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
            }
            if let Some(chunk) = self.chunk.take() {
                chunk.pipe.give_back();
                moved(chunk.read);
            }
            ready!(from.poll_read_ready(cx))?;
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
            match spliced {
                Ok(0) => {
                    pipe.give_back();
                    if last {
                        return Poll::Ready(Ok(()));
                    }
                    return Poll::Ready(socket2::SockRef::from(to).shutdown(Shutdown::Write));
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            if read == 0 {
                pipe.give_back();
            } else {
                self.chunk = Some(Chunk {
                    pipe,
                    read,
                    left: read,
                });
            }
        }
    }
}
