//! Binding an endpoint's sockets, port 0 included: TCP or UDP for each `listen` address,
//! and UDP for HTTP/3, on the TCP listener's port number when HTTP/3 shares `listen`.

use crate::restart::inherited::Inherited;
use crate::restart::socket_key;
use crate::settings::EndpointSettings;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};

/// How many times a port-0 TCP listener is rebound when the UDP port of the same number
/// (for HTTP/3) is taken by another process.
const SHARED_PORT_ATTEMPTS: usize = 16;

/// The pending connections a TCP listener queues before `accept` (tokio's default too).
const LISTEN_BACKLOG: i32 = 1024;

/// One bound `listen` address of an endpoint.
#[derive(Debug)]
pub enum BoundSocket {
    /// A listening TCP socket (`protocol: http` or `tcp`).
    Tcp(TcpListener),
    /// A UDP socket (`protocol: udp`).
    Udp(UdpSocket),
}

/// Every socket of one endpoint, bound and non-blocking, each with its hand-over key.
#[derive(Debug, Default)]
pub struct EndpointSockets {
    /// One per `listen` address, in order.
    pub listen: Vec<(String, BoundSocket)>,
    /// One per HTTP/3 address (empty unless the endpoint serves HTTP/3), in order.
    pub quic: Vec<(String, UdpSocket)>,
}

/// A socket that could not be bound: the address asked for and why.
#[derive(Debug)]
pub struct BindError {
    /// The configured address.
    pub addr: SocketAddr,
    /// The operating system's error.
    pub source: io::Error,
}

/// Binds every socket of `settings`, the HTTP/3 ones too when it serves HTTP/3. When
/// HTTP/3 uses the endpoint's own `listen` addresses, a TCP listener asked for on port 0
/// and its QUIC socket get the same port number, so one `Alt-Svc` port and one number in
/// a client's configuration cover both. Sockets a predecessor handed over (`inherited`,
/// by key) are taken instead of bound.
pub(crate) fn bind_endpoint<S>(
    settings: &EndpointSettings<S>,
    inherited: &mut Inherited,
) -> Result<EndpointSockets, BindError> {
    let quic = settings.serves_h3();
    let mut sockets = EndpointSockets::default();
    let h3_shares_listen = quic && settings.http.h3.listen.is_empty();
    // A TUN endpoint has a device instead of sockets.
    let listen = if settings.protocol.is_tun() {
        &[][..]
    } else {
        &settings.listen[..]
    };
    let name = &settings.name;
    for (index, &addr) in listen.iter().enumerate() {
        let at = |source| BindError { addr, source };
        let tcp_key = socket_key(name, "tcp", index, addr);
        if settings.protocol.is_udp() {
            let key = socket_key(name, "udp", index, addr);
            let udp = inherited.take_or(&key, || bind_udp(addr)).map_err(at)?;
            sockets.listen.push((key, BoundSocket::Udp(udp)));
        } else if h3_shares_listen {
            let quic_key = socket_key(name, "quic", index, addr);
            let tcp = inherited.take(&tcp_key).map(TcpListener::from);
            let udp = inherited.take(&quic_key).map(UdpSocket::from);
            // One of the two handed over (HTTP/3 turned on or off since): the other gets
            // its port, which the predecessor may still hold for the one it has.
            let same_port = |port: io::Result<SocketAddr>| -> io::Result<SocketAddr> {
                Ok(SocketAddr::new(addr.ip(), port?.port()))
            };
            let (tcp, udp) = match (tcp, udp) {
                (Some(tcp), Some(udp)) => (tcp, udp),
                (Some(tcp), None) => {
                    let udp = same_port(tcp.local_addr()).and_then(bind_udp).map_err(at)?;
                    (tcp, udp)
                }
                (None, Some(udp)) => {
                    let tcp = same_port(udp.local_addr()).and_then(bind_tcp).map_err(at)?;
                    (tcp, udp)
                }
                (None, None) => bind_tcp_and_udp(addr).map_err(at)?,
            };
            sockets.listen.push((tcp_key, BoundSocket::Tcp(tcp)));
            sockets.quic.push((quic_key, udp));
        } else {
            let tcp = inherited.take_or(&tcp_key, || bind_tcp(addr)).map_err(at)?;
            sockets.listen.push((tcp_key, BoundSocket::Tcp(tcp)));
        }
    }
    if quic && !h3_shares_listen {
        for (index, &addr) in settings.http.h3.listen.iter().enumerate() {
            let key = socket_key(name, "quic", index, addr);
            let udp = (inherited.take_or(&key, || bind_udp(addr)))
                .map_err(|source| BindError { addr, source })?;
            sockets.quic.push((key, udp));
        }
    }
    Ok(sockets)
}

/// A TCP listener and a UDP socket on the same port number: the one asked for, or (for
/// port 0) one the system picks for TCP and that UDP can have too.
fn bind_tcp_and_udp(addr: SocketAddr) -> io::Result<(TcpListener, UdpSocket)> {
    if addr.port() != 0 {
        return Ok((bind_tcp(addr)?, bind_udp(addr)?));
    }
    // Listeners whose UDP twin was taken stay bound until the end, so that the system
    // offers a new port each time.
    let mut passed_over = Vec::new();
    for _ in 0..SHARED_PORT_ATTEMPTS {
        let tcp = bind_tcp(addr)?;
        let same_port = SocketAddr::new(addr.ip(), tcp.local_addr()?.port());
        match bind_udp(same_port) {
            Ok(udp) => return Ok((tcp, udp)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => passed_over.push(tcp),
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("no port of {SHARED_PORT_ATTEMPTS} tried was free for both TCP and UDP"),
    ))
}

/// A non-blocking listening TCP socket with `SO_REUSEADDR` (a restart can rebind while
/// old connections linger in TIME_WAIT).
pub fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// A non-blocking UDP socket.
fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_gives_tcp_and_udp_one_port() {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (tcp, udp) = bind_tcp_and_udp(addr).unwrap();
        let port = tcp.local_addr().unwrap().port();
        assert_ne!(port, 0);
        assert_eq!(udp.local_addr().unwrap().port(), port);
    }

    #[test]
    fn a_taken_port_is_an_error() {
        let taken = bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = taken.local_addr().unwrap();
        let err = bind_tcp_and_udp(addr).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}
