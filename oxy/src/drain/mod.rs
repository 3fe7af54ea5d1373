//! Graceful shutdown: stop accepting, let open connections finish, then close the rest.

mod signal;

pub use signal::Fired;
use signal::Signal;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::task::TaskTracker;

/// Shared by listeners and connection tasks to follow the shutdown sequence. A clone is
/// one reference count (every connection and tunnel holds one).
#[derive(Clone, Default)]
pub struct Drain(Arc<Sequence>);

/// The steps of the shutdown sequence.
#[derive(Default)]
struct Sequence {
    stop_accepting: Signal,
    force_close: Signal,
    handed_over: Signal,
    devices_ours: Signal,
    connections: TaskTracker,
    /// Tasks that serve a socket only one process serves at a time (telemetry, control).
    served_until_handed_over: TaskTracker,
}

impl Drain {
    /// A drain that has not started.
    pub fn new() -> Self {
        Self::default()
    }

    /// Completes when listeners must stop accepting.
    pub fn stopping(&self) -> Fired<'_> {
        self.0.stop_accepting.fired()
    }

    /// Whether listeners have been told to stop accepting.
    pub fn is_stopping(&self) -> bool {
        self.0.stop_accepting.has_fired()
    }

    /// Completes when a successor has taken over this process's sockets: what reads a
    /// shared device or serves the telemetry and control sockets stops then.
    pub fn handed_over(&self) -> Fired<'_> {
        self.0.handed_over.fired()
    }

    /// Completes once devices shared with a predecessor (TUN) are this process's to read:
    /// at once for a process started by hand, after the predecessor's hand-over for a
    /// successor (until then the predecessor reads them).
    pub fn devices_ours(&self) -> Fired<'_> {
        self.0.devices_ours.fired()
    }

    /// Marks shared devices as this process's to read.
    pub fn set_devices_ours(&self) {
        self.0.devices_ours.fire();
    }

    /// Runs `task`, which serves a socket that only one process serves at a time (the
    /// telemetry or control listener), until [`Drain::handed_over`] completes.
    pub fn spawn_until_handed_over<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.0.served_until_handed_over.spawn(task);
    }

    /// Marks the sockets as handed over to a successor, and waits until the tasks run by
    /// [`Drain::spawn_until_handed_over`] have stopped: from then on only the successor
    /// accepts on those sockets.
    pub async fn hand_over(&self) {
        self.0.handed_over.fire();
        self.0.served_until_handed_over.close();
        self.0.served_until_handed_over.wait().await;
    }

    /// Completes when open connections must close now: the drain period is over. Held
    /// by every tunnel while it lives.
    pub fn force_closing(&self) -> Fired<'_> {
        self.0.force_close.fired()
    }

    /// Runs a connection task that the drain waits for.
    pub fn spawn_connection<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.spawn_connection_on(None, task);
    }

    /// Runs a connection task that the drain waits for, on `runtime` (else on the
    /// current runtime).
    pub fn spawn_connection_on<F>(&self, runtime: Option<&tokio::runtime::Handle>, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let task = Box::pin(task);
        match crate::telemetry::profiling::runtime::connection_tasks() {
            Some(monitor) => self.spawn_tracked(runtime, monitor.instrument(task)),
            None => self.spawn_tracked(runtime, task),
        }
    }

    fn spawn_tracked<F>(&self, runtime: Option<&tokio::runtime::Handle>, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        match runtime {
            Some(runtime) => self.0.connections.spawn_on(task, runtime),
            None => self.0.connections.spawn(task),
        };
    }

    /// Stops accepting, waits up to `timeout` for connections to end, then tells the
    /// rest to close and waits briefly for them. Returns how many were cut short.
    pub async fn drain(&self, timeout: Duration) -> usize {
        self.0.stop_accepting.fire();
        self.0.connections.close();
        if tokio::time::timeout(timeout, self.0.connections.wait())
            .await
            .is_ok()
        {
            return 0;
        }
        let cut = self.0.connections.len();
        self.0.force_close.fire();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.0.connections.wait()).await;
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn hand_over_returns_once_the_tasks_served_until_then_have_stopped() {
        let drain = Drain::new();
        let stopped = Arc::new(AtomicBool::new(false));
        let (task_drain, task_stopped) = (drain.clone(), stopped.clone());
        drain.spawn_until_handed_over(async move {
            task_drain.handed_over().await;
            // A listener's task winds up after the signal, over more than one poll.
            tokio::task::yield_now().await;
            task_stopped.store(true, Ordering::SeqCst);
        });
        tokio::task::yield_now().await;
        assert!(!stopped.load(Ordering::SeqCst));
        drain.hand_over().await;
        assert!(stopped.load(Ordering::SeqCst));
    }
}
