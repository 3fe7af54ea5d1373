//! Bodies crossing the proxy with an idle timeout between their pieces. A request body
//! also marks its own errors as the client's (a framing error is a 400, not an upstream
//! failure) and tracks the upload, so that `response_timeout` counts from its end, or
//! from the moment the upstream stopped reading it.

use crate::hooks::HttpBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The client's request body failed (a framing error, a reset stream, a closed
/// connection): the client's fault, answered 400 if nothing was answered yet.
#[derive(Debug, thiserror::Error)]
#[error("the client's request body failed: {0}")]
pub struct ClientBodyError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// No piece of a body came within its idle timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyIdleTimeout {
    /// The client stopped sending its request body.
    #[error("the client sent no request body data for too long")]
    Request,
    /// The upstream stopped sending its response body.
    #[error("the upstream sent no response body data for too long")]
    Response,
}

/// How far a request body's upload has come, as the upstream side reads it.
#[derive(Debug)]
pub struct UploadProgress(Mutex<Upload>);

#[derive(Debug, Clone, Copy)]
struct Upload {
    /// When the upstream side last got a piece of the body (or the upload began).
    last_read: Instant,
    /// The body is waiting for the client to send more.
    waiting_for_client: bool,
    /// The body has been read whole.
    whole: bool,
}

impl Default for UploadProgress {
    fn default() -> Self {
        UploadProgress(Mutex::new(Upload {
            last_read: Instant::now(),
            waiting_for_client: false,
            whole: false,
        }))
    }
}

impl UploadProgress {
    fn update(&self, change: impl FnOnce(&mut Upload)) {
        change(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn get(&self) -> Upload {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resolves when the upstream has had `timeout` to answer: `timeout` after the body
    /// was read whole, or after the upstream last read a piece it did not have to wait
    /// for (it stopped reading). Time spent waiting for a slow client does not count.
    pub async fn response_overdue(&self, timeout: Duration) {
        loop {
            let upload = self.get();
            if upload.waiting_for_client {
                tokio::time::sleep(timeout).await;
                continue;
            }
            let due = upload.last_read + timeout;
            if Instant::now() >= due {
                let now = self.get();
                if now.whole || (!now.waiting_for_client && now.last_read == upload.last_read) {
                    return;
                }
                continue;
            }
            tokio::time::sleep_until(due).await;
        }
    }
}

/// A body with an idle timeout (0: none); a request body's errors become
/// [`ClientBodyError`]s and its progress is tracked.
pub struct GuardedBody {
    inner: HttpBody,
    idle: Duration,
    waiting: Option<Pin<Box<Sleep>>>,
    side: BodyIdleTimeout,
    upload: Option<Arc<UploadProgress>>,
}

impl GuardedBody {
    /// The client's request body, its progress told to `upload`.
    pub fn request(inner: HttpBody, idle: Duration, upload: Arc<UploadProgress>) -> HttpBody {
        if inner.is_end_stream() {
            upload.update(|u| u.whole = true);
        }
        HttpBody::new(Self {
            inner,
            idle,
            waiting: None,
            side: BodyIdleTimeout::Request,
            upload: Some(upload),
        })
    }

    /// An upstream's response body.
    pub fn response(inner: HttpBody, idle: Duration) -> HttpBody {
        if idle.is_zero() {
            return inner;
        }
        HttpBody::new(Self {
            inner,
            idle,
            waiting: None,
            side: BodyIdleTimeout::Response,
            upload: None,
        })
    }

    fn progress(&self, whole: bool, waiting_for_client: bool) {
        if let Some(upload) = &self.upload {
            upload.update(|u| {
                if !waiting_for_client {
                    u.last_read = Instant::now();
                }
                u.waiting_for_client = waiting_for_client;
                u.whole |= whole;
            });
        }
    }
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.waiting = None;
                this.progress(this.inner.is_end_stream(), false);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.waiting = None;
                Poll::Ready(Some(Err(match this.side {
                    BodyIdleTimeout::Request => Box::new(ClientBodyError(e)),
                    BodyIdleTimeout::Response => e,
                })))
            }
            Poll::Ready(None) => {
                this.progress(true, false);
                Poll::Ready(None)
            }
            Poll::Pending if this.idle.is_zero() => {
                this.progress(false, true);
                Poll::Pending
            }
            Poll::Pending => {
                this.progress(false, true);
                let idle = this.idle;
                let waiting = this
                    .waiting
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match waiting.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.waiting = None;
                        Poll::Ready(Some(Err(Box::new(this.side))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn streaming() -> (
        tokio::sync::mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>,
        HttpBody,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        (
            tx,
            crate::http::body::boxed(http_body_util::StreamBody::new(stream)),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_request_body_times_out() {
        let (tx, body) = streaming();
        let upload = Arc::new(UploadProgress::default());
        let mut body = GuardedBody::request(body, Duration::from_secs(5), upload);
        tx.send(Ok(Frame::data(Bytes::from_static(b"a"))))
            .await
            .unwrap();
        assert!(body.frame().await.unwrap().is_ok());
        let err = body.frame().await.unwrap().unwrap_err();
        assert_eq!(
            err.downcast_ref::<BodyIdleTimeout>(),
            Some(&BodyIdleTimeout::Request)
        );
    }

    #[tokio::test]
    async fn client_errors_are_marked() {
        let (tx, body) = streaming();
        let upload = Arc::new(UploadProgress::default());
        let mut body = GuardedBody::request(body, Duration::ZERO, upload);
        tx.send(Err(std::io::Error::other("bad chunk")))
            .await
            .unwrap();
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.is::<ClientBodyError>());
    }

    #[tokio::test(start_paused = true)]
    async fn the_response_is_due_after_the_upload_not_during_it() {
        let timeout = Duration::from_secs(10);
        let (tx, body) = streaming();
        let upload = Arc::new(UploadProgress::default());
        let mut body = GuardedBody::request(body, Duration::ZERO, upload.clone());
        let overdue = upload.clone();
        let due = tokio::spawn(async move { overdue.response_overdue(timeout).await });
        // A slow client: 5 pieces 8 s apart (40 s in all), each read at once.
        for _ in 0..5 {
            let next = body.frame();
            tokio::pin!(next);
            assert!(futures_util::poll!(next.as_mut()).is_pending());
            tokio::time::sleep(Duration::from_secs(8)).await;
            tx.send(Ok(Frame::data(Bytes::from_static(b"a"))))
                .await
                .unwrap();
            assert!(next.await.unwrap().is_ok());
        }
        assert!(!due.is_finished());
        drop(tx);
        assert!(body.frame().await.is_none());
        let ended = Instant::now();
        due.await.unwrap();
        assert_eq!(Instant::now() - ended, timeout);
    }

    #[tokio::test(start_paused = true)]
    async fn an_upstream_that_stops_reading_is_overdue() {
        let timeout = Duration::from_secs(10);
        let (tx, body) = streaming();
        let upload = Arc::new(UploadProgress::default());
        let mut body = GuardedBody::request(body, Duration::ZERO, upload.clone());
        tx.send(Ok(Frame::data(Bytes::from_static(b"a"))))
            .await
            .unwrap();
        tx.send(Ok(Frame::data(Bytes::from_static(b"b"))))
            .await
            .unwrap();
        assert!(body.frame().await.unwrap().is_ok());
        let read = Instant::now();
        // The second piece is there, but nobody reads it.
        upload.response_overdue(timeout).await;
        assert_eq!(Instant::now() - read, timeout);
    }
}
