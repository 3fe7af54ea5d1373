//! A successor's side of a restart: the sockets its predecessor handed over (by key, in
//! `OXY_INHERITED_FDS`) and the pipe it reports readiness on (`OXY_RESTART_READY_FD`).

// Adopting descriptors by number needs `unsafe`; each block says why it is sound.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `key=fd` lines: the handed-over descriptors (keys hold paths and endpoint names, which
/// may contain commas; the descriptor is after the last `=`).
pub(crate) const FDS_VAR: &str = "OXY_INHERITED_FDS";
/// The descriptor to write `ready` to once serving.
pub(crate) const READY_VAR: &str = "OXY_RESTART_READY_FD";

/// What a predecessor handed over; empty for a process started by hand.
#[derive(Debug, Default)]
pub(crate) struct Inherited {
    sockets: HashMap<String, OwnedFd>,
    ready: Option<OwnedFd>,
}

impl Inherited {
    /// Takes ownership of the descriptors the environment names. Entries that are
    /// malformed or name a descriptor that is not open are skipped with a warning (the
    /// successor then binds that socket itself). Each is made close-on-exec again.
    pub(crate) fn from_env() -> Self {
        let mut inherited = Self::default();
        if let Ok(list) = std::env::var(FDS_VAR) {
            for entry in list.lines().filter(|e| !e.is_empty()) {
                let fd = entry
                    .rsplit_once('=')
                    .and_then(|(key, fd)| Some((key, fd.parse::<RawFd>().ok()?)))
                    .and_then(|(key, fd)| Some((key.to_string(), adopt(fd)?)));
                match fd {
                    Some((key, fd)) => {
                        inherited.sockets.insert(key, fd);
                    }
                    None => eprintln!("warning: {FDS_VAR}: ignored {entry:?}"),
                }
            }
        }
        if let Ok(fd) = std::env::var(READY_VAR) {
            inherited.ready = fd.parse().ok().and_then(adopt);
        }
        inherited
    }

    /// The handed-over socket under `key`, once.
    pub(crate) fn take(&mut self, key: &str) -> Option<OwnedFd> {
        self.sockets.remove(key)
    }

    /// The socket handed over under `key`, else a new one from `bind`.
    pub(crate) fn take_or<T: From<OwnedFd>>(
        &mut self,
        key: &str,
        bind: impl FnOnce() -> std::io::Result<T>,
    ) -> std::io::Result<T> {
        match self.take(key) {
            Some(fd) => Ok(T::from(fd)),
            None => bind(),
        }
    }

    /// Tells the predecessor this process serves; it then stops accepting and drains.
    pub(crate) fn report_ready(&mut self) {
        if let Some(fd) = self.ready.take() {
            let mut pipe = std::fs::File::from(fd);
            if let Err(e) = writeln!(pipe, "ready") {
                tracing::error!(error = %e, "cannot tell the predecessor this process is ready");
            }
        }
    }

    /// Closes what the settings no longer ask for (a listener removed from the settings,
    /// whose port the predecessor frees when it exits).
    pub(crate) fn close_unused(&mut self) {
        for key in self.sockets.keys() {
            tracing::info!(socket = %key, "a handed-over socket the settings no longer name is closed");
        }
        self.sockets.clear();
    }
}

/// `fd` as an owned descriptor when it is open (and not a standard stream), with
/// close-on-exec set.
fn adopt(fd: RawFd) -> Option<OwnedFd> {
    if fd <= 2 {
        return None;
    }
    // SAFETY: F_GETFD only reads the flags of `fd`; an error means it is not open.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return None;
    }
    // SAFETY: the predecessor passed this open descriptor for this process to own, and
    // nothing else in this process refers to it (the environment is read once, here).
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sets a flag on a descriptor this process owns.
    unsafe { libc::fcntl(owned.as_raw_fd(), libc::F_SETFD, flags | libc::FD_CLOEXEC) };
    Some(owned)
}

/// Completes when every write end of the pipe `fd` reads from is closed (or it fails).
pub(crate) async fn wait_closed(fd: OwnedFd) {
    let Ok(mut pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
        return;
    };
    let mut buf = [0u8; 64];
    while let Ok(n) = tokio::io::AsyncReadExt::read(&mut pipe, &mut buf).await {
        if n == 0 {
            return;
        }
    }
}
