//! Buffers kept per thread for the next user: a connection or flow holds a buffer only
//! while it has bytes in it, and a buffer given back is lent again on the same thread
//! instead of being freed and allocated anew (a large allocation and its share of the
//! allocator's cache upkeep each time).

use std::cell::RefCell;
use std::thread::LocalKey;

/// A kind of buffer kept per thread: each at least `capacity` bytes, `max_spare` of them
/// at most; more given back are freed.
pub(crate) struct SpareBuffers {
    spares: &'static LocalKey<RefCell<Vec<Vec<u8>>>>,
    capacity: usize,
    max_spare: usize,
}

impl SpareBuffers {
    /// Buffers of `capacity` bytes kept in `spares` (a `thread_local!` of their own).
    pub(crate) const fn new(
        spares: &'static LocalKey<RefCell<Vec<Vec<u8>>>>,
        capacity: usize,
        max_spare: usize,
    ) -> Self {
        Self {
            spares,
            capacity,
            max_spare,
        }
    }

    /// A spare buffer of this thread, with what its last user left in it, or a new
    /// empty one; either has room for `capacity` bytes.
    pub(crate) fn take(&self) -> Vec<u8> {
        self.spares
            .try_with(|spares| spares.borrow_mut().pop())
            .ok()
            .flatten()
            .unwrap_or_else(|| Vec::with_capacity(self.capacity))
    }

    /// Keeps `buffer` for the next [`take`](Self::take) on this thread, if there is
    /// room among the spares and it is one of these.
    pub(crate) fn give_back(&self, buffer: Vec<u8>) {
        if buffer.capacity() < self.capacity {
            return;
        }
        // `try_with`: a thread being torn down frees the buffer instead.
        let _ = self.spares.try_with(|spares| {
            let mut spares = spares.borrow_mut();
            if spares.len() < self.max_spare {
                spares.push(buffer);
            }
        });
    }

    /// How many spare buffers this thread keeps now.
    #[cfg(test)]
    pub(crate) fn spare(&self) -> usize {
        self.spares.with(|spares| spares.borrow().len())
    }
}

thread_local! {
    static RECORD_SPARES: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Buffers for a TLS record's worth of bytes and some more (17 KiB): the reads ahead
/// beneath TLS (`tls/read_ahead.rs`) and the writes an HTTP/2 connection gathers
/// (`http/write_coalescing.rs`), 8 per thread at most (136 KiB).
pub(crate) static RECORD_BUFFERS: SpareBuffers = SpareBuffers::new(&RECORD_SPARES, 17 * 1024, 8);

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static TEST_SPARES: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    }
    static TEST_BUFFERS: SpareBuffers = SpareBuffers::new(&TEST_SPARES, 1024, 2);

    #[test]
    fn a_buffer_given_back_is_lent_again_and_spares_are_bounded() {
        let first = TEST_BUFFERS.take();
        assert!(first.is_empty() && first.capacity() >= 1024);
        let address = first.as_ptr();
        TEST_BUFFERS.give_back(first);
        let again = TEST_BUFFERS.take();
        assert_eq!(again.as_ptr(), address, "the spare was lent again");
        TEST_BUFFERS.give_back(Vec::with_capacity(16));
        assert_eq!(TEST_BUFFERS.spare(), 0, "a smaller buffer is not kept");
        let many: Vec<_> = (0..5).map(|_| TEST_BUFFERS.take()).collect();
        many.into_iter()
            .for_each(|buffer| TEST_BUFFERS.give_back(buffer));
        assert_eq!(TEST_BUFFERS.spare(), 2);
    }
}
