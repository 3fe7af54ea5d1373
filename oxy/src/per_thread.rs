//! The runtimes of `server.scheduling: per_thread`: a single-threaded tokio runtime on
//! each worker thread, each accepting from every TCP listener, so that a connection and
//! the tasks it starts stay on the thread that accepted it.

use std::cell::Cell;
use std::net::TcpListener as StdTcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// How many per-thread runtimes run (1 when none do).
static THREADS: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    /// This thread's place among the per-thread runtimes' threads (0 on any other).
    static THREAD_INDEX: Cell<usize> = const { Cell::new(0) };
}

/// State kept per thread (an upstream pool's idle connections) is split into this many
/// shards: one per per-thread runtime, or one.
pub(crate) fn shards() -> usize {
    THREADS.load(Ordering::Relaxed)
}

/// The shard of the current thread, below [`shards`]: a per-thread runtime's thread
/// finds what it put there itself, so its connections' tasks stay on it.
pub(crate) fn current_shard() -> usize {
    THREAD_INDEX.with(Cell::get)
}

/// The worker threads and their runtimes.
pub struct PerThreadRuntimes {
    threads: Vec<(Handle, JoinHandle<()>)>,
    stop: CancellationToken,
}

impl PerThreadRuntimes {
    /// Starts `count` threads named `name`, each running its own runtime until
    /// [`Self::stop`].
    pub fn start(count: usize, name: &str) -> std::io::Result<Self> {
        let mut runtimes = Self {
            threads: Vec::with_capacity(count),
            stop: CancellationToken::new(),
        };
        THREADS.store(count.max(1), Ordering::Relaxed);
        for index in 0..count {
            if let Err(e) = runtimes.start_thread(index, name) {
                runtimes.stop();
                return Err(e);
            }
        }
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
        self.stop.cancel();
        for (_, thread) in self.threads {
            if thread.join().is_err() {
                tracing::error!("a per-thread runtime's thread panicked");
            }
        }
        THREADS.store(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn every_thread_accepts_from_the_listener_with_its_own_shard() {
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
}
