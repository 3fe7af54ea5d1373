//! Telemetry: metrics, the metrics and health listener, logs, panics and Sentry.

pub mod audit;
pub(crate) mod distributed_tracing;
pub mod framework_metrics;
pub mod health;
pub mod listeners;
pub mod logging;
pub mod metrics;
pub mod panics;
pub(crate) mod profiling;
pub mod sentry_reports;
pub mod server;
pub mod sharded;
