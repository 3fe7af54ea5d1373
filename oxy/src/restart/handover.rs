//! The predecessor's side of a restart: every listening socket, duplicated when it was
//! bound and kept under its key; starting the successor with them; waiting until it is
//! ready or has failed.

use super::launcher::Launcher;
use super::quic_socket::HandoverUdpSocket;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

/// How long a failed successor gets to exit (and log why) before it is killed.
const FAILING_EXIT_WAIT: Duration = Duration::from_secs(5);

/// The sockets a successor gets.
#[derive(Debug, Default)]
pub(crate) struct HandoverSockets {
    sockets: Vec<(String, OwnedFd)>,
    quic: Vec<(String, Arc<HandoverUdpSocket>)>,
}

impl HandoverSockets {
    /// Keeps a duplicate of `fd` to hand over under `key`.
    pub(crate) fn add(&mut self, key: String, fd: BorrowedFd<'_>) -> std::io::Result<()> {
        self.sockets.push((key, fd.try_clone_to_owned()?));
        Ok(())
    }

    /// Keeps a QUIC socket to hand over under `key`, with a forwarding channel.
    pub(crate) fn add_quic(
        &mut self,
        key: String,
        socket: Arc<HandoverUdpSocket>,
    ) -> std::io::Result<()> {
        self.add(key.clone(), socket.fd())?;
        self.quic.push((key, socket));
        Ok(())
    }
}

/// The key of the forwarding channel that goes with the QUIC socket `key`.
pub(crate) fn forward_key(key: &str) -> String {
    format!("{key}/forward")
}

/// Starts a successor with every socket of `sockets` and waits up to `timeout` for it to
/// report ready; then QUIC packets that are not this process's go to it. Returns its
/// process id, or why it failed (the successor is then stopped and reaped).
pub(crate) async fn restart(
    launcher: &Launcher,
    sockets: &HandoverSockets,
    timeout: Duration,
) -> Result<u32, String> {
    let mut passed: Vec<(String, std::os::fd::RawFd)> = sockets
        .sockets
        .iter()
        .map(|(key, fd)| (key.clone(), fd.as_raw_fd()))
        .collect();
    let mut channels = Vec::new();
    for (key, socket) in &sockets.quic {
        let (ours, theirs) = seqpacket_pair().map_err(|e| format!("forwarding channel: {e}"))?;
        passed.push((forward_key(key), theirs.as_raw_fd()));
        channels.push((socket, ours, theirs));
    }
    let (ready_read, ready_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| format!("pipe: {e}"))?;
    let child = launcher.launch(passed, ready_write.as_raw_fd()).await;
    drop(ready_write);
    let mut child = child.map_err(|e| format!("cannot start the successor: {e}"))?;
    let pid = child.id();
    let mut lines = ready_line(ready_read).map_err(|e| format!("ready pipe: {e}"))?;
    let failure = match tokio::time::timeout(timeout, lines.next_line()).await {
        Ok(Ok(Some(line))) if line == "ready" => None,
        Ok(Ok(Some(line))) => Some(format!("the successor said {line:?} instead of ready")),
        Ok(Ok(None)) => Some("the successor exited before it was ready".to_string()),
        Ok(Err(e)) => Some(format!("cannot read the successor's ready pipe: {e}")),
        Err(_) => Some(format!("the successor was not ready within {timeout:?}")),
    };
    if let Some(failure) = failure {
        // A successor that closed the pipe is exiting: let it say why before it goes.
        let status = tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + FAILING_EXIT_WAIT;
            while std::time::Instant::now() < deadline {
                if let Ok(Some(status)) = child.try_wait() {
                    return Ok(status);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            child.wait()
        })
        .await;
        return Err(match status {
            Ok(Ok(status)) => format!("{failure} ({status}); this process goes on serving"),
            _ => format!("{failure}; this process goes on serving"),
        });
    }
    for (socket, ours, theirs) in channels {
        drop(theirs);
        socket.forward_to(ours);
    }
    Ok(pid)
}

/// A connected pair of `SOCK_SEQPACKET` Unix sockets, close-on-exec and non-blocking.
fn seqpacket_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};
    let (a, b) = socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    Ok((a, b))
}

/// The read end of the ready pipe as async lines.
fn ready_line(
    fd: OwnedFd,
) -> std::io::Result<tokio::io::Lines<tokio::io::BufReader<tokio::net::unix::pipe::Receiver>>> {
    let pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?;
    Ok(tokio::io::BufReader::new(pipe).lines())
}
