//! Address pools for CONNECT-IP clients (RFC 9484 §4.7.1): each stream gets addresses
//! from its endpoint's IPv4 and IPv6 pools, and gives them back when it ends.

use crate::settings::IpSettings;
use crate::tunnel::packet::oxy_ip;
use ipnet::IpNet;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The addresses of one prefix that can be handed out, and which are in use.
#[derive(Debug)]
pub struct AddressPool {
    net: IpNet,
    /// Addresses never handed out (the proxy's own).
    reserved: Vec<IpAddr>,
    used: Mutex<BTreeSet<IpAddr>>,
    gauge: prometheus::IntGauge,
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
        let pool = |net: Option<IpNet>| {
            net.map(|net| Arc::new(AddressPool::new(net, reserved.clone(), endpoint)))
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
            used: Mutex::new(BTreeSet::new()),
            gauge: oxy_ip::addresses_in_use(endpoint, family),
        }
    }

    /// The pool's prefix.
    pub fn net(&self) -> IpNet {
        self.net
    }

    /// Takes `wanted` if it is in the pool and free, else (with `None`) the lowest free
    /// address; `None` when the pool is exhausted or `wanted` is taken.
    pub fn assign(self: &Arc<Self>, wanted: Option<IpAddr>) -> Option<AssignedAddress> {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let free = |ip: &IpAddr| !used.contains(ip) && !self.reserved.contains(ip);
        let address = match wanted {
            Some(ip) => Some(ip).filter(|ip| self.is_host(*ip) && free(ip)),
            // At most `used + reserved + 1` addresses are looked at.
            None => self.net.hosts().find(|ip| self.is_host(*ip) && free(ip)),
        }?;
        used.insert(address);
        self.gauge
            .set(i64::try_from(used.len()).unwrap_or(i64::MAX));
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

    /// How many addresses are handed out.
    pub fn in_use(&self) -> usize {
        self.used.lock().unwrap_or_else(|p| p.into_inner()).len()
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
        let mut used = self.pool.used.lock().unwrap_or_else(|p| p.into_inner());
        used.remove(&self.address);
        self.pool
            .gauge
            .set(i64::try_from(used.len()).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn assigns_frees_and_exhausts() {
        let reserved = vec!["192.0.2.1".parse().unwrap()];
        let pool = Arc::new(AddressPool::new(
            "192.0.2.0/29".parse().unwrap(),
            reserved,
            "pool-test",
        ));
        let taken: Vec<_> = (0..5).map(|_| pool.assign(None).unwrap()).collect();
        let addresses: Vec<String> = taken.iter().map(|a| a.address().to_string()).collect();
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
        assert!(pool.assign(None).is_none(), "exhausted");
        assert_eq!(pool.in_use(), 5);
        drop(taken);
        assert_eq!(pool.in_use(), 0);
        let wanted = pool.assign(Some("192.0.2.5".parse().unwrap())).unwrap();
        assert_eq!(wanted.address().to_string(), "192.0.2.5");
        assert!(pool.assign(Some("192.0.2.5".parse().unwrap())).is_none());
        for outside in ["192.0.2.0", "192.0.2.7", "192.0.2.1", "198.51.100.1"] {
            assert!(
                pool.assign(Some(outside.parse().unwrap())).is_none(),
                "{outside}"
            );
        }
    }

    #[test]
    fn ipv6_pools_start_after_the_network_address() {
        let pool = Arc::new(AddressPool::new(
            "2001:db8::/120".parse().unwrap(),
            vec![],
            "pool-test",
        ));
        assert_eq!(
            pool.assign(None).unwrap().address().to_string(),
            "2001:db8::1"
        );
    }
}
