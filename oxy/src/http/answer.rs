//! The phases after a request's answer: an error answer of Oxy's own goes through
//! `on_error_response`, and the answer's end reaches `on_request_end`.

use super::body::LocalAnswer;
use super::pipeline::Handler;
use super::request_end::RequestEnd;
use crate::app::OxyExt;
use crate::hooks::{HttpBody, HttpRequestHook, RequestSummary};
use http::{Response, header};
use std::sync::Arc;
use std::time::Duration;

/// Marks a response an upstream gave: the upstream (`host:port`).
#[derive(Clone)]
pub(super) struct ProxiedTo(pub(super) String);

impl<App: OxyExt> Handler<App> {
    /// The phases after a request's answer: an error answer of Oxy's own goes through
    /// `on_error_response`, and the answer's end runs `on_request_end`.
    pub(super) async fn answer_phases(
        &self,
        hook: &Arc<dyn HttpRequestHook<App>>,
        record: &super::access_log::RequestRecord,
        response: Response<HttpBody>,
    ) -> Response<HttpBody> {
        let mut summary = RequestSummary {
            endpoint: self.endpoint.clone(),
            connection: self.connection.clone(),
            client_addr: self.client_addr,
            proxy_user: record.user.clone(),
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
            // What Oxy's answer told the client beyond its body (`Proxy-Authenticate`,
            // `Retry-After`, a block's headers) stays, unless the page says otherwise.
            let mut page = page;
            for (name, value) in response.headers() {
                let body_header = [header::CONTENT_TYPE, header::CONTENT_LENGTH].contains(name);
                if !body_header && !page.headers().contains_key(name) {
                    page.headers_mut().insert(name, value.clone());
                }
            }
            response = page;
            summary.status = response.status();
        }
        let (parts, body) = response.into_parts();
        let drain = self.drain.clone();
        let body = RequestEnd::wrap(body, hook.clone(), summary, record.started, drain);
        Response::from_parts(parts, body)
    }
}
