//! [`StreamSearch`]: finds a byte string in a body that arrives in chunks, for body taps
//! and form inspectors, keeping only a needle's length of the past.

/// Looks for one needle in a stream of chunks, across chunk boundaries.
#[derive(Debug, Clone)]
pub struct StreamSearch {
    needle: Vec<u8>,
    /// The last bytes seen, at most `needle.len() - 1` of them between chunks.
    tail: Vec<u8>,
}

impl StreamSearch {
    /// A search for `needle` (an empty needle is found in any chunk).
    pub fn new(needle: impl Into<Vec<u8>>) -> Self {
        Self {
            needle: needle.into(),
            tail: Vec::new(),
        }
    }

    /// Whether the needle ends in `chunk` (it may start in earlier chunks). Only the
    /// bytes that could start a match across the next boundary are kept.
    pub fn found_in(&mut self, chunk: &[u8]) -> bool {
        let keep = match self.needle.len() {
            0 => return true,
            n => n - 1,
        };
        // A match across the boundary starts in the tail and ends in the chunk's head.
        self.tail.extend_from_slice(&chunk[..chunk.len().min(keep)]);
        if memchr::memmem::find(&self.tail, &self.needle).is_some()
            || memchr::memmem::find(chunk, &self.needle).is_some()
        {
            self.tail.clear();
            return true;
        }
        if chunk.len() >= keep {
            self.tail.clear();
            self.tail.extend_from_slice(&chunk[chunk.len() - keep..]);
        } else {
            let drop = self.tail.len().saturating_sub(keep);
            self.tail.drain(..drop);
        }
        false
    }

    /// How many of the last bytes seen could still begin a match that a later chunk
    /// completes: the needle's length less one.
    pub fn undecided(&self) -> usize {
        self.needle.len().saturating_sub(1)
    }

    /// Forgets the bytes seen, to search a new value (the next form field).
    pub fn reset(&mut self) {
        self.tail.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::StreamSearch;

    #[test]
    fn finds_needles_split_across_chunks() {
        let mut search = StreamSearch::new("secret");
        assert!(!search.found_in(b"this is a se"));
        assert!(!search.found_in(b"c"));
        assert!(search.found_in(b"ret value"));
        let mut search = StreamSearch::new("secret");
        assert!(!search.found_in(b"sec"));
        search.reset();
        assert!(!search.found_in(b"ret"));
        assert!(!StreamSearch::new("abc").found_in(b"ab"));
        let mut search = StreamSearch::new("abcd");
        for byte in b"xxabc" {
            assert!(!search.found_in(&[*byte]));
        }
        assert!(search.found_in(b"dyy"));
        assert!(StreamSearch::new("needle").found_in(b"a haystack with a needle in it"));
        assert!(StreamSearch::new("").found_in(b""));
    }
}
