//! Proxy header semantics: hop-by-hop removal, `Via`, `X-Forwarded-For`, the declared
//! body length.

use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};
use std::net::IpAddr;

/// Whether `name` describes one connection and never crosses a proxy (RFC 9110 §7.6.1,
/// and the non-standard `Keep-Alive` and `Proxy-Connection`).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    // By text: most names differ in length from all of these, so a field is usually
    // told apart by its length alone.
    matches!(
        name.as_str(),
        "connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "transfer-encoding"
            | "upgrade"
            | "keep-alive"
            | "proxy-connection"
    )
}

/// Removes hop-by-hop headers, including those `Connection` names. Allocates only when
/// `Connection` names a header beyond the usual options (`keep-alive`, `close`).
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One pass finds the usual case: no hop-by-hop field, or fields of one name
    // (`Connection: keep-alive`, say) that name no others.
    let mut found: Option<&HeaderName> = None;
    let mut usual = true;
    for (name, value) in headers.iter() {
        if !is_hop_by_hop(name) {
            continue;
        }
        let names_others = name == header::CONNECTION && !only_connection_options(value);
        if names_others || found.is_some_and(|first| first != name) {
            usual = false;
            break;
        }
        found = Some(name);
    }
    if usual {
        if let Some(name) = found.cloned() {
            headers.remove(name);
        }
        return;
    }
    let names_headers = headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|value| !only_connection_options(value));
    if names_headers {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    // A pass over the (few) names per header removed, instead of a look-up per
    // hop-by-hop name, which mostly miss.
    while let Some(name) = headers.keys().find(|name| is_hop_by_hop(name)).cloned() {
        headers.remove(name);
    }
}

/// Whether a `Connection` value names no header of the message (or only one removed
/// anyway): `keep-alive`, `close`, `upgrade`, `te`.
fn only_connection_options(value: &HeaderValue) -> bool {
    let value = value.as_bytes();
    // The usual values, without splitting.
    if value.eq_ignore_ascii_case(b"keep-alive") || value.eq_ignore_ascii_case(b"close") {
        return true;
    }
    value.split(|b| *b == b',').all(|token| {
        let token = token.trim_ascii();
        ["keep-alive", "close", "upgrade", "te", ""]
            .iter()
            .any(|option| token.eq_ignore_ascii_case(option.as_bytes()))
    })
}

/// The body length a message's `Content-Length` declares (how its receiver frames the
/// body), if it declares a valid one.
pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH).and_then(length_value)
}

/// A `Content-Length` value as a length, if it is one.
pub(crate) fn length_value(value: &HeaderValue) -> Option<u64> {
    value.to_str().ok()?.parse::<u64>().ok()
}

/// The protocol an HTTP/1.1 request asks to upgrade to (`Upgrade` named by `Connection`).
pub fn requested_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    // Most requests have no `Upgrade`: one look-up, no scan of `Connection`.
    let protocol = headers.get(header::UPGRADE)?;
    let connection_names_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| has_token(v.as_bytes(), b"upgrade"));
    connection_names_upgrade.then(|| protocol.clone())
}

/// Whether the comma-separated `list` (a `Connection` value, say) has `token` (any
/// case).
pub(crate) fn has_token(list: &[u8], token: &[u8]) -> bool {
    list.split(|&b| b == b',')
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token))
}

/// Whether the last item of the comma-separated `list` (a `Transfer-Encoding` value,
/// say) is `token` (any case).
pub(crate) fn ends_with_token(list: &[u8], token: &[u8]) -> bool {
    list.rsplit(|&b| b == b',')
        .next()
        .is_some_and(|item| item.trim_ascii().eq_ignore_ascii_case(token))
}

/// Sets `Upgrade: protocol` and `Connection: upgrade` for the next hop.
pub fn set_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::UPGRADE, protocol);
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
}

/// Appends this hop to `Via` (`1.1 oxy`, `2 oxy`); a static value when there is no
/// `Via` yet.
pub fn add_via(headers: &mut HeaderMap, version: http::Version) {
    let hop = match version {
        http::Version::HTTP_10 => "1.0 oxy",
        http::Version::HTTP_2 => "2 oxy",
        http::Version::HTTP_3 => "3 oxy",
        _ => "1.1 oxy",
    };
    match headers.entry(header::VIA) {
        header::Entry::Vacant(vacant) => {
            vacant.insert(HeaderValue::from_static(hop));
        }
        header::Entry::Occupied(mut via) => {
            // Several `Via` lines become one.
            let previous: Vec<&str> = via.iter().filter_map(|v| v.to_str().ok()).collect();
            let value = format!("{}, {hop}", previous.join(", "));
            if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(value)) {
                via.insert(value);
            }
        }
    }
}

/// Sets `name` to `value`, taking the string's buffer (one allocation, not two); a
/// value that is no valid header value (it came from a valid one and an address, so
/// never) leaves the header as it was.
fn set_formatted(headers: &mut HeaderMap, name: HeaderName, value: String) {
    if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(value)) {
        headers.insert(name, value);
    }
}

/// Appends the client's address to `X-Forwarded-For`.
pub fn add_x_forwarded_for(headers: &mut HeaderMap, client: IpAddr) {
    let name = HeaderName::from_static("x-forwarded-for");
    let value = match headers.get(&name).and_then(|v| v.to_str().ok()) {
        Some(previous) => format!("{previous}, {client}"),
        None => client.to_string(),
    };
    set_formatted(headers, name, value);
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
    set_formatted(headers, header::FORWARDED, value);
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
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::ACCEPT));

        // Options only, and names spread over several `Connection` lines.
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("close"));
        h.append(
            header::CONNECTION,
            HeaderValue::from_static("Keep-Alive,X-One"),
        );
        h.append(header::CONNECTION, HeaderValue::from_static(" x-two ,"));
        for name in ["x-one", "x-two", "x-three"] {
            h.insert(name, HeaderValue::from_static("1"));
        }
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-three"));

        // The usual cases: one name (on several lines), or none.
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.append(header::CONNECTION, HeaderValue::from_static("close"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::ACCEPT));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn via_and_x_forwarded_for_append() {
        let mut h = HeaderMap::new();
        add_via(&mut h, http::Version::HTTP_11);
        add_via(&mut h, http::Version::HTTP_2);
        assert_eq!(h[header::VIA], "1.1 oxy, 2 oxy");
        h.append(header::VIA, HeaderValue::from_static("1.1 other"));
        add_via(&mut h, http::Version::HTTP_3);
        let via: Vec<_> = h.get_all(header::VIA).iter().collect();
        assert_eq!(via, ["1.1 oxy, 2 oxy, 1.1 other, 3 oxy"]);
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
