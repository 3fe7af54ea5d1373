//! Minted leaves by server name: bounded, each reused for a while below its lifetime, and
//! minted once when many connections ask for a new name at the same time.

use super::mint::LeafName;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// One name's leaf, minted by the first connection that asked for it.
struct Slot<T> {
    leaf: Arc<OnceCell<Arc<T>>>,
    created: Instant,
}

/// Leaves by name, at most `capacity` of them, each reused for `ttl`.
pub struct LeafCache<T> {
    slots: Mutex<HashMap<LeafName, Slot<T>>>,
    capacity: usize,
    ttl: Duration,
}

impl<T> LeafCache<T> {
    /// An empty cache.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            ttl,
        }
    }

    /// How many names have a slot.
    pub fn len(&self) -> usize {
        self.slots.lock().map_or(0, |slots| slots.len())
    }

    /// The leaf for `name`: the cached one while it is younger than the TTL, else the one
    /// `mint` makes. Callers asking for the same new name at once share one `mint`; a
    /// failed `mint` is not cached.
    pub async fn get_or_mint<E, F>(&self, name: &LeafName, mint: F) -> Result<Arc<T>, E>
    where
        F: Future<Output = Result<T, E>>,
    {
        let cell = {
            let Ok(mut slots) = self.slots.lock() else {
                return mint.await.map(Arc::new);
            };
            let now = Instant::now();
            let fresh = slots
                .get(name)
                .filter(|slot| now.duration_since(slot.created) < self.ttl)
                .map(|slot| slot.leaf.clone());
            match fresh {
                Some(cell) => cell,
                None => {
                    if !slots.contains_key(name) && slots.len() >= self.capacity {
                        evict(&mut slots, now, self.ttl);
                    }
                    let cell = Arc::new(OnceCell::new());
                    let slot = Slot {
                        leaf: cell.clone(),
                        created: now,
                    };
                    slots.insert(name.clone(), slot);
                    cell
                }
            }
        };
        cell.get_or_try_init(|| async { mint.await.map(Arc::new) })
            .await
            .cloned()
    }
}

/// Makes room for one slot: drops the expired ones, or else the oldest.
fn evict<T>(slots: &mut HashMap<LeafName, Slot<T>>, now: Instant, ttl: Duration) {
    let before = slots.len();
    slots.retain(|_, slot| now.duration_since(slot.created) < ttl);
    if slots.len() < before {
        return;
    }
    let oldest = slots
        .iter()
        .min_by_key(|(_, slot)| slot.created)
        .map(|(name, _)| name.clone());
    if let Some(name) = oldest {
        slots.remove(&name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn name(n: &str) -> LeafName {
        LeafName::Dns(n.into())
    }

    #[tokio::test]
    async fn concurrent_first_requests_mint_once() {
        let cache = Arc::new(LeafCache::new(10, Duration::from_secs(60)));
        let mints = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (cache, mints) = (cache.clone(), mints.clone());
                tokio::spawn(async move {
                    let mint = async {
                        mints.fetch_add(1, Ordering::SeqCst);
                        tokio::task::yield_now().await;
                        Ok::<_, ()>(7)
                    };
                    cache.get_or_mint(&name("a.test"), mint).await
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(*task.await.unwrap().unwrap(), 7);
        }
        assert_eq!(mints.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn bounded_and_expiring() {
        let cache = LeafCache::new(2, Duration::from_millis(0));
        for n in ["a", "b", "c"] {
            cache
                .get_or_mint(&name(n), async { Ok::<_, ()>(1) })
                .await
                .unwrap();
        }
        assert!(cache.len() <= 2);
        // A TTL of zero mints again every time.
        let again = cache
            .get_or_mint(&name("c"), async { Ok::<_, ()>(2) })
            .await;
        assert_eq!(*again.unwrap(), 2);
    }

    #[tokio::test]
    async fn failures_are_not_cached() {
        let cache = LeafCache::new(2, Duration::from_secs(60));
        let failed = cache
            .get_or_mint(&name("a"), async { Err::<u8, _>("no") })
            .await;
        assert!(failed.is_err());
        let ok = cache
            .get_or_mint(&name("a"), async { Ok::<_, &str>(3) })
            .await;
        assert_eq!(*ok.unwrap(), 3);
    }
}
