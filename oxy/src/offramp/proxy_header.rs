//! PROXY protocol v2 headers (with `ppp`) for internal services: who the client is, which
//! address it connected to, and the application's TLVs.

use crate::hooks::ProxyHeaderVersion;
use ppp::v2::{Builder, Command, Protocol, Version};
use std::net::{IpAddr, SocketAddr};

/// The PROXY header of `version` for a stream from `client` to `local` (v1 carries no
/// TLVs).
pub fn stream_header(
    version: ProxyHeaderVersion,
    client: SocketAddr,
    local: SocketAddr,
    tlvs: &[(u8, Vec<u8>)],
) -> std::io::Result<Vec<u8>> {
    match version {
        ProxyHeaderVersion::V2 => v2_header(client, local, false, tlvs),
        ProxyHeaderVersion::V1 => {
            let (client, local) = same_family(client, local);
            Ok(ppp::v1::Addresses::from((client, local))
                .to_string()
                .into_bytes())
        }
    }
}

/// Both addresses in one family: mixed ones as IPv6.
fn same_family(client: SocketAddr, local: SocketAddr) -> (SocketAddr, SocketAddr) {
    if client.is_ipv4() == local.is_ipv4() {
        (client, local)
    } else {
        (as_ipv6(client), as_ipv6(local))
    }
}

/// The PROXY v2 header for a stream (TCP) or a datagram (UDP) from `client` to `local`.
pub fn v2_header(
    client: SocketAddr,
    local: SocketAddr,
    datagram: bool,
    tlvs: &[(u8, Vec<u8>)],
) -> std::io::Result<Vec<u8>> {
    let (client, local) = same_family(client, local);
    let protocol = if datagram {
        Protocol::Datagram
    } else {
        Protocol::Stream
    };
    let mut builder =
        Builder::with_addresses(Version::Two | Command::Proxy, protocol, (client, local));
    for (kind, value) in tlvs {
        builder = builder.write_tlv(*kind, value)?;
    }
    builder.build()
}

fn as_ipv6(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), addr.port()),
        IpAddr::V6(_) => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_back_with_addresses_and_tlvs() {
        let client: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let local: SocketAddr = "198.51.100.1:443".parse().unwrap();
        let bytes = v2_header(client, local, false, &[(0xE0, b"tenant-42".to_vec())]).unwrap();
        let header = ppp::v2::Header::try_from(bytes.as_slice()).unwrap();
        assert_eq!(header.command, Command::Proxy);
        assert_eq!(header.protocol, Protocol::Stream);
        match header.addresses {
            ppp::v2::Addresses::IPv4(ip) => {
                assert_eq!(
                    (ip.source_address, ip.source_port),
                    (
                        *"192.0.2.7".parse::<std::net::Ipv4Addr>().as_ref().unwrap(),
                        40000
                    )
                );
                assert_eq!(ip.destination_port, 443);
            }
            other => panic!("unexpected addresses {other:?}"),
        }
        let tlvs: Vec<_> = header.tlvs().map(|t| t.unwrap()).collect();
        assert_eq!(tlvs.len(), 1);
        assert_eq!(tlvs[0].kind, 0xE0);
        assert_eq!(&*tlvs[0].value, b"tenant-42");
        let mixed = v2_header(client, "[2001:db8::1]:443".parse().unwrap(), true, &[]).unwrap();
        let header = ppp::v2::Header::try_from(mixed.as_slice()).unwrap();
        assert!(matches!(header.addresses, ppp::v2::Addresses::IPv6(_)));
        assert_eq!(header.protocol, Protocol::Datagram);
        let v1 = stream_header(ProxyHeaderVersion::V1, client, local, &[]).unwrap();
        assert_eq!(v1, b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\n");
    }
}
