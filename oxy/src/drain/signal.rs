//! A one-way event that many tasks wait for (each step of the drain): firing it wakes
//! them all, and a waiter polled again by the same task reads one atomic, where a
//! `CancellationToken`'s future took two locks shared by every connection on each poll.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

/// An event that happens once.
#[derive(Debug, Default)]
pub(super) struct Signal {
    fired: AtomicBool,
    notify: Notify,
}

impl Signal {
    /// Fires the signal: every waiter completes, and every later one at once.
    pub(super) fn fire(&self) {
        self.fired.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Whether the signal has fired.
    pub(super) fn has_fired(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }

    /// Completes once the signal has fired.
    pub(super) fn fired(&self) -> Fired<'_> {
        Fired {
            signal: self,
            notified: self.notify.notified(),
            registered: None,
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Signal::fired`].
    pub struct Fired<'a> {
        signal: &'a Signal,
        // Made before the first poll, so a `fire` after that completes it even before
        // it is registered.
        #[pin]
        notified: Notified<'a>,
        // The waker `notified` holds, registered under the `Notify`'s lock.
        registered: Option<Waker>,
    }
}

impl Future for Fired<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if this.signal.has_fired() {
            return Poll::Ready(());
        }
        if let Some(registered) = this.registered
            && registered.will_wake(cx.waker())
        {
            // Firing wakes this very waker: nothing to lock for.
            return Poll::Pending;
        }
        if this.notified.poll(cx).is_ready() {
            return Poll::Ready(());
        }
        *this.registered = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn every_waiter_completes_once_fired_and_later_ones_at_once() {
        let signal = Arc::new(Signal::default());
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let signal = signal.clone();
                tokio::spawn(async move { signal.fired().await })
            })
            .collect();
        // Each waiter has been polled (and registered) before the signal fires.
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        assert!(!signal.has_fired());
        let unpolled = signal.fired();
        signal.fire();
        for waiter in waiters {
            waiter.await.unwrap();
        }
        unpolled.await;
        signal.fired().await;
        assert!(signal.has_fired());
    }

    #[tokio::test]
    async fn a_waiter_polled_again_from_another_task_is_still_woken() {
        let signal: &'static Signal = Box::leak(Box::default());
        let mut fired = Box::pin(signal.fired());
        // Registered with this task's waker, then moved to another task.
        assert!(futures_util::poll!(fired.as_mut()).is_pending());
        let waiter = tokio::spawn(fired);
        tokio::task::yield_now().await;
        signal.fire();
        tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
            .await
            .expect("the waiter was not woken")
            .unwrap();
    }
}
