//! The predecessor's side of a restart: every listening socket, duplicated when it was
//! bound and kept under its key; starting the successor with them; waiting until it is
//! ready or has failed.

use super::launcher::Launcher;
use super::quic_socket::HandoverUdpSocket;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::Child;
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
    /// Keeps a duplicate of `socket`'s descriptor to hand over under `key`.
    pub(crate) fn add(&mut self, key: String, socket: &impl AsFd) -> std::io::Result<()> {
        self.sockets
            .push((key, socket.as_fd().try_clone_to_owned()?));
        Ok(())
    }

    /// Keeps a QUIC socket to hand over under `key`, with a forwarding channel.
    pub(crate) fn add_quic(
        &mut self,
        key: String,
        socket: Arc<HandoverUdpSocket>,
    ) -> std::io::Result<()> {
        self.add(key.clone(), &socket.fd())?;
        self.quic.push((key, socket));
        Ok(())
    }
}

/// The key of the forwarding channel that goes with the QUIC socket `key`.
pub(crate) fn forward_key(key: &str) -> String {
    format!("{key}/forward")
}

/// The key of the pipe whose end tells a successor that devices shared with its
/// predecessor (TUN) are its own to read.
pub(crate) const HANDED_OVER_KEY: &str = "handed-over";

/// A successor that is ready: its process id, and the pipe end whose closing tells it
/// that this process has stopped reading shared devices (drop it at the hand-over).
pub(crate) struct Successor {
    pub(crate) pid: u32,
    pub(crate) handed_over: OwnedFd,
}

/// Starts a successor with every socket of `sockets` and waits up to `timeout` for it to
/// report ready; then QUIC packets that are not this process's go to it. A restart asked
/// while this process's own predecessor still drains (and still forwards its QUIC
/// packets here) first waits for it to exit, within the same `timeout`. On failure the
/// successor is stopped and reaped, and the error says why; so it is when this future is
/// dropped (the process was told to stop meanwhile).
pub(crate) async fn restart(
    launcher: &Launcher,
    sockets: &HandoverSockets,
    timeout: Duration,
) -> Result<Successor, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    while sockets
        .quic
        .iter()
        .any(|(_, socket)| socket.predecessor_alive())
    {
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "the previous process still drains after {timeout:?}; this process goes on serving"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    let pipe = || rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC);
    let (ready_read, ready_write) = pipe().map_err(|e| format!("pipe: {e}"))?;
    let (their_turn, handed_over) = pipe().map_err(|e| format!("pipe: {e}"))?;
    passed.push((HANDED_OVER_KEY.to_string(), their_turn.as_raw_fd()));
    let child = launcher.launch(passed, ready_write.as_raw_fd()).await;
    drop((ready_write, their_turn));
    let child = child.map_err(|e| format!("cannot start the successor: {e}"))?;
    let pid = child.id();
    let mut child = Launched(Some(child));
    let mut lines = ready_line(ready_read).map_err(|e| format!("ready pipe: {e}"))?;
    let failure = match tokio::time::timeout_at(deadline, lines.next_line()).await {
        Ok(Ok(Some(line))) if line == "ready" => None,
        Ok(Ok(Some(line))) => Some(format!("the successor said {line:?} instead of ready")),
        Ok(Ok(None)) => Some("the successor exited before it was ready".to_string()),
        Ok(Err(e)) => Some(format!("cannot read the successor's ready pipe: {e}")),
        Err(_) => Some(format!("the successor was not ready within {timeout:?}")),
    };
    if let Some(failure) = failure {
        let status = child.stop().await;
        return Err(format!("{failure}{status}; this process goes on serving"));
    }
    for (socket, ours, theirs) in channels {
        drop(theirs);
        socket.forward_to(ours);
    }
    child.watch();
    Ok(Successor { pid, handed_over })
}

/// A started successor: stopped (SIGTERM, then SIGKILL) if dropped before it is ready.
struct Launched(Option<Child>);

impl Launched {
    /// Stops a successor that failed: one that is exiting (it closed the ready pipe) gets
    /// time to say why; one still running is asked to stop (SIGTERM: it may have accepted
    /// connections already), then killed. Returns ` (its exit status)` when known.
    async fn stop(&mut self) -> String {
        let Some(mut child) = self.0.take() else {
            return String::new();
        };
        let status = tokio::task::spawn_blocking(move || {
            let exited = |child: &mut Child| {
                let deadline = std::time::Instant::now() + FAILING_EXIT_WAIT;
                while std::time::Instant::now() < deadline {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Some(status);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                None
            };
            if let Some(status) = exited(&mut child) {
                return Some(status);
            }
            terminate(&child);
            if let Some(status) = exited(&mut child) {
                return Some(status);
            }
            let _ = child.kill();
            child.wait().ok()
        })
        .await;
        match status {
            Ok(Some(status)) => format!(" ({status})"),
            _ => String::new(),
        }
    }

    /// Logs when the (ready) successor exits, whenever that is.
    fn watch(&mut self) {
        if let Some(mut child) = self.0.take() {
            let pid = child.id();
            tokio::task::spawn_blocking(move || match child.wait() {
                Ok(status) if status.success() => {
                    tracing::info!(successor_pid = pid, "the successor exited");
                }
                Ok(status) => tracing::error!(successor_pid = pid, %status, "the successor exited"),
                Err(e) => {
                    tracing::warn!(successor_pid = pid, error = %e, "cannot wait for the successor")
                }
            });
        }
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            terminate(&child);
            tokio::task::spawn_blocking(move || {
                std::thread::sleep(FAILING_EXIT_WAIT);
                if let Ok(None) = child.try_wait() {
                    let _ = child.kill();
                }
                let _ = child.wait();
            });
        }
    }
}

/// Sends SIGTERM to `child`.
fn terminate(child: &Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

/// A connected pair of `SOCK_SEQPACKET` Unix sockets, close-on-exec and non-blocking.
pub(crate) fn seqpacket_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
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
