//! [`HttpRequestHook`]: sees, answers, blocks or routes HTTP requests.

use crate::app::OxyExt;
use crate::endpoint::Endpoint;
use crate::http::body_tap::BodyTap;
use crate::tls::TlsFacts;
use async_trait::async_trait;
use bytes::Bytes;
use http::StatusCode;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The body type of requests and responses, whatever HTTP version carried them.
pub type HttpBody = http_body_util::combinators::UnsyncBoxBody<
    Bytes,
    Box<dyn std::error::Error + Send + Sync + 'static>,
>;

/// Facts about one request, and the application's state for it.
pub struct RequestContext<App: OxyExt> {
    /// The endpoint the request came in on.
    pub endpoint: Arc<Endpoint<App>>,
    /// The connection the request came on: its id and the ingress hook's state for it.
    pub connection: crate::hooks::Connection<App>,
    /// The client's address.
    pub client_addr: SocketAddr,
    /// TLS facts (SNI, ALPN, client certificate) when the request came over TLS.
    pub tls: Option<Arc<TlsFacts>>,
    /// The user that `http.proxy_auth` authenticated, for proxy requests. A request hook
    /// that authenticates by other means (a bearer token, a client certificate) sets it;
    /// the egress and tunnel hooks and the audit record then see it.
    pub proxy_user: Option<String>,
    /// The application's state for this request. It lives until the response head is
    /// sent or, for CONNECT and CONNECT-UDP, until the tunnel closes: a permit kept here
    /// limits concurrent tunnels.
    pub app: App::RequestContext,
    /// The request's place under its user's limits (`http.user_limits`), held as long as
    /// `app`; Oxy sets it after `on_request` (`None` in a context made by hand).
    pub user_permit: Option<crate::http::user_limits::UserPermit>,
}

/// Where a routed request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Host and port of the upstream server.
    pub authority: http::uri::Authority,
    /// Whether to speak TLS to it.
    pub tls: bool,
}

impl Upstream {
    /// This upstream in memory of its own (its authority's text copied), so that the
    /// copy's clones do not write the reference count the original's clones write.
    pub fn copied(&self) -> Self {
        let text = bytes::Bytes::copy_from_slice(self.authority.as_str().as_bytes());
        Self {
            authority: http::uri::Authority::from_maybe_shared(text)
                .unwrap_or_else(|_| self.authority.clone()),
            tls: self.tls,
        }
    }

    /// The upstream an absolute `http://` or `https://` URI names (userinfo refused).
    pub fn from_uri(uri: &http::Uri) -> Option<Self> {
        let authority = uri.authority()?.clone();
        if authority.as_str().contains('@') {
            return None;
        }
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") | None => false,
            Some(_) => return None,
        };
        Some(Self { authority, tls })
    }

    /// The tunnel `target` as an upstream, over TLS or not (`None` when the target is
    /// no HTTP authority).
    pub fn for_target(target: &crate::hooks::Target, tls: bool) -> Option<Self> {
        let authority = target.to_string().parse().ok()?;
        Some(Self { authority, tls })
    }
}

/// What to do with a request.
#[derive(Debug)]
pub enum RequestAction {
    /// Proxy the (possibly rewritten) request as the endpoint is configured to: CONNECT,
    /// CONNECT-UDP, CONNECT-IP, forward or reverse proxy (a request inside a
    /// decapsulated tunnel goes to the tunnel's target).
    Continue,
    /// Answer with this response; nothing is proxied, and neither
    /// [`HttpRequestHook::on_response`] nor the body taps run.
    Respond(http::Response<HttpBody>),
    /// Answer with this status and a plain-text body: the reason and a newline
    /// (`text/plain; charset=utf-8`). Nothing is proxied and
    /// [`HttpRequestHook::on_response`] does not run. Logged (`request blocked`, with the
    /// status, reason and URI) and counted in `oxy_http_errors_total{reason="blocked"}`.
    Block {
        /// The status, usually 403.
        status: StatusCode,
        /// Why, shown to the client and logged.
        reason: String,
        /// Headers added to the answer (`Retry-After`, `WWW-Authenticate`); write
        /// `Default::default()` for none.
        headers: http::HeaderMap,
    },
    /// Send the request to this upstream, in place of the one the endpoint would choose.
    /// A CONNECT's tunnel goes to the upstream's host and port (its `tls` must be
    /// `false`: the client speaks its own TLS inside). CONNECT-UDP and CONNECT-IP
    /// cannot be routed: such a request is answered 500 and logged as an error.
    Route(Upstream),
}

/// What to do with a response from an upstream.
#[derive(Debug)]
pub enum ResponseAction {
    /// Send the (possibly rewritten) response to the client.
    Continue,
    /// Send this response instead: the upstream's body is dropped, and
    /// [`HttpRequestHook::response_body_tap`] does not run.
    Replace(http::Response<HttpBody>),
}

/// A request as the phases after its answer see it: what was asked, what was answered
/// and how long it took.
pub struct RequestSummary<App: OxyExt> {
    /// The endpoint the request came in on.
    pub endpoint: Arc<Endpoint<App>>,
    /// The connection the request came on.
    pub connection: crate::hooks::Connection<App>,
    /// The client's address.
    pub client_addr: SocketAddr,
    /// The user the request was authenticated as (or the request hook named), once
    /// known: `None` for answers given before the request hook ran.
    pub proxy_user: Option<String>,
    /// The request's method.
    pub method: http::Method,
    /// The request's URI (the authority of a CONNECT).
    pub uri: String,
    /// The request's HTTP version.
    pub version: http::Version,
    /// The answer's status.
    pub status: http::StatusCode,
    /// The reason, when the answer was made with
    /// [`text_response`](crate::http::body::text_response) (Oxy's own refusals and
    /// errors, a `Block`, an application's own use of it) instead of coming from an
    /// upstream.
    pub local: Option<String>,
    /// The upstream the request was proxied to (`host:port`), if it was.
    pub upstream: Option<String>,
    /// From the request's head to the answer's head.
    pub time_to_answer: Duration,
    /// From the request's head to the answer's last byte (in [`RequestEndHook::on_request_end`]).
    pub duration: Duration,
    /// Body bytes sent to the client (in [`RequestEndHook::on_request_end`]).
    pub body_bytes: u64,
}

/// Sees every HTTP request, over any HTTP version.
#[async_trait]
pub trait HttpRequestHook<App: OxyExt>: Send + Sync + 'static {
    /// Runs when a request's head has arrived, before it is proxied; rewrite `request`
    /// in place. The default returns [`RequestAction::Continue`].
    ///
    /// Before it ran: the URI and header size limits (414, 431), the request's authority
    /// was settled (one `Host`, equal to the request target's authority; ports from 1
    /// to 65535; a numeric IPv4 host in dotted form; 400 otherwise), the declared body
    /// size (413), and the endpoint's proxy authentication for CONNECT and forwarded
    /// requests (407; `cx.proxy_user` names the user). `Continue` proxies the request as
    /// the endpoint is configured to (CONNECT, CONNECT-UDP, forward or reverse proxy);
    /// `Respond` and `Block` answer it here; `Route` sends it (or a CONNECT's tunnel) to
    /// that upstream.
    async fn on_request(
        &self,
        request: &mut http::request::Parts,
        cx: &mut RequestContext<App>,
    ) -> RequestAction {
        let _ = (request, cx);
        RequestAction::Continue
    }

    /// Runs after `on_request` let a request through to an upstream: return a tap to see
    /// its body chunk by chunk as it streams (see [`crate::http::form::form_tap`] for
    /// form fields and uploads). The default returns `None`.
    fn request_body_tap(
        &self,
        request: &http::request::Parts,
        cx: &RequestContext<App>,
    ) -> Option<Box<dyn BodyTap>> {
        let _ = (request, cx);
        None
    }

    /// Runs after `on_response` let a response through: return a tap to see its body
    /// chunk by chunk; a block cuts the response off. The default returns `None`.
    fn response_body_tap(
        &self,
        response: &http::response::Parts,
        cx: &RequestContext<App>,
    ) -> Option<Box<dyn BodyTap>> {
        let _ = (response, cx);
        None
    }

    /// Runs after routing and the egress hook's decision (with an egress hook), before the
    /// connection to `upstream` (`host:port`, and whether over TLS) is made with the
    /// egress policy and DNS and the request sent: `request` is what the upstream
    /// will get (its URI absolute, hop-by-hop headers gone, `Via` and the forwarding
    /// headers added); rewrite it in place (add a header the upstream needs, sign it).
    /// Returning a response answers the client with it instead and sends nothing. Not
    /// for CONNECT, CONNECT-UDP and CONNECT-IP, which open tunnels (see the tunnel
    /// hook). The default returns `None`.
    async fn on_upstream_request(
        &self,
        request: &mut http::request::Parts,
        upstream: &Upstream,
        cx: &mut RequestContext<App>,
    ) -> Option<http::Response<HttpBody>> {
        let _ = (request, upstream, cx);
        None
    }

    /// Runs when the upstream response's head has arrived, before it is sent to the
    /// client; rewrite `response` in place. Answers Oxy or the application gave (a
    /// refusal, a 502 or 504, a local response) do not come here; see
    /// [`on_error_response`](Self::on_error_response). The default returns
    /// [`ResponseAction::Continue`].
    async fn on_response(
        &self,
        response: &mut http::response::Parts,
        cx: &mut RequestContext<App>,
    ) -> ResponseAction {
        let _ = (response, cx);
        ResponseAction::Continue
    }

    /// Runs when Oxy answers a request with an error of its own (4xx or 5xx, made with
    /// [`text_response`](crate::http::body::text_response): a refusal, an egress denial,
    /// a 502 or 504 from the upstream's failure, a block), before it is sent: return a
    /// response to send instead (a branded error page). `summary.local` holds the
    /// reason; `summary.duration` and `summary.body_bytes` are not known yet (zero). The
    /// headers Oxy's answer had (`Proxy-Authenticate` of a 407, `Retry-After` of a 429, a
    /// block's) are kept where the page does not set them. The default returns `None`,
    /// which sends Oxy's plain-text answer.
    async fn on_error_response(
        &self,
        summary: &RequestSummary<App>,
    ) -> Option<http::Response<HttpBody>> {
        let _ = summary;
        None
    }
}

/// Hears the end of every HTTP request, for logging and billing. Its own hook (not a
/// method of [`HttpRequestHook`]) so that applications without it pay nothing per
/// request for it.
#[async_trait]
pub trait RequestEndHook<App: OxyExt>: Send + Sync + 'static {
    /// Runs once for every answered request, after the answer's last byte was handed to
    /// the connection (or its body ended early): upstream, local and error answers alike,
    /// over any HTTP version. A CONNECT's request ends with its 2xx head (the tunnel hook
    /// sees the tunnel's end). A request whose client went away before its answer does
    /// not come here. Runs in a task of its own, which a shutdown waits for (within
    /// `server.shutdown_timeout`).
    async fn on_request_end(&self, summary: &RequestSummary<App>);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copied_upstream_equals_its_original() {
        let original = Upstream {
            authority: "[::1]:8080".parse().unwrap(),
            tls: true,
        };
        let copy = original.copied();
        assert_eq!(copy.authority, original.authority);
        assert_eq!(copy.authority.as_str(), "[::1]:8080");
        assert!(copy.tls);
        assert_ne!(
            copy.authority.as_str().as_ptr(),
            original.authority.as_str().as_ptr(),
            "the copy's text lives in memory of its own"
        );
    }
}
