//! The `egress:` section: which destinations traffic may reach, and how it connects.

use crate::oxy_app_settings;
use ipnet::IpNet;
use std::time::Duration;

/// The `egress:` section.
#[oxy_app_settings]
pub struct EgressSettings {
    /// Networks allowed although they are special-purpose. By default loopback, private
    /// (RFC 1918, ULA), link-local, CGNAT, multicast, unspecified, broadcast and
    /// documentation ranges (and their IPv4-mapped forms) are denied; list here the
    /// ones traffic may reach (`127.0.0.0/8`, `10.1.0.0/16`).
    pub allow: Vec<IpNet>,
    /// Destination ports allowed; empty allows every port not in `deny_ports`.
    pub allow_ports: Vec<u16>,
    /// Destination ports denied.
    pub deny_ports: Vec<u16>,
    /// How TCP connections to a name are raced over its addresses (RFC 8305).
    pub happy_eyeballs: HappyEyeballsSettings,
}

/// An endpoint's `egress:` section: its additions to the top-level policy, or with
/// `inherit: false` its own policy.
#[oxy_app_settings]
pub struct EndpointEgressSettings {
    /// Networks this endpoint may reach although they are special-purpose, besides the
    /// top-level `egress.allow` (`10.0.0.5/32` for a private backend).
    pub allow: Vec<IpNet>,
    /// Destination ports this endpoint may reach; when set, it replaces the top-level
    /// `egress.allow_ports` for this endpoint.
    pub allow_ports: Vec<u16>,
    /// Destination ports denied to this endpoint, besides the top-level
    /// `egress.deny_ports`.
    pub deny_ports: Vec<u16>,
    /// Whether the top-level `allow`, `allow_ports` and `deny_ports` apply to this
    /// endpoint too; `false`: only this section does (the top-level port lists do not
    /// apply either).
    #[serde(default = "yes")]
    pub inherit: bool,
}

fn yes() -> bool {
    true
}

/// Happy eyeballs (RFC 8305) timings.
#[oxy_app_settings]
pub struct HappyEyeballsSettings {
    /// When the IPv4 answer comes first, wait this long for the IPv6 one.
    #[serde(with = "humantime_serde", default = "default_resolution_delay")]
    pub resolution_delay: Duration,
    /// Start the next address's connection attempt after this long without success.
    #[serde(with = "humantime_serde", default = "default_attempt_delay")]
    pub connection_attempt_delay: Duration,
    /// Give up connecting to a target after this long in all.
    #[serde(with = "humantime_serde", default = "default_connect_timeout")]
    pub connect_timeout: Duration,
}

fn default_resolution_delay() -> Duration {
    Duration::from_millis(50)
}

fn default_attempt_delay() -> Duration {
    Duration::from_millis(250)
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
