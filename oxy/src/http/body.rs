//! Body helpers: the one body type of the pipeline, and short plain-text responses.

use crate::hooks::HttpBody;
use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full};

/// A body with these bytes.
pub fn full(bytes: impl Into<Bytes>) -> HttpBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> HttpBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Any body with `Bytes` chunks, as an [`HttpBody`].
pub fn boxed<B>(body: B) -> HttpBody
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// Marks an answer Oxy (or the application, through [`text_response`]) gave instead of
/// an upstream: its reason, as the plain-text body says it. An error answer (4xx, 5xx)
/// with it goes through [`HttpRequestHook::on_error_response`](crate::hooks::HttpRequestHook::on_error_response).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalAnswer {
    /// Why, in words.
    pub reason: String,
}

/// A plain-text response: the status and a one-line reason, marked as a
/// [`LocalAnswer`].
pub fn text_response(status: StatusCode, reason: &str) -> Response<HttpBody> {
    let mut response = Response::new(full(format!("{reason}\n")));
    *response.status_mut() = status;
    response.extensions_mut().insert(LocalAnswer {
        reason: reason.to_string(),
    });
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
