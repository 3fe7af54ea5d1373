//! Forwarding one request to its upstream: the egress decision (with an egress hook),
//! the upstream URI and headers, the request body's limits and taps, the exchange with
//! its timeouts, upgrades, and the response's head through `on_response`.

use super::answer::ProxiedTo;
use super::body::{boxed, text_response};
use super::body_tap::TappedBody;
use super::client::target_of_authority;
use super::guarded_body::{GuardedBody, UploadProgress};
use super::headers;
use super::metrics::{Route, oxy_http};
use super::pipeline::Handler;
use super::upgrade::{self, PendingUpgrade};
use crate::app::OxyExt;
use crate::hooks::{
    EgressContext, EgressPurpose, HttpBody, RequestContext, ResponseAction, Transport, Upstream,
};
use crate::offramp::route::{EgressRoute, egress_route};
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::Limited;
use std::sync::{Arc, OnceLock};

impl<App: OxyExt> Handler<App> {
    pub(super) async fn proxy(
        &self,
        parts: http::request::Parts,
        body: HttpBody,
        upstream: Upstream,
        cx: &mut RequestContext<App>,
    ) -> Response<HttpBody> {
        let name = self.endpoint.name();
        let mut upstream = upstream;
        // With an egress hook, the hook chooses each request's route; connections are
        // pooled by that choice and by who asked (`http/upstream_pool.rs`), so `on_resolved`
        // (which runs when a connection is made) saw this request's client and user.
        let mut one_off = None;
        if self.services.hooks.egress.is_some() {
            let Some(target) = target_of_authority(upstream.authority.as_str(), upstream.tls)
            else {
                oxy_http::errors_total(name, "upstream_connect").inc();
                return text_response(StatusCode::BAD_GATEWAY, "bad upstream authority");
            };
            let client = self.tunnel_client(cx.proxy_user.clone());
            let mut egress = EgressContext::new(
                &self.endpoint,
                &client,
                Transport::Tcp,
                Some(target.clone()),
            );
            egress.purpose = EgressPurpose::HttpRequest;
            let route = match egress_route(&self.services, &mut egress).await {
                Ok(route) => route,
                Err(e) => {
                    oxy_http::errors_total(name, "denied").inc();
                    return text_response(StatusCode::FORBIDDEN, &e.to_string());
                }
            };
            // A rewritten target is where the request goes, and its authority too; an
            // internal service takes the request as it is.
            if let (EgressRoute::Direct { .. }, Some(rewritten)) = (&route, &egress.target)
                && *rewritten != target
            {
                match rewritten.to_string().parse() {
                    Ok(authority) => upstream.authority = authority,
                    Err(_) => {
                        return text_response(StatusCode::BAD_GATEWAY, "bad rewritten target");
                    }
                }
            }
            // Boxed: only requests under an egress hook carry it.
            one_off = Some(Box::new((route, egress)));
        }

        // A step of its own: the head it reads is borrowed, and a borrowed local would
        // keep its room in this future's state beside the exchange's (see
        // `Handler::handle_in_span`).
        let UpstreamRequest {
            request,
            upgrade,
            upload,
            blocked,
        } = match self.upstream_request(parts, body, &upstream, cx).await {
            Ok(ready) => ready,
            Err(response) => return response,
        };
        let settings = &self.endpoint.settings.http;
        // Pinned where it is made: `select!` would otherwise move the whole exchange
        // into its own state. Its scope ends with the `select!`: a future still in scope
        // at a later `.await` (`on_response`) would keep its room in every state of this
        // one.
        let response = {
            let exchange = std::pin::pin!(async {
                match &one_off {
                    Some(one_off) => {
                        let (route, egress) = &**one_off;
                        self.client.send_alone(route, egress, request).await
                    }
                    None => self.client.send(request).await,
                }
            });
            // `response_timeout` counts from the end of the upload, however long that
            // took (or from when the upstream stopped reading it).
            tokio::select! {
                response = exchange => Some(response),
                () = upload.response_overdue(settings.client.response_timeout) => None,
            }
        };
        let response = match response {
            None => {
                oxy_http::errors_total(name, "upstream_timeout").inc();
                return text_response(
                    StatusCode::GATEWAY_TIMEOUT,
                    "the upstream did not answer in time",
                );
            }
            Some(Err(_)) if let Some(reason) = blocked.as_ref().and_then(|b| b.get()) => {
                oxy_http::errors_total(name, "body_blocked").inc();
                tracing::info!(%reason, "request body blocked");
                return text_response(StatusCode::FORBIDDEN, reason);
            }
            Some(Err(e)) => {
                oxy_http::errors_total(name, e.reason).inc();
                tracing::info!(reason = e.reason, error = %e.message, "upstream request failed");
                return text_response(e.status, &e.message);
            }
            Some(Ok(response)) => response,
        };
        let mut response = response;
        let upstream_upgrade = response.extensions_mut().remove::<PendingUpgrade>();
        let upgraded = match (upgrade, upstream_upgrade) {
            (Some((protocol, client_side)), Some(upstream_side)) => {
                self.spawn_upgraded(upgrade::relay(client_side, upstream_side));
                Some(protocol)
            }
            _ => None,
        };
        let (mut parts, body) = response.into_parts();
        // Only the request-end hook reads where a response came from.
        let proxied = (self.services.hooks.request_end.is_some())
            .then(|| ProxiedTo(upstream.authority.clone()));
        if let Some(proxied) = &proxied {
            parts.extensions.insert(proxied.clone());
        }
        headers::remove_hop_by_hop(&mut parts.headers);
        if let Some(protocol) = upgraded {
            headers::set_upgrade(&mut parts.headers, protocol);
        }
        headers::add_via(&mut parts.headers, parts.version);
        if let Some(hook) = &self.services.hooks.http_request
            && let ResponseAction::Replace(mut replacement) = hook.on_response(&mut parts, cx).await
        {
            if let Some(proxied) = proxied {
                replacement.extensions_mut().insert(proxied);
            }
            return replacement;
        }
        let tap = self
            .services
            .hooks
            .http_request
            .as_ref()
            .and_then(|hook| hook.response_body_tap(&parts, cx));
        let body = GuardedBody::response(
            TappedBody::wrap(body, tap, &parts.headers),
            settings.client.response_body_idle_timeout,
        );
        Response::from_parts(parts, body)
    }

    /// `parts` and `body` made ready for `upstream`: its URI, the hop-by-hop headers out
    /// and the forwarding ones in, `on_upstream_request`, then the body's limits and
    /// tap. The hook may answer instead.
    async fn upstream_request(
        &self,
        mut parts: http::request::Parts,
        body: HttpBody,
        upstream: &Upstream,
        cx: &mut RequestContext<App>,
    ) -> Result<UpstreamRequest, Response<HttpBody>> {
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let scheme = if upstream.tls {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        let uri = Uri::builder()
            .scheme(scheme)
            .authority(upstream.authority.clone())
            .path_and_query(path)
            .build();
        let Ok(uri) = uri else {
            return Err(text_response(
                StatusCode::BAD_REQUEST,
                "cannot build the upstream URI",
            ));
        };
        let version = parts.version;
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        // An HTTP/1.1 upgrade (WebSocket) keeps its Upgrade header across this hop.
        let upgrade = headers::requested_upgrade(&parts.headers)
            .zip(parts.extensions.remove::<PendingUpgrade>());
        headers::remove_hop_by_hop(&mut parts.headers);
        if let Some((protocol, _)) = &upgrade {
            headers::set_upgrade(&mut parts.headers, protocol.clone());
        }
        headers::add_via(&mut parts.headers, version);
        if self.endpoint.settings.http.x_forwarded_for {
            headers::add_x_forwarded_for(&mut parts.headers, self.client_addr.ip());
        }
        if self.endpoint.settings.http.forwarded {
            headers::add_forwarded(
                &mut parts.headers,
                self.client_addr.ip(),
                self.tls.is_some(),
            );
        }
        crate::telemetry::distributed_tracing::inject(&mut parts.headers);
        if let Some(hook) = &self.services.hooks.http_request
            && let Some(response) = hook.on_upstream_request(&mut parts, upstream, cx).await
        {
            self.endpoint.http_metrics().count_routed(Route::Local);
            return Err(response);
        }
        let settings = &self.endpoint.settings.http;
        let upload = Arc::new(UploadProgress::default());
        let body = GuardedBody::request(
            body,
            settings.limits.request_body_idle_timeout,
            upload.clone(),
        );
        let max_body = settings.limits.max_body_bytes;
        let body = if max_body > 0 {
            boxed(Limited::new(
                body,
                usize::try_from(max_body).unwrap_or(usize::MAX),
            ))
        } else {
            body
        };
        let tap = self
            .services
            .hooks
            .http_request
            .as_ref()
            .and_then(|hook| hook.request_body_tap(&parts, cx));
        let (body, blocked) = TappedBody::wrap_watched(body, tap, &parts.headers);
        Ok(UpstreamRequest {
            request: Request::from_parts(parts, body),
            upgrade,
            upload,
            blocked,
        })
    }
}

/// A request made ready for its upstream, and what its answer needs.
struct UpstreamRequest {
    request: Request<HttpBody>,
    /// The protocol and the client's side of the HTTP/1.1 upgrade the request asks for.
    upgrade: Option<(HeaderValue, PendingUpgrade)>,
    /// The upload's progress: `response_timeout` counts from its end.
    upload: Arc<UploadProgress>,
    /// Why the request body's tap blocked the body, once it has.
    blocked: Option<Arc<OnceLock<String>>>,
}
