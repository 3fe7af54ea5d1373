//! The runtimes of `server.scheduling: per_thread`: a single-threaded tokio runtime on
//! each worker thread, each accepting from every TCP listener and serving a connection
//! on the thread serving the fewest ([`Balance`]), so that a connection and the tasks
//! it starts stay on one thread and the threads share the connections evenly.

use crate::metrics;
use crossbeam_utils::CachePadded;
use std::cell::Cell;
use std::net::TcpListener as StdTcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// The running per-thread runtimes, by thread index (none under work stealing): their
/// count sizes per-thread state, and `/debug/runtime` reports each.
static RUNNING: Mutex<Vec<Handle>> = Mutex::new(Vec::new());

thread_local! {
    /// This thread's place among the per-thread runtimes' threads (0 on any other).
    static THREAD_INDEX: Cell<usize> = const { Cell::new(0) };
}

/// State kept per thread (an upstream pool's idle connections) is split into this many
/// shards: one per per-thread runtime, or one.
pub(crate) fn shards() -> usize {
    running().len().max(1)
}

/// The shard of the current thread, below [`shards`]: a per-thread runtime's thread
/// finds what it put there itself, so its connections' tasks stay on it.
pub(crate) fn current_shard() -> usize {
    THREAD_INDEX.with(Cell::get)
}

/// The running per-thread runtimes, by thread index (none under work stealing).
pub(crate) fn handles() -> Vec<Handle> {
    running().clone()
}

fn running() -> std::sync::MutexGuard<'static, Vec<Handle>> {
    RUNNING.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The per-thread runtimes.
#[metrics]
pub mod oxy_per_thread {
    /// Connections each per-thread runtime serves now, by thread index
    /// (`server.scheduling: per_thread`).
    pub fn connections(thread: usize) -> Gauge;
}

/// The worker threads and their runtimes.
pub struct PerThreadRuntimes {
    threads: Vec<(Handle, JoinHandle<()>)>,
    stop: CancellationToken,
}

/// Where the connections a per-thread runtime accepts are served. A burst of new
/// connections wakes every thread waiting in `accept`, and the first to run would take
/// the whole burst (measured: 128 connections opened at once all went to one of two
/// threads, which then did all the work); so the accepting thread hands a connection to
/// the thread serving the fewest, itself on a tie.
pub struct Balance {
    threads: Box<[Thread]>,
}

struct Thread {
    handle: Handle,
    /// Connections the thread serves, read by every accepting thread.
    serving: CachePadded<AtomicUsize>,
    /// `oxy_per_thread_connections` of the thread.
    gauge: prometheus::IntGauge,
}

/// A connection counted on the thread that serves it, until this is dropped.
pub struct Placement {
    balance: Arc<Balance>,
    index: usize,
}

impl Balance {
    /// Counts a connection the current thread accepted on the thread serving the fewest
    /// now (the current one on a tie).
    pub fn place(self: &Arc<Self>) -> Placement {
        let here = current_shard() % self.threads.len();
        let serving = |i: usize| self.threads[i].serving.load(Ordering::Relaxed);
        // The first of the fewest, this thread first among equals.
        let index = (0..self.threads.len())
            .min_by_key(|&i| (serving(i), i != here))
            .unwrap_or(here);
        let thread = &self.threads[index];
        thread.serving.fetch_add(1, Ordering::Relaxed);
        thread.gauge.inc();
        Placement {
            balance: self.clone(),
            index,
        }
    }
}

impl Placement {
    /// The runtime of the thread that serves the connection, when that is not the
    /// current thread.
    pub fn elsewhere(&self) -> Option<&Handle> {
        (self.index != current_shard()).then(|| &self.balance.threads[self.index].handle)
    }
}

impl Drop for Placement {
    fn drop(&mut self) {
        let thread = &self.balance.threads[self.index];
        thread.serving.fetch_sub(1, Ordering::Relaxed);
        thread.gauge.dec();
    }
}

impl PerThreadRuntimes {
    /// Starts `count` threads named `name`, each running its own runtime until
    /// [`Self::stop`].
    pub fn start(count: usize, name: &str) -> std::io::Result<Self> {
        let mut runtimes = Self {
            threads: Vec::with_capacity(count),
            stop: CancellationToken::new(),
        };
        for index in 0..count {
            if let Err(e) = runtimes.start_thread(index, name) {
                runtimes.stop();
                return Err(e);
            }
        }
        *running() = runtimes.threads.iter().map(|(h, _)| h.clone()).collect();
        Ok(runtimes)
    }

    /// Starts the thread of index `index` and its runtime.
    fn start_thread(&mut self, index: usize, name: &str) -> std::io::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let stopped = self.stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                THREAD_INDEX.with(|cell| cell.set(index));
                runtime.block_on(stopped.cancelled());
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        self.threads.push((handle, thread));
        Ok(())
    }

    /// Where the threads' accepted connections are served: `None` for one thread.
    pub fn balance(&self) -> Option<Arc<Balance>> {
        let threads = self
            .threads
            .iter()
            .enumerate()
            .map(|(index, (handle, _))| Thread {
                handle: handle.clone(),
                serving: CachePadded::new(AtomicUsize::new(0)),
                gauge: oxy_per_thread::connections(index),
            });
        (self.threads.len() > 1).then(|| {
            Arc::new(Balance {
                threads: threads.collect(),
            })
        })
    }

    /// Runs `serve` on every thread, each with its own handle on `listener` (a copy of
    /// the socket, registered with that thread's runtime): a new connection wakes every
    /// thread waiting in `accept`, and one takes it.
    pub fn serve_tcp<F, S>(&self, listener: StdTcpListener, serve: S) -> std::io::Result<()>
    where
        S: Fn(tokio::net::TcpListener) -> F,
        F: Future<Output = ()> + Send + 'static,
    {
        for (handle, _) in &self.threads {
            let copy = listener.try_clone()?;
            let _entered = handle.enter();
            let tokio_listener = tokio::net::TcpListener::from_std(copy)?;
            handle.spawn(serve(tokio_listener));
        }
        Ok(())
    }

    /// Stops every thread's runtime (what still runs there is dropped) and waits for the
    /// threads to end.
    pub fn stop(self) {
        running().clear();
        self.stop.cancel();
        for (_, thread) in self.threads {
            if thread.join().is_err() {
                tracing::error!("a per-thread runtime's thread panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The thread count is process-wide: these tests start runtimes one at a time.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

    #[test]
    fn every_thread_accepts_from_the_listener_with_its_own_shard() {
        let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        let runtimes = PerThreadRuntimes::start(2, "per-thread-test").unwrap();
        assert_eq!(shards(), 2);
        let listener = StdTcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (done, accepted) = std::sync::mpsc::channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        runtimes
            .serve_tcp(listener, |l| {
                let (seen, done) = (seen.clone(), done.clone());
                // Each thread's loop takes one connection and ends, so the second
                // connection can only be the other thread's.
                async move {
                    let (_stream, _) = l.accept().await.unwrap();
                    seen.lock().unwrap().push(current_shard());
                    done.send(()).unwrap();
                }
            })
            .unwrap();
        let _first = std::net::TcpStream::connect(addr).unwrap();
        accepted.recv().unwrap();
        let _second = std::net::TcpStream::connect(addr).unwrap();
        accepted.recv().unwrap();
        let mut shards_seen = seen.lock().unwrap().clone();
        shards_seen.sort();
        assert_eq!(shards_seen, [0, 1]);
        runtimes.stop();
    }

    #[test]
    fn connections_go_to_the_thread_serving_the_fewest() {
        let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        let runtimes = PerThreadRuntimes::start(2, "balance-test").unwrap();
        let balance = runtimes.balance().unwrap();
        // This test's thread counts as thread 0, as any thread outside the runtimes.
        let first = balance.place();
        assert!(
            first.elsewhere().is_none(),
            "a tie stays on the accepting thread"
        );
        let second = balance.place();
        assert!(second.elsewhere().is_some(), "thread 1 serves fewer");
        let third = balance.place();
        assert_eq!(third.index, 0);
        assert_eq!(oxy_per_thread::connections(0).get(), 2);
        assert_eq!(oxy_per_thread::connections(1).get(), 1);
        drop((first, third));
        let fourth = balance.place();
        assert_eq!(fourth.index, 0, "thread 1 no longer serves fewer");
        drop((second, fourth));
        assert_eq!(oxy_per_thread::connections(0).get(), 0);
        assert_eq!(oxy_per_thread::connections(1).get(), 0);
        runtimes.stop();
        let one = PerThreadRuntimes::start(1, "balance-test").unwrap();
        assert!(one.balance().is_none(), "one thread has nothing to balance");
        one.stop();
    }
}
