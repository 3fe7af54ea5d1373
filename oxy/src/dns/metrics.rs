//! DNS metrics.

use crate::metrics;

/// Name resolution.
#[metrics]
pub mod oxy_dns {
    /// Lookups asked for, by address family.
    pub fn lookups_total(family: &str) -> Counter;

    /// Cache lookups, by result (`hit`, `miss`).
    pub fn cache_total(result: &str) -> Counter;

    /// Lookups that found no address or failed, by kind (`no_address`, `error`,
    /// `timeout`, `vetoed`).
    pub fn failures_total(kind: &str) -> Counter;

    /// Time for one resolver group to answer, by group.
    #[buckets(0.001, 0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)]
    pub fn lookup_duration_seconds(group: &str) -> Histogram;
}
