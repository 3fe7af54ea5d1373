//! The `ip:` section of an endpoint: how IP packets (CONNECT-IP streams, TUN devices)
//! are checked, tracked and sent on, and the addresses CONNECT-IP clients get.

use crate::oxy_app_settings;
use ipnet::IpNet;
use std::time::Duration;

/// The `ip:` section of an endpoint: layer 3 (CONNECT-IP on `http` endpoints, and
/// `protocol: tun` endpoints).
#[oxy_app_settings]
pub struct IpSettings {
    /// Addresses assigned to CONNECT-IP clients, one per stream; `null` assigns no
    /// IPv4 address. RFC 6598's shared address space by default: the addresses never
    /// leave Oxy with the user-space off-ramp.
    #[serde(default = "default_ipv4_pool")]
    pub ipv4_pool: Option<IpNet>,
    /// Addresses assigned to CONNECT-IP clients from this IPv6 prefix; `null` assigns
    /// no IPv6 address.
    #[serde(default = "default_ipv6_pool")]
    pub ipv6_pool: Option<IpNet>,
    /// The MTU of the virtual link: larger packets from a client are answered with
    /// ICMP Packet Too Big (fragmentation needed). Over HTTP/3 the link is also limited
    /// by what one QUIC datagram carries.
    #[serde(default = "default_mtu")]
    pub mtu: u16,
    /// A flow (a 5-tuple, or an ICMP echo identifier) is forgotten after this long
    /// without a packet; its UDP off-ramp socket closes with it.
    #[serde(with = "humantime_serde", default = "default_flow_idle_timeout")]
    pub flow_idle_timeout: Duration,
    /// Most flows one CONNECT-IP stream or TUN device tracks at once; packets of more
    /// new flows are dropped and counted.
    #[serde(default = "default_max_flows")]
    pub max_flows: usize,
    /// Most TCP connections one stream or device terminates in Oxy at once (each holds
    /// 512 KiB of user-space stack buffers); more connection attempts get a reset.
    #[serde(default = "default_max_tcp_flows")]
    pub max_tcp_flows: usize,
    /// Most ICMP echo identifiers one stream or device pings with at once (each holds an
    /// ICMP socket); echo requests of more are dropped and counted.
    #[serde(default = "default_max_echo_flows")]
    pub max_echo_flows: usize,
    /// Packets queued per flow and towards the client; more are dropped and counted.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Where forwarded packets go: `userspace` terminates UDP, TCP and ICMP echo in
    /// Oxy and sends them on as ordinary sockets (no privileges); `tun` writes them to
    /// the `tun` device as they are (needs CAP_NET_ADMIN).
    pub offramp: IpOffRamp,
    /// The TUN device of `offramp: tun`, and of `protocol: tun` endpoints.
    pub tun: TunSettings,
}

/// Where forwarded IP packets go.
#[oxy_app_settings]
pub enum IpOffRamp {
    /// Terminate flows in Oxy (a user-space TCP/IP stack for TCP, sockets for UDP,
    /// ping sockets for ICMP echo) and send them through the normal L4 path.
    #[default]
    Userspace,
    /// Write packets to a TUN device as they are; replies are routed back by the
    /// destination address.
    Tun,
}

/// A TUN device Oxy creates.
#[oxy_app_settings]
pub struct TunSettings {
    /// The device's name (at most 15 bytes); empty lets the kernel choose.
    pub name: String,
    /// Addresses with prefix lengths given to the device (`10.0.0.1/24`).
    pub addresses: Vec<IpNet>,
    /// Routes through the device, besides the prefixes of `addresses`.
    pub routes: Vec<IpNet>,
    /// The device's MTU.
    #[serde(default = "default_mtu")]
    pub mtu: u16,
}

fn default_ipv4_pool() -> Option<IpNet> {
    "100.64.0.0/16".parse().ok()
}

fn default_ipv6_pool() -> Option<IpNet> {
    "fd00:6f78::/64".parse().ok()
}

fn default_mtu() -> u16 {
    1500
}

fn default_flow_idle_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_max_flows() -> usize {
    4096
}

fn default_max_tcp_flows() -> usize {
    256
}

fn default_max_echo_flows() -> usize {
    64
}

fn default_queue() -> usize {
    256
}
