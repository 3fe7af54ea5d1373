//! Version-agnostic upgrades: the HTTP server puts a [`PendingUpgrade`] in a request's
//! extensions (and the upstream client in a 101 response's), so CONNECT and WebSocket
//! handling never depends on which HTTP implementation carried the request.

use crate::tunnel::stream::TunnelStream;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// The `:protocol` of an extended CONNECT request (RFC 8441, RFC 9220), which the HTTP/2
/// and HTTP/3 servers put in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtendedConnect(pub String);

impl ExtendedConnect {
    /// Whether it is `connect-udp` (RFC 9298).
    pub fn is_connect_udp(&self) -> bool {
        self.0 == "connect-udp"
    }

    /// Whether it is `connect-ip` (RFC 9484).
    pub fn is_connect_ip(&self) -> bool {
        self.0 == "connect-ip"
    }
}

/// Whether a request asks for the MASQUE `protocol` (`connect-udp`, `connect-ip`):
/// extended CONNECT with that `:protocol` (HTTP/2, HTTP/3) or an HTTP/1.1 `GET` with
/// `Upgrade: protocol`.
pub fn asks_for(parts: &http::request::Parts, protocol: &str) -> bool {
    match parts.extensions.get::<ExtendedConnect>() {
        Some(extended) => parts.method == http::Method::CONNECT && extended.0 == protocol,
        None => {
            parts.method == http::Method::GET
                && parts.version <= http::Version::HTTP_11
                && super::headers::requested_upgrade(&parts.headers)
                    .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(protocol.as_bytes()))
        }
    }
}

/// The stream an upgrade yields: a plain TCP socket when the server can hand it back
/// (HTTP/1.1 without TLS), so a CONNECT tunnel can forward it zero-copy.
pub type Upgraded = TunnelStream;

type Waiting = Pin<Box<dyn Future<Output = io::Result<Upgraded>> + Send>>;

/// An upgrade that completes once the response switching protocols has been sent (or,
/// for a response, received). Cloneable so it can live in `http::Extensions`; only the
/// first [`PendingUpgrade::wait`] gets the stream.
#[derive(Clone)]
pub struct PendingUpgrade(Arc<Mutex<Option<Waiting>>>);

impl PendingUpgrade {
    /// Wraps the future that yields the upgraded stream.
    pub fn new<F>(upgrade: F) -> Self
    where
        F: Future<Output = io::Result<Upgraded>> + Send + 'static,
    {
        Self(Arc::new(Mutex::new(Some(Box::pin(upgrade)))))
    }

    /// Waits for the upgraded stream.
    pub async fn wait(self) -> io::Result<Upgraded> {
        let waiting = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        match waiting {
            Some(waiting) => waiting.await,
            None => Err(io::Error::other("the upgrade was already taken")),
        }
    }
}

/// Copies bytes both ways between two upgraded streams until both are done.
pub async fn relay(client: PendingUpgrade, upstream: PendingUpgrade) {
    match tokio::try_join!(client.wait(), upstream.wait()) {
        Ok((mut client, mut upstream)) => {
            match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                Ok((up, down)) => tracing::debug!(up, down, "upgraded connection closed"),
                Err(e) => tracing::debug!(error = %e, "upgraded connection failed"),
            }
        }
        Err(e) => tracing::debug!(error = %e, "upgrade did not complete"),
    }
}
