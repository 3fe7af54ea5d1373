//! CONNECT over HTTP/1.1 and HTTP/2 (RFC 9110 §9.3.6, RFC 9113 §8.5): open the TCP
//! tunnel first, answer 2xx or a clear error, then pump the upgraded stream.

use super::body::{empty, text_response};
use super::pipeline::Handler;
use super::upgrade::PendingUpgrade;
use crate::app::OxyExt;
use crate::hooks::{HttpBody, RequestContext, Target};
use crate::offramp::happy_eyeballs::HappyEyeballsError;
use crate::offramp::tcp::ConnectError;
use crate::tunnel;
use crate::tunnel::TunnelRefused;
use http::{Request, Response, StatusCode};
use std::sync::Arc;

/// The status a refused tunnel is answered with.
pub fn refusal_status(refused: &TunnelRefused) -> StatusCode {
    match refused {
        TunnelRefused::Connect(ConnectError::Denied(_) | ConnectError::DeniedByHook(_))
        | TunnelRefused::Blocked(_) => StatusCode::FORBIDDEN,
        TunnelRefused::Connect(ConnectError::Connect(HappyEyeballsError::TimedOut)) => {
            StatusCode::GATEWAY_TIMEOUT
        }
        TunnelRefused::Connect(ConnectError::NoTarget) => StatusCode::BAD_REQUEST,
        TunnelRefused::Connect(_) | TunnelRefused::UdpViaProxy(_) => StatusCode::BAD_GATEWAY,
        TunnelRefused::Shutdown => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// Answers a CONNECT request and, on success, pumps the tunnel in a drained task that
/// keeps the request's context until the tunnel closes.
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
        let authority = request.uri().authority().map(|a| a.as_str().to_string());
        let Some(target) = authority.and_then(|a| a.parse::<Target>().ok()) else {
            return text_response(
                StatusCode::BAD_REQUEST,
                "CONNECT needs a host:port authority",
            );
        };
        let upgrade = match tunnel_stream(&mut request) {
            Ok(upgrade) => upgrade,
            Err(response) => return *response,
        };
        let client = handler.tunnel_client(cx.proxy_user.clone());
        let services = &handler.services;
        let opened = tunnel::tcp::open(
            services,
            &handler.endpoint,
            &client,
            Some(target),
            &handler.drain,
        );
        let tunnel = match opened.await {
            Ok(tunnel) => tunnel,
            Err(refused) => return text_response(refusal_status(&refused), &refused.to_string()),
        };
        let drain = handler.drain.clone();
        let inspecting = tunnel.decapsulating().then(|| handler.clone());
        // Boxed until it is used: the task then holds the tunnel once (in the pump), not
        // also as the task's own copy, for the tunnel's whole life. `unbox` frees the box
        // as the tunnel leaves it (a `*tunnel` would keep it until the task ends).
        let tunnel = Box::new(tunnel);
        #[allow(clippy::boxed_local)] // taking the box is the point
        fn unbox<T>(boxed: Box<T>) -> T {
            *boxed
        }
        handler.spawn_upgraded(async move {
            match upgrade.wait().await {
                Ok(upgraded) => match inspecting {
                    // Boxed: looking inside (an HTTP server, maybe TLS) is a far larger state
                    // than pumping, and every idle tunnel's task would carry its size.
                    Some(handler) => {
                        crate::boxed::pinned_in_place(|| {
                            super::inspect::serve(unbox(tunnel), upgraded, &handler, &drain)
                        })
                        .await;
                    }
                    None => {
                        unbox(tunnel).pump(upgraded, &drain).await;
                    }
                },
                Err(e) => {
                    tracing::info!(error = %e, "CONNECT upgrade failed");
                    Box::pin(unbox(tunnel).upgrade_failed()).await;
                }
            }
            drop(cx);
        });
        Response::new(empty())
    }
}

/// The stream a tunnel request will hand over once answered, or a 400 when the
/// connection cannot carry one.
pub fn tunnel_stream(
    request: &mut Request<HttpBody>,
) -> Result<PendingUpgrade, Box<Response<HttpBody>>> {
    request
        .extensions_mut()
        .remove::<PendingUpgrade>()
        .ok_or_else(|| {
            Box::new(text_response(
                StatusCode::BAD_REQUEST,
                "this connection cannot carry a tunnel",
            ))
        })
}
