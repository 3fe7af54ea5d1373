//! A connection's open streams (requests being answered, tunnels and upgrades), so an
//! HTTP/2 connection with none can be closed once it has been idle long enough.

use crate::hooks::HttpBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::watch;

/// The count of one connection's open streams.
#[derive(Debug, Clone)]
pub struct OpenStreams(Arc<watch::Sender<usize>>);

impl Default for OpenStreams {
    fn default() -> Self {
        OpenStreams(Arc::new(watch::Sender::new(0)))
    }
}

impl OpenStreams {
    /// Counts one more stream until the returned guard is dropped.
    pub fn open(&self) -> StreamGuard {
        self.0.send_modify(|n| *n += 1);
        StreamGuard(self.0.clone())
    }

    /// Resolves once no stream has been open for `timeout` (never when it is 0).
    pub fn idle_for(&self, timeout: Duration) -> impl Future<Output = ()> + use<> {
        let mut count = self.0.subscribe();
        async move {
            if timeout.is_zero() {
                return std::future::pending().await;
            }
            loop {
                if count.wait_for(|n| *n == 0).await.is_err() {
                    return std::future::pending().await;
                }
                if tokio::time::timeout(timeout, count.changed())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

/// One open stream; dropping it closes it.
#[derive(Debug)]
pub struct StreamGuard(Arc<watch::Sender<usize>>);

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
        self.0.send_modify(|n| *n = n.saturating_sub(1));
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
