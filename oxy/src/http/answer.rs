//! The phases after a request's answer: an error answer of Oxy's own goes through
//! `on_error_response`, and the answer's end reaches `on_request_end`, each only when
//! its hook is installed.

use super::access_log::RequestRecord;
use super::body::LocalAnswer;
use super::pipeline::Handler;
use super::request_end::RequestEnd;
use crate::app::OxyExt;
use crate::hooks::{HttpBody, RequestSummary};
use http::{Response, header};
use std::time::Duration;

/// Marks a response an upstream gave: the upstream (`host:port`).
#[derive(Clone)]
pub(super) struct ProxiedTo(pub(super) http::uri::Authority);

impl<App: OxyExt> Handler<App> {
    /// The phases after a request's answer, for the hooks installed: an error answer of
    /// Oxy's own goes through `on_error_response`, and the answer's end reaches
    /// `on_request_end`. Nothing is built for a hook that is not installed.
    pub(super) async fn answer_phases(
        &self,
        record: &mut RequestRecord<'_>,
        response: Response<HttpBody>,
    ) -> Response<HttpBody> {
        let hooks = &self.services.hooks;
        let status = response.status();
        let mut response = response;
        if let Some(hook) = &hooks.http_request
            && (status.is_client_error() || status.is_server_error())
            && response.extensions().get::<LocalAnswer>().is_some()
        {
            let summary = self.summary(record, &response);
            if let Some(page) = hook.on_error_response(&summary).await {
                response = with_headers_of(page, &response);
            }
        }
        let Some(hook) = &hooks.request_end else {
            return response;
        };
        let summary = self.summary(record, &response);
        let (parts, body) = response.into_parts();
        let drain = self.drain.clone();
        let body = RequestEnd::wrap(body, hook.clone(), summary, record.started, drain);
        Response::from_parts(parts, body)
    }

    /// What the phases after the answer see of a request answered with `response`.
    fn summary(
        &self,
        record: &mut RequestRecord<'_>,
        response: &Response<HttpBody>,
    ) -> RequestSummary<App> {
        RequestSummary {
            endpoint: self.endpoint.clone(),
            connection: self.connection.clone(),
            client_addr: self.client_addr,
            proxy_user: record.user.clone(),
            method: record.method.clone(),
            uri: record.uri().to_string(),
            version: record.version,
            status: response.status(),
            local: (response.extensions().get::<LocalAnswer>()).map(|a| a.reason.clone()),
            upstream: (response.extensions().get::<ProxiedTo>()).map(|p| p.0.to_string()),
            time_to_answer: record.started.elapsed(),
            duration: Duration::ZERO,
            body_bytes: 0,
        }
    }
}

/// `page` standing for Oxy's `answer` (its reason kept for the request's end), with what
/// the answer told the client beyond its body (`Proxy-Authenticate`, `Retry-After`, a
/// block's headers, every value of each), unless the page sets them.
fn with_headers_of(
    mut page: Response<HttpBody>,
    answer: &Response<HttpBody>,
) -> Response<HttpBody> {
    if let Some(local) = answer.extensions().get::<LocalAnswer>() {
        page.extensions_mut().insert(local.clone());
    }
    let set_by_page: Vec<header::HeaderName> = page.headers().keys().cloned().collect();
    for (name, value) in answer.headers() {
        let body_header = [header::CONTENT_TYPE, header::CONTENT_LENGTH].contains(name);
        if !body_header && !set_by_page.contains(name) {
            page.headers_mut().append(name, value.clone());
        }
    }
    page
}
