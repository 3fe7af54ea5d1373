//! Serves HTTP/1.1 and HTTP/2 (prior knowledge or ALPN) on one accepted connection with
//! hyper, feeding each request to the pipeline; drains with GOAWAY / connection close.

use super::client::UpstreamClient;
use super::pipeline::Handler;
use crate::app::OxyExt;
use crate::drain::Drain;
use crate::hooks::{ConnectionEnd, IngressConnectionContext};
use crate::services::Services;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// Serves HTTP on `stream` until the client closes it or the drain ends it.
pub async fn serve<App: OxyExt, S>(
    stream: S,
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
        client_addr: cx.peer_addr,
        drain: drain.clone(),
        client,
    });
    let limits = &endpoint.settings.http.limits;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .enable_connect_protocol();
    let service = hyper::service::service_fn(move |request| {
        let handler = handler.clone();
        async move { Ok::<_, std::convert::Infallible>(handler.handle(request).await) }
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
    ConnectionEnd::Closed
}
