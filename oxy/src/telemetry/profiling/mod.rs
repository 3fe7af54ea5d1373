//! Profiling on the telemetry listener (`telemetry.profiling`): `/debug/pprof/heap`,
//! `/debug/pprof/profile` and `/debug/runtime`, for loopback clients unless
//! `allow_remote` is set, and 404 unless `enabled`.

mod cpu;
pub(crate) mod heap;
pub(crate) mod runtime;

use crate::settings::ProfilingSettings;
use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;
use std::net::SocketAddr;

/// Starts what profiling needs while the process runs: heap sampling and the task
/// monitor of connection tasks. Does nothing unless profiling is enabled.
pub(crate) async fn start(settings: &ProfilingSettings) {
    if settings.enabled {
        heap::activate().await;
        runtime::start();
    }
}

/// The answer to a `/debug/` request `path?query` from `peer`.
pub(crate) async fn respond(
    path: &str,
    query: Option<&str>,
    peer: SocketAddr,
    settings: &ProfilingSettings,
) -> Response<Full<Bytes>> {
    if !settings.enabled {
        return answer(
            StatusCode::NOT_FOUND,
            "text/plain",
            "profiling is off: set telemetry.profiling.enabled\n",
        );
    }
    if !settings.allow_remote && !peer.ip().is_loopback() {
        return answer(
            StatusCode::FORBIDDEN,
            "text/plain",
            "profiling answers loopback clients only (telemetry.profiling.allow_remote)\n",
        );
    }
    let result = match path {
        "/debug/pprof/heap" => heap::profile()
            .await
            .map(|body| ("application/octet-stream", body)),
        "/debug/pprof/profile" => match cpu::Request::parse(query) {
            Ok(request) => cpu::profile(request).await,
            Err(e) => return answer(StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n")),
        },
        "/debug/runtime" => Ok(("application/json", runtime::report().into_bytes())),
        _ => {
            return answer(
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found: try /debug/pprof/heap, /debug/pprof/profile?seconds=N or /debug/runtime\n",
            );
        }
    };
    match result {
        Ok((content_type, body)) => answer(StatusCode::OK, content_type, body),
        Err(e) => {
            tracing::warn!(%path, error = %e, "profile failed");
            answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("{e}\n"),
            )
        }
    }
}

fn answer(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}
