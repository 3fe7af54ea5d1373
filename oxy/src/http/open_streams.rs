//! A connection's open streams (requests being answered, tunnels and upgrades), so an
//! HTTP/2 connection with none can be closed once it has been idle long enough.

use crate::hooks::HttpBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Notify;

/// The count of one connection's open streams.
#[derive(Debug, Clone, Default)]
pub struct OpenStreams(Arc<Count>);

/// The count, and the notice waiters get when it leaves or reaches zero (only then:
/// most streams of a busy HTTP/2 connection open and close without a notice).
#[derive(Debug, Default)]
struct Count {
    open: AtomicUsize,
    zero_crossed: Notify,
}

impl Count {
    /// Whether no stream is open, checked after `notice` is armed, so a crossing right
    /// after the check still wakes it.
    fn none_open(&self, notice: Pin<&mut tokio::sync::futures::Notified<'_>>) -> bool {
        notice.enable();
        self.open.load(Ordering::Acquire) == 0
    }
}

impl OpenStreams {
    /// Counts one more stream until the returned guard is dropped.
    pub fn open(&self) -> StreamGuard {
        if self.0.open.fetch_add(1, Ordering::AcqRel) == 0 {
            self.0.zero_crossed.notify_waiters();
        }
        StreamGuard(self.0.clone())
    }

    /// Resolves once no stream has been open for `timeout` (never when it is 0).
    pub fn idle_for(&self, timeout: Duration) -> impl Future<Output = ()> + use<> {
        let count = self.0.clone();
        async move {
            if timeout.is_zero() {
                return std::future::pending().await;
            }
            loop {
                let notice = count.zero_crossed.notified();
                tokio::pin!(notice);
                if !count.none_open(notice.as_mut()) {
                    // Some are open: the last one's close is the notice.
                    notice.await;
                    continue;
                }
                // None open: idle unless one opens within `timeout`.
                if tokio::time::timeout(timeout, notice).await.is_err() {
                    return;
                }
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
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.zero_crossed.notify_waiters();
        }
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

    #[tokio::test(start_paused = true)]
    async fn idle_only_without_open_streams() {
        let streams = OpenStreams::default();
        let idle = streams.idle_for(Duration::from_secs(10));
        tokio::pin!(idle);
        let guard = streams.open();
        assert!(
            tokio::time::timeout(Duration::from_secs(60), idle.as_mut())
                .await
                .is_err()
        );
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
            tokio::time::timeout(Duration::from_secs(60), idle.as_mut())
                .await
                .is_err(),
            "one stream is still open"
        );
        // Closed and reopened within the timeout: the idle time starts again.
        drop(second);
        assert!(
            tokio::time::timeout(Duration::from_secs(5), idle.as_mut())
                .await
                .is_err()
        );
        let third = streams.open();
        drop(third);
        let reopened = tokio::time::Instant::now();
        idle.await;
        assert_eq!(reopened.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_holds_its_stream_until_dropped() {
        let streams = OpenStreams::default();
        let body = streams.open().holding(crate::http::body::full("answer"));
        let idle = streams.idle_for(Duration::from_secs(10));
        tokio::pin!(idle);
        assert!(
            tokio::time::timeout(Duration::from_secs(60), idle.as_mut())
                .await
                .is_err()
        );
        assert_eq!(
            body.size_hint().exact(),
            Some(6),
            "the size hint passes through"
        );
        drop(body);
        tokio::time::timeout(Duration::from_secs(11), idle)
            .await
            .unwrap();
    }
}
