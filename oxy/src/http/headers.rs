//! Proxy header semantics: hop-by-hop removal, `Via`, `X-Forwarded-For`.

use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};
use std::net::IpAddr;

/// Headers that describe one connection and never cross a proxy (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including those `Connection` names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// The protocol an HTTP/1.1 request asks to upgrade to (`Upgrade` named by `Connection`).
pub fn requested_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    let connection_names_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    connection_names_upgrade
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// Sets `Upgrade: protocol` and `Connection: upgrade` for the next hop.
pub fn set_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::UPGRADE, protocol);
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
}

/// Appends this hop to `Via` (`1.1 oxy`, `2 oxy`).
pub fn add_via(headers: &mut HeaderMap, version: http::Version) {
    let protocol = match version {
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    };
    let hop = format!("{protocol} oxy");
    let value = match headers.get(header::VIA).and_then(|v| v.to_str().ok()) {
        Some(previous) => format!("{previous}, {hop}"),
        None => hop,
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(header::VIA, value);
    }
}

/// Appends the client's address to `X-Forwarded-For`.
pub fn add_x_forwarded_for(headers: &mut HeaderMap, client: IpAddr) {
    let name = HeaderName::from_static("x-forwarded-for");
    let value = match headers.get(&name).and_then(|v| v.to_str().ok()) {
        Some(previous) => format!("{previous}, {client}"),
        None => client.to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(name, value);
    }
}

/// Appends this hop to `Forwarded` (RFC 7239): `for=` the client, `proto=` its scheme.
pub fn add_forwarded(headers: &mut HeaderMap, client: IpAddr, tls: bool) {
    let node = match client {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("\"[{ip}]\""),
    };
    let proto = if tls { "https" } else { "http" };
    let element = format!("for={node};proto={proto}");
    let value = match headers.get(header::FORWARDED).and_then(|v| v.to_str().ok()) {
        Some(previous) => format!("{previous}, {element}"),
        None => element,
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(header::FORWARDED, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("Basic x"),
        );
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::ACCEPT));
    }

    #[test]
    fn via_and_x_forwarded_for_append() {
        let mut h = HeaderMap::new();
        add_via(&mut h, http::Version::HTTP_11);
        add_via(&mut h, http::Version::HTTP_2);
        assert_eq!(h[header::VIA], "1.1 oxy, 2 oxy");
        add_x_forwarded_for(&mut h, "192.0.2.1".parse().unwrap());
        add_x_forwarded_for(&mut h, "2001:db8::1".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "192.0.2.1, 2001:db8::1");
        add_forwarded(&mut h, "192.0.2.1".parse().unwrap(), false);
        add_forwarded(&mut h, "2001:db8::1".parse().unwrap(), true);
        assert_eq!(
            h[header::FORWARDED],
            "for=192.0.2.1;proto=http, for=\"[2001:db8::1]\";proto=https"
        );
    }
}
