//! One timer for a tunnel's two deadlines: the idle timeout, which traffic moves, and
//! the maximum lifetime. Shared by the TCP pump and the UDP flows.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Which deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expired {
    /// No traffic for the idle timeout.
    Idle,
    /// The maximum lifetime.
    Lifetime,
}

pin_project_lite::pin_project! {
    /// The idle and lifetime deadlines of one tunnel, on one timer set for the nearer.
    pub(super) struct Deadlines {
        #[pin]
        timer: Sleep,
        idle: Duration,
        lifetime_end: Option<Instant>,
    }
}

impl Deadlines {
    /// The deadlines of a tunnel that starts at `start`.
    pub(super) fn new(start: Instant, idle: Duration, max_lifetime: Option<Duration>) -> Self {
        let lifetime_end = max_lifetime.and_then(|max| start.checked_add(max));
        Self {
            timer: tokio::time::sleep_until(nearer(start + idle, lifetime_end)),
            idle,
            lifetime_end,
        }
    }

    /// Ready with the deadline that has passed; `last_traffic` tells when traffic last
    /// passed (asked only when the timer fires). Until then the timer is set again, when
    /// it fires early, for the nearer deadline.
    pub(super) fn poll_expired(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        last_traffic: impl Fn() -> Instant,
    ) -> Poll<Expired> {
        let mut this = self.project();
        while this.timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            if this.lifetime_end.is_some_and(|end| now >= end) {
                return Poll::Ready(Expired::Lifetime);
            }
            let idle_due = last_traffic() + *this.idle;
            if now >= idle_due {
                return Poll::Ready(Expired::Idle);
            }
            this.timer
                .as_mut()
                .reset(nearer(idle_due, *this.lifetime_end));
        }
        Poll::Pending
    }
}

/// `at`, or the lifetime's end when that comes first.
fn nearer(at: Instant, lifetime_end: Option<Instant>) -> Instant {
    lifetime_end.map_or(at, |end| end.min(at))
}
