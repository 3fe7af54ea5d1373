//! The routes a CONNECT-IP stream advertises (RFC 9484 §4.7.3): its scope, less what
//! the egress policy denies, as ordered, non-overlapping address ranges.

use super::capsules::IpRange;
use super::scope::Scope;
use crate::offramp::policy::EgressPolicy;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An inclusive range of addresses of one family, as integers.
type Span = (u128, u128);

fn span(net: &IpNet) -> Span {
    (to_int(net.network()), to_int(net.broadcast()))
}

fn to_int(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_int(value: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(value))
    } else {
        IpAddr::V4(Ipv4Addr::from(u32::try_from(value).unwrap_or(u32::MAX)))
    }
}

/// Sorts and merges overlapping or adjacent spans.
fn normalize(mut spans: Vec<Span>) -> Vec<Span> {
    spans.sort_unstable();
    let mut out: Vec<Span> = Vec::with_capacity(spans.len());
    for (start, end) in spans {
        match out.last_mut() {
            Some(last) if start <= last.1.saturating_add(1) => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

/// `spans` without anything in `minus` (both normalized).
fn subtract(spans: &[Span], minus: &[Span]) -> Vec<Span> {
    let mut out = Vec::new();
    for &(mut start, end) in spans {
        let mut whole = true;
        for &(m_start, m_end) in minus {
            if m_end < start || m_start > end {
                continue;
            }
            if m_start > start {
                out.push((start, m_start - 1));
            }
            if m_end >= end {
                whole = false;
                break;
            }
            start = m_end + 1;
        }
        if whole {
            out.push((start, end));
        }
    }
    out
}

/// `a ∩ b` (both normalized).
fn intersect(a: &[Span], b: &[Span]) -> Vec<Span> {
    let mut out = Vec::new();
    for &(a_start, a_end) in a {
        for &(b_start, b_end) in b {
            let (start, end) = (a_start.max(b_start), a_end.min(b_end));
            if start <= end {
                out.push((start, end));
            }
        }
    }
    normalize(out)
}

/// The ranges to advertise for `scope` under `policy`, for the families the client has
/// an address in: IPv4 before IPv6, each in order.
pub fn advertised(scope: &Scope, policy: &EgressPolicy, families: [bool; 2]) -> Vec<IpRange> {
    let (special, allowed) = policy.address_rules();
    let protocol = scope.protocol.unwrap_or(0);
    let mut routes = Vec::new();
    for (v6, wanted) in [false, true].into_iter().zip(families) {
        if !wanted {
            continue;
        }
        let of_family = |nets: &mut dyn Iterator<Item = &IpNet>| -> Vec<Span> {
            normalize(
                nets.filter(|n| n.addr().is_ipv6() == v6)
                    .map(span)
                    .collect(),
            )
        };
        let full = if v6 { "::/0" } else { "0.0.0.0/0" };
        let everything: Vec<IpNet> = full.parse().into_iter().collect();
        let scoped = match &scope.destinations {
            Some(nets) => of_family(&mut nets.iter()),
            None => of_family(&mut everything.iter()),
        };
        let denied = of_family(&mut special.iter());
        let opened = of_family(&mut allowed.iter());
        let mut spans = subtract(&scoped, &denied);
        spans.extend(intersect(&scoped, &opened));
        routes.extend(normalize(spans).into_iter().map(|(start, end)| IpRange {
            start: from_int(start, v6),
            end: from_int(end, v6),
            protocol,
        }));
    }
    routes
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::settings::EgressSettings;

    fn policy(allow: &[&str]) -> EgressPolicy {
        EgressPolicy::new(&EgressSettings {
            allow: allow.iter().map(|s| s.parse().unwrap()).collect(),
            ..Default::default()
        })
    }

    fn texts(routes: &[IpRange]) -> Vec<String> {
        routes
            .iter()
            .map(|r| format!("{}-{}/{}", r.start, r.end, r.protocol))
            .collect()
    }

    #[test]
    fn a_prefix_scope_inside_an_allowed_range() {
        let scope = Scope {
            destinations: Some(vec!["192.0.2.0/24".parse().unwrap()]),
            protocol: Some(17),
        };
        // 192.0.2.0/24 is documentation space: denied unless allowed.
        assert!(advertised(&scope, &policy(&[]), [true, true]).is_empty());
        let routes = advertised(&scope, &policy(&["192.0.2.128/25"]), [true, true]);
        assert_eq!(texts(&routes), ["192.0.2.128-192.0.2.255/17"]);
    }

    #[test]
    fn any_scope_is_the_internet_less_special_ranges() {
        let scope = Scope {
            destinations: None,
            protocol: None,
        };
        let routes = advertised(&scope, &policy(&["127.0.0.0/8"]), [true, false]);
        let texts = texts(&routes);
        assert_eq!(texts[0], "1.0.0.0-9.255.255.255/0");
        let covered = |ip: &str| {
            let ip: IpAddr = ip.parse().unwrap();
            routes.iter().any(|r| r.start <= ip && ip <= r.end)
        };
        assert!(covered("127.0.0.1") && covered("8.8.8.8"), "{texts:?}");
        assert!(!covered("10.0.0.1") && !covered("192.168.1.1"));
        assert!(texts.iter().all(|t| !t.starts_with("10.")));
        let multicast: IpAddr = "224.0.0.0".parse().unwrap();
        assert!(
            routes.last().unwrap().end < multicast,
            "multicast and above are denied"
        );
        // Ordered and non-overlapping, as the capsule requires.
        for pair in routes.windows(2) {
            assert!(pair[0].end < pair[1].start);
        }
        let v6 = advertised(&scope, &policy(&[]), [false, true]);
        assert!(v6.iter().all(|r| r.start.is_ipv6()));
        let documentation: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(
            !v6.iter()
                .any(|r| r.start <= documentation && documentation <= r.end)
        );
    }
}
