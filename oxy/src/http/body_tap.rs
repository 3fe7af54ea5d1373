//! Streaming body inspection: a [`BodyTap`] sees each chunk of a request or response body
//! as it flows (nothing is buffered whole) and can stop the body mid-stream.

use crate::hooks::HttpBody;
use async_trait::async_trait;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

/// What a tap decides after seeing data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TapVerdict {
    /// Let the body go on.
    Continue,
    /// Stop the body: a request is not completed upstream and the client gets 403 with
    /// the reason (when no response has started); a response is cut off.
    Block(String),
}

/// Watches a body chunk by chunk.
#[async_trait]
pub trait BodyTap: Send + 'static {
    /// Runs for each chunk, in order, before the chunk is passed on.
    async fn on_chunk(&mut self, chunk: &Bytes) -> TapVerdict;

    /// Runs once after the last chunk, before the end is passed on. The default
    /// returns [`TapVerdict::Continue`].
    async fn on_end(&mut self) -> TapVerdict {
        TapVerdict::Continue
    }
}

/// The error a blocked body ends with.
#[derive(Debug, Clone, thiserror::Error)]
#[error("body blocked: {0}")]
pub struct BodyBlocked(pub String);

type Verdict = Pin<Box<dyn Future<Output = (Box<dyn BodyTap>, TapVerdict)> + Send>>;

/// A body passed through a tap. Each chunk is held back until the tap has judged the
/// next one (or the end), so the last bytes reach the peer only after the final verdict:
/// a blocked body never arrives complete, even when its length was declared.
pub struct TappedBody {
    inner: HttpBody,
    tap: Option<Box<dyn BodyTap>>,
    pending: Option<Verdict>,
    /// The chunk being judged by `pending` (none while the end is judged).
    judging: Option<Frame<Bytes>>,
    /// Chunks judged and waiting for the next verdict, then trailers if any.
    held: VecDeque<Frame<Bytes>>,
    ended: bool,
    /// Set to the reason when the tap blocks the body.
    blocked: Arc<OnceLock<String>>,
}

impl TappedBody {
    /// `inner` seen by `tap` when there is one, else `inner` as it is.
    pub fn wrap(inner: HttpBody, tap: Option<Box<dyn BodyTap>>) -> HttpBody {
        Self::wrap_watched(inner, tap).0
    }

    /// Like [`TappedBody::wrap`], with where the block reason appears if the tap blocks:
    /// whoever sends the body learns why it failed even when the error it gets back
    /// (from an HTTP/2 upstream's reset stream) no longer carries the [`BodyBlocked`].
    pub fn wrap_watched(
        inner: HttpBody,
        tap: Option<Box<dyn BodyTap>>,
    ) -> (HttpBody, Option<Arc<OnceLock<String>>>) {
        match tap {
            Some(tap) => {
                let body = Self::new(inner, tap);
                let blocked = body.blocked.clone();
                (http_body_util::BodyExt::boxed_unsync(body), Some(blocked))
            }
            None => (inner, None),
        }
    }

    /// `inner` seen by `tap`.
    pub fn new(inner: HttpBody, tap: Box<dyn BodyTap>) -> Self {
        Self {
            inner,
            tap: Some(tap),
            pending: None,
            judging: None,
            held: VecDeque::new(),
            ended: false,
            blocked: Arc::default(),
        }
    }
}

impl Body for TappedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        loop {
            if let Some(pending) = this.pending.as_mut() {
                let (tap, verdict) = match pending.as_mut().poll(cx) {
                    Poll::Ready(done) => done,
                    Poll::Pending => return Poll::Pending,
                };
                this.pending = None;
                this.tap = Some(tap);
                if let TapVerdict::Block(reason) = verdict {
                    this.ended = true;
                    this.judging = None;
                    this.held.clear();
                    let _ = this.blocked.set(reason.clone());
                    return Poll::Ready(Some(Err(Box::new(BodyBlocked(reason)))));
                }
                // Everything held so far is cleared by this later verdict.
                let released = if this.ended {
                    this.held.pop_front()
                } else {
                    let released = this.held.pop_front();
                    this.held.extend(this.judging.take());
                    released
                };
                if let Some(frame) = released {
                    return Poll::Ready(Some(Ok(frame)));
                }
            }
            if this.ended {
                return Poll::Ready(this.held.pop_front().map(Ok));
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => {
                    let Some(mut tap) = this.tap.take() else {
                        return Poll::Ready(Some(Ok(frame)));
                    };
                    match frame.data_ref().cloned() {
                        Some(chunk) => {
                            this.judging = Some(frame);
                            this.pending = Some(Box::pin(async move {
                                let verdict = tap.on_chunk(&chunk).await;
                                (tap, verdict)
                            }));
                        }
                        None => {
                            // Trailers: the body is over; judge its end first.
                            this.held.push_back(frame);
                            this.ended = true;
                            this.pending = Some(end_verdict(tap));
                        }
                    }
                }
                Poll::Ready(None) => {
                    this.ended = true;
                    let Some(tap) = this.tap.take() else {
                        return Poll::Ready(this.held.pop_front().map(Ok));
                    };
                    this.pending = Some(end_verdict(tap));
                }
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn end_verdict(mut tap: Box<dyn BodyTap>) -> Verdict {
    Box::pin(async move {
        let verdict = tap.on_end().await;
        (tap, verdict)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    struct Needle(&'static str, usize);

    #[async_trait]
    impl BodyTap for Needle {
        async fn on_chunk(&mut self, chunk: &Bytes) -> TapVerdict {
            self.1 += 1;
            if chunk.windows(self.0.len()).any(|w| w == self.0.as_bytes()) {
                TapVerdict::Block(format!("found {} in chunk {}", self.0, self.1))
            } else {
                TapVerdict::Continue
            }
        }
    }

    fn body(chunks: &[&'static str]) -> HttpBody {
        let frames = chunks
            .iter()
            .map(|c| {
                Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(c.as_bytes())))
            })
            .collect::<Vec<_>>();
        super::super::body::boxed(StreamBody::new(futures_util::stream::iter(frames)))
    }

    #[tokio::test]
    async fn clean_bodies_pass_whole_and_blocked_ones_release_nothing_after_the_verdict() {
        let clean = TappedBody::new(body(&["abc", "def"]), Box::new(Needle("EVIL", 0)));
        assert_eq!(clean.collect().await.unwrap().to_bytes(), "abcdef");

        // "abc" waits for the verdict on the next chunk, which blocks: nothing passes.
        let mut tapped = TappedBody::new(
            body(&["abc", "xEVILx", "never"]),
            Box::new(Needle("EVIL", 0)),
        );
        let err = tapped.frame().await.unwrap().unwrap_err();
        assert_eq!(err.to_string(), "body blocked: found EVIL in chunk 2");
        assert!(tapped.frame().await.is_none());

        // A block at the end keeps the last chunk from ever being released.
        struct AtEnd;
        #[async_trait]
        impl BodyTap for AtEnd {
            async fn on_chunk(&mut self, _chunk: &Bytes) -> TapVerdict {
                TapVerdict::Continue
            }
            async fn on_end(&mut self) -> TapVerdict {
                TapVerdict::Block("judged at the end".into())
            }
        }
        let mut tapped = TappedBody::new(body(&["one", "two"]), Box::new(AtEnd));
        assert_eq!(
            tapped.frame().await.unwrap().unwrap().into_data().unwrap(),
            "one"
        );
        assert!(tapped.frame().await.unwrap().is_err());
        assert!(tapped.frame().await.is_none());
    }
}
