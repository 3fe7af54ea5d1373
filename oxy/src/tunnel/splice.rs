//! Zero-copy forwarding between two plain TCP sockets: `splice(2)` moves bytes from one
//! socket into a pipe and from the pipe into the other socket without copying them
//! through user space. Written on rustix's safe wrappers rather than taken from a splice
//! crate because the pump needs every chunk reported as it passes (byte metrics and the
//! idle timeout), which those crates' whole-connection copies do not offer.

use rustix::pipe::{PipeFlags, SpliceFlags, pipe_with, splice};
use std::io;
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::sync::Mutex;
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
}

impl Pipe {
    /// A spare empty pipe, or a new one.
    fn take() -> io::Result<Pipe> {
        if let Some(pipe) = spare_pipes().pop() {
            return Ok(pipe);
        }
        let (read, write) = pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
        Ok(Pipe { read, write })
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

/// Moves bytes from `from` to `to` until `from` ends, then shuts `to`'s sending side down
/// (half-close). `moved` is called after each chunk has been written. A pipe is held
/// only while a chunk is in it.
pub(super) async fn forward(
    from: &TcpStream,
    to: &TcpStream,
    moved: impl Fn(usize),
) -> io::Result<()> {
    loop {
        from.readable().await?;
        let pipe = Pipe::take()?;
        let spliced = from.try_io(Interest::READABLE, || {
            Ok(splice(from, None, &pipe.write, None, CHUNK, FLAGS)?)
        });
        let n = match spliced {
            Ok(0) => {
                pipe.give_back();
                return socket2::SockRef::from(to).shutdown(Shutdown::Write);
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                pipe.give_back();
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut left = n;
        while left > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || {
                Ok(splice(&pipe.read, None, to, None, left, FLAGS)?)
            }) {
                Ok(written) => left -= written,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        pipe.give_back();
        moved(n);
    }
}
