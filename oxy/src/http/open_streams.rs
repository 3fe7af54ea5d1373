//! A connection's open streams (requests being answered, tunnels and upgrades), so a
//! connection with none can be closed once it has been idle long enough.

use crate::hooks::HttpBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// The count of one connection's open streams.
#[derive(Debug, Clone, Default)]
pub struct OpenStreams(Arc<Count>);

/// The count, and when a stream last closed: a stream opens and closes without waking
/// anyone or arming a timer, and whoever waits for idleness reads these when its own
/// timer fires.
#[derive(Debug)]
struct Count {
    open: AtomicUsize,
    /// When a stream last closed, in nanoseconds after `created`: while none is open,
    /// when the connection became idle.
    last_closed: AtomicU64,
    created: Instant,
}

impl Default for Count {
    fn default() -> Self {
        Count {
            open: AtomicUsize::new(0),
            last_closed: AtomicU64::new(0),
            created: Instant::now(),
        }
    }
}

impl Count {
    /// Since when the connection has been idle, or `None` while a stream is open.
    fn idle_since(&self) -> Option<Instant> {
        if self.open.load(Ordering::Acquire) > 0 {
            return None;
        }
        let closed = Duration::from_nanos(self.last_closed.load(Ordering::Acquire));
        Some(self.created + closed)
    }
}

impl OpenStreams {
    /// Counts one more stream until the returned guard is dropped.
    pub fn open(&self) -> StreamGuard {
        self.0.open.fetch_add(1, Ordering::AcqRel);
        StreamGuard(self.0.clone())
    }

    /// Resolves once no stream has been open for `timeout`, counted from the first
    /// poll at the earliest (never when `timeout` is 0). One timer, reset only when it
    /// fires early: a connection busy with many short requests does not set one each.
    pub fn idle_for(&self, timeout: Duration) -> impl Future<Output = ()> + use<> {
        let count = self.0.clone();
        async move {
            if timeout.is_zero() {
                return std::future::pending().await;
            }
            let watched_from = Instant::now();
            // A timeout beyond the clock's range never passes.
            let Some(first) = watched_from.checked_add(timeout) else {
                return std::future::pending().await;
            };
            let check = tokio::time::sleep_until(first);
            tokio::pin!(check);
            loop {
                check.as_mut().await;
                let now = Instant::now();
                // While a stream is open, look again after a whole `timeout`: it can
                // only close later.
                let idle_since = count.idle_since().map_or(now, |t| t.max(watched_from));
                let Some(idle_until) = idle_since.checked_add(timeout) else {
                    return std::future::pending().await;
                };
                if idle_until <= now {
                    return;
                }
                check.as_mut().reset(idle_until);
            }
        }
    }
}

/// One open stream; dropping it closes it.
#[derive(Debug)]
pub struct StreamGuard(Arc<Count>);

impl StreamGuard {
    /// `body`, keeping this stream open until the body is dropped (sent or abandoned).
    pub fn holding(self, body: HttpBody) -> HttpBody {
        HttpBody::new(Holding {
            body,
            _stream: self,
        })
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        // The time first, so that a count seen at zero comes with its time.
        let closed = u64::try_from(self.0.created.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.0.last_closed.store(closed, Ordering::Release);
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A body that keeps its stream counted as open; it is otherwise the body it holds
/// (its size hint and end too, which decide `content-length` and HTTP/2's END_STREAM).
struct Holding {
    body: HttpBody,
    _stream: StreamGuard,
}

impl Body for Holding {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
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

    /// Whether `idle` resolves within `seconds` (of paused time).
    async fn idle_within(idle: Pin<&mut impl Future<Output = ()>>, seconds: u64) -> bool {
        tokio::time::timeout(Duration::from_secs(seconds), idle)
            .await
            .is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn idle_only_without_open_streams() {
        let streams = OpenStreams::default();
        let idle = streams.idle_for(Duration::from_secs(10));
        tokio::pin!(idle);
        let guard = streams.open();
        assert!(!idle_within(idle.as_mut(), 60).await);
        drop(guard);
        let closed = tokio::time::Instant::now();
        idle.await;
        assert_eq!(closed.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_once_the_last_of_several_streams_closes() {
        let streams = OpenStreams::default();
        let (first, second) = (streams.open(), streams.open());
        let idle = streams.idle_for(Duration::from_secs(10));
        tokio::pin!(idle);
        drop(first);
        assert!(
            !idle_within(idle.as_mut(), 60).await,
            "one stream is still open"
        );
        // Closed and reopened within the timeout: the idle time starts again.
        drop(second);
        assert!(!idle_within(idle.as_mut(), 5).await);
        let third = streams.open();
        drop(third);
        let reopened = tokio::time::Instant::now();
        idle.await;
        assert_eq!(reopened.elapsed(), Duration::from_secs(10));
    }

    /// A connection idle long before anyone watched (a drain starting) still gets the
    /// whole `timeout` from then.
    #[tokio::test(start_paused = true)]
    async fn idleness_counts_from_the_first_poll_at_the_earliest() {
        let streams = OpenStreams::default();
        drop(streams.open());
        tokio::time::sleep(Duration::from_secs(100)).await;
        let watched = tokio::time::Instant::now();
        streams.idle_for(Duration::from_secs(1)).await;
        assert_eq!(watched.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_holds_its_stream_until_dropped() {
        let streams = OpenStreams::default();
        let body = streams.open().holding(crate::http::body::full("answer"));
        let idle = streams.idle_for(Duration::from_secs(10));
        tokio::pin!(idle);
        assert!(!idle_within(idle.as_mut(), 60).await);
        assert_eq!(
            body.size_hint().exact(),
            Some(6),
            "the size hint passes through"
        );
        drop(body);
        assert!(idle_within(idle.as_mut(), 11).await);
    }
}
