//! Layer-3 metrics: packets and bytes each way, flows by protocol and action, ICMP
//! errors Oxy generated, drops by reason, and pool addresses in use.

use crate::metrics;

/// IP packets (CONNECT-IP streams and TUN devices).
#[metrics]
pub mod oxy_ip {
    /// Packets carried, by endpoint and direction (`up` is client to destination).
    pub fn packets_total(endpoint: &str, direction: &str) -> Counter;

    /// Bytes of IP packets carried, by endpoint and direction.
    pub fn bytes_total(endpoint: &str, direction: &str) -> Counter;

    /// Flows started, by endpoint, IP protocol (`udp`, `tcp`, `icmp`, `icmpv6`, `other`)
    /// and the action chosen (`forward`, `drop`, `upgrade_to_udp`, `upgrade_to_tcp`).
    pub fn flows_total(endpoint: &str, protocol: &str, action: &str) -> Counter;

    /// ICMP errors Oxy sent towards clients, by endpoint and type (`prohibited`,
    /// `packet_too_big`, `time_exceeded`, `port_unreachable`, `host_unreachable`,
    /// `protocol_unreachable`).
    pub fn icmp_generated_total(endpoint: &str, kind: &str) -> Counter;

    /// Packets dropped, by endpoint and reason (`malformed`, `bad_checksum`,
    /// `spoofed_source`, `out_of_scope`, `hook`, `too_many_flows`, `queue_full`,
    /// `too_large`, `fragment`, ...).
    pub fn dropped_total(endpoint: &str, reason: &str) -> Counter;

    /// Pool addresses assigned to CONNECT-IP clients now, by endpoint and family.
    pub fn addresses_in_use(endpoint: &str, family: &str) -> Gauge;

    /// CONNECT-IP streams ended by malformed capsules, by endpoint and reason.
    pub fn capsule_errors_total(endpoint: &str, reason: &str) -> Counter;
}
