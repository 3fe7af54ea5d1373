//! Pooled upstream connections for requests whose route an egress hook chose. Idle
//! HTTP/1.1 connections are kept by the whole egress choice: the route (bind address,
//! upstream proxy and its credentials, internal service), the target, TLS (policy, pin),
//! and who asked (the client's address and the proxy user), since the hook's answers
//! (`on_egress` runs for every request, `on_resolved` when a connection is made) and an
//! internal service's PROXY header are about them. A connection goes back to the pool
//! once its response body is done.

use super::metrics::oxy_http;
use crate::hooks::{HttpBody, Target};
use crate::offramp::route::EgressRoute;
use crate::tls::client::UpstreamTlsFacts;
use hyper::client::conn::http1::SendRequest;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// `n` as a gauge amount.
fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// What a pooled connection was made for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey {
    pub(crate) route: EgressRoute,
    pub(crate) target: Target,
    pub(crate) https: bool,
    pub(crate) tls_policy: Option<&'static str>,
    pub(crate) server_pin: Option<String>,
    /// The client: its whole address for an internal service (the PROXY header names it),
    /// else its IP address with port 0.
    pub(crate) client: SocketAddr,
    pub(crate) local: Option<SocketAddr>,
    pub(crate) proxy_user: Option<String>,
}

/// An open HTTP/1.1 connection to an upstream and its TLS facts.
pub(crate) struct PooledConnection {
    pub(crate) sender: SendRequest<HttpBody>,
    pub(crate) facts: Option<Arc<UpstreamTlsFacts>>,
    idle_since: Instant,
}

impl PooledConnection {
    pub(crate) fn new(sender: SendRequest<HttpBody>, facts: Option<Arc<UpstreamTlsFacts>>) -> Self {
        Self {
            sender,
            facts,
            idle_since: Instant::now(),
        }
    }
}

/// The idle connections of one endpoint's upstream client.
pub(crate) struct EgressPool {
    idle: Mutex<HashMap<PoolKey, Vec<PooledConnection>>>,
    idle_timeout: Duration,
    /// Idle connections kept for one key at most; more are closed when their response
    /// ends (`http.client.pool_max_idle_per_upstream`).
    max_idle_per_key: usize,
    /// `oxy_http_egress_idle_connections` of the endpoint.
    idle_gauge: prometheus::IntGauge,
}

impl EgressPool {
    /// A pool whose connections close after `idle_timeout` unused (a sweep every
    /// `idle_timeout`, at least a second, while the pool lives), keeping at most
    /// `max_idle_per_key` idle for one key. Needs a runtime.
    pub(crate) fn new(
        idle_timeout: Duration,
        max_idle_per_key: usize,
        endpoint: &str,
    ) -> Arc<Self> {
        let pool = Arc::new(Self {
            idle: Mutex::default(),
            idle_timeout,
            max_idle_per_key,
            idle_gauge: oxy_http::egress_idle_connections(endpoint),
        });
        let weak = Arc::downgrade(&pool);
        let period = idle_timeout.max(Duration::from_secs(1));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(pool) = weak.upgrade() else {
                    return;
                };
                let mut idle = pool.idle.lock().unwrap_or_else(PoisonError::into_inner);
                idle.retain(|_, connections| {
                    let before = connections.len();
                    connections.retain(|c| {
                        !c.sender.is_closed() && c.idle_since.elapsed() < pool.idle_timeout
                    });
                    pool.idle_gauge.sub(count(before - connections.len()));
                    !connections.is_empty()
                });
            }
        });
        pool
    }

    /// An idle connection for `key` that can take a request now, if there is one;
    /// closed and expired ones are dropped on the way.
    pub(crate) fn checkout(&self, key: &PoolKey) -> Option<PooledConnection> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let connections = idle.get_mut(key)?;
        let mut found = None;
        while let Some(connection) = connections.pop() {
            self.idle_gauge.dec();
            if connection.sender.is_ready() && connection.idle_since.elapsed() < self.idle_timeout {
                found = Some(connection);
                break;
            }
        }
        if connections.is_empty() {
            idle.remove(key);
        }
        found
    }

    /// Puts `connection` back under `key` once its current response is done (or drops
    /// it if the connection closes first, or the key has enough idle ones).
    pub(crate) fn check_in_when_done(
        self: &Arc<Self>,
        key: PoolKey,
        mut connection: PooledConnection,
    ) {
        if self.max_idle_per_key == 0 {
            return; // nothing is kept: the connection closes with its response
        }
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            if connection.sender.ready().await.is_err() {
                return;
            }
            let Some(pool) = pool.upgrade() else {
                return;
            };
            connection.idle_since = Instant::now();
            let mut idle = pool.idle.lock().unwrap_or_else(PoisonError::into_inner);
            let connections = idle.entry(key).or_default();
            if connections.len() < pool.max_idle_per_key {
                connections.push(connection);
                pool.idle_gauge.inc();
            }
        });
    }
}
