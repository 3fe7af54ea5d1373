//! Reads the first bytes a tunnel's client sends, to tell plain HTTP, a TLS ClientHello
//! and anything else apart (on UDP: a QUIC Initial or not); what was read stays to be
//! read again.

use crate::hooks::InnerProtocol;
use crate::tls::interception::quic_initial::{Sniffed, sniff_initials};
use crate::tls::interception::{ClientHello, HelloError, parse_client_hello};
use crate::tunnel::stream::TunnelStream;
use bytes::Bytes;
use bytes::BytesMut;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

/// The most datagrams read to find a whole ClientHello in QUIC Initials (a post-quantum
/// key share makes it span two).
const MAX_INITIALS: usize = 4;
/// The most bytes read to find a whole ClientHello (its TLS records included).
const MAX_HELLO: usize = 16 * 1024 + 5;
/// A TLS record header: type, version, length.
const RECORD_HEADER: usize = 5;
/// The TLS record type of handshake messages.
const HANDSHAKE: u8 = 0x16;
/// The longest HTTP method token looked for before the space after it.
const MAX_METHOD: usize = 16;

/// What `stream` starts with, and the stream with those bytes unread. Waits at most
/// `timeout` for them; a client that sends nothing in that time is `Unknown`.
pub async fn sniff(mut stream: TunnelStream, timeout: Duration) -> (InnerProtocol, TunnelStream) {
    let mut seen = BytesMut::with_capacity(2048);
    let found = tokio::time::timeout(timeout, read_until_known(&mut stream, &mut seen)).await;
    let found = found.unwrap_or(InnerProtocol::Unknown);
    (found, stream.unread(seen.freeze()))
}

/// What a UDP flow's first datagrams are, and those datagrams (to be sent on if the flow
/// is pumped). Waits at most `timeout` for each.
pub async fn sniff_datagrams(
    from_client: &mut mpsc::Receiver<Bytes>,
    timeout: Duration,
) -> (InnerProtocol, Vec<Bytes>) {
    let mut read = Vec::new();
    loop {
        let Ok(Some(datagram)) = tokio::time::timeout(timeout, from_client.recv()).await else {
            return (InnerProtocol::Unknown, read);
        };
        read.push(datagram);
        match sniff_initials(read.iter().map(|d| &d[..])) {
            Sniffed::Quic(hello) => return (InnerProtocol::Quic(hello), read),
            Sniffed::QuicIncomplete if read.len() < MAX_INITIALS => {}
            Sniffed::QuicIncomplete => {
                return (InnerProtocol::Quic(ClientHello::default()), read);
            }
            Sniffed::NotQuic => return (InnerProtocol::Unknown, read),
        }
    }
}

async fn read_until_known(stream: &mut TunnelStream, seen: &mut BytesMut) -> InnerProtocol {
    loop {
        if let Some(found) = classify(seen) {
            return found;
        }
        if seen.len() >= MAX_HELLO {
            return InnerProtocol::Unknown;
        }
        match stream.read_buf(seen).await {
            Ok(0) | Err(_) => return InnerProtocol::Unknown,
            Ok(_) => {}
        }
    }
}

/// What `bytes` are, or `None` while more are needed to tell.
fn classify(bytes: &[u8]) -> Option<InnerProtocol> {
    let first = *bytes.first()?;
    if first == HANDSHAKE {
        return tls_hello(bytes);
    }
    http_start(bytes)
}

/// A ClientHello from the handshake records at the start of `bytes`.
fn tls_hello(bytes: &[u8]) -> Option<InnerProtocol> {
    let mut handshake = Vec::new();
    let mut rest = bytes;
    while rest.len() >= RECORD_HEADER {
        let (header, body) = rest.split_at(RECORD_HEADER);
        if header[0] != HANDSHAKE || header[1] != 3 {
            return Some(InnerProtocol::Unknown);
        }
        let length = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if length == 0 || length > 16 * 1024 {
            return Some(InnerProtocol::Unknown);
        }
        let Some((fragment, after)) = body.split_at_checked(length) else {
            break;
        };
        handshake.extend_from_slice(fragment);
        rest = after;
        match parse_client_hello(&handshake) {
            Ok(hello) => return Some(InnerProtocol::Tls(hello)),
            Err(HelloError::Incomplete) => {}
            Err(HelloError::Malformed(_)) => return Some(InnerProtocol::Unknown),
        }
    }
    None
}

/// `Http` when `bytes` start with the HTTP/2 preface or an HTTP/1 method and a space.
fn http_start(bytes: &[u8]) -> Option<InnerProtocol> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";
    let compared = bytes.len().min(PREFACE.len());
    if bytes[..compared] == PREFACE[..compared] {
        return (compared == PREFACE.len()).then_some(InnerProtocol::Http);
    }
    for (i, byte) in bytes.iter().enumerate().take(MAX_METHOD + 1) {
        match byte {
            b' ' if i > 0 => return Some(InnerProtocol::Http),
            b'A'..=b'Z' | b'-' | b'_' if i < MAX_METHOD => {}
            _ => return Some(InnerProtocol::Unknown),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_methods_and_preface() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(InnerProtocol::Http));
        assert_eq!(
            classify(b"PRI * HTTP/2.0\r\n\r\nSM"),
            Some(InnerProtocol::Http)
        );
        assert_eq!(classify(b"PRI * HT"), None);
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"SSH-2.0-OpenSSH"), Some(InnerProtocol::Unknown));
        assert_eq!(classify(b"\x00\x01"), Some(InnerProtocol::Unknown));
        assert_eq!(classify(b" GET"), Some(InnerProtocol::Unknown));
        assert_eq!(classify(b""), None);
    }

    #[test]
    fn tls_records_not_handshakes_are_unknown() {
        assert_eq!(
            classify(b"\x16\x03\x01\x00\x00"),
            Some(InnerProtocol::Unknown)
        );
        assert_eq!(
            classify(b"\x16\x02\x01\x00\x10"),
            Some(InnerProtocol::Unknown)
        );
        assert_eq!(classify(b"\x16\x03\x01\x00\x10\x01"), None);
    }
}
