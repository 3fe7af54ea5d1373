//! Per-thread shards of the metrics every request updates: a thread counts into a slot
//! of its own, padded to cache lines of its own, and gathering the metrics (`/metrics`)
//! first adds every slot into its Prometheus metric, so worker threads do not bounce
//! one metric's cache line between them. (Threads beyond the slot count share slots.)

use crossbeam_utils::CachePadded;
use prometheus::local::LocalHistogram;
use std::cell::Cell;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};

use super::metrics::{Counter, Gauge, Histogram};

/// Slots per sharded metric: one per CPU, or per per-thread runtime if there are more
/// (at most 64); threads beyond that share.
static SLOTS: LazyLock<usize> = LazyLock::new(|| {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    cpus.max(crate::per_thread::shards()).min(64)
});

/// The next slot handed to a thread that asks for one the first time.
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's slot, taken round robin the first time it counts.
    static SLOT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The current thread's slot, below [`SLOTS`].
fn slot() -> usize {
    SLOT.with(|slot| {
        slot.get().unwrap_or_else(|| {
            let taken = NEXT_SLOT.fetch_add(1, Ordering::Relaxed) % *SLOTS;
            slot.set(Some(taken));
            taken
        })
    })
}

/// What one slot holds until gathering adds it to the shared metric.
trait Pending: Send + 'static {
    /// Adds what this slot counted to the shared metric and starts again from nothing.
    fn flush(&mut self);
}

/// The sharded metrics alive, flushed by [`flush_all`].
static SHARDED: LazyLock<Mutex<Vec<Weak<dyn Flush>>>> = LazyLock::new(Mutex::default);

trait Flush: Send + Sync {
    fn flush(&self);
}

struct Slots<T: Pending>(Box<[CachePadded<Mutex<T>>]>);

impl<T: Pending> Flush for Slots<T> {
    /// Every slot locked first, then added: a gauge moved up on one thread and down on
    /// another is never shown with only one of the two.
    fn flush(&self) {
        let mut slots: Vec<_> = (self.0.iter())
            .map(|slot| slot.lock().unwrap_or_else(PoisonError::into_inner))
            .collect();
        for slot in &mut slots {
            slot.flush();
        }
    }
}

impl<T: Pending> Drop for Slots<T> {
    /// What the slots still hold reaches the shared metric, which can outlive them.
    fn drop(&mut self) {
        self.flush();
    }
}

/// Adds what every sharded metric's slots hold to the shared metrics: called before
/// the registry is gathered.
pub fn flush_all() {
    let mut sharded = SHARDED.lock().unwrap_or_else(PoisonError::into_inner);
    sharded.retain(|metric| match metric.upgrade() {
        Some(metric) => {
            metric.flush();
            true
        }
        None => false,
    });
}

/// A metric kept in per-thread slots of `T`, each made by the same function.
struct Sharded<T: Pending>(Arc<Slots<T>>);

impl<T: Pending> Sharded<T> {
    /// A sharded metric whose every slot starts as `make()`.
    fn new(make: impl Fn() -> T) -> Self {
        let slots = Arc::new(Slots(
            (0..*SLOTS)
                .map(|_| CachePadded::new(Mutex::new(make())))
                .collect(),
        ));
        let weak: Weak<dyn Flush> = Arc::downgrade(&slots) as Weak<dyn Flush>;
        SHARDED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(weak);
        Self(slots)
    }

    /// Updates the current thread's slot.
    fn with(&self, update: impl FnOnce(&mut T)) {
        let slot = &self.0.0[slot() % self.0.0.len()];
        update(&mut slot.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

/// A gauge's change not yet added to it.
struct GaugeDelta {
    gauge: Gauge,
    delta: i64,
}

impl Pending for GaugeDelta {
    fn flush(&mut self) {
        if self.delta != 0 {
            self.gauge.add(std::mem::take(&mut self.delta));
        }
    }
}

/// A gauge moved by many threads.
pub struct ShardedGauge(Sharded<GaugeDelta>);

impl ShardedGauge {
    /// Shards of `gauge`.
    pub fn new(gauge: Gauge) -> Self {
        Self(Sharded::new(|| GaugeDelta {
            gauge: gauge.clone(),
            delta: 0,
        }))
    }

    /// Adds `delta` (negative to subtract).
    pub fn add(&self, delta: i64) {
        self.0.with(|pending| pending.delta += delta);
    }
}

impl Pending for LocalHistogram {
    fn flush(&mut self) {
        LocalHistogram::flush(self);
    }
}

/// A histogram observed by many threads.
pub struct ShardedHistogram(Sharded<LocalHistogram>);

impl ShardedHistogram {
    /// Shards of `histogram`.
    pub fn new(histogram: &Histogram) -> Self {
        Self(Sharded::new(|| histogram.local()))
    }

    /// Observes `value`.
    pub fn observe(&self, value: f64) {
        self.0.with(|local| local.observe(value));
    }
}

/// Counters told apart by a key, each count not yet added to its counter.
struct CountsByKey<K> {
    counts: HashMap<K, (Counter, u64), foldhash::fast::RandomState>,
}

impl<K: Send + 'static> Pending for CountsByKey<K> {
    fn flush(&mut self) {
        for (counter, pending) in self.counts.values_mut() {
            if *pending > 0 {
                counter.inc_by(std::mem::take(pending));
            }
        }
    }
}

/// Counters by key, counted by many threads; a key's counter is made (looked up by
/// its labels) once per slot, when the slot first counts it.
pub struct ShardedCounters<K: Send + 'static>(Sharded<CountsByKey<K>>);

impl<K: Hash + Eq + Send + 'static> Default for ShardedCounters<K> {
    fn default() -> Self {
        Self(Sharded::new(|| CountsByKey {
            counts: HashMap::default(),
        }))
    }
}

impl<K: Hash + Eq + Send + 'static> ShardedCounters<K> {
    /// Counts one for `key`, whose counter `make` gives the first time.
    pub fn inc(&self, key: K, make: impl FnOnce() -> Counter) {
        self.0.with(|pending| {
            pending.counts.entry(key).or_insert_with(|| (make(), 0)).1 += 1;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_add_up_when_flushed_from_every_thread() {
        let counter = Counter::new("sharded_test_total", "a test counter").unwrap();
        let gauge = Gauge::new("sharded_test_gauge", "a test gauge").unwrap();
        let histogram = Histogram::with_opts(prometheus::HistogramOpts::new(
            "sharded_test_seconds",
            "a test histogram",
        ))
        .unwrap();
        let counters = Arc::new(ShardedCounters::default());
        let moved = Arc::new(ShardedGauge::new(gauge.clone()));
        let observed = Arc::new(ShardedHistogram::new(&histogram));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (counters, moved, observed) =
                    (counters.clone(), moved.clone(), observed.clone());
                let counter = counter.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        counters.inc(7u32, || counter.clone());
                        moved.add(2);
                        moved.add(-1);
                        observed.observe(0.5);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        flush_all();
        assert_eq!(counter.get(), 4000);
        assert_eq!(gauge.get(), 4000);
        assert_eq!(histogram.get_sample_count(), 4000);
        assert_eq!(histogram.get_sample_sum(), 2000.0);
        flush_all();
        assert_eq!(counter.get(), 4000, "a flush adds each count once");
    }

    #[test]
    fn a_dropped_metric_keeps_what_it_counted() {
        let gauge = Gauge::new("sharded_drop_test", "a test gauge").unwrap();
        let sharded = ShardedGauge::new(gauge.clone());
        sharded.add(3);
        drop(sharded);
        assert_eq!(gauge.get(), 3);
        flush_all();
        assert_eq!(gauge.get(), 3);
    }
}
