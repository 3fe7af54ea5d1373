//! [`TunnelClient`]: who a tunnel is for, as the egress and tunnel hooks and the audit
//! record see it.

use std::net::SocketAddr;

/// Who a tunnel is for: the client's addresses and, behind an HTTP request, its user.
#[derive(Debug, Clone)]
pub struct TunnelClient {
    /// The socket's peer (the load balancer, behind one).
    pub peer_addr: SocketAddr,
    /// The original client a PROXY header named.
    pub original_client: Option<SocketAddr>,
    /// The local address the client connected to.
    pub local_addr: SocketAddr,
    /// The user the request that opened the tunnel was authenticated as, if any.
    pub proxy_user: Option<String>,
}

impl TunnelClient {
    /// The client: the original client behind a PROXY header, else the socket's peer.
    pub fn addr(&self) -> SocketAddr {
        self.original_client.unwrap_or(self.peer_addr)
    }
}
