//! Streaming body inspection: a [`BodyTap`] sees each chunk of a request or response body
//! as it flows (nothing is buffered whole) and can stop the body mid-stream.

use crate::hooks::HttpBody;
use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderMap;
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

    /// Runs after each [`TapVerdict::Continue`] on a chunk: how many of the last bytes
    /// judged so far a later chunk could still make this tap block (a search for a
    /// needle split over two chunks needs the needle's length less one, see
    /// [`StreamSearch::undecided`]). Those bytes wait for the next verdict; the rest go
    /// on at once. The default, `None`, keeps the chunk just judged, whatever its
    /// length, until the next one (or the end) is judged, which delays a stream
    /// (server-sent events, say) by a chunk: a tap that knows how far back it looks
    /// returns that.
    ///
    /// [`StreamSearch::undecided`]: super::stream_search::StreamSearch::undecided
    fn undecided_tail(&self) -> Option<usize> {
        None
    }
}

/// The error a blocked body ends with.
#[derive(Debug, Clone, thiserror::Error)]
#[error("body blocked: {0}")]
pub struct BodyBlocked(pub String);

type Verdict = Pin<Box<dyn Future<Output = (Box<dyn BodyTap>, TapVerdict)> + Send>>;

/// A body passed through a tap. A chunk goes on once the tap has judged it, but for
/// the bytes the tap calls undecided ([`BodyTap::undecided_tail`]), which wait for the
/// next verdict. Everything from the byte that completes the length the message's
/// `Content-Length` declares waits for the verdict on the end, and so do trailers: a
/// blocked body never arrives complete. Without a declared length the peer sees the end
/// only when the body ends, after that verdict.
pub struct TappedBody {
    inner: HttpBody,
    tap: Option<Box<dyn BodyTap>>,
    pending: Option<Verdict>,
    /// The chunk being judged by `pending` (none while the end is judged).
    judging: Option<Bytes>,
    /// Judged bytes that wait for the next verdict, oldest first, and their length.
    undecided: VecDeque<Bytes>,
    undecided_len: usize,
    /// Bytes free to go, in order.
    released: VecDeque<Bytes>,
    /// Bytes of the declared length not yet judged; none without a declared length.
    declared_left: Option<u64>,
    /// The body's trailers, which go last, after the verdict on the end.
    trailers: Option<HeaderMap>,
    ended: bool,
    /// Set to the reason when the tap blocks the body.
    blocked: Arc<OnceLock<String>>,
}

impl TappedBody {
    /// `inner` seen by `tap` when there is one, else `inner` as it is; `headers` are its
    /// message's (for the length its `Content-Length` declares, read only with a tap).
    pub fn wrap(inner: HttpBody, tap: Option<Box<dyn BodyTap>>, headers: &HeaderMap) -> HttpBody {
        Self::wrap_watched(inner, tap, headers).0
    }

    /// Like [`TappedBody::wrap`], with where the block reason appears if the tap blocks:
    /// whoever sends the body learns why it failed even when the error it gets back
    /// (from an HTTP/2 upstream's reset stream) no longer carries the [`BodyBlocked`].
    pub fn wrap_watched(
        inner: HttpBody,
        tap: Option<Box<dyn BodyTap>>,
        headers: &HeaderMap,
    ) -> (HttpBody, Option<Arc<OnceLock<String>>>) {
        match tap {
            Some(tap) => {
                let declared = super::headers::declared_length(headers);
                let body = Self::new(inner, tap, declared);
                let blocked = body.blocked.clone();
                (http_body_util::BodyExt::boxed_unsync(body), Some(blocked))
            }
            None => (inner, None),
        }
    }

    /// `inner` seen by `tap`, with the length its message's `Content-Length` declares
    /// ([`declared_length`]).
    ///
    /// [`declared_length`]: super::headers::declared_length
    pub fn new(inner: HttpBody, tap: Box<dyn BodyTap>, declared: Option<u64>) -> Self {
        Self {
            inner,
            tap: Some(tap),
            pending: None,
            judging: None,
            undecided: VecDeque::new(),
            undecided_len: 0,
            released: VecDeque::new(),
            declared_left: declared,
            trailers: None,
            ended: false,
            blocked: Arc::default(),
        }
    }

    /// Takes in `chunk`, which the tap let through, and releases what the tap no longer
    /// calls undecided, unless the declared length is complete.
    fn judged(&mut self, chunk: Bytes, tap: &dyn BodyTap) {
        let len = chunk.len();
        self.undecided_len += len;
        self.undecided.push_back(chunk);
        if let Some(left) = self.declared_left.as_mut() {
            *left = left.saturating_sub(u64::try_from(len).unwrap_or(u64::MAX));
            if *left == 0 {
                return;
            }
        }
        let keep = tap.undecided_tail().unwrap_or(len);
        let mut free = self.undecided_len.saturating_sub(keep);
        while free > 0
            && let Some(front) = self.undecided.front_mut()
        {
            let part = if front.len() <= free {
                self.undecided.pop_front().unwrap_or_default()
            } else {
                front.split_to(free)
            };
            free -= part.len();
            self.undecided_len -= part.len();
            self.released.push_back(part);
        }
    }

    /// The next frame that may go, if any.
    fn next_released(&mut self) -> Option<Frame<Bytes>> {
        if let Some(data) = self.released.pop_front() {
            return Some(Frame::data(data));
        }
        if self.ended && self.pending.is_none() {
            return self.trailers.take().map(Frame::trailers);
        }
        None
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
            if let Some(frame) = this.next_released() {
                return Poll::Ready(Some(Ok(frame)));
            }
            if let Some(pending) = this.pending.as_mut() {
                let (tap, verdict) = match pending.as_mut().poll(cx) {
                    Poll::Ready(done) => done,
                    Poll::Pending => return Poll::Pending,
                };
                this.pending = None;
                if let TapVerdict::Block(reason) = verdict {
                    this.ended = true;
                    this.judging = None;
                    this.undecided.clear();
                    this.trailers = None;
                    let _ = this.blocked.set(reason.clone());
                    return Poll::Ready(Some(Err(Box::new(BodyBlocked(reason)))));
                }
                match this.judging.take() {
                    Some(chunk) => this.judged(chunk, tap.as_ref()),
                    // The end is let through, and with it everything still held.
                    None => {
                        this.undecided_len = 0;
                        this.released.extend(this.undecided.drain(..));
                    }
                }
                this.tap = Some(tap);
                continue;
            }
            if this.ended {
                return Poll::Ready(None);
            }
            let frame = match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => Some(frame),
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => None,
            };
            // The tap is here whenever no verdict is pending.
            let Some(mut tap) = this.tap.take() else {
                return Poll::Ready(None);
            };
            this.pending = Some(match frame.map(Frame::into_data) {
                Some(Ok(chunk)) => {
                    this.judging = Some(chunk.clone());
                    Box::pin(async move {
                        let verdict = tap.on_chunk(&chunk).await;
                        (tap, verdict)
                    })
                }
                // Trailers (or a frame of another kind), or none: the body is over;
                // judge its end first.
                Some(Err(frame)) => {
                    this.trailers = frame.into_trailers().ok();
                    this.ended = true;
                    end_verdict(tap)
                }
                None => {
                    this.ended = true;
                    end_verdict(tap)
                }
            });
        }
    }

    /// The inner body's, with the bytes held here.
    fn size_hint(&self) -> SizeHint {
        let held = self.undecided_len
            + self.released.iter().map(Bytes::len).sum::<usize>()
            + self.judging.as_ref().map_or(0, Bytes::len);
        let held = u64::try_from(held).unwrap_or(u64::MAX);
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(held));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(held));
        }
        hint
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
    use crate::http::stream_search::StreamSearch;
    use futures_util::{FutureExt, StreamExt};
    use http_body_util::{BodyExt, StreamBody};

    /// Blocks at a needle, which may be split over chunks; `window` says how far back
    /// it looks (none: the default).
    struct Needle(StreamSearch, Option<usize>);

    #[async_trait]
    impl BodyTap for Needle {
        async fn on_chunk(&mut self, chunk: &Bytes) -> TapVerdict {
            if self.0.found_in(chunk) {
                TapVerdict::Block("found the needle".into())
            } else {
                TapVerdict::Continue
            }
        }

        fn undecided_tail(&self) -> Option<usize> {
            self.1
        }
    }

    fn needle(text: &'static str, window: bool) -> Box<dyn BodyTap> {
        let search = StreamSearch::new(text);
        let window = window.then(|| search.undecided());
        Box::new(Needle(search, window))
    }

    /// Blocks at the end.
    struct AtEnd;

    #[async_trait]
    impl BodyTap for AtEnd {
        async fn on_chunk(&mut self, _chunk: &Bytes) -> TapVerdict {
            TapVerdict::Continue
        }
        async fn on_end(&mut self) -> TapVerdict {
            TapVerdict::Block("judged at the end".into())
        }
        fn undecided_tail(&self) -> Option<usize> {
            Some(0)
        }
    }

    /// A body of `chunks`, then trailers if given; with `stalls`, it then never ends.
    fn body(chunks: &[&'static str], trailers: Option<HeaderMap>, stalls: bool) -> HttpBody {
        let mut frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        frames.extend(trailers.map(|t| Ok(Frame::trailers(t))));
        let frames = futures_util::stream::iter(frames);
        if stalls {
            super::super::body::boxed(StreamBody::new(
                frames.chain(futures_util::stream::pending()),
            ))
        } else {
            super::super::body::boxed(StreamBody::new(frames))
        }
    }

    /// The next frame's data, if it is ready now.
    fn next_data(tapped: &mut TappedBody) -> Option<Bytes> {
        let frame = tapped.frame().now_or_never()?;
        Some(frame.unwrap().unwrap().into_data().unwrap())
    }

    #[tokio::test]
    async fn judged_chunks_go_on_at_once_but_for_the_undecided_tail() {
        // Without a declared length, a judged chunk does not wait for the next one: all
        // but the last 3 bytes (a 4-byte needle's) go on while the body stalls.
        let mut tapped = TappedBody::new(body(&["abcdef"], None, true), needle("EVIL", true), None);
        assert_eq!(next_data(&mut tapped).unwrap(), "abc");
        assert!(
            tapped.frame().now_or_never().is_none(),
            "def waits for the next verdict"
        );

        // A needle split over two chunks: none of its bytes go on.
        let mut tapped = TappedBody::new(
            body(&["xxEV", "ILyy", "never"], None, false),
            needle("EVIL", true),
            None,
        );
        assert_eq!(next_data(&mut tapped).unwrap(), "x");
        let err = tapped.frame().await.unwrap().unwrap_err();
        assert_eq!(err.to_string(), "body blocked: found the needle");
        assert!(tapped.frame().await.is_none());

        // Clean, the body passes whole, in order.
        let clean = TappedBody::new(
            body(&["ab", "c", "def"], None, false),
            needle("EVIL", true),
            None,
        );
        assert_eq!(clean.collect().await.unwrap().to_bytes(), "abcdef");
    }

    #[tokio::test]
    async fn by_default_a_chunk_waits_for_the_next_verdict() {
        let mut tapped = TappedBody::new(body(&["abc"], None, true), needle("EVIL", false), None);
        assert!(
            tapped.frame().now_or_never().is_none(),
            "abc waits for the next chunk"
        );

        // Judged, the next chunk lets the one before go, and waits in turn.
        let mut tapped = TappedBody::new(
            body(&["abc", "defg"], None, true),
            needle("EVIL", false),
            None,
        );
        assert_eq!(next_data(&mut tapped).unwrap(), "abc");
        assert!(
            tapped.frame().now_or_never().is_none(),
            "defg waits for the next chunk"
        );

        // "abc" waits for the verdict on the next chunk, which blocks: nothing passes.
        let mut tapped = TappedBody::new(
            body(&["abc", "xEVILx", "never"], None, false),
            needle("EVIL", false),
            None,
        );
        let err = tapped.frame().await.unwrap().unwrap_err();
        assert_eq!(err.to_string(), "body blocked: found the needle");
        assert!(tapped.frame().await.is_none());
    }

    #[tokio::test]
    async fn the_declared_length_completes_only_after_the_verdict_on_the_end() {
        // The chunk that completes the declared 6 bytes waits for the end's verdict,
        // which blocks: the peer never has all 6.
        let mut tapped =
            TappedBody::new(body(&["abc", "def"], None, false), Box::new(AtEnd), Some(6));
        assert_eq!(next_data(&mut tapped).unwrap(), "abc");
        assert!(tapped.frame().await.unwrap().is_err());
        assert!(tapped.frame().await.is_none());

        // Trailers wait for it as well, and go last.
        let mut trailers = HeaderMap::new();
        trailers.insert("x-sum", http::HeaderValue::from_static("1"));
        let mut tapped = TappedBody::new(
            body(&["one", "two"], Some(trailers), false),
            Box::new(AtEnd),
            None,
        );
        assert_eq!(next_data(&mut tapped).unwrap(), "one");
        assert_eq!(next_data(&mut tapped).unwrap(), "two");
        assert!(
            tapped.frame().await.unwrap().is_err(),
            "blocked before the trailers"
        );
        assert!(tapped.frame().await.is_none());

        let mut trailers = HeaderMap::new();
        trailers.insert("x-sum", http::HeaderValue::from_static("1"));
        let clean = TappedBody::new(
            body(&["abc", "def"], Some(trailers), false),
            needle("EVIL", true),
            Some(6),
        );
        let collected = clean.collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["x-sum"], "1");
        assert_eq!(collected.to_bytes(), "abcdef");
    }
}
