//! [`TunnelClient`]: who a tunnel is for, as the egress and tunnel hooks and the audit
//! record see it.

use crate::app::OxyExt;
use crate::hooks::Connection;
use std::net::SocketAddr;

/// Who a tunnel is for: the client's addresses, the connection it came on and, behind an
/// HTTP request, its user.
#[derive(Debug)]
pub struct TunnelClient<App: OxyExt> {
    /// The connection the tunnel came on.
    pub connection: Connection<App>,
    /// The socket's peer (the load balancer, behind one).
    pub peer_addr: SocketAddr,
    /// The original client a PROXY header named.
    pub original_client: Option<SocketAddr>,
    /// The local address the client connected to.
    pub local_addr: SocketAddr,
    /// The user the request that opened the tunnel was authenticated as, if any.
    pub proxy_user: Option<String>,
}

impl<App: OxyExt> Clone for TunnelClient<App> {
    fn clone(&self) -> Self {
        Self {
            connection: self.connection.clone(),
            peer_addr: self.peer_addr,
            original_client: self.original_client,
            local_addr: self.local_addr,
            proxy_user: self.proxy_user.clone(),
        }
    }
}

impl<App: OxyExt> TunnelClient<App> {
    /// The client: the original client behind a PROXY header, else the socket's peer.
    pub fn addr(&self) -> SocketAddr {
        self.original_client.unwrap_or(self.peer_addr)
    }
}
