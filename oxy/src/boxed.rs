//! Boxing large futures without copying them: the box is allocated first and the
//! future made straight into it, where `Box::pin(fut)` makes the future on the stack
//! and then copies every byte of it (a request's future is several KiB) into the box.

use std::pin::Pin;

/// `make()`'s value, pinned in a box allocated before it is made, so that the value is
/// written into the box in place.
#[inline(always)]
pub(crate) fn pinned_in_place<T>(make: impl FnOnce() -> T) -> Pin<Box<T>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_boxed_future_runs_as_made() {
        let (a, b) = (20, 22);
        let boxed = pinned_in_place(|| async move { a + b });
        assert_eq!(boxed.await, 42);
    }
}
