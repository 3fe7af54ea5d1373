//! Receive buffers for UDP flows, lent while a flow reads what its socket has queued and
//! handed back after: an idle flow holds none (each held 64 KiB for its whole life).

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Largest datagram read from a target.
pub(crate) const MAX_DATAGRAM: usize = 65_535;

/// Spare buffers kept per worker thread at most; more are freed.
const MAX_SPARE: usize = 4;

thread_local! {
    /// Buffers handed back on this thread, for the next flow that reads here.
    static SPARE: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer for one datagram of any size, from this thread's spares or new; it goes
/// back to the spares of the thread it is dropped on.
pub(crate) struct DatagramBuffer(Option<Box<[u8]>>);

impl DatagramBuffer {
    /// A spare buffer, or a new one.
    pub(crate) fn take() -> Self {
        let spare = SPARE.with(|spare| spare.borrow_mut().pop());
        Self(Some(spare.unwrap_or_else(|| {
            vec![0u8; MAX_DATAGRAM].into_boxed_slice()
        })))
    }
}

impl Deref for DatagramBuffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.0.as_deref().unwrap_or_default()
    }
}

impl DerefMut for DatagramBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.0.as_deref_mut().unwrap_or_default()
    }
}

impl Drop for DatagramBuffer {
    fn drop(&mut self) {
        if let Some(buffer) = self.0.take() {
            // `try_with`: a thread being torn down frees the buffer instead.
            let _ = SPARE.try_with(|spare| {
                let mut spare = spare.borrow_mut();
                if spare.len() < MAX_SPARE {
                    spare.push(buffer);
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_handed_back_is_lent_again_and_spares_are_bounded() {
        let first = DatagramBuffer::take();
        assert_eq!(first.len(), MAX_DATAGRAM);
        let address = first.as_ptr();
        drop(first);
        let again = DatagramBuffer::take();
        assert_eq!(again.as_ptr(), address, "the spare was lent again");
        drop(again);
        let many: Vec<_> = (0..MAX_SPARE + 3).map(|_| DatagramBuffer::take()).collect();
        drop(many);
        assert_eq!(SPARE.with(|spare| spare.borrow().len()), MAX_SPARE);
    }
}
