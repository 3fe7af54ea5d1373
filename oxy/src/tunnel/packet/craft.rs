//! Packets Oxy writes towards a client itself, built with etherparse: UDP replies, ICMP
//! echo replies, ICMP errors quoting the packet they are about, and TCP resets.

use super::inspect::{PacketFacts, is_group_address};
use etherparse::{Icmpv4Type, Icmpv6Type, IpHeaders};
use etherparse::{PacketBuilder, PacketBuilderStep, SlicedPacket, TransportSlice, icmpv4, icmpv6};
use std::net::{IpAddr, SocketAddr};

/// The TTL (hop limit) of packets Oxy originates.
const TTL: u8 = 64;
/// ICMPv4 errors stay within the minimum reassembly size (RFC 1812 §4.3.2.3).
const ICMPV4_MAX: usize = 576;
/// ICMPv6 errors stay within the minimum MTU (RFC 4443 §2.4 (c)).
const ICMPV6_MAX: usize = 1280;

/// Which ICMP error to send (RFC 9484 §7 names the first two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpError {
    /// Destination unreachable, administratively prohibited: the destination is
    /// outside the scope or denied by policy or a hook.
    Prohibited,
    /// The packet is larger than the path carries: IPv4 "fragmentation needed" or
    /// ICMPv6 Packet Too Big, with the MTU that fits.
    PacketTooBig {
        /// The largest packet the path carries.
        mtu: u16,
    },
    /// TTL or hop limit exhausted.
    TimeExceeded,
    /// Nothing listens on the UDP port (the off-ramp socket was refused).
    PortUnreachable,
    /// The destination could not be reached.
    HostUnreachable,
    /// Oxy does not carry this protocol.
    ProtocolUnreachable,
}

impl IcmpError {
    /// A short, stable label for metrics.
    pub fn as_label(self) -> &'static str {
        match self {
            Self::Prohibited => "prohibited",
            Self::PacketTooBig { .. } => "packet_too_big",
            Self::TimeExceeded => "time_exceeded",
            Self::PortUnreachable => "port_unreachable",
            Self::HostUnreachable => "host_unreachable",
            Self::ProtocolUnreachable => "protocol_unreachable",
        }
    }
}

/// Starts a packet from `source` to `destination` (same family).
fn ip(source: IpAddr, destination: IpAddr) -> Option<PacketBuilderStep<IpHeaders>> {
    match (source, destination) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Some(PacketBuilder::ipv4(s.octets(), d.octets(), TTL)),
        (IpAddr::V6(s), IpAddr::V6(d)) => Some(PacketBuilder::ipv6(s.octets(), d.octets(), TTL)),
        _ => None,
    }
}

/// An ICMP error about `original` (described by `facts`), from its destination to its
/// source, quoting as much of it as the error may carry. `None` for an original that is
/// itself an ICMP error or a fragment, or whose destination is multicast or broadcast,
/// or whose source is not one host (RFC 1122 §3.2.2, RFC 1812 §4.3.2.7, RFC 4443 §2.4
/// (e)).
pub fn icmp_error(original: &[u8], facts: &PacketFacts, kind: IcmpError) -> Option<Vec<u8>> {
    let one_host = |ip: IpAddr| !is_group_address(ip) && !ip.is_unspecified();
    if facts.icmp_error || facts.fragment || !one_host(facts.destination) || !one_host(facts.source)
    {
        return None;
    }
    let builder = ip(facts.destination, facts.source)?;
    let mut out = Vec::new();
    let written = if facts.source.is_ipv4() {
        use icmpv4::{DestUnreachableHeader as Code, TimeExceededCode};
        let icmp = match kind {
            IcmpError::Prohibited => Icmpv4Type::DestinationUnreachable(Code::FilterProhibited),
            IcmpError::PacketTooBig { mtu } => {
                Icmpv4Type::DestinationUnreachable(Code::FragmentationNeeded { next_hop_mtu: mtu })
            }
            IcmpError::TimeExceeded => {
                Icmpv4Type::TimeExceeded(TimeExceededCode::TtlExceededInTransit)
            }
            IcmpError::PortUnreachable => Icmpv4Type::DestinationUnreachable(Code::Port),
            IcmpError::HostUnreachable => Icmpv4Type::DestinationUnreachable(Code::Host),
            IcmpError::ProtocolUnreachable => Icmpv4Type::DestinationUnreachable(Code::Protocol),
        };
        let quote = &original[..original.len().min(ICMPV4_MAX - 28)];
        builder.icmpv4(icmp).write(&mut out, quote)
    } else {
        use icmpv6::{DestUnreachableCode as Code, ParameterProblemCode, ParameterProblemHeader};
        let icmp = match kind {
            IcmpError::Prohibited => Icmpv6Type::DestinationUnreachable(Code::Prohibited),
            IcmpError::PacketTooBig { mtu } => Icmpv6Type::PacketTooBig {
                mtu: u32::from(mtu),
            },
            IcmpError::TimeExceeded => {
                Icmpv6Type::TimeExceeded(icmpv6::TimeExceededCode::HopLimitExceeded)
            }
            IcmpError::PortUnreachable => Icmpv6Type::DestinationUnreachable(Code::Port),
            IcmpError::HostUnreachable => Icmpv6Type::DestinationUnreachable(Code::Address),
            // The Next Header field of the fixed header, at offset 6.
            IcmpError::ProtocolUnreachable => {
                Icmpv6Type::ParameterProblem(ParameterProblemHeader {
                    code: ParameterProblemCode::UnrecognizedNextHeader,
                    pointer: 6,
                })
            }
        };
        let quote = &original[..original.len().min(ICMPV6_MAX - 48)];
        builder.icmpv6(icmp).write(&mut out, quote)
    };
    written.ok().map(|()| out)
}

/// A UDP packet carrying `payload` from `source` to `destination`.
pub fn udp(source: SocketAddr, destination: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
    let builder = ip(source.ip(), destination.ip())?.udp(source.port(), destination.port());
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, payload).ok().map(|()| out)
}

/// An ICMP (or ICMPv6) echo reply from `source` to `destination`.
pub fn echo_reply(
    source: IpAddr,
    destination: IpAddr,
    (id, seq): (u16, u16),
    data: &[u8],
) -> Option<Vec<u8>> {
    let builder = ip(source, destination)?;
    let mut out = Vec::new();
    let written = if source.is_ipv4() {
        builder.icmpv4_echo_reply(id, seq).write(&mut out, data)
    } else {
        builder.icmpv6_echo_reply(id, seq).write(&mut out, data)
    };
    written.ok().map(|()| out)
}

/// The ICMP echo request Oxy sends on a ping socket: the type, code and checksum are
/// filled in by the kernel for ping sockets, and here for raw ones.
pub fn echo_request_message(v6: bool, (id, seq): (u16, u16), data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + data.len());
    if v6 {
        // ICMPv6 checksums cover a pseudo-header; the kernel computes them on both
        // kinds of ICMPv6 sockets, so it is left 0 here.
        let header =
            etherparse::Icmpv6Header::new(Icmpv6Type::EchoRequest(etherparse::IcmpEchoHeader {
                id,
                seq,
            }));
        out.extend_from_slice(&header.to_bytes());
    } else {
        let echo = Icmpv4Type::EchoRequest(etherparse::IcmpEchoHeader { id, seq });
        out.extend_from_slice(&etherparse::Icmpv4Header::with_checksum(echo, data).to_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// A TCP reset answering `segment`, a connection attempt refused or a segment of no
/// known connection (RFC 9293 §3.10.7.1); `None` for a reset, which is never answered.
pub fn tcp_reset(segment: &[u8], facts: &PacketFacts) -> Option<Vec<u8>> {
    let sliced = SlicedPacket::from_ip(segment).ok()?;
    let Some(TransportSlice::Tcp(tcp)) = sliced.transport else {
        return None;
    };
    if tcp.rst() {
        return None;
    }
    let (from, to) = (tcp.destination_port(), tcp.source_port());
    let builder = ip(facts.destination, facts.source)?;
    let builder = if tcp.ack() {
        builder.tcp(from, to, tcp.acknowledgment_number(), 0).rst()
    } else {
        let length = tcp.payload().len() as u32 + u32::from(tcp.syn()) + u32::from(tcp.fin());
        let ack = tcp.sequence_number().wrapping_add(length);
        builder.tcp(from, to, 0, 0).rst().ack(ack)
    };
    let mut out = Vec::new();
    builder.write(&mut out, &[]).ok().map(|()| out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::tunnel::packet::inspect::inspect;

    fn facts_of(packet: &[u8]) -> PacketFacts {
        inspect(packet).unwrap()
    }

    #[test]
    fn errors_quote_the_original_and_check() {
        let src: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let dst: SocketAddr = "198.51.100.7:53".parse().unwrap();
        let original = udp(src, dst, &[9; 1400]).unwrap();
        let facts = facts_of(&original);
        let error = icmp_error(&original, &facts, IcmpError::PacketTooBig { mtu: 1280 }).unwrap();
        assert_eq!(error.len(), ICMPV4_MAX);
        let parsed = facts_of(&error);
        assert!(parsed.icmp_error);
        assert_eq!((parsed.source, parsed.destination), (dst.ip(), src.ip()));
        assert_eq!((error[20], error[21]), (3, 4), "type 3 code 4");
        assert_eq!(u16::from_be_bytes([error[26], error[27]]), 1280);
        assert_eq!(
            &error[28..48],
            &original[..20],
            "the original header is quoted"
        );
        assert_eq!(icmp_error(&error, &parsed, IcmpError::Prohibited), None);
    }

    #[test]
    fn ipv6_errors_and_echo() {
        let src: SocketAddr = "[2001:db8::1]:5000".parse().unwrap();
        let dst: SocketAddr = "[2001:db8::2]:53".parse().unwrap();
        let original = udp(src, dst, b"q").unwrap();
        let error = icmp_error(&original, &facts_of(&original), IcmpError::Prohibited).unwrap();
        assert_eq!((error[40], error[41]), (1, 1), "type 1 code 1");
        assert!(facts_of(&error).icmp_error, "the checksum is valid");
        let reply = echo_reply(dst.ip(), src.ip(), (7, 1), b"data").unwrap();
        assert_eq!(reply[40], 129);
        assert_eq!(&reply[48..], b"data");
    }

    #[test]
    fn reset_acknowledges_the_syn() {
        let mut syn = Vec::new();
        PacketBuilder::ipv4([192, 0, 2, 1], [198, 51, 100, 7], 64)
            .tcp(40000, 80, 1000, 65535)
            .syn()
            .write(&mut syn, &[])
            .unwrap();
        let facts = facts_of(&syn);
        assert!(facts.tcp_syn);
        let reset = tcp_reset(&syn, &facts).unwrap();
        let sliced = SlicedPacket::from_ip(&reset).unwrap();
        let Some(TransportSlice::Tcp(tcp)) = sliced.transport else {
            panic!("not TCP")
        };
        assert!(tcp.rst() && tcp.ack());
        assert_eq!(tcp.acknowledgment_number(), 1001);
        assert_eq!((tcp.source_port(), tcp.destination_port()), (80, 40000));
        // A segment with ACK is answered with a reset at its acknowledgment number.
        let mut segment = Vec::new();
        PacketBuilder::ipv4([192, 0, 2, 1], [198, 51, 100, 7], 64)
            .tcp(40000, 80, 5000, 65535)
            .ack(777)
            .write(&mut segment, b"data")
            .unwrap();
        let reset = tcp_reset(&segment, &facts_of(&segment)).unwrap();
        let sliced = SlicedPacket::from_ip(&reset).unwrap();
        let Some(TransportSlice::Tcp(tcp)) = sliced.transport else {
            panic!("not TCP")
        };
        assert!(tcp.rst() && !tcp.ack());
        assert_eq!(tcp.sequence_number(), 777);
        assert_eq!(
            tcp_reset(&reset, &facts_of(&reset)),
            None,
            "a reset is not answered"
        );
    }
}
