//! The DNS answer cache: positive and negative entries with clamped lifetimes.

use super::Family;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A cached outcome of a lookup.
#[derive(Clone)]
pub enum Cached<Item> {
    /// Addresses, with the application's item.
    Addresses(Arc<[IpAddr]>, Item),
    /// The name has no address of this family (or does not exist).
    Negative,
}

struct Entry<Item> {
    value: Cached<Item>,
    expires: Instant,
}

/// A bounded map from (name, family) to answers, evicting expired entries first.
pub struct DnsCache<Item> {
    capacity: usize,
    entries: Mutex<HashMap<(String, Family), Entry<Item>>>,
}

impl<Item: Clone> DnsCache<Item> {
    /// A cache holding at most `capacity` answers (0 disables caching).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The live entry for `name` and `family`, if any.
    pub fn get(&self, name: &str, family: Family, now: Instant) -> Option<Cached<Item>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get(&(name.to_string(), family))?;
        (entry.expires > now).then(|| entry.value.clone())
    }

    /// Stores an answer until `expires`.
    pub fn insert(&self, name: &str, family: Family, value: Cached<Item>, expires: Instant) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let key = (name.to_string(), family);
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            let now = Instant::now();
            entries.retain(|_, e| e.expires > now);
            if entries.len() >= self.capacity
                && let Some(soonest) = entries
                    .iter()
                    .min_by_key(|(_, e)| e.expires)
                    .map(|(k, _)| k.clone())
            {
                entries.remove(&soonest);
            }
        }
        entries.insert(key, Entry { value, expires });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn entries_expire_and_the_cache_stays_bounded() {
        let cache = DnsCache::<()>::new(2);
        let now = Instant::now();
        let addrs: Arc<[IpAddr]> = Arc::from(vec!["192.0.2.1".parse().unwrap()]);
        cache.insert(
            "a",
            Family::V4,
            Cached::Addresses(addrs.clone(), ()),
            now + Duration::from_secs(10),
        );
        cache.insert(
            "b",
            Family::V4,
            Cached::Negative,
            now + Duration::from_secs(5),
        );
        assert!(cache.get("a", Family::V4, now).is_some());
        assert!(cache.get("a", Family::V6, now).is_none());
        assert!(
            cache
                .get("b", Family::V4, now + Duration::from_secs(6))
                .is_none()
        );
        cache.insert(
            "c",
            Family::V4,
            Cached::Negative,
            now + Duration::from_secs(20),
        );
        // "b" expires soonest, so it made room.
        assert!(cache.get("b", Family::V4, now).is_none());
        assert!(cache.get("a", Family::V4, now).is_some());
        assert!(cache.get("c", Family::V4, now).is_some());
    }
}
