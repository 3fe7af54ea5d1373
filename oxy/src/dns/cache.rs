//! The DNS answer cache: positive and negative entries with clamped lifetimes, bounded,
//! concurrent and allocation-free on a hit.

use super::Family;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

/// A cached outcome of a lookup.
#[derive(Clone)]
pub enum Cached<Item> {
    /// Addresses, with the application's item.
    Addresses(Arc<[IpAddr]>, Item),
    /// The name has no address of this family (or does not exist).
    Negative,
}

#[derive(Clone)]
struct Entry<Item> {
    value: Cached<Item>,
    expires: Instant,
}

/// A cache key: the name and the family.
#[derive(PartialEq, Eq, Hash)]
struct Key(String, Family);

/// A key as a lookup holds it, without copying the name. It hashes as [`Key`] does.
#[derive(Hash)]
struct Lookup<'a>(&'a str, Family);

impl quick_cache::Equivalent<Key> for Lookup<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        self.0 == key.0 && self.1 == key.1
    }
}

/// A bounded concurrent map from (name, family) to answers: sharded (a hit takes no
/// global lock), lookups by `&str` (no copy of the name), and O(1) eviction (quick_cache's
/// S3-FIFO) when full. Expired entries are never returned, and are replaced or evicted.
pub struct DnsCache<Item> {
    entries: Option<quick_cache::sync::Cache<Key, Entry<Item>>>,
}

impl<Item: Clone> DnsCache<Item> {
    /// A cache holding at most `capacity` answers (0 disables caching).
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: (capacity > 0).then(|| quick_cache::sync::Cache::new(capacity)),
        }
    }

    /// The live entry for `name` and `family`, if any.
    pub fn get(&self, name: &str, family: Family, now: Instant) -> Option<Cached<Item>> {
        let entry = self.entries.as_ref()?.get(&Lookup(name, family))?;
        (entry.expires > now).then_some(entry.value)
    }

    /// Stores an answer until `expires`.
    pub fn insert(&self, name: &str, family: Family, value: Cached<Item>, expires: Instant) {
        if let Some(entries) = &self.entries {
            entries.insert(Key(name.to_string(), family), Entry { value, expires });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn entries_expire() {
        let cache = DnsCache::<()>::new(16);
        let now = Instant::now();
        let addrs: Arc<[IpAddr]> = Arc::from(vec!["192.0.2.1".parse().unwrap()]);
        let later = now + Duration::from_secs(10);
        cache.insert("a", Family::V4, Cached::Addresses(addrs, ()), later);
        cache.insert(
            "b",
            Family::V4,
            Cached::Negative,
            now + Duration::from_secs(5),
        );
        assert!(cache.get("a", Family::V4, now).is_some());
        assert!(cache.get("a", Family::V6, now).is_none());
        assert!(cache.get("b", Family::V4, now).is_some());
        assert!(
            cache
                .get("b", Family::V4, now + Duration::from_secs(6))
                .is_none()
        );
        assert!(DnsCache::<()>::new(0).get("a", Family::V4, now).is_none());
    }

    #[test]
    fn the_cache_stays_bounded() {
        let cache = DnsCache::<()>::new(100);
        let expires = Instant::now() + Duration::from_secs(60);
        for i in 0..10_000 {
            cache.insert(&format!("name{i}"), Family::V4, Cached::Negative, expires);
        }
        let held = cache.entries.as_ref().map_or(0, |c| c.len());
        assert!(held <= 110, "{held} entries");
    }
}
