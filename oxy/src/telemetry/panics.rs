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
/// the panic hook) so that only this task ends.
pub async fn contain<F: Future>(future: F) -> Result<F::Output, ()> {
    AssertUnwindSafe(future)
        .catch_unwind()
        .await
        .map_err(|_| ())
}
