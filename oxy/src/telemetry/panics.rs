//! Panics: counted, logged with their location, and contained to the task that panicked.

use super::framework_metrics::oxy;
use futures_util::FutureExt;
use std::future::Future;
use std::panic::AssertUnwindSafe;

/// Replaces the default panic output with a counted, structured log line. Install it
/// after logging and before Sentry (whose hook runs first and then calls this one).
pub fn install_hook() {
    std::panic::set_hook(Box::new(|info| {
        oxy::panics_total().inc();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(non-string panic payload)".into());
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current();
        tracing::error!(
            panic = %message,
            %location,
            thread = thread.name().unwrap_or("unnamed"),
            "panic"
        );
    }));
}

/// Runs `future`, turning a panic inside it into `Err(())` (already counted and logged by
/// the panic hook) so that only this task ends. Not an `async fn`, which would hold
/// `future` twice (its argument and the one it awaits).
pub fn contain<F: Future>(future: F) -> impl Future<Output = Result<F::Output, ()>> {
    AssertUnwindSafe(future)
        .catch_unwind()
        .map(|caught| caught.map_err(|_| ()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_contained_future_is_held_once_and_a_panic_is_an_error() {
        let state = [7u8; 1024];
        let future = async move { state.iter().map(|&b| usize::from(b)).sum::<usize>() };
        let size = std::mem::size_of_val(&future);
        let contained = contain(future);
        // Every connection's task holds this for its life: not twice the future.
        assert!(std::mem::size_of_val(&contained) < size + 64);
        assert_eq!(contained.await, Ok(7 * 1024));
        let panicking = contain(async { panic!("contained") });
        assert_eq!(panicking.await, Err::<(), ()>(()));
    }
}
