//! The telemetry listener: `GET /metrics` (Prometheus text), `GET /health` and
//! `GET /endpoints` (the bound listen addresses, JSON).

use super::framework_metrics::oxy_process;
use super::health::{Health, HealthState};
use super::listeners::Listeners;
use crate::settings::ProfilingSettings;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// Serves telemetry on `listener` until the process ends or `stop` completes (a
/// successor has the listener then).
pub async fn serve(
    listener: TcpListener,
    health: Arc<Health>,
    listeners: Arc<Listeners>,
    started: Instant,
    profiling: Arc<ProfilingSettings>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => return,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "telemetry accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (health, listeners, profiling) = (health.clone(), listeners.clone(), profiling.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                use futures_util::future::Either;
                let answer = if req.uri().path().starts_with("/debug/") {
                    let (path, query) = (
                        req.uri().path().to_string(),
                        req.uri().query().map(str::to_string),
                    );
                    let profiling = profiling.clone();
                    Either::Left(async move {
                        super::profiling::respond(&path, query.as_deref(), peer, &profiling).await
                    })
                } else {
                    Either::Right(std::future::ready(respond(
                        &req, &health, &listeners, started,
                    )))
                };
                async move { Ok::<_, std::convert::Infallible>(answer.await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "telemetry connection ended with an error");
            }
        });
    }
}

fn respond(
    req: &Request<Incoming>,
    health: &Health,
    listeners: &Listeners,
    started: Instant,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
    }
    match req.uri().path() {
        "/metrics" => {
            let uptime = i64::try_from(started.elapsed().as_secs()).unwrap_or(i64::MAX);
            oxy_process::uptime_seconds().set(uptime);
            let mut response = text(StatusCode::OK, super::metrics::render());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        "/health" => match health.get() {
            HealthState::Ready => text(StatusCode::OK, "ready\n"),
            HealthState::Starting => text(StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
            HealthState::Draining => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        },
        "/endpoints" => match listeners.get() {
            Some(json) => {
                let mut response = text(StatusCode::OK, json);
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("application/json"),
                );
                response
            }
            None => text(StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /health or /endpoints\n",
        ),
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
