//! Serves HTTP/1.1 and HTTP/2 (prior knowledge or ALPN) on one accepted connection,
//! feeding each request to the pipeline: HTTP/1.1 first without hyper (`h1_connect.rs`,
//! `h1_server.rs`), then, from the first request those do not take, with hyper, as
//! HTTP/2 always is; drains with GOAWAY / connection close.

use super::body::boxed;
use super::h1_server::Served;
use super::open_streams::StreamGuard;
use super::pipeline::Handler;
use super::upgrade::{ExtendedConnect, PendingUpgrade, Upgraded};
use super::write_coalescing::WriteCoalescing;
use crate::app::OxyExt;
use crate::drain::Drain;
use crate::hooks::HttpBody;
use crate::hooks::{ConnectionEnd, IngressConnectionContext};
use crate::services::Services;
use crate::tunnel::stream::{ByteStream, TunnelStream, delegate_byte_stream};
use bytes::BytesMut;
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Serves HTTP on `stream` until the client closes it or the drain ends it. The stream
/// is closed with a lingering close (see [`Lingering`]) unless a tunnel took it.
pub async fn serve<App: OxyExt>(
    stream: TunnelStream,
    cx: &IngressConnectionContext<App>,
    services: &Arc<Services<App>>,
    drain: &Drain,
) -> ConnectionEnd {
    let Some(handler) = Handler::for_connection(cx, services, drain) else {
        return ConnectionEnd::Closed;
    };
    let stream = Lingering::new(stream, drain.clone());
    serve_boxed(handler, stream, drain).await
}

/// Serves HTTP on `stream` with `handler` (see [`serve`]), for the HTTP inside a
/// decapsulated tunnel. Boxed, because a CONNECT request served here can decapsulate
/// its tunnel into another such session.
pub fn serve_with<App: OxyExt>(
    handler: Arc<Handler<App>>,
    stream: TunnelStream,
    drain: &Drain,
) -> Pin<Box<dyn Future<Output = ConnectionEnd> + Send + '_>> {
    crate::boxed::pinned_in_place(|| serve_boxed(handler, Lingering::without(stream), drain))
}

async fn serve_boxed<App: OxyExt>(
    handler: Arc<Handler<App>>,
    stream: Lingering,
    drain: &Drain,
) -> ConnectionEnd {
    let first_read = handler.endpoint.settings.http.limits.header_read_timeout;
    let read = tokio::select! {
        read = tokio::time::timeout(first_read, read_version(stream)) => read,
        // A connection accepted before the drain gets its first request answered.
        _ = drain.force_closing() => return ConnectionEnd::Shutdown,
    };
    let (version, stream, read) = match read {
        Ok(Ok(read)) => read,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "connection closed before a request");
            return ConnectionEnd::Closed;
        }
        Err(_) => {
            tracing::debug!("no request within the header read timeout");
            return ConnectionEnd::Closed;
        }
    };
    let result = match version {
        Version::Http2 => serve_h2(&handler, stream.unread(read.freeze()), drain).await,
        Version::Http1 => serve_h1(&handler, stream, read, drain).await,
    };
    match result {
        Driven::Shutdown => ConnectionEnd::Shutdown,
        Driven::Ended { result, idle } => {
            if let Some(Err(e)) = result {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
            match idle {
                true => ConnectionEnd::IdleTimeout,
                false => ConnectionEnd::Closed,
            }
        }
    }
}

/// Serves HTTP/2 on `stream` with hyper.
async fn serve_h2<App: OxyExt>(
    handler: &Arc<Handler<App>>,
    stream: Lingering,
    drain: &Drain,
) -> Driven<Result<(), hyper::Error>> {
    let limits = &handler.endpoint.settings.http.limits;
    // The frames of one flush leave in one write (one TLS record).
    let io = TokioIo::new(WriteCoalescing::new(stream));
    // Boxed: hyper spawns a task per stream and moves the service's future into it and
    // between its states; a box is cheaper to move than the answer.
    let stream_handler = handler.clone();
    let service = hyper::service::service_fn(move |request| {
        let stream = stream_handler.streams.open();
        crate::boxed::pinned_in_place(|| answer(stream_handler.clone(), request, stream, None))
    });
    let keep_alive = Some(limits.h2_keep_alive_interval).filter(|i| !i.is_zero());
    let connection = pin!(
        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.h2_max_concurrent_streams)
            .initial_stream_window_size(limits.h2_stream_window)
            .initial_connection_window_size(limits.h2_connection_window)
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .keep_alive_interval(keep_alive)
            .keep_alive_timeout(limits.h2_keep_alive_timeout)
            .enable_connect_protocol()
            .serve_connection(io, service)
    );
    let idle = pin!(handler.streams.idle_for(limits.h2_idle_timeout));
    // After its GOAWAY an idle client gets as long again to go, then is cut off.
    let grace = limits.h2_idle_timeout;
    // Draining, the client is told GOAWAY at once.
    let drained = std::future::ready(());
    drive(
        connection,
        |c| c.graceful_shutdown(),
        (idle, grace),
        drained,
        drain,
    )
    .await
}

/// Serves HTTP/1.1 on `stream`, `read` its first bytes: a first CONNECT that opens a
/// tunnel is answered without hyper (`h1_connect.rs`), and so are the requests without
/// a body that come before any other kind (`h1_server.rs`); hyper serves the rest of
/// the connection from the first request those do not take, and answers a refused
/// first CONNECT with the pipeline's answer when it reads it again.
async fn serve_h1<App: OxyExt>(
    handler: &Arc<Handler<App>>,
    stream: Lingering,
    read: BytesMut,
    drain: &Drain,
) -> Driven<Result<(), hyper::Error>> {
    let limits = &handler.endpoint.settings.http.limits;
    let max_head = limits.max_header_bytes.max(8192);
    // Without a request for `header_read_timeout` (between two, or with one's head
    // still arriving), the connection is closed at once: it is one task, so no request
    // starts between the check and the close.
    let mut idle = pin!(handler.streams.idle_for(limits.header_read_timeout));
    let (stream, read, answered) = if read.starts_with(b"CONNECT ") {
        let read = read.freeze();
        match super::h1_connect::parse(&read) {
            Some(head) => {
                let taken = tokio::select! {
                    taken = super::h1_connect::serve(handler, head, stream, Lingering::into_stream) => taken,
                    _ = drain.force_closing() => return Driven::Shutdown,
                };
                match taken {
                    super::h1_connect::Taken::Tunnel => {
                        return Driven::Ended {
                            result: Some(Ok(())),
                            idle: false,
                        };
                    }
                    super::h1_connect::Taken::Answered(response, stream) => {
                        (stream, read, Some(response))
                    }
                }
            }
            None => (stream, read, None),
        }
    } else {
        let closing = AtomicBool::new(false);
        let served = pin!(super::h1_server::serve(
            handler, stream, read, max_head, &closing
        ));
        // Draining, a connection between two requests is closed after a pause, so that
        // a client sending at that moment is unlikely; one answering is closed by its
        // answer (`Connection: close`).
        let drained = handler.streams.idle_for(H1_DRAIN_IDLE);
        let closed = |_: Pin<&mut _>| closing.store(true, Ordering::Release);
        match drive(
            served,
            closed,
            (idle.as_mut(), Duration::ZERO),
            drained,
            drain,
        )
        .await
        {
            Driven::Ended {
                result: Some(Served::HandOver(stream, read)),
                ..
            } => (stream, read, None),
            Driven::Ended { idle, .. } => {
                return Driven::Ended { result: None, idle };
            }
            Driven::Shutdown => return Driven::Shutdown,
        }
    };
    // hyper writes a response's head and body in one write already.
    let io = TokioIo::new(stream.unread(read));
    let request_handler = handler.clone();
    // The first request's answer when it is a CONNECT refused above.
    let answered = std::cell::Cell::new(answered);
    let service = hyper::service::service_fn(move |request| {
        let stream = request_handler.streams.open();
        answer(request_handler.clone(), request, stream, answered.take())
    });
    // hyper's own header read timeout would set a timer for every request.
    let connection = pin!(
        hyper::server::conn::http1::Builder::new()
            .header_read_timeout(None)
            .max_buf_size(max_head)
            .half_close(true)
            .keep_alive(true)
            .serve_connection(io, service)
            .with_upgrades()
    );
    let drained = handler.streams.idle_for(H1_DRAIN_IDLE);
    drive(
        connection,
        |c| c.graceful_shutdown(),
        (idle, Duration::ZERO),
        drained,
        drain,
    )
    .await
}

/// Answers one request of the connection `handler` serves, counted as `stream`: opened
/// when hyper hands the request over, open until its response body is done (or its
/// tunnel, which holds a stream of its own); its body, while it arrives, counts as
/// another. A request the pipeline has already `answered` (a CONNECT refused before
/// hyper read it) gets that answer.
async fn answer<App: OxyExt>(
    handler: Arc<Handler<App>>,
    request: Request<Incoming>,
    stream: StreamGuard,
    answered: Option<http::Response<HttpBody>>,
) -> Result<http::Response<HttpBody>, std::convert::Infallible> {
    let http1 = request.version() <= http::Version::HTTP_11;
    let connect = request.method() == http::Method::CONNECT;
    let mut request = version_agnostic(request);
    if !http_body::Body::is_end_stream(request.body()) {
        // A body still arriving keeps the connection busy: an upload can outlast its
        // response.
        let uploading = handler.streams.open();
        request = request.map(|body| uploading.holding(body));
    }
    let mut response = match answered {
        Some(response) => response,
        None => handler.clone().handle(request).await,
    };
    if http1 && handler.drain.is_stopping() {
        close_after(&mut response, connect);
    }
    Ok(response.map(|body| stream.holding(body)))
}

/// How long an HTTP/1.1 connection must be idle during a drain before it is closed.
const H1_DRAIN_IDLE: Duration = Duration::from_secs(1);

/// Marks an HTTP/1.1 `response` as the connection's last (`Connection: close`), unless it
/// opens a tunnel or an upgrade, which owns the connection from then on.
fn close_after(response: &mut http::Response<HttpBody>, connect: bool) {
    let status = response.status();
    if status == http::StatusCode::SWITCHING_PROTOCOLS || (connect && status.is_success()) {
        return;
    }
    response.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Bytes asked for by the first read of a connection.
const FIRST_READ: usize = 4096;

/// Which HTTP version a connection speaks.
enum Version {
    Http1,
    Http2,
}

/// Tells HTTP/2 (by its preface, whether ALPN chose it or the client assumed it) from
/// HTTP/1.1, and gives the stream back with the bytes read for that.
async fn read_version(mut stream: Lingering) -> std::io::Result<(Version, Lingering, BytesMut)> {
    use tokio::io::AsyncReadExt;
    // One read usually brings the whole first request, which hyper then parses from
    // the unread bytes without reading again.
    let mut read = BytesMut::with_capacity(FIRST_READ);
    while read.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&read) {
        match stream.read_buf(&mut read).await? {
            0 if read.is_empty() => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            0 => break,
            _ => {}
        }
    }
    let version = if read.starts_with(H2_PREFACE) {
        Version::Http2
    } else {
        Version::Http1
    };
    Ok((version, stream, read))
}

/// How a driven connection ended.
enum Driven<O> {
    /// It ended by itself with `result`, or was cut off (`None`), after a graceful
    /// close because it was idle (`idle`) or the drain stopped it.
    Ended { result: Option<O>, idle: bool },
    /// The drain's grace period ran out first.
    Shutdown,
}

/// Runs a hyper connection until it ends, closing it gracefully when `drained` resolves
/// after the drain has started, or when `idle`'s future resolves; in that case the
/// connection is dropped if it has not ended within `idle`'s grace period (a silent
/// client never acknowledges the GOAWAY), at once when that is zero. The connection
/// and `idle` come pinned where they were made: moved in, each would be copied into
/// this future and kept twice in its state (an HTTP/1.1 connection is 680 bytes).
async fn drive<C: Future>(
    mut connection: Pin<&mut C>,
    graceful_shutdown: impl FnOnce(Pin<&mut C>),
    (mut idle, grace): (Pin<&mut impl Future<Output = ()>>, Duration),
    drained: impl Future<Output = ()>,
    drain: &Drain,
) -> Driven<C::Output> {
    // Biased, the connection first: a request that arrives as the idle time runs out is
    // taken (its stream opened) before idleness is checked.
    let idle_now = tokio::select! {
        biased;
        result = connection.as_mut() => return Driven::Ended { result: Some(result), idle: false },
        () = idle.as_mut() => true,
        () = async { drain.stopping().await; drained.await } => false,
    };
    if idle_now && grace.is_zero() {
        return Driven::Ended {
            result: None,
            idle: true,
        };
    }
    graceful_shutdown(connection.as_mut());
    let cut_off = async {
        match idle_now {
            true => tokio::time::sleep(grace).await,
            false => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        result = connection.as_mut() => Driven::Ended { result: Some(result), idle: idle_now },
        () = cut_off => Driven::Ended { result: None, idle: idle_now },
        // Draining, a connection that stays idle (an HTTP/1.1 head that never completes
        // is not closed by hyper's graceful shutdown) still times out.
        () = idle.as_mut(), if !idle_now => Driven::Ended { result: None, idle: true },
        _ = drain.force_closing() => Driven::Shutdown,
    }
}

/// The pipeline's view of a hyper request: the one body type, and upgrades as
/// [`PendingUpgrade`]s.
fn version_agnostic(request: Request<Incoming>) -> Request<HttpBody> {
    let (mut parts, body) = request.into_parts();
    if let Some(protocol) = parts.extensions.remove::<hyper::ext::Protocol>() {
        parts
            .extensions
            .insert(ExtendedConnect(protocol.as_str().to_string()));
    }
    if let Some(upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() {
        parts.extensions.insert(PendingUpgrade::new(async move {
            let upgraded = upgrade.await.map_err(std::io::Error::other)?;
            Ok(plain_or_boxed(upgraded))
        }));
    }
    Request::from_parts(parts, boxed(body))
}

/// Hands the connection's stream back (a plain TCP socket stays recognisable for
/// zero-copy tunnels) with the bytes hyper read past the request; an HTTP/2 stream is
/// boxed.
fn plain_or_boxed(upgraded: hyper::upgrade::Upgraded) -> Upgraded {
    match upgraded.downcast::<TokioIo<Lingering>>() {
        Ok(parts) => parts.io.into_inner().into_stream().unread(parts.read_buf),
        Err(upgraded) => Upgraded::Boxed(Box::new(TokioIo::new(upgraded))),
    }
}

/// How long a lingering close reads and discards what the client still sends.
const LINGER: Duration = Duration::from_secs(2);

/// The client's stream as hyper holds it. Closing a socket with unread input makes the
/// kernel send a reset, which can destroy the response just written (a 400 or 431), so
/// when hyper lets go of the stream it is closed like nginx's lingering close: FIN
/// first, then what the client still sends is read and discarded for a short while. A
/// tunnel that takes the stream over (`Lingering::into_stream`) closes it its own way.
pub struct Lingering {
    stream: TunnelStream,
    /// Set for a connection's own stream; the drain cuts a lingering close short.
    linger: Option<Drain>,
}

impl Lingering {
    fn new(stream: TunnelStream, drain: Drain) -> Self {
        Lingering {
            stream,
            linger: Some(drain),
        }
    }

    fn without(stream: TunnelStream) -> Self {
        Lingering {
            stream,
            linger: None,
        }
    }

    /// The stream, to be closed by whoever takes it.
    fn into_stream(mut self) -> TunnelStream {
        self.linger = None;
        std::mem::replace(&mut self.stream, closed_stream())
    }

    /// The stream with `bytes` to be read again before what follows.
    fn unread(mut self, bytes: bytes::Bytes) -> Self {
        let stream = std::mem::replace(&mut self.stream, closed_stream());
        self.stream = stream.unread(bytes);
        self
    }

    fn io(&self) -> &dyn ByteStream {
        &self.stream
    }

    fn io_mut(&mut self) -> &mut dyn ByteStream {
        &mut self.stream
    }
}

delegate_byte_stream!(Lingering);

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(drain) = self.linger.take() else {
            return;
        };
        let stream = std::mem::replace(&mut self.stream, closed_stream());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                tokio::select! {
                    () = lingering_close(stream) => {}
                    _ = drain.force_closing() => {}
                }
            });
        }
    }
}

/// A stream with nothing in it, in place of one that was handed on.
fn closed_stream() -> TunnelStream {
    TunnelStream::Boxed(Box::new(tokio::io::empty()))
}

/// Sends FIN, then reads and discards what the client still sends (1 MiB at most) for
/// [`LINGER`], and closes.
async fn lingering_close(mut stream: TunnelStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let mut budget = 1 << 20;
    let discard = async {
        while budget > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => budget -= n.min(budget),
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, discard).await;
}
