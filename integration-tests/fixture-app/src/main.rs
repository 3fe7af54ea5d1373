//! A test fixture app: hooks that the integration tests steer through settings
//! (reject, hold, panic), to observe the framework from outside.

use oxy::http::body_tap::{BodyTap, TapVerdict};
use oxy::http::form::{FormField, FormInspector, form_tap};
use oxy::http::proxy_auth;
use oxy::http::stream_search::StreamSearch;
use oxy::prelude::*;
use oxy::settings::TlsPolicy;
use oxy::tls::client::UpstreamTlsFacts;
use std::time::Duration;

mod dns;
mod ip_flows;

/// Settings of the fixture's `app:` section.
#[oxy_app_settings]
pub struct FixtureSettings {
    /// Logged once at start, to show that `app:` settings reach the application.
    #[serde(default = "default_greeting")]
    pub greeting: String,
    /// When not empty, `start` fails with this message.
    pub fail_start: String,
    /// `name=ip`: the DNS hook answers `name` with `ip`, whatever the resolver said.
    pub dns_override: String,
    /// The DNS hook refuses answers for this name.
    pub dns_veto: String,
}

fn default_greeting() -> String {
    "hello from the fixture".into()
}

/// Settings of each endpoint's `app:` section.
#[oxy_app_settings]
pub struct FixtureEndpointSettings {
    /// When not empty, every connection on this endpoint is rejected with this reason.
    pub reject_reason: String,
    /// Panic in the ingress hook on every connection to this endpoint.
    pub panic_on_connect: bool,
    /// Keep each connection in the ingress hook this many milliseconds.
    pub hold_ms: u64,
    /// When not empty, the egress hook sends every connection here (`host:port`).
    pub egress_target: String,
    /// When not empty, the egress hook sends UDP flows here instead (`host:port`).
    pub egress_udp_target: String,
    /// When not empty, the egress hook chains every connection through this HTTP proxy
    /// (`host:port`).
    pub upstream_proxy: String,
    /// `user:password` for `upstream_proxy`.
    pub upstream_proxy_credentials: String,
    /// When not empty, the egress hook sends every connection to this internal service
    /// (`host:port`) behind a PROXY v2 header.
    pub internal_service: String,
    /// Value of the application TLV (type 0xE0) in the PROXY v2 header.
    pub internal_tlv: String,
    /// Send a PROXY v1 header (no TLVs) instead of v2 to the internal service.
    pub internal_v1: bool,
    /// When not empty, the egress hook binds connections to this local address.
    pub bind_to: String,
    /// When not empty, the tunnel hook blocks every tunnel with this reason.
    pub tunnel_block: String,
    /// When not empty, the tunnel hook redirects every tunnel here (`host:port`).
    pub tunnel_redirect: String,
    /// The tunnel hook asks to look inside every TCP tunnel and UDP flow (serve the HTTP
    /// inside, intercept TLS and QUIC); what is neither is passed.
    pub tunnel_decapsulate: bool,
    /// When not zero, the tunnel hook sets this idle timeout (milliseconds).
    pub tunnel_idle_ms: u64,
    /// When not empty, requests whose path starts with it are blocked with 403.
    pub block_path_prefix: String,
    /// When not empty, requests for exactly this path are answered by the app itself.
    pub respond_path: String,
    /// When not empty, a request for exactly this path makes the hook replace the
    /// process with `/bin/true` (`execve`, which seccomp forbids): the answer is a 500
    /// naming the error, if the process is still there to give it.
    pub exec_path: String,
    /// When not empty, requests for exactly this path are answered by the app with the
    /// request's TLS facts as JSON (`intercepted`, `sni`, `alpn`, `version`).
    pub tls_facts_path: String,
    /// The ingress hook holds TLS connections arriving on this local address to the
    /// `fips_202205` compliance policy.
    pub fips_local_ip: String,
    /// The egress hook holds TLS towards this upstream host to `fips_202205`.
    pub fips_upstream_host: String,
    /// When not empty, the egress hook expects every `https` upstream to present the
    /// raw public key with this SHA-256 pin (hex).
    pub upstream_server_pin: String,
    /// The tunnel hook declines TLS and QUIC interception for ClientHellos with this
    /// server name.
    pub intercept_pass_sni: String,
    /// When not empty, requests whose host is `route_host` go to `route_to` (`host:port`).
    pub route_host: String,
    /// Where `route_host` requests go.
    pub route_to: String,
    /// When not empty, form uploads with a field value containing it are blocked.
    pub block_form_value: String,
    /// When not empty, responses whose body contains it are cut off.
    pub block_response_value: String,
    /// When not empty, proxy requests need `Proxy-Authorization: Basic` with this
    /// password (any user): the app's own proxy authentication.
    pub proxy_password: String,
    /// The IP flow hook drops flows to this address.
    pub ip_drop_destination: String,
    /// The IP flow hook upgrades UDP flows to UDP tunnels.
    pub ip_upgrade_udp: bool,
    /// When not zero, the IP flow hook upgrades TCP flows to this port to TCP tunnels.
    pub ip_upgrade_tcp_port: u16,
    /// `on_upstream_request` adds `x-fixture-upstream: <upstream>` to proxied requests.
    pub mark_upstream_requests: bool,
    /// When not empty, `on_upstream_request` answers requests for this path with 451
    /// instead of sending them.
    pub refuse_upstream_path: String,
    /// `on_error_response` renders Oxy's own error answers as an HTML page.
    pub error_page: bool,
}

#[metrics]
mod fixture {
    /// Connections the fixture's ingress hook saw, by endpoint.
    pub fn connections_seen_total(endpoint: &str) -> Counter;
}

/// The description is given here (the package has none), to exercise the attribute.
#[derive(OxyExt)]
#[oxy(
    description = "Hooks steered by settings, for Oxy's integration tests",
    app_settings = FixtureSettings,
    endpoint_settings = FixtureEndpointSettings,
    connection_context = ConnectionState,
    tunnel_context = String,
    ip_tunnel_context = u64,
    dns_cache_item = String
)]
struct Fixture;

/// What the ingress hook keeps for a connection, which its requests, egress decisions
/// and tunnels reach.
#[derive(Default)]
struct ConnectionState {
    /// The client as the ingress hook saw it.
    client: String,
    /// Requests the request hook has seen on the connection.
    requests: std::sync::atomic::AtomicU64,
}

struct Observer;

#[async_trait]
impl IngressHook<Fixture> for Observer {
    async fn on_connection(&self, cx: &mut IngressConnectionContext<Fixture>) -> IngressAction {
        let settings = cx.endpoint.app_settings();
        fixture::connections_seen_total(cx.endpoint.name()).inc();
        tracing::info!(
            endpoint = cx.endpoint.name(),
            peer = %cx.peer_addr,
            client = %cx.client_addr,
            local = %cx.local_addr,
            "fixture saw a connection"
        );
        if settings.panic_on_connect {
            panic!("fixture panic on endpoint {}", cx.endpoint.name());
        }
        if settings.hold_ms > 0 {
            tokio::time::sleep(Duration::from_millis(settings.hold_ms)).await;
        }
        if settings.fips_local_ip.parse() == Ok(cx.local_addr.ip()) {
            cx.tls_policy = TlsPolicy::Fips202205;
        }
        if !settings.reject_reason.is_empty() {
            return IngressAction::Reject(settings.reject_reason.clone());
        }
        cx.app = Arc::new(ConnectionState {
            client: cx.client_addr.to_string(),
            requests: Default::default(),
        });
        IngressAction::Continue
    }

    async fn on_connection_end(
        &self,
        cx: &mut IngressConnectionContext<Fixture>,
        summary: &ConnectionSummary,
    ) {
        tracing::info!(endpoint = cx.endpoint.name(), end = ?summary.end, "fixture saw the end");
    }
}

struct Router;

/// Blocks a form whose field values contain the needle.
struct NeedleInForm(StreamSearch);

/// Blocks a body that contains the needle.
struct NeedleInBody(StreamSearch);

#[async_trait]
impl BodyTap for NeedleInBody {
    async fn on_chunk(&mut self, chunk: &oxy::reexports::bytes::Bytes) -> TapVerdict {
        if self.0.found_in(chunk) {
            TapVerdict::Block("the response carries a forbidden value".into())
        } else {
            TapVerdict::Continue
        }
    }

    /// The needle may be split over chunks: its length less one waits.
    fn undecided_tail(&self) -> Option<usize> {
        Some(self.0.undecided())
    }
}

impl FormInspector for NeedleInForm {
    fn on_field(&mut self, _field: &FormField) -> TapVerdict {
        self.0.reset();
        TapVerdict::Continue
    }

    fn on_field_chunk(&mut self, field: &FormField, chunk: &[u8]) -> TapVerdict {
        if self.0.found_in(chunk) {
            TapVerdict::Block(format!("field {} carries a forbidden value", field.name))
        } else {
            TapVerdict::Continue
        }
    }
}

#[async_trait]
impl HttpRequestHook<Fixture> for Router {
    async fn on_upstream_request(
        &self,
        request: &mut oxy::http_types::request::Parts,
        upstream: &Upstream,
        cx: &mut RequestContext<Fixture>,
    ) -> Option<oxy::http_types::Response<HttpBody>> {
        let settings = cx.endpoint.app_settings();
        if !settings.refuse_upstream_path.is_empty()
            && request.uri.path() == settings.refuse_upstream_path
        {
            let mut response =
                oxy::http_types::Response::new(oxy::http::body::full("refused before sending\n"));
            *response.status_mut() = oxy::http_types::StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS;
            return Some(response);
        }
        if settings.mark_upstream_requests
            && let Ok(value) = upstream.authority.as_str().parse()
        {
            request.headers.insert("x-fixture-upstream", value);
        }
        None
    }

    async fn on_error_response(
        &self,
        summary: &RequestSummary<Fixture>,
    ) -> Option<oxy::http_types::Response<HttpBody>> {
        if !summary.endpoint.app_settings().error_page {
            return None;
        }
        let reason = summary
            .local
            .clone()
            .unwrap_or_default()
            .replace('<', "&lt;");
        let page = format!("<h1>Oxy {}</h1><p>{reason}</p>", summary.status.as_u16());
        let mut response = oxy::http_types::Response::new(oxy::http::body::full(page));
        *response.status_mut() = summary.status;
        let html = oxy::http_types::HeaderValue::from_static("text/html");
        response
            .headers_mut()
            .insert(oxy::http_types::header::CONTENT_TYPE, html);
        Some(response)
    }

    async fn on_request(
        &self,
        request: &mut oxy::http_types::request::Parts,
        cx: &mut RequestContext<Fixture>,
    ) -> RequestAction {
        let settings = cx.endpoint.app_settings();
        let connection = &cx.connection.app;
        let seen = 1 + (connection.requests).fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let is_proxy_request =
            request.method == oxy::http_types::Method::CONNECT || request.uri.scheme().is_some();
        if !settings.proxy_password.is_empty() && is_proxy_request {
            let credentials = proxy_auth::basic_credentials(&request.headers);
            let Some((user, password)) = credentials else {
                return RequestAction::Respond(proxy_auth::authentication_required("fixture"));
            };
            if password != settings.proxy_password {
                return RequestAction::Respond(proxy_auth::authentication_required("fixture"));
            }
            // The app's own authentication names the user, as `proxy_auth` would.
            cx.proxy_user = Some(user);
        }
        let path = request.uri.path();
        if !settings.block_path_prefix.is_empty() && path.starts_with(&settings.block_path_prefix) {
            let mut headers = oxy::http_types::HeaderMap::new();
            let by = oxy::http_types::HeaderValue::from_static("fixture");
            headers.insert("x-blocked-by", by);
            return RequestAction::Block {
                status: oxy::http_types::StatusCode::FORBIDDEN,
                reason: format!("blocked by the fixture: {path}"),
                headers,
            };
        }
        if !settings.exec_path.is_empty() && path == settings.exec_path {
            use std::os::unix::process::CommandExt;
            let error = std::process::Command::new("/bin/true").exec();
            return RequestAction::Respond(oxy::http::body::text_response(
                oxy::http_types::StatusCode::INTERNAL_SERVER_ERROR,
                &format!("exec refused: {error}"),
            ));
        }
        if !settings.tls_facts_path.is_empty() && path == settings.tls_facts_path {
            let tls = cx.tls.as_deref();
            let text = |value: Option<&str>| value.map_or("null".into(), |v| format!("{v:?}"));
            let body = format!(
                "{{\"intercepted\":{},\"sni\":{},\"alpn\":{},\"version\":{}}}",
                tls.is_some_and(|t| t.intercepted),
                text(tls.and_then(|t| t.sni.as_deref())),
                text(tls.and_then(|t| t.alpn.as_deref())),
                text(tls.map(|t| t.version.as_str())),
            );
            let mut response = oxy::http_types::Response::new(oxy::http::body::full(body));
            let json = oxy::http_types::HeaderValue::from_static("application/json");
            let headers = response.headers_mut();
            headers.insert(oxy::http_types::header::CONTENT_TYPE, json);
            return RequestAction::Respond(response);
        }
        if !settings.respond_path.is_empty() && path == settings.respond_path {
            let mut response = oxy::http::body::text_response(
                oxy::http_types::StatusCode::OK,
                "hello from the fixture app",
            );
            let connection = [
                ("x-connection-id", cx.connection.id.to_string()),
                ("x-connection-client", cx.connection.app.client.clone()),
                ("x-connection-requests", seen.to_string()),
                ("x-proxy-user", cx.proxy_user.clone().unwrap_or_default()),
            ];
            for (name, value) in connection {
                if let Ok(value) = oxy::http_types::HeaderValue::from_str(&value) {
                    response.headers_mut().insert(name, value);
                }
            }
            if let Some(tls) = &cx.tls {
                let client = tls.client_certificate.as_ref();
                let facts = [
                    ("x-tls-sni", tls.sni.clone().unwrap_or_default()),
                    ("x-tls-alpn", tls.alpn.clone().unwrap_or_default()),
                    ("x-tls-version", tls.version.clone()),
                    ("x-tls-cipher", tls.cipher.clone()),
                    ("x-tls-policy", tls.policy.as_str().to_string()),
                    ("x-client-pin", tls.client_pin.clone().unwrap_or_default()),
                    (
                        "x-client-subject",
                        client.map(|c| c.subject.clone()).unwrap_or_default(),
                    ),
                    (
                        "x-client-sans",
                        client.map(|c| c.sans.join(" ")).unwrap_or_default(),
                    ),
                    (
                        "x-client-sha256",
                        client.map(|c| c.sha256.clone()).unwrap_or_default(),
                    ),
                ];
                for (name, value) in facts {
                    if let Ok(value) = oxy::http_types::HeaderValue::from_str(&value) {
                        response.headers_mut().insert(name, value);
                    }
                }
            }
            return RequestAction::Respond(response);
        }
        request.headers.insert(
            "x-fixture-request",
            oxy::http_types::HeaderValue::from_static("seen"),
        );
        let host = request
            .uri
            .host()
            .map(str::to_string)
            .or_else(|| {
                let host = request.headers.get("host")?.to_str().ok()?;
                Some(host.split(':').next().unwrap_or(host).to_string())
            })
            .unwrap_or_default();
        if !settings.route_host.is_empty() && host == settings.route_host {
            return match settings.route_to.parse() {
                Ok(authority) => RequestAction::Route(Upstream {
                    authority,
                    tls: false,
                }),
                Err(_) => RequestAction::Block {
                    status: oxy::http_types::StatusCode::INTERNAL_SERVER_ERROR,
                    reason: "bad route_to".into(),
                    headers: Default::default(),
                },
            };
        }
        RequestAction::Continue
    }

    fn request_body_tap(
        &self,
        request: &oxy::http_types::request::Parts,
        cx: &RequestContext<Fixture>,
    ) -> Option<Box<dyn BodyTap>> {
        let needle = cx.endpoint.app_settings().block_form_value.clone();
        if needle.is_empty() {
            return None;
        }
        let content_type = request.headers.get("content-type")?.to_str().ok()?;
        form_tap(
            content_type,
            Box::new(NeedleInForm(StreamSearch::new(needle))),
        )
    }

    fn response_body_tap(
        &self,
        _response: &oxy::http_types::response::Parts,
        cx: &RequestContext<Fixture>,
    ) -> Option<Box<dyn BodyTap>> {
        let needle = cx.endpoint.app_settings().block_response_value.clone();
        (!needle.is_empty())
            .then(|| Box::new(NeedleInBody(StreamSearch::new(needle))) as Box<dyn BodyTap>)
    }

    async fn on_response(
        &self,
        response: &mut oxy::http_types::response::Parts,
        _cx: &mut RequestContext<Fixture>,
    ) -> ResponseAction {
        response.headers.insert(
            "x-fixture-response",
            oxy::http_types::HeaderValue::from_static("seen"),
        );
        // What the upstream's TLS showed, when the response came over TLS.
        let upstream = response.extensions.get::<Arc<UpstreamTlsFacts>>().cloned();
        if let Some(tls) = upstream {
            let shown = [
                ("x-upstream-tls-version", tls.version.clone()),
                ("x-upstream-pin", tls.pin.clone().unwrap_or_default()),
                (
                    "x-upstream-cert-sha256",
                    tls.certificate
                        .as_ref()
                        .map(|c| c.sha256.clone())
                        .unwrap_or_default(),
                ),
            ];
            for (name, value) in shown {
                if let Ok(value) = value.parse() {
                    response.headers.insert(name, value);
                }
            }
        }
        ResponseAction::Continue
    }
}

#[async_trait]
impl EgressHook<Fixture> for Router {
    async fn on_egress(&self, cx: &mut EgressContext<Fixture>) -> EgressAction {
        let settings = cx.endpoint.app_settings();
        tracing::info!(
            connection = cx.connection.id,
            client = %cx.connection.app.client,
            purpose = ?cx.purpose,
            "fixture egress on its connection"
        );
        if let Some(target) = &cx.target {
            cx.app = format!("egress to {target}");
        }
        let host = cx.target.as_ref().map(|t| t.host.to_string());
        if !settings.fips_upstream_host.is_empty()
            && host == Some(settings.fips_upstream_host.clone())
        {
            cx.tls_policy = Some(TlsPolicy::Fips202205);
        }
        if !settings.upstream_server_pin.is_empty() {
            cx.server_pin = Some(settings.upstream_server_pin.clone());
        }
        if !settings.internal_service.is_empty() {
            return match settings.internal_service.parse() {
                Ok(target) => EgressAction::InternalService(InternalService {
                    target,
                    version: if settings.internal_v1 {
                        ProxyHeaderVersion::V1
                    } else {
                        ProxyHeaderVersion::V2
                    },
                    tlvs: vec![(0xE0, settings.internal_tlv.as_bytes().to_vec())],
                }),
                Err(e) => EgressAction::Deny(format!("bad internal_service: {e}")),
            };
        }
        if !settings.upstream_proxy.is_empty() {
            return match settings.upstream_proxy.parse() {
                Ok(address) => EgressAction::UpstreamProxy(UpstreamProxy {
                    address,
                    credentials: settings
                        .upstream_proxy_credentials
                        .split_once(':')
                        .map(|(user, password)| (user.to_string(), password.to_string())),
                }),
                Err(e) => EgressAction::Deny(format!("bad upstream_proxy: {e}")),
            };
        }
        if !settings.bind_to.is_empty() {
            return match settings.bind_to.parse() {
                Ok(ip) => EgressAction::BindTo(ip),
                Err(e) => EgressAction::Deny(format!("bad bind_to: {e}")),
            };
        }
        let target = match cx.transport {
            Transport::Udp if !settings.egress_udp_target.is_empty() => &settings.egress_udp_target,
            _ => &settings.egress_target,
        };
        if target.is_empty() {
            return EgressAction::Allow;
        }
        match target.parse() {
            Ok(target) => EgressAction::Rewrite(target),
            Err(e) => EgressAction::Deny(format!("bad egress_target: {e}")),
        }
    }

    async fn on_resolved(
        &self,
        cx: &EgressContext<Fixture>,
        addrs: &mut Vec<std::net::IpAddr>,
        dns_item: Option<&String>,
    ) {
        tracing::info!(target = ?cx.target.as_ref().map(ToString::to_string), ?addrs, item = ?dns_item, "fixture saw resolved addresses");
    }
}

#[async_trait]
impl TunnelHook<Fixture> for Router {
    async fn on_tunnel_start(&self, cx: &mut TunnelContext<Fixture>) -> TunnelAction {
        let settings = cx.endpoint.app_settings();
        let requests = cx
            .connection
            .app
            .requests
            .load(std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            connection = cx.connection.id,
            requests,
            state = %cx.app,
            "fixture tunnel on its connection"
        );
        if !settings.tunnel_block.is_empty() {
            return TunnelAction::Block(settings.tunnel_block.clone());
        }
        if !settings.tunnel_redirect.is_empty() {
            return match settings.tunnel_redirect.parse() {
                Ok(target) => TunnelAction::Redirect(target),
                Err(e) => TunnelAction::Block(format!("bad tunnel_redirect: {e}")),
            };
        }
        if settings.tunnel_decapsulate {
            return TunnelAction::Decapsulate;
        }
        if settings.tunnel_idle_ms > 0 {
            return TunnelAction::SetTimeouts {
                idle: Duration::from_millis(settings.tunnel_idle_ms),
                max_lifetime: Duration::ZERO,
            };
        }
        TunnelAction::Continue
    }

    async fn on_inner_protocol(
        &self,
        cx: &mut TunnelContext<Fixture>,
        found: &InnerProtocol,
    ) -> InnerAction {
        let pass = &cx.endpoint.app_settings().intercept_pass_sni;
        tracing::info!(target = %cx.target, ?found, "fixture saw inside a tunnel");
        match found {
            InnerProtocol::Tls(hello) | InnerProtocol::Quic(hello)
                if !pass.is_empty() && hello.sni.as_ref() == Some(pass) =>
            {
                InnerAction::Pass
            }
            _ => found.default_action(),
        }
    }

    async fn on_tunnel_end(&self, cx: &mut TunnelContext<Fixture>, summary: &TunnelSummary) {
        tracing::info!(
            target = %cx.target,
            up = summary.bytes_up,
            down = summary.bytes_down,
            reason = %summary.close_reason,
            inspection = summary.inspection.as_str(),
            "fixture saw the tunnel end"
        );
    }
}

#[async_trait]
impl OxyApp for Fixture {
    async fn start(settings: AppServerSettings<Self>, _: ()) -> anyhow::Result<Hooks<Self>> {
        if !settings.app.fail_start.is_empty() {
            anyhow::bail!("{}", settings.app.fail_start);
        }
        tracing::info!(greeting = %settings.app.greeting, "fixture started");
        Ok(Hooks {
            ingress: Some(Arc::new(Observer)),
            egress: Some(Arc::new(Router)),
            tunnel: Some(Arc::new(Router)),
            http_request: Some(Arc::new(Router)),
            dns: Some(Arc::new(dns::Answers::new(&settings.app))),
            ip_flow: Some(Arc::new(ip_flows::Flows)),
            request_end: Some(Arc::new(Router)),
        })
    }
}

#[async_trait]
impl RequestEndHook<Fixture> for Router {
    async fn on_request_end(&self, summary: &RequestSummary<Fixture>) {
        tracing::info!(
            connection = summary.connection.id,
            user = summary.proxy_user.as_deref().unwrap_or("-"),
            method = %summary.method,
            uri = %summary.uri,
            status = summary.status.as_u16(),
            local = summary.local.as_deref().unwrap_or("-"),
            upstream = summary.upstream.as_deref().unwrap_or("-"),
            body_bytes = summary.body_bytes,
            "fixture request end"
        );
    }
}

fn main() -> OxyResult<()> {
    oxy::bootstrap::<Fixture>()
}
