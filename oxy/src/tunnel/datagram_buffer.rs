//! Receive buffers for UDP flows, lent while a flow reads what its socket has queued and
//! handed back after: an idle flow holds none (each held 64 KiB for its whole life).

use crate::spare_buffers::SpareBuffers;
use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Largest datagram read from a target.
pub(crate) const MAX_DATAGRAM: usize = 65_535;

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Buffers handed back on a thread, for the next flow that reads there: 4 at most.
static DATAGRAM_BUFFERS: SpareBuffers = SpareBuffers::new(&SPARE, MAX_DATAGRAM, 4);

/// A buffer for one datagram of any size, from this thread's spares or new; it goes
/// back to the spares of the thread it is dropped on.
pub(crate) struct DatagramBuffer(Vec<u8>);

impl DatagramBuffer {
    /// A spare buffer, or a new one.
    pub(crate) fn take() -> Self {
        let mut buffer = DATAGRAM_BUFFERS.take();
        // Zeroed once: a spare is as long already.
        buffer.resize(MAX_DATAGRAM, 0);
        Self(buffer)
    }
}

impl Deref for DatagramBuffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl DerefMut for DatagramBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl Drop for DatagramBuffer {
    fn drop(&mut self) {
        DATAGRAM_BUFFERS.give_back(std::mem::take(&mut self.0));
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
        let many: Vec<_> = (0..7).map(|_| DatagramBuffer::take()).collect();
        drop(many);
        assert_eq!(DATAGRAM_BUFFERS.spare(), 4);
    }
}
