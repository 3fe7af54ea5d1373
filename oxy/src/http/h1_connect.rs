//! A CONNECT request that opens an HTTP/1.1 connection, read and answered without
//! hyper: when its tunnel opens, the tunnel owns the connection from the first request,
//! so hyper's connection state, its parse and its upgrade hand-off would be made for
//! one request and dropped. Any other first request, and a CONNECT this does not take,
//! is served by hyper from the same bytes; a refused CONNECT is answered by hyper too,
//! with the answer the pipeline gave (see [`Taken::Answered`]).

use super::body::empty;
use super::h1_fields::{request_head, write_date, write_fields, write_status_line};
use super::pipeline::Handler;
use super::upgrade::PendingUpgrade;
use crate::app::OxyExt;
use crate::hooks::HttpBody;
use crate::tunnel::stream::TunnelStream;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, DATE, EXPECT, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, Method, Request, Response};
use std::sync::Arc;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Header fields a CONNECT head taken here may have; more go to hyper.
const MAX_HEADERS: usize = 32;

/// A CONNECT request head read from the first bytes of a connection.
pub struct ConnectHead {
    parts: http::request::Parts,
    /// The bytes read past the head (data the client sent before the answer).
    early: Bytes,
}

/// Reads `read`, the first bytes of an HTTP/1.1 connection, as a complete CONNECT
/// request head that this path takes: HTTP/1.1, a target and header fields hyper would
/// accept, and nothing that asks for hyper's handling of a body or an upgrade
/// (`Content-Length`, `Transfer-Encoding`, `Expect`, `Upgrade`). `None` for anything
/// else, incomplete or malformed heads included: hyper then serves the connection from
/// the same bytes, and answers those as it always does.
pub fn parse(read: &Bytes) -> Option<ConnectHead> {
    // Every other first request is parsed once, by hyper.
    if !read.starts_with(b"CONNECT ") {
        return None;
    }
    let (parts, head_len) = request_head::<MAX_HEADERS>(read, HeaderMap::new(), |name| {
        [CONTENT_LENGTH, TRANSFER_ENCODING, EXPECT, UPGRADE].contains(name)
    })?;
    (parts.method == Method::CONNECT).then(|| ConnectHead {
        parts,
        early: read.slice(head_len..),
    })
}

/// What became of a CONNECT taken here.
pub enum Taken<S> {
    /// It was answered 2xx and its tunnel has the connection (or the client left
    /// before the answer was written, and the tunnel heard so).
    Tunnel,
    /// It was refused with this answer, which hyper is to send when it reads the same
    /// request again from `S`, the connection given back with nothing consumed.
    Answered(Response<HttpBody>, S),
}

/// Answers `head`, read from `stream`, through `handler`'s pipeline. A 2xx answer is
/// written here and the connection handed to the tunnel that waits for it, with the
/// early data to be read first; any other answer is given back (see [`Taken`]).
/// `into_stream` takes the connection from `S` for the tunnel.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice: see `Handler::handle_in_span`"
)]
pub fn serve<App: OxyExt, S: AsyncWrite + Unpin>(
    handler: &Arc<Handler<App>>,
    head: ConnectHead,
    mut stream: S,
    into_stream: impl FnOnce(S) -> TunnelStream,
) -> impl Future<Output = Taken<S>> {
    async move {
        let ConnectHead { parts, early } = head;
        let open = handler.streams.open();
        let (hand_over, handed) = tokio::sync::oneshot::channel();
        let mut request = Request::from_parts(parts, empty());
        request
            .extensions_mut()
            .insert(PendingUpgrade::new(async move {
                handed.await.map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "the client left before the CONNECT was answered",
                    )
                })
            }));
        let response = handler.clone().handle(request).await;
        if !response.status().is_success() {
            return Taken::Answered(response, stream);
        }
        // The head alone outlives the answer: a borrowed answer held across the write
        // would make the connection's future need a `Sync` body.
        let head = response_head(&response);
        drop(response);
        let written = async {
            stream.write_all(&head).await?;
            stream.flush().await
        };
        match written.await {
            Ok(()) => {
                // A tunnel that already ended (or a hook's own 2xx, which no tunnel waits
                // for) drops the connection, as hyper does with an upgrade nobody takes.
                let _ = hand_over.send(into_stream(stream).unread(early));
            }
            Err(e) => tracing::debug!(error = %e, "CONNECT answer not written"),
        }
        drop(open);
        Taken::Tunnel
    }
}

/// The head of a 2xx answer to CONNECT, as hyper writes it: no `Content-Length` or
/// `Transfer-Encoding` (RFC 9110 §9.3.6), no body, and a `Date` unless it has one.
fn response_head(response: &Response<HttpBody>) -> Vec<u8> {
    let mut head = Vec::with_capacity(128);
    write_status_line(&mut head, response.status(), None);
    write_fields(&mut head, response.headers(), |name| {
        name == CONTENT_LENGTH || name == TRANSFER_ENCODING
    });
    if !response.headers().contains_key(DATE) {
        write_date(&mut head);
    }
    head.extend_from_slice(b"\r\n");
    head
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use http::Version;

    fn parsed(head: &str) -> Option<ConnectHead> {
        parse(&Bytes::copy_from_slice(head.as_bytes()))
    }

    #[test]
    fn a_plain_connect_is_taken_with_its_early_data() {
        let head = parsed(
            "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nProxy-Authorization: Basic dTpw\r\n\r\nearly",
        )
        .expect("taken");
        assert_eq!(head.parts.method, Method::CONNECT);
        assert_eq!(head.parts.version, Version::HTTP_11);
        assert_eq!(
            head.parts.uri.authority().map(|a| a.as_str()),
            Some("example.com:443")
        );
        assert_eq!(head.parts.headers["host"], "example.com:443");
        assert_eq!(head.parts.headers["proxy-authorization"], "Basic dTpw");
        assert_eq!(head.early, Bytes::from_static(b"early"));
    }

    #[test]
    fn anything_else_goes_to_hyper() {
        for head in [
            // Not CONNECT, or not HTTP/1.1.
            "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            "connect example.com:443 HTTP/1.1\r\n\r\n",
            "CONNECT example.com:443 HTTP/1.0\r\n\r\n",
            // Incomplete: hyper reads the rest.
            "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com",
            // A body's framing, an expectation, an upgrade: hyper's rules.
            "CONNECT example.com:443 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            "CONNECT example.com:443 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "CONNECT example.com:443 HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "CONNECT example.com:443 HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            // Malformed: hyper answers 400.
            "CONNECT exa mple.com:443 HTTP/1.1\r\n\r\n",
            "CONNECT example.com:443 HTTP/1.1\r\nBad Name: x\r\n\r\n",
            "CONNECT [::1 HTTP/1.1\r\n\r\n",
        ] {
            assert!(parsed(head).is_none(), "{head:?}");
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert!(parsed(&format!("CONNECT a:1 HTTP/1.1\r\n{many}\r\n")).is_none());
    }

    #[test]
    fn a_tunnel_answer_has_no_length_and_a_date() {
        let mut response = Response::new(empty());
        response
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        response
            .headers_mut()
            .insert("x-tunnel", HeaderValue::from_static("yes"));
        let head = String::from_utf8(response_head(&response)).expect("ASCII");
        assert!(
            head.starts_with("HTTP/1.1 200 OK\r\nx-tunnel: yes\r\ndate: "),
            "{head}"
        );
        assert!(head.ends_with(" GMT\r\n\r\n"), "{head}");
        assert!(!head.contains("content-length"), "{head}");
    }
}
