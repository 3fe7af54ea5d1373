//! Distributed tracing (`telemetry.tracing`): spans exported over OTLP/HTTP (protobuf),
//! and W3C trace context (`traceparent`, `tracestate`) read from requests and written
//! into upstream requests and into CONNECT requests to upstream proxies.
//!
//! Spans, all at INFO in target `oxy`: `connection` (each accepted connection or flow),
//! `request` (each HTTP request: a child of the caller's `traceparent` when there is
//! one, with a link to its connection, otherwise a child of its connection), `tunnel`,
//! `dns` (each lookup) and `connect` (each off-ramp connection), each a child of what
//! it serves. With tracing off no span beyond `connection` is made and no header is
//! read or written.

use crate::settings::TracingSettings;
use opentelemetry::trace::{TraceContextExt, TracerProvider};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Whether spans are exported (and trace context propagated).
static ENABLED: AtomicBool = AtomicBool::new(false);
/// The provider, flushed when the process stops.
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();
/// W3C trace context.
static PROPAGATOR: OnceLock<TraceContextPropagator> = OnceLock::new();

/// How long finished spans wait before they are sent, at most.
const EXPORT_DELAY: Duration = Duration::from_secs(1);

/// The layer that turns `oxy` spans into exported spans, when `settings` asks for
/// export. Starts the exporter's thread.
pub(crate) fn layer<S>(
    settings: &TracingSettings,
    app_name: &str,
) -> Result<Option<impl tracing_subscriber::Layer<S>>, String>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use opentelemetry_otlp::WithExportConfig;
    if settings.otlp_endpoint.is_empty() {
        return Ok(None);
    }
    let url = format!("{}/v1/traces", settings.otlp_endpoint.trim_end_matches('/'));
    // The exporter's HTTP client (reqwest with rustls) uses the process-wide provider,
    // as Sentry's does: ring, installed once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| format!("telemetry.tracing.otlp_endpoint: {e}"))?;
    let batches = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(EXPORT_DELAY)
                .build(),
        )
        .build();
    let service = if settings.service_name.is_empty() {
        app_name.to_string()
    } else {
        settings.service_name.clone()
    };
    let provider = SdkTracerProvider::builder()
        .with_span_processor(batches)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            settings.sample_ratio,
        ))))
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build(),
        )
        .build();
    let tracer = provider.tracer("oxy");
    let _ = PROVIDER.set(provider);
    let _ = PROPAGATOR.set(TraceContextPropagator::new());
    ENABLED.store(true, Ordering::Relaxed);
    Ok(Some(tracing_opentelemetry::layer().with_tracer(tracer)))
}

/// Whether spans are exported.
pub(crate) fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Sends the spans not sent yet; called when the process stops.
pub(crate) fn flush() {
    if let Some(provider) = PROVIDER.get()
        && let Err(e) = provider.shutdown()
    {
        tracing::warn!(error = %e, "spans not all exported");
    }
}

/// The span of one HTTP request (a disabled span with tracing off). Its parent is the
/// caller's trace context when the request carries one, with a link to the connection
/// (the current span); otherwise the connection.
pub(crate) fn request_span<B>(request: &http::Request<B>) -> tracing::Span {
    if !enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        target: "oxy",
        "request",
        otel.name = %format!("{} {}", request.method(), what_is_asked(request.uri())),
        otel.kind = "server",
        http.request.method = %request.method(),
        url.path = %request.uri().path(),
        http.response.status_code = tracing::field::Empty,
    );
    let Some(propagator) = PROPAGATOR.get() else {
        return span;
    };
    let caller = opentelemetry::propagation::TextMapPropagator::extract(
        propagator,
        &HeaderExtractor(request.headers()),
    );
    if caller.span().span_context().is_valid() {
        let connection = tracing::Span::current()
            .context()
            .span()
            .span_context()
            .clone();
        if span.set_parent(caller).is_ok() && connection.is_valid() {
            span.add_link(connection);
        }
    }
    span
}

/// What a request asks for, in its span's name: the path, or a CONNECT's authority.
fn what_is_asked(uri: &http::Uri) -> &str {
    match uri.path() {
        "" | "/" if uri.scheme().is_none() => uri.authority().map_or("/", |a| a.as_str()),
        path => path,
    }
}

/// Records the answer's status on a request span.
pub(crate) fn record_status(span: &tracing::Span, status: http::StatusCode) {
    if enabled() {
        span.record("http.response.status_code", status.as_u16());
    }
}

/// The span of one tunnel to `target`.
pub(crate) fn tunnel_span(target: &dyn std::fmt::Display) -> tracing::Span {
    if !enabled() {
        return tracing::Span::none();
    }
    tracing::info_span!(target: "oxy", "tunnel", otel.name = %format!("tunnel {target}"), tunnel.target = %target)
}

/// The span of one DNS lookup of `name`.
pub(crate) fn dns_span(name: &str) -> tracing::Span {
    if !enabled() {
        return tracing::Span::none();
    }
    tracing::info_span!(target: "oxy", "dns", otel.name = %format!("dns {name}"), otel.kind = "client", dns.question.name = %name)
}

/// The span of one off-ramp connection to `target`.
pub(crate) fn connect_span(target: &dyn std::fmt::Display) -> tracing::Span {
    if !enabled() {
        return tracing::Span::none();
    }
    tracing::info_span!(target: "oxy", "connect", otel.name = %format!("connect {target}"), otel.kind = "client", server.address = %target)
}

/// Writes the current span's trace context into `headers` (upstream requests).
pub(crate) fn inject(headers: &mut http::HeaderMap) {
    if !enabled() {
        return;
    }
    if let Some(propagator) = PROPAGATOR.get() {
        let context = tracing::Span::current().context();
        opentelemetry::propagation::TextMapPropagator::inject_context(
            propagator,
            &context,
            &mut HeaderInjector(headers),
        );
    }
}

/// The current span's trace context as header lines (`traceparent: ...\r\n`), for a
/// request written by hand (CONNECT to an upstream proxy); empty with tracing off.
pub(crate) fn header_lines() -> String {
    let mut headers = http::HeaderMap::new();
    inject(&mut headers);
    headers
        .iter()
        .filter_map(|(name, value)| Some(format!("{name}: {}\r\n", value.to_str().ok()?)))
        .collect()
}
