//! The process's readiness as `/health` reports it.

use std::sync::atomic::{AtomicU8, Ordering};

/// Where the process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    /// Settings loaded; endpoints not all bound yet.
    Starting,
    /// Every endpoint is bound and accepting.
    Ready,
    /// Shutting down: no longer accepting, finishing open connections.
    Draining,
}

/// Shared, lock-free readiness state.
#[derive(Debug, Default)]
pub struct Health(AtomicU8);

impl Health {
    /// Records a new state.
    pub fn set(&self, state: HealthState) {
        self.0.store(state as u8, Ordering::Release);
    }

    /// The current state.
    pub fn get(&self) -> HealthState {
        match self.0.load(Ordering::Acquire) {
            1 => HealthState::Ready,
            2 => HealthState::Draining,
            _ => HealthState::Starting,
        }
    }
}
