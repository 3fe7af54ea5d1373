//! The egress policy: which destination addresses and ports traffic may reach.
//!
//! Special-purpose ranges (loopback, private, link-local, ...) are denied unless an
//! `egress.allow` network covers them. The check runs on resolved addresses, so a name
//! that resolves to 127.0.0.1 is caught like the address itself.

use crate::settings::{EgressSettings, EndpointEgressSettings};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why the policy refused a destination.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressDenied {
    /// The address is special-purpose and no `egress.allow` network covers it.
    #[error("{ip} is a {range} address; egress.allow does not cover it")]
    Range {
        /// The refused address.
        ip: IpAddr,
        /// Which kind of range it is in (`loopback`, `private`, ...).
        range: &'static str,
    },
    /// The port is not allowed.
    #[error("port {0} is not allowed by egress.allow_ports/deny_ports")]
    Port(u16),
}

impl EgressDenied {
    /// A short, stable label for metrics.
    pub fn as_label(&self) -> &'static str {
        match self {
            EgressDenied::Range { range, .. } => range,
            EgressDenied::Port(_) => "port",
        }
    }
}

/// The egress policy built from the `egress:` settings.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    allow: Vec<IpNet>,
    allow_ports: Vec<u16>,
    deny_ports: Vec<u16>,
}

impl EgressPolicy {
    /// The policy the settings describe.
    pub fn new(settings: &EgressSettings) -> Self {
        Self {
            allow: settings.allow.clone(),
            allow_ports: settings.allow_ports.clone(),
            deny_ports: settings.deny_ports.clone(),
        }
    }

    /// The policy of an endpoint with `endpoint` as its `egress:` section: this one with
    /// the section's networks and denied ports added and its allowed ports (when set)
    /// instead of these, or with `inherit: false` the section alone.
    pub fn for_endpoint(&self, endpoint: &EndpointEgressSettings) -> Self {
        let mut policy = if endpoint.inherit {
            self.clone()
        } else {
            Self::default()
        };
        policy.allow.extend(endpoint.allow.iter().copied());
        if !endpoint.allow_ports.is_empty() {
            policy.allow_ports = endpoint.allow_ports.clone();
        }
        policy
            .deny_ports
            .extend(endpoint.deny_ports.iter().copied());
        policy
    }

    /// Checks a destination port.
    pub fn check_port(&self, port: u16) -> Result<(), EgressDenied> {
        let listed = self.allow_ports.is_empty() || self.allow_ports.contains(&port);
        if listed && !self.deny_ports.contains(&port) {
            Ok(())
        } else {
            Err(EgressDenied::Port(port))
        }
    }

    /// Checks a destination address.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), EgressDenied> {
        let Some(range) = special_range(ip) else {
            return Ok(());
        };
        let embedded = embedded_ipv4(ip).map(IpAddr::V4);
        let allowed = self
            .allow
            .iter()
            .any(|net| net.contains(&ip) || embedded.is_some_and(|v4| net.contains(&v4)));
        if allowed {
            Ok(())
        } else {
            Err(EgressDenied::Range { ip, range })
        }
    }

    /// Checks a destination address and port.
    pub fn check(&self, addr: SocketAddr) -> Result<(), EgressDenied> {
        self.check_port(addr.port())?;
        self.check_ip(addr.ip())
    }
}

/// The IPv4 address carried inside an IPv4-mapped, NAT64 (64:ff9b::/96) or 6to4
/// (2002::/16) IPv6 address.
fn embedded_ipv4(ip: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = ip else { return None };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = v6.segments();
    let o = v6.octets();
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

/// The kind of special-purpose range `ip` is in, or `None` for an ordinary address.
pub fn special_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_range_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_ipv4(ip) {
                return special_range_v4(v4);
            }
            special_range_v6(v6)
        }
    }
}

/// IPv4 special-purpose ranges (RFC 6890 and its updates); the first match names the
/// range.
const SPECIAL_V4: &[(Ipv4Net, &str)] = &[
    (v4(0, 0, 0, 0, 8), "unspecified"),
    (v4(127, 0, 0, 0, 8), "loopback"),
    (v4(10, 0, 0, 0, 8), "private"),
    (v4(172, 16, 0, 0, 12), "private"),
    (v4(192, 168, 0, 0, 16), "private"),
    (v4(100, 64, 0, 0, 10), "cgnat"),
    (v4(169, 254, 0, 0, 16), "link-local"),
    (v4(192, 0, 2, 0, 24), "documentation"),
    (v4(198, 51, 100, 0, 24), "documentation"),
    (v4(203, 0, 113, 0, 24), "documentation"),
    (v4(192, 0, 0, 0, 24), "reserved"),
    (v4(198, 18, 0, 0, 15), "reserved"),
    (v4(224, 0, 0, 0, 4), "multicast"),
    (v4(255, 255, 255, 255, 32), "broadcast"),
    (v4(240, 0, 0, 0, 4), "reserved"),
];

/// IPv6 special-purpose ranges; IPv4 embedded in IPv6 is checked as IPv4 first.
const SPECIAL_V6: &[(Ipv6Net, &str)] = &[
    (v6([0, 0], 128), "unspecified"),
    (Ipv6Net::new_assert(Ipv6Addr::LOCALHOST, 128), "loopback"),
    (v6([0xfc00, 0], 7), "private"),
    (v6([0xfe80, 0], 10), "link-local"),
    (v6([0xff00, 0], 8), "multicast"),
    (v6([0x2001, 0x0db8], 32), "documentation"),
    // IPv4-compatible (deprecated), discard-only, Teredo.
    (v6([0, 0], 96), "reserved"),
    (v6([0x100, 0], 64), "reserved"),
    (v6([0x2001, 0], 32), "reserved"),
];

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
}

const fn v6([a, b]: [u16; 2], len: u8) -> Ipv6Net {
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, 0, 0, 0, 0, 0, 0), len)
}

fn special_range_v4(ip: Ipv4Addr) -> Option<&'static str> {
    SPECIAL_V4
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|(_, range)| *range)
}

fn special_range_v6(ip: Ipv6Addr) -> Option<&'static str> {
    SPECIAL_V6
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|(_, range)| *range)
}

impl EgressPolicy {
    /// The address rules, for route advertisements: the special-purpose networks
    /// (denied) and the `egress.allow` networks (allowed even inside those). IPv4
    /// embedded in IPv6 is left out here and caught per flow by
    /// [`EgressPolicy::check_ip`].
    pub fn address_rules(&self) -> (Vec<IpNet>, &[IpNet]) {
        let special = SPECIAL_V4
            .iter()
            .map(|(net, _)| IpNet::V4(*net))
            .chain(SPECIAL_V6.iter().map(|(net, _)| IpNet::V6(*net)))
            .collect();
        (special, &self.allow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str]) -> EgressPolicy {
        EgressPolicy {
            allow: allow.iter().map(|s| s.parse().unwrap()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn every_special_range_is_denied_by_default() {
        let p = EgressPolicy::default();
        for (ip, range) in [
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "cgnat"),
            ("100.127.255.254", "cgnat"),
            ("169.254.169.254", "link-local"),
            ("192.0.2.10", "documentation"),
            ("198.51.100.10", "documentation"),
            ("203.0.113.10", "documentation"),
            ("198.18.0.1", "reserved"),
            ("224.0.0.251", "multicast"),
            ("239.255.255.250", "multicast"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.255", "broadcast"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("fd00::1", "private"),
            ("fc00::1", "private"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:169.254.169.254", "link-local"),
            ("64:ff9b::7f00:1", "loopback"),
            ("2002:a00:1::1", "private"),
            ("::127.0.0.1", "reserved"),
            ("100::1", "reserved"),
            ("2001:0:4136:e378::1", "reserved"),
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(
                p.check_ip(ip),
                Err(EgressDenied::Range { ip, range }),
                "{ip}"
            );
        }
    }

    #[test]
    fn ordinary_addresses_pass() {
        let p = EgressPolicy::default();
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "192.169.0.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
            "64:ff9b::808:808",
        ] {
            assert_eq!(p.check_ip(ip.parse().unwrap()), Ok(()), "{ip}");
        }
    }

    #[test]
    fn allow_networks_override_ranges_including_mapped_forms() {
        let p = policy(&["127.0.0.0/8", "fd00::/8"]);
        assert_eq!(p.check_ip("127.0.0.1".parse().unwrap()), Ok(()));
        assert_eq!(p.check_ip("::ffff:127.0.0.1".parse().unwrap()), Ok(()));
        assert_eq!(p.check_ip("fd12::1".parse().unwrap()), Ok(()));
        assert!(p.check_ip("::1".parse().unwrap()).is_err());
        assert!(p.check_ip("10.0.0.1".parse().unwrap()).is_err());
        assert!(p.check_ip("fc00::1".parse().unwrap()).is_err());
    }

    #[test]
    fn ports() {
        let mut p = EgressPolicy::default();
        assert_eq!(p.check_port(25), Ok(()));
        p.deny_ports = vec![25];
        assert_eq!(p.check_port(25), Err(EgressDenied::Port(25)));
        p.allow_ports = vec![443, 80];
        assert_eq!(p.check_port(443), Ok(()));
        assert_eq!(p.check_port(8080), Err(EgressDenied::Port(8080)));
        let addr: SocketAddr = "1.1.1.1:8080".parse().unwrap();
        assert_eq!(p.check(addr), Err(EgressDenied::Port(8080)));
    }

    #[test]
    fn an_endpoint_extends_or_replaces_the_policy() {
        let mut global = policy(&["10.1.0.0/16"]);
        global.deny_ports = vec![25];
        let backend = EndpointEgressSettings {
            allow: vec!["10.0.0.5/32".parse().unwrap()],
            allow_ports: vec![8080],
            deny_ports: vec![8081],
            inherit: true,
        };
        let p = global.for_endpoint(&backend);
        assert_eq!(p.check("10.0.0.5:8080".parse().unwrap()), Ok(()));
        assert_eq!(p.check("10.1.2.3:8080".parse().unwrap()), Ok(()));
        assert!(
            p.check("10.0.0.5:443".parse().unwrap()).is_err(),
            "allow_ports replaced"
        );
        assert_eq!(p.deny_ports, vec![25, 8081]);
        // The global policy is unchanged: the backend is not open to other endpoints.
        assert!(global.check("10.0.0.5:8080".parse().unwrap()).is_err());
        // An endpoint without a section has the global policy.
        let same = global.for_endpoint(&EndpointEgressSettings::default());
        assert_eq!(
            (same.allow, same.allow_ports, same.deny_ports),
            (global.allow.clone(), vec![], vec![25])
        );
        // Not inherited: only the section.
        let own = EndpointEgressSettings {
            inherit: false,
            ..backend
        };
        let p = global.for_endpoint(&own);
        assert!(p.check("10.1.2.3:8080".parse().unwrap()).is_err());
        assert_eq!(
            p.deny_ports,
            vec![8081],
            "the global deny_ports do not apply"
        );
    }
}
