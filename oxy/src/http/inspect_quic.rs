//! Serves what a UDP flow the tunnel hook decapsulated carries: a QUIC Initial is
//! intercepted (Oxy's HTTP/3 server answers with a minted certificate and each request
//! goes through the hooks to the target over TLS), anything else is pumped as UDP, as
//! the tunnel hook's `on_inner_protocol` decides.

use super::pipeline::Handler;
use crate::app::OxyExt;
use crate::drain::Drain;
use crate::hooks::{InnerAction, InnerProtocol, Inspection, Upstream};
use crate::tls::interception::{ClientHello, Interceptor, LeafName};
use crate::tls::server::oxy_tls;
use crate::tunnel::counted::Counts;
use crate::tunnel::flow_socket::FlowSocket;
use crate::tunnel::sniff::sniff_datagrams;
use crate::tunnel::udp::{ClientSide, UdpTunnel, oxy_udp};
use bytes::Bytes;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::mpsc;

/// Runs a UDP flow: pumps it, or when the tunnel hook asked to look inside and a
/// `handler` (the on-ramp's HTTP handler) is given, serves it with [`serve`]. Returns
/// the close reason label, as [`UdpTunnel::pump`] does.
pub async fn run<App: OxyExt>(
    tunnel: UdpTunnel<App>,
    from_client: &mut mpsc::Receiver<Bytes>,
    client: ClientSide,
    handler: Option<&Handler<App>>,
    drain: &Drain,
) -> &'static str {
    match handler {
        Some(handler) if tunnel.decapsulating() => {
            serve(tunnel, from_client, client, handler, drain).await
        }
        _ => tunnel.pump(from_client, client, drain).await,
    }
}

/// Looks at the client's first datagrams, asks the tunnel hook, then intercepts, pumps
/// or ends the flow. Returns the close reason label, as [`UdpTunnel::pump`] does.
pub async fn serve<App: OxyExt>(
    mut tunnel: UdpTunnel<App>,
    from_client: &mut mpsc::Receiver<Bytes>,
    client: ClientSide,
    handler: &Handler<App>,
    drain: &Drain,
) -> &'static str {
    let endpoint = handler.endpoint.clone();
    let timeout = endpoint.settings.http.limits.header_read_timeout;
    let (found, read) = sniff_datagrams(from_client, timeout).await;
    let action = tunnel.inner_action(&found).await;
    let name = endpoint.name();
    let is_quic = matches!(found, InnerProtocol::Quic(_));
    let count = |outcome| {
        if is_quic {
            oxy_tls::interceptions_total(name, outcome).inc();
        }
    };
    match (found, action, &endpoint.interception) {
        (_, InnerAction::Block(reason), _) => {
            count("blocked");
            tunnel.end_unserved("blocked", &reason).await;
            "blocked"
        }
        (InnerProtocol::Quic(hello), InnerAction::Inspect, Some(interceptor)) => {
            let quic = Quic {
                read,
                from_client,
                client,
            };
            intercept(tunnel, quic, &hello, interceptor, handler, drain).await
        }
        _ => {
            count("passed");
            tunnel.set_inspection(Inspection::Passed);
            tunnel.unread(read);
            tunnel.pump(from_client, client, drain).await
        }
    }
}

/// The client's side of a flow being intercepted.
struct Quic<'a> {
    /// Datagrams read while sniffing.
    read: Vec<Bytes>,
    from_client: &'a mut mpsc::Receiver<Bytes>,
    client: ClientSide,
}

/// Runs an HTTP/3 server on the flow's datagrams with a leaf minted for the name the
/// client asked for (or the target), its requests going to the target over TLS.
async fn intercept<App: OxyExt>(
    mut tunnel: UdpTunnel<App>,
    quic: Quic<'_>,
    hello: &ClientHello,
    interceptor: &Arc<Interceptor>,
    handler: &Handler<App>,
    drain: &Drain,
) -> &'static str {
    let endpoint = interceptor.endpoint().to_string();
    let name = LeafName::of(hello, tunnel.target());
    let Some(upstream) = Upstream::for_target(tunnel.target(), true) else {
        tunnel
            .end_unserved("inspection_failed", "the target is not an HTTP authority")
            .await;
        return "inspection_failed";
    };
    let settings = &handler.endpoint.settings;
    let policy = handler.inner_tls_policy();
    let config = match interceptor.leaf(&name).await {
        Ok(leaf) => interceptor.quic_config(&leaf, &settings.http.h3, policy),
        Err(e) => Err(e),
    };
    let (inbound_tx, inbound) = mpsc::channel(handler.endpoint.settings.udp.queue.max(16));
    let client = Mutex::new(quic.client);
    let drops = endpoint.clone();
    let counts = Arc::new(Counts::default());
    let down = counts.clone();
    let outbound = Box::new(move |datagram: &[u8]| {
        let mut client = client.lock().unwrap_or_else(PoisonError::into_inner);
        match client.try_send(datagram) {
            Ok(()) => down.datagram_down(datagram.len()),
            Err(reason) => oxy_udp::dropped_total(&drops, reason).inc(),
        }
    });
    let socket = FlowSocket::new(tunnel.peer_addr(), handler.client_addr, inbound, outbound);
    let server = config.and_then(|config| {
        quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            Some(config),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|e| e.to_string())
    });
    let server = match server {
        Ok(server) => server,
        Err(e) => {
            tracing::error!(%name, error = %e, "cannot intercept QUIC");
            oxy_tls::interceptions_total(&endpoint, "handshake_failed").inc();
            tunnel.end_unserved("inspection_failed", &e).await;
            return "inspection_failed";
        }
    };
    let send_in = |datagram: Bytes| {
        let len = datagram.len();
        match inbound_tx.try_send(datagram) {
            Ok(()) => counts.datagram_up(len),
            Err(_) => oxy_udp::dropped_total(&endpoint, "queue_full").inc(),
        }
    };
    quic.read.into_iter().for_each(send_in);
    let from_client = quic.from_client;
    // Runs until the client side ends, across the handshake and the session.
    let feed = async {
        while let Some(datagram) = from_client.recv().await {
            send_in(datagram);
        }
    };
    tokio::pin!(feed);
    let handshake_timeout = handler.endpoint.settings.tls.handshake_timeout;
    let accept = async {
        let incoming = server.accept().await?;
        tokio::time::timeout(handshake_timeout, incoming)
            .await
            .ok()?
            .ok()
    };
    let connection = tokio::select! {
        connection = accept => connection,
        () = &mut feed => None,
        _ = drain.stopping() => None,
    };
    let Some(connection) = connection else {
        oxy_tls::interceptions_total(&endpoint, "handshake_failed").inc();
        server.close(quinn::VarInt::from_u32(0), b"");
        tunnel
            .end_unserved("inspection_failed", "intercepted QUIC handshake failed")
            .await;
        return "inspection_failed";
    };
    oxy_tls::interceptions_total(&endpoint, "intercepted").inc();
    let mut facts = crate::tls::quic::facts(&connection);
    facts.intercepted = true;
    facts.policy = policy;
    tunnel.set_inspection(Inspection::Intercepted);
    let inner = handler.decapsulating(upstream, tunnel.id(), tunnel.proxy_user(), Some(facts));
    let session = async {
        tokio::select! {
            _ = super::h3::serve_with(connection, inner, drain) => {}
            () = &mut feed => {}
        }
        server.close(quinn::VarInt::from_u32(super::h3::H3_NO_ERROR), b"");
    };
    tunnel.serve_inside(session, &counts).await;
    "decapsulated"
}
