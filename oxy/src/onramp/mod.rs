//! On-ramps: the listeners that accept traffic for endpoints.

pub mod bind;
pub mod proxy_protocol;
pub mod quic;
pub mod tcp;
pub mod udp;

use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

/// One of an endpoint's `max_connections` slots (`Ok(None)` when it has no limit); an
/// error when all are taken.
pub(crate) fn take_slot(
    slots: &Option<Arc<Semaphore>>,
) -> Result<Option<OwnedSemaphorePermit>, TryAcquireError> {
    slots
        .as_ref()
        .map(|slots| slots.clone().try_acquire_owned())
        .transpose()
}
