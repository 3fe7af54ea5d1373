//! An HTTP firewall: a forward and reverse proxy that blocks requests by host, path,
//! method, header and body content, with rules from its settings and per endpoint.

mod rules;

use oxy::http::body_tap::{BodyTap, TapVerdict};
use oxy::http::form::{FormField, FormInspector, form_tap};
use oxy::http_types::{Response, StatusCode, header, request::Parts};
use oxy::prelude::*;
use oxy::reexports::bytes::Bytes;
use oxy::settings::SettingError;
use rules::{Head, Rule, RuleSettings, Watch, first_hit};
use std::hash::{BuildHasher, RandomState};

/// The `app:` section.
#[oxy_app_settings]
pub struct FirewallSettings {
    /// Rules for every endpoint, checked after the endpoint's own.
    pub rules: Vec<RuleSettings>,
}

/// Each endpoint's `app:` section.
#[oxy_app_settings]
pub struct FirewallEndpointSettings {
    /// Rules for this endpoint, checked first.
    pub rules: Vec<RuleSettings>,
    /// Ports whose CONNECT tunnels the firewall looks inside: plain HTTP is served
    /// through the rules, and HTTPS too when the endpoint has `tls_interception`, so the
    /// requests inside meet every rule, not just host rules. Other protocols are refused.
    pub inspect_ports: Vec<u16>,
}

#[metrics]
mod firewall {
    /// Requests and tunnels blocked, by rule.
    pub fn blocked_total(rule: &str) -> Counter;
}

/// The endpoint's own rules, compiled, are its context; the rules for every endpoint
/// are compiled once, into the app context.
#[derive(OxyExt)]
#[oxy(
    app_settings = FirewallSettings,
    endpoint_settings = FirewallEndpointSettings,
    app_context = Vec<Rule>,
    endpoint_context = Vec<Rule>
)]
struct Firewall;

/// The hooks, with the rules for every endpoint.
struct Rules {
    global: Vec<Rule>,
}

impl Rules {
    /// The rules for a request on `endpoint`, in order.
    fn of<'a>(&'a self, endpoint: &'a Endpoint<Firewall>) -> impl Iterator<Item = &'a Rule> {
        endpoint.app.iter().chain(&self.global)
    }
}

/// Counts and logs a block by `rule`; returns its id, shown to the client.
fn record_block(rule: &str, what: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let next = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let id = format!("{:016x}", RandomState::new().hash_one(next));
    firewall::blocked_total(rule).inc();
    tracing::info!(rule, block_id = %id, what, "blocked");
    id
}

/// The block page: the rule that blocked the request and an id to quote.
fn block_page(rule: &str, id: &str) -> Response<HttpBody> {
    let page = format!(
        "<!doctype html><title>Blocked</title><h1>Request blocked</h1>\
         <p>Rule: <code>{rule}</code></p><p>Block id: <code>{id}</code></p>\n"
    );
    let mut response = Response::new(oxy::http::body::full(page));
    *response.status_mut() = StatusCode::FORBIDDEN;
    let headers = response.headers_mut();
    let html = header::HeaderValue::from_static("text/html; charset=utf-8");
    headers.insert(header::CONTENT_TYPE, html);
    if let Ok(id) = id.parse() {
        headers.insert("x-firewall-block-id", id);
    }
    response
}

#[async_trait]
impl HttpRequestHook<Firewall> for Rules {
    async fn on_request(
        &self,
        request: &mut Parts,
        cx: &mut RequestContext<Firewall>,
    ) -> RequestAction {
        let head = Head::of(request);
        let rule = self
            .of(&cx.endpoint)
            .find(|r| !r.inspects_body() && r.head_matches(&head));
        match rule {
            Some(rule) => {
                let id = record_block(
                    &rule.settings.name,
                    &format!("{} {}", request.method, request.uri),
                );
                RequestAction::Respond(block_page(&rule.settings.name, &id))
            }
            None => RequestAction::Continue,
        }
    }

    fn request_body_tap(
        &self,
        request: &Parts,
        cx: &RequestContext<Firewall>,
    ) -> Option<Box<dyn BodyTap>> {
        let head = Head::of(request);
        let (fields, raw): (Vec<Watch>, Vec<Watch>) = (self.of(&cx.endpoint))
            .filter(|r| r.inspects_body() && r.head_matches(&head))
            .flat_map(|r| r.watches.iter().cloned())
            .partition(|w| w.field.is_some());
        let content_type = request.headers.get(header::CONTENT_TYPE);
        let form = (content_type.and_then(|v| v.to_str().ok()))
            .filter(|_| !fields.is_empty())
            .and_then(|ct| form_tap(ct, Box::new(FormWatches(fields))));
        (!raw.is_empty() || form.is_some())
            .then(|| Box::new(BodyWatches { raw, form }) as Box<dyn BodyTap>)
    }
}

/// The block verdict for `rule`, counted and logged.
fn blocked_by(rule: &str, what: &str) -> TapVerdict {
    let id = record_block(rule, what);
    TapVerdict::Block(format!("blocked by rule {rule} (block id {id})"))
}

/// Blocks a body that contains a rule's string, or whose form breaks a rule.
struct BodyWatches {
    raw: Vec<Watch>,
    form: Option<Box<dyn BodyTap>>,
}

#[async_trait]
impl BodyTap for BodyWatches {
    async fn on_chunk(&mut self, chunk: &Bytes) -> TapVerdict {
        if let Some(rule) = first_hit(&mut self.raw, None, chunk) {
            return blocked_by(&rule, "request body");
        }
        match &mut self.form {
            Some(form) => form.on_chunk(chunk).await,
            None => TapVerdict::Continue,
        }
    }

    async fn on_end(&mut self) -> TapVerdict {
        match &mut self.form {
            Some(form) => form.on_end().await,
            None => TapVerdict::Continue,
        }
    }

    /// A raw string split over chunks is found in the last: its first bytes wait. A
    /// form's fields are judged as the form tap parses them, so it keeps its default.
    fn undecided_tail(&self) -> Option<usize> {
        let raw = self.raw.iter().map(|w| w.search.undecided()).max();
        match &self.form {
            Some(form) => form.undecided_tail(),
            None => Some(raw.unwrap_or(0)),
        }
    }
}

/// Blocks a form field that contains a rule's string.
struct FormWatches(Vec<Watch>);

impl FormInspector for FormWatches {
    fn on_field(&mut self, _field: &FormField) -> TapVerdict {
        self.0.iter_mut().for_each(|w| w.search.reset());
        TapVerdict::Continue
    }

    fn on_field_chunk(&mut self, field: &FormField, chunk: &[u8]) -> TapVerdict {
        match first_hit(&mut self.0, Some(&field.name), chunk) {
            Some(rule) => blocked_by(&rule, &format!("form field {}", field.name)),
            None => TapVerdict::Continue,
        }
    }
}

#[async_trait]
impl TunnelHook<Firewall> for Rules {
    /// A CONNECT to an inspected port: host rules already ran on the CONNECT request,
    /// but only the HTTP inside shows paths, methods, headers and bodies.
    async fn on_tunnel_start(&self, cx: &mut TunnelContext<Firewall>) -> TunnelAction {
        let inspect = &cx.endpoint.app_settings().inspect_ports;
        if cx.transport == Transport::Tcp && inspect.contains(&cx.target.port) {
            return TunnelAction::Decapsulate;
        }
        TunnelAction::Continue
    }

    /// What an inspected port carries: HTTP, TLS and QUIC are inspected; anything else would
    /// pass uninspected, so it is refused.
    async fn on_inner_protocol(
        &self,
        cx: &mut TunnelContext<Firewall>,
        found: &InnerProtocol,
    ) -> InnerAction {
        match found {
            InnerProtocol::Http | InnerProtocol::Tls(_) | InnerProtocol::Quic(_) => {
                InnerAction::Inspect
            }
            InnerProtocol::Unknown => {
                let id = record_block("uninspectable", &format!("tunnel to {}", cx.target));
                InnerAction::Block(format!("neither HTTP nor TLS (block id {id})"))
            }
        }
    }
}

/// Compiles `rules`; an error names the rule's place in the settings.
fn compile(rules: &[RuleSettings]) -> anyhow::Result<Vec<Rule>> {
    let at = |i: usize, e: anyhow::Error| SettingError::at(format!("rules[{i}]"), e).into();
    let rules = rules.iter().enumerate();
    rules
        .map(|(i, r)| Rule::compile(r).map_err(|e| at(i, e)))
        .collect()
}

#[async_trait]
impl OxyApp for Firewall {
    fn app_context(settings: &AppServerSettings<Self>) -> anyhow::Result<Vec<Rule>> {
        compile(&settings.app.rules)
    }

    async fn start(_: AppServerSettings<Self>, global: Vec<Rule>) -> anyhow::Result<Hooks<Self>> {
        Ok(Hooks::of(Rules { global }).http_request().tunnel().into())
    }

    fn endpoint_context(
        settings: &EndpointSettings<FirewallEndpointSettings>,
    ) -> anyhow::Result<Vec<Rule>> {
        compile(&settings.app.rules)
    }
}

fn main() -> OxyResult<()> {
    oxy::bootstrap::<Firewall>()
}
