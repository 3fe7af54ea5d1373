//! Reading one IP packet (etherparse): version, lengths and checksums checked, and the
//! facts the flow table and the off-ramps need.

use etherparse::{Icmpv4Type, Icmpv6Type, IpNumber, NetSlice, SlicedPacket, TransportSlice};
use std::net::IpAddr;
use std::ops::Range;

/// IP protocol numbers Oxy handles itself.
pub mod protocol {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
}

/// What a packet says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketFacts {
    /// Source address.
    pub source: IpAddr,
    /// Destination address.
    pub destination: IpAddr,
    /// The upper-layer protocol number.
    pub protocol: u8,
    /// UDP or TCP source port.
    pub source_port: Option<u16>,
    /// UDP or TCP destination port.
    pub destination_port: Option<u16>,
    /// TTL (IPv4) or hop limit (IPv6).
    pub ttl: u8,
    /// Where the upper-layer payload lies in the packet (UDP: the datagram's payload;
    /// ICMP echo: the echo data).
    pub payload: Range<usize>,
    /// An ICMP or ICMPv6 echo request: identifier and sequence number.
    pub echo_request: Option<(u16, u16)>,
    /// An ICMP error message (never answered with another error).
    pub icmp_error: bool,
    /// A TCP segment with SYN and without ACK: it opens a connection.
    pub tcp_syn: bool,
    /// A fragment of a larger packet.
    pub fragment: bool,
}

/// Why a packet is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Not IPv4 or IPv6, or lengths that do not add up.
    #[error("malformed IP packet")]
    Malformed,
    /// An IPv4 header, UDP or ICMP checksum that does not match.
    #[error("bad checksum")]
    BadChecksum,
}

impl PacketError {
    /// A short, stable label for metrics.
    pub fn as_label(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::BadChecksum => "bad_checksum",
        }
    }
}

/// Parses and checks `packet`. TCP checksums are left to the TCP/IP stack or the
/// receiving host.
pub fn inspect(packet: &[u8]) -> Result<PacketFacts, PacketError> {
    let sliced = SlicedPacket::from_ip(packet).map_err(|_| PacketError::Malformed)?;
    let (source, destination, protocol, ttl, fragment, pseudo) = match &sliced.net {
        Some(NetSlice::Ipv4(v4)) => {
            let header = v4.header();
            if header.to_header().calc_header_checksum() != header.header_checksum() {
                return Err(PacketError::BadChecksum);
            }
            let (s, d) = (header.source(), header.destination());
            (
                IpAddr::from(s),
                IpAddr::from(d),
                v4.payload_ip_number(),
                header.ttl(),
                v4.is_payload_fragmented(),
                Pseudo::V4(s, d),
            )
        }
        Some(NetSlice::Ipv6(v6)) => {
            let header = v6.header();
            let (s, d) = (header.source(), header.destination());
            (
                IpAddr::from(s),
                IpAddr::from(d),
                v6.payload().ip_number,
                header.hop_limit(),
                v6.is_payload_fragmented(),
                Pseudo::V6(s, d),
            )
        }
        _ => return Err(PacketError::Malformed),
    };
    let mut facts = PacketFacts {
        source,
        destination,
        protocol: protocol.0,
        source_port: None,
        destination_port: None,
        ttl,
        payload: 0..0,
        echo_request: None,
        icmp_error: false,
        tcp_syn: false,
        fragment,
    };
    if fragment {
        return Ok(facts);
    }
    let offset = |inner: &[u8]| {
        let start = inner.as_ptr() as usize - packet.as_ptr() as usize;
        start..start + inner.len()
    };
    match &sliced.transport {
        Some(TransportSlice::Udp(udp)) => {
            if !udp_checksum_ok(udp, &pseudo) {
                return Err(PacketError::BadChecksum);
            }
            facts.source_port = Some(udp.source_port());
            facts.destination_port = Some(udp.destination_port());
            facts.payload = offset(udp.payload());
        }
        Some(TransportSlice::Tcp(tcp)) => {
            facts.source_port = Some(tcp.source_port());
            facts.destination_port = Some(tcp.destination_port());
            facts.tcp_syn = tcp.syn() && !tcp.ack();
            facts.payload = offset(tcp.payload());
        }
        Some(TransportSlice::Icmpv4(icmp)) => {
            if icmp.icmp_type().calc_checksum(icmp.payload()) != icmp.checksum() {
                return Err(PacketError::BadChecksum);
            }
            match icmp.icmp_type() {
                Icmpv4Type::EchoRequest(echo) => facts.echo_request = Some((echo.id, echo.seq)),
                Icmpv4Type::DestinationUnreachable(_)
                | Icmpv4Type::TimeExceeded(_)
                | Icmpv4Type::ParameterProblem(_)
                | Icmpv4Type::Redirect(_) => facts.icmp_error = true,
                _ => {}
            }
            facts.payload = offset(icmp.payload());
        }
        Some(TransportSlice::Icmpv6(icmp)) => {
            let Pseudo::V6(s, d) = pseudo else {
                return Err(PacketError::Malformed);
            };
            if !icmp.is_checksum_valid(s, d) {
                return Err(PacketError::BadChecksum);
            }
            match icmp.icmp_type() {
                Icmpv6Type::EchoRequest(echo) => facts.echo_request = Some((echo.id, echo.seq)),
                Icmpv6Type::DestinationUnreachable(_)
                | Icmpv6Type::PacketTooBig { .. }
                | Icmpv6Type::TimeExceeded(_)
                | Icmpv6Type::ParameterProblem(_) => facts.icmp_error = true,
                _ => {}
            }
            facts.payload = offset(icmp.payload());
        }
        // Other protocols (and UDP or TCP headers too short to parse) are carried as
        // they are; SlicedPacket refuses a truncated UDP or TCP header.
        _ => {
            if matches!(protocol, IpNumber::UDP | IpNumber::TCP) {
                return Err(PacketError::Malformed);
            }
        }
    }
    Ok(facts)
}

/// The addresses of the checksum pseudo-header.
enum Pseudo {
    V4([u8; 4], [u8; 4]),
    V6([u8; 16], [u8; 16]),
}

/// Whether a UDP checksum matches (zero means "none" on IPv4, and is wrong on IPv6).
fn udp_checksum_ok(udp: &etherparse::UdpSlice<'_>, pseudo: &Pseudo) -> bool {
    let header = udp.to_header();
    match pseudo {
        Pseudo::V4(..) if udp.checksum() == 0 => true,
        Pseudo::V4(s, d) => header
            .calc_checksum_ipv4_raw(*s, *d, udp.payload())
            .is_ok_and(|sum| sum == udp.checksum()),
        Pseudo::V6(s, d) => header
            .calc_checksum_ipv6_raw(*s, *d, udp.payload())
            .is_ok_and(|sum| sum == udp.checksum()),
    }
}

/// Whether `ip` names a group rather than one host: multicast, or the IPv4 limited
/// broadcast address.
pub fn is_group_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_multicast() || v4.is_broadcast(),
        IpAddr::V6(v6) => v6.is_multicast(),
    }
}

/// Decrements the TTL (IPv4, with the header checksum updated) or hop limit (IPv6) of a
/// packet [`inspect`] accepted; `false` when it is 1 or less, so the packet must not be
/// forwarded (ICMP time exceeded).
pub fn decrement_ttl(packet: &mut [u8]) -> bool {
    match packet.first().map(|b| b >> 4) {
        Some(4) => {
            let Ok(slice) = etherparse::Ipv4HeaderSlice::from_slice(packet) else {
                return false;
            };
            let mut header = slice.to_header();
            if header.time_to_live <= 1 {
                return false;
            }
            header.time_to_live -= 1;
            header.header_checksum = header.calc_header_checksum();
            let mut out: &mut [u8] = packet;
            header.write(&mut out).is_ok()
        }
        Some(6) => match packet.get_mut(7) {
            Some(hop) if *hop > 1 => {
                *hop -= 1;
                true
            }
            _ => false,
        },
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn udp_v4(payload: &[u8]) -> Vec<u8> {
        let builder = PacketBuilder::ipv4([192, 0, 2, 1], [198, 51, 100, 7], 64).udp(5000, 53);
        let mut out = Vec::new();
        builder.write(&mut out, payload).unwrap();
        out
    }

    #[test]
    fn udp_facts_and_checksums() {
        let packet = udp_v4(b"hello");
        let facts = inspect(&packet).unwrap();
        assert_eq!(facts.source.to_string(), "192.0.2.1");
        assert_eq!(facts.destination.to_string(), "198.51.100.7");
        assert_eq!(
            (facts.protocol, facts.source_port, facts.destination_port),
            (17, Some(5000), Some(53))
        );
        assert_eq!(&packet[facts.payload.clone()], b"hello");
        let mut corrupt = packet.clone();
        *corrupt.last_mut().unwrap() ^= 1;
        assert_eq!(inspect(&corrupt), Err(PacketError::BadChecksum));
        let mut header = packet.clone();
        header[8] ^= 1; // TTL changed without the header checksum
        assert_eq!(inspect(&header), Err(PacketError::BadChecksum));
        assert_eq!(inspect(&packet[..10]), Err(PacketError::Malformed));
        assert_eq!(inspect(&[0x50; 40]), Err(PacketError::Malformed));
    }

    #[test]
    fn echo_requests_over_both_versions() {
        let mut out = Vec::new();
        PacketBuilder::ipv6(
            [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            3,
        )
        .icmpv6_echo_request(7, 9)
        .write(&mut out, b"ping")
        .unwrap();
        let facts = inspect(&out).unwrap();
        assert_eq!(
            (facts.protocol, facts.echo_request, facts.ttl),
            (58, Some((7, 9)), 3)
        );
        assert_eq!(&out[facts.payload], b"ping");
    }

    #[test]
    fn ttl_decrements_with_a_valid_checksum() {
        let mut packet = udp_v4(b"x");
        assert!(decrement_ttl(&mut packet));
        let facts = inspect(&packet).unwrap();
        assert_eq!(facts.ttl, 63);
        packet[8] = 1;
        assert!(!decrement_ttl(&mut packet));
    }
}
