//! The CONNECT-IP capsules (RFC 9484 §4.7): ADDRESS_ASSIGN, ADDRESS_REQUEST and
//! ROUTE_ADVERTISEMENT, parsed from a capsule's payload and encoded onto a stream.

use crate::http::capsule::{get_varint, put_varint};
use bytes::{BufMut, Bytes, BytesMut};
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The ADDRESS_ASSIGN capsule type.
pub const ADDRESS_ASSIGN: u64 = 0x01;
/// The ADDRESS_REQUEST capsule type.
pub const ADDRESS_REQUEST: u64 = 0x02;
/// The ROUTE_ADVERTISEMENT capsule type.
pub const ROUTE_ADVERTISEMENT: u64 = 0x03;
/// The capsule types CONNECT-IP adds to the Capsule Protocol.
pub const CONNECT_IP_CAPSULES: &[u64] = &[ADDRESS_ASSIGN, ADDRESS_REQUEST, ROUTE_ADVERTISEMENT];

/// One address (or prefix) in an ADDRESS_ASSIGN or ADDRESS_REQUEST capsule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressEntry {
    /// Pairs an assignment with its request; 0 in an unsolicited assignment.
    pub request_id: u64,
    /// The address and prefix length (`0.0.0.0/32` asks for any IPv4 address).
    pub prefix: IpNet,
}

/// One range of a ROUTE_ADVERTISEMENT capsule: destinations the client may send to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    /// First address of the range.
    pub start: IpAddr,
    /// Last address of the range (same family as `start`, not below it).
    pub end: IpAddr,
    /// IP protocol number, 0 for any.
    pub protocol: u8,
}

/// A parsed CONNECT-IP capsule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpCapsule {
    /// The addresses the sender assigns to its peer (the whole set: it replaces the last).
    AddressAssign(Vec<AddressEntry>),
    /// Addresses the sender asks its peer to assign.
    AddressRequest(Vec<AddressEntry>),
    /// The routes the sender can carry (the whole set).
    RouteAdvertisement(Vec<IpRange>),
}

/// Why a CONNECT-IP capsule is malformed; the stream carrying it is ended (RFC 9484 §4.7).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpCapsuleError {
    /// The payload ended inside an entry.
    #[error("CONNECT-IP capsule truncated")]
    Truncated,
    /// An IP version other than 4 or 6.
    #[error("IP version {0} in a CONNECT-IP capsule")]
    BadVersion(u8),
    /// A prefix length longer than the address.
    #[error("prefix length {0} is longer than the address")]
    BadPrefixLength(u8),
    /// An address with bits set beyond its prefix length.
    #[error("address {0} has bits set beyond its prefix length")]
    HostBits(IpNet),
    /// An ADDRESS_REQUEST with no address, or with request ID 0.
    #[error("ADDRESS_REQUEST without addresses or with request ID 0")]
    BadRequest,
    /// A range that ends before it starts.
    #[error("route {0} - {1} ends before it starts")]
    Backwards(IpAddr, IpAddr),
    /// Ranges out of order (version, then protocol, then start) or overlapping.
    #[error("routes out of order or overlapping")]
    Unordered,
    /// A capsule type that is not CONNECT-IP's.
    #[error("capsule type {0:#x} is not a CONNECT-IP capsule")]
    NotConnectIp(u64),
}

impl IpCapsuleError {
    /// A short, stable label for metrics.
    pub fn as_label(&self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::BadVersion(_) => "bad_ip_version",
            Self::BadPrefixLength(_) => "bad_prefix_length",
            Self::HostBits(_) => "host_bits",
            Self::BadRequest => "bad_address_request",
            Self::Backwards(..) => "backwards_route",
            Self::Unordered => "unordered_routes",
            Self::NotConnectIp(_) => "not_connect_ip",
        }
    }
}

/// Reads CONNECT-IP capsule payloads field by field.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn varint(&mut self) -> Result<u64, IpCapsuleError> {
        let (value, len) = get_varint(self.0).ok_or(IpCapsuleError::Truncated)?;
        self.0 = &self.0[len..];
        Ok(value)
    }

    fn byte(&mut self) -> Result<u8, IpCapsuleError> {
        let (&first, rest) = self.0.split_first().ok_or(IpCapsuleError::Truncated)?;
        self.0 = rest;
        Ok(first)
    }

    /// An IP address of `version` (4 or 6).
    fn address(&mut self, version: u8) -> Result<IpAddr, IpCapsuleError> {
        let len = match version {
            4 => 4,
            6 => 16,
            other => return Err(IpCapsuleError::BadVersion(other)),
        };
        let bytes = self.0.get(..len).ok_or(IpCapsuleError::Truncated)?;
        self.0 = &self.0[len..];
        Ok(match <[u8; 4]>::try_from(bytes) {
            Ok(v4) => IpAddr::V4(Ipv4Addr::from(v4)),
            Err(_) => {
                let v6 = <[u8; 16]>::try_from(bytes).map_err(|_| IpCapsuleError::Truncated)?;
                IpAddr::V6(Ipv6Addr::from(v6))
            }
        })
    }

    fn address_entry(&mut self) -> Result<AddressEntry, IpCapsuleError> {
        let request_id = self.varint()?;
        let version = self.byte()?;
        let address = self.address(version)?;
        let len = self.byte()?;
        let prefix = IpNet::new(address, len).map_err(|_| IpCapsuleError::BadPrefixLength(len))?;
        if prefix.trunc() != prefix {
            return Err(IpCapsuleError::HostBits(prefix));
        }
        Ok(AddressEntry { request_id, prefix })
    }

    fn range(&mut self) -> Result<IpRange, IpCapsuleError> {
        let version = self.byte()?;
        let start = self.address(version)?;
        let end = self.address(version)?;
        let protocol = self.byte()?;
        if start > end {
            return Err(IpCapsuleError::Backwards(start, end));
        }
        Ok(IpRange {
            start,
            end,
            protocol,
        })
    }
}

impl IpCapsule {
    /// Parses the payload of a capsule of type `kind`.
    pub fn parse(kind: u64, payload: &[u8]) -> Result<Self, IpCapsuleError> {
        let mut reader = Reader(payload);
        match kind {
            ADDRESS_ASSIGN | ADDRESS_REQUEST => {
                let mut entries = Vec::new();
                while !reader.0.is_empty() {
                    entries.push(reader.address_entry()?);
                }
                if kind == ADDRESS_ASSIGN {
                    return Ok(Self::AddressAssign(entries));
                }
                if entries.is_empty() || entries.iter().any(|e| e.request_id == 0) {
                    return Err(IpCapsuleError::BadRequest);
                }
                Ok(Self::AddressRequest(entries))
            }
            ROUTE_ADVERTISEMENT => {
                let mut ranges: Vec<IpRange> = Vec::new();
                while !reader.0.is_empty() {
                    let range = reader.range()?;
                    if ranges.last().is_some_and(|last| !in_order(last, &range)) {
                        return Err(IpCapsuleError::Unordered);
                    }
                    ranges.push(range);
                }
                Ok(Self::RouteAdvertisement(ranges))
            }
            other => Err(IpCapsuleError::NotConnectIp(other)),
        }
    }

    /// Appends the capsule (type, length, payload) to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let mut payload = BytesMut::new();
        let kind = match self {
            Self::AddressAssign(entries) | Self::AddressRequest(entries) => {
                for entry in entries {
                    // Request IDs come from a peer's varint or from Oxy's small counters.
                    let _ = put_varint(&mut payload, entry.request_id);
                    put_address(&mut payload, entry.prefix.addr());
                    payload.put_u8(entry.prefix.prefix_len());
                }
                if matches!(self, Self::AddressAssign(_)) {
                    ADDRESS_ASSIGN
                } else {
                    ADDRESS_REQUEST
                }
            }
            Self::RouteAdvertisement(ranges) => {
                for range in ranges {
                    put_address(&mut payload, range.start);
                    payload.extend_from_slice(&address_octets(range.end));
                    payload.put_u8(range.protocol);
                }
                ROUTE_ADVERTISEMENT
            }
        };
        let _ = put_varint(out, kind);
        let _ = put_varint(out, payload.len() as u64);
        out.extend_from_slice(&payload);
    }

    /// The capsule as bytes, ready for the stream.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out.freeze()
    }
}

/// Whether `next` may follow `last` in a ROUTE_ADVERTISEMENT (RFC 9484 §4.7.3): IPv4
/// before IPv6, then by protocol, then by start, and ranges of one version and protocol
/// do not overlap.
fn in_order(last: &IpRange, next: &IpRange) -> bool {
    let version = |r: &IpRange| u8::from(r.start.is_ipv6());
    match (version(last), last.protocol).cmp(&(version(next), next.protocol)) {
        std::cmp::Ordering::Less => true,
        std::cmp::Ordering::Greater => false,
        std::cmp::Ordering::Equal => last.end < next.start,
    }
}

/// Writes the version byte and the address.
fn put_address(out: &mut BytesMut, address: IpAddr) {
    out.put_u8(if address.is_ipv4() { 4 } else { 6 });
    out.extend_from_slice(&address_octets(address));
}

fn address_octets(address: IpAddr) -> Vec<u8> {
    match address {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::http::capsule::{Capsule, CapsuleCodec};
    use tokio_util::codec::Decoder;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Encodes `capsule`, decodes it with the codec and parses it back.
    fn round_trip(capsule: &IpCapsule) -> IpCapsule {
        let mut wire = capsule.to_bytes().into();
        let mut codec = CapsuleCodec::new(1500).surfacing(CONNECT_IP_CAPSULES);
        let Some(Capsule::Other { kind, payload }) = codec.decode(&mut wire).unwrap() else {
            panic!("no capsule")
        };
        IpCapsule::parse(kind, &payload).unwrap()
    }

    #[test]
    fn address_capsules_round_trip() {
        let assign = IpCapsule::AddressAssign(vec![
            AddressEntry {
                request_id: 0,
                prefix: net("192.0.2.7/32"),
            },
            AddressEntry {
                request_id: 300,
                prefix: net("2001:db8::/64"),
            },
        ]);
        assert_eq!(round_trip(&assign), assign);
        let request = IpCapsule::AddressRequest(vec![AddressEntry {
            request_id: 1,
            prefix: net("0.0.0.0/32"),
        }]);
        assert_eq!(round_trip(&request), request);
        // The wire form of that request: type 2, length 7, id 1, version 4, 0.0.0.0, 32.
        assert_eq!(&request.to_bytes()[..], &[2, 7, 1, 4, 0, 0, 0, 0, 32]);
        assert_eq!(
            IpCapsule::parse(ADDRESS_ASSIGN, &[]).unwrap(),
            IpCapsule::AddressAssign(vec![])
        );
    }

    #[test]
    fn malformed_address_capsules() {
        let cases: [(&[u8], &str); 5] = [
            (&[1, 4, 192, 0, 2], "truncated"),
            (&[1, 5, 192, 0, 2, 1, 32], "bad_ip_version"),
            (&[1, 4, 192, 0, 2, 1, 33], "bad_prefix_length"),
            (&[1, 4, 192, 0, 2, 1, 24], "host_bits"),
            (&[0, 4, 192, 0, 2, 1, 32], "bad_address_request"),
        ];
        for (payload, label) in cases {
            let err = IpCapsule::parse(ADDRESS_REQUEST, payload).unwrap_err();
            assert_eq!(err.as_label(), label, "{payload:?}");
        }
        let err = IpCapsule::parse(ADDRESS_REQUEST, &[]).unwrap_err();
        assert_eq!(err.as_label(), "bad_address_request");
    }

    #[test]
    fn routes_round_trip_and_order() {
        let range = |start: &str, end: &str, protocol| IpRange {
            start: ip(start),
            end: ip(end),
            protocol,
        };
        let routes = IpCapsule::RouteAdvertisement(vec![
            range("0.0.0.0", "9.255.255.255", 0),
            range("11.0.0.0", "255.255.255.255", 0),
            range("192.0.2.0", "192.0.2.255", 17),
            range("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 0),
        ]);
        assert_eq!(round_trip(&routes), routes);
        for bad in [
            vec![
                range("11.0.0.0", "12.0.0.0", 0),
                range("0.0.0.0", "1.0.0.0", 0),
            ],
            vec![
                range("0.0.0.0", "12.0.0.0", 0),
                range("12.0.0.0", "13.0.0.0", 0),
            ],
            vec![range("::", "::1", 0), range("0.0.0.0", "1.0.0.0", 0)],
            vec![
                range("0.0.0.0", "1.0.0.0", 17),
                range("2.0.0.0", "3.0.0.0", 6),
            ],
        ] {
            let wire = IpCapsule::RouteAdvertisement(bad).to_bytes();
            let err = IpCapsule::parse(ROUTE_ADVERTISEMENT, &wire[2..]).unwrap_err();
            assert_eq!(err, IpCapsuleError::Unordered);
        }
        let backwards = IpCapsule::RouteAdvertisement(vec![range("2.0.0.0", "1.0.0.0", 0)]);
        let err = IpCapsule::parse(ROUTE_ADVERTISEMENT, &backwards.to_bytes()[2..]);
        assert_eq!(err.unwrap_err().as_label(), "backwards_route");
    }
}
