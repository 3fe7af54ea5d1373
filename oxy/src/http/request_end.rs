//! The end of a request: a response body that counts what it hands to the client and,
//! at its end (or when it is dropped early), runs [`RequestEndHook::on_request_end`].

use crate::app::OxyExt;
use crate::drain::Drain;
use crate::hooks::{HttpBody, RequestEndHook, RequestSummary};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// A response body that reports the request's end once.
pub struct RequestEnd<App: OxyExt> {
    inner: HttpBody,
    bytes: u64,
    started: Instant,
    /// The hook runs as a task the shutdown drain waits for.
    drain: Drain,
    report: Option<(Arc<dyn RequestEndHook<App>>, RequestSummary<App>)>,
}

impl<App: OxyExt> RequestEnd<App> {
    /// `body`, whose end `hook` hears about with `summary` (its `duration` and
    /// `body_bytes` filled in then), counted from `started`, in a task `drain` waits for.
    pub fn wrap(
        body: HttpBody,
        hook: Arc<dyn RequestEndHook<App>>,
        summary: RequestSummary<App>,
        started: Instant,
        drain: Drain,
    ) -> HttpBody {
        let end = Self {
            inner: body,
            bytes: 0,
            started,
            drain,
            report: Some((hook, summary)),
        };
        http_body_util::BodyExt::boxed_unsync(end)
    }

    /// Runs the hook in a task of its own, once.
    fn report(&mut self) {
        let Some((hook, mut summary)) = self.report.take() else {
            return;
        };
        summary.duration = self.started.elapsed();
        summary.body_bytes = self.bytes;
        if tokio::runtime::Handle::try_current().is_ok() {
            (self.drain).spawn_connection(async move { hook.on_request_end(&summary).await });
        } else {
            tracing::warn!(uri = %summary.uri, "on_request_end not run: the runtime is gone");
        }
    }
}

impl<App: OxyExt> Body for RequestEnd<App> {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None | Some(Err(_))) => this.report(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<App: OxyExt> Drop for RequestEnd<App> {
    fn drop(&mut self) {
        self.report();
    }
}
