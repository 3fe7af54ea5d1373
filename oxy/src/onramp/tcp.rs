//! TCP listeners: accept, enforce the endpoint's connection limit, run the ingress hook.

use super::{connection_ended, next_connection_id};
use crate::app::OxyExt;
use crate::drain::Drain;
use crate::endpoint::Endpoint;
use crate::hooks::{ConnectionEnd, IngressAction, IngressConnectionContext, Transport};
use crate::http::pipeline::Handler;
use crate::onramp::ConnectionHold;
use crate::onramp::proxy_protocol::{self, oxy_proxy_protocol};
use crate::per_thread::{Balance, Placement};
use crate::services::Services;
use crate::settings::EndpointProtocol;
use crate::settings::ProxyProtocolMode;
use crate::telemetry::framework_metrics::oxy_connections;
use crate::telemetry::logging::{connection_span, record_client, shown};
use crate::telemetry::panics;
use crate::tls::HandshakeFailure;
use crate::tls::read_ahead::ReadAhead;
use crate::tls::server::oxy_tls;
use crate::tunnel;
use crate::tunnel::pump::CloseReason;
use crate::tunnel::stream::{PrefixedStream, TunnelStream};
use crate::tunnel::{TunnelClient, TunnelRefused};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::Instrument;

/// Accepts connections on `listener` for `endpoint` until the drain stops accepting;
/// with `balance` (per-thread runtimes), each is served on the thread it places it on.
pub async fn serve<App: OxyExt>(
    listener: TcpListener,
    endpoint: Arc<Endpoint<App>>,
    slots: Option<Arc<Semaphore>>,
    services: Arc<Services<App>>,
    drain: Drain,
    balance: Option<Arc<Balance>>,
) {
    let name = endpoint.name().to_string();
    // Every connection a listener on one address accepts has that address as its own:
    // asked of the kernel (`getsockname(2)`) only for a wildcard listener.
    let listening = listener
        .local_addr()
        .ok()
        .filter(|addr| !addr.ip().to_canonical().is_unspecified());
    loop {
        let accepted = tokio::select! {
            _ = drain.stopping() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer_addr) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                oxy_connections::accept_errors_total(&name).inc();
                tracing::warn!(endpoint = %name, error = %e, "accept failed");
                // Out of file descriptors or memory: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        endpoint.connection_metrics().accepted.inc();
        let Ok(permit) = super::take_slot(&slots) else {
            oxy_connections::rejected_total(&name, "max_connections").inc();
            tracing::warn!(endpoint = %name, peer = ?shown(peer_addr), "max_connections reached; connection closed");
            continue;
        };
        let local_addr = match listening.map_or_else(|| stream.local_addr(), Ok) {
            Ok(addr) => addr,
            Err(e) => {
                tracing::debug!(endpoint = %name, error = %e, "connection gone before it was served");
                continue;
            }
        };
        let placement = balance.as_ref().map(Balance::place);
        let elsewhere = placement.as_ref().and_then(Placement::elsewhere).cloned();
        let id = next_connection_id();
        let span = connection_span(id, &name, peer_addr);
        let cx = IngressConnectionContext {
            id,
            endpoint: endpoint.clone(),
            transport: Transport::Tcp,
            peer_addr,
            client_addr: peer_addr,
            proxy: None,
            local_addr,
            accepted_at: Instant::now(),
            tls: None,
            tls_policy: endpoint.settings.tls.policy,
            app: Default::default(),
            hold: ConnectionHold::new(permit, placement),
        };
        let stream = match elsewhere {
            None => Accepted::Registered(stream),
            // Registered again by the runtime that serves it, when first polled there.
            Some(_) => match stream.into_std() {
                Ok(stream) => Accepted::Moved(stream),
                Err(e) => {
                    tracing::debug!(endpoint = %name, error = %e, "connection gone before it was served");
                    continue;
                }
            },
        };
        // `handle` itself, not an `async` block awaiting it: the block would hold the
        // connection's context twice (its own and `handle`'s) for the connection's life.
        let connection = handle(stream, cx, services.clone(), drain.clone());
        drain.spawn_connection_on(elsewhere.as_ref(), connection.instrument(span));
    }
    tracing::debug!(endpoint = %name, "listener closed");
}

/// An accepted connection's socket: registered with the accepting thread's runtime, or
/// taken from it for another thread's.
enum Accepted {
    Registered(TcpStream),
    Moved(std::net::TcpStream),
}

/// Serves one accepted connection and reports how it ended.
async fn handle<App: OxyExt>(
    stream: Accepted,
    mut cx: IngressConnectionContext<App>,
    services: Arc<Services<App>>,
    drain: Drain,
) {
    let stream = match stream {
        Accepted::Registered(stream) => stream,
        Accepted::Moved(stream) => match TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(e) => {
                let name = cx.endpoint.name();
                oxy_connections::rejected_total(name, "thread_handoff").inc();
                tracing::warn!(endpoint = %name, error = %e, "an accepted connection could not be moved to its thread");
                return;
            }
        },
    };
    let active = cx.endpoint.connection_metrics().active.clone();
    active.inc();
    tracing::debug!(local = %cx.local_addr, "accepted");

    let served = panics::contain(serve_connection(stream, &mut cx, &services, &drain)).await;
    connection_ended(
        &mut cx,
        served.unwrap_or(ConnectionEnd::Panicked),
        &services,
    )
    .await;
    active.dec();
}

/// Runs the ingress hook, then serves the endpoint's protocol.
async fn serve_connection<App: OxyExt>(
    mut stream: TcpStream,
    cx: &mut IngressConnectionContext<App>,
    services: &Arc<Services<App>>,
    drain: &Drain,
) -> ConnectionEnd {
    let mut rest = bytes::Bytes::new();
    let proxy_settings = &cx.endpoint.settings.proxy_protocol;
    if proxy_settings.mode != ProxyProtocolMode::Off {
        let name = cx.endpoint.name().to_string();
        // Boxed, like the TLS handshake below: a step the connection takes once, whose
        // state the task would otherwise hold (and move at spawn) for its whole life.
        let reading = Box::pin(proxy_protocol::read_header(
            &mut stream,
            cx.peer_addr,
            proxy_settings,
        ));
        let header = tokio::select! {
            header = reading => header,
            _ = drain.force_closing() => return ConnectionEnd::Shutdown,
        };
        match header {
            Ok((facts, after)) => {
                rest = after;
                if let Some(facts) = facts {
                    oxy_proxy_protocol::headers_total(&name, facts.version).inc();
                    if let Some(source) = facts.source {
                        cx.client_addr = source;
                        record_client(&tracing::Span::current(), source);
                    }
                    cx.proxy = Some(facts);
                }
            }
            Err(e) => {
                oxy_proxy_protocol::errors_total(&name, e.as_label()).inc();
                tracing::info!(error = %e, "connection closed: PROXY header refused");
                return ConnectionEnd::ProxyHeaderRefused(e.to_string());
            }
        }
    }
    if let Some(ingress) = &services.hooks.ingress {
        let action = tokio::select! {
            action = ingress.on_connection(cx) => action,
            _ = drain.force_closing() => return ConnectionEnd::Shutdown,
        };
        if let IngressAction::Reject(reason) = action {
            return ConnectionEnd::Rejected(reason);
        }
    }
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let stream = PrefixedStream::new(rest, stream);
    let Some(acceptor) = cx.endpoint.tls.clone() else {
        return serve_protocol(stream, cx, services, drain).await;
    };
    let name = cx.endpoint.name().to_string();
    let timeout = cx.endpoint.settings.tls.handshake_timeout;
    let handshake = Box::pin(tokio::time::timeout(
        timeout,
        acceptor.accept(ReadAhead::new(stream), cx.tls_policy),
    ));
    let handshake = tokio::select! {
        handshake = handshake => handshake,
        _ = drain.force_closing() => return ConnectionEnd::Shutdown,
    };
    let reason = match handshake {
        Ok(Ok(tls)) => {
            let mut facts = crate::tls::server::facts(tls.ssl());
            facts.policy = cx.tls_policy;
            oxy_tls::handshakes_total(&name, &facts.version).inc();
            tracing::debug!(sni = ?facts.sni, alpn = ?facts.alpn, version = %facts.version, "TLS established");
            cx.tls = Some(Arc::new(facts));
            return serve_protocol(tls, cx, services, drain).await;
        }
        Ok(Err(failure)) => failure,
        Err(_) => HandshakeFailure::TimedOut,
    };
    oxy_tls::handshake_failures_total(&name, reason.as_label()).inc();
    tracing::info!(%reason, "TLS handshake failed");
    ConnectionEnd::HandshakeFailed(reason.to_string())
}

/// Serves the endpoint's protocol on a (plain or TLS) stream.
async fn serve_protocol<App: OxyExt, S>(
    stream: S,
    cx: &IngressConnectionContext<App>,
    services: &Arc<Services<App>>,
    drain: &Drain,
) -> ConnectionEnd
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static + Into<TunnelStream>,
{
    let stream = stream.into();
    // Each protocol's state is boxed, so that a connection holds only its own protocol's
    // (an HTTP connection about 6 KiB) and the task that is spawned, moved and finished
    // stays small: unboxed, every connection task was the 15 KiB of the largest. Made in
    // its box, not copied there.
    match cx.endpoint.settings.protocol {
        // A udp endpoint has no TCP listener, so only `tcp` reaches the first arm.
        EndpointProtocol::Tcp | EndpointProtocol::Udp | EndpointProtocol::Tun => {
            crate::boxed::pinned_in_place(|| forward(stream, cx, services, drain)).await
        }
        EndpointProtocol::Http => {
            crate::boxed::pinned_in_place(|| {
                crate::http::server::serve(stream, cx, services, drain)
            })
            .await
        }
    }
}

/// `protocol: tcp`: tunnels the connection to its target.
async fn forward<App: OxyExt>(
    stream: TunnelStream,
    cx: &IngressConnectionContext<App>,
    services: &Arc<Services<App>>,
    drain: &Drain,
) -> ConnectionEnd {
    let target = cx.endpoint.tcp_target.clone();
    let client = TunnelClient {
        connection: cx.connection(),
        peer_addr: cx.peer_addr,
        original_client: cx.proxy.as_ref().and_then(|p| p.source),
        local_addr: cx.local_addr,
        proxy_user: None,
    };
    match tunnel::tcp::open(services, &cx.endpoint, &client, target, drain).await {
        Ok(tunnel) if tunnel.decapsulating() => {
            let Some(handler) = Handler::for_connection(cx, services, drain) else {
                return ConnectionEnd::Closed;
            };
            crate::http::inspect::serve(tunnel, stream, &handler, drain).await
        }
        Ok(tunnel) => match tunnel.pump(stream, drain).await {
            CloseReason::Shutdown => ConnectionEnd::Shutdown,
            _ => ConnectionEnd::Closed,
        },
        Err(TunnelRefused::Shutdown) => ConnectionEnd::Shutdown,
        Err(_) => ConnectionEnd::Closed,
    }
}
