//! One request through the pipeline: hooks, then CONNECT, forward proxy, reverse proxy
//! or a local answer, and the response back through the hooks.

use super::body::{LocalAnswer, boxed, text_response};
use super::body_tap::TappedBody;
use super::client::UpstreamClient;
use super::guarded_body::{GuardedBody, UploadProgress};
use super::headers;
use super::metrics::{method_label, oxy_http, version_label};
use super::open_streams::OpenStreams;
use super::proxy_auth;
use super::request_end::RequestEnd;
use super::upgrade::{self, ExtendedConnect, PendingUpgrade};
use crate::app::OxyExt;
use crate::drain::Drain;
use crate::endpoint::Endpoint;
use crate::hooks::{
    Connection, EgressContext, HttpBody, HttpRequestHook, IngressConnectionContext, RequestAction,
    RequestContext, RequestSummary, ResponseAction, Target, TargetHost, Transport, Upstream,
};
use crate::offramp::route::{EgressRoute, egress_route};
use crate::services::Services;
use crate::tls::TlsFacts;
use crate::tunnel::TunnelClient;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::Limited;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::OwnedSemaphorePermit;

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
    /// The connection's `max_connections` slot, kept by tunnels and upgrades.
    pub slot: Option<Arc<OwnedSemaphorePermit>>,
    /// Where requests go when this handler serves HTTP decapsulated from a tunnel (the
    /// tunnel's target), unless the request hook routes them elsewhere.
    pub decapsulated: Option<Upstream>,
    /// The id of the decapsulated tunnel whose HTTP this handler serves (in the access
    /// log lines of its requests).
    pub tunnel_id: Option<Arc<str>>,
    /// The connection's open streams, tunnels and upgrades included.
    pub streams: OpenStreams,
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
            slot: self.slot.clone(),
            decapsulated: self.decapsulated.clone(),
            tunnel_id: self.tunnel_id.clone(),
            streams: self.streams.clone(),
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
            slot: cx.slot.clone(),
            decapsulated: None,
            tunnel_id: None,
            streams: OpenStreams::default(),
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
    /// connection: they go to `upstream`, and their TLS facts are `tls`, the inner
    /// connection's (`None` for plain HTTP inside).
    pub fn decapsulating(
        &self,
        upstream: Upstream,
        tunnel_id: &str,
        tls: Option<TlsFacts>,
    ) -> Arc<Self> {
        let mut handler = self.clone();
        handler.decapsulated = Some(upstream);
        handler.tunnel_id = Some(tunnel_id.into());
        handler.tls = tls.map(Arc::new);
        handler.streams = OpenStreams::default();
        Arc::new(handler)
    }

    /// Hands the connection (or the request's stream) to `task`, a tunnel or an upgraded
    /// relay, run in a drained task that keeps the connection's `max_connections` slot.
    pub fn spawn_upgraded(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let slot = self.slot.clone();
        let stream = self.streams.open();
        self.drain
            .spawn_connection(tracing::Instrument::in_current_span(async move {
                task.await;
                drop((slot, stream));
            }));
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
        let mut record = RequestRecord::start(self.endpoint.name(), &request);
        record.tunnel_id = self.tunnel_id.clone();
        let mut response = self.dispatch(request).await;
        if let Some(hook) = &self.services.hooks.http_request {
            response = self.answer_phases(hook, &record, response).await;
        }
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

    /// The phases after a request's answer: an error answer of Oxy's own goes through
    /// `on_error_response`, and the answer's end runs `on_request_end`.
    async fn answer_phases(
        &self,
        hook: &Arc<dyn HttpRequestHook<App>>,
        record: &RequestRecord,
        response: Response<HttpBody>,
    ) -> Response<HttpBody> {
        let mut summary = RequestSummary {
            endpoint: self.endpoint.clone(),
            connection: self.connection.clone(),
            client_addr: self.client_addr,
            method: record.method.clone(),
            uri: record.uri.clone(),
            version: record.version,
            status: response.status(),
            local: (response.extensions().get::<LocalAnswer>()).map(|a| a.reason.clone()),
            upstream: (response.extensions().get::<ProxiedTo>()).map(|p| p.0.clone()),
            time_to_answer: record.started.elapsed(),
            duration: Duration::ZERO,
            body_bytes: 0,
        };
        let error = summary.status.is_client_error() || summary.status.is_server_error();
        let mut response = response;
        if error
            && summary.local.is_some()
            && let Some(page) = hook.on_error_response(&summary).await
        {
            response = page;
            summary.status = response.status();
        }
        let (parts, body) = response.into_parts();
        let body = RequestEnd::wrap(body, hook.clone(), summary, record.started);
        Response::from_parts(parts, body)
    }

    async fn dispatch(self: &Arc<Self>, request: Request<HttpBody>) -> Response<HttpBody> {
        let name = self.endpoint.name();
        let settings = &self.endpoint.settings.http;
        let (mut parts, body) = request.into_parts();
        let limits = &settings.limits;
        if uri_len(&parts.uri) > limits.max_uri_bytes {
            oxy_http::errors_total(name, "uri_too_long").inc();
            return text_response(StatusCode::URI_TOO_LONG, "the request URI is too long");
        }
        // hyper bounds HTTP/2 and HTTP/3 header sections itself, and HTTP/1.1 ones only
        // to its 8 KiB minimum buffer: a smaller limit is checked here.
        if parts.version <= Version::HTTP_11 && header_bytes(&parts) > limits.max_header_bytes {
            oxy_http::errors_total(name, "header_too_large").inc();
            return text_response(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "the request's header fields are too large",
            );
        }
        if let Err(e) = super::authority::settle(&mut parts) {
            oxy_http::errors_total(name, e.as_label()).inc();
            return text_response(StatusCode::BAD_REQUEST, &e.to_string());
        }
        let declared_length = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if limits.max_body_bytes > 0
            && declared_length.is_some_and(|len| len > limits.max_body_bytes)
        {
            oxy_http::errors_total(name, "body_too_large").inc();
            return text_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is too large",
            );
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
        let mut proxy_user = None;
        let tunnel = is_connect || connect_udp || connect_ip;
        if settings.proxy_auth.enabled && (tunnel || (forwardable && settings.forward_proxy)) {
            match proxy_auth::authenticate(&settings.proxy_auth, &parts.headers) {
                Some(user) => proxy_user = Some(user),
                None => {
                    oxy_http::errors_total(name, "proxy_auth").inc();
                    return proxy_auth::authentication_required(&settings.proxy_auth.realm);
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
        if let Some(hook) = &self.services.hooks.http_request {
            match hook.on_request(&mut parts, &mut cx).await {
                RequestAction::Continue => {}
                RequestAction::Respond(response) => {
                    oxy_http::routes_total(name, "local").inc();
                    return response;
                }
                RequestAction::Block {
                    status,
                    reason,
                    headers,
                } => {
                    oxy_http::routes_total(name, "local").inc();
                    oxy_http::errors_total(name, "blocked").inc();
                    tracing::info!(%status, %reason, uri = %parts.uri, "request blocked");
                    let mut response = text_response(status, &reason);
                    response.headers_mut().extend(headers);
                    return response;
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
                return too_many.response();
            }
        }
        // A tunnel the hook routed: a CONNECT goes to the route's host and port instead
        // (the client speaks its own TLS inside); other tunnels cannot be routed.
        if let (true, Some(upstream)) = (routed && tunnel, &route) {
            if !is_connect || upstream.tls {
                oxy_http::errors_total(name, "route_not_applicable").inc();
                let reason = if is_connect {
                    "the request hook routed a CONNECT to an https upstream; a tunnel carries the client's own TLS"
                } else {
                    "the request hook routed a CONNECT-UDP or CONNECT-IP request; only CONNECT can be routed"
                };
                tracing::error!(uri = %parts.uri, "{reason}");
                return text_response(StatusCode::INTERNAL_SERVER_ERROR, reason);
            }
            match Uri::try_from(upstream.authority.as_str()) {
                Ok(uri) => parts.uri = uri,
                Err(_) => return text_response(StatusCode::BAD_GATEWAY, "bad route"),
            }
        }

        if connect_udp {
            oxy_http::routes_total(name, "connect_udp").inc();
            return super::connect_udp::handle(self, Request::from_parts(parts, body), cx).await;
        }
        if connect_ip {
            oxy_http::routes_total(name, "connect_ip").inc();
            return super::connect_ip::handle(self, Request::from_parts(parts, body), cx).await;
        }
        if let Some(protocol) = parts.extensions.get::<ExtendedConnect>() {
            oxy_http::errors_total(name, "extended_connect").inc();
            return text_response(
                StatusCode::NOT_IMPLEMENTED,
                &format!("extended CONNECT for {:?} is not supported", protocol.0),
            );
        }
        if is_connect {
            if !settings.connect {
                oxy_http::routes_total(name, "local").inc();
                oxy_http::errors_total(name, "connect_disabled").inc();
                return text_response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "CONNECT is not enabled here",
                );
            }
            oxy_http::routes_total(name, "connect").inc();
            return super::connect::handle(self, Request::from_parts(parts, body), cx).await;
        }

        let (upstream, kind) = match route {
            Some(upstream) => (upstream, "reverse"),
            None if forwardable && settings.forward_proxy => match Upstream::from_uri(&parts.uri) {
                Some(upstream) => (upstream, "forward"),
                None => {
                    oxy_http::errors_total(name, "bad_uri").inc();
                    return text_response(StatusCode::BAD_REQUEST, "the request URI names no host");
                }
            },
            None => match self.endpoint.http_upstream.clone() {
                Some(upstream) => (upstream, "reverse"),
                None => {
                    oxy_http::routes_total(name, "local").inc();
                    oxy_http::errors_total(name, "no_route").inc();
                    return text_response(StatusCode::NOT_FOUND, "no route for this request");
                }
            },
        };
        oxy_http::routes_total(name, kind).inc();
        self.proxy(parts, body, upstream, &mut cx).await
    }

    /// Whether `authority` names this endpoint: the local address, or the TLS server
    /// name the client asked for, on the local port.
    fn is_own_authority(&self, authority: &Authority) -> bool {
        let port = authority
            .port_u16()
            .unwrap_or(if self.tls.is_some() { 443 } else { 80 });
        if port != self.local_addr.port() {
            return false;
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let sni = self.tls.as_ref().and_then(|tls| tls.sni.as_deref());
        host.eq_ignore_ascii_case("localhost")
            || sni.is_some_and(|sni| host.eq_ignore_ascii_case(sni))
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip == self.local_addr.ip())
    }

    async fn proxy(
        &self,
        mut parts: http::request::Parts,
        body: HttpBody,
        upstream: Upstream,
        cx: &mut RequestContext<App>,
    ) -> Response<HttpBody> {
        let name = self.endpoint.name();
        let mut upstream = upstream;
        let target = Target {
            host: TargetHost::from_uri_host(upstream.authority.host()),
            port: upstream
                .authority
                .port_u16()
                .unwrap_or(if upstream.tls { 443 } else { 80 }),
        };
        // With an egress hook, each request gets a connection of its own, so that the
        // hook's `on_resolved` sees this request's client and user (pooled connections
        // are shared by clients).
        let mut one_off = None;
        if self.services.hooks.egress.is_some() {
            let client = self.tunnel_client(cx.proxy_user.clone());
            let mut egress = EgressContext::new(
                &self.endpoint,
                &client,
                Transport::Tcp,
                Some(target.clone()),
            );
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
            one_off = Some((route, egress));
        }

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
            return text_response(StatusCode::BAD_REQUEST, "cannot build the upstream URI");
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
        if let Some(hook) = &self.services.hooks.http_request
            && let Some(response) = hook.on_upstream_request(&mut parts, &upstream, cx).await
        {
            oxy_http::routes_total(name, "local").inc();
            return response;
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
        let (body, blocked) = TappedBody::wrap_watched(body, tap);
        let request = Request::from_parts(parts, body);
        let exchange = async {
            match &one_off {
                Some((route, egress)) => self.client.send_alone(route, egress, request).await,
                None => self.client.send(request).await,
            }
        };
        // `response_timeout` counts from the end of the upload, however long that took
        // (or from when the upstream stopped reading it).
        let response = tokio::select! {
            response = exchange => Some(response),
            () = upload.response_overdue(settings.client.response_timeout) => None,
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
        parts
            .extensions
            .insert(ProxiedTo(upstream.authority.to_string()));
        headers::remove_hop_by_hop(&mut parts.headers);
        if let Some(protocol) = upgraded {
            headers::set_upgrade(&mut parts.headers, protocol);
        }
        headers::add_via(&mut parts.headers, parts.version);
        if let Some(hook) = &self.services.hooks.http_request
            && let ResponseAction::Replace(replacement) = hook.on_response(&mut parts, cx).await
        {
            return replacement;
        }
        let tap = self
            .services
            .hooks
            .http_request
            .as_ref()
            .and_then(|hook| hook.response_body_tap(&parts, cx));
        let body = GuardedBody::response(
            TappedBody::wrap(body, tap),
            settings.client.response_body_idle_timeout,
        );
        Response::from_parts(parts, body)
    }
}

/// Marks a response an upstream gave: the upstream (`host:port`).
#[derive(Clone)]
struct ProxiedTo(String);

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

/// One request's bookkeeping: the active-requests gauge while it runs, then its count
/// and access-log line, written when it is answered or, if it never is (the client went
/// away and the request's future was dropped), as cancelled.
struct RequestRecord {
    endpoint: String,
    method: Method,
    version: Version,
    uri: String,
    started: Instant,
    active: prometheus::IntGauge,
    answered: bool,
    /// The decapsulated tunnel the request came in.
    tunnel_id: Option<Arc<str>>,
}

impl RequestRecord {
    fn start(endpoint: &str, request: &Request<HttpBody>) -> Self {
        let method = request.method().clone();
        let uri = match request.uri().authority() {
            Some(authority) if method == Method::CONNECT => authority.to_string(),
            _ => request.uri().to_string(),
        };
        let active = oxy_http::active_requests(endpoint);
        active.inc();
        RequestRecord {
            endpoint: endpoint.to_string(),
            method,
            version: request.version(),
            uri,
            started: Instant::now(),
            active,
            answered: false,
            tunnel_id: None,
        }
    }

    fn answered(&mut self, status: StatusCode) {
        self.answered = true;
        let elapsed = self.started.elapsed();
        let (name, method, version) = (&self.endpoint, &self.method, self.version);
        let status = status.as_u16();
        oxy_http::request_duration_seconds(name).observe(elapsed.as_secs_f64());
        oxy_http::requests_total(name, version_label(version), method_label(method), status).inc();
        tracing::info!(
            target: "oxy::access",
            %method,
            uri = %self.uri,
            version = version_label(version),
            status,
            duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            tunnel_id = self.tunnel_id.as_deref(),
            "request"
        );
    }
}

impl Drop for RequestRecord {
    fn drop(&mut self) {
        self.active.dec();
        if self.answered {
            return;
        }
        let (name, method, version) = (&self.endpoint, &self.method, self.version);
        oxy_http::cancelled_total(name, version_label(version), method_label(method)).inc();
        tracing::info!(
            target: "oxy::access",
            %method,
            uri = %self.uri,
            version = version_label(version),
            reason = "cancelled",
            duration_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            tunnel_id = self.tunnel_id.as_deref(),
            "request cancelled by the client"
        );
    }
}
