//! Serves what a tunnel the tunnel hook decapsulated carries: plain HTTP through the
//! pipeline, TLS intercepted with a minted certificate, anything else pumped untouched,
//! as the tunnel hook's `on_inner_protocol` decides.

use super::pipeline::Handler;
use super::server::serve_with;
use crate::app::OxyExt;
use crate::drain::Drain;
use crate::hooks::{ConnectionEnd, InnerAction, InnerProtocol, Inspection, Upstream};
use crate::tls::interception::{ClientHello, Interceptor, LeafName};
use crate::tls::server::{facts, oxy_tls};
use crate::tunnel::counted::{Counted, Counts};
use crate::tunnel::pump::CloseReason;
use crate::tunnel::sniff::sniff;
use crate::tunnel::stream::TunnelStream;
use crate::tunnel::tcp::TcpTunnel;
use std::sync::Arc;

/// Looks at the client's first bytes, asks the tunnel hook, then serves, intercepts,
/// pumps or closes the tunnel.
pub async fn serve<App: OxyExt>(
    mut tunnel: TcpTunnel<App>,
    client: TunnelStream,
    handler: &Handler<App>,
    drain: &Drain,
) -> ConnectionEnd {
    let endpoint = handler.endpoint.clone();
    let name = endpoint.name();
    let timeout = endpoint.settings.http.limits.header_read_timeout;
    let (found, client) = sniff(client, timeout).await;
    let action = tunnel.inner_action(&found).await;
    let is_tls = matches!(found, InnerProtocol::Tls(_));
    let count = |outcome| {
        if is_tls {
            oxy_tls::interceptions_total(name, outcome).inc();
        }
    };
    match (found, action, &endpoint.interception) {
        (_, InnerAction::Block(reason), _) => {
            count("blocked");
            tunnel.blocked(&reason).await;
            ConnectionEnd::Closed
        }
        (InnerProtocol::Tls(hello), InnerAction::Inspect, Some(interceptor)) => {
            intercept(tunnel, client, &hello, interceptor, handler, drain).await
        }
        (InnerProtocol::Tls(_), _, _) | (_, InnerAction::Pass, _) => {
            count("passed");
            tunnel.set_inspection(Inspection::Passed);
            match tunnel.pump(client, drain).await {
                CloseReason::Shutdown => ConnectionEnd::Shutdown,
                _ => ConnectionEnd::Closed,
            }
        }
        (_, InnerAction::Inspect, _) => {
            let Some(upstream) = Upstream::for_target(tunnel.target(), false) else {
                return not_http(tunnel).await;
            };
            tunnel.set_inspection(Inspection::Http);
            let inner = handler.decapsulating(upstream, tunnel.id(), tunnel.proxy_user(), None);
            let (client, counts) = counted(client);
            tunnel
                .serve_inside(serve_with(inner, client, drain), &counts)
                .await
        }
    }
}

/// Answers the client's TLS with a leaf minted for the name it asked for (or the
/// target), then serves the HTTP inside towards the target over TLS.
async fn intercept<App: OxyExt>(
    mut tunnel: TcpTunnel<App>,
    client: TunnelStream,
    hello: &ClientHello,
    interceptor: &Arc<Interceptor>,
    handler: &Handler<App>,
    drain: &Drain,
) -> ConnectionEnd {
    let Some(upstream) = Upstream::for_target(tunnel.target(), true) else {
        return not_http(tunnel).await;
    };
    let name = LeafName::of(hello, tunnel.target());
    let endpoint = interceptor.endpoint();
    let policy = handler.inner_tls_policy();
    let ssl = match interceptor.leaf(&name).await {
        Ok(leaf) => interceptor.ssl(&leaf, policy).map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    let ssl = match ssl {
        Ok(ssl) => ssl,
        Err(e) => {
            tracing::error!(%name, error = %e, "cannot intercept TLS");
            oxy_tls::interceptions_total(endpoint, "handshake_failed").inc();
            tunnel.abandon(&e).await;
            return ConnectionEnd::Closed;
        }
    };
    let handshake_timeout = handler.endpoint.settings.tls.handshake_timeout;
    let (client, counts) = counted(client);
    let accept = tokio_boring::SslStreamBuilder::new(ssl, client).accept();
    let stream = match tokio::time::timeout(handshake_timeout, accept).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            let reason = format!("intercepted TLS handshake failed: {e}");
            tracing::info!(%name, %reason, "TLS interception failed");
            oxy_tls::interceptions_total(endpoint, "handshake_failed").inc();
            tunnel.abandon(&reason).await;
            return ConnectionEnd::Closed;
        }
        Err(_) => {
            oxy_tls::interceptions_total(endpoint, "handshake_failed").inc();
            tunnel.abandon("intercepted TLS handshake timed out").await;
            return ConnectionEnd::Closed;
        }
    };
    oxy_tls::interceptions_total(endpoint, "intercepted").inc();
    let mut inner_facts = facts(stream.ssl());
    inner_facts.intercepted = true;
    inner_facts.policy = policy;
    tunnel.set_inspection(Inspection::Intercepted);
    let user = tunnel.proxy_user();
    let inner = handler.decapsulating(upstream, tunnel.id(), user, Some(inner_facts));
    let stream = TunnelStream::Boxed(Box::new(stream));
    tunnel
        .serve_inside(serve_with(inner, stream, drain), &counts)
        .await
}

/// Ends a tunnel whose target is no HTTP authority, so nothing inside can be served.
async fn not_http<App: OxyExt>(tunnel: TcpTunnel<App>) -> ConnectionEnd {
    tunnel.abandon("the target is not an HTTP authority").await;
    ConnectionEnd::Closed
}

/// `client`, counting the bytes that cross it.
fn counted(client: TunnelStream) -> (TunnelStream, Arc<Counts>) {
    let counts = Arc::new(Counts::default());
    let stream = TunnelStream::Boxed(Box::new(Counted::new(client, counts.clone())));
    (stream, counts)
}
