//! Graceful restart with listener hand-over. On SIGHUP or `--restart` the serving
//! process starts its successor (the binary at the same path, same arguments) through
//! the launcher thread, handing it every listening socket by file descriptor; the
//! successor binds nothing it was given, serves, and reports ready through a pipe; the
//! predecessor then stops accepting and drains. QUIC sockets are shared with a forwarding
//! channel: whichever process reads the socket keeps the packets of its own connections
//! (recognised by their connection IDs) and passes the rest on to its successor.

pub(crate) mod control;
pub(crate) mod handover;
pub(crate) mod inherited;
pub(crate) mod launcher;
pub(crate) mod quic_socket;

/// The hand-over key of a listening socket: who owns it, its transport, its place in
/// the owner's list, and the address the settings ask for (port 0 included, so that a
/// successor with the same settings gets the same socket).
pub(crate) fn socket_key(
    owner: &str,
    transport: &str,
    index: usize,
    addr: std::net::SocketAddr,
) -> String {
    format!("{owner}/{transport}/{index}/{addr}")
}
