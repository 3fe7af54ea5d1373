//! Sessions of upstream TLS connections kept for resumption, so that a new connection to
//! an upstream skips the full handshake. They are kept by upstream and by what the
//! connection was held to (ALPN, compliance policy): a session is never offered under
//! other terms. A TLS 1.3 session is offered once (RFC 8446 §C.4); a TLS 1.2 one until
//! it expires.

use boring::ex_data::Index;
use boring::ssl::{Ssl, SslRef, SslSession, SslVersion};
use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, OnceLock, PoisonError};

/// Upstreams whose sessions are kept; the oldest is dropped first.
const MAX_UPSTREAMS: usize = 1024;
/// Sessions kept per upstream (TLS 1.3 servers send several tickets).
const PER_UPSTREAM: usize = 4;

/// The key a connection's sessions are kept under, stored on the connection.
fn key_index() -> Option<Index<Ssl, String>> {
    static INDEX: OnceLock<Option<Index<Ssl, String>>> = OnceLock::new();
    *INDEX.get_or_init(|| Ssl::new_ex_index().ok())
}

/// Sessions by key.
#[derive(Default)]
pub struct SessionCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<String, VecDeque<SslSession>>,
    /// Keys, oldest first.
    order: VecDeque<String>,
}

impl SessionCache {
    /// Marks `ssl` as keeping its sessions under `key`.
    pub fn mark(ssl: &mut SslRef, key: String) {
        if let Some(index) = key_index() {
            ssl.set_ex_data(index, key);
        }
    }

    /// Keeps `session`, new on `ssl`, under the key `ssl` was marked with (nothing
    /// without one).
    pub fn keep(&self, ssl: &SslRef, session: SslSession) {
        let Some(key) = key_index().and_then(|index| ssl.ex_data(index)) else {
            return;
        };
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if !inner.sessions.contains_key(key) {
            if inner.order.len() >= MAX_UPSTREAMS
                && let Some(oldest) = inner.order.pop_front()
            {
                inner.sessions.remove(&oldest);
            }
            inner.order.push_back(key.clone());
        }
        let sessions = inner.sessions.entry(key.clone()).or_default();
        if sessions.len() >= PER_UPSTREAM {
            sessions.pop_front();
        }
        sessions.push_back(session);
    }

    /// A session to offer for `key`: the newest; a TLS 1.3 one is taken out.
    pub fn offer(&self, key: &str) -> Option<SslSession> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let sessions = inner.sessions.get_mut(key)?;
        let session = sessions.pop_back()?;
        if session.protocol_version() != SslVersion::TLS1_3 {
            sessions.push_back(session.clone());
        }
        Some(session)
    }
}
