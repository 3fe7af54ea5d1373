//! MASQUE URI templates (RFC 6570 level 1): CONNECT-UDP's `{target_host}` and
//! `{target_port}` (RFC 9298 §2), CONNECT-IP's `{target}` and `{ipproto}` (RFC 9484 §3),
//! and the values a request path gives them.

use crate::hooks::Target;
use std::net::Ipv6Addr;

/// The variables of a CONNECT-UDP template.
pub const CONNECT_UDP_VARIABLES: &[&str] = &["target_host", "target_port"];
/// The variables of a CONNECT-IP template.
pub const CONNECT_IP_VARIABLES: &[&str] = &["target", "ipproto"];

/// A parsed URI template such as `/.well-known/masque/udp/{target_host}/{target_port}/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UriTemplate {
    parts: Vec<Part>,
    names: &'static [&'static str],
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// The variable `names[i]`.
    Variable(usize),
}

/// Why a request path does not fit a template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateMismatch {
    /// The path does not have the template's shape.
    #[error("the path does not match the URI template")]
    Shape,
    /// `target_host` (or `target`) is empty or not a host name or IP address.
    #[error("bad target_host {0:?}")]
    Host(String),
    /// `target_port` is not a port number from 1 to 65535.
    #[error("bad target_port {0:?}")]
    Port(String),
}

impl std::str::FromStr for UriTemplate {
    type Err = String;

    /// Parses a CONNECT-UDP template (see [`UriTemplate::parse`]).
    fn from_str(template: &str) -> Result<Self, String> {
        Self::parse(template, CONNECT_UDP_VARIABLES)
    }
}

impl UriTemplate {
    /// Parses a template: literal text and the simple expressions `{name}` for each of
    /// `names`, each exactly once, not next to each other; it starts with `/`.
    pub fn parse(template: &str, names: &'static [&'static str]) -> Result<Self, String> {
        let all = || {
            let braced: Vec<String> = names.iter().map(|n| format!("{{{n}}}")).collect();
            braced.join(" and ")
        };
        if !template.starts_with('/') {
            return Err("a URI template starts with '/'".into());
        }
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            if rest[..open].contains('}') {
                return Err("a '}' has no opening '{'".into());
            }
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or("an expression '{' has no closing '}'")?;
            let name = &rest[open + 1..open + close];
            let Some(index) = names.iter().position(|n| *n == name) else {
                return Err(format!("unknown expression {{{name}}}: use {}", all()));
            };
            let part = Part::Variable(index);
            if parts.contains(&part) {
                return Err(format!("each of {} appears once", all()));
            }
            if parts
                .last()
                .is_some_and(|last| !matches!(last, Part::Literal(_)))
            {
                return Err(format!("{} need literal text between them", all()));
            }
            parts.push(part);
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err("a '}' has no opening '{'".into());
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        if (0..names.len()).any(|i| !parts.contains(&Part::Variable(i))) {
            return Err(format!("the template needs {}", all()));
        }
        Ok(Self { parts, names })
    }

    /// The raw (still percent-encoded) value of each variable in `path_and_query`, in
    /// the order of the template's `names`.
    pub fn values<'a>(&self, path_and_query: &'a str) -> Result<Vec<&'a str>, TemplateMismatch> {
        let mut rest = path_and_query;
        let mut values = vec![None; self.names.len()];
        for (i, part) in self.parts.iter().enumerate() {
            match part {
                Part::Literal(literal) => {
                    rest = rest
                        .strip_prefix(literal.as_str())
                        .ok_or(TemplateMismatch::Shape)?;
                }
                Part::Variable(index) => {
                    let end = match self.parts.get(i + 1) {
                        Some(Part::Literal(next)) => {
                            rest.find(next.as_str()).ok_or(TemplateMismatch::Shape)?
                        }
                        _ => rest.len(),
                    };
                    values[*index] = Some(&rest[..end]);
                    rest = &rest[end..];
                }
            }
        }
        if !rest.is_empty() {
            return Err(TemplateMismatch::Shape);
        }
        values
            .into_iter()
            .map(|v| v.ok_or(TemplateMismatch::Shape))
            .collect()
    }

    /// The UDP target named by `path_and_query`, e.g. `/.well-known/masque/udp/192.0.2.6/443/`.
    /// Values are percent-decoded; an IPv6 host is escaped (`2001%3Adb8%3A%3A1`) or
    /// bracketed.
    pub fn target(&self, path_and_query: &str) -> Result<Target, TemplateMismatch> {
        let values = self.values(path_and_query)?;
        let [host, port] = values[..] else {
            return Err(TemplateMismatch::Shape);
        };
        let port_text = percent_decode(port).ok_or_else(|| TemplateMismatch::Port(port.into()))?;
        let port: u16 = match port_text.parse() {
            Ok(port) if port > 0 => port,
            _ => return Err(TemplateMismatch::Port(port_text)),
        };
        let host_text = percent_decode(host).ok_or_else(|| TemplateMismatch::Host(host.into()))?;
        let bracketed = host_text
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'));
        let authority = match (
            bracketed.unwrap_or(&host_text).parse::<Ipv6Addr>(),
            bracketed,
        ) {
            (Ok(v6), _) => format!("[{v6}]:{port}"),
            (Err(_), None) => format!("{host_text}:{port}"),
            (Err(_), Some(_)) => return Err(TemplateMismatch::Host(host_text)),
        };
        authority
            .parse()
            .map_err(|_| TemplateMismatch::Host(host_text.clone()))
    }
}

/// Decodes `%XX` escapes; `None` for a bad escape or bytes that are not UTF-8.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const DEFAULT: &str = "/.well-known/masque/udp/{target_host}/{target_port}/";

    #[test]
    fn targets_from_paths() {
        let template: UriTemplate = DEFAULT.parse().unwrap();
        for (path, target) in [
            ("/.well-known/masque/udp/192.0.2.6/443/", "192.0.2.6:443"),
            ("/.well-known/masque/udp/Example.com/53/", "example.com:53"),
            (
                "/.well-known/masque/udp/2001%3Adb8%3A%3A42/53/",
                "[2001:db8::42]:53",
            ),
            ("/.well-known/masque/udp/%3A%3A1/9/", "[::1]:9"),
            ("/.well-known/masque/udp/[::1]/9/", "[::1]:9"),
        ] {
            assert_eq!(template.target(path).unwrap().to_string(), target, "{path}");
        }
        let query: UriTemplate = "/masque?h={target_host}&p={target_port}".parse().unwrap();
        assert_eq!(
            query.target("/masque?h=localhost&p=8").unwrap().to_string(),
            "localhost:8"
        );
    }

    #[test]
    fn bad_values_are_named() {
        let template: UriTemplate = DEFAULT.parse().unwrap();
        let bad = |path: &str| template.target(path).unwrap_err();
        assert_eq!(bad("/other/x/1/"), TemplateMismatch::Shape);
        assert_eq!(
            bad("/.well-known/masque/udp/x/1/extra"),
            TemplateMismatch::Shape
        );
        assert_eq!(
            bad("/.well-known/masque/udp/x/0/"),
            TemplateMismatch::Port("0".into())
        );
        assert_eq!(
            bad("/.well-known/masque/udp/x/99999/"),
            TemplateMismatch::Port("99999".into())
        );
        assert_eq!(
            bad("/.well-known/masque/udp/x/%zz/"),
            TemplateMismatch::Port("%zz".into())
        );
        assert_eq!(
            bad("/.well-known/masque/udp//53/"),
            TemplateMismatch::Host(String::new())
        );
        assert_eq!(
            bad("/.well-known/masque/udp/a%20b/53/"),
            TemplateMismatch::Host("a b".into())
        );
        assert_eq!(
            bad("/.well-known/masque/udp/[zz]/53/"),
            TemplateMismatch::Host("[zz]".into())
        );
    }

    #[test]
    fn bad_templates_are_refused() {
        for bad in [
            "no-slash/{target_host}/{target_port}",
            "/{target_host}/{target_port",
            "/{target_host}{target_port}",
            "/{target_host}/{target_host}/",
            "/{target_host}/",
            "/{target}/{target_port}/",
            "/x}/{target_host}/{target_port}",
        ] {
            assert!(bad.parse::<UriTemplate>().is_err(), "{bad}");
        }
    }
}
