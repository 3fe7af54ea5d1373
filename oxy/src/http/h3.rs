//! Serves HTTP/3 on one QUIC connection (h3 + h3-quinn): each request goes through the
//! same pipeline and hooks as HTTP/1.1 and HTTP/2; CONNECT and CONNECT-UDP get the
//! request stream as a byte stream, CONNECT-UDP also its HTTP Datagrams.

use super::body::boxed;
use super::connect_udp::RequestDatagrams;
use super::h3_stream::{
    DatagramRoute, DatagramRoutes, H3Body, H3Stream, RecvHalf, SendHalf, route_datagrams,
};
use super::headers;
use super::open_streams::{OpenStreams, StreamGuard};
use super::pipeline::Handler;
use super::upgrade::{ExtendedConnect, PendingUpgrade};
use crate::app::OxyExt;
use crate::drain::Drain;
use crate::hooks::{ConnectionEnd, HttpBody, IngressConnectionContext};
use crate::services::Services;
use crate::tunnel::stream::TunnelStream;
use bytes::Bytes;
use h3_datagram::datagram_handler::HandleDatagramsExt;
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

type H3Connection = h3::server::Connection<h3_quinn::Connection, Bytes>;

/// H3_NO_ERROR (RFC 9114 §8.1), for closing a connection on purpose.
pub const H3_NO_ERROR: u32 = 0x100;

/// H3_EXCESSIVE_LOAD (RFC 9114 §8.1), for refusing a connection over a limit.
pub const H3_EXCESSIVE_LOAD: u32 = 0x107;

/// Serves HTTP/3 on `connection` until the client closes it or the drain ends it
/// (GOAWAY first, then a close when the grace period is over).
pub async fn serve<App: OxyExt>(
    connection: quinn::Connection,
    cx: &IngressConnectionContext<App>,
    services: &Arc<Services<App>>,
    drain: &Drain,
) -> ConnectionEnd {
    let Some(handler) = Handler::for_connection(cx, services, drain) else {
        return ConnectionEnd::Closed;
    };
    serve_boxed(connection, handler, drain).await
}

/// Serves HTTP/3 on `connection` with `handler` (see [`serve`]), for QUIC intercepted
/// inside a UDP flow. Boxed, because a CONNECT-UDP request served here can intercept
/// its flow into another such session.
pub fn serve_with<App: OxyExt>(
    connection: quinn::Connection,
    handler: Arc<Handler<App>>,
    drain: &Drain,
) -> std::pin::Pin<Box<dyn Future<Output = ConnectionEnd> + Send + '_>> {
    crate::boxed::pinned_in_place(|| serve_boxed(connection, handler, drain))
}

async fn serve_boxed<App: OxyExt>(
    connection: quinn::Connection,
    handler: Arc<Handler<App>>,
    drain: &Drain,
) -> ConnectionEnd {
    let max_header = handler.endpoint.settings.http.limits.max_header_bytes;
    let built = h3::server::builder()
        .enable_extended_connect(true)
        .enable_datagram(true)
        .max_field_section_size(u64::try_from(max_header).unwrap_or(u64::MAX))
        .build(h3_quinn::Connection::new(connection.clone()))
        .await;
    let mut h3: H3Connection = match built {
        Ok(h3) => h3,
        Err(e) => {
            tracing::debug!(error = %e, "HTTP/3 connection setup failed");
            return ConnectionEnd::Closed;
        }
    };
    let routes = DatagramRoutes::default();
    let name = handler.endpoint.name().to_string();
    let router = tokio::spawn(
        route_datagrams(h3.get_datagram_reader(), routes.clone(), name).in_current_span(),
    );
    let end = accept_requests(&mut h3, &connection, &handler, &routes, drain).await;
    router.abort();
    if end == ConnectionEnd::Shutdown {
        connection.close(quinn::VarInt::from_u32(H3_NO_ERROR), b"shutdown");
    }
    end
}

/// The least time a connection stays open after its GOAWAY with no request open.
const GOAWAY_GRACE: std::time::Duration = std::time::Duration::from_millis(100);

async fn accept_requests<App: OxyExt>(
    h3: &mut H3Connection,
    connection: &quinn::Connection,
    handler: &Arc<Handler<App>>,
    routes: &DatagramRoutes,
    drain: &Drain,
) -> ConnectionEnd {
    // Every request task holds a guard of `requests`; after GOAWAY the connection ends
    // once none has been open for the grace period (h3 itself waits for new streams).
    let requests = OpenStreams::default();
    let mut going_away = false;
    let mut quiet: Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>> = None;
    loop {
        let accepted = tokio::select! {
            accepted = h3.accept() => accepted,
            _ = drain.stopping(), if !going_away => {
                going_away = true;
                // GOAWAY: the requests the client may have sent already (as many as its
                // stream limit allows past the last one accepted) are still served;
                // later ones are refused with H3_REQUEST_REJECTED, which tells the client
                // to send them elsewhere. (h3 0.0.8 names the last accepted stream plus
                // that allowance, or stream 0 when none was accepted yet.)
                let in_flight = handler.endpoint.settings.http.h3.max_concurrent_streams;
                if let Err(e) = h3.shutdown(in_flight as usize).await {
                    tracing::debug!(error = %e, "HTTP/3 GOAWAY not sent");
                }
                // Requests the client sent before it heard the GOAWAY arrive within
                // about one round trip of each other; a client still sending has not
                // heard it yet. So the connection closes only once no request has been
                // open for three round trips (the grace period at least), not a fixed
                // time after the GOAWAY, which could cut off a request arriving just
                // after the one before it ended.
                let wait = (connection.rtt() * 3).max(GOAWAY_GRACE);
                quiet = Some(Box::pin(requests.idle_for(wait)));
                continue;
            }
            () = async { if let Some(quiet) = quiet.as_mut() { quiet.await } }, if quiet.is_some() => {
                connection.close(quinn::VarInt::from_u32(H3_NO_ERROR), b"shutdown");
                return ConnectionEnd::Closed;
            }
            _ = drain.force_closing() => return ConnectionEnd::Shutdown,
        };
        match accepted {
            Ok(Some(resolver)) => {
                let open = requests.open();
                let handler = handler.clone();
                let routes = routes.clone();
                let quic = connection.clone();
                let header_timeout = handler.endpoint.settings.http.limits.header_read_timeout;
                drain.spawn_connection(
                    async move {
                        let resolved =
                            tokio::time::timeout(header_timeout, resolver.resolve_request()).await;
                        match resolved {
                            Err(_) => tracing::debug!("no HTTP/3 request headers in time"),
                            Ok(Ok((request, stream))) => {
                                let datagrams = (quic, stream.id(), routes);
                                let (send, recv) = stream.split();
                                serve_request(&handler, request, (send, recv, open), datagrams)
                                    .await;
                            }
                            Ok(Err(e)) => tracing::debug!(error = %e, "HTTP/3 request not read"),
                        }
                    }
                    .in_current_span(),
                );
            }
            Ok(None) => return ConnectionEnd::Closed,
            Err(e) => {
                if !e.is_h3_no_error() {
                    tracing::debug!(error = %e, "HTTP/3 connection ended with an error");
                }
                return ConnectionEnd::Closed;
            }
        }
    }
}

/// What a request needs to take HTTP Datagrams: the connection, its stream, the routes.
type DatagramParts = (quinn::Connection, h3::quic::StreamId, DatagramRoutes);

/// Answers one request: the pipeline's response headers and body go back on the stream;
/// an accepted CONNECT or CONNECT-UDP gets the stream as a byte stream. `open` is held
/// while the stream is in use.
async fn serve_request<App: OxyExt>(
    handler: &Arc<Handler<App>>,
    request: Request<()>,
    (mut send, recv, open): (SendHalf, RecvHalf, StreamGuard),
    (quic, stream_id, routes): DatagramParts,
) {
    let (mut parts, ()) = request.into_parts();
    if let Some(protocol) = parts.extensions.remove::<h3::ext::Protocol>() {
        parts
            .extensions
            .insert(ExtendedConnect(protocol.as_str().to_string()));
    }
    let tunnel = parts.method == Method::CONNECT;
    let mut upgrade = None;
    let (body, recv) = if tunnel {
        let (tx, rx) = oneshot::channel::<TunnelStream>();
        parts.extensions.insert(PendingUpgrade::new(async move {
            rx.await
                .map_err(|_| std::io::Error::other("the tunnel was not accepted"))
        }));
        upgrade = Some(tx);
        (super::body::empty(), Some(recv))
    } else {
        (boxed(H3Body::new(recv)), None)
    };
    // A CONNECT-UDP flow or CONNECT-IP session takes the stream's HTTP Datagrams.
    if parts
        .extensions
        .get::<ExtendedConnect>()
        .is_some_and(|p| p.is_connect_udp() || p.is_connect_ip())
    {
        let settings = &handler.endpoint.settings;
        let queue = match parts.extensions.get::<ExtendedConnect>() {
            Some(p) if p.is_connect_ip() => settings.ip.queue,
            _ => settings.udp.queue,
        }
        .max(1);
        let (tx, rx) = mpsc::channel(queue);
        let route = DatagramRoute::new(&routes, stream_id, tx.clone());
        let sink = Box::new(super::h3_stream::H3DatagramSink::new(quic, stream_id));
        parts
            .extensions
            .insert(RequestDatagrams::new(rx, tx, route, sink));
    }
    let response = handler
        .clone()
        .handle(Request::from_parts(parts, body))
        .await;
    let (mut parts, body) = response.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers);
    let accepted = parts.status.is_success();
    if let Err(e) = send.send_response(Response::from_parts(parts, ())).await {
        tracing::debug!(error = %e, "HTTP/3 response not sent");
        return;
    }
    if let (Some(upgrade), Some(recv), true) = (upgrade, recv, accepted) {
        let stream = H3Stream::new(send, recv, open);
        let _ = upgrade.send(TunnelStream::Boxed(Box::new(stream)));
        return;
    }
    if let Err(e) = send_body(&mut send, body).await {
        tracing::debug!(error = %e, "HTTP/3 response body not sent");
    }
}

/// Sends a response body's data and trailers, then finishes the stream.
async fn send_body(send: &mut SendHalf, mut body: HttpBody) -> Result<(), String> {
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        match frame.into_data() {
            Ok(data) => send.send_data(data).await.map_err(|e| e.to_string())?,
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    send.send_trailers(trailers)
                        .await
                        .map_err(|e| e.to_string())?;
                    return Ok(());
                }
            }
        }
    }
    send.finish().await.map_err(|e| e.to_string())
}
