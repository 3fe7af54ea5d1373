//! Zero-copy forwarding between two plain TCP sockets: `splice(2)` moves bytes from one
//! socket into a pipe and from the pipe into the other socket without copying them
//! through user space. Written on rustix's safe wrappers rather than taken from a splice
//! crate because the pump needs every chunk reported as it passes (byte metrics and the
//! idle timeout), which those crates' whole-connection copies do not offer.

use rustix::pipe::{PipeFlags, SpliceFlags, pipe_with, splice};
use std::io;
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Bytes moved per `splice(2)`: the default pipe capacity (16 pages).
const CHUNK: usize = 64 * 1024;

const FLAGS: SpliceFlags = SpliceFlags::MOVE.union(SpliceFlags::NONBLOCK);

/// Moves bytes from `from` to `to` until `from` ends, then shuts `to`'s sending side down
/// (half-close). `moved` is called after each chunk has been written. The pipe is made
/// when the first byte arrives, so an idle tunnel holds no pipe.
pub(super) async fn forward(
    from: &TcpStream,
    to: &TcpStream,
    moved: impl Fn(usize),
) -> io::Result<()> {
    let mut pipe: Option<(OwnedFd, OwnedFd)> = None;
    loop {
        from.readable().await?;
        let (pipe_read, pipe_write) = match &mut pipe {
            Some(pipe) => &*pipe,
            empty => &*empty.insert(pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?),
        };
        let spliced = from.try_io(Interest::READABLE, || {
            Ok(splice(from, None, pipe_write, None, CHUNK, FLAGS)?)
        });
        let n = match spliced {
            Ok(0) => return socket2::SockRef::from(to).shutdown(Shutdown::Write),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        let mut left = n;
        while left > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || {
                Ok(splice(pipe_read, None, to, None, left, FLAGS)?)
            }) {
                Ok(written) => left -= written,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        moved(n);
    }
}
