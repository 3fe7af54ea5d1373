//! The endpoint's pool of upstream connections: for requests without an egress hook
//! (keyed by target and scheme alone, [`PoolKey::direct`]) and for every request whose
//! route an egress hook chose. Those are kept by the whole egress choice: the route (bind
//! address, upstream proxy and its credentials, internal service), the target, TLS
//! (policy, pin), and who asked (the client's address and the proxy user), since the
//! hook's answers (`on_egress` runs for every request, `on_resolved` when a connection is
//! made) and an internal service's PROXY header are about them. An HTTP/1.1 connection
//! takes one request at a time: it is checked out, and goes back to the pool when its
//! response body ends ([`ReturnsToPool`], [`PoolReturn`]), with no task of its own unless
//! hyper's exchange on it is still winding up then; an idle one of Oxy's own wakes the
//! pool's sweep when the upstream closes it ([`Reaper`]). An HTTP/2 connection (TLS
//! whose ALPN chose `h2`) is shared by every request for its key
//! ([`SharedConnection`]). While a connection that may turn out
//! HTTP/2 is being made for a key, the requests that find nothing else wait for it
//! rather than each make their own (RFC 9113 §9.1), unless the key's last connection
//! was HTTP/1.1 ([`Checkout`]).

use super::client::{UpstreamError, UpstreamStream};
use super::metrics::oxy_http;
use crate::hooks::{HttpBody, Target};
use crate::offramp::route::EgressRoute;
use crate::per_thread;
use crate::telemetry::sharded::{ShardedCounters, ShardedGauge};
use crate::tls::client::UpstreamTlsFacts;
use bytes::{Bytes, BytesMut};
use crossbeam_utils::CachePadded;
use http_body::{Body, Frame, SizeHint};
use hyper::client::conn::{http1, http2};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};
use tokio::io::AsyncRead;
use tokio::sync::{Notify, watch};

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

impl PoolKey {
    /// The key of connections made without an egress hook: by target and scheme alone.
    pub(crate) fn direct(target: Target, https: bool) -> Self {
        Self {
            route: EgressRoute::Direct { bind: None },
            target,
            https,
            tls_policy: None,
            server_pin: None,
            client: SocketAddr::from(([0, 0, 0, 0], 0)),
            local: None,
            proxy_user: None,
        }
    }
}

/// An open HTTP/1.1 connection to an upstream and its TLS facts.
pub(crate) struct PooledConnection {
    pub(crate) link: Http1Link,
    pub(crate) facts: Option<Arc<UpstreamTlsFacts>>,
    idle_since: Instant,
}

/// Who drives an HTTP/1.1 connection.
pub(crate) enum Http1Link {
    /// Oxy, in the task of each request: a request without a body is exchanged on it
    /// there (`http/h1_exchange.rs`). Every connection starts so.
    Own {
        io: UpstreamStream,
        /// The read buffer its last answer left, empty: the next exchange writes its
        /// request head and reads its answer in the same allocation once nothing of
        /// that answer is held any more, so an idle connection keeps up to 8 KiB.
        buffer: BytesMut,
    },
    /// hyper's connection task, since a request with a body or an upgrade took it.
    Hyper(http1::SendRequest<HttpBody>),
}

impl PooledConnection {
    pub(crate) fn new(link: Http1Link, facts: Option<Arc<UpstreamTlsFacts>>) -> Self {
        Self {
            link,
            facts,
            idle_since: Instant::now(),
        }
    }

    /// Whether the connection can take a request now: hyper's is ready; one of Oxy's
    /// own has had nothing from the upstream since its last answer (an idle connection
    /// the upstream closed reads as its end).
    fn is_ready(&mut self) -> bool {
        match &mut self.link {
            Http1Link::Hyper(sender) => sender.is_ready(),
            Http1Link::Own { io, .. } => is_quiet(io, Waker::noop()),
        }
    }

    /// Whether the idle connection is closed, or no longer fit for a request; one of
    /// Oxy's own that is not wakes `reaper` when the upstream next sends something (its
    /// end, usually).
    fn is_closed(&mut self, reaper: &Waker) -> bool {
        match &mut self.link {
            Http1Link::Hyper(sender) => sender.is_closed(),
            Http1Link::Own { io, .. } => !is_quiet(io, reaper),
        }
    }
}

/// Whether nothing can be read from the idle `io` now: neither bytes (there should be
/// none between answers) nor its end. Checked without waiting, and without a system
/// call while the runtime has seen nothing arrive since the last read; `waker` is woken
/// when something does.
fn is_quiet(io: &mut UpstreamStream, waker: &Waker) -> bool {
    let mut cx = Context::from_waker(waker);
    let mut byte = [0u8; 1];
    let mut buf = tokio::io::ReadBuf::new(&mut byte);
    Pin::new(io).poll_read(&mut cx, &mut buf).is_pending()
}

/// Wakes the pool's sweep when an idle connection of Oxy's own has something to read:
/// an upstream that closes an idle connection has it closed here at once, as hyper's
/// connection task would, without a task per connection.
struct Reaper(Notify);

impl Wake for Reaper {
    fn wake(self: Arc<Self>) {
        self.0.notify_one();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.notify_one();
    }
}

/// An HTTP/2 connection to an upstream, which takes many requests at once, and its TLS
/// facts; a clone is a handle on the same connection.
#[derive(Clone)]
pub(crate) struct SharedConnection {
    pub(crate) sender: http2::SendRequest<HttpBody>,
    pub(crate) facts: Option<Arc<UpstreamTlsFacts>>,
}

/// A connection made for the pool or given out by it.
pub(crate) enum UpstreamConnection {
    /// HTTP/1.1: one exchange at a time; back to the pool through
    /// [`UpstreamPool::return_at_end`].
    Http1(PooledConnection),
    /// HTTP/2 (TLS whose ALPN chose `h2`): shared; the pool keeps it
    /// ([`UpstreamPool::share`]).
    Http2(SharedConnection),
}

/// What the pool keeps for one key.
#[derive(Default)]
struct Kept {
    /// Idle HTTP/1.1 connections, the most recently used last.
    idle: Vec<PooledConnection>,
    /// The HTTP/2 connection requests share, and when a request last took it.
    shared: Option<(SharedConnection, Instant)>,
    /// A connection being made that may turn out HTTP/2: how it went, once it has.
    connecting: Option<watch::Receiver<Option<UpstreamError>>>,
    /// When a connection that could have been HTTP/2 turned out HTTP/1.1 (ALPN chose
    /// it): requests then make their own at once. Forgotten once the key has had no
    /// idle connection for the idle timeout.
    http1_since: Option<Instant>,
}

impl Kept {
    fn is_empty(&self) -> bool {
        self.idle.is_empty()
            && self.shared.is_none()
            && self.connecting.is_none()
            && self.http1_since.is_none()
    }

    /// Marks a connection as being made, for the requests that find nothing to wait for.
    fn start_connecting(&mut self) -> Checkout {
        let (made, connecting) = watch::channel(None);
        self.connecting = Some(connecting);
        Checkout::Connect(Some(Connecting(made)))
    }

    /// Forgets a connection being made whose maker is done (or gone).
    fn forget_made(&mut self) {
        if self
            .connecting
            .as_ref()
            .is_some_and(|made| made.has_changed().is_err())
        {
            self.connecting = None;
        }
    }
}

/// What a request looking for a connection does.
pub(crate) enum Checkout {
    /// Sends on this connection.
    Found(UpstreamConnection),
    /// Makes a connection; with [`Connecting`] when requests wait for it.
    Connect(Option<Connecting>),
    /// Waits until the connection another request is making is made (it may be HTTP/2,
    /// and shared), then looks again; the error, when making it failed.
    Wait(watch::Receiver<Option<UpstreamError>>),
}

/// Held by the request making a connection that others wait for: they look again when
/// it is dropped (once the connection is shared, or known to be HTTP/1.1), or hear the
/// error through [`Connecting::failed`].
pub(crate) struct Connecting(watch::Sender<Option<UpstreamError>>);

impl Connecting {
    /// Making the connection failed with `error`: the waiting requests fail with it too,
    /// instead of each trying in turn.
    pub(crate) fn failed(self, error: &UpstreamError) {
        self.0.send_replace(Some(error.clone()));
    }
}

/// The pool's map. Its keys are hashed with foldhash, seeded per process: SipHash cost
/// about 1,500 instructions per request (a key is hashed at checkout and again when
/// its connection comes back), and the map holds only keys with connections kept.
type KeptConnections = HashMap<PoolKey, Kept, foldhash::fast::RandomState>;

/// The idle HTTP/1.1 and shared HTTP/2 connections of one endpoint's upstream client. A
/// request finds one here (under a mutex) and drives it itself (`http/h1_exchange.rs`)
/// or through hyper's connection task; a task of the pool's own is spent only on a
/// connection of hyper's that was not ready for the next request when its response
/// ended.
pub(crate) struct UpstreamPool {
    /// One shard per [`per_thread::shards`]: under `scheduling: per_thread` each
    /// per-thread runtime reuses the connections it made, whose tasks run on it, under
    /// a lock of its own (threads of the work-stealing runtime share shard 0).
    shards: Box<[SharedShard]>,
    /// The endpoint's name, for `connections`.
    endpoint: Arc<str>,
    /// `oxy_http_egress_connections_total` of the endpoint by whether the connection
    /// was reused, each series made when first counted.
    connections: ShardedCounters<bool>,
}

/// A shard as the pool and response bodies hold it.
type SharedShard = Arc<CachePadded<PoolShard>>;

/// One thread's kept connections, on cache lines of its own. A response body holds its
/// shard (not the pool) to give its connection back: under `per_thread`, the shard's
/// reference count is written by its own thread alone.
struct PoolShard {
    kept: Mutex<KeptConnections>,
    idle_timeout: Duration,
    /// Idle connections kept for one key at most; more are closed when their response
    /// ends (`http.client.pool_max_idle_per_upstream`).
    max_idle_per_key: usize,
    /// `oxy_http_egress_idle_connections` of the endpoint, shared by the shards.
    idle_gauge: Arc<ShardedGauge>,
    /// Wakes the pool's sweep (see [`Reaper`]).
    reaper: Waker,
}

impl UpstreamPool {
    /// A pool whose connections close after `idle_timeout` unused (a sweep every
    /// `idle_timeout`, at least a second, while the pool lives), keeping at most
    /// `max_idle_per_key` idle for one key. Needs a runtime.
    pub(crate) fn new(
        idle_timeout: Duration,
        max_idle_per_key: usize,
        endpoint: &str,
    ) -> Arc<Self> {
        let idle_gauge = Arc::new(ShardedGauge::new(oxy_http::egress_idle_connections(
            endpoint,
        )));
        let reaper = Arc::new(Reaper(Notify::new()));
        let pool = Arc::new(Self {
            shards: (0..per_thread::shards())
                .map(|_| {
                    Arc::new(CachePadded::new(PoolShard {
                        kept: Mutex::default(),
                        idle_timeout,
                        max_idle_per_key,
                        idle_gauge: idle_gauge.clone(),
                        reaper: Waker::from(reaper.clone()),
                    }))
                })
                .collect(),
            endpoint: endpoint.into(),
            connections: ShardedCounters::default(),
        });
        let weak = Arc::downgrade(&pool);
        let period = idle_timeout.max(Duration::from_secs(1));
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(period) => {}
                    () = reaper.0.notified() => {}
                }
                let Some(pool) = weak.upgrade() else {
                    return;
                };
                pool.sweep();
            }
        });
        pool
    }

    /// The current thread's shard of the idle connections.
    fn shard(&self) -> &SharedShard {
        &self.shards[per_thread::current_shard() % self.shards.len()]
    }

    /// Counts a request that went out on a `reused` connection from the pool, or on a
    /// new one.
    pub(crate) fn count_connection(&self, reused: bool) {
        self.connections.inc(reused, || {
            let kind = if reused { "reused" } else { "new" };
            oxy_http::egress_connections_total(&self.endpoint, kind)
        });
    }

    /// A connection for `key` that can take a request now, if there is one: the shared
    /// HTTP/2 one, else an idle HTTP/1.1 one; closed and expired ones are dropped on
    /// the way. Else, when the connection made for `key` may be HTTP/2 (`may_share`),
    /// the one another request is making is waited for, unless the key's last one was
    /// HTTP/1.1.
    pub(crate) fn checkout(&self, key: &PoolKey, may_share: bool) -> Checkout {
        let shard = self.shard();
        let may_share = may_share && shard.max_idle_per_key > 0;
        shard.checkout(key, may_share)
    }

    /// Idle HTTP/1.1 connections kept, all keys and shards together.
    #[cfg(test)]
    pub(crate) fn idle_connections(&self) -> usize {
        (self.shards.iter())
            .map(|shard| shard.lock().values().map(|k| k.idle.len()).sum::<usize>())
            .sum()
    }

    /// Runs every shard's sweep now.
    fn sweep(&self) {
        for shard in &self.shards {
            shard.sweep();
        }
    }

    /// `connection` was made for `key`: shared from now on if it is HTTP/2; if it is
    /// HTTP/1.1 where requests waited for it (`connecting`), the next ones make their own
    /// without waiting. Then the waiting requests look again.
    pub(crate) fn made(
        &self,
        key: &PoolKey,
        connection: &UpstreamConnection,
        connecting: Option<Connecting>,
    ) {
        match connection {
            UpstreamConnection::Http2(shared) => self.share(key.clone(), shared),
            UpstreamConnection::Http1(_) if connecting.is_some() => self.learn_http1(key),
            UpstreamConnection::Http1(_) => {}
        }
        drop(connecting);
    }

    /// A connection made for `key` that could have been HTTP/2 is HTTP/1.1.
    fn learn_http1(&self, key: &PoolKey) {
        if let Some(connections) = self.shard().lock().get_mut(key) {
            connections.http1_since = Some(Instant::now());
        }
    }

    /// Shares `connection` (HTTP/2) with the requests for `key` from now on, unless the
    /// key has a shared connection that is still open, or nothing is pooled
    /// (`pool_max_idle_per_upstream: 0`).
    fn share(&self, key: PoolKey, connection: &SharedConnection) {
        let shard = self.shard();
        if shard.max_idle_per_key == 0 {
            return;
        }
        let mut kept = shard.lock();
        let connections = kept.entry(key).or_default();
        connections.http1_since = None;
        let shared = &mut connections.shared;
        if shared
            .as_ref()
            .is_none_or(|(open, _)| open.sender.is_closed())
        {
            *shared = Some((connection.clone(), Instant::now()));
        }
    }

    /// Where a response body read without hyper gives its connection back under `key`;
    /// `None` when nothing is kept (`pool_max_idle_per_upstream: 0`).
    pub(crate) fn returner(&self, key: PoolKey) -> Option<PoolReturn> {
        let shard = self.shard();
        (shard.max_idle_per_key > 0).then(|| PoolReturn {
            shard: shard.clone(),
            key,
        })
    }

    /// `body`, which puts `connection` back under `key` when it ends. A body dropped
    /// before its end takes the connection with it (hyper closes a connection whose
    /// response was not read to the end).
    pub(crate) fn return_at_end(
        &self,
        key: PoolKey,
        connection: PooledConnection,
        body: HttpBody,
    ) -> ReturnsToPool {
        let shard = self.shard();
        let mut body = ReturnsToPool {
            owner: (shard.max_idle_per_key > 0).then(|| (shard.clone(), key, connection)),
            body,
        };
        // A body that is over already (204, HEAD, an empty one) is never polled.
        if body.body.is_end_stream() {
            body.give_back();
        }
        body
    }
}

/// Where a response body read without hyper (`http/h1_exchange.rs`) gives its
/// connection back: the pool's shard of the thread that took it, under its key.
pub(crate) struct PoolReturn {
    shard: SharedShard,
    key: PoolKey,
}

impl PoolReturn {
    /// Keeps `io` (with its empty read `buffer` and its TLS `facts`) for the next
    /// request under the key.
    pub(crate) fn keep(
        self,
        io: UpstreamStream,
        buffer: BytesMut,
        facts: Option<Arc<UpstreamTlsFacts>>,
    ) {
        let connection = PooledConnection::new(Http1Link::Own { io, buffer }, facts);
        self.shard.keep(self.key, connection);
    }
}

impl PoolShard {
    fn lock(&self) -> std::sync::MutexGuard<'_, KeptConnections> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn checkout(&self, key: &PoolKey, may_share: bool) -> Checkout {
        let mut kept = self.lock();
        let Some(connections) = kept.get_mut(key) else {
            if !may_share {
                return Checkout::Connect(None);
            }
            return kept.entry(key.clone()).or_default().start_connecting();
        };
        let mut found = None;
        if let Some((shared, last_used)) = &mut connections.shared {
            if shared.sender.is_ready() {
                *last_used = Instant::now();
                found = Some(UpstreamConnection::Http2(shared.clone()));
            } else {
                connections.shared = None;
            }
        }
        let idle = &mut connections.idle;
        let before = idle.len();
        while found.is_none()
            && let Some(mut connection) = idle.pop()
        {
            if connection.idle_since.elapsed() < self.idle_timeout && connection.is_ready() {
                found = Some(UpstreamConnection::Http1(connection));
            }
        }
        self.idle_gauge.add(-count(before - idle.len()));
        if let Some(connection) = found {
            return Checkout::Found(connection);
        }
        connections.forget_made();
        let checkout = match &connections.connecting {
            Some(made) if may_share => Checkout::Wait(made.clone()),
            None if may_share && connections.http1_since.is_none() => {
                connections.start_connecting()
            }
            _ => Checkout::Connect(None),
        };
        if connections.is_empty() {
            kept.remove(key);
        }
        checkout
    }

    /// Closes the connections that closed or expired while idle; a shared one is let
    /// go when no request took it for the idle timeout (it closes once its last
    /// exchange ends).
    fn sweep(&self) {
        let mut kept = self.lock();
        kept.retain(|_, connections| {
            let idle = &mut connections.idle;
            let before = idle.len();
            idle.retain_mut(|c| {
                c.idle_since.elapsed() < self.idle_timeout && !c.is_closed(&self.reaper)
            });
            self.idle_gauge.add(-count(before - idle.len()));
            if connections
                .shared
                .as_ref()
                .is_some_and(|(shared, last_used)| {
                    shared.sender.is_closed() || last_used.elapsed() >= self.idle_timeout
                })
            {
                connections.shared = None;
            }
            connections.forget_made();
            // Kept while HTTP/1.1 connections are: with them the key is still in use.
            if connections.idle.is_empty()
                && connections
                    .http1_since
                    .is_some_and(|since| since.elapsed() >= self.idle_timeout)
            {
                connections.http1_since = None;
            }
            !connections.is_empty()
        });
    }

    /// Keeps `connection` for `key` once it can take the next request: at once when it
    /// can already (the usual case: its response was read to the end), else when its
    /// exchange winds up (the rest of a request body still being sent, say), or never
    /// if it closes first. Nothing is kept when the key has enough idle connections.
    fn check_in(shard: SharedShard, key: PoolKey, mut connection: PooledConnection) {
        if let Http1Link::Hyper(sender) = &mut connection.link
            && !sender.is_ready()
        {
            let shard = Arc::downgrade(&shard);
            tokio::spawn(async move {
                if let Http1Link::Hyper(sender) = &mut connection.link
                    && sender.ready().await.is_ok()
                    && let Some(shard) = shard.upgrade()
                {
                    shard.keep(key, connection);
                }
            });
            return;
        }
        shard.keep(key, connection);
    }

    /// Keeps `connection` for `key` if it is open and the key has room; one of Oxy's own
    /// wakes the sweep when the upstream closes it.
    fn keep(&self, key: PoolKey, mut connection: PooledConnection) {
        if connection.is_closed(&self.reaper) {
            return;
        }
        connection.idle_since = Instant::now();
        let mut kept = self.lock();
        let idle = &mut kept.entry(key).or_default().idle;
        if idle.len() < self.max_idle_per_key {
            idle.push(connection);
            self.idle_gauge.add(1);
        }
    }
}

impl Drop for PoolShard {
    /// The connections still idle close with their shard and leave the gauge.
    fn drop(&mut self) {
        let kept = self.kept.get_mut().unwrap_or_else(PoisonError::into_inner);
        let held: usize = kept.values().map(|k| k.idle.len()).sum();
        self.idle_gauge.add(-count(held));
    }
}

/// A response body that returns its connection to the pool when it ends.
pub(crate) struct ReturnsToPool {
    body: HttpBody,
    owner: Option<(SharedShard, PoolKey, PooledConnection)>,
}

impl ReturnsToPool {
    fn give_back(&mut self) {
        if let Some((shard, key, connection)) = self.owner.take() {
            PoolShard::check_in(shard, key, connection);
        }
    }
}

impl Body for ReturnsToPool {
    type Data = Bytes;
    type Error = <HttpBody as Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let frame = std::task::ready!(Pin::new(&mut this.body).poll_frame(cx));
        match &frame {
            None => this.give_back(),
            Some(Ok(_)) if this.body.is_end_stream() => this.give_back(),
            Some(Err(_)) => this.owner = None,
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PoolKey {
        PoolKey::direct(Target::from(SocketAddr::from(([127, 0, 0, 1], 443))), true)
    }

    fn connects(checkout: Checkout) -> Option<Option<Connecting>> {
        match checkout {
            Checkout::Connect(connecting) => Some(connecting),
            _ => None,
        }
    }

    /// While a connection that may be HTTP/2 is being made, requests wait for it and hear
    /// its error; once one turned out HTTP/1.1, they make their own, until the key has
    /// gone without idle connections for the idle timeout (zero here).
    #[tokio::test]
    async fn requests_wait_for_the_connection_being_made_unless_the_key_speaks_http1() {
        let pool = UpstreamPool::new(Duration::ZERO, 8, "pool-test");
        let key = key();
        let first = connects(pool.checkout(&key, true)).flatten().unwrap();
        let Checkout::Wait(mut waiting) = pool.checkout(&key, true) else {
            panic!("a second request waits for the first's connection");
        };
        assert!(
            connects(pool.checkout(&key, false)).unwrap().is_none(),
            "a connection that cannot be shared is not waited for"
        );
        first.failed(&UpstreamError {
            status: http::StatusCode::BAD_GATEWAY,
            reason: "upstream_connect",
            message: "refused".into(),
        });
        waiting.changed().await.unwrap();
        assert_eq!(
            waiting.borrow().as_ref().map(|e| e.reason),
            Some("upstream_connect")
        );

        // The failed maker is gone: the next request makes the connection.
        let second = connects(pool.checkout(&key, true)).flatten().unwrap();
        pool.learn_http1(&key);
        drop(second);
        assert!(connects(pool.checkout(&key, true)).unwrap().is_none());
        pool.sweep();
        assert!(connects(pool.checkout(&key, true)).unwrap().is_some());

        let unpooled = UpstreamPool::new(Duration::ZERO, 0, "pool-test");
        assert!(
            connects(unpooled.checkout(&key, true)).unwrap().is_none(),
            "nothing is shared when nothing is kept"
        );
    }
}
