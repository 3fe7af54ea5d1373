//! CONNECT-UDP (RFC 9298): the UDP target from the URI template, a flow through the UDP
//! tunnel engine, and its datagrams as HTTP Datagrams (HTTP/3) or as DATAGRAM capsules on
//! the stream (HTTP/2 extended CONNECT, HTTP/1.1 `Upgrade: connect-udp`).

use super::body::{empty, text_response};
use super::capsule::{self, Capsule, CapsuleCodec};
use super::connect::{refusal_status, tunnel_stream};
use super::h3_stream::DatagramRoute;
use super::headers;
use super::inspect_quic::run as run_flow;
use super::metrics::oxy_http;
use super::pipeline::Handler;
use crate::app::OxyExt;
use crate::drain::Drain;
use crate::hooks::{HttpBody, RequestContext};
use crate::tunnel::stream::TunnelStream;
use crate::tunnel::udp::{ClientSide, DatagramSink, UdpTunnel, oxy_udp};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderValue, Request, Response, StatusCode, Version};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;

/// CONNECT-UDP metrics.
#[crate::metrics]
pub mod oxy_connect_udp {
    /// Streams ended by malformed capsules, by endpoint and reason (`too_large`,
    /// `truncated`, `bad_context`).
    pub fn capsule_errors_total(endpoint: &str, reason: &str) -> Counter;
}

/// Whether a request asks for CONNECT-UDP: extended CONNECT with `:protocol connect-udp`
/// (HTTP/2, HTTP/3) or an HTTP/1.1 `GET` with `Upgrade: connect-udp`.
pub fn is_requested(parts: &http::request::Parts) -> bool {
    super::upgrade::asks_for(parts, "connect-udp")
}

/// The HTTP Datagrams of a CONNECT-UDP request over HTTP/3, which the server puts in the
/// request's extensions; taken once.
#[derive(Clone)]
pub struct RequestDatagrams(Arc<Mutex<Option<DatagramChannel>>>);

/// Both directions of HTTP Datagrams for one request stream.
pub(crate) struct DatagramChannel {
    /// Datagram payloads (context ID 0) from the client.
    pub(crate) from_client: mpsc::Receiver<Bytes>,
    /// Feeds `from_client` too (capsules on the stream); closing it and `route` ends
    /// the flow.
    pub(crate) to_flow: mpsc::Sender<Bytes>,
    /// Keeps the datagrams of the stream coming.
    pub(crate) route: DatagramRoute,
    /// Sends HTTP Datagrams to the client.
    pub(crate) to_client: Box<dyn DatagramSink>,
}

impl RequestDatagrams {
    /// Datagrams routed to `from_client` (and `to_flow`) by `route`, and sent with
    /// `to_client`.
    pub fn new(
        from_client: mpsc::Receiver<Bytes>,
        to_flow: mpsc::Sender<Bytes>,
        route: DatagramRoute,
        to_client: Box<dyn DatagramSink>,
    ) -> Self {
        Self(Arc::new(Mutex::new(Some(DatagramChannel {
            from_client,
            to_flow,
            route,
            to_client,
        }))))
    }

    pub(crate) fn take(&self) -> Option<DatagramChannel> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Answers a CONNECT-UDP request: opens the flow (egress hook and policy, tunnel hook),
/// answers 2xx (101 on HTTP/1.1) or a clear error, then carries datagrams in a drained
/// task (which keeps the request's context) until the flow ends.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice: see `Handler::handle_in_span`"
)]
pub fn handle<App: OxyExt>(
    handler: &Arc<Handler<App>>,
    mut request: Request<HttpBody>,
    cx: RequestContext<App>,
) -> impl Future<Output = Response<HttpBody>> {
    async move {
        let endpoint = &handler.endpoint;
        let name = endpoint.name();
        if !endpoint.settings.http.connect_udp.enabled {
            oxy_http::errors_total(name, "connect_udp_disabled").inc();
            return text_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "CONNECT-UDP is not enabled here",
            );
        }
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        let target = match endpoint
            .connect_udp_template
            .as_ref()
            .map(|t| t.target(path))
        {
            Some(Ok(target)) => target,
            Some(Err(e)) => {
                oxy_http::errors_total(name, "bad_connect_udp_target").inc();
                return text_response(StatusCode::BAD_REQUEST, &e.to_string());
            }
            None => {
                return text_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "no CONNECT-UDP URI template",
                );
            }
        };
        let upgrade = match tunnel_stream(&mut request) {
            Ok(upgrade) => upgrade,
            Err(response) => return *response,
        };
        let datagrams = request
            .extensions_mut()
            .remove::<RequestDatagrams>()
            .and_then(|d| d.take());
        let settings = &endpoint.settings;
        let client = handler.tunnel_client(cx.proxy_user.clone());
        let idle = settings.udp.idle_timeout;
        let tunnel =
            crate::tunnel::udp::open(&handler.services, endpoint, &client, Some(target), idle)
                .await;
        let tunnel = match tunnel {
            Ok(tunnel) => tunnel,
            Err(refused) => return text_response(refusal_status(&refused), &refused.to_string()),
        };
        let carrier = Carrier {
            max_capsule: settings.http.connect_udp.max_capsule_bytes,
            queue: settings.udp.queue.max(1),
            endpoint: name.to_string(),
        };
        let drain = handler.drain.clone();
        let inspecting = tunnel.decapsulating().then(|| handler.clone());
        handler.spawn_upgraded(async move {
            match upgrade.wait().await {
                Ok(stream) => {
                    let handler = inspecting.as_deref();
                    carrier
                        .carry(tunnel, stream, datagrams, handler, &drain)
                        .await;
                }
                Err(e) => {
                    tracing::info!(error = %e, "CONNECT-UDP stream not handed over");
                    tunnel.upgrade_failed().await;
                }
            }
            drop(cx);
        });
        accepted(request.version(), "connect-udp")
    }
}

/// The answer that accepts a CONNECT-UDP or CONNECT-IP request of `version`: 200, or
/// 101 with `Upgrade: protocol` on HTTP/1.1, announcing the Capsule Protocol.
pub fn accepted(version: Version, protocol: &'static str) -> Response<HttpBody> {
    let mut response = Response::new(empty());
    let headers = response.headers_mut();
    headers.insert("capsule-protocol", HeaderValue::from_static("?1"));
    if version <= Version::HTTP_11 {
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        headers::set_upgrade(response.headers_mut(), HeaderValue::from_static(protocol));
    }
    response
}

/// How a flow's datagrams cross the HTTP stream.
struct Carrier {
    max_capsule: usize,
    queue: usize,
    endpoint: String,
}

impl Carrier {
    /// Runs the flow with `stream`'s capsules (and the HTTP Datagrams, on HTTP/3), then
    /// closes the stream; `handler` serves QUIC intercepted inside it.
    async fn carry<App: OxyExt>(
        &self,
        tunnel: UdpTunnel<App>,
        stream: TunnelStream,
        datagrams: Option<DatagramChannel>,
        handler: Option<&Handler<App>>,
        drain: &Drain,
    ) {
        let (read, mut write) = tokio::io::split(stream);
        let (mut from_client, to_flow, route, h3_sink) = match datagrams {
            Some(channel) => (
                channel.from_client,
                channel.to_flow,
                Some(channel.route),
                Some(channel.to_client),
            ),
            None => {
                let (tx, rx) = mpsc::channel(self.queue);
                (rx, tx, None, None)
            }
        };
        let reader = tokio::spawn(tracing::Instrument::in_current_span(read_capsules(
            FramedRead::new(read, CapsuleCodec::new(self.max_capsule)),
            to_flow,
            route,
            self.endpoint.clone(),
        )));
        match h3_sink {
            Some(sink) => {
                run_flow(
                    tunnel,
                    &mut from_client,
                    ClientSide::Sink(sink),
                    handler,
                    drain,
                )
                .await;
            }
            None => {
                let (tx, rx) = mpsc::channel(self.queue);
                let sink = Box::new(CapsuleSink(tx));
                tokio::join!(
                    run_flow(
                        tunnel,
                        &mut from_client,
                        ClientSide::Sink(sink),
                        handler,
                        drain
                    ),
                    super::capsule_writer::write_capsules(rx, &mut write),
                );
            }
        }
        reader.abort();
        let _ = tokio::time::timeout(Duration::from_secs(1), write.shutdown()).await;
    }
}

/// Feeds the flow with the UDP payloads of the DATAGRAM capsules on the stream until it
/// ends; malformed capsules end it and are counted.
async fn read_capsules<R: tokio::io::AsyncRead + Unpin>(
    mut capsules: FramedRead<R, CapsuleCodec>,
    to_flow: mpsc::Sender<Bytes>,
    route: Option<DatagramRoute>,
    endpoint: String,
) {
    while let Some(capsule) = capsules.next().await {
        let dropped = match capsule {
            Ok(Capsule::Datagram(datagram)) => match capsule::udp_payload(&datagram) {
                Ok(Some(payload)) => match to_flow.try_send(payload) {
                    Ok(()) => continue,
                    Err(mpsc::error::TrySendError::Full(_)) => "queue_full",
                    Err(mpsc::error::TrySendError::Closed(_)) => break,
                },
                Ok(None) => "unknown_context",
                Err(e) => {
                    oxy_connect_udp::capsule_errors_total(&endpoint, e.as_label()).inc();
                    tracing::info!(error = %e, "malformed HTTP Datagram; stream closed");
                    break;
                }
            },
            // This codec surfaces no other capsule types.
            Ok(Capsule::Other { .. }) => continue,
            Err(capsule::CapsuleError::Io(e)) => {
                tracing::debug!(error = %e, "CONNECT-UDP stream ended");
                break;
            }
            Err(e) => {
                oxy_connect_udp::capsule_errors_total(&endpoint, e.as_label()).inc();
                tracing::info!(error = %e, "malformed capsule; stream closed");
                break;
            }
        };
        oxy_udp::dropped_total(&endpoint, dropped).inc();
    }
    drop(route);
}

/// Queues datagrams towards the client for
/// [`write_capsules`](super::capsule_writer::write_capsules).
struct CapsuleSink(mpsc::Sender<Bytes>);

impl DatagramSink for CapsuleSink {
    fn send(&mut self, datagram: &[u8]) -> Result<(), &'static str> {
        match self.0.try_send(Bytes::copy_from_slice(datagram)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err("queue_full"),
            Err(mpsc::error::TrySendError::Closed(_)) => Err("closed"),
        }
    }
}
