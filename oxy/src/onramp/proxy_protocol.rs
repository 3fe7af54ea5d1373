//! PROXY protocol v1 and v2 headers from load balancers (parsed with `ppp`): who the
//! client really is, checked against the trusted networks, with v2 TLVs and CRC32C.

use crate::settings::{ProxyProtocolMode, ProxyProtocolSettings};
use bytes::Bytes;
use ppp::v2;
use std::io;
use std::net::SocketAddr;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 header (RFC: 107 bytes with CRLF).
const V1_MAX: usize = 107;
/// v2 TLV types the facts name.
const TLV_ALPN: u8 = 0x01;
const TLV_AUTHORITY: u8 = 0x02;
const TLV_CRC32C: u8 = 0x03;
const TLV_UNIQUE_ID: u8 = 0x05;
const TLV_SSL: u8 = 0x20;

/// What a PROXY header said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyFacts {
    /// 1 or 2.
    pub version: u8,
    /// `LOCAL` (v2) or `UNKNOWN` (v1): the balancer's own connection (a health check);
    /// the socket's peer stays the client.
    pub local: bool,
    /// The original client.
    pub source: Option<SocketAddr>,
    /// The address the client connected to on the balancer.
    pub destination: Option<SocketAddr>,
    /// v2 type-length-value records, in order.
    pub tlvs: Vec<(u8, Vec<u8>)>,
}

impl ProxyFacts {
    fn tlv(&self, kind: u8) -> Option<&[u8]> {
        self.tlvs
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, v)| v.as_slice())
    }

    /// The ALPN the client negotiated with the balancer (TLV 0x01).
    pub fn alpn(&self) -> Option<&[u8]> {
        self.tlv(TLV_ALPN)
    }

    /// The host name the client asked the balancer for (TLV 0x02).
    pub fn authority(&self) -> Option<&str> {
        self.tlv(TLV_AUTHORITY)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The balancer's unique id of the connection (TLV 0x05).
    pub fn unique_id(&self) -> Option<&[u8]> {
        self.tlv(TLV_UNIQUE_ID)
    }

    /// The balancer's TLS facts (TLV 0x20: client flags, verify result and sub-TLVs such
    /// as version and cipher), as sent.
    pub fn ssl_info(&self) -> Option<&[u8]> {
        self.tlv(TLV_SSL)
    }
}

/// Why a connection's PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    /// The header did not arrive in time.
    #[error("the PROXY header did not arrive in time")]
    Timeout,
    /// A header came from a peer outside `proxy_protocol.trusted`.
    #[error("a PROXY header from untrusted {0}")]
    Untrusted(SocketAddr),
    /// `required` mode, and the connection does not start with a header.
    #[error("no PROXY header")]
    Missing,
    /// The header is malformed (signature, version, command, family, lengths, TLVs).
    #[error("malformed PROXY header: {0}")]
    Malformed(String),
    /// A v1 header longer than 107 bytes.
    #[error("PROXY v1 header too long")]
    TooLong,
    /// The CRC32C TLV does not match the header.
    #[error("PROXY v2 header with a bad CRC32C")]
    BadCrc,
    /// The connection ended or failed before the header was complete.
    #[error("connection ended during the PROXY header: {0}")]
    Io(#[from] io::Error),
}

impl ProxyHeaderError {
    /// A short, stable label for `oxy_proxy_protocol_errors_total{reason}`.
    pub fn as_label(&self) -> &'static str {
        match self {
            ProxyHeaderError::Timeout => "timeout",
            ProxyHeaderError::Untrusted(_) => "untrusted",
            ProxyHeaderError::Missing => "missing",
            ProxyHeaderError::Malformed(_) => "malformed",
            ProxyHeaderError::TooLong => "too_long",
            ProxyHeaderError::BadCrc => "bad_crc",
            ProxyHeaderError::Io(_) => "truncated",
        }
    }
}

/// PROXY protocol metrics.
#[crate::metrics]
pub mod oxy_proxy_protocol {
    /// Connections whose PROXY header was used, by endpoint and version.
    pub fn headers_total(endpoint: &str, version: u8) -> Counter;

    /// Connections closed for their PROXY header, by endpoint and reason.
    pub fn errors_total(endpoint: &str, reason: &str) -> Counter;
}

/// Splits a datagram into its PROXY v2 header's facts (`None` when it has none) and its
/// payload. Datagrams carry v2 only; a v1 header is malformed here.
pub fn split_datagram(datagram: &[u8]) -> Result<(Option<ProxyFacts>, usize), ProxyHeaderError> {
    if !datagram.starts_with(V2_SIGNATURE) {
        return Ok((None, 0));
    }
    match decide(datagram)? {
        Decision::Header(facts, len) => Ok((Some(facts), len)),
        _ => Err(ProxyHeaderError::Malformed(
            "truncated header in a datagram".into(),
        )),
    }
}

/// Whether `peer` may send PROXY headers.
pub fn is_trusted(settings: &ProxyProtocolSettings, peer: SocketAddr) -> bool {
    settings.trusted.iter().any(|net| net.contains(&peer.ip()))
}

/// Reads the header `settings` ask for from the start of `stream`. Returns its facts
/// (`None` when there was none, in `optional` mode) and the bytes read after it.
pub async fn read_header(
    stream: &mut TcpStream,
    peer: SocketAddr,
    settings: &ProxyProtocolSettings,
) -> Result<(Option<ProxyFacts>, Bytes), ProxyHeaderError> {
    let reading = read(stream, settings.mode);
    let (facts, rest) = tokio::time::timeout(settings.header_timeout, reading)
        .await
        .map_err(|_| ProxyHeaderError::Timeout)??;
    if facts.is_some() && !is_trusted(settings, peer) {
        return Err(ProxyHeaderError::Untrusted(peer));
    }
    Ok((facts, rest))
}

async fn read(
    stream: &mut TcpStream,
    mode: ProxyProtocolMode,
) -> Result<(Option<ProxyFacts>, Bytes), ProxyHeaderError> {
    let mut buf = Vec::with_capacity(256);
    loop {
        match decide(&buf)? {
            Decision::NeedMore => {}
            Decision::NoHeader if mode == ProxyProtocolMode::Required => {
                return Err(ProxyHeaderError::Missing);
            }
            Decision::NoHeader => return Ok((None, Bytes::from(buf))),
            Decision::Header(facts, len) => {
                let rest = Bytes::from(buf).slice(len..);
                return Ok((Some(facts), rest));
            }
        }
        let mut chunk = [0u8; 512];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            if buf.is_empty() && mode != ProxyProtocolMode::Required {
                return Ok((None, Bytes::new()));
            }
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

enum Decision {
    NeedMore,
    NoHeader,
    Header(ProxyFacts, usize),
}

fn starts_like(buf: &[u8], prefix: &[u8]) -> bool {
    let n = buf.len().min(prefix.len());
    buf[..n] == prefix[..n]
}

/// Whether `buf` holds a complete header, cannot start one, or needs more bytes.
fn decide(buf: &[u8]) -> Result<Decision, ProxyHeaderError> {
    if buf.is_empty() {
        return Ok(Decision::NeedMore);
    }
    if starts_like(buf, V2_SIGNATURE) {
        if buf.len() < 16 {
            return Ok(Decision::NeedMore);
        }
        let total = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        if buf.len() < total {
            return Ok(Decision::NeedMore);
        }
        return parse_v2(&buf[..total]).map(|facts| Decision::Header(facts, total));
    }
    if starts_like(buf, V1_PREFIX) {
        let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
            return if buf.len() >= V1_MAX {
                Err(ProxyHeaderError::TooLong)
            } else {
                Ok(Decision::NeedMore)
            };
        };
        let len = end + 2;
        if len > V1_MAX {
            return Err(ProxyHeaderError::TooLong);
        }
        return parse_v1(&buf[..len]).map(|facts| Decision::Header(facts, len));
    }
    Ok(Decision::NoHeader)
}

fn parse_v1(header: &[u8]) -> Result<ProxyFacts, ProxyHeaderError> {
    // From bytes: ppp's `&str` parser slices at the first CR, which can fall inside a
    // multi-byte character and panic (`PROXY \ré\r\n`, found by fuzzing).
    let parsed = ppp::v1::Header::try_from(header)
        .map_err(|e| ProxyHeaderError::Malformed(e.to_string()))?;
    let (source, destination) = match parsed.addresses {
        ppp::v1::Addresses::Tcp4(a) => (
            Some(SocketAddr::from((a.source_address, a.source_port))),
            Some(SocketAddr::from((
                a.destination_address,
                a.destination_port,
            ))),
        ),
        ppp::v1::Addresses::Tcp6(a) => (
            Some(SocketAddr::from((a.source_address, a.source_port))),
            Some(SocketAddr::from((
                a.destination_address,
                a.destination_port,
            ))),
        ),
        ppp::v1::Addresses::Unknown => (None, None),
    };
    Ok(ProxyFacts {
        version: 1,
        local: source.is_none(),
        source,
        destination,
        tlvs: Vec::new(),
    })
}

fn parse_v2(header: &[u8]) -> Result<ProxyFacts, ProxyHeaderError> {
    let parsed =
        v2::Header::try_from(header).map_err(|e| ProxyHeaderError::Malformed(e.to_string()))?;
    let mut tlvs = Vec::new();
    for tlv in parsed.tlvs() {
        let tlv = tlv.map_err(|e| ProxyHeaderError::Malformed(e.to_string()))?;
        tlvs.push((tlv.kind, tlv.value.to_vec()));
    }
    // The TLVs fill the header's end; each is a type byte, a 2-byte length, the value.
    let tlv_bytes: usize = tlvs.iter().map(|(_, value)| 3 + value.len()).sum();
    let mut at = header
        .len()
        .checked_sub(tlv_bytes)
        .ok_or_else(|| ProxyHeaderError::Malformed("TLVs longer than the header".into()))?;
    for (kind, value) in &tlvs {
        if *kind == TLV_CRC32C {
            check_crc(header, at + 3, value)?;
            break;
        }
        at += 3 + value.len();
    }
    let (source, destination) = match parsed.addresses {
        v2::Addresses::IPv4(a) => (
            Some(SocketAddr::from((a.source_address, a.source_port))),
            Some(SocketAddr::from((
                a.destination_address,
                a.destination_port,
            ))),
        ),
        v2::Addresses::IPv6(a) => (
            Some(SocketAddr::from((a.source_address, a.source_port))),
            Some(SocketAddr::from((
                a.destination_address,
                a.destination_port,
            ))),
        ),
        v2::Addresses::Unspecified | v2::Addresses::Unix(_) => (None, None),
    };
    let local = parsed.command == v2::Command::Local;
    Ok(ProxyFacts {
        version: 2,
        local,
        source: if local { None } else { source },
        destination: if local { None } else { destination },
        tlvs,
    })
}

/// The CRC32C TLV, whose value is at `at`, covers the whole header with its own value
/// zeroed.
fn check_crc(header: &[u8], at: usize, crc: &[u8]) -> Result<(), ProxyHeaderError> {
    let expected = <[u8; 4]>::try_from(crc)
        .map(u32::from_be_bytes)
        .map_err(|_| ProxyHeaderError::BadCrc)?;
    let mut zeroed = header.to_vec();
    zeroed
        .get_mut(at..at + 4)
        .ok_or(ProxyHeaderError::BadCrc)?
        .fill(0);
    if crc32c::crc32c(&zeroed) == expected {
        Ok(())
    } else {
        Err(ProxyHeaderError::BadCrc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(buf: &[u8]) -> Result<Option<(ProxyFacts, usize)>, String> {
        match decide(buf).map_err(|e| e.as_label().to_string())? {
            Decision::Header(f, n) => Ok(Some((f, n))),
            Decision::NoHeader => Ok(None),
            Decision::NeedMore => Err("need more".into()),
        }
    }

    #[test]
    fn v1_headers() {
        let (f, n) = facts(b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\nGET /")
            .unwrap()
            .unwrap();
        assert_eq!(n, 42);
        assert_eq!(f.source, Some("203.0.113.7:5555".parse().unwrap()));
        assert_eq!(f.destination, Some("127.0.0.1:80".parse().unwrap()));
        let (f, _) = facts(b"PROXY UNKNOWN\r\n").unwrap().unwrap();
        assert!(f.local && f.source.is_none());
        assert_eq!(facts(b"PROXY TCP4 1.2.3.4").unwrap_err(), "need more");
        assert_eq!(
            facts(&[b"PROXY ".as_slice(), &[b'x'; 120]].concat()).unwrap_err(),
            "too_long"
        );
        assert_eq!(
            facts(b"PROXY TCP4 nope 1.2.3.4 1 2\r\n").unwrap_err(),
            "malformed"
        );
        assert_eq!(facts(b"GET / HTTP/1.1\r\n").unwrap(), None);
        assert_eq!(facts(b"PRO").unwrap_err(), "need more");
    }

    #[test]
    fn a_v1_line_with_a_multibyte_character_after_a_bare_cr_is_malformed() {
        assert_eq!(
            facts("PROXY \r\u{e9}\r\n".as_bytes()).unwrap_err(),
            "malformed"
        );
    }

    #[test]
    fn v2_headers_with_tlvs_crc_and_local() {
        let client: SocketAddr = "203.0.113.7:5555".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let header = crate::offramp::proxy_header::v2_header(
            client,
            local,
            false,
            &[
                (0xE0, b"t".to_vec()),
                (TLV_AUTHORITY, b"example.com".to_vec()),
            ],
        )
        .unwrap();
        let (f, n) = facts(&[header.as_slice(), b"rest"].concat())
            .unwrap()
            .unwrap();
        assert_eq!(n, header.len());
        assert_eq!(f.source, Some(client));
        assert_eq!(f.authority(), Some("example.com"));
        assert_eq!(facts(&header[..10]).unwrap_err(), "need more");

        // A CRC32C TLV that matches, then one that does not.
        let mut with_crc = ppp::v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (client, local),
        )
        .write_tlv(TLV_CRC32C, &[0, 0, 0, 0])
        .unwrap()
        .build()
        .unwrap();
        let crc = crc32c::crc32c(&with_crc).to_be_bytes();
        let at = with_crc.len() - 4;
        with_crc[at..].copy_from_slice(&crc);
        assert!(facts(&with_crc).unwrap().is_some());
        with_crc[at] ^= 0xff;
        assert_eq!(facts(&with_crc).unwrap_err(), "bad_crc");

        let local_cmd = ppp::v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Local,
            v2::Protocol::Stream,
            (client, local),
        )
        .build()
        .unwrap();
        let (f, _) = facts(&local_cmd).unwrap().unwrap();
        assert!(f.local && f.source.is_none());

        let mut bad_version = header.clone();
        bad_version[12] = 0x31;
        assert_eq!(facts(&bad_version).unwrap_err(), "malformed");
    }
}
