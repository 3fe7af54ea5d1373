//! Address pools for CONNECT-IP clients (RFC 9484 §4.7.1): each stream gets addresses
//! from its endpoint's IPv4 and IPv6 pools, and gives them back when it ends.

use crate::settings::IpSettings;
use crate::tunnel::packet::oxy_ip;
use ipnet::IpNet;
use std::collections::{BTreeSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a returned address rests before it is handed out again when packets leave
/// through a TUN device (`ip.offramp: tun`): the kernel routes late replies to its
/// previous holder by address, so they must not reach the next one.
pub const TUN_QUARANTINE: Duration = Duration::from_secs(60);

/// The addresses of one prefix that can be handed out, and which are in use.
#[derive(Debug)]
pub struct AddressPool {
    net: IpNet,
    /// Addresses never handed out (the proxy's own).
    reserved: Vec<IpAddr>,
    /// How long a returned address rests (0: it is free at once).
    quarantine: Duration,
    state: Mutex<PoolState>,
    gauge: prometheus::IntGauge,
}

#[derive(Debug, Default)]
struct PoolState {
    used: BTreeSet<IpAddr>,
    /// Returned addresses still resting, oldest first.
    resting: VecDeque<(IpAddr, Instant)>,
}

/// An endpoint's pools (`ip.ipv4_pool`, `ip.ipv6_pool`).
#[derive(Debug, Default)]
pub struct AddressPools {
    /// The IPv4 pool, if any.
    pub v4: Option<Arc<AddressPool>>,
    /// The IPv6 pool, if any.
    pub v6: Option<Arc<AddressPool>>,
}

impl AddressPools {
    /// The pools `ip` configures for `endpoint`; the TUN device's own addresses are
    /// never handed out.
    pub fn new(ip: &IpSettings, endpoint: &str) -> Self {
        let reserved: Vec<IpAddr> = ip.tun.addresses.iter().map(IpNet::addr).collect();
        let quarantine = match ip.offramp {
            crate::settings::IpOffRamp::Tun => TUN_QUARANTINE,
            crate::settings::IpOffRamp::Userspace => Duration::ZERO,
        };
        let pool = |net: Option<IpNet>| {
            net.map(|net| {
                let pool = AddressPool::new(net, reserved.clone(), endpoint);
                Arc::new(pool.with_quarantine(quarantine))
            })
        };
        Self {
            v4: pool(ip.ipv4_pool),
            v6: pool(ip.ipv6_pool),
        }
    }
}

/// One address taken from a pool; dropping it returns the address.
#[derive(Debug)]
pub struct AssignedAddress {
    pool: Arc<AddressPool>,
    address: IpAddr,
}

impl AddressPool {
    /// A pool of `net`'s host addresses (without the network and, on IPv4, broadcast
    /// addresses) except `reserved`; `endpoint` labels the in-use gauge.
    pub fn new(net: IpNet, reserved: Vec<IpAddr>, endpoint: &str) -> Self {
        let family = if net.addr().is_ipv4() { "ipv4" } else { "ipv6" };
        Self {
            net,
            reserved,
            quarantine: Duration::ZERO,
            state: Mutex::default(),
            gauge: oxy_ip::addresses_in_use(endpoint, family),
        }
    }

    /// This pool, with returned addresses resting `quarantine` before they are handed
    /// out again (unless no other address is free).
    pub fn with_quarantine(mut self, quarantine: Duration) -> Self {
        self.quarantine = quarantine;
        self
    }

    /// The pool's prefix.
    pub fn net(&self) -> IpNet {
        self.net
    }

    /// Takes the lowest free address that is not resting, else the one that has rested
    /// longest; `None` when the pool is exhausted. At most `used + reserved + resting + 1`
    /// addresses are looked at.
    pub fn assign(self: &Arc<Self>) -> Option<AssignedAddress> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        while state
            .resting
            .front()
            .is_some_and(|(_, since)| now.duration_since(*since) >= self.quarantine)
        {
            state.resting.pop_front();
        }
        let free = |ip: &IpAddr| {
            self.is_host(*ip) && !state.used.contains(ip) && !self.reserved.contains(ip)
        };
        let resting: std::collections::HashSet<IpAddr> =
            state.resting.iter().map(|(ip, _)| *ip).collect();
        let address = match self
            .net
            .hosts()
            .find(|ip| free(ip) && !resting.contains(ip))
        {
            Some(address) => address,
            None => {
                let position = state.resting.iter().position(|(ip, _)| free(ip))?;
                let (address, _) = state.resting.remove(position)?;
                address
            }
        };
        state.used.insert(address);
        self.gauge
            .set(i64::try_from(state.used.len()).unwrap_or(i64::MAX));
        Some(AssignedAddress {
            pool: self.clone(),
            address,
        })
    }

    /// Whether `ip` is one of the pool's host addresses.
    fn is_host(&self, ip: IpAddr) -> bool {
        let single = self.net.prefix_len() + 1 >= self.net.max_prefix_len();
        self.net.contains(&ip)
            && (single
                || (ip != self.net.network() && (ip.is_ipv6() || ip != self.net.broadcast())))
    }
}

impl AssignedAddress {
    /// The address.
    pub fn address(&self) -> IpAddr {
        self.address
    }
}

impl Drop for AssignedAddress {
    fn drop(&mut self) {
        let mut state = self.pool.state.lock().unwrap_or_else(|p| p.into_inner());
        state.used.remove(&self.address);
        if !self.pool.quarantine.is_zero() {
            state.resting.push_back((self.address, Instant::now()));
        }
        self.pool
            .gauge
            .set(i64::try_from(state.used.len()).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pool(net: &str, reserved: &[&str]) -> Arc<AddressPool> {
        let reserved = reserved.iter().map(|r| r.parse().unwrap()).collect();
        Arc::new(AddressPool::new(
            net.parse().unwrap(),
            reserved,
            "pool-test",
        ))
    }

    fn text(assigned: &AssignedAddress) -> String {
        assigned.address().to_string()
    }

    #[test]
    fn assigns_the_lowest_free_and_exhausts() {
        let pool = pool("192.0.2.0/29", &["192.0.2.1"]);
        let taken: Vec<_> = (0..5).map(|_| pool.assign().unwrap()).collect();
        let addresses: Vec<String> = taken.iter().map(text).collect();
        assert_eq!(
            addresses,
            [
                "192.0.2.2",
                "192.0.2.3",
                "192.0.2.4",
                "192.0.2.5",
                "192.0.2.6"
            ]
        );
        assert!(pool.assign().is_none(), "exhausted");
        drop(taken);
        assert_eq!(text(&pool.assign().unwrap()), "192.0.2.2");
    }

    #[test]
    fn returned_addresses_rest_when_there_is_a_quarantine() {
        let net = "192.0.2.0/30".parse().unwrap();
        let pool =
            Arc::new(AddressPool::new(net, vec![], "pool-test").with_quarantine(TUN_QUARANTINE));
        let first = pool.assign().unwrap();
        assert_eq!(text(&first), "192.0.2.1");
        drop(first);
        let second = pool.assign().unwrap();
        assert_eq!(text(&second), "192.0.2.2", "192.0.2.1 rests");
        // Only the resting address is left: it is handed out rather than refusing.
        assert_eq!(text(&pool.assign().unwrap()), "192.0.2.1");
    }

    #[test]
    fn ipv6_pools_start_after_the_network_address() {
        let pool = pool("2001:db8::/120", &[]);
        assert_eq!(text(&pool.assign().unwrap()), "2001:db8::1");
        let single = self::pool("192.0.2.7/32", &[]);
        let only = single.assign().unwrap();
        assert_eq!(text(&only), "192.0.2.7");
        assert!(single.assign().is_none());
    }
}
