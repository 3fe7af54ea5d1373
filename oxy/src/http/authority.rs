//! The one authority a request is for, settled before any hook sees it: one `Host`, equal
//! to the request target's authority (RFC 9112 §3.2.2, RFC 9113 §8.3.1, RFC 9114 §4.3.1),
//! ports from 1 to 65535, and IPv4 hosts in the dotted form whatever form the client wrote.

use crate::hooks::{BadNumericHost, parse_dotted_decimal, parse_numeric_ipv4};
use http::header::{self, HeaderValue};
use http::uri::Authority;
use http::{Method, Version};

/// Why a request's authority is refused (answered 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    /// More than one `Host` header.
    #[error("the request has more than one Host header")]
    DuplicateHost,
    /// An HTTP/2 or HTTP/3 `Host` header that names another authority than `:authority`.
    #[error("the Host header does not match the request's :authority")]
    HostMismatch,
    /// A `Host` header that is no authority.
    #[error("the Host header is not a valid authority")]
    BadHost,
    /// A port outside 1-65535.
    #[error("the port is not from 1 to 65535")]
    BadPort,
    /// A host that ends in a number but is no IPv4 address.
    #[error("the host is a number but not an IPv4 address")]
    BadNumericHost,
}

impl AuthorityError {
    /// The reason as a metric label.
    pub fn as_label(self) -> &'static str {
        match self {
            AuthorityError::DuplicateHost => "duplicate_host",
            AuthorityError::HostMismatch => "host_mismatch",
            AuthorityError::BadHost => "bad_host",
            AuthorityError::BadPort => "bad_port",
            AuthorityError::BadNumericHost => "bad_numeric_host",
        }
    }
}

impl From<BadNumericHost> for AuthorityError {
    fn from(_: BadNumericHost) -> Self {
        AuthorityError::BadNumericHost
    }
}

/// Settles `parts`' authority: refuses duplicate `Host` headers, bad ports and bad
/// numeric hosts; rewrites a numeric IPv4 host in its dotted form; makes `Host` the
/// request target's authority for absolute-form HTTP/1.1 requests (replacing what the
/// client sent) and for HTTP/2 and HTTP/3 requests (refusing a `Host` that disagrees).
pub fn settle(parts: &mut http::request::Parts) -> Result<(), AuthorityError> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let host = hosts.next().cloned();
    if hosts.next().is_some() {
        return Err(AuthorityError::DuplicateHost);
    }
    let Some(authority) = parts.uri.authority().cloned() else {
        // Origin-form: the Host header is the authority.
        if let Some(host) = host {
            let given =
                Authority::try_from(host.as_bytes()).map_err(|_| AuthorityError::BadHost)?;
            if let Some(canonical) = canonical(&given)? {
                parts
                    .headers
                    .insert(header::HOST, header_value(&canonical)?);
            }
        }
        return Ok(());
    };
    let authority = match canonical(&authority)? {
        Some(canonical) => {
            let mut uri = std::mem::take(&mut parts.uri).into_parts();
            uri.authority = Some(canonical.clone());
            parts.uri = http::Uri::from_parts(uri).map_err(|_| AuthorityError::BadHost)?;
            canonical
        }
        None => authority,
    };
    match parts.version {
        Version::HTTP_2 | Version::HTTP_3 => {
            if let Some(host) = &host
                && !host
                    .as_bytes()
                    .eq_ignore_ascii_case(authority.as_str().as_bytes())
                && !same_after_canonical(host, &authority)
            {
                return Err(AuthorityError::HostMismatch);
            }
        }
        // Authority-form CONNECT names its tunnel's target; Host plays no part.
        _ if parts.method == Method::CONNECT => return Ok(()),
        _ => {}
    }
    parts
        .headers
        .insert(header::HOST, header_value(&authority)?);
    Ok(())
}

/// `authority` rewritten where it needs to be (`None` when it is fine as it is); an
/// error for a port outside 1-65535 or a bad numeric host.
fn canonical(authority: &Authority) -> Result<Option<Authority>, AuthorityError> {
    let (host, port) = host_and_port(authority.as_str());
    if let Some(port) = port
        && !port.is_empty()
        && !port.parse::<u16>().is_ok_and(|p| p != 0)
    {
        return Err(AuthorityError::BadPort);
    }
    if host.starts_with('[') || parse_dotted_decimal(host).is_some() {
        return Ok(None);
    }
    // A name: its last label is no number.
    let Some(ip) = parse_numeric_ipv4(host).transpose()? else {
        return Ok(None);
    };
    let rewritten = match port.filter(|p| !p.is_empty()) {
        Some(port) => format!("{ip}:{port}"),
        None => ip.to_string(),
    };
    Authority::try_from(rewritten)
        .map(Some)
        .map_err(|_| AuthorityError::BadHost)
}

/// The host (an IPv6 literal with its brackets) and the port text of `authority` as
/// written (`Some("")` for `host:`), whether or not the port is valid (the `http` crate
/// forgets ports it cannot read as a `u16`); userinfo is skipped. One pass from the end,
/// for every request.
pub(crate) fn host_and_port(authority: &str) -> (&str, Option<&str>) {
    let mut start = 0;
    let mut port_colon = None;
    let mut in_literal = false;
    for (i, byte) in authority.bytes().enumerate().rev() {
        match byte {
            b'@' => {
                start = i + 1;
                break;
            }
            // Colons before the end of an IPv6 literal are the literal's.
            b']' => in_literal = true,
            b':' if !in_literal && port_colon.is_none() => port_colon = Some(i),
            _ => {}
        }
    }
    match port_colon {
        Some(colon) => (&authority[start..colon], Some(&authority[colon + 1..])),
        None => (&authority[start..], None),
    }
}

/// The host (an IPv6 literal with its brackets) and port of `authority`, the port
/// `default_port` when none is written; `None` for a port that is no `u16`.
pub(crate) fn host_and_port_number(authority: &str, default_port: u16) -> Option<(&str, u16)> {
    let (host, port) = host_and_port(authority);
    let port = match port.filter(|port| !port.is_empty()) {
        Some(port) => port.parse().ok()?,
        None => default_port,
    };
    Some((host, port))
}

/// Whether a `Host` value names `authority` once its own numeric host is in dotted form.
fn same_after_canonical(host: &HeaderValue, authority: &Authority) -> bool {
    Authority::try_from(host.as_bytes())
        .ok()
        .and_then(|given| canonical(&given).ok().map(|c| c.unwrap_or(given)))
        .is_some_and(|given| given.as_str().eq_ignore_ascii_case(authority.as_str()))
}

fn header_value(authority: &Authority) -> Result<HeaderValue, AuthorityError> {
    HeaderValue::from_str(authority.as_str()).map_err(|_| AuthorityError::BadHost)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(version: Version, method: Method, uri: &str, hosts: &[&str]) -> http::request::Parts {
        let mut request = http::Request::builder()
            .version(version)
            .method(method)
            .uri(uri);
        for host in hosts {
            request = request.header(header::HOST, *host);
        }
        request.body(()).unwrap().into_parts().0
    }

    fn host(parts: &http::request::Parts) -> Vec<&str> {
        parts
            .headers
            .get_all(header::HOST)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn absolute_form_host_is_the_target() {
        let mut p = parts(
            Version::HTTP_11,
            Method::GET,
            "http://127.0.0.1:8080/x",
            &["evil.example"],
        );
        settle(&mut p).unwrap();
        assert_eq!(host(&p), ["127.0.0.1:8080"]);
    }

    #[test]
    fn h2_host_must_match_authority() {
        let mut p = parts(
            Version::HTTP_2,
            Method::GET,
            "http://a.example/",
            &["evil.example"],
        );
        assert_eq!(settle(&mut p), Err(AuthorityError::HostMismatch));
        let mut p = parts(
            Version::HTTP_2,
            Method::GET,
            "http://a.example/",
            &["A.Example"],
        );
        settle(&mut p).unwrap();
        let mut p = parts(Version::HTTP_3, Method::GET, "https://a.example/", &[]);
        settle(&mut p).unwrap();
        assert_eq!(host(&p), ["a.example"]);
    }

    #[test]
    fn duplicate_host_is_refused() {
        for version in [Version::HTTP_11, Version::HTTP_2] {
            let mut p = parts(version, Method::GET, "/", &["a.example", "b.example"]);
            assert_eq!(settle(&mut p), Err(AuthorityError::DuplicateHost));
        }
    }

    #[test]
    fn ports_outside_the_range_are_refused() {
        for uri in [
            "http://127.0.0.1:84617/",
            "http://a.example:0/",
            "http://a.example:65536/",
        ] {
            let mut p = parts(Version::HTTP_11, Method::GET, uri, &[]);
            assert_eq!(settle(&mut p), Err(AuthorityError::BadPort), "{uri}");
        }
        let mut p = parts(Version::HTTP_11, Method::GET, "/", &["a.example:99999"]);
        assert_eq!(settle(&mut p), Err(AuthorityError::BadPort));
        let mut p = parts(Version::HTTP_11, Method::GET, "http://a.example:/", &[]);
        settle(&mut p).unwrap();
    }

    #[test]
    fn numeric_hosts_become_dotted() {
        let mut p = parts(Version::HTTP_11, Method::GET, "http://0x7f.1:81/x", &[]);
        settle(&mut p).unwrap();
        assert_eq!(p.uri, "http://127.0.0.1:81/x");
        assert_eq!(host(&p), ["127.0.0.1:81"]);
        let mut p = parts(Version::HTTP_11, Method::CONNECT, "2130706433:443", &[]);
        settle(&mut p).unwrap();
        assert_eq!(p.uri.authority().unwrap(), "127.0.0.1:443");
        let mut p = parts(
            Version::HTTP_2,
            Method::GET,
            "http://127.1/",
            &["2130706433"],
        );
        settle(&mut p).unwrap();
        let mut p = parts(Version::HTTP_11, Method::GET, "http://1.2.3.4.5/", &[]);
        assert_eq!(settle(&mut p), Err(AuthorityError::BadNumericHost));
        // Leading zeros are octal, and a trailing dot goes: both are rewritten.
        for (given, dotted) in [("010.0.0.1", "8.0.0.1"), ("127.0.0.1.", "127.0.0.1")] {
            let mut p = parts(Version::HTTP_11, Method::GET, "/", &[given]);
            settle(&mut p).unwrap();
            assert_eq!(host(&p), [dotted], "{given}");
        }
    }

    #[test]
    fn host_and_port_as_written() {
        for (authority, host, port) in [
            ("a.example", "a.example", None),
            ("a.example:8080", "a.example", Some("8080")),
            ("a.example:", "a.example", Some("")),
            ("user:pw@a.example:99999", "a.example", Some("99999")),
            ("[2001:db8::1]", "[2001:db8::1]", None),
            ("[2001:db8::1]:443", "[2001:db8::1]", Some("443")),
            ("u@[::1]:x", "[::1]", Some("x")),
        ] {
            assert_eq!(host_and_port(authority), (host, port), "{authority}");
        }
    }
}
