//! An HTTP/1.1 exchange with an upstream for a request without a body, written and read
//! without hyper in the request's own task: the head goes out in one write, the
//! response head is parsed with httparse, and the response body ([`UpstreamBody`])
//! reads the connection itself, then gives it back to the pool. hyper's client would
//! run the connection as a task of its own, fed through a channel, with the body
//! through another. Requests with a body, and upgrades, go through hyper's client on
//! the same pooled connections (`http/client.rs`).

use super::client::UpstreamStream;
use super::h1_fields::{field_map, section_length, write_fields};
use super::headers::{ends_with_token, has_token};
use super::upstream_pool::PoolReturn;
use crate::hooks::HttpBody;
use crate::tls::client::UpstreamTlsFacts;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Header fields a response head (or a chunked body's trailer section) may have, as
/// hyper allows.
const MAX_HEADERS: usize = 100;
/// The largest response head; a longer one is refused (502).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The largest chunk-size line (extensions included) or trailer section.
const MAX_CHUNK_LINE_BYTES: usize = 4 * 1024;
/// Room made for each read.
const READ_SIZE: usize = 8 * 1024;

/// Why an exchange without hyper failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExchangeError {
    /// The upstream closed the connection, or reset it, before a byte of its answer:
    /// a pooled connection it closed while idle, when the request went out on one.
    #[error("the upstream closed the connection before it answered")]
    ClosedBeforeAnswer(#[source] Option<io::Error>),
    /// Reading or writing the connection failed.
    #[error("the upstream connection failed: {0}")]
    Io(#[from] io::Error),
    /// The upstream's answer is not HTTP/1.1 this client takes.
    #[error("the upstream's answer is malformed: {0}")]
    Malformed(&'static str),
}

/// Whether `request` can be exchanged here: its body is over before it starts and it
/// asks for no upgrade.
pub(crate) fn fits(request: &Request<HttpBody>) -> bool {
    request.body().is_end_stream() && !request.headers().contains_key(http::header::UPGRADE)
}

/// Whether sending `method` twice does what sending it once does (RFC 9110 §9.2.2), so
/// that a request the upstream closed on before answering may go out again.
pub(crate) fn idempotent(method: &Method) -> bool {
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ]
    .contains(method)
}

/// Sends `request` (see [`fits`]; its `Host` header set) on `io` in origin form, and
/// reads the response head. `buffer` (the connection's, see
/// [`Http1Link::Own`](super::upstream_pool::Http1Link::Own)) holds the request head,
/// then the answer. The response's body reads the rest from `io` (see
/// [`UpstreamBody::returning_to`]).
pub(crate) fn exchange(
    io: UpstreamStream,
    mut buffer: BytesMut,
    facts: Option<Arc<UpstreamTlsFacts>>,
    request: &Request<HttpBody>,
) -> impl Future<Output = Result<Response<UpstreamBody>, ExchangeError>> + Send + use<> {
    // Not the request itself: its body is not `Sync`, so a reference to it held across
    // an `.await` would make the future not `Send`.
    write_request_head(request, &mut buffer);
    exchange_head(io, facts, buffer, request.method() == Method::HEAD)
}

/// [`exchange`] with the request's `head` encoded, `head_only` for a HEAD request.
async fn exchange_head(
    mut io: UpstreamStream,
    facts: Option<Arc<UpstreamTlsFacts>>,
    mut head: BytesMut,
    head_only: bool,
) -> Result<Response<UpstreamBody>, ExchangeError> {
    let written = async {
        io.write_all(&head).await?;
        io.flush().await
    };
    if let Err(e) = written.await {
        let closed = [io::ErrorKind::BrokenPipe, io::ErrorKind::ConnectionReset];
        return Err(if closed.contains(&e.kind()) {
            ExchangeError::ClosedBeforeAnswer(Some(e))
        } else {
            e.into()
        });
    }
    // The head's buffer reads the answer.
    head.clear();
    let mut read = head;
    // Whether anything came back: a 1xx answer leaves nothing in `read`.
    let mut answered = false;
    let ResponseHead {
        mut parts,
        framing,
        reusable,
    } = loop {
        if let Some(head) = response_head(&mut read, head_only)? {
            break head;
        }
        if read.len() >= MAX_HEAD_BYTES {
            return Err(ExchangeError::Malformed("the response head is too large"));
        }
        read.reserve(READ_SIZE);
        match io.read_buf(&mut read).await {
            Ok(0) if !answered => return Err(ExchangeError::ClosedBeforeAnswer(None)),
            Ok(0) => return Err(ExchangeError::Malformed("the response head is cut short")),
            Ok(_) => answered = true,
            Err(e) if !answered && e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(ExchangeError::ClosedBeforeAnswer(Some(e)));
            }
            Err(e) => return Err(e.into()),
        }
    };
    if let Some(facts) = &facts {
        parts.extensions.insert(facts.clone());
    }
    let body = UpstreamBody {
        io: Some(io),
        facts,
        read,
        framing,
        reusable,
        back: None,
    };
    Ok(Response::from_parts(parts, body))
}

/// Writes `request`'s head into the empty `buffer` as HTTP/1.1 in origin form, as
/// hyper's client writes it (`Transfer-Encoding` left out: there is no body to frame),
/// with room made for the answer's first read, which the buffer is once the head is
/// sent. The room is the buffer's own allocation again when nothing else holds it (the
/// last answer on the connection is gone), else a new one.
fn write_request_head(request: &Request<HttpBody>, buffer: &mut BytesMut) {
    let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
    buffer.reserve(READ_SIZE);
    buffer.put_slice(request.method().as_str().as_bytes());
    buffer.put_u8(b' ');
    buffer.put_slice(target.as_bytes());
    buffer.put_slice(b" HTTP/1.1\r\n");
    write_fields(buffer, request.headers(), |name| name == TRANSFER_ENCODING);
    buffer.put_slice(b"\r\n");
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// By `Content-Length` (zero for a body that cannot have one); the bytes still due.
    Length(u64),
    /// By chunks.
    Chunked(Chunk),
    /// By the end of the connection, which then cannot be reused.
    UntilClose,
}

/// Where a chunked body's reading is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// At a chunk-size line.
    Size,
    /// In a chunk's data: the bytes still due.
    Data(u64),
    /// At the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: at the trailer section.
    Trailers,
}

/// A response head read by [`response_head`].
struct ResponseHead {
    parts: http::response::Parts,
    /// How its body is delimited.
    framing: Framing,
    /// Whether the connection may take another request after its body.
    reusable: bool,
}

/// The response head at the start of `read`, if it is all there: taken off `read`
/// (informational answers other than 101 skipped). `head_only` for an answer to HEAD.
fn response_head(
    read: &mut BytesMut,
    head_only: bool,
) -> Result<Option<ResponseHead>, ExchangeError> {
    loop {
        let Some(length) = section_length(read) else {
            return Ok(None);
        };
        if length > MAX_HEAD_BYTES {
            return Err(ExchangeError::Malformed("the response head is too large"));
        }
        // Taken off first: the header values share its bytes.
        let head = read.split_to(length).freeze();
        let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            &head,
            &mut fields,
        );
        match parsed {
            Ok(httparse::Status::Complete(_)) => {}
            Err(httparse::Error::TooManyHeaders) => {
                return Err(ExchangeError::Malformed("too many header fields"));
            }
            Ok(httparse::Status::Partial) | Err(_) => {
                return Err(ExchangeError::Malformed("not an HTTP/1.x response head"));
            }
        }
        let code = response.code.unwrap_or_default();
        let status = StatusCode::from_u16(code)
            .map_err(|_| ExchangeError::Malformed("the status code is out of range"))?;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(ExchangeError::Malformed("101 to a request for no upgrade"));
        }
        if status.is_informational() {
            continue;
        }
        let mut headers = field_map(&head, response.headers, HeaderMap::new(), |_| false)
            .ok_or(ExchangeError::Malformed("a header field is invalid"))?;
        let (mut parts, ()) = Response::new(()).into_parts();
        parts.status = status;
        parts.version = match response.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        if let Some(reason) = response.reason
            && Some(reason) != status.canonical_reason()
            && let Ok(reason) =
                hyper::ext::ReasonPhrase::try_from(head.slice_ref(reason.as_bytes()))
        {
            parts.extensions.insert(reason);
        }
        // Both, from an upstream, may be an attempt at response splitting (RFC 9112
        // §6.3): the body is read by its chunks, and the connection is not reused.
        let both_lengths =
            headers.contains_key(TRANSFER_ENCODING) && headers.contains_key(CONTENT_LENGTH);
        let framing = framing(&mut headers, status, head_only)?;
        let reusable = parts.version == Version::HTTP_11
            && !both_lengths
            && framing != Framing::UntilClose
            && !headers
                .get_all(CONNECTION)
                .iter()
                .any(|v| has_token(v.as_bytes(), b"close"));
        parts.headers = headers;
        return Ok(Some(ResponseHead {
            parts,
            framing,
            reusable,
        }));
    }
}

/// How the body of a `status` answer with `headers` is delimited (RFC 9112 §6.3). A
/// `Content-Length` beside `Transfer-Encoding` is removed: the latter wins, and the
/// former must not reach the client.
fn framing(
    headers: &mut HeaderMap,
    status: StatusCode,
    head_only: bool,
) -> Result<Framing, ExchangeError> {
    if head_only || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(Framing::Length(0));
    }
    if let Some(last) = headers.get_all(TRANSFER_ENCODING).iter().next_back() {
        let chunked = ends_with_token(last.as_bytes(), b"chunked");
        headers.remove(CONTENT_LENGTH);
        return Ok(if chunked {
            Framing::Chunked(Chunk::Size)
        } else {
            Framing::UntilClose
        });
    }
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for item in value.as_bytes().split(|&b| b == b',') {
            let item = item.trim_ascii();
            let parsed = (!item.is_empty() && item.iter().all(u8::is_ascii_digit))
                .then(|| std::str::from_utf8(item).ok()?.parse::<u64>().ok())
                .flatten();
            match (parsed, length) {
                (Some(n), None) => length = Some(n),
                (Some(n), Some(before)) if n == before => {}
                _ => return Err(ExchangeError::Malformed("the Content-Length is invalid")),
            }
        }
    }
    Ok(length.map_or(Framing::UntilClose, Framing::Length))
}

/// The body of a response read by [`exchange`]: it reads the connection as it is
/// polled, and gives the connection back to the pool when it ends.
pub(crate) struct UpstreamBody {
    /// The connection, until the body ends.
    io: Option<UpstreamStream>,
    facts: Option<Arc<UpstreamTlsFacts>>,
    /// Bytes read and not yet given out.
    read: BytesMut,
    framing: Framing,
    /// Whether the connection may take another request once the body ends.
    reusable: bool,
    back: Option<PoolReturn>,
}

impl UpstreamBody {
    /// The body as the pipeline's, which hands its connection to `back` when it ends
    /// and the connection may take another request (`None`: it closes then); a body
    /// dropped before its end closes the connection.
    pub(crate) fn returning_to(mut self, back: Option<PoolReturn>) -> HttpBody {
        self.back = back;
        // A body that is over already (204, HEAD, an empty one) is never polled.
        if self.is_end_stream() {
            self.end();
        }
        http_body_util::BodyExt::boxed_unsync(self)
    }

    /// The body ended: the connection goes back to the pool if it may take another
    /// request (and the upstream sent nothing past the answer), else it closes.
    fn end(&mut self) {
        let io = self.io.take();
        if let (Some(io), Some(back)) = (io, self.back.take())
            && self.reusable
            && self.read.is_empty()
        {
            back.keep(io, std::mem::take(&mut self.read), self.facts.take());
        }
    }

    /// Reads more of the connection into `read`: `Ready(Ok(false))` at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let Some(io) = &mut self.io else {
            return Poll::Ready(Ok(false));
        };
        if self.read.capacity() - self.read.len() < READ_SIZE / 2 {
            self.read.reserve(READ_SIZE);
        }
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(io),
            cx,
            &mut self.read
        ))?;
        Poll::Ready(Ok(n > 0))
    }

    /// The next frame, or `None` at the body's end; reads the connection as needed.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        loop {
            match self.framing {
                Framing::Length(0) => return Poll::Ready(None),
                Framing::Length(due) if !self.read.is_empty() => {
                    let n =
                        usize::try_from(due).map_or(self.read.len(), |d| d.min(self.read.len()));
                    self.framing = Framing::Length(due - n as u64);
                    let data = self.read.split_to(n).freeze();
                    if self.framing == Framing::Length(0) {
                        self.end();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::UntilClose if !self.read.is_empty() => {
                    return Poll::Ready(Some(Ok(Frame::data(self.read.split().freeze()))));
                }
                Framing::Chunked(_) => match self.next_chunked()? {
                    Chunked::Frame(frame) => return Poll::Ready(Some(Ok(frame))),
                    Chunked::End => return Poll::Ready(None),
                    Chunked::NeedMore => {}
                },
                Framing::Length(_) | Framing::UntilClose => {}
            }
            if !ready!(self.poll_fill(cx))? {
                return match self.framing {
                    Framing::UntilClose => {
                        self.framing = Framing::Length(0);
                        self.io = None;
                        Poll::Ready(None)
                    }
                    _ => Poll::Ready(Some(Err(BodyError::CutShort))),
                };
            }
        }
    }

    /// What the bytes in `read` give of a chunked body, from where it is.
    fn next_chunked(&mut self) -> Result<Chunked, BodyError> {
        loop {
            let Framing::Chunked(chunk) = self.framing else {
                return Ok(Chunked::End);
            };
            match chunk {
                Chunk::Size => match httparse::parse_chunk_size(&self.read) {
                    Ok(httparse::Status::Complete((length, size))) => {
                        self.read.advance(length);
                        self.framing = Framing::Chunked(if size == 0 {
                            Chunk::Trailers
                        } else {
                            Chunk::Data(size)
                        });
                    }
                    Ok(httparse::Status::Partial) if self.read.len() < MAX_CHUNK_LINE_BYTES => {
                        return Ok(Chunked::NeedMore);
                    }
                    _ => return Err(BodyError::Malformed("a chunk-size line is invalid")),
                },
                Chunk::Data(_) if self.read.is_empty() => return Ok(Chunked::NeedMore),
                Chunk::Data(due) => {
                    let n =
                        usize::try_from(due).map_or(self.read.len(), |d| d.min(self.read.len()));
                    let left = due - n as u64;
                    self.framing = Framing::Chunked(if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    });
                    return Ok(Chunked::Frame(Frame::data(self.read.split_to(n).freeze())));
                }
                Chunk::DataEnd if self.read.len() < 2 => return Ok(Chunked::NeedMore),
                Chunk::DataEnd if self.read.starts_with(b"\r\n") => {
                    self.read.advance(2);
                    self.framing = Framing::Chunked(Chunk::Size);
                }
                Chunk::DataEnd => {
                    return Err(BodyError::Malformed(
                        "a chunk's data is not followed by CRLF",
                    ));
                }
                Chunk::Trailers => return self.trailers(),
            }
        }
    }

    /// The trailer section after the last chunk, if it is all there: the body's end,
    /// with a trailers frame when it has fields.
    fn trailers(&mut self) -> Result<Chunked, BodyError> {
        let Some(length) = section_length(&self.read) else {
            if self.read.len() < MAX_CHUNK_LINE_BYTES {
                return Ok(Chunked::NeedMore);
            }
            return Err(BodyError::Malformed("the trailer section is too large"));
        };
        let section = self.read.split_to(length).freeze();
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let Ok(httparse::Status::Complete((_, fields))) =
            httparse::parse_headers(&section, &mut fields)
        else {
            return Err(BodyError::Malformed("the trailer section is invalid"));
        };
        let trailers = field_map(&section, fields, HeaderMap::new(), |_| false)
            .ok_or(BodyError::Malformed("a trailer field is invalid"))?;
        self.framing = Framing::Length(0);
        self.end();
        Ok(if trailers.is_empty() {
            Chunked::End
        } else {
            Chunked::Frame(Frame::trailers(trailers))
        })
    }
}

/// What the bytes read so far give of a chunked body.
enum Chunked {
    /// Nothing yet: more must be read.
    NeedMore,
    /// A frame: data, or the trailers (then the body is over).
    Frame(Frame<Bytes>),
    /// The end, without trailers.
    End,
}

/// Why reading an upstream's response body failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    /// The connection ended before the body did.
    #[error("the upstream closed the connection before the end of the response body")]
    CutShort,
    /// Reading the connection failed.
    #[error("reading the upstream's response body failed: {0}")]
    Io(#[from] io::Error),
    /// The chunked framing is broken.
    #[error("the upstream's response body is malformed: {0}")]
    Malformed(&'static str),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let frame = ready!(this.poll_next(cx));
        if let Some(Err(_)) = &frame {
            // Nothing more is read; the connection closes.
            this.framing = Framing::Length(0);
            this.io = None;
        }
        Poll::Ready(frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.framing == Framing::Length(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(due) => SizeHint::with_exact(due),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::Target;
    use crate::http::upstream_pool::{
        Checkout, Http1Link, PoolKey, PooledConnection, UpstreamConnection, UpstreamPool,
    };
    use http::HeaderValue;
    use http_body_util::BodyExt;
    use std::net::SocketAddr;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    /// An upstream that reads one request head, answers with `pieces` (each written
    /// and flushed on its own), then closes if `close`; it sends back the head it read.
    async fn upstream(
        pieces: Vec<&'static [u8]>,
        close: bool,
    ) -> (SocketAddr, tokio::sync::oneshot::Receiver<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (seen, heard) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                if stream.read(&mut byte).await.unwrap() == 0 {
                    break;
                }
                head.push(byte[0]);
            }
            for piece in pieces {
                stream.write_all(piece).await.unwrap();
                stream.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            let _ = seen.send(head);
            if !close {
                // Held open until the client goes.
                let _ = stream.read(&mut [0u8; 1]).await;
            }
        });
        (addr, heard)
    }

    fn request(method: Method, target: &str) -> Request<HttpBody> {
        Request::builder()
            .method(method)
            .uri(target)
            .header("host", "upstream.test")
            .header("x-one", "1")
            .body(crate::http::body::empty())
            .unwrap()
    }

    async fn open(addr: SocketAddr) -> UpstreamStream {
        UpstreamStream::Plain(TcpStream::connect(addr).await.unwrap())
    }

    fn key(addr: SocketAddr) -> PoolKey {
        PoolKey::direct(Target::from(addr), false)
    }

    /// A pool whose sweep runs every minute, keeping 8 idle connections per key.
    fn pool() -> Arc<UpstreamPool> {
        UpstreamPool::new(Duration::from_secs(60), 8, "exchange-test")
    }

    /// `method /` sent to the upstream at `addr` on a new connection: its answer.
    async fn ask(addr: SocketAddr, method: Method) -> Response<UpstreamBody> {
        let request = request(method, "/");
        exchange(open(addr).await, BytesMut::new(), None, &request)
            .await
            .unwrap()
    }

    /// `response`'s body, which gives its connection to `pool` under `addr`'s key.
    fn returning(
        response: Response<UpstreamBody>,
        pool: &UpstreamPool,
        addr: SocketAddr,
    ) -> HttpBody {
        response.into_body().returning_to(pool.returner(key(addr)))
    }

    /// Whether the pool has a connection for `key` to give (taking it).
    fn pooled(pool: &UpstreamPool, key: &PoolKey) -> bool {
        matches!(pool.checkout(key, false), Checkout::Found(_))
    }

    #[tokio::test]
    async fn a_response_read_in_pieces_is_whole_and_its_connection_goes_back() {
        let (addr, heard) = upstream(
            vec![
                b"HTTP/1.1 200 Fine\r\nconte",
                b"nt-length: 10\r\nx-a: b\r\n\r\n0123",
                b"456789",
            ],
            false,
        )
        .await;
        let pool = pool();
        let request = request(Method::GET, "http://upstream.test/path?q=1");
        let response = exchange(open(addr).await, BytesMut::new(), None, &request)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["x-a"], "b");
        let reason = response
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .unwrap();
        assert_eq!(reason.as_bytes(), b"Fine");
        let body = returning(response, &pool, addr);
        assert_eq!(body.collect().await.unwrap().to_bytes(), "0123456789");
        assert_eq!(
            heard.await.unwrap(),
            b"GET /path?q=1 HTTP/1.1\r\nhost: upstream.test\r\nx-one: 1\r\n\r\n"
        );
        // A whole answer leaves the connection reusable, with its read buffer.
        let Checkout::Found(UpstreamConnection::Http1(PooledConnection {
            link: Http1Link::Own { buffer, .. },
            ..
        })) = pool.checkout(&key(addr), false)
        else {
            panic!("the connection is not back in the pool as Oxy's own");
        };
        assert!(buffer.is_empty() && buffer.capacity() > 0);
    }

    #[tokio::test]
    async fn a_chunked_body_with_extensions_and_trailers_after_a_100() {
        let (addr, _) = upstream(
            vec![
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                b"4;ext=1\r\nabcd\r",
                b"\n0",
                b"\r\nx-sum: 9\r\n\r\n",
            ],
            false,
        )
        .await;
        let pool = pool();
        let response = ask(addr, Method::GET).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body = returning(response, &pool, addr);
        let collected = body.collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["x-sum"], "9");
        assert_eq!(collected.to_bytes(), "abcd");
        assert!(pooled(&pool, &key(addr)));
    }

    #[tokio::test]
    async fn a_body_until_close_ends_with_the_connection_which_is_not_kept() {
        let (addr, _) = upstream(vec![b"HTTP/1.1 200 OK\r\n\r\nall ", b"of it"], true).await;
        let pool = pool();
        let response = ask(addr, Method::GET).await;
        let body = returning(response, &pool, addr);
        assert_eq!(body.collect().await.unwrap().to_bytes(), "all of it");
        assert!(!pooled(&pool, &key(addr)));
    }

    #[tokio::test]
    async fn head_204_connection_close_and_two_lengths() {
        let pool = pool();
        // HEAD: the length is the resource's, and no body follows.
        let (addr, _) = upstream(
            vec![b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n"],
            false,
        )
        .await;
        let response = ask(addr, Method::HEAD).await;
        assert_eq!(response.headers()[CONTENT_LENGTH], "99");
        let body = returning(response, &pool, addr);
        assert!(body.is_end_stream());
        assert!(pooled(&pool, &key(addr)));

        let (addr, _) = upstream(vec![b"HTTP/1.1 204 No Content\r\n\r\n"], false).await;
        let response = ask(addr, Method::GET).await;
        assert!(
            response
                .extensions()
                .get::<hyper::ext::ReasonPhrase>()
                .is_none()
        );
        drop(returning(response, &pool, addr));
        assert!(pooled(&pool, &key(addr)));

        let (addr, _) = upstream(
            vec![
                b"HTTP/1.1 200 OK\r\nconnection: Keep-Alive, Close\r\ncontent-length: 2\r\n\r\nok",
            ],
            false,
        )
        .await;
        let response = ask(addr, Method::GET).await;
        let body = returning(response, &pool, addr);
        assert_eq!(body.collect().await.unwrap().to_bytes(), "ok");
        assert!(!pooled(&pool, &key(addr)), "the upstream said it closes");

        // Transfer-Encoding beside Content-Length: read by its chunks, the length
        // dropped, the connection not reused.
        let (addr, _) = upstream(
            vec![b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"],
            false,
        )
        .await;
        let response = ask(addr, Method::GET).await;
        assert!(!response.headers().contains_key(CONTENT_LENGTH));
        let body = returning(response, &pool, addr);
        assert_eq!(body.collect().await.unwrap().to_bytes(), "ok");
        assert!(!pooled(&pool, &key(addr)), "a response that may be split");
    }

    #[tokio::test]
    async fn bad_answers_are_errors_and_an_unanswered_request_can_go_again() {
        async fn answer(
            pieces: Vec<&'static [u8]>,
        ) -> Result<Response<UpstreamBody>, ExchangeError> {
            let (addr, _) = upstream(pieces, true).await;
            let request = request(Method::GET, "/");
            exchange(open(addr).await, BytesMut::new(), None, &request).await
        }
        let error = |r: Result<Response<UpstreamBody>, ExchangeError>| r.err().unwrap().to_string();
        assert!(matches!(
            answer(vec![]).await,
            Err(ExchangeError::ClosedBeforeAnswer(_))
        ));
        assert!(
            matches!(
                answer(vec![b"HTTP/1.1 100 Continue\r\n\r\n"]).await,
                Err(ExchangeError::Malformed(_))
            ),
            "an upstream that answered 100 did answer"
        );
        assert!(
            error(
                answer(vec![
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n"
                ])
                .await
            )
            .contains("Content-Length")
        );
        assert!(
            error(answer(vec![b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n"]).await)
                .contains("Content-Length")
        );
        assert!(
            error(answer(vec![b"HTTP/1.1 101 Switching Protocols\r\n\r\n"]).await).contains("101")
        );
        assert!(error(answer(vec![b"SSH-2.0-OpenSSH\r\n\r\n"]).await).contains("malformed"));
        assert!(error(answer(vec![b"HTTP/1.1 200 OK\r\nx"]).await).contains("cut short"));
        let mut large = b"HTTP/1.1 200 OK\r\n".to_vec();
        large.extend(std::iter::repeat_n(b'a', MAX_HEAD_BYTES));
        assert!(error(answer(vec![large.leak()]).await).contains("too large"));

        // A body cut short, or with broken chunks, is an error of the body.
        let body = answer(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab"])
            .await
            .unwrap();
        let cut = body
            .into_body()
            .returning_to(None)
            .collect()
            .await
            .err()
            .unwrap();
        assert!(cut.to_string().contains("before the end"));
        let body = answer(vec![
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabc\r\n",
        ])
        .await
        .unwrap();
        let broken = body
            .into_body()
            .returning_to(None)
            .collect()
            .await
            .err()
            .unwrap();
        assert!(broken.to_string().contains("CRLF"));

        assert!(idempotent(&Method::GET) && idempotent(&Method::PUT));
        assert!(!idempotent(&Method::POST) && !idempotent(&Method::PATCH));
    }

    /// An idle connection the upstream closes is let go at once: the runtime wakes the
    /// pool's sweep (its period is a minute here). It is never given to a request.
    #[tokio::test]
    async fn an_idle_connection_the_upstream_closes_is_let_go() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (close, closing) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let _ = stream.read(&mut [0u8; 1024]).await.unwrap();
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
            let _ = closing.await;
        });
        let pool = pool();
        let response = ask(addr, Method::GET).await;
        drop(returning(response, &pool, addr));
        assert_eq!(pool.idle_connections(), 1);
        drop(close);
        tokio::time::timeout(Duration::from_secs(10), async {
            while pool.idle_connections() > 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the closed connection is let go");
        assert!(!pooled(&pool, &key(addr)));
    }

    #[test]
    fn the_request_head_is_origin_form_without_transfer_encoding() {
        let mut request = request(Method::DELETE, "http://upstream.test:8080/a/b");
        request
            .headers_mut()
            .insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        let mut head = BytesMut::new();
        write_request_head(&request, &mut head);
        assert_eq!(
            &head[..],
            b"DELETE /a/b HTTP/1.1\r\nhost: upstream.test\r\nx-one: 1\r\n\r\n"
        );
        assert!(fits(&request));
        let mut upgrade = request;
        upgrade
            .headers_mut()
            .insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(!fits(&upgrade));
    }
}
