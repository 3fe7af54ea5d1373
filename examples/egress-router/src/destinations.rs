//! Destination patterns shared by routes and the L4 firewall: host names, networks and
//! ports.

use ipnet::IpNet;
use oxy::oxy_app_settings;
use oxy::prelude::{Target, TargetHost, host_matches};
use std::net::IpAddr;

/// Destinations: a target matches when its host matches `hosts` (names) or `networks`
/// (addresses), whichever are set, and its port is in `ports`, when set.
#[oxy_app_settings]
pub struct Destinations {
    /// Host names: `example.com` (exactly), `.example.com` (it and its subdomains) or
    /// `*.example.com` (its subdomains only).
    pub hosts: Vec<String>,
    /// Networks (`10.0.0.0/8`); a name's resolved addresses are checked against them.
    pub networks: Vec<IpNet>,
    /// Ports; empty means any.
    pub ports: Vec<u16>,
}

/// Whether a pattern can tell yet: a name target may match `networks` only once resolved.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Matches,
    NoMatch,
    /// The target is a name, and the pattern's networks decide after resolution.
    AfterResolution,
}

impl Destinations {
    /// Whether `target` matches, as far as its host name or address tells.
    pub fn check(&self, target: &Target) -> Verdict {
        if !self.ports.is_empty() && !self.ports.contains(&target.port) {
            return Verdict::NoMatch;
        }
        if self.hosts.is_empty() && self.networks.is_empty() {
            return Verdict::Matches;
        }
        match &target.host {
            TargetHost::Ip(ip) if self.has_network(*ip) => Verdict::Matches,
            TargetHost::Ip(_) => Verdict::NoMatch,
            TargetHost::Name(name) if self.hosts.iter().any(|h| host_matches(h, name)) => {
                Verdict::Matches
            }
            TargetHost::Name(_) if self.networks.is_empty() => Verdict::NoMatch,
            TargetHost::Name(_) => Verdict::AfterResolution,
        }
    }

    fn has_network(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|net| net.contains(&ip))
    }
}
