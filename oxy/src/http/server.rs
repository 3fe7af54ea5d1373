//! Serves HTTP/1.1 and HTTP/2 (prior knowledge or ALPN) on one accepted connection with
//! hyper, feeding each request to the pipeline; drains with GOAWAY / connection close.

use super::body::boxed;
use super::client::UpstreamClient;
use super::pipeline::Handler;
use super::upgrade::{PendingUpgrade, Upgraded};
use crate::app::OxyExt;
use crate::drain::Drain;
use crate::hooks::HttpBody;
use crate::hooks::{ConnectionEnd, IngressConnectionContext};
use crate::services::Services;
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Serves HTTP on `stream` until the client closes it or the drain ends it. `linger`, a
/// second handle on the client's socket, lets the server close a connection without a
/// reset that would destroy its last response (see [`lingering_close`]).
pub async fn serve<App: OxyExt, S>(
    stream: S,
    linger: Option<TcpStream>,
    cx: &IngressConnectionContext<App>,
    services: &Arc<Services<App>>,
    drain: &Drain,
) -> ConnectionEnd
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let endpoint = &cx.endpoint;
    let client = match endpoint.http_client.get() {
        Some(client) => client.clone(),
        None => match UpstreamClient::new(services.clone(), &endpoint.settings.http.client) {
            Ok(client) => endpoint
                .http_client
                .get_or_init(|| Arc::new(client))
                .clone(),
            Err(e) => {
                tracing::error!(error = %e, "cannot build the upstream HTTP client");
                return ConnectionEnd::Closed;
            }
        },
    };
    let handler = Arc::new(Handler {
        services: services.clone(),
        endpoint: endpoint.clone(),
        client_addr: cx.client_addr,
        peer_addr: cx.peer_addr,
        original_client: cx.proxy.as_ref().and_then(|p| p.source),
        local_addr: cx.local_addr,
        tls: cx.tls.clone(),
        drain: drain.clone(),
        client,
        slot: cx.slot.clone(),
        upgraded: AtomicBool::new(false),
    });
    let connection_handler = handler.clone();
    let limits = &endpoint.settings.http.limits;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .half_close(true)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .initial_stream_window_size(limits.h2_stream_window)
        .initial_connection_window_size(limits.h2_connection_window)
        .enable_connect_protocol();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let handler = handler.clone();
        async move { Ok::<_, std::convert::Infallible>(handler.handle(version_agnostic(request)).await) }
    });
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = drain.stopping() => {
            connection.as_mut().graceful_shutdown();
            tokio::select! {
                result = connection.as_mut() => result,
                _ = drain.force_closing() => return ConnectionEnd::Shutdown,
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
    if let Some(socket) = linger
        && !connection_handler.upgraded.load(Ordering::Acquire)
    {
        tokio::select! {
            _ = lingering_close(socket) => {}
            _ = drain.force_closing() => {}
        }
    }
    ConnectionEnd::Closed
}

/// The pipeline's view of a hyper request: the one body type, and upgrades as
/// [`PendingUpgrade`]s.
fn version_agnostic(request: Request<Incoming>) -> Request<HttpBody> {
    let (mut parts, body) = request.into_parts();
    if let Some(upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() {
        parts.extensions.insert(PendingUpgrade::new(async move {
            let upgraded = upgrade.await.map_err(std::io::Error::other)?;
            Ok(Box::new(TokioIo::new(upgraded)) as Upgraded)
        }));
    }
    Request::from_parts(parts, boxed(body))
}

/// A second handle on `stream`'s socket, for [`lingering_close`].
pub fn linger_handle(stream: &TcpStream) -> Option<TcpStream> {
    let socket = socket2::SockRef::from(stream).try_clone().ok()?;
    let std: std::net::TcpStream = socket.into();
    std.set_nonblocking(true).ok()?;
    TcpStream::from_std(std).ok()
}

/// Closing a socket with unread input makes the kernel send a reset, which can destroy
/// the response just written (a 400 or 431). Like nginx's lingering close: send FIN,
/// then read and discard what the client still sends, for a short while.
async fn lingering_close(mut socket: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = socket.shutdown().await;
    let mut sink = [0u8; 4096];
    let mut budget = 1 << 20;
    let drain = async {
        while budget > 0 {
            match socket.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => budget -= n.min(budget),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}
