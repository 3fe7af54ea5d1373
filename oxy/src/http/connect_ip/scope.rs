//! The scope of a CONNECT-IP request (RFC 9484 §3, §4.8): the `{target}` and `{ipproto}`
//! a request path names, and whether a packet falls inside them.

use crate::http::uri_template::{TemplateMismatch, UriTemplate, percent_decode};
use ipnet::IpNet;
use std::net::IpAddr;

/// What `{target}` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeTarget {
    /// `*`: any destination.
    Any,
    /// An address or prefix (`192.0.2.1`, `2001:db8::%2F32`).
    Prefix(IpNet),
    /// A host name, to be resolved to the addresses the scope allows.
    Name(String),
}

/// Why a request path does not name a scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// The path does not fit the template.
    #[error(transparent)]
    Template(#[from] TemplateMismatch),
    /// `{target}` is not `*`, an address, a prefix or a host name.
    #[error("bad target {0:?}")]
    Target(String),
    /// `{ipproto}` is not `*` or a protocol number from 1 to 255 (0 would mean "every
    /// protocol" in the routes Oxy advertises: `*` says that).
    #[error("bad ipproto {0:?}: use * or a protocol number from 1 to 255")]
    Protocol(String),
}

/// The destinations and IP protocol one CONNECT-IP stream may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// `None` for any destination, else the allowed prefixes.
    pub destinations: Option<Vec<IpNet>>,
    /// `None` for any protocol.
    pub protocol: Option<u8>,
}

/// The requested target and protocol of `path_and_query`.
pub fn requested(
    template: &UriTemplate,
    path_and_query: &str,
) -> Result<(ScopeTarget, Option<u8>), ScopeError> {
    let values = template.values(path_and_query)?;
    let [target, ipproto] = values[..] else {
        return Err(TemplateMismatch::Shape.into());
    };
    let target_text = percent_decode(target).ok_or_else(|| ScopeError::Target(target.into()))?;
    let target = if target_text == "*" {
        ScopeTarget::Any
    } else if let Ok(prefix) = target_text.parse::<IpNet>() {
        if prefix.trunc() != prefix {
            return Err(ScopeError::Target(target_text));
        }
        ScopeTarget::Prefix(prefix)
    } else if let Ok(ip) = target_text.parse::<IpAddr>() {
        ScopeTarget::Prefix(IpNet::from(ip))
    } else if is_host_name(&target_text) {
        ScopeTarget::Name(target_text.to_ascii_lowercase())
    } else {
        return Err(ScopeError::Target(target_text));
    };
    let ipproto_text =
        percent_decode(ipproto).ok_or_else(|| ScopeError::Protocol(ipproto.into()))?;
    let protocol = match ipproto_text.as_str() {
        "*" => None,
        number => Some(
            number
                .parse::<u8>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| ScopeError::Protocol(ipproto_text.clone()))?,
        ),
    };
    Ok((target, protocol))
}

/// A DNS name: dot-separated labels of letters, digits and `-`.
fn is_host_name(text: &str) -> bool {
    let name = text.strip_suffix('.').unwrap_or(text);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Whether `protocol` is ICMP or ICMPv6, which a protocol scope always lets through
/// (RFC 9484 §4.8: ICMP errors about the flow must reach the client).
pub fn is_icmp(protocol: u8) -> bool {
    use crate::tunnel::packet::inspect::protocol::{ICMP, ICMPV6};
    protocol == ICMP || protocol == ICMPV6
}

impl Scope {
    /// Whether a packet to `destination` with `protocol` is inside the scope.
    pub fn allows(&self, destination: IpAddr, protocol: u8) -> bool {
        let protocol_ok = self
            .protocol
            .is_none_or(|p| p == protocol || is_icmp(protocol));
        let destination_ok = self
            .destinations
            .as_ref()
            .is_none_or(|nets| nets.iter().any(|net| net.contains(&destination)));
        protocol_ok && destination_ok
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::http::uri_template::CONNECT_IP_VARIABLES;

    fn template() -> UriTemplate {
        UriTemplate::parse(
            "/.well-known/masque/ip/{target}/{ipproto}/",
            CONNECT_IP_VARIABLES,
        )
        .unwrap()
    }

    #[test]
    fn requested_scopes() {
        let t = template();
        let ok = |path: &str| requested(&t, path).unwrap();
        assert_eq!(ok("/.well-known/masque/ip/*/*/"), (ScopeTarget::Any, None));
        assert_eq!(
            ok("/.well-known/masque/ip/192.0.2.0%2F24/17/"),
            (
                ScopeTarget::Prefix("192.0.2.0/24".parse().unwrap()),
                Some(17)
            )
        );
        assert_eq!(
            ok("/.well-known/masque/ip/2001%3Adb8%3A%3A1/*/"),
            (
                ScopeTarget::Prefix("2001:db8::1/128".parse().unwrap()),
                None
            )
        );
        assert_eq!(
            ok("/.well-known/masque/ip/Example.COM/6/"),
            (ScopeTarget::Name("example.com".into()), Some(6))
        );
        let bad = |path: &str| requested(&t, path).unwrap_err();
        assert_eq!(
            bad("/.well-known/masque/ip/192.0.2.1%2F24/*/"),
            ScopeError::Target("192.0.2.1/24".into())
        );
        for protocol in ["256", "0", "x"] {
            let path = format!("/.well-known/masque/ip/*/{protocol}/");
            assert_eq!(bad(&path), ScopeError::Protocol(protocol.into()));
        }
        assert_eq!(
            bad("/.well-known/masque/ip/a_b/*/"),
            ScopeError::Target("a_b".into())
        );
        assert!(matches!(
            bad("/.well-known/masque/udp/x/1/"),
            ScopeError::Template(_)
        ));
    }

    #[test]
    fn scope_checks_destination_and_protocol() {
        let scope = Scope {
            destinations: Some(vec!["192.0.2.0/24".parse().unwrap()]),
            protocol: Some(17),
        };
        assert!(scope.allows("192.0.2.9".parse().unwrap(), 17));
        assert!(scope.allows("192.0.2.9".parse().unwrap(), 1), "ICMP passes");
        assert!(!scope.allows("192.0.2.9".parse().unwrap(), 6));
        assert!(!scope.allows("198.51.100.1".parse().unwrap(), 17));
        let any = Scope {
            destinations: None,
            protocol: None,
        };
        assert!(any.allows("2001:db8::1".parse().unwrap(), 6));
    }
}
