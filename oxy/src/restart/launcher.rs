//! The restart launcher: a thread started before the seccomp filter is installed, so
//! the only one allowed to `execve`. It starts a successor (the binary at the path this
//! process was started from, with the same arguments) with the handed-over descriptors
//! kept open across `exec` and named in its environment.

// `pre_exec` needs `unsafe`; the block says why it is sound.
#![allow(unsafe_code)]

use super::inherited::{FDS_VAR, READY_VAR};
use std::ffi::OsString;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::mpsc;

/// A successor to start.
struct Launch {
    /// `(key, descriptor)`: kept open across `exec`; the caller keeps them open until the
    /// reply.
    sockets: Vec<(String, RawFd)>,
    /// Where the successor writes `ready`.
    ready: RawFd,
    reply: tokio::sync::oneshot::Sender<io::Result<Child>>,
}

/// Starts successors on its own thread.
#[derive(Debug)]
pub(crate) struct Launcher {
    launches: mpsc::Sender<Launch>,
}

impl Launcher {
    /// Starts the launcher thread. Call it before the seccomp filter is installed.
    pub(crate) fn start() -> io::Result<Self> {
        // Resolved now: a new binary installed at the same path is what a restart runs.
        let program = std::env::current_exe()?;
        let args: Vec<OsString> = std::env::args_os().skip(1).collect();
        let (launches, requests) = mpsc::channel::<Launch>();
        std::thread::Builder::new()
            .name("oxy-restart".into())
            .spawn(move || {
                for launch in requests {
                    let child = spawn(&program, &args, &launch.sockets, launch.ready);
                    let _ = launch.reply.send(child);
                }
            })?;
        Ok(Self { launches })
    }

    /// Starts a successor with `sockets` and the ready pipe's write end `ready`.
    pub(crate) async fn launch(
        &self,
        sockets: Vec<(String, RawFd)>,
        ready: RawFd,
    ) -> io::Result<Child> {
        let (reply, child) = tokio::sync::oneshot::channel();
        self.launches
            .send(Launch {
                sockets,
                ready,
                reply,
            })
            .map_err(|_| io::Error::other("the restart launcher has stopped"))?;
        child
            .await
            .map_err(|_| io::Error::other("the restart launcher has stopped"))?
    }
}

fn spawn(
    program: &PathBuf,
    args: &[OsString],
    sockets: &[(String, RawFd)],
    ready: RawFd,
) -> io::Result<Child> {
    let list = sockets
        .iter()
        .map(|(key, fd)| format!("{key}={fd}"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut keep: Vec<RawFd> = sockets.iter().map(|(_, fd)| *fd).collect();
    keep.push(ready);
    let mut command = Command::new(program);
    command
        .args(args)
        .env(FDS_VAR, list)
        .env(READY_VAR, ready.to_string());
    // SAFETY: between fork and exec the closure only calls fcntl (async-signal-safe) on
    // descriptors the parent keeps open until the child has been started.
    unsafe {
        command.pre_exec(move || {
            for &fd in &keep {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    command.spawn()
}
