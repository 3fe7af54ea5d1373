//! HTTP/1.1 requests without a body, read and answered without hyper in the
//! connection's own task: the head is parsed with httparse, the pipeline answers, and
//! the answer's head leaves with its first body bytes in one write. hyper's server
//! would run a dispatcher with its own buffers and a body channel per request. The
//! first request this path does not take (a body, an upgrade, `Expect`, `TE`, a
//! CONNECT, another HTTP version, or a head it cannot read) hands the connection to
//! hyper with every byte read and not yet answered; hyper serves it from then on, and
//! answers a malformed head as it always does.

use super::body::empty;
use super::h1_fields::{request_head, section_length, write_date, write_field, write_status_line};
use super::headers::{ends_with_token, has_token, length_value};
use super::pipeline::Handler;
use super::server::Lingering;
use crate::app::OxyExt;
use crate::hooks::HttpBody;
use crate::spare_buffers::RECORD_BUFFERS;
use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, EXPECT, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::Body;
use std::cell::RefCell;
use std::io::{self, Write as _};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Header fields a request taken here may have (hyper's limit too: more go to hyper,
/// which answers 431).
const MAX_HEADERS: usize = 100;
/// Room made for each read.
const READ_SIZE: usize = 8 * 1024;
/// The most fields a header map kept for the next request may have room for.
const KEPT_MAP_FIELDS: usize = 64;
/// The most emptied header maps a thread keeps.
const KEPT_MAPS: usize = 16;
/// Body bytes gathered behind a head (or earlier chunks) into one write; a larger
/// piece is written on its own.
const GATHER: usize = 16 * 1024;

thread_local! {
    /// Header maps of answers whose heads were written, emptied, for the next requests
    /// read on this thread: the one used last is taken first, while it is in the cache.
    static SPARE_MAPS: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// An emptied header map of this thread's, or a new one.
fn spare_map() -> HeaderMap {
    SPARE_MAPS
        .try_with(|maps| maps.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Keeps `map`, emptied, for [`spare_map`] on this thread, unless it is large or the
/// thread keeps enough.
fn give_back_map(mut map: HeaderMap) {
    if map.capacity() > KEPT_MAP_FIELDS {
        return;
    }
    map.clear();
    // `try_with`: a thread being torn down frees the map instead.
    let _ = SPARE_MAPS.try_with(|maps| {
        let mut maps = maps.borrow_mut();
        if maps.len() < KEPT_MAPS {
            maps.push(map);
        }
    });
}

/// How serving a connection here ended.
pub(super) enum Served {
    /// The connection is done: the client closed it, an answer was its last, or
    /// reading or writing it failed.
    Ended,
    /// hyper serves the connection from here on, starting with these bytes, read and
    /// not yet answered.
    HandOver(Lingering, Bytes),
}

/// Serves the requests on `stream` (HTTP/1.1, `read` its first bytes) this path takes,
/// until the connection ends or a request it does not take arrives (see the module's
/// documentation). A head longer than `max_head` goes to hyper. Once `closing` is set
/// (a graceful close), a connection waiting for its next request ends, and the answer
/// being written is the last; so is the answer written while the drain is stopping.
pub(super) async fn serve<App: OxyExt>(
    handler: &Arc<Handler<App>>,
    mut stream: Lingering,
    mut read: BytesMut,
    max_head: usize,
    closing: &AtomicBool,
) -> Served {
    loop {
        let length = loop {
            if let Some(length) = section_length(&read) {
                break length;
            }
            if read.len() >= max_head {
                return Served::HandOver(stream, read.freeze());
            }
            read.reserve(READ_SIZE);
            let filled = std::future::poll_fn(|cx| {
                if read.is_empty() && closing.load(Ordering::Acquire) {
                    return Poll::Ready(Ok(0));
                }
                tokio_util::io::poll_read_buf(Pin::new(&mut stream), cx, &mut read)
            })
            .await;
            match filled {
                Ok(0) if read.is_empty() => return Served::Ended,
                Ok(0) => {
                    tracing::debug!("the client closed the connection within a request head");
                    return Served::Ended;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "reading the client connection failed");
                    return Served::Ended;
                }
            }
        };
        if length > max_head {
            return Served::HandOver(stream, read.freeze());
        }
        // Taken off first: the request's target and header values share its bytes.
        let head = read.split_to(length).freeze();
        let Some((request, keep_alive)) = request(&head, spare_map()) else {
            let mut unanswered = BytesMut::with_capacity(head.len() + read.len());
            unanswered.extend_from_slice(&head);
            unanswered.extend_from_slice(&read);
            return Served::HandOver(stream, unanswered.freeze());
        };
        let open = handler.streams.open();
        let head_only = request.method() == Method::HEAD;
        let response = handler.clone().handle(request).await;
        let last = !keep_alive || closing.load(Ordering::Acquire) || handler.drain.is_stopping();
        let written = respond(&mut stream, response, head_only, last).await;
        drop(open);
        match written {
            Ok(true) => {}
            Ok(false) => return Served::Ended,
            Err(e) => {
                tracing::debug!(error = %e, "the answer was not written whole");
                return Served::Ended;
            }
        }
    }
}

/// The request whose whole head is `head`, its fields in `map` (emptied), and whether
/// the client keeps the connection after it; `None` for one this path does not take
/// (see the module's documentation).
fn request(head: &Bytes, map: HeaderMap) -> Option<(Request<HttpBody>, bool)> {
    let (parts, length) = request_head::<MAX_HEADERS>(head, map, |name| {
        [CONTENT_LENGTH, TRANSFER_ENCODING, EXPECT, UPGRADE, TE].contains(name)
    })?;
    // The whole head, and nothing but it, as `section_length` found it.
    if length != head.len() || parts.method == Method::CONNECT {
        return None;
    }
    let keep_alive = !parts
        .headers
        .get_all(CONNECTION)
        .iter()
        .any(|value| has_token(value.as_bytes(), b"close"));
    Some((Request::from_parts(parts, empty()), keep_alive))
}

/// How an answer's body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// It has none (an answer to HEAD, a 204 or a 304).
    None,
    /// By its length: the bytes still due.
    Length(u64),
    /// In chunks.
    Chunked,
}

/// Writes `response` (to a HEAD request when `head_only`) on `stream`; `last` when the
/// connection closes after it. `Ok(true)` when the connection may take another request.
/// What is written is gathered in a buffer of the thread's spares (`RECORD_BUFFERS`),
/// taken for this answer only (and given back while its body waits), and its header
/// map, once the head is written, goes to the thread's spare maps: the next answer on
/// this thread, on whichever connection, uses both again while they are in the cache.
async fn respond(
    stream: &mut (impl AsyncWrite + Unpin),
    response: Response<HttpBody>,
    head_only: bool,
    last: bool,
) -> io::Result<bool> {
    let mut out = RECORD_BUFFERS.take();
    out.clear();
    let written = respond_with(stream, &mut out, response, head_only, last).await;
    RECORD_BUFFERS.give_back(out);
    written
}

/// [`respond`] with `out` to gather in.
async fn respond_with(
    stream: &mut (impl AsyncWrite + Unpin),
    out: &mut Vec<u8>,
    response: Response<HttpBody>,
    head_only: bool,
    mut last: bool,
) -> io::Result<bool> {
    let (mut parts, mut body) = response.into_parts();
    if parts.status.is_informational() {
        // An interim answer cannot be the final one (nor a 101 without an upgrade asked
        // for); the client is told the server failed, as hyper tells it.
        tracing::warn!(status = %parts.status, "an interim status as a request's answer");
        parts.status = StatusCode::INTERNAL_SERVER_ERROR;
        parts.headers.clear();
        parts.extensions.clear();
        body = empty();
        last = true;
    }
    let mut framing = write_head(out, &parts, &body, head_only, &mut last);
    give_back_map(parts.headers);
    loop {
        if framing == Framing::None {
            break;
        }
        // Frames ready now join the gathered bytes; before waiting for more, what is
        // gathered is written.
        let ready = std::future::poll_fn(|cx| {
            Poll::Ready(match Pin::new(&mut body).poll_frame(cx) {
                Poll::Ready(frame) => Some(frame),
                Poll::Pending => None,
            })
        })
        .await;
        let frame = match ready {
            Some(frame) => frame,
            None => {
                write_out(stream, out).await?;
                // The buffer goes back to the thread while the body waits (a stream
                // may wait for minutes), and one is taken again when it goes on.
                RECORD_BUFFERS.give_back(std::mem::take(out));
                let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
                *out = RECORD_BUFFERS.take();
                out.clear();
                frame
            }
        };
        match frame {
            Some(Ok(frame)) => {
                // Trailers are not sent: the request did not ask for them (`TE`).
                if let Ok(data) = frame.into_data() {
                    write_data(stream, out, &mut framing, data).await?;
                }
            }
            Some(Err(e)) => return Err(io::Error::other(e)),
            None => {
                match framing {
                    Framing::Length(0) | Framing::None => {}
                    Framing::Length(due) => {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("the body ended {due} bytes short of its length"),
                        ));
                    }
                    Framing::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
                }
                break;
            }
        }
    }
    write_out(stream, out).await?;
    stream.flush().await?;
    Ok(!last)
}

/// Writes what `out` gathered and empties it.
async fn write_out(stream: &mut (impl AsyncWrite + Unpin), out: &mut Vec<u8>) -> io::Result<()> {
    if !out.is_empty() {
        stream.write_all(out).await?;
        out.clear();
    }
    Ok(())
}

/// Adds `data` to the body being written as `framing` says: gathered behind what
/// `out` holds when it fits, else written after it on its own.
async fn write_data(
    stream: &mut (impl AsyncWrite + Unpin),
    out: &mut Vec<u8>,
    framing: &mut Framing,
    data: Bytes,
) -> io::Result<()> {
    if data.is_empty() {
        // An empty chunk would end a chunked body.
        return Ok(());
    }
    match framing {
        Framing::None => return Ok(()),
        Framing::Length(due) => {
            let length = data.len() as u64;
            if length > *due {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the body is longer than its length",
                ));
            }
            *due -= length;
        }
        Framing::Chunked => write!(out, "{:x}\r\n", data.len())?,
    }
    if out.len() + data.len() <= GATHER {
        out.extend_from_slice(&data);
    } else {
        write_out(stream, out).await?;
        stream.write_all(&data).await?;
    }
    if *framing == Framing::Chunked {
        out.extend_from_slice(b"\r\n");
    }
    Ok(())
}

/// Writes the head of an answer with `parts` and `body` (to a HEAD request when
/// `head_only`) into `out`, as hyper's server would, and says how its body is
/// delimited. Sets `last` when the answer says the connection closes; says so
/// (`Connection: close`) when `last` was set already.
fn write_head(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    body: &HttpBody,
    head_only: bool,
    last: &mut bool,
) -> Framing {
    let status = parts.status;
    write_status_line(out, status, parts.extensions.get());
    let has_body =
        !head_only && status != StatusCode::NO_CONTENT && status != StatusCode::NOT_MODIFIED;
    let mut says_close = false;
    let mut chunked = None;
    let mut dated = false;
    // The first `Content-Length`'s value, if it is a length.
    let mut declared = None;
    for (name, value) in &parts.headers {
        if name == CONTENT_LENGTH {
            // Written below, from the length the body is framed by.
            declared.get_or_insert_with(|| length_value(value));
            continue;
        }
        if name == TRANSFER_ENCODING {
            if !has_body {
                continue;
            }
            // The last coding must be `chunked`; it is added when it is not.
            chunked = Some(ends_with_token(value.as_bytes(), b"chunked"));
        }
        says_close |= name == CONNECTION && has_token(value.as_bytes(), b"close");
        dated |= name == DATE;
        write_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    let declared = declared.flatten();
    let framing = if !has_body {
        // An answer to HEAD says the length a GET would have had.
        if head_only && let Some(length) = declared {
            write_length(out, length);
        }
        Framing::None
    } else if let Some(chunked) = chunked {
        if !chunked {
            write_field(out, b"transfer-encoding", b"chunked");
        }
        Framing::Chunked
    } else {
        match declared.or_else(|| body.size_hint().exact()) {
            Some(length) => {
                write_length(out, length);
                Framing::Length(length)
            }
            None => {
                write_field(out, b"transfer-encoding", b"chunked");
                Framing::Chunked
            }
        }
    };
    if *last && !says_close {
        write_field(out, b"connection", b"close");
    }
    *last |= says_close;
    if !dated {
        write_date(out);
    }
    out.extend_from_slice(b"\r\n");
    framing
}

fn write_length(out: &mut Vec<u8>, length: u64) {
    write_field(
        out,
        b"content-length",
        itoa::Buffer::new().format(length).as_bytes(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::body::{boxed, full};
    use http::{HeaderValue, Version};
    use http_body::Frame;

    fn parsed(head: &str) -> Option<(Request<HttpBody>, bool)> {
        request(&Bytes::copy_from_slice(head.as_bytes()), HeaderMap::new())
    }

    #[test]
    fn a_request_without_a_body_is_taken_with_its_fields() {
        let (request, keep_alive) =
            parsed("GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nX-Two: 2\r\nX-Two: 3\r\n\r\n")
                .expect("taken");
        assert!(keep_alive);
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri(), "/a?b=1");
        assert_eq!(request.version(), Version::HTTP_11);
        assert_eq!(request.headers()["host"], "example.com");
        assert_eq!(request.headers().get_all("x-two").iter().count(), 2);
        assert!(request.body().is_end_stream());
        let (absolute, _) = parsed("HEAD http://example.com/x HTTP/1.1\r\n\r\n").expect("taken");
        assert_eq!(absolute.uri().host(), Some("example.com"));
        let (_, keep_alive) =
            parsed("GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n").expect("taken");
        assert!(!keep_alive);
    }

    #[test]
    fn a_body_an_upgrade_or_another_version_goes_to_hyper() {
        for head in [
            "POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "PUT / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "GET / HTTP/1.1\r\nTE: trailers\r\n\r\n",
            "CONNECT example.com:443 HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.0\r\n\r\n",
            // Malformed: hyper answers 400.
            "GET /a b HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            // An empty line before a request is a section of its own here.
            "\r\n",
        ] {
            assert!(parsed(head).is_none(), "{head:?}");
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert!(parsed(&format!("GET / HTTP/1.1\r\n{many}\r\n")).is_none());
    }

    /// What `respond` writes for `response`, and whether the connection stays.
    async fn written(
        response: Response<HttpBody>,
        head_only: bool,
        last: bool,
    ) -> (String, io::Result<bool>) {
        let mut wire = Vec::new();
        let kept = respond(&mut wire, response, head_only, last).await;
        (String::from_utf8(wire).expect("ASCII"), kept)
    }

    /// `text` without its `date` line, which must be there.
    fn dated(text: &str) -> String {
        let at = text.find("date: ").expect("a date");
        let end = at + text[at..].find("\r\n").expect("a line") + 2;
        format!("{}{}", &text[..at], &text[end..])
    }

    #[tokio::test]
    async fn a_body_of_known_length_follows_its_head_in_one_write() {
        let mut response = Response::new(full("hello"));
        response
            .headers_mut()
            .insert("x-a", HeaderValue::from_static("1"));
        let (text, kept) = written(response, false, false).await;
        assert_eq!(
            dated(&text),
            "HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 5\r\n\r\nhello"
        );
        assert!(kept.expect("written"));
    }

    /// A body of `frames`, of unknown length, that waits for each.
    fn streamed(frames: Vec<Result<Frame<Bytes>, io::Error>>) -> HttpBody {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        for frame in frames {
            sender.send(frame).expect("open");
        }
        let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
            tokio::task::yield_now().await;
            receiver.recv().await.map(|frame| (frame, receiver))
        });
        boxed(http_body_util::StreamBody::new(stream))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_answers_header_map_is_emptied_for_the_next_request_on_its_thread() {
        while SPARE_MAPS.with_borrow_mut(Vec::pop).is_some() {}
        let mut response = Response::new(empty());
        response
            .headers_mut()
            .insert("x-a", HeaderValue::from_static("1"));
        let (_, kept) = written(response, false, false).await;
        assert!(kept.expect("written"));
        let map = spare_map();
        assert!(map.is_empty() && map.capacity() > 0, "{map:?}");
        assert_eq!(SPARE_MAPS.with_borrow(Vec::len), 0, "taken");
    }

    #[tokio::test]
    async fn a_body_of_unknown_length_is_chunked_without_its_trailers() {
        let frames = ["abc", "", "0123456789abcdef"]
            .into_iter()
            .map(|piece| Ok(Frame::data(Bytes::from(piece))))
            .chain([Ok(Frame::trailers(http::HeaderMap::new()))])
            .collect();
        let (text, kept) = written(Response::new(streamed(frames)), false, false).await;
        assert_eq!(
            dated(&text),
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n"
        );
        assert!(kept.expect("written"));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn no_buffer_is_held_while_the_body_waits() {
        while RECORD_BUFFERS.spare() > 0 {
            drop(RECORD_BUFFERS.take());
        }
        let (go_on, wait) = tokio::sync::oneshot::channel::<()>();
        let frames = futures_util::stream::unfold(Some(wait), |wait| async move {
            let wait = wait?;
            let _ = wait.await;
            Some((Ok::<_, io::Error>(Frame::data(Bytes::from("late"))), None))
        });
        let body = boxed(http_body_util::StreamBody::new(frames));
        let mut wire = Vec::new();
        let kept = {
            let respond = respond(&mut wire, Response::new(body), false, false);
            tokio::pin!(respond);
            assert!(futures_util::poll!(respond.as_mut()).is_pending());
            assert_eq!(RECORD_BUFFERS.spare(), 1, "given back while the body waits");
            go_on.send(()).expect("waiting");
            respond.await
        };
        assert!(kept.expect("written"));
        let text = String::from_utf8(wire).expect("ASCII");
        assert!(
            dated(&text).ends_with("\r\n\r\n4\r\nlate\r\n0\r\n\r\n"),
            "{text}"
        );
        assert_eq!(RECORD_BUFFERS.spare(), 1, "given back at the end");
    }

    #[tokio::test]
    async fn a_declared_length_frames_the_body_and_is_held_to() {
        let mut response = Response::new(streamed(vec![Ok(Frame::data(Bytes::from("hey")))]));
        response
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from_static("3"));
        let (text, kept) = written(response, false, false).await;
        assert_eq!(
            dated(&text),
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nhey"
        );
        assert!(kept.expect("written"));

        for declared in ["2", "4"] {
            let mut response = Response::new(streamed(vec![Ok(Frame::data(Bytes::from("hey")))]));
            response
                .headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from_static(declared));
            let (_, kept) = written(response, false, false).await;
            assert!(kept.is_err(), "a body of 3 bytes declared as {declared}");
        }
        let failing = streamed(vec![Err(io::Error::other("upstream reset"))]);
        assert!(
            written(Response::new(failing), false, false)
                .await
                .1
                .is_err()
        );
    }

    #[tokio::test]
    async fn head_204_and_304_answers_have_no_body() {
        let mut response = Response::new(empty());
        response
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from_static("1024"));
        let (text, kept) = written(response, true, false).await;
        assert_eq!(
            dated(&text),
            "HTTP/1.1 200 OK\r\ncontent-length: 1024\r\n\r\n"
        );
        assert!(kept.expect("written"));

        for status in [StatusCode::NO_CONTENT, StatusCode::NOT_MODIFIED] {
            let mut response = Response::new(full("ignored"));
            *response.status_mut() = status;
            response
                .headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from_static("7"));
            let (text, _) = written(response, false, false).await;
            assert_eq!(dated(&text), format!("HTTP/1.1 {status}\r\n\r\n"));
        }

        let (text, _) = written(Response::new(empty()), false, false).await;
        assert_eq!(dated(&text), "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    }

    #[tokio::test]
    async fn the_last_answer_says_so_once() {
        let (text, kept) = written(Response::new(empty()), false, true).await;
        assert_eq!(
            dated(&text),
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
        assert!(!kept.expect("written"));

        for last in [false, true] {
            let mut response = Response::new(empty());
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            let (text, kept) = written(response, false, last).await;
            assert_eq!(text.matches("connection").count(), 1, "{text}");
            assert!(
                !kept.expect("written"),
                "an answer that says close is the last"
            );
        }
    }

    #[tokio::test]
    async fn an_interim_status_becomes_a_500_and_a_reason_of_its_own_is_kept() {
        let mut response = Response::new(full("x"));
        *response.status_mut() = StatusCode::CONTINUE;
        let (text, kept) = written(response, false, false).await;
        assert!(
            text.starts_with("HTTP/1.1 500 Internal Server Error\r\n"),
            "{text}"
        );
        assert!(!kept.expect("written"));

        let mut response = Response::new(empty());
        *response.status_mut() = StatusCode::NOT_FOUND;
        let reason = hyper::ext::ReasonPhrase::from_static(b"Nowhere");
        response.extensions_mut().insert(reason);
        let (text, _) = written(response, false, false).await;
        assert!(text.starts_with("HTTP/1.1 404 Nowhere\r\n"), "{text}");
    }

    #[tokio::test]
    async fn a_transfer_coding_of_the_answers_own_ends_in_chunked() {
        let mut response = Response::new(streamed(vec![Ok(Frame::data(Bytes::from("z")))]));
        response
            .headers_mut()
            .insert(TRANSFER_ENCODING, HeaderValue::from_static("gzip"));
        response
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from_static("1"));
        let (text, _) = written(response, false, false).await;
        assert_eq!(
            dated(&text),
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn a_large_piece_is_written_on_its_own_after_the_head() {
        let large = Bytes::from(vec![b'x'; GATHER + 1]);
        let (text, _) = written(Response::new(full(large.clone())), false, false).await;
        assert!(dated(&text).ends_with(std::str::from_utf8(&large).expect("ASCII")));
    }
}
