//! The Capsule Protocol (RFC 9297 §3.2) and HTTP Datagram payloads (RFC 9297 §2.1, RFC 9298 §5):
//! QUIC variable-length integers, a streaming capsule decoder with a size limit, and the
//! DATAGRAM capsule encoder.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// The largest value a QUIC variable-length integer can hold (2^62 - 1).
pub const VARINT_MAX: u64 = (1 << 62) - 1;

/// The DATAGRAM capsule type (RFC 9297 §3.5).
pub const DATAGRAM_CAPSULE: u64 = 0x00;

/// The context ID that carries UDP payloads in CONNECT-UDP (RFC 9298 §4).
pub const CONTEXT_ID_UDP: u8 = 0;

/// What can go wrong reading or writing capsules and HTTP Datagrams.
#[derive(Debug, thiserror::Error)]
pub enum CapsuleError {
    /// A DATAGRAM capsule declared a length above the configured limit.
    #[error("capsule of {length} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// The declared capsule length.
        length: u64,
        /// The configured limit.
        max: usize,
    },
    /// The stream ended inside a capsule.
    #[error("stream ended inside a capsule")]
    Truncated,
    /// An HTTP Datagram payload did not start with a complete context ID.
    #[error("HTTP Datagram without a valid context ID")]
    BadContext,
    /// A value does not fit in a QUIC variable-length integer.
    #[error("{0} does not fit in a QUIC variable-length integer")]
    VarintTooLarge(u64),
    /// The underlying stream failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl CapsuleError {
    /// A short, stable label for metrics.
    pub fn as_label(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too_large",
            Self::Truncated => "truncated",
            Self::BadContext => "bad_context",
            Self::VarintTooLarge(_) => "varint_too_large",
            Self::Io(_) => "io",
        }
    }
}

/// The encoded length of `value` as a varint (saturating at 8 bytes).
fn varint_len(value: u64) -> usize {
    match value {
        0..=0x3f => 1,
        0x40..=0x3fff => 2,
        0x4000..=0x3fff_ffff => 4,
        _ => 8,
    }
}

/// Writes `value` (clamped to [`VARINT_MAX`]) as a QUIC varint.
fn put_varint_saturating(out: &mut BytesMut, value: u64) {
    let value = value.min(VARINT_MAX);
    match varint_len(value) {
        1 => out.put_u8(value as u8),
        2 => out.put_u16(0x4000 | value as u16),
        4 => out.put_u32(0x8000_0000 | value as u32),
        _ => out.put_u64(0xc000_0000_0000_0000 | value),
    }
}

/// Writes `value` as a QUIC variable-length integer (RFC 9000 §16) in its shortest form.
///
/// Fails with [`CapsuleError::VarintTooLarge`] above [`VARINT_MAX`], writing nothing.
pub fn put_varint(out: &mut BytesMut, value: u64) -> Result<(), CapsuleError> {
    if value > VARINT_MAX {
        return Err(CapsuleError::VarintTooLarge(value));
    }
    put_varint_saturating(out, value);
    Ok(())
}

/// Reads a QUIC variable-length integer from the start of `buf`: the value and how many
/// bytes it took, or `None` if `buf` is too short to hold it.
pub fn get_varint(buf: &[u8]) -> Option<(u64, usize)> {
    let first = *buf.first()?;
    let len = 1usize << (first >> 6);
    let rest = buf.get(1..len)?;
    let value = rest
        .iter()
        .fold(u64::from(first & 0x3f), |acc, &b| (acc << 8) | u64::from(b));
    Some((value, len))
}

/// A capsule surfaced by [`CapsuleCodec`]; other capsule types are skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capsule {
    /// A DATAGRAM capsule; the payload is an HTTP Datagram payload (context ID varint + data).
    Datagram(Bytes),
    /// A capsule of a type the codec was asked to surface ([`CapsuleCodec::surfacing`]),
    /// with its payload, for the protocol that defines it to parse.
    Other {
        /// The capsule type.
        kind: u64,
        /// The capsule's value.
        payload: Bytes,
    },
}

/// Streams capsules off (and onto) a byte stream, limiting surfaced capsules to
/// `max_capsule` bytes and skipping unknown capsule types without buffering them.
#[derive(Debug, Clone)]
pub struct CapsuleCodec {
    max_capsule: usize,
    skipping: u64,
    surfaced: &'static [u64],
}

impl CapsuleCodec {
    /// A codec that surfaces DATAGRAM capsules and rejects those longer than
    /// `max_capsule` bytes.
    pub fn new(max_capsule: usize) -> Self {
        Self {
            max_capsule,
            skipping: 0,
            surfaced: &[],
        }
    }

    /// Also surfaces capsules of the types in `kinds` as [`Capsule::Other`], under the
    /// same size limit.
    pub fn surfacing(mut self, kinds: &'static [u64]) -> Self {
        self.surfaced = kinds;
        self
    }
}

impl Decoder for CapsuleCodec {
    type Item = Capsule;
    type Error = CapsuleError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Capsule>, CapsuleError> {
        loop {
            if self.skipping > 0 {
                let n = usize::try_from(self.skipping).map_or(buf.len(), |s| s.min(buf.len()));
                buf.advance(n);
                self.skipping -= n as u64;
                if self.skipping > 0 {
                    return Ok(None);
                }
            }
            let Some((kind, kind_len)) = get_varint(buf) else {
                return Ok(None);
            };
            let Some((length, length_len)) = get_varint(buf.get(kind_len..).unwrap_or_default())
            else {
                return Ok(None);
            };
            let header = kind_len + length_len;
            if kind != DATAGRAM_CAPSULE && !self.surfaced.contains(&kind) {
                buf.advance(header);
                self.skipping = length;
                continue;
            }
            let max = self.max_capsule;
            let body = usize::try_from(length).ok().filter(|&l| l <= max);
            let Some((body, total)) = body.and_then(|b| Some((b, b.checked_add(header)?))) else {
                return Err(CapsuleError::TooLarge { length, max });
            };
            if buf.len() < total {
                buf.reserve(total - buf.len());
                return Ok(None);
            }
            buf.advance(header);
            let payload = buf.split_to(body).freeze();
            return Ok(Some(match kind {
                DATAGRAM_CAPSULE => Capsule::Datagram(payload),
                kind => Capsule::Other { kind, payload },
            }));
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Capsule>, CapsuleError> {
        match self.decode(buf)? {
            Some(capsule) => Ok(Some(capsule)),
            None if buf.is_empty() && self.skipping == 0 => Ok(None),
            None => Err(CapsuleError::Truncated),
        }
    }
}

impl Encoder<Capsule> for CapsuleCodec {
    type Error = CapsuleError;

    fn encode(&mut self, capsule: Capsule, out: &mut BytesMut) -> Result<(), CapsuleError> {
        let (kind, payload) = match capsule {
            Capsule::Datagram(payload) => (DATAGRAM_CAPSULE, payload),
            Capsule::Other { kind, payload } => (kind, payload),
        };
        let length = payload.len() as u64;
        if length > VARINT_MAX || kind > VARINT_MAX {
            return Err(CapsuleError::VarintTooLarge(length.max(kind)));
        }
        out.reserve(varint_len(kind) + varint_len(length) + payload.len());
        put_varint_saturating(out, kind);
        put_varint_saturating(out, length);
        out.put_slice(&payload);
        Ok(())
    }
}

/// Extracts the UDP payload from an HTTP Datagram payload (RFC 9298 §5): `Some` (a zero-copy
/// slice) for context ID 0, `None` for any other context ID (to be dropped and counted, RFC
/// 9298 §4), [`CapsuleError::BadContext`] if the context ID is missing or truncated.
pub fn udp_payload(datagram: &Bytes) -> Result<Option<Bytes>, CapsuleError> {
    match get_varint(datagram) {
        None => Err(CapsuleError::BadContext),
        Some((0, len)) => Ok(Some(datagram.slice(len..))),
        Some(_) => Ok(None),
    }
}

/// One HTTP/3 Datagram (RFC 9297 §2.1) carrying the UDP `payload` of the request on
/// `stream_id`: its quarter stream ID, context ID 0, then the payload, in one buffer.
pub fn h3_udp_datagram(stream_id: u64, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(9 + payload.len());
    // A QUIC stream ID is below 2^62, so its quarter always fits a varint.
    let _ = put_varint(&mut out, stream_id / 4);
    out.put_u8(CONTEXT_ID_UDP);
    out.extend_from_slice(payload);
    out.freeze()
}

/// Appends one DATAGRAM capsule carrying `payload` under context ID 0 to `out`, with a single
/// reserve. Lengths above [`VARINT_MAX`] (unreachable in memory) would be saturated.
pub fn encode_udp_datagram_capsule(out: &mut BytesMut, payload: &[u8]) {
    let length = (payload.len() as u64).saturating_add(1);
    out.reserve(2 + varint_len(length) + payload.len());
    put_varint_saturating(out, DATAGRAM_CAPSULE);
    put_varint_saturating(out, length);
    out.put_u8(CONTEXT_ID_UDP);
    out.put_slice(payload);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The UDP payload of the next capsule `codec` decodes from `buf`.
    fn next_udp(codec: &mut CapsuleCodec, buf: &mut BytesMut) -> Bytes {
        let Some(Capsule::Datagram(d)) = codec.decode(buf).unwrap() else {
            panic!("not a DATAGRAM capsule")
        };
        udp_payload(&d).unwrap().unwrap()
    }

    #[test]
    fn varint_round_trips_at_boundaries() {
        let cases = [(0, 1), (63, 1), (64, 2), (16383, 2), (16384, 4)];
        let more = [((1 << 30) - 1, 4), (1 << 30, 8), (VARINT_MAX, 8)];
        for (value, len) in cases.into_iter().chain(more) {
            let mut out = BytesMut::new();
            put_varint(&mut out, value).unwrap();
            assert_eq!(out.len(), len, "{value}");
            assert_eq!(get_varint(&out), Some((value, len)));
            assert_eq!(get_varint(&out[..len - 1]), None);
        }
        let err = put_varint(&mut BytesMut::new(), VARINT_MAX + 1).unwrap_err();
        assert_eq!(err.as_label(), "varint_too_large");
    }

    #[test]
    fn rfc9000_examples() {
        let long = 0xc219_7c5e_ff14_e88c_u64.to_be_bytes();
        let examples: [(&[u8], u64); 4] = [
            (&long, 151_288_809_941_952_652),
            (&[0x9d, 0x7f, 0x3e, 0x7d], 494_878_333),
            (&[0x7b, 0xbd], 15293),
            (&[0x25], 37),
        ];
        for (bytes, value) in examples {
            assert_eq!(get_varint(bytes), Some((value, bytes.len())));
            let mut out = BytesMut::new();
            put_varint(&mut out, value).unwrap();
            assert_eq!(&out[..], bytes);
        }
        assert_eq!(get_varint(&[0x40, 0x25]), Some((37, 2)));
        assert_eq!(get_varint(&[]), None);
    }

    #[test]
    fn decodes_one_byte_at_a_time() {
        let mut wire = BytesMut::new();
        encode_udp_datagram_capsule(&mut wire, &[7; 100]);
        assert_eq!(&wire[..4], &[0x00, 0x40, 101, 0x00]);
        let (mut codec, mut buf) = (CapsuleCodec::new(1500), BytesMut::new());
        for (i, &b) in wire.iter().enumerate().take(wire.len() - 1) {
            buf.put_u8(b);
            assert_eq!(codec.decode(&mut buf).unwrap(), None);
            assert_eq!(buf.len(), i + 1, "partial capsule consumed");
        }
        buf.put_u8(7);
        assert_eq!(next_udp(&mut codec, &mut buf), &[7; 100][..]);
        assert!(buf.is_empty());
    }

    #[test]
    fn two_capsules_in_one_buffer() {
        let mut buf = BytesMut::new();
        encode_udp_datagram_capsule(&mut buf, b"one");
        encode_udp_datagram_capsule(&mut buf, b"two");
        let mut codec = CapsuleCodec::new(1500);
        assert_eq!(next_udp(&mut codec, &mut buf), &b"one"[..]);
        assert_eq!(next_udp(&mut codec, &mut buf), &b"two"[..]);
        assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
    }

    #[test]
    fn skips_unknown_types_without_buffering() {
        let mut codec = CapsuleCodec::new(1500);
        // Type 0x2a (two-byte form), length 100000 (four-byte form): larger than max_capsule.
        let mut buf = BytesMut::from(&[0x40, 0x2a, 0x80, 0x01, 0x86, 0xa0][..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
        for _ in 0..100 {
            buf.put_slice(&[0xee; 1000]);
            assert_eq!(codec.decode(&mut buf).unwrap(), None);
            assert!(buf.is_empty());
        }
        assert_eq!(codec.skipping, 0);
        encode_udp_datagram_capsule(&mut buf, b"after");
        assert_eq!(next_udp(&mut codec, &mut buf), &b"after"[..]);
    }

    #[test]
    fn surfaces_only_the_asked_types() {
        let mut wire = BytesMut::new();
        let mut codec = CapsuleCodec::new(1500).surfacing(&[0x02]);
        for kind in [0x01, 0x02] {
            let payload = Bytes::from_static(b"abc");
            codec
                .encode(Capsule::Other { kind, payload }, &mut wire)
                .unwrap();
        }
        let payload = Bytes::from_static(b"abc");
        assert_eq!(
            codec.decode(&mut wire).unwrap(),
            Some(Capsule::Other {
                kind: 0x02,
                payload
            })
        );
        assert_eq!(codec.decode_eof(&mut wire).unwrap(), None);
        let mut big = BytesMut::from(&[0x02, 0x45, 0xdd][..]);
        assert_eq!(codec.decode(&mut big).unwrap_err().as_label(), "too_large");
    }

    #[test]
    fn too_large_from_header_alone() {
        let mut codec = CapsuleCodec::new(1500);
        let err = codec.decode(&mut BytesMut::from(&[0x00, 0x45, 0xdd][..]));
        let err = err.unwrap_err();
        assert_eq!(
            err.to_string(),
            "capsule of 1501 bytes exceeds the 1500-byte limit"
        );
        assert_eq!(err.as_label(), "too_large");
    }

    #[test]
    fn eof_inside_capsule_is_truncated() {
        for wire in [&[0x00, 0x05, 0x00, 0x01][..], &[0x2a, 0x05, 0x00], &[0x40]] {
            let mut codec = CapsuleCodec::new(1500);
            let err = codec.decode_eof(&mut BytesMut::from(wire)).unwrap_err();
            assert_eq!(err.as_label(), "truncated");
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let (mut codec, mut buf) = (CapsuleCodec::new(1 << 16), BytesMut::new());
        let capsule = Capsule::Datagram(Bytes::from(vec![0x00; 300]));
        codec.encode(capsule.clone(), &mut buf).unwrap();
        assert_eq!(&buf[..3], &[0x00, 0x41, 0x2c]);
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(capsule));
    }

    #[test]
    fn udp_payload_contexts() {
        let d = Bytes::from_static(&[0x00, 1, 2, 3]);
        assert_eq!(udp_payload(&d).unwrap().unwrap(), &[1, 2, 3][..]);
        assert_eq!(udp_payload(&Bytes::from_static(&[0x05, 1])).unwrap(), None);
        assert_eq!(
            udp_payload(&Bytes::new()).unwrap_err().as_label(),
            "bad_context"
        );
        assert!(udp_payload(&Bytes::from_static(&[0x40])).is_err());
    }

    /// Arbitrary bytes (a fixed pseudo-random sequence, fed in uneven chunks) never
    /// panic the decoder: each ends as capsules, a need for more bytes, or an error.
    #[test]
    fn arbitrary_input_never_panics() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for round in 0..2_000 {
            let mut codec = CapsuleCodec::new(1500);
            let mut buf = BytesMut::new();
            let len = (round % 97) + 1;
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                buf.put_u8(state as u8);
                match codec.decode(&mut buf) {
                    Ok(Some(Capsule::Datagram(d))) => {
                        let _ = udp_payload(&d);
                    }
                    Ok(Some(Capsule::Other { .. })) | Ok(None) => {}
                    Err(_) => break,
                }
            }
            let _ = codec.decode_eof(&mut buf);
        }
    }
}
