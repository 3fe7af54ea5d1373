//! QUIC listeners for HTTP/3: address validation (Retry), the endpoint's connection
//! limit, the TLS handshake (rustls in quinn), the ingress hook, then the h3 server.

use crate::app::OxyExt;
use crate::drain::Drain;
use crate::endpoint::Endpoint;
use crate::hooks::{ConnectionEnd, IngressAction, IngressConnectionContext, Transport};
use crate::onramp::{connection_ended, next_connection_id};
use crate::restart::quic_socket::{CidTag, HandoverUdpSocket, TaggedConnectionIds};
use crate::services::Services;
use crate::telemetry::framework_metrics::oxy_connections;
use crate::telemetry::logging::{connection_span, shown};
use crate::telemetry::panics;
use crate::tls::HandshakeFailure;
use crate::tls::server::oxy_tls;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

/// A UDP socket ready to serve QUIC for `endpoint`: the quinn endpoint on it, and the
/// socket as a restart hands it over. `predecessor` is the forwarding channel that came
/// with a handed-over socket.
pub(crate) fn bind<App: OxyExt>(
    endpoint: &Endpoint<App>,
    socket: std::net::UdpSocket,
    predecessor: Option<std::os::fd::OwnedFd>,
) -> std::io::Result<(quinn::Endpoint, Arc<HandoverUdpSocket>)> {
    let server = endpoint
        .quic
        .clone()
        .ok_or_else(|| std::io::Error::other("the endpoint has no QUIC configuration"))?;
    let mut config = quinn::EndpointConfig::default();
    config
        .max_udp_payload_size(endpoint.settings.http.h3.max_udp_payload)
        .map_err(|e| std::io::Error::other(format!("h3.max_udp_payload: {e}")))?;
    let tag = CidTag::new();
    let ids = tag.clone();
    config.cid_generator(move || Box::new(TaggedConnectionIds(ids.clone())));
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime for QUIC"))?;
    let socket = HandoverUdpSocket::new(socket, tag, predecessor, &runtime)?;
    let quic =
        quinn::Endpoint::new_with_abstract_socket(config, Some(server), socket.clone(), runtime)?;
    Ok((quic, socket))
}

/// Accepts QUIC connections on `quic` until the drain stops accepting; the connections
/// get GOAWAY then, and close when their requests are done or the drain period is over.
pub async fn serve<App: OxyExt>(
    quic: quinn::Endpoint,
    endpoint: Arc<Endpoint<App>>,
    slots: Option<Arc<Semaphore>>,
    services: Arc<Services<App>>,
    drain: Drain,
) {
    let name = endpoint.name().to_string();
    let local_addr = match quic.local_addr() {
        Ok(addr) => addr,
        Err(e) => {
            tracing::error!(endpoint = %name, error = %e, "QUIC listener has no address");
            return;
        }
    };
    let h3 = &endpoint.settings.http.h3;
    let (retry, max_handshakes) = (h3.retry, h3.max_handshakes.max(1));
    let handshakes = Arc::new(Semaphore::new(max_handshakes));
    loop {
        let incoming = tokio::select! {
            _ = drain.stopping() => break,
            incoming = quic.accept() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
        };
        // Under pressure (half the handshake slots taken), clients prove their address
        // with a Retry first: spoofed sources then cost one small packet each.
        let under_pressure = handshakes.available_permits() <= max_handshakes / 2;
        if (retry || under_pressure) && !incoming.remote_address_validated() {
            if let Err(e) = incoming.retry() {
                tracing::debug!(error = %e, "QUIC retry not sent");
            }
            continue;
        }
        let peer_addr = incoming.remote_address();
        // Half-open handshakes have a bound of their own, apart from `max_connections`.
        let Ok(handshake) = handshakes.clone().try_acquire_owned() else {
            oxy_connections::rejected_total(&name, "max_handshakes").inc();
            tracing::warn!(endpoint = %name, peer = ?shown(peer_addr), "h3.max_handshakes reached; QUIC connection refused");
            incoming.refuse();
            continue;
        };
        let id = next_connection_id();
        let span = connection_span(id, &name, peer_addr);
        let cx = IngressConnectionContext {
            id,
            endpoint: endpoint.clone(),
            transport: Transport::Quic,
            peer_addr,
            client_addr: peer_addr,
            proxy: None,
            local_addr: incoming
                .local_ip()
                .map_or(local_addr, |ip| SocketAddr::new(ip, local_addr.port())),
            accepted_at: Instant::now(),
            tls: None,
            tls_policy: endpoint.settings.tls.policy,
            app: Default::default(),
            hold: None,
        };
        let (services, slots) = (services.clone(), slots.clone());
        let task_drain = drain.clone();
        drain.spawn_connection(
            async move {
                let established = handshake_of(incoming, cx, handshake, &slots, &task_drain).await;
                if let Some((connection, mut cx)) = established {
                    handle(connection, &mut cx, &services, &task_drain).await;
                }
            }
            .instrument(span),
        );
    }
    // New connections are refused from here on; open ones end with the drain (quinn
    // keeps serving them after this handle is gone).
    quic.set_server_config(None);
    tracing::debug!(endpoint = %name, "QUIC listener closed");
}

/// Runs the handshake of `incoming` holding one of the handshake slots, then takes one of
/// the endpoint's `max_connections` slots: the connection, or `None` when it failed or
/// was refused (counted and logged here).
async fn handshake_of<App: OxyExt>(
    incoming: quinn::Incoming,
    mut cx: IngressConnectionContext<App>,
    handshake_slot: OwnedSemaphorePermit,
    slots: &Option<Arc<Semaphore>>,
    drain: &Drain,
) -> Option<(quinn::Connection, IngressConnectionContext<App>)> {
    let name = cx.endpoint.name().to_string();
    let timeout = cx.endpoint.settings.tls.handshake_timeout;
    let zero_rtt = cx.endpoint.settings.http.h3.zero_rtt;
    let handshake = async {
        let connecting = incoming
            .accept()
            .map_err(|e| HandshakeFailure::Other(e.to_string()))?;
        let connection = if zero_rtt {
            match connecting.into_0rtt() {
                Ok((connection, _accepted)) => Ok(connection),
                Err(connecting) => connecting.await,
            }
        } else {
            connecting.await
        };
        connection.map_err(|e| quic_handshake_failure(&e))
    };
    let outcome = tokio::select! {
        handshake = tokio::time::timeout(timeout, handshake) => match handshake {
            Ok(Ok(connection)) => Some(Ok(connection)),
            Ok(Err(reason)) => Some(Err(reason)),
            Err(_) => Some(Err(HandshakeFailure::TimedOut)),
        },
        // A handshake under way when Oxy stops accepting finishes (its client is told
        // GOAWAY at once); one still going at the drain deadline is abandoned.
        _ = drain.force_closing() => None,
    };
    drop(handshake_slot);
    let connection = match outcome? {
        Ok(connection) => connection,
        Err(reason) => {
            oxy_tls::handshake_failures_total(&name, reason.as_label()).inc();
            tracing::info!(%reason, "QUIC handshake failed");
            return None;
        }
    };
    // Only a finished handshake is a connection: spoofed or undecryptable Initials are not.
    cx.endpoint.connection_metrics().accepted.inc();
    let Ok(slot) = super::take_slot(slots) else {
        oxy_connections::rejected_total(&name, "max_connections").inc();
        tracing::warn!(endpoint = %name, peer = ?shown(cx.peer_addr), "max_connections reached; QUIC connection refused");
        connection.close(
            quinn::VarInt::from_u32(crate::http::h3::H3_EXCESSIVE_LOAD),
            b"max_connections",
        );
        return None;
    };
    cx.hold = crate::onramp::ConnectionHold::new(slot, None);
    Some((connection, cx))
}

async fn handle<App: OxyExt>(
    connection: quinn::Connection,
    cx: &mut IngressConnectionContext<App>,
    services: &Arc<Services<App>>,
    drain: &Drain,
) {
    let active = cx.endpoint.connection_metrics().active.clone();
    active.inc();
    let served = panics::contain(serve_connection(connection, cx, services, drain)).await;
    connection_ended(cx, served.unwrap_or(ConnectionEnd::Panicked), services).await;
    active.dec();
}

async fn serve_connection<App: OxyExt>(
    connection: quinn::Connection,
    cx: &mut IngressConnectionContext<App>,
    services: &Arc<Services<App>>,
    drain: &Drain,
) -> ConnectionEnd {
    let name = cx.endpoint.name().to_string();
    let mut facts = crate::tls::quic::facts(&connection);
    facts.policy = cx.endpoint.settings.tls.policy;
    oxy_tls::handshakes_total(&name, &facts.version).inc();
    tracing::debug!(sni = ?facts.sni, alpn = ?facts.alpn, "QUIC established");
    cx.tls = Some(Arc::new(facts));
    if let Some(ingress) = &services.hooks.ingress {
        let action = tokio::select! {
            action = ingress.on_connection(cx) => action,
            _ = drain.force_closing() => return ConnectionEnd::Shutdown,
        };
        if let IngressAction::Reject(reason) = action {
            connection.close(
                quinn::VarInt::from_u32(crate::http::h3::H3_NO_ERROR),
                b"rejected",
            );
            return ConnectionEnd::Rejected(reason);
        }
    }
    crate::http::h3::serve(connection, cx, services, drain).await
}

/// The TLS alerts (RFC 8446 §6.2) that refuse a client's certificate: bad, unsupported,
/// revoked, expired, unknown, unknown CA, access denied, and certificate required.
const CERTIFICATE_ALERTS: [u8; 8] = [42, 43, 44, 45, 46, 48, 49, 116];

/// Why a QUIC handshake failed, from the TLS alert that closed it.
fn quic_handshake_failure(e: &quinn::ConnectionError) -> HandshakeFailure {
    // Only an error raised here, not a reason the peer closed with.
    if let quinn::ConnectionError::TransportError(error) = e
        && let Some(pin) = crate::tls::quic_raw_public_key::refused_pin(&error.reason)
    {
        return HandshakeFailure::ClientPin(pin);
    }
    let alert = match e {
        quinn::ConnectionError::TransportError(error) => Some(error.code),
        quinn::ConnectionError::ConnectionClosed(close) => Some(close.error_code),
        _ => None,
    }
    .and_then(|code| {
        CERTIFICATE_ALERTS
            .into_iter()
            .find(|alert| code == quinn::TransportErrorCode::crypto(*alert))
    });
    match alert {
        Some(116) => HandshakeFailure::NoClientCertificate,
        Some(_) => HandshakeFailure::ClientCertificate(e.to_string()),
        None => HandshakeFailure::Other(e.to_string()),
    }
}
