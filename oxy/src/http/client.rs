//! The upstream HTTP client over Oxy's TCP off-ramp (egress policy, DNS, happy eyeballs)
//! and BoringSSL with ALPN, SNI and certificate and host name verification against the
//! system roots, on the endpoint's own pool (`http/upstream_pool.rs`): HTTP/1.1, and
//! HTTP/2 when an HTTPS upstream offers it (requests without an egress hook); an upgrade
//! gets an HTTP/1.1 connection of its own. An HTTP/1.1 request without a body is
//! exchanged by Oxy in its own task (`http/h1_exchange.rs`); hyper drives a connection
//! from the first request with a body or upgrade it takes.

use super::authority::host_and_port_number;
use super::body::{boxed, empty};
use super::body_tap::BodyBlocked;
use super::guarded_body::{BodyIdleTimeout, ClientBodyError};
use super::h1_exchange::{self, ExchangeError};
use super::upgrade::{PendingUpgrade, Upgraded};
use super::upstream_pool::{
    Checkout, Http1Link, PoolKey, PooledConnection, SharedConnection, UpstreamConnection,
    UpstreamPool,
};
use crate::app::OxyExt;
use crate::hooks::{EgressContext, HttpBody, Target, TargetHost};
use crate::offramp::happy_eyeballs::HappyEyeballsError;
use crate::offramp::route::EgressRoute;
use crate::offramp::tcp::{ConnectError, connect_by, connect_target};
use crate::services::Services;
use crate::settings::{HttpClientSettings, Revocation};
use crate::tls::aia;
use crate::tls::client::{Overrides, TlsConnectError, UpstreamConnector, UpstreamTlsFacts};
use crate::tls::revocation::{self, Checker, Verdict};
use crate::tls::server::oxy_tls;
use crate::tunnel::stream::{ByteStream, delegate_byte_stream};
use bytes::BytesMut;
use http::{Request, Response};
use http_body::Body as _;
use http_body_util::LengthLimitError;
use hyper::client::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use std::io;
use std::sync::Arc;
use tokio::net::TcpStream;

/// Pooled client towards upstreams, one per HTTP endpoint.
pub struct UpstreamClient<App: OxyExt> {
    connector: OffRampConnector<App>,
    /// The connections kept for the next requests.
    pool: Arc<UpstreamPool>,
    /// PINGs on HTTP/2 connections: how often (none when off) and how long an answer
    /// may take (`http.client.h2_keep_alive_*`).
    h2_keep_alive: (Option<std::time::Duration>, std::time::Duration),
}

/// Why an upstream exchange failed, as the client should hear it.
#[derive(Debug, Clone)]
pub struct UpstreamError {
    /// 403 (denied or blocked body), 413 (body too large), 502 or 504.
    pub status: http::StatusCode,
    /// A short, stable label for metrics.
    pub reason: &'static str,
    /// One line for the client and the log.
    pub message: String,
}

impl<App: OxyExt> UpstreamClient<App> {
    /// Sends `request` and returns the response head and a streaming body; a 101
    /// response carries the upstream side of the upgrade as a [`PendingUpgrade`].
    /// The request goes on the endpoint's own pool (`http/upstream_pool.rs`), without a
    /// task per request: over HTTP/1.1, or HTTP/2 when an HTTPS upstream offers it. An
    /// upgrade gets an HTTP/1.1 connection of its own.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice: see `Handler::handle_in_span`"
    )]
    pub fn send(
        &self,
        request: Request<HttpBody>,
    ) -> impl Future<Output = Result<Response<HttpBody>, UpstreamError>> {
        async move {
            let (target, https) = target_of(request.uri()).map_err(|e| classify(&e))?;
            let upgrade = request.headers().contains_key(http::header::UPGRADE);
            let services = &self.connector.services;
            let connect = async |target: &Target| {
                let (stream, _) = connect_target(services, target, None, None)
                    .await
                    .map_err(connect_error)?;
                let tls = Overrides {
                    alpn: upgrade.then_some(HTTP1_ONLY),
                    ..Overrides::default()
                };
                let reconnect = || async {
                    let (stream, _) = connect_target(services, target, None, None).await?;
                    Ok(stream)
                };
                self.open(stream, target, https.then_some((tls, reconnect)))
                    .await
            };
            if upgrade {
                return self.send_upgrade(&target, request, connect).await;
            }
            // Over TLS, ALPN offers h2: the connection may be shared.
            self.send_pooled(PoolKey::direct(target, https), https, request, connect)
                .await
        }
    }

    /// Sends `request` to `egress.target` by the route the egress hook chose (HTTP/1.1,
    /// TLS for `https` URIs): on an idle connection made for the same egress choice
    /// (`http/upstream_pool.rs`), else on a new one, with `egress` shown to the hook's
    /// `on_resolved`. Upgrades get a connection of their own.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice: see `Handler::handle_in_span`"
    )]
    pub fn send_alone(
        &self,
        route: &EgressRoute,
        egress: &EgressContext<App>,
        request: Request<HttpBody>,
    ) -> impl Future<Output = Result<Response<HttpBody>, UpstreamError>> {
        async move {
            // The request's own target only when the egress context has none: it is
            // the same, or the hook's rewrite.
            let parsed;
            let (on, https) = match &egress.target {
                Some(target) => (target, is_https(request.uri())),
                None => {
                    parsed = target_of(request.uri()).map_err(|e| classify(&e))?;
                    (&parsed.0, parsed.1)
                }
            };
            let services = &self.connector.services;
            let connect = async |on: &Target| {
                let (stream, _) = connect_by(services, route, egress)
                    .await
                    .map_err(connect_error)?;
                let tls = Overrides {
                    alpn: Some(HTTP1_ONLY),
                    policy: egress.tls_policy,
                    pin: egress.server_pin.as_deref(),
                    ..Overrides::default()
                };
                let reconnect = || async {
                    let (stream, _) = connect_by(services, route, egress).await?;
                    Ok(stream)
                };
                self.open(stream, on, https.then_some((tls, reconnect)))
                    .await
            };
            if request.headers().contains_key(http::header::UPGRADE) {
                return self.send_upgrade(on, request, connect).await;
            }
            let key = pool_key(route, on, https, egress);
            self.send_pooled(key, false, request, connect).await
        }
    }

    /// Sends an upgrade `request` on an HTTP/1.1 connection `connect` makes to
    /// `target`, which the upgrade takes over.
    async fn send_upgrade(
        &self,
        target: &Target,
        request: Request<HttpBody>,
        connect: impl AsyncFnOnce(&Target) -> Result<UpstreamConnection, UpstreamError>,
    ) -> Result<Response<HttpBody>, UpstreamError> {
        self.pool.count_connection(false);
        let UpstreamConnection::Http1(connection) = Box::pin(connect(target)).await? else {
            return Err(UpstreamError {
                status: http::StatusCode::BAD_GATEWAY,
                reason: "upstream_error",
                message: "the upstream chose HTTP/2, which has no upgrades".into(),
            });
        };
        let mut connection = to_hyper(connection).await.map_err(|e| classify(&e))?;
        send_on_hyper(&mut connection, request)
            .await
            .map_err(SendFailure::into_upstream_error)
    }

    /// Sends `request` on a connection kept for `key` (the shared HTTP/2 one, else an
    /// idle HTTP/1.1 one), else on one `connect` makes to `key.target`, which is kept
    /// under `key`: shared at once if it is HTTP/2, else when the response body ends. A
    /// kept connection that turns out closed before it took the request (the upstream
    /// closed it while idle) gives way to the next, or to a new one. A request the
    /// upstream refused unprocessed is sent once more the same way. When the connection
    /// may be HTTP/2 (`may_share`), requests wait for one being made for the same key
    /// (`http/upstream_pool.rs`).
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice: see `Handler::handle_in_span`"
    )]
    fn send_pooled(
        &self,
        mut key: PoolKey,
        may_share: bool,
        mut request: Request<HttpBody>,
        connect: impl AsyncFnOnce(&Target) -> Result<UpstreamConnection, UpstreamError> + Copy,
    ) -> impl Future<Output = Result<Response<HttpBody>, UpstreamError>> {
        async move {
            let pool = &self.pool;
            let mut refused_before = false;
            loop {
                let (connection, reused) = match pool.checkout(&key, may_share) {
                    Checkout::Found(connection) => (connection, true),
                    Checkout::Wait(mut made) => {
                        // Made or given up (its maker gone): look again.
                        let _ = made.changed().await;
                        if let Some(e) = made.borrow().clone() {
                            return Err(e);
                        }
                        continue;
                    }
                    Checkout::Connect(connecting) => {
                        pool.count_connection(false);
                        // Boxed: connecting (DNS, happy eyeballs, TLS) is by far the largest
                        // state of a request, and only a request that finds no idle
                        // connection needs it; inline, every request's future would carry
                        // (and move) its size.
                        let connection = match Box::pin(connect(&key.target)).await {
                            Ok(connection) => connection,
                            Err(e) => {
                                if let Some(connecting) = connecting {
                                    connecting.failed(&e);
                                }
                                return Err(e);
                            }
                        };
                        pool.made(&key, &connection, connecting);
                        (connection, false)
                    }
                };
                match self.send_on(key, connection, request).await {
                    Ok(response) => {
                        if reused {
                            pool.count_connection(true);
                        }
                        return Ok(response);
                    }
                    Err((same, SendFailure::Unsent(unsent, e))) if reused => {
                        tracing::debug!(error = %e, "a pooled upstream connection closed while idle");
                        (key, request) = (same, *unsent);
                    }
                    Err((same, SendFailure::Refused(again, e))) if !refused_before => {
                        tracing::debug!(error = %e, "the upstream refused a request unprocessed; sending it again");
                        refused_before = true;
                        (key, request) = (same, *again);
                    }
                    Err((_, failure)) => return Err(failure.into_upstream_error()),
                }
            }
        }
    }

    /// Sends `request` on `connection`, taken for `key`: an HTTP/1.1 connection goes
    /// back to the pool under `key` when the response body ends. A failure gives `key`
    /// back.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice: see `Handler::handle_in_span`"
    )]
    fn send_on(
        &self,
        key: PoolKey,
        connection: UpstreamConnection,
        request: Request<HttpBody>,
    ) -> impl Future<Output = Result<Response<HttpBody>, (PoolKey, SendFailure)>> {
        async move {
            match connection {
                UpstreamConnection::Http1(PooledConnection {
                    link: Http1Link::Own { io, buffer },
                    facts,
                    ..
                }) if h1_exchange::fits(&request) => {
                    let request = with_host(request);
                    match h1_exchange::exchange(io, buffer, facts, &request).await {
                        Ok(response) => {
                            Ok(response.map(|body| body.returning_to(self.pool.returner(key))))
                        }
                        Err(e @ ExchangeError::ClosedBeforeAnswer(_))
                            if h1_exchange::idempotent(request.method()) =>
                        {
                            Err((key, SendFailure::Unsent(Box::new(request), e.into())))
                        }
                        Err(e) => Err((key, SendFailure::Failed(e.into()))),
                    }
                }
                UpstreamConnection::Http1(connection) => {
                    let mut connection = match to_hyper(connection).await {
                        Ok(connection) => connection,
                        Err(e) => return Err((key, SendFailure::Failed(e.into()))),
                    };
                    match send_on_hyper(&mut connection, request).await {
                        Ok(response) => Ok(response.map(|body| {
                            let HyperConnection { sender, facts } = connection;
                            let connection = PooledConnection::new(Http1Link::Hyper(sender), facts);
                            boxed(self.pool.return_at_end(key, connection, body))
                        })),
                        Err(failure) => Err((key, failure)),
                    }
                }
                UpstreamConnection::Http2(mut shared) => send_on_shared(&mut shared, request)
                    .await
                    .map_err(|failure| (key, failure)),
            }
        }
    }

    /// A connection over `stream` (already reaching `target`), with TLS first when `tls`
    /// is given (with a way to connect again, to complete the chain): HTTP/2 when ALPN
    /// chose it, else HTTP/1.1.
    async fn open<R, F>(
        &self,
        stream: TcpStream,
        target: &Target,
        tls: Option<(Overrides<'_>, R)>,
    ) -> Result<UpstreamConnection, UpstreamError>
    where
        R: FnOnce() -> F,
        F: Future<Output = Result<TcpStream, ConnectError>>,
    {
        let (io, facts) = match tls {
            Some((tls, reconnect)) => {
                let tls = self
                    .connector
                    .tls_connect(target, stream, tls, reconnect)
                    .await
                    .map_err(|e| classify(&e))?;
                let facts = Arc::new(UpstreamTlsFacts::of(tls.ssl()));
                (UpstreamStream::Tls(Box::new(tls)), Some(facts))
            }
            None => (UpstreamStream::Plain(stream), None),
        };
        if facts.as_ref().and_then(|f| f.alpn.as_deref()) == Some("h2") {
            let (interval, timeout) = self.h2_keep_alive;
            let (sender, connection) =
                hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    // Idle too: the pool keeps the connection for the next requests.
                    .keep_alive_interval(interval)
                    .keep_alive_timeout(timeout)
                    .keep_alive_while_idle(true)
                    .handshake(TokioIo::new(io))
                    .await
                    .map_err(|e| classify(&e))?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "upstream connection ended with an error");
                }
            });
            return Ok(UpstreamConnection::Http2(SharedConnection {
                sender,
                facts,
            }));
        }
        Ok(UpstreamConnection::Http1(PooledConnection::new(
            Http1Link::Own {
                io,
                buffer: BytesMut::new(),
            },
            facts,
        )))
    }

    /// A client whose connections go through `services`' off-ramp, for the endpoint
    /// `endpoint` (which labels its metrics).
    pub fn new(
        services: Arc<Services<App>>,
        settings: &HttpClientSettings,
        endpoint: &str,
    ) -> io::Result<Self> {
        let tls = crate::tls::client::connector(settings)?;
        let connector = OffRampConnector {
            services,
            tls: Arc::new(tls),
            endpoint: endpoint.into(),
            issuers: Arc::default(),
            checker: Arc::new(Checker::new(&settings.crl_files).map_err(io::Error::other)?),
            revocation: settings.revocation,
        };
        let pool = UpstreamPool::new(
            settings.pool_idle_timeout,
            settings.pool_max_idle_per_upstream,
            endpoint,
        );
        let interval = Some(settings.h2_keep_alive_interval).filter(|i| !i.is_zero());
        Ok(Self {
            connector,
            pool,
            h2_keep_alive: (interval, settings.h2_keep_alive_timeout),
        })
    }
}

/// ALPN offering HTTP/1.1 alone (wire format).
const HTTP1_ONLY: &[u8] = b"\x08http/1.1";

/// A failure of an exchange, whichever client had it.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request on a connection failed.
enum SendFailure {
    /// The connection closed before it took the request, which is given back: hyper
    /// saw it closed, or the upstream closed it on an idempotent request before a byte
    /// of its answer.
    Unsent(Box<Request<HttpBody>>, BoxError),
    /// The upstream refused the request without processing it (HTTP/2: a stream above
    /// the last one a graceful GOAWAY accepted, or reset with REFUSED_STREAM; RFC 9113
    /// §8.7), and it had no body, so here it is again.
    Refused(Box<Request<HttpBody>>, BoxError),
    /// The exchange failed.
    Failed(BoxError),
}

impl SendFailure {
    /// Why hyper's `try_send_request` failed: with the request when it was never sent.
    fn of(mut e: hyper::client::conn::TrySendError<Request<HttpBody>>) -> Self {
        match e.take_message() {
            Some(request) => SendFailure::Unsent(Box::new(request), e.into_error().into()),
            None => SendFailure::Failed(e.into_error().into()),
        }
    }

    fn into_upstream_error(self) -> UpstreamError {
        match self {
            SendFailure::Unsent(_, e) | SendFailure::Refused(_, e) | SendFailure::Failed(e) => {
                classify(e.as_ref())
            }
        }
    }
}

/// An HTTP/1.1 connection hyper drives, and its TLS facts.
struct HyperConnection {
    sender: http1::SendRequest<HttpBody>,
    facts: Option<Arc<UpstreamTlsFacts>>,
}

/// `connection`, driven by a hyper connection task of its own from now on (upgrades
/// included) if Oxy drove it.
async fn to_hyper(connection: PooledConnection) -> Result<HyperConnection, hyper::Error> {
    let PooledConnection { link, facts, .. } = connection;
    let io = match link {
        Http1Link::Own { io, .. } => io,
        Http1Link::Hyper(sender) => return Ok(HyperConnection { sender, facts }),
    };
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(HyperConnection { sender, facts })
}

/// `request` with a `Host` header when it has none and its URI names an authority:
/// the URI's host, and its port unless it is the scheme's default.
fn with_host(mut request: Request<HttpBody>) -> Request<HttpBody> {
    if request.uri().authority().is_some()
        && !request.headers().contains_key(http::header::HOST)
        && let Some(host) = host_header(request.uri())
    {
        request.headers_mut().insert(http::header::HOST, host);
    }
    request
}

/// Sends `request` as HTTP/1.1 in origin form on `connection`, with a `Host` header
/// when it has none (see [`with_host`]).
async fn send_on_hyper(
    connection: &mut HyperConnection,
    request: Request<HttpBody>,
) -> Result<Response<HttpBody>, SendFailure> {
    let mut request = with_host(request);
    *request.version_mut() = http::Version::HTTP_11;
    if request.uri().authority().is_some() {
        let origin_form = match request.uri().path_and_query() {
            Some(path) => http::Uri::from(path.clone()),
            None => http::Uri::from_static("/"),
        };
        *request.uri_mut() = origin_form;
    }
    let response = (connection.sender.try_send_request(request).await).map_err(SendFailure::of)?;
    Ok(with_upgrade(with_facts(
        response,
        connection.facts.as_ref(),
    )))
}

/// Sends `request` on the HTTP/2 `connection`, its URI absolute (hyper writes the
/// `:scheme` and `:authority` from it). A `Host` header becomes the `:authority`, as
/// over HTTP/1.1 the upstream sees the host the client asked for: sent beside an
/// `:authority` naming another host, it makes the request malformed (RFC 9113 §8.3.1).
async fn send_on_shared(
    connection: &mut SharedConnection,
    mut request: Request<HttpBody>,
) -> Result<Response<HttpBody>, SendFailure> {
    *request.version_mut() = http::Version::HTTP_2;
    if let Some(host) = request.headers_mut().remove(http::header::HOST)
        && let Ok(authority) = http::uri::Authority::try_from(host.as_bytes())
    {
        let mut uri = request.uri().clone().into_parts();
        uri.authority = Some(authority);
        if let Ok(uri) = http::Uri::from_parts(uri) {
            *request.uri_mut() = uri;
        }
    }
    // A request without a body can be sent again if the upstream refuses it unprocessed;
    // hyper keeps nothing of a request it has handed to h2.
    let (parts, body) = request.into_parts();
    let again = body.is_end_stream().then(|| parts.clone());
    let response = match connection
        .sender
        .try_send_request(Request::from_parts(parts, body))
        .await
    {
        Ok(response) => response,
        Err(e) => {
            return Err(match (SendFailure::of(e), again) {
                (SendFailure::Failed(e), Some(parts))
                    if e.downcast_ref().is_some_and(refused_unprocessed) =>
                {
                    SendFailure::Refused(Box::new(Request::from_parts(parts, empty())), e)
                }
                (failure, _) => failure,
            });
        }
    };
    Ok(with_facts(response, connection.facts.as_ref()).map(boxed))
}

/// Whether an HTTP/2 upstream refused a request without processing it, so that it may be
/// sent again (RFC 9113 §8.7): a graceful GOAWAY (`NO_ERROR`) whose last stream is below
/// the request's, or a reset with REFUSED_STREAM. h2 gives a remote GOAWAY's `NO_ERROR`
/// only to the streams that GOAWAY left out; the streams of a connection that closes
/// after a GOAWAY with an error, processed or not, get that error.
fn refused_unprocessed(e: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(stream) = err.downcast_ref::<h2::Error>() {
            let reason = stream.reason();
            return stream.is_remote()
                && ((stream.is_go_away() && reason == Some(h2::Reason::NO_ERROR))
                    || (stream.is_reset() && reason == Some(h2::Reason::REFUSED_STREAM)));
        }
        source = err.source();
    }
    false
}

/// `response` with the TLS facts of the connection it came on, if any.
fn with_facts<B>(mut response: Response<B>, facts: Option<&Arc<UpstreamTlsFacts>>) -> Response<B> {
    if let Some(facts) = facts {
        response.extensions_mut().insert(facts.clone());
    }
    response
}

/// The `Host` header for `uri`: its host, with its port unless that is the scheme's
/// default (no user information).
fn host_header(uri: &http::Uri) -> Option<http::HeaderValue> {
    let authority = uri.authority()?;
    let default = if is_https(uri) { 443 } else { 80 };
    match authority.port_u16() {
        Some(port) if port == default => http::HeaderValue::from_str(authority.host()).ok(),
        // The authority's own `host:port` (or host), without user information.
        _ => {
            let text = authority.as_str();
            let host_port = text
                .rsplit_once('@')
                .map_or(text, |(_, host_port)| host_port);
            http::HeaderValue::from_str(host_port).ok()
        }
    }
}

/// What a connection made by `route` to `target` for `egress` may be reused for.
fn pool_key<App: OxyExt>(
    route: &EgressRoute,
    target: &Target,
    https: bool,
    egress: &EgressContext<App>,
) -> PoolKey {
    let internal = matches!(route, EgressRoute::Internal(_));
    PoolKey {
        route: route.clone(),
        target: target.clone(),
        https,
        tls_policy: egress.tls_policy.map(|p| p.as_str()),
        server_pin: egress.server_pin.clone(),
        client: if internal {
            egress.client_addr
        } else {
            std::net::SocketAddr::new(egress.client_addr.ip(), 0)
        },
        local: internal.then_some(egress.local_addr),
        proxy_user: egress.proxy_user.clone(),
    }
}

fn connect_error(e: ConnectError) -> UpstreamError {
    classify(&UpstreamConnectError::Connect(e))
}

/// Whether an upstream URI is `https`.
fn is_https(uri: &http::Uri) -> bool {
    uri.scheme_str() == Some("https")
}

/// The target an upstream URI names, and whether it is `https`.
fn target_of(uri: &http::Uri) -> Result<(Target, bool), UpstreamConnectError> {
    let https = is_https(uri);
    let target = uri
        .authority()
        .and_then(|authority| target_of_authority(authority.as_str(), https))
        .ok_or_else(|| UpstreamConnectError::BadUri(uri.to_string()))?;
    Ok((target, https))
}

/// The target an upstream's `authority` names, on port 443 or 80 (by `https`) when
/// none is written; `None` without a host or for a port that is no `u16`.
pub(super) fn target_of_authority(authority: &str, https: bool) -> Option<Target> {
    let default_port = if https { 443 } else { 80 };
    let (host, port) =
        host_and_port_number(authority, default_port).filter(|(host, _)| !host.is_empty())?;
    Some(Target {
        host: TargetHost::from_uri_host(host),
        port,
    })
}

/// A response with a streaming body; a 101 carries the upstream side of the upgrade.
fn with_upgrade(mut response: Response<hyper::body::Incoming>) -> Response<HttpBody> {
    if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        let upgrade = hyper::upgrade::on(&mut response);
        response
            .extensions_mut()
            .insert(PendingUpgrade::new(async move {
                let upgraded = upgrade.await.map_err(io::Error::other)?;
                Ok(Upgraded::Boxed(Box::new(TokioIo::new(upgraded))))
            }));
    }
    response.map(boxed)
}

/// Maps a client error to 400 (the client's body failed), 403 (denied, blocked body),
/// 408 (the client's body stalled), 413, 504 (timeout) or 502.
fn classify(e: &(dyn std::error::Error + 'static)) -> UpstreamError {
    use http::StatusCode;
    let fail = |status, reason, message: String| UpstreamError {
        status,
        reason,
        message,
    };
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(client) = err.downcast_ref::<ClientBodyError>() {
            return fail(StatusCode::BAD_REQUEST, "client_body", client.to_string());
        }
        if err.downcast_ref::<BodyIdleTimeout>() == Some(&BodyIdleTimeout::Request) {
            return fail(
                StatusCode::REQUEST_TIMEOUT,
                "request_body_timeout",
                BodyIdleTimeout::Request.to_string(),
            );
        }
        if let Some(BodyBlocked(reason)) = err.downcast_ref::<BodyBlocked>() {
            return fail(StatusCode::FORBIDDEN, "body_blocked", reason.clone());
        }
        if err.is::<LengthLimitError>() {
            return fail(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the request body is too large".into(),
            );
        }
        if let Some(connect) = err.downcast_ref::<UpstreamConnectError>() {
            let (status, reason) = match connect {
                UpstreamConnectError::Connect(
                    ConnectError::Denied(_) | ConnectError::DeniedByHook(_),
                ) => (StatusCode::FORBIDDEN, "denied"),
                UpstreamConnectError::Connect(ConnectError::Connect(
                    HappyEyeballsError::TimedOut,
                )) => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
                UpstreamConnectError::Tls(TlsConnectError::Handshake(_)) => {
                    (StatusCode::BAD_GATEWAY, "upstream_tls")
                }
                UpstreamConnectError::Tls(TlsConnectError::Refused { .. }) => {
                    (StatusCode::BAD_GATEWAY, "upstream_certificate")
                }
                _ => (StatusCode::BAD_GATEWAY, "upstream_connect"),
            };
            return fail(status, reason, connect.to_string());
        }
        source = err.source();
    }
    tracing::debug!(error = %e, "upstream request failed");
    fail(
        StatusCode::BAD_GATEWAY,
        "upstream_error",
        "the upstream connection failed".into(),
    )
}

/// Makes upstream connections through the off-ramp, with TLS for `https` URIs.
pub struct OffRampConnector<App: OxyExt> {
    services: Arc<Services<App>>,
    tls: Arc<UpstreamConnector>,
    endpoint: Arc<str>,
    /// Intermediates fetched from caIssuers URLs.
    issuers: Arc<aia::IssuerCache>,
    /// CRL files and the CRLs fetched from distribution points.
    checker: Arc<Checker>,
    revocation: Revocation,
}

impl<App: OxyExt> OffRampConnector<App> {
    /// TLS to `target` over `stream` (see [`crate::tls::client::connect`]). When the
    /// upstream's chain lacks an intermediate its certificate names a caIssuers URL for,
    /// the intermediate is fetched (through the off-ramp, bounded, cached) and the
    /// connection made again with `reconnect`.
    async fn tls_connect<R, F>(
        &self,
        target: &Target,
        stream: TcpStream,
        overrides: Overrides<'_>,
        reconnect: R,
    ) -> Result<tokio_boring::SslStream<TcpStream>, UpstreamConnectError>
    where
        R: FnOnce() -> F,
        F: Future<Output = Result<TcpStream, ConnectError>>,
    {
        let (tls, endpoint) = (&*self.tls, &*self.endpoint);
        let upstream = target.to_string();
        // An upstream whose chain needed an issuer before gets it at once.
        let known = self.issuers.for_upstream(&upstream);
        let first = Overrides {
            completion: known.as_ref().map(|c| &c.store).or(overrides.completion),
            may_fetch_issuer: true,
            ..overrides
        };
        let first = crate::tls::client::connect(tls, endpoint, target, stream, first).await;
        let Err(TlsConnectError::MissingIssuer { url, .. }) = first else {
            let stream = first?;
            let fetched = known.as_ref().map(|c| &c.issuer);
            self.check_revocation(&stream, target, fetched).await?;
            return Ok(stream);
        };
        let completion = match self.issuers.get(&url) {
            Some(completion) => completion,
            None => {
                let refuse = |e: String| {
                    let reason = format!("its issuer could not be fetched from {url}: {e}");
                    let label = "unknown_issuer";
                    crate::tls::client::refused(endpoint, label, target, reason)
                };
                let issuer = fetch_issuer(&self.services, &url).await.map_err(refuse)?;
                tls.completion(issuer).await.map_err(refuse)?
            }
        };
        self.issuers.put(&url, &upstream, completion.clone());
        let stream = reconnect().await?;
        let with_issuer = Overrides {
            completion: Some(&completion.store),
            may_fetch_issuer: false,
            ..overrides
        };
        let second = crate::tls::client::connect(tls, endpoint, target, stream, with_issuer);
        let stream = second.await?;
        self.check_revocation(&stream, target, Some(&completion.issuer))
            .await?;
        Ok(stream)
    }

    /// Refuses a verified upstream whose chain has a revoked certificate (reason
    /// `revoked`); an unknown status passes under `soft_fail` (counted) and is refused
    /// under `hard_fail`. `fetched` is the issuer completed from AIA, if any.
    async fn check_revocation(
        &self,
        stream: &tokio_boring::SslStream<TcpStream>,
        target: &Target,
        fetched: Option<&boring::x509::X509>,
    ) -> Result<(), UpstreamConnectError> {
        if self.revocation == Revocation::Off {
            return Ok(());
        }
        let ssl = stream.ssl();
        let sent: Vec<_> = ssl
            .peer_cert_chain()
            .into_iter()
            .flat_map(|chain| chain.iter().map(ToOwned::to_owned))
            .collect();
        let roots = self.tls.roots().await;
        let verdict = match revocation::links(&sent, fetched, &roots) {
            Ok(links) => {
                let get_crl = |url: String| async move {
                    fetch(&self.services, &url, revocation::MAX_CRL_BYTES).await
                };
                self.checker
                    .verdict(&links, ssl.ocsp_status(), get_crl)
                    .await
            }
            Err(why) => Verdict::Unknown(format!("its revocation status is unknown: {why}")),
        };
        let endpoint = &*self.endpoint;
        let refuse = |label, reason| crate::tls::client::refused(endpoint, label, target, reason);
        match (verdict, self.revocation) {
            (Verdict::Good, _) | (_, Revocation::Off) => Ok(()),
            (Verdict::Revoked(reason), _) => Err(refuse("revoked", reason).into()),
            (Verdict::Unknown(reason), Revocation::HardFail) => {
                Err(refuse("revocation_unknown", reason).into())
            }
            (Verdict::Unknown(reason), Revocation::SoftFail) => {
                oxy_tls::revocation_unknown_total(endpoint).inc();
                tracing::info!(upstream = %target, %reason, "passed (soft_fail)");
                Ok(())
            }
        }
    }
}

/// The certificate at a caIssuers `url` (see [`fetch`]).
async fn fetch_issuer<App: OxyExt>(
    services: &Arc<Services<App>>,
    url: &str,
) -> Result<boring::x509::X509, String> {
    let bytes = fetch(services, url, aia::MAX_ISSUER_BYTES).await?;
    aia::parse_issuer(&bytes)
}

/// What `url` (`http://`) serves: one HTTP/1.1 GET through the off-ramp (egress policy
/// included), at most `limit` bytes, within five seconds.
async fn fetch<App: OxyExt>(
    services: &Arc<Services<App>>,
    url: &str,
    limit: usize,
) -> Result<bytes::Bytes, String> {
    let fetch = async {
        let uri: http::Uri = url.parse().map_err(|_| "not a URL".to_string())?;
        let (target, _) = target_of(&uri).map_err(|e| e.to_string())?;
        let (stream, _) = connect_target(services, &target, None, None)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let request = Request::get(path)
            .header(http::header::HOST, target.to_string())
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("it answered {}", response.status()));
        }
        let body = http_body_util::Limited::new(response.into_body(), limit);
        let bytes = http_body_util::BodyExt::collect(body)
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(bytes)
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), fetch)
        .await
        .map_err(|_| "no answer within 5 seconds".to_string())?
}

/// Why an upstream connection failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamConnectError {
    /// The URI has no usable host or port.
    #[error("bad upstream URI: {0}")]
    BadUri(String),
    /// The off-ramp refused or failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// TLS with the upstream failed, or its credentials were refused.
    #[error(transparent)]
    Tls(#[from] TlsConnectError),
}

/// A connection to an upstream, plain or TLS.
pub enum UpstreamStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_boring::SslStream<TcpStream>>),
}

impl UpstreamStream {
    fn io(&self) -> &dyn ByteStream {
        match self {
            UpstreamStream::Plain(s) => s,
            UpstreamStream::Tls(s) => s.as_ref(),
        }
    }

    fn io_mut(&mut self) -> &mut dyn ByteStream {
        match self {
            UpstreamStream::Plain(s) => s,
            UpstreamStream::Tls(s) => s.as_mut(),
        }
    }
}

delegate_byte_stream!(UpstreamStream);

#[cfg(test)]
mod tests {
    use super::host_header;

    #[test]
    fn host_header_names_the_port_only_when_it_is_not_the_default() {
        let host = |uri: &str| host_header(&uri.parse().unwrap()).unwrap();
        assert_eq!(host("http://app:80/x"), "app");
        assert_eq!(host("http://app/x"), "app");
        assert_eq!(host("http://app:8080/x"), "app:8080");
        assert_eq!(host("https://app:443/"), "app");
        assert_eq!(host("https://app:80/"), "app:80");
        assert_eq!(host("http://[2001:db8::1]:8080/"), "[2001:db8::1]:8080");
        assert_eq!(host("http://user:pw@app:8080/"), "app:8080");
    }
}
