//! The one authority a request is for, settled before any hook sees it: one `Host`, equal
//! to the request target's authority (RFC 9112 §3.2.2, RFC 9113 §8.3.1, RFC 9114 §4.3.1),
//! ports from 1 to 65535, and IPv4 hosts in the dotted form whatever form the client wrote.

use crate::hooks::{BadNumericHost, parse_numeric_ipv4};
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
    let port = port_text(authority);
    if let Some(port) = port
        && !port.is_empty()
        && !port.parse::<u16>().is_ok_and(|p| p != 0)
    {
        return Err(AuthorityError::BadPort);
    }
    let host = authority.host();
    if host.starts_with('[') || host.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok(None);
    }
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

/// The port text of `authority` as written (`Some("")` for `host:`), whether or not it
/// is a valid port; the `http` crate forgets ports it cannot read as a `u16`.
fn port_text(authority: &Authority) -> Option<&str> {
    let text = authority.as_str();
    let after_userinfo = text.rsplit_once('@').map_or(text, |(_, rest)| rest);
    let after_host = match after_userinfo.rfind(']') {
        Some(end) => &after_userinfo[end + 1..],
        None => after_userinfo,
    };
    after_host.rfind(':').map(|colon| &after_host[colon + 1..])
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
    }
}
