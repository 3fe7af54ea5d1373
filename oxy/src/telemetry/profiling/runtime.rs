//! `/debug/runtime`: the work-stealing tokio runtime's figures (workers, live tasks,
//! queue depths, busy ratio since the previous call), each per-thread runtime's (live
//! tasks, busy time, parks) and those of connection tasks (polls, poll and scheduling
//! times), from tokio-metrics, as JSON.

use std::sync::{Mutex, OnceLock};

/// Connection tasks, instrumented once profiling is enabled.
static CONNECTION_TASKS: OnceLock<tokio_metrics::TaskMonitor> = OnceLock::new();
/// The runtime monitor's intervals: each report covers the time since the previous one.
static INTERVALS: OnceLock<Mutex<tokio_metrics::RuntimeIntervals>> = OnceLock::new();

/// Starts monitoring the current runtime and connection tasks.
pub(crate) fn start() {
    let monitor = tokio_metrics::RuntimeMonitor::new(&tokio::runtime::Handle::current());
    let _ = INTERVALS.set(Mutex::new(monitor.intervals()));
    let _ = CONNECTION_TASKS.set(tokio_metrics::TaskMonitor::new());
}

/// The monitor connection tasks are counted in, once profiling is on.
pub(crate) fn connection_tasks() -> Option<&'static tokio_metrics::TaskMonitor> {
    CONNECTION_TASKS.get()
}

/// The report, as JSON.
pub(crate) fn report() -> String {
    let handle = tokio::runtime::Handle::current();
    let metrics = handle.metrics();
    let interval = INTERVALS
        .get()
        .and_then(|i| i.lock().unwrap_or_else(|p| p.into_inner()).next());
    let since_last = interval.map(|m| {
        let capacity = m.elapsed.as_secs_f64() * m.workers_count as f64;
        serde_json::json!({
            "elapsed_s": m.elapsed.as_secs_f64(),
            "busy_ratio": if capacity > 0.0 { m.total_busy_duration.as_secs_f64() / capacity } else { 0.0 },
            "parks": m.total_park_count,
            "busy_s": m.total_busy_duration.as_secs_f64(),
        })
    });
    let tasks = CONNECTION_TASKS.get().map(|monitor| {
        let t = monitor.cumulative();
        serde_json::json!({
            "instrumented": t.instrumented_count,
            "dropped": t.dropped_count,
            "polls": t.total_poll_count,
            "poll_s": t.total_poll_duration.as_secs_f64(),
            "slow_polls": t.total_slow_poll_count,
            "scheduled_s": t.total_scheduled_duration.as_secs_f64(),
            "mean_poll_us": t.mean_poll_duration().as_secs_f64() * 1e6,
        })
    });
    let workers: Vec<_> = (0..metrics.num_workers())
        .map(|w| {
            serde_json::json!({
                "parks": metrics.worker_park_count(w),
                "busy_s": metrics.worker_total_busy_duration(w).as_secs_f64(),
            })
        })
        .collect();
    // Under `scheduling: per_thread`, these serve the TCP connections.
    let per_thread: Vec<_> = crate::per_thread::handles()
        .iter()
        .map(|runtime| {
            let metrics = runtime.metrics();
            serde_json::json!({
                "alive_tasks": metrics.num_alive_tasks(),
                "parks": metrics.worker_park_count(0),
                "busy_s": metrics.worker_total_busy_duration(0).as_secs_f64(),
            })
        })
        .collect();
    serde_json::json!({
        "workers": metrics.num_workers(),
        "alive_tasks": metrics.num_alive_tasks(),
        "global_queue_depth": metrics.global_queue_depth(),
        "per_worker": workers,
        "since_last_report": since_last,
        "connection_tasks": tasks,
        "per_thread": per_thread,
    })
    .to_string()
}
