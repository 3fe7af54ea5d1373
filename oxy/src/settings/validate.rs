//! Semantic checks on loaded settings, all problems at once, before anything binds.

use super::errors::PathSegment;
use super::{ClientAuth, EndpointProtocol, ProxyProtocolMode, ServerSettings, Settings};
use crate::hooks::Target;
use crate::settings::DnsProtocol;
use std::collections::HashMap;
use std::net::SocketAddr;

type Problems = Vec<(Vec<PathSegment>, String)>;

fn key(k: &str) -> PathSegment {
    PathSegment::Key(k.into())
}

/// Every problem in `settings`, each with the YAML path it is about.
pub(crate) fn validate<A: Settings, E: Settings>(settings: &ServerSettings<A, E>) -> Problems {
    let mut problems = Problems::new();
    let telemetry = &settings.telemetry;
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&telemetry.log.level) {
        problems.push((
            vec![key("telemetry"), key("log"), key("level")],
            format!("not a log level or filter: {e}"),
        ));
    }
    if !telemetry.sentry.dsn.is_empty()
        && let Err(e) = telemetry.sentry.dsn.parse::<sentry::types::Dsn>()
    {
        problems.push((
            vec![key("telemetry"), key("sentry"), key("dsn")],
            format!("not a Sentry DSN: {e}"),
        ));
    }
    if !(0.0..=1.0).contains(&telemetry.sentry.sample_rate) {
        problems.push((
            vec![key("telemetry"), key("sentry"), key("sample_rate")],
            "must be between 0.0 and 1.0".into(),
        ));
    }

    for (path, field) in [
        (
            &telemetry.audit.path,
            vec![key("telemetry"), key("audit"), key("path")],
        ),
        (
            &telemetry.address_file,
            vec![key("telemetry"), key("address_file")],
        ),
        (
            &settings.server.pid_file,
            vec![key("server"), key("pid_file")],
        ),
        (
            &settings.server.control_socket,
            vec![key("server"), key("control_socket")],
        ),
    ] {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        if dir.is_some_and(|d| !d.is_dir()) {
            problems.push((
                field,
                format!("the directory of {} does not exist", path.display()),
            ));
        }
    }
    if !(0.0..=1.0).contains(&telemetry.tracing.sample_ratio) {
        problems.push((
            vec![key("telemetry"), key("tracing"), key("sample_ratio")],
            "must be between 0.0 and 1.0".into(),
        ));
    }
    let otlp = &telemetry.tracing.otlp_endpoint;
    let http_url = |uri: &http::Uri| {
        matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some()
    };
    if !otlp.is_empty() && !otlp.parse::<http::Uri>().is_ok_and(|uri| http_url(&uri)) {
        problems.push((
            vec![key("telemetry"), key("tracing"), key("otlp_endpoint")],
            format!("{otlp:?} is not an http:// or https:// URL"),
        ));
    }
    for (i, name) in settings.security.allow_syscalls.iter().enumerate() {
        if <syscalls::Sysno as std::str::FromStr>::from_str(name).is_err() {
            problems.push((
                vec![
                    key("security"),
                    key("allow_syscalls"),
                    PathSegment::Index(i),
                ],
                format!("no system call named {name:?} on this architecture"),
            ));
        }
    }
    for (name, field) in [
        (&settings.security.user, "user"),
        (&settings.security.group, "group"),
    ] {
        if let Err(e) = crate::security::privileges::lookup(name, field == "user") {
            problems.push((vec![key("security"), key(field)], e));
        }
    }
    for (g, group) in settings.dns.groups.iter().enumerate() {
        let at = |rest: &[PathSegment]| {
            let mut p = vec![key("dns"), key("groups"), PathSegment::Index(g)];
            p.extend_from_slice(rest);
            p
        };
        if group.servers.is_empty() {
            problems.push((
                at(&[key("servers")]),
                "a group needs at least one server".into(),
            ));
        }
        for (s, server) in group.servers.iter().enumerate() {
            let encrypted = matches!(server.protocol, DnsProtocol::Tls | DnsProtocol::Https);
            if encrypted && server.tls_name.is_empty() {
                problems.push((
                    at(&[key("servers"), PathSegment::Index(s), key("tls_name")]),
                    "tls and https servers need the name on their certificate".into(),
                ));
            }
            if server.protocol == DnsProtocol::Https && !server.https_path.starts_with('/') {
                problems.push((
                    at(&[key("servers"), PathSegment::Index(s), key("https_path")]),
                    "the query path must start with /".into(),
                ));
            }
        }
    }
    if let Some(problem) = ca_bundle_problem(&settings.dns.ca_file) {
        problems.push((vec![key("dns"), key("ca_file")], problem));
    }
    if settings.dns.min_ttl > settings.dns.max_ttl {
        problems.push((
            vec![key("dns"), key("min_ttl")],
            "min_ttl is longer than max_ttl".into(),
        ));
    }

    let mut names: HashMap<&str, usize> = HashMap::new();
    // (address, is UDP, owner): TCP and UDP ports do not collide.
    let mut bound: Vec<(SocketAddr, bool, String)> = Vec::new();
    if telemetry.enabled {
        bound.push((telemetry.listen, false, "telemetry.listen".into()));
    }
    for (i, endpoint) in settings.endpoints.iter().enumerate() {
        let at = |rest: &[PathSegment]| {
            let mut p = vec![key("endpoints"), PathSegment::Index(i)];
            p.extend_from_slice(rest);
            p
        };
        let name = endpoint.name.as_str();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            problems.push((
                at(&[key("name")]),
                format!("endpoint name {name:?} must be letters, digits, '-' or '_'"),
            ));
        }
        if let Some(first) = names.insert(name, i) {
            problems.push((
                at(&[key("name")]),
                format!("duplicate endpoint name {name:?} (also endpoints[{first}])"),
            ));
        }
        let tun = endpoint.protocol.is_tun();
        if endpoint.listen.is_empty() && !tun {
            problems.push((at(&[key("listen")]), "needs at least one address".into()));
        }
        if tun {
            problems.extend(tun_endpoint_problems(endpoint, &at));
        }
        let udp = endpoint.protocol.is_udp();
        let listen = if tun { &[][..] } else { &endpoint.listen[..] };
        for (j, addr) in listen.iter().enumerate() {
            let owner = format!("endpoints[{i}].listen[{j}]");
            if let Some(taken) = claim(&mut bound, *addr, udp, owner) {
                problems.push((
                    at(&[key("listen"), PathSegment::Index(j)]),
                    format!("address {addr} is already used by {taken}"),
                ));
            }
        }
        if !endpoint.tcp.target.is_empty()
            && let Err(e) = endpoint.tcp.target.parse::<Target>()
        {
            problems.push((at(&[key("tcp"), key("target")]), e.to_string()));
        }
        if !endpoint.udp.target.is_empty()
            && let Err(e) = endpoint.udp.target.parse::<Target>()
        {
            problems.push((at(&[key("udp"), key("target")]), e.to_string()));
        }
        if endpoint.protocol.is_udp() && endpoint.tls.enabled {
            problems.push((
                at(&[key("tls"), key("enabled")]),
                "TLS is not available on udp endpoints".into(),
            ));
        }
        let proxy_protocol = &endpoint.proxy_protocol;
        if proxy_protocol.mode != ProxyProtocolMode::Off && proxy_protocol.trusted.is_empty() {
            problems.push((
                at(&[key("proxy_protocol"), key("trusted")]),
                "list the networks of the load balancers that send PROXY headers".into(),
            ));
        }
        if endpoint.udp.queue == 0 {
            problems.push((at(&[key("udp"), key("queue")]), "must be at least 1".into()));
        }
        let http = &endpoint.http;
        if !http.upstream.is_empty() {
            let valid = http.upstream.parse::<http::Uri>().is_ok_and(|uri| {
                uri.scheme().is_some()
                    && crate::hooks::Upstream::from_uri(&uri).is_some()
                    && matches!(uri.path(), "" | "/")
            });
            if !valid {
                problems.push((
                    at(&[key("http"), key("upstream")]),
                    "not an upstream URL: http://host:port or https://host:port".into(),
                ));
            }
        }
        if let Err(e) = http
            .connect_udp
            .uri_template
            .parse::<crate::http::uri_template::UriTemplate>()
        {
            problems.push((
                at(&[key("http"), key("connect_udp"), key("uri_template")]),
                e,
            ));
        }
        if let Err(e) = crate::http::uri_template::UriTemplate::parse(
            &http.connect_ip.uri_template,
            crate::http::uri_template::CONNECT_IP_VARIABLES,
        ) {
            problems.push((
                at(&[key("http"), key("connect_ip"), key("uri_template")]),
                e,
            ));
        }
        if http.connect_ip.max_capsule_bytes < usize::from(endpoint.ip.mtu) + 1 {
            problems.push((
                at(&[key("http"), key("connect_ip"), key("max_capsule_bytes")]),
                "must be above ip.mtu (a full-size packet must fit)".into(),
            ));
        }
        problems.extend(ip_problems(&endpoint.ip, &|field| {
            at(&[key("ip"), key(field)])
        }));
        if http.connect_udp.max_capsule_bytes < 1500 {
            problems.push((
                at(&[key("http"), key("connect_udp"), key("max_capsule_bytes")]),
                "must be at least 1500 (a full-size UDP datagram must fit)".into(),
            ));
        }
        let h3 = &http.h3;
        if h3.enabled {
            let h3_at = |field: &str| at(&[key("http"), key("h3"), key(field)]);
            if endpoint.protocol != EndpointProtocol::Http {
                problems.push((h3_at("enabled"), "HTTP/3 needs protocol: http".into()));
            } else if !endpoint.tls.enabled {
                problems.push((
                    h3_at("enabled"),
                    "HTTP/3 needs TLS: set tls.enabled with a certificate".into(),
                ));
            }
            if !(1200..=65527).contains(&h3.max_udp_payload) {
                problems.push((
                    h3_at("max_udp_payload"),
                    "must be from 1200 to 65527".into(),
                ));
            }
            if h3.max_concurrent_streams == 0 {
                problems.push((h3_at("max_concurrent_streams"), "must be at least 1".into()));
            }
            for (j, addr) in h3.addresses(&endpoint.listen).iter().enumerate() {
                let addr_at = if h3.listen.is_empty() {
                    at(&[key("listen"), PathSegment::Index(j)])
                } else {
                    at(&[key("http"), key("h3"), key("listen"), PathSegment::Index(j)])
                };
                let owner = format!("endpoints[{i}] HTTP/3 on {addr}");
                if let Some(taken) = claim(&mut bound, *addr, true, owner) {
                    problems.push((
                        addr_at,
                        format!("UDP address {addr} (HTTP/3) is already used by {taken}"),
                    ));
                }
            }
        }
        if let Some(problem) = ca_bundle_problem(&http.client.ca_file) {
            problems.push((at(&[key("http"), key("client"), key("ca_file")]), problem));
        }
        let tls = &endpoint.tls;
        let problems_before = problems.len();
        if tls.enabled && tls.certificates.is_empty() && tls.raw_public_key.as_os_str().is_empty() {
            problems.push((
                at(&[key("tls"), key("certificates")]),
                "TLS is enabled but no certificate (or raw_public_key) is configured".into(),
            ));
        }
        if !tls.client_pins.is_empty() && tls.client_auth == ClientAuth::None {
            problems.push((
                at(&[key("tls"), key("client_pins")]),
                "client_pins need client_auth optional or required".into(),
            ));
        }
        let client = &http.client;
        for (j, path) in client.crl_files.iter().enumerate() {
            if let Err(e) = crate::tls::revocation::read_crl_file(path) {
                let crl_at = at(&[
                    key("http"),
                    key("client"),
                    key("crl_files"),
                    PathSegment::Index(j),
                ]);
                problems.push((crl_at, e));
            }
        }
        if let Err(e) = crate::tls::raw_public_key::parse_pins(&client.server_pins) {
            problems.push((at(&[key("http"), key("client"), key("server_pins")]), e));
        }
        if !client.raw_public_key.as_os_str().is_empty()
            && let Err(e) = crate::tls::raw_public_key::credential(&client.raw_public_key)
        {
            problems.push((at(&[key("http"), key("client"), key("raw_public_key")]), e));
        }
        for (j, cert) in tls.certificates.iter().enumerate() {
            let cert_at = |field: &str| {
                at(&[
                    key("tls"),
                    key("certificates"),
                    PathSegment::Index(j),
                    key(field),
                ])
            };
            if let Err(e) = crate::tls::CertifiedKey::load(&cert.chain, &cert.key) {
                let field = if e.is_about_key() { "key" } else { "chain" };
                problems.push((cert_at(field), e.to_string()));
            }
        }
        if tls.client_auth != ClientAuth::None
            && tls.client_ca.as_os_str().is_empty()
            && tls.client_pins.is_empty()
        {
            problems.push((
                at(&[key("tls"), key("client_ca")]),
                "client_auth needs client_ca, the CAs client certificates chain to".into(),
            ));
        } else if tls.enabled
            && problems.len() == problems_before
            && let Err(e) = crate::tls::TlsAcceptor::new(tls, b"")
        {
            problems.push((at(&[key(e.section), key(e.field)]), e.message));
        }
        if endpoint.tls_interception.enabled()
            && let Err(e) = crate::tls::interception::Interceptor::new(
                &endpoint.name,
                &endpoint.tls_interception,
            )
        {
            problems.push((at(&[key(e.section), key(e.field)]), e.message));
        }
    }
    problems
}

/// Whether two listen addresses cannot both be bound: same port, and the same IP or a
/// wildcard that covers the other (`[::]` covers IPv4 too on Linux by default).
/// Records that `owner` binds `addr` (UDP or TCP); the owner that already had it, if any.
fn claim(
    bound: &mut Vec<(SocketAddr, bool, String)>,
    addr: SocketAddr,
    udp: bool,
    owner: String,
) -> Option<String> {
    let taken = bound
        .iter()
        .find(|(other, other_udp, _)| *other_udp == udp && overlaps(&addr, other))
        .map(|(_, _, taken)| taken.clone());
    bound.push((addr, udp, owner));
    taken
}

fn overlaps(a: &SocketAddr, b: &SocketAddr) -> bool {
    if a.port() != b.port() || a.port() == 0 {
        return false;
    }
    let covers =
        |x: &SocketAddr, y: &SocketAddr| x.ip().is_unspecified() && (x.is_ipv6() || y.is_ipv4());
    a.ip() == b.ip() || covers(a, b) || covers(b, a)
}

/// Why `path` (when set) cannot serve as a PEM CA bundle.
fn ca_bundle_problem(path: &std::path::Path) -> Option<String> {
    if path.as_os_str().is_empty() {
        return None;
    }
    let certs = std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|pem| boring::x509::X509::stack_from_pem(&pem).map_err(|e| e.to_string()));
    match certs {
        Ok(certs) if !certs.is_empty() => None,
        Ok(_) => Some(format!(
            "cannot use {} as a CA bundle: no certificate",
            path.display()
        )),
        Err(e) => Some(format!("cannot use {} as a CA bundle: {e}", path.display())),
    }
}

/// What is wrong with a `protocol: tun` endpoint beyond its `ip:` section.
fn tun_endpoint_problems<E>(
    endpoint: &crate::settings::EndpointSettings<E>,
    at: &dyn Fn(&[PathSegment]) -> Vec<PathSegment>,
) -> Problems {
    let mut problems = Problems::new();
    if endpoint.tls.enabled {
        let text = "TLS is not available on tun endpoints".into();
        problems.push((at(&[key("tls"), key("enabled")]), text));
    }
    if endpoint.ip.offramp != crate::settings::IpOffRamp::Userspace {
        let text = "a tun endpoint sends its flows through the userspace off-ramp".into();
        problems.push((at(&[key("ip"), key("offramp")]), text));
    }
    if endpoint.ip.tun.addresses.is_empty() {
        let text = "a tun endpoint's device needs at least one address".into();
        problems.push((at(&[key("ip"), key("tun"), key("addresses")]), text));
    }
    problems
}

/// What is wrong with an endpoint's `ip:` section; `at` locates one of its fields.
fn ip_problems(
    ip: &crate::settings::IpSettings,
    at: &dyn Fn(&'static str) -> Vec<PathSegment>,
) -> Problems {
    let mut problems = Problems::new();
    let pools = [
        ("ipv4_pool", ip.ipv4_pool, false),
        ("ipv6_pool", ip.ipv6_pool, true),
    ];
    for (field, pool, v6) in pools {
        let Some(net) = pool else { continue };
        if net.addr().is_ipv6() != v6 {
            let family = if v6 { "IPv6" } else { "IPv4" };
            problems.push((at(field), format!("must be an {family} prefix")));
        } else if net.trunc() != net {
            problems.push((
                at(field),
                format!("{net} has host bits set: write {}", net.trunc()),
            ));
        }
    }
    if !(576..=65535).contains(&ip.mtu) {
        problems.push((at("mtu"), "must be from 576 to 65535".into()));
    } else if ip.ipv6_pool.is_some() && ip.mtu < 1280 {
        problems.push((
            at("mtu"),
            "IPv6 needs at least 1280 (or ipv6_pool: null)".into(),
        ));
    }
    if ip.max_flows == 0 {
        problems.push((at("max_flows"), "must be at least 1".into()));
    }
    if ip.queue == 0 {
        problems.push((at("queue"), "must be at least 1".into()));
    }
    let tun_v6 = ip.tun.addresses.iter().any(|net| net.addr().is_ipv6());
    if !(576..=65535).contains(&ip.tun.mtu) {
        problems.push((at("tun"), "tun.mtu must be from 576 to 65535".into()));
    } else if tun_v6 && ip.tun.mtu < 1280 {
        let text = "tun.mtu must be at least 1280 with an IPv6 address".into();
        problems.push((at("tun"), text));
    }
    if ip.tun.name.len() > 15 {
        problems.push((at("tun"), "tun.name is longer than 15 bytes".into()));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::overlaps;

    #[test]
    fn address_overlap() {
        let p = |s: &str| s.parse().unwrap();
        assert!(overlaps(&p("127.0.0.1:80"), &p("127.0.0.1:80")));
        assert!(overlaps(&p("0.0.0.0:80"), &p("127.0.0.1:80")));
        assert!(overlaps(&p("[::]:80"), &p("127.0.0.1:80")));
        assert!(!overlaps(&p("0.0.0.0:80"), &p("[::1]:80")));
        assert!(!overlaps(&p("127.0.0.1:80"), &p("127.0.0.2:80")));
        assert!(!overlaps(&p("127.0.0.1:0"), &p("127.0.0.1:0")));
        assert!(!overlaps(&p("127.0.0.1:80"), &p("127.0.0.1:81")));
    }
}
