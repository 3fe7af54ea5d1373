//! The handler of a connection's requests, and the routing decision for each: limits,
//! proxy authentication, the request hook, user limits, then CONNECT, CONNECT-UDP,
//! CONNECT-IP, forwarding (`forward.rs`) or a local answer; the answer's phases are in
//! `answer.rs` and its bookkeeping in `access_log.rs`.

use super::access_log::RequestRecord;
use super::authority::host_and_port_number;
use super::body::text_response;
use super::client::UpstreamClient;
use super::metrics::{Route, oxy_http};
use super::open_streams::OpenStreams;
use super::proxy_auth;
use super::upgrade::ExtendedConnect;
use crate::app::OxyExt;
use crate::drain::Drain;
use crate::endpoint::Endpoint;
use crate::hooks::{
    Connection, HttpBody, IngressConnectionContext, RequestAction, RequestContext, Upstream,
};
use crate::onramp::ConnectionHold;
use crate::services::Services;
use crate::telemetry::distributed_tracing;
use crate::tls::TlsFacts;
use crate::tunnel::TunnelClient;
use http::uri::Authority;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use std::net::SocketAddr;
use std::sync::Arc;

/// What every request on one connection shares.
pub struct Handler<App: OxyExt> {
    /// Shared services.
    pub services: Arc<Services<App>>,
    /// The endpoint the connection came in on.
    pub endpoint: Arc<Endpoint<App>>,
    /// The connection: its id and the ingress hook's state for it.
    pub connection: Connection<App>,
    /// The client's address (the original client behind a PROXY header).
    pub client_addr: SocketAddr,
    /// The socket's peer (the load balancer behind a PROXY header).
    pub peer_addr: SocketAddr,
    /// The original client a PROXY header named.
    pub original_client: Option<SocketAddr>,
    /// The local address the client connected to.
    pub local_addr: SocketAddr,
    /// TLS facts of the connection, if it is TLS.
    pub tls: Option<Arc<TlsFacts>>,
    /// The shutdown sequence (CONNECT tunnels outlive their request).
    pub drain: Drain,
    /// The endpoint's upstream client.
    pub client: Arc<UpstreamClient<App>>,
    /// The connection's `max_connections` slot and per-thread placement, kept by
    /// tunnels and upgrades.
    pub hold: Option<Arc<ConnectionHold>>,
    /// Where requests go when this handler serves HTTP decapsulated from a tunnel (the
    /// tunnel's target), unless the request hook routes them elsewhere.
    pub decapsulated: Option<Upstream>,
    /// The id of the decapsulated tunnel whose HTTP this handler serves (in the access
    /// log lines of its requests).
    pub tunnel_id: Option<Arc<str>>,
    /// The user of the request that opened that tunnel: its requests start as that
    /// user's (`cx.proxy_user`).
    pub tunnel_user: Option<String>,
    /// The connection's open streams, tunnels and upgrades included.
    pub streams: OpenStreams,
    /// The endpoint's `http.upstream`, copied for this connection: cloning it for a
    /// request then writes a reference count that only this connection's thread writes.
    pub http_upstream: Option<Upstream>,
}

impl<App: OxyExt> Clone for Handler<App> {
    fn clone(&self) -> Self {
        Handler {
            services: self.services.clone(),
            endpoint: self.endpoint.clone(),
            connection: self.connection.clone(),
            client_addr: self.client_addr,
            peer_addr: self.peer_addr,
            original_client: self.original_client,
            local_addr: self.local_addr,
            tls: self.tls.clone(),
            drain: self.drain.clone(),
            client: self.client.clone(),
            hold: self.hold.clone(),
            decapsulated: self.decapsulated.clone(),
            tunnel_id: self.tunnel_id.clone(),
            tunnel_user: self.tunnel_user.clone(),
            streams: self.streams.clone(),
            http_upstream: self.http_upstream.clone(),
        }
    }
}

impl<App: OxyExt> Handler<App> {
    /// The handler of one accepted connection; `None` (logged) when the endpoint's
    /// upstream client cannot be built.
    pub fn for_connection(
        cx: &IngressConnectionContext<App>,
        services: &Arc<Services<App>>,
        drain: &Drain,
    ) -> Option<Arc<Self>> {
        let endpoint = &cx.endpoint;
        let client = match endpoint.http_client.get() {
            Some(client) => client.clone(),
            None => match UpstreamClient::new(
                services.clone(),
                &endpoint.settings.http.client,
                endpoint.name(),
            ) {
                Ok(client) => endpoint
                    .http_client
                    .get_or_init(|| Arc::new(client))
                    .clone(),
                Err(e) => {
                    tracing::error!(error = %e, "cannot build the upstream HTTP client");
                    return None;
                }
            },
        };
        Some(Arc::new(Handler {
            services: services.clone(),
            endpoint: endpoint.clone(),
            connection: cx.connection(),
            client_addr: cx.client_addr,
            peer_addr: cx.peer_addr,
            original_client: cx.proxy.as_ref().and_then(|p| p.source),
            local_addr: cx.local_addr,
            tls: cx.tls.clone(),
            drain: drain.clone(),
            client,
            hold: cx.hold.clone(),
            decapsulated: None,
            tunnel_id: None,
            tunnel_user: None,
            streams: OpenStreams::default(),
            http_upstream: endpoint.http_upstream.as_ref().map(Upstream::copied),
        }))
    }

    /// This handler for requests from another client (an IP flow's source on a TUN
    /// device).
    pub fn for_client(&self, client: &TunnelClient<App>) -> Arc<Self> {
        let mut handler = self.clone();
        handler.connection = client.connection.clone();
        handler.client_addr = client.addr();
        handler.peer_addr = client.peer_addr;
        handler.original_client = client.original_client;
        handler.local_addr = client.local_addr;
        Arc::new(handler)
    }

    /// A handler for the HTTP requests inside the decapsulated tunnel `tunnel_id` of this
    /// connection, opened for `user`: they go to `upstream`, they are `user`'s, and their
    /// TLS facts are `tls`, the inner connection's (`None` for plain HTTP inside).
    pub fn decapsulating(
        &self,
        upstream: Upstream,
        tunnel_id: &str,
        user: Option<String>,
        tls: Option<TlsFacts>,
    ) -> Arc<Self> {
        let mut handler = self.clone();
        handler.decapsulated = Some(upstream);
        handler.tunnel_id = Some(tunnel_id.into());
        handler.tunnel_user = user;
        handler.tls = tls.map(Arc::new);
        handler.streams = OpenStreams::default();
        Arc::new(handler)
    }

    /// Hands the connection (or the request's stream) to `task`, a tunnel or an upgraded
    /// relay, run in a drained task that keeps the connection's hold (its
    /// `max_connections` slot and per-thread placement).
    pub fn spawn_upgraded(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        use futures_util::FutureExt;
        let guards = (self.hold.clone(), self.streams.open());
        // `map`, not an `async` block awaiting `task`: that would hold `task` twice (the
        // captured value and the awaited one), and every idle tunnel would pay for it.
        let task = task.map(move |()| drop(guards));
        self.drain
            .spawn_connection(tracing::Instrument::in_current_span(task));
    }

    /// The policy intercepted TLS or QUIC inside this connection's tunnels is held to:
    /// the connection's own (which the ingress hook may have chosen), else the
    /// endpoint's `tls.policy`. One decision for TCP and QUIC interception.
    pub fn inner_tls_policy(&self) -> crate::settings::TlsPolicy {
        let outer = self.tls.as_ref().map(|tls| tls.policy);
        outer.unwrap_or(self.endpoint.settings.tls.policy)
    }

    /// Who a tunnel opened by a request on this connection is for.
    pub fn tunnel_client(&self, proxy_user: Option<String>) -> TunnelClient<App> {
        TunnelClient {
            connection: self.connection.clone(),
            peer_addr: self.peer_addr,
            original_client: self.original_client,
            local_addr: self.local_addr,
            proxy_user,
        }
    }

    /// Answers one request, counts it and writes its access-log line; a request whose
    /// client goes away before the answer (an HTTP/2 or HTTP/3 reset, a closed
    /// connection) is counted and logged as cancelled.
    pub async fn handle(self: Arc<Self>, request: Request<HttpBody>) -> Response<HttpBody> {
        let span = distributed_tracing::request_span(&request);
        // Boxed: the request's state (about 5 KiB) is then allocated once, instead of
        // being moved into each HTTP/2 and HTTP/3 stream's task and held by every
        // HTTP/1.1 keep-alive connection between requests; made in its box, not copied
        // there.
        let handled = tracing::Instrument::instrument(
            crate::boxed::pinned_in_place(|| self.handle_in_span(request)),
            span.clone(),
        );
        let response = handled.await;
        distributed_tracing::record_status(&span, response.status());
        response
    }

    /// Answers one request inside its span. The future is one allocation per request,
    /// which the test below keeps within jemalloc's 7 KiB class. How rustc lays out a
    /// future's state decides its size, and the request's path is written for it:
    /// - an `async fn` keeps each argument twice (as passed, and moved into its body),
    ///   so the path's functions that take a request return `async` blocks, which use
    ///   what they captured in place;
    /// - a local that is ever borrowed keeps its room until its scope ends, even once
    ///   moved away, so the request's head is read in a step or scope of its own
    ///   (`admit`, the upstream request in `proxy`);
    /// - a local in scope at two `.await`s has room in every state, so a large future's
    ///   scope ends with its `.await` (the exchange in `proxy`).
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice"
    )]
    fn handle_in_span(
        self: Arc<Self>,
        request: Request<HttpBody>,
    ) -> impl Future<Output = Response<HttpBody>> {
        async move {
            let mut record = RequestRecord::start(self.endpoint.http_metrics(), &request);
            record.tunnel_id = self.tunnel_id.clone();
            let mut response = self.dispatch(request, &mut record).await;
            response = self.answer_phases(&mut record, response).await;
            if let Some(alt_svc) = &self.endpoint.alt_svc
                && record.version != Version::HTTP_3
            {
                response
                    .headers_mut()
                    .entry(http::header::ALT_SVC)
                    .or_insert_with(|| alt_svc.clone());
            }
            record.answered(response.status());
            response
        }
    }

    /// Takes the request where `admit` decided. Admitting is a step of its own so that
    /// its borrowed locals (the request's head above all) take no room beside the
    /// tunnel's or the exchange's state in this future.
    async fn dispatch(
        self: &Arc<Self>,
        request: Request<HttpBody>,
        record: &mut RequestRecord<'_>,
    ) -> Response<HttpBody> {
        let Admitted {
            parts,
            body,
            mut cx,
            next,
        } = match self.admit(request, record).await {
            Ok(admitted) => admitted,
            Err(response) => return response,
        };
        match next {
            Next::ConnectUdp => {
                super::connect_udp::handle(self, Request::from_parts(parts, body), cx).await
            }
            Next::ConnectIp => {
                super::connect_ip::handle(self, Request::from_parts(parts, body), cx).await
            }
            Next::Connect => {
                super::connect::handle(self, Request::from_parts(parts, body), cx).await
            }
            Next::Upstream(upstream) => self.proxy(parts, body, upstream, &mut cx).await,
        }
    }

    /// Checks `request` (its limits, authority and proxy authentication), runs the
    /// request hook and takes the user's place under its limits, and decides (and
    /// counts) where the request goes; or answers it here.
    async fn admit(
        &self,
        request: Request<HttpBody>,
        record: &mut RequestRecord<'_>,
    ) -> Result<Admitted<App>, Response<HttpBody>> {
        let name = self.endpoint.name();
        let settings = &self.endpoint.settings.http;
        let (mut parts, body) = request.into_parts();
        let limits = &settings.limits;
        if uri_len(&parts.uri) > limits.max_uri_bytes {
            oxy_http::errors_total(name, "uri_too_long").inc();
            return Err(text_response(
                StatusCode::URI_TOO_LONG,
                "the request URI is too long",
            ));
        }
        // hyper bounds HTTP/2 and HTTP/3 header sections itself, and HTTP/1.1 ones only
        // to its 8 KiB minimum buffer: a smaller limit is checked here.
        if parts.version <= Version::HTTP_11 && header_bytes(&parts) > limits.max_header_bytes {
            oxy_http::errors_total(name, "header_too_large").inc();
            return Err(text_response(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "the request's header fields are too large",
            ));
        }
        if let Err(e) = super::authority::settle(&mut parts) {
            oxy_http::errors_total(name, e.as_label()).inc();
            return Err(text_response(StatusCode::BAD_REQUEST, &e.to_string()));
        }
        let declared_length = super::headers::declared_length(&parts.headers);
        if limits.max_body_bytes > 0
            && declared_length.is_some_and(|len| len > limits.max_body_bytes)
        {
            oxy_http::errors_total(name, "body_too_large").inc();
            return Err(text_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is too large",
            ));
        }
        // HTTP/1.1 proxies get absolute-form URIs; HTTP/2 and HTTP/3 requests always
        // carry an authority, which names another server only when it is not this endpoint.
        let forwardable = match (parts.version, parts.uri.authority()) {
            (Version::HTTP_2 | Version::HTTP_3, Some(authority)) => {
                !self.is_own_authority(authority)
            }
            (_, Some(_)) => parts.uri.scheme().is_some(),
            (_, None) => false,
        };
        let connect_udp = super::connect_udp::is_requested(&parts);
        let connect_ip = super::connect_ip::is_requested(&parts);
        let is_connect = parts.method == Method::CONNECT;
        let mut proxy_user = self.tunnel_user.clone();
        let tunnel = is_connect || connect_udp || connect_ip;
        // Requests inside a tunnel an authenticated request opened are its user's; those
        // inside any other tunnel (an L4 endpoint's, an IP flow's) authenticate as usual.
        let authenticated_tunnel = self.decapsulated.is_some() && self.tunnel_user.is_some();
        if settings.proxy_auth.enabled
            && !authenticated_tunnel
            && (tunnel || (forwardable && settings.forward_proxy))
        {
            match proxy_auth::authenticate(&settings.proxy_auth, &parts.headers) {
                Some(user) => proxy_user = Some(user),
                None => {
                    oxy_http::errors_total(name, "proxy_auth").inc();
                    return Err(proxy_auth::authentication_required(
                        &settings.proxy_auth.realm,
                    ));
                }
            }
        }
        let mut cx = RequestContext {
            endpoint: self.endpoint.clone(),
            connection: self.connection.clone(),
            client_addr: self.client_addr,
            tls: self.tls.clone(),
            proxy_user,
            app: App::RequestContext::default(),
            user_permit: None,
        };
        let mut route = self.decapsulated.clone();
        let mut routed = false;
        record.user = cx.proxy_user.clone();
        if let Some(hook) = &self.services.hooks.http_request {
            let action = hook.on_request(&mut parts, &mut cx).await;
            record.user = cx.proxy_user.clone();
            match action {
                RequestAction::Continue => {}
                RequestAction::Respond(response) => {
                    self.endpoint.http_metrics().count_routed(Route::Local);
                    return Err(response);
                }
                RequestAction::Block {
                    status,
                    reason,
                    headers,
                } => {
                    self.endpoint.http_metrics().count_routed(Route::Local);
                    oxy_http::errors_total(name, "blocked").inc();
                    tracing::info!(%status, %reason, uri = %parts.uri, "request blocked");
                    let mut response = text_response(status, &reason);
                    response.headers_mut().extend(headers);
                    return Err(response);
                }
                RequestAction::Route(upstream) => {
                    route = Some(upstream);
                    routed = true;
                }
            }
        }
        // The user is known now: its tunnel or request takes a place under its limits.
        match (self.endpoint.user_limits).admit(cx.proxy_user.as_deref(), tunnel) {
            Ok(permit) => cx.user_permit = permit,
            Err(too_many) => {
                oxy_http::errors_total(name, "user_limit").inc();
                return Err(too_many.response());
            }
        }
        // A tunnel the hook routed: a CONNECT goes to the route's host and port instead
        // (the client speaks its own TLS inside); other tunnels cannot be routed.
        if let (true, Some(upstream)) = (routed && tunnel, &route) {
            if !is_connect || upstream.tls || upstream.authority.port_u16().is_none() {
                oxy_http::errors_total(name, "route_not_applicable").inc();
                let reason = if is_connect {
                    "the request hook routed a CONNECT to an https upstream or one without a port; a tunnel needs host:port and carries the client's own TLS"
                } else {
                    "the request hook routed a CONNECT-UDP or CONNECT-IP request; only CONNECT can be routed"
                };
                tracing::error!(uri = %parts.uri, "{reason}");
                return Err(text_response(StatusCode::INTERNAL_SERVER_ERROR, reason));
            }
            match Uri::try_from(upstream.authority.as_str()) {
                Ok(uri) => parts.uri = uri,
                Err(_) => return Err(text_response(StatusCode::BAD_GATEWAY, "bad route")),
            }
        }

        let metrics = self.endpoint.http_metrics();
        let next = if connect_udp {
            metrics.count_routed(Route::ConnectUdp);
            Next::ConnectUdp
        } else if connect_ip {
            metrics.count_routed(Route::ConnectIp);
            Next::ConnectIp
        } else if let Some(protocol) = parts.extensions.get::<ExtendedConnect>() {
            oxy_http::errors_total(name, "extended_connect").inc();
            return Err(text_response(
                StatusCode::NOT_IMPLEMENTED,
                &format!("extended CONNECT for {:?} is not supported", protocol.0),
            ));
        } else if is_connect {
            if !settings.connect {
                metrics.count_routed(Route::Local);
                oxy_http::errors_total(name, "connect_disabled").inc();
                return Err(text_response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "CONNECT is not enabled here",
                ));
            }
            metrics.count_routed(Route::Connect);
            Next::Connect
        } else {
            let (upstream, forward) = match route {
                Some(upstream) => (upstream, false),
                None if forwardable && settings.forward_proxy => {
                    match Upstream::from_uri(&parts.uri) {
                        Some(upstream) => (upstream, true),
                        None => {
                            oxy_http::errors_total(name, "bad_uri").inc();
                            return Err(text_response(
                                StatusCode::BAD_REQUEST,
                                "the request URI names no host",
                            ));
                        }
                    }
                }
                // A handler built without its copy uses the endpoint's own.
                None => match (self.http_upstream.as_ref())
                    .or(self.endpoint.http_upstream.as_ref())
                    .cloned()
                {
                    Some(upstream) => (upstream, false),
                    None => {
                        metrics.count_routed(Route::Local);
                        oxy_http::errors_total(name, "no_route").inc();
                        return Err(text_response(
                            StatusCode::NOT_FOUND,
                            "no route for this request",
                        ));
                    }
                },
            };
            metrics.count_routed(if forward {
                Route::Forward
            } else {
                Route::Reverse
            });
            Next::Upstream(upstream)
        };
        Ok(Admitted {
            parts,
            body,
            cx,
            next,
        })
    }

    /// Whether `authority` names this endpoint: the local address, or the TLS server
    /// name the client asked for, on the local port.
    fn is_own_authority(&self, authority: &Authority) -> bool {
        let default_port = if self.tls.is_some() { 443 } else { 80 };
        let Some((host, port)) = host_and_port_number(authority.as_str(), default_port) else {
            return false;
        };
        if port != self.local_addr.port() {
            return false;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let sni = self.tls.as_ref().and_then(|tls| tls.sni.as_deref());
        host.eq_ignore_ascii_case("localhost")
            || sni.is_some_and(|sni| host.eq_ignore_ascii_case(sni))
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip == self.local_addr.ip())
    }
}

/// A request `admit` let through, and where it goes.
struct Admitted<App: OxyExt> {
    parts: http::request::Parts,
    body: HttpBody,
    cx: RequestContext<App>,
    next: Next,
}

/// Where an admitted request goes.
enum Next {
    /// A CONNECT-UDP tunnel (`connect_udp.rs`).
    ConnectUdp,
    /// A CONNECT-IP tunnel (`connect_ip/`).
    ConnectIp,
    /// A CONNECT tunnel (`connect.rs`).
    Connect,
    /// An upstream (`forward.rs`): the request's own target (a forward proxy's), the
    /// endpoint's upstream, or the one the request hook or a tunnel's decapsulation chose.
    Upstream(Upstream),
}

/// The size of an HTTP/1.1 request head as sent: the request line, then each header
/// line with its `: ` and CRLF.
fn header_bytes(parts: &http::request::Parts) -> usize {
    let request_line =
        parts.method.as_str().len() + uri_len(&parts.uri) + " HTTP/1.1\r\n".len() + 1;
    parts
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>()
        + request_line
}

/// The length of `uri` as sent, without formatting it.
fn uri_len(uri: &Uri) -> usize {
    let scheme = uri.scheme_str().map_or(0, |s| s.len() + 3);
    let authority = uri.authority().map_or(0, |a| a.as_str().len());
    let path = uri.path_and_query().map_or(0, |p| p.as_str().len());
    scheme + authority + path
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An application with no hooks and no types of its own, like the zero-code proxy.
    #[derive(crate::OxyExt)]
    struct Plain;

    /// The size of the future `make` returns, without making one.
    fn future_size<A, B, F: Future>(_make: impl FnOnce(A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Each request's state is one allocation (`Handler::handle`). Within jemalloc's
    /// 7 KiB class it is at least 1 KiB smaller than in the 8 KiB class, and a slab
    /// holds four of them where jemalloc's default 8 KiB slab held one (Oxy's own
    /// `slab_sizes` now give 8 KiB slabs eight: `telemetry/profiling/heap.rs`). It was
    /// 7,176 bytes before the path was written for its size (`Handler::handle_in_span`),
    /// and 5,008 after.
    #[test]
    fn a_request_state_fits_the_7_kib_allocation_class() {
        let size = future_size(|handler: Arc<Handler<Plain>>, request: Request<HttpBody>| {
            handler.handle_in_span(request)
        });
        assert!(size <= 7 * 1024, "a request's state is {size} bytes");
    }
}
